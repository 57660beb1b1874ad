// Package upstashtest provides an Upstash-compatible Redis REST server for
// tests, in the spirit of net/http/httptest and miniredis.
//
// A Server speaks the Upstash REST protocol (POST / with a JSON command,
// /pipeline, /multi-exec, path-style commands, Bearer or _token auth, a
// read-only token, Upstash-Encoding: base64, the upstash-sync-token header)
// in front of a Redis: by default an embedded miniredis, or a real Redis
// (WithRedisServer, WithRedisAddr, or the UPSTASHTEST_REDIS environment
// variable: "redis-server" or an address). Every backend is reached over
// TCP through the same code, so a test that passes on one passes on the
// other unless it relies on a difference between miniredis and Redis. A
// private redis-server gets a free port; once something answers there, the
// server checks (INFO server's process_id) that it is the redis-server it
// started and not another Redis that took the port in the meantime (another
// test's redis-server or miniredis), and otherwise starts it again on
// another port.
//
//	func TestSomething(t *testing.T) {
//		srv := upstashtest.NewServer(t)        // closed by t.Cleanup
//		client := newClient(srv.URL, srv.Token) // your Upstash client
//		...
//		srv.FailNext(1, 503)                   // the next request fails
//		srv.DropResponseNext(1)                // the next one runs, then the connection dies
//		srv.FastForward(time.Minute)           // TTLs (embedded backend only)
//	}
//
// The embedded backend expires keys in real time: before a request the
// miniredis clock is moved on to the wall clock, so a key SET with PX 100
// is gone 100 ms later, as on Redis. FastForward adds to that. As moving
// miniredis's clock walks every key, a request skips it while the clock
// lags the wall clock by less than 5 ms: such a request can see a key up
// to 5 ms after its TTL ran out, a TTL that a script sets can run out up
// to 5 ms early, and PTTL inside a script can read up to 5 ms high.
// Requests with a command that reads or sets a TTL (TTL, PTTL, EXPIRETIME,
// EXPIRE, SET with EX or PX, SETEX, GETEX, ... and their hash-field
// forms), Do and FastForward move the clock exactly. These bounds add to
// the time a request waits for the backend, which the clock never covered.
//
// Faults apply per HTTP request, in arrival order: FailNext, ResetNext and
// DropResponseNext queue deterministic faults, SetLatency delays every
// request, and SetFaultRate mixes faults in at random from a PRNG seeded by
// WithSeed. Stats counts requests by endpoint and commands by name.
//
// The command upstash-local (cmd/upstash-local) serves the same handler as a
// standalone program.
//
// # Scripts: shebang flags and allow-key-locking
//
// Upstash accepts the shebang flag allow-key-locking (#!lua
// flags=allow-key-locking, possibly with Redis's flags, e.g.
// flags=allow-key-locking,no-writes): the script then locks only the keys
// in KEYS, and touching any other key fails with "ERR Dynamic keys are not
// allowed in Lua scripts when 'allow-key-locking' flag is set. Key was:
// <key>". A plain Redis 7 refuses that flag and miniredis refuses any
// shebang, while clients compute the SHA-1 over the full source, so the
// server translates scripts and keeps the mapping:
//
//   - EVAL and EVAL_RO run the translated source; SCRIPT LOAD answers the
//     SHA-1 of the source as given; EVALSHA, EVALSHA_RO and SCRIPT EXISTS
//     with that SHA-1 are sent with the translation's. Whether a script is
//     cached is left to the backend, so EVALSHA answers NOSCRIPT exactly
//     when Upstash would for the given source (before any EVAL or SCRIPT
//     LOAD of it, after SCRIPT FLUSH), in single commands, /pipeline and
//     /multi-exec alike. Error texts name the SHA-1 of the given source.
//   - The translation keeps the shebang with only the flags Redis knows
//     (the embedded backend drops the line) and puts a one-line Lua
//     prelude in front of the script, so line numbers in errors stay those
//     of the given source. The prelude shadows redis.call and redis.pcall
//     with functions that check each command's keys (from a table of key
//     positions per command; the first argument for commands not in it)
//     against KEYS. A key outside KEYS fails with Upstash's text exactly
//     (redis.call raises it as the whole error reply, redis.pcall returns
//     it as {err = text}), before the command runs; commands before it in
//     the script have run, as with any script error. Commands that need
//     the whole database (FLUSHDB, FLUSHALL, SWAPDB, KEYS, SCAN, RANDOMKEY,
//     DBSIZE) fail with "ERR Command '<cmd>' needs the global lock and is
//     not allowed in Lua scripts when 'allow-key-locking' flag is set", a
//     text of upstashtest's own: Upstash documents that it rejects them but
//     not with which words.
//   - The check also applies inside /multi-exec, where Upstash runs scripts
//     under the global lock whatever their flags: a script that passes here
//     passes on Upstash, in a transaction or not.
//   - no-writes behaves as in Redis on both backends: a write command
//     fails with "ERR Write commands are not allowed from read-only
//     scripts." (the embedded backend emulates it from the read allowlist,
//     without Redis's " script: ..., on @user_script:N." suffix), and a
//     script with a shebang but without no-writes cannot run through
//     EVAL_RO or EVALSHA_RO ("ERR Can not execute a script with write flag
//     using *_ro command.").
//   - Malformed shebangs get Redis 7's errors (unknown flag, unknown
//     option, another engine, no newline), on both backends.
//   - Scripts without allow-key-locking reach a real Redis unchanged. On
//     the embedded backend every script gets the prelude, which also makes
//     miniredis format numbers passed to redis.call as Redis 7.0 does
//     (%.17g: 0.1 is "0.10000000000000001", 1e17 is "1e+17", which is not
//     an integer) and applies the expiry rules below inside scripts.
//   - Limits: the mapping lives in the Server, so several Servers sharing
//     one Redis (WithRedisAddr) do not see each other's flagged scripts,
//     and a script loaded with Do("SCRIPT", "LOAD", ...) bypasses the
//     translation. WithRedisAddr takes any address for a real Redis:
//     given an embedded Server's RedisAddr (a miniredis), flagged scripts
//     fail there with "ERR Error compiling script ... near '#'". Keys named by a SORT BY or GET pattern are not checked.
//     On a real Redis, an error raised by a command inside a flagged
//     script names line 2 (the prelude's) in its " on @user_script:N."
//     suffix.
//
// # Expiry times at the edge of the millisecond range
//
// Redis refuses an expiry whose absolute time in milliseconds overflows
// int64 ("ERR invalid expire time in 'set' command": SET k v PX
// 9223372036854775807, PEXPIRE k 9223372036854775807, EXPIRE with more
// than MaxInt64/1000 seconds, ...), and miniredis, which keeps TTLs as
// time.Duration, overflows above about 292 years and used to drop such a
// key at once. On the embedded backend the server answers what Redis
// refuses with Redis's error, before it reaches miniredis, and clamps an
// accepted relative expiry beyond 292 years to 292 years (its PTTL then
// shows 9223372036854 instead of the value given). This covers SET
// EX/PX/EXAT/PXAT, SETEX, PSETEX, GETEX, EXPIRE, PEXPIRE, EXPIREAT and
// PEXPIREAT, as REST commands, in pipelines and transactions, and inside
// scripts; a real Redis needs nothing.
//
// # Decisions where Upstash's behaviour is not documented
//
//   - JSON booleans in a command are sent to Redis as "true" and "false" (the
//     official JS client puts them on the wire as JSON booleans); numbers are
//     sent as their exact literal text (1.5, 1700000000000, 1e+21 and 20-digit
//     integers unchanged). null, objects and nested arrays are refused with
//     400 "ERR invalid argument at index N ...".
//   - Malformed bodies (invalid JSON, not an array, an empty command, an empty
//     pipeline, a pipeline row that is not a non-empty array) are 400 with an
//     "ERR ..." error; nothing of the request runs.
//   - A discarded /multi-exec (a command refused while queueing) is 400 with
//     the first queueing error (e.g. "ERR wrong number of arguments for
//     'lpush' command"), not EXECABORT. An unsupported or forbidden command
//     in a transaction discards it before anything is sent to Redis.
//   - Commands the REST API does not serve (blocking commands, XREAD/
//     XREADGROUP with BLOCK, WAIT, MULTI/EXEC/DISCARD/WATCH/UNWATCH,
//     SUBSCRIBE and friends, connection commands other than PING and ECHO,
//     server administration and cluster commands) are 400 "ERR Command is not
//     available: '<cmd>' (<reason>)"; in a pipeline, that element fails alone.
//   - The read-only token may run an allowlist of read commands; anything else
//     (KEYS and SCAN included) gets "NOPERM this user has no permissions to
//     run the '<cmd>' command or its subcommand".
//   - Authentication uses the Authorization header when present, else
//     _token; failure is 401 "WRONGPASS invalid or missing auth token".
//   - The sync token ("<random>-<n>") is sent on every 2xx response and moves
//     on after each request that ran a command outside the read allowlist;
//     the request header is ignored.
//   - An error nested inside an array reply (a Lua table holding
//     redis.error_reply) is sent as its text, like a status string.
//   - Redis connection loss is 503 "ERR redis connection failed: ...";
//     a panic in the handler is 500 "ERR upstashtest: internal error".
//   - Path style drops empty path segments (/get//k is GET k); a query
//     parameter without a value adds only its name (?NX).
//
// # Known differences from real Upstash
//
//   - Replies, error texts and command coverage are those of the backend:
//     miniredis lacks some commands and options and words a few errors
//     differently from Redis; a real redis-server matches Redis of its
//     version, while Upstash has its own deviations (e.g. UNLINK with no
//     keys, ZRANGE LIMIT without BYSCORE/BYLEX are accepted there).
//   - Real Upstash reportedly runs some blocking commands (BLMOVE) without
//     blocking; here they are refused.
//   - No Server-Sent Events (/subscribe, /monitor), no
//     Upstash-Response-Format: resp2, no ACL RESTTOKEN, no quotas (daily
//     request limit, commands per second), no max key or record size checks.
//   - On the embedded backend two miniredis differences are corrected in
//     replies to REST commands (not inside Lua scripts): TTL is rounded like
//     Redis rather than truncated, and float replies such as scores print
//     1700000000000 rather than 1.7e+12. Expiry times and script numbers
//     are corrected as described above.
//   - FastForward moves TTLs only: TIME and the clock used by EXPIREAT/PXAT
//     stay on the wall clock (miniredis).
//   - Random status faults use 503; Upstash's own 5xx texts are unknown.
//   - FlushAll flushes every database of the backing Redis.
package upstashtest
