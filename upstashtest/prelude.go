package upstashtest

import (
	"sort"
	"strconv"
	"strings"
)

// The prelude is Lua put in front of a translated script, on the line of
// the shebang it replaces (or on line 1 before the script's first
// statement), so that line numbers stay those of the original source. It
// shadows the global redis table with a local one whose call and pcall
// check, and on the embedded backend adjust, each command before passing
// it on; every other field (error_reply, sha1hex, log, ...) is the real
// one. Depending on the script and the backend it does the following.
//
//   - allow-key-locking: the keys of the command (found from a table of key
//     positions, below) must each equal an element of KEYS, else the call
//     fails with Upstash's "ERR Dynamic keys are not allowed in Lua scripts
//     when 'allow-key-locking' flag is set. Key was: <key>". Commands that
//     need the whole database (FLUSHDB, FLUSHALL, SWAPDB, KEYS, SCAN,
//     RANDOMKEY, DBSIZE) fail too, with a text of upstashtest's own, as
//     Upstash documents that it rejects them.
//   - no-writes (embedded backend only; a real Redis enforces the flag
//     itself): a command outside the read allowlist fails with Redis's
//     "ERR Write commands are not allowed from read-only scripts.".
//   - embedded backend: numbers passed to redis.call are formatted as Redis
//     7.0 does (%.17g) rather than as gopher-lua does, and expiry times are
//     checked and clamped exactly as for REST commands (see expiry.go).
//
// A refusal from redis.pcall is returned as an error table {err = text},
// like any command error. A refusal from redis.call raises a Lua error
// holding a marker; the server replaces the backend's error reply with the
// plain text, without the backend's "script: ..., on @user_script:N."
// decoration (which would name the prelude's line).

// preludeLua is the prelude's source, one statement or block per line,
// without comments, joined into one line by preludeBody; prelude() fills
// in the configuration on its first line.
const preludeLua = `
local __ut = {call = redis.call, pcall = redis.pcall, @CFG@}
function __ut.str(v)
  if type(v) ~= 'number' then return v end
  if v ~= v then return 'nan' end
  if v == math.huge then return 'inf' end
  if v == -math.huge then return '-inf' end
  return string.format('%.17g', v)
end
function __ut.up(v)
  if type(v) == 'string' then return string.upper(v) end
  return ''
end
function __ut.hex(s)
  return (string.gsub(s, '.', function(c) return string.format('%02x', string.byte(c)) end))
end
function __ut.words(t, v, names)
  for w in string.gmatch(names, '%S+') do t[w] = v end
end
function __ut.specs()
  if __ut.spec then return __ut.spec end
  local s = {}
  __ut.words(s, 'none', '@NONE@')
  __ut.words(s, 'global', '@GLOBAL@')
  __ut.words(s, {1, -1, 1}, 'del unlink exists touch mget watch sinter sunion sdiff sinterstore sunionstore sdiffstore pfcount pfmerge')
  __ut.words(s, {1, -2, 1}, 'blpop brpop bzpopmin bzpopmax')
  __ut.words(s, {1, 2, 1}, 'rename renamenx rpoplpush lmove smove copy lcs brpoplpush blmove geosearchstore zrangestore')
  __ut.words(s, {1, -1, 2}, 'mset msetnx')
  __ut.words(s, {2, -1, 1}, 'bitop')
  __ut.words(s, {2, 2, 1}, 'object memory xinfo xgroup')
  __ut.words(s, {nk = 1}, 'zunion zinter zdiff zintercard sintercard lmpop zmpop')
  __ut.words(s, {nk = 2, pre = 1}, 'zunionstore zinterstore zdiffstore')
  __ut.words(s, {nk = 2}, 'blmpop bzmpop')
  __ut.words(s, {streams = 1}, 'xread')
  __ut.words(s, {streams = 4}, 'xreadgroup')
  __ut.words(s, 'store', 'sort sort_ro georadius georadiusbymember')
  __ut.spec = s
  return s
end
function __ut.keyargs(a, n, name)
  local s = __ut.specs()[name] or {1, 1, 1}
  local out = {}
  local nargs = n - 1
  if s == 'none' or s == 'global' then return out end
  if s == 'store' then
    out[1] = 1
    for p = 2, nargs - 1 do
      local o = __ut.up(__ut.str(a[p + 1]))
      if o == 'STORE' or o == 'STOREDIST' then out[#out + 1] = p + 1 end
    end
  elseif s.streams then
    for p = s.streams, nargs do
      if __ut.up(__ut.str(a[p + 1])) == 'STREAMS' then
        for q = p + 1, p + math.floor((nargs - p) / 2) do out[#out + 1] = q end
        break
      end
    end
  elseif s.nk then
    if s.pre then out[1] = s.pre end
    local v = __ut.str(a[s.nk + 1])
    local k = nil
    if type(v) == 'string' then k = tonumber(v) end
    if k and k > 0 then
      for q = s.nk + 1, math.min(s.nk + k, nargs) do out[#out + 1] = q end
    end
  else
    local last = s[2]
    if last < 0 then last = nargs + last + 1 end
    for p = s[1], math.min(last, nargs), s[3] do out[#out + 1] = p end
  end
  return out
end
function __ut.keyset()
  if __ut.ks then return __ut.ks end
  local ks = {}
  for i = 1, #KEYS do ks[KEYS[i]] = true end
  __ut.ks = ks
  return ks
end
function __ut.gt(x, y)
  return #x > #y or (#x == #y and x > y)
end
function __ut.int(s)
  if type(s) ~= 'string' then return nil end
  if s == '0' then return false, '0' end
  local sign, d = string.match(s, '^(%-?)([1-9]%d*)$')
  if not d then return nil end
  if sign == '-' then
    if __ut.gt(d, '9223372036854775808') then return nil end
    return true, d
  end
  if __ut.gt(d, '9223372036854775807') then return nil end
  return false, d
end
function __ut.limit()
  local t = __ut.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  local nh = math.floor(now / 1e9)
  local hi, lo = 9223372036 - nh, 854775807 - (now - nh * 1e9)
  if lo < 0 then lo, hi = lo + 1e9, hi - 1 end
  local ls = string.format('%.0f', lo)
  return string.format('%.0f', hi) .. string.rep('0', 9 - #ls) .. ls
end
function __ut.exp(a, i, secs, rel, setlike, name)
  local neg, d = __ut.int(a[i])
  if neg == nil then return 'ERR value is not an integer or out of range' end
  local bad = "ERR invalid expire time in '" .. name .. "' command"
  if setlike and (neg or d == '0') then return bad end
  if secs and __ut.gt(d, '9223372036854775') then return bad end
  local ms = d
  if secs and d ~= '0' then ms = d .. '000' end
  if rel and not neg and #ms >= 19 and __ut.gt(ms, __ut.limit()) then return bad end
  if rel then
    local cap = secs and '@CAPS@' or '@CAPMS@'
    if __ut.gt(d, cap) then
      if neg then a[i] = '-1' else a[i] = cap end
    end
  end
  return nil
end
function __ut.ttl(a, n, name)
  if name == 'expire' or name == 'pexpire' or name == 'expireat' or name == 'pexpireat' then
    if n < 3 then return nil end
    local f = {}
    for i = 4, n do
      local o = __ut.up(a[i])
      if o ~= 'NX' and o ~= 'XX' and o ~= 'GT' and o ~= 'LT' then return nil end
      f[o] = true
    end
    if (f.NX and (f.XX or f.GT or f.LT)) or (f.GT and f.LT) then return nil end
    return __ut.exp(a, 3, name == 'expire' or name == 'expireat', name == 'expire' or name == 'pexpire', false, name)
  end
  if name == 'setex' or name == 'psetex' then
    if n ~= 4 then return nil end
    return __ut.exp(a, 3, name == 'setex', true, true, name)
  end
  if name ~= 'set' and name ~= 'getex' then return nil end
  local i = 3
  if name == 'set' then i = 4 end
  if n < i - 1 then return nil end
  local at, unit, f = nil, nil, {}
  while i <= n do
    local o = __ut.up(a[i])
    if o == 'EX' or o == 'PX' or o == 'EXAT' or o == 'PXAT' then
      if at or i == n then return nil end
      at, unit, i = i + 1, o, i + 2
    elseif (name == 'set' and (o == 'NX' or o == 'XX' or o == 'GET' or o == 'KEEPTTL')) or (name == 'getex' and o == 'PERSIST' and not f.PERSIST) then
      f[o], i = true, i + 1
    else
      return nil
    end
  end
  if not at or (f.NX and f.XX) or f.KEEPTTL or f.PERSIST then return nil end
  return __ut.exp(a, at, unit == 'EX' or unit == 'EXAT', unit == 'EX' or unit == 'PX', true, name)
end
function __ut.check(a, n)
  if n == 0 or (type(a[1]) ~= 'string' and type(a[1]) ~= 'number') then return nil end
  if __ut.emb then
    for i = 1, n do
      local t = type(a[i])
      if t ~= 'string' and t ~= 'number' then return nil end
      a[i] = __ut.str(a[i])
    end
  end
  local name = string.lower(__ut.str(a[1]))
  if __ut.ro then
    local r = __ut.reads
    if not r then
      r = {}
      __ut.words(r, true, '@READS@')
      __ut.reads = r
    end
    if not r[name] then return 'ERR Write commands are not allowed from read-only scripts.' end
  end
  if __ut.kl then
    if __ut.specs()[name] == 'global' then
      return "ERR Command '" .. name .. "' needs the global lock and is not allowed in Lua scripts when 'allow-key-locking' flag is set"
    end
    local ks = __ut.keyset()
    local idx = __ut.keyargs(a, n, name)
    for j = 1, #idx do
      local k = __ut.str(a[idx[j] + 1])
      if type(k) == 'string' and not ks[k] then return '@DYNKEY@' .. k end
    end
  end
  if __ut.emb then return __ut.ttl(a, n, name) end
  return nil
end
function __ut.run(f, protected, ...)
  local n = select('#', ...)
  local a = {...}
  local e = __ut.check(a, n)
  if e then
    if protected then return {err = e} end
    error('upstashtest-error:' .. __ut.hex(e) .. ';', 0)
  end
  return f(unpack(a, 1, n))
end
local redis = setmetatable({call = function(...) return __ut.run(__ut.call, false, ...) end, pcall = function(...) return __ut.run(__ut.pcall, true, ...) end}, {__index = redis});
`

// keylessCommands need no key; globalCommands need the whole database.
const (
	keylessCommands = "ping echo time info lastsave publish spublish select wait waitaof script function config command client acl latency slowlog lolwut role save bgsave bgrewriteaof module debug pubsub readonly readwrite cluster hello auth quit reset multi exec discard unwatch monitor sync psync replconf replicaof slaveof shutdown failover asking eval evalsha eval_ro evalsha_ro fcall fcall_ro subscribe psubscribe ssubscribe unsubscribe punsubscribe sunsubscribe"
	globalCommands  = "flushdb flushall swapdb keys scan randomkey dbsize"
)

// preludeBody is preludeLua on one line with its placeholders filled.
var preludeBody = func() string {
	reads := make([]string, 0, len(readCommands)+8)
	for name := range readCommands {
		reads = append(reads, strings.ToLower(name))
	}
	// Reads the read-only token may not run but a no-writes script may.
	reads = append(reads, "keys", "scan", "publish", "spublish", "object", "memory", "xinfo", "script")
	sort.Strings(reads)
	r := strings.NewReplacer(
		"@NONE@", keylessCommands,
		"@GLOBAL@", globalCommands,
		"@READS@", strings.Join(reads, " "),
		"@CAPS@", strconv.FormatInt(maxEmbeddedTTLSeconds, 10),
		"@CAPMS@", strconv.FormatInt(maxEmbeddedTTLMillis, 10),
		"@DYNKEY@", strings.ReplaceAll(dynamicKeyPrefix, "'", `\'`),
	)
	var lines []string
	for _, l := range strings.Split(preludeLua, "\n") {
		if l = strings.TrimSpace(l); l != "" {
			lines = append(lines, l)
		}
	}
	return r.Replace(strings.Join(lines, " "))
}()

// prelude returns the one-line prelude for a script: embedded selects the
// miniredis adjustments, keyLocking the allow-key-locking check, noWrites
// the emulated no-writes flag.
func prelude(embedded, keyLocking, noWrites bool) string {
	cfg := "emb = " + strconv.FormatBool(embedded) +
		", kl = " + strconv.FormatBool(keyLocking) +
		", ro = " + strconv.FormatBool(noWrites)
	return strings.Replace(preludeBody, "@CFG@", cfg, 1)
}
