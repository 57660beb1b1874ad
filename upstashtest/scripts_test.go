package upstashtest_test

import (
	"crypto/sha1"
	"encoding/hex"
	"strings"
	"testing"

	"github.com/chatstate/upstash/upstashtest"
)

func sha1Of(s string) string {
	sum := sha1.Sum([]byte(s))
	return hex.EncodeToString(sum[:])
}

const noScript = `{"error":"NOSCRIPT No matching script. Please use EVAL."}`

// dynamicKey is Upstash's refusal of a key outside KEYS.
func dynamicKey(key string) string {
	return "ERR Dynamic keys are not allowed in Lua scripts when 'allow-key-locking' flag is set. Key was: " + key
}

func TestScriptFlagsAccepted(t *testing.T) {
	eachBackend(t, func(t *testing.T, s *upstashtest.Server) {
		for _, src := range []string{
			"#!lua flags=allow-key-locking\nreturn redis.call('GET', KEYS[1])",
			"#!lua flags=allow-key-locking,no-writes\nreturn redis.call('GET', KEYS[1])",
			"#!lua flags=no-writes,allow-key-locking\r\nreturn redis.call('GET', KEYS[1])",
			"#!lua flags=allow-key-locking flags=allow-oom\nreturn redis.call('GET', KEYS[1])",
			"#!lua flags=no-writes\nreturn redis.call('GET', KEYS[1])",
			"#!lua\nreturn redis.call('GET', KEYS[1])",
		} {
			s.FlushAll()
			if _, err := s.Do("SET", "k", "v"); err != nil {
				t.Fatal(err)
			}
			sha := sha1Of(src)
			// NOSCRIPT before the script was ever given, as for any SHA-1.
			expect(t, cmd(t, s, "EVALSHA", sha, 1, "k"), 400, noScript)
			expect(t, cmd(t, s, "SCRIPT", "EXISTS", sha), 200, `{"result":[0]}`)
			expect(t, cmd(t, s, "EVAL", src, 1, "k"), 200, `{"result":"v"}`)
			expect(t, cmd(t, s, "EVALSHA", sha, 1, "k"), 200, `{"result":"v"}`)
			expect(t, cmd(t, s, "EVALSHA", strings.ToUpper(sha), 1, "k"), 200, `{"result":"v"}`)
			expect(t, cmd(t, s, "SCRIPT", "EXISTS", sha, sha1Of("nothing")), 200, `{"result":[1,0]}`)

			// SCRIPT LOAD answers the SHA-1 of the source as given.
			expect(t, cmd(t, s, "SCRIPT", "FLUSH"), 200, `{"result":"OK"}`)
			expect(t, cmd(t, s, "EVALSHA", sha, 1, "k"), 400, noScript)
			expect(t, cmd(t, s, "SCRIPT", "LOAD", src), 200, `{"result":"`+sha+`"}`)
			expect(t, cmd(t, s, "EVALSHA", sha, 1, "k"), 200, `{"result":"v"}`)
			if strings.Contains(src, "no-writes") {
				expect(t, cmd(t, s, "EVALSHA_RO", sha, 1, "k"), 200, `{"result":"v"}`)
				expect(t, cmd(t, s, "EVAL_RO", src, 1, "k"), 200, `{"result":"v"}`)
			} else if strings.HasPrefix(src, "#!") {
				// Redis 7: a script with a shebang but without no-writes may
				// not run through *_RO.
				expectError(t, cmd(t, s, "EVAL_RO", src, 1, "k"), 400, "ERR Can not execute a script with write flag using *_ro command.")
				expectError(t, cmd(t, s, "EVALSHA_RO", sha, 1, "k"), 400, "ERR Can not execute a script with write flag using *_ro command.")
			}
		}
	})
}

func TestScriptFlagsInPipelineAndTransaction(t *testing.T) {
	eachBackend(t, func(t *testing.T, s *upstashtest.Server) {
		const src = "#!lua flags=allow-key-locking\nreturn redis.call('INCR', KEYS[1])"
		sha := sha1Of(src)
		expect(t, send(t, s, req{path: "/pipeline", body: mustJSON(t, [][]interface{}{
			{"EVALSHA", sha, 1, "n"},
			{"EVAL", src, 1, "n"},
			{"EVALSHA", sha, 1, "n"},
			{"SCRIPT", "EXISTS", sha},
		})}), 200, `[{"error":"NOSCRIPT No matching script. Please use EVAL."},{"result":1},{"result":2},{"result":[1]}]`)
		expect(t, send(t, s, req{path: "/multi-exec", body: mustJSON(t, [][]interface{}{
			{"EVALSHA", sha, 1, "n"},
			{"EVAL", src, 1, "n"},
			{"GET", "n"},
		})}), 200, `[{"result":3},{"result":4},{"result":"4"}]`)

		// A transaction that uses the SHA-1 before any EVAL: NOSCRIPT at
		// EXEC time, as Redis does, and the other commands run.
		expect(t, cmd(t, s, "SCRIPT", "FLUSH"), 200, `{"result":"OK"}`)
		expect(t, send(t, s, req{path: "/multi-exec", body: mustJSON(t, [][]interface{}{
			{"EVALSHA", sha, 1, "n"},
			{"SCRIPT", "LOAD", src},
			{"EVALSHA", sha, 1, "n"},
		})}), 200, `[{"error":"NOSCRIPT No matching script. Please use EVAL."},{"result":"`+sha+`"},{"result":5}]`)
	})
}

func TestScriptShebangErrors(t *testing.T) {
	eachBackend(t, func(t *testing.T, s *upstashtest.Server) {
		for _, c := range []struct{ src, want string }{
			{"#!lua flags=allow-key-locking,nope\nreturn 1", "ERR Unexpected flag in script shebang: nope"},
			{"#!lua flags=no-writes,\nreturn 1", "ERR Unexpected flag in script shebang: "},
			{"#!lua name=lib\nreturn 1", "ERR Unknown lua shebang option: name=lib"},
			{"#!python\nreturn 1", "ERR Unexpected engine in script shebang: #!python"},
			{"#!lua flags=allow-key-locking", "ERR Invalid script shebang"},
		} {
			expect(t, cmd(t, s, "EVAL", c.src, 0), 400, mustJSON(t, map[string]string{"error": c.want}))
			expect(t, cmd(t, s, "SCRIPT", "LOAD", c.src), 400, mustJSON(t, map[string]string{"error": c.want}))
			expect(t, cmd(t, s, "EVALSHA", sha1Of(c.src), 0), 400, noScript)
			// In a pipeline the error is that element's alone.
			expect(t, send(t, s, req{path: "/pipeline", body: mustJSON(t, [][]interface{}{{"EVAL", c.src, 0}, {"PING"}})}), 200,
				mustJSON(t, []interface{}{map[string]string{"error": c.want}, map[string]string{"result": "PONG"}}))
		}
		expect(t, cmd(t, s, "EVAL", "#!lua flags=\nreturn 1", 0), 200, `{"result":1}`)
		expect(t, cmd(t, s, "EVAL", "#!lua flags=\"allow-key-locking\"\nreturn 2", 0), 200, `{"result":2}`)
	})
}

func TestScriptDynamicKeysRefused(t *testing.T) {
	eachBackend(t, func(t *testing.T, s *upstashtest.Server) {
		run := func(src string, keys []string, args ...interface{}) resp {
			t.Helper()
			c := []interface{}{"EVAL", "#!lua flags=allow-key-locking\n" + src, len(keys)}
			for _, k := range keys {
				c = append(c, k)
			}
			return cmd(t, s, append(c, args...)...)
		}
		k12 := []string{"{t}:a", "{t}:b"}

		// Scripts that keep to KEYS run, whatever the command's key layout.
		for _, src := range []string{
			"redis.call('SET', KEYS[1], 'x') return redis.call('GET', KEYS[1])",
			"redis.call('SET', KEYS[1], 'x', 'PX', 60000) return redis.call('PTTL', KEYS[1]) > 0 and 'x' or 'no'",
			"redis.call('MSET', KEYS[1], 'x', KEYS[2], 'y') return redis.call('MGET', KEYS[1], KEYS[2])[1]",
			"redis.call('SET', KEYS[1], 'x') redis.call('RENAME', KEYS[1], KEYS[2]) return redis.call('GET', KEYS[2])",
			"redis.call('DEL', KEYS[1], KEYS[2]) redis.call('RPUSH', KEYS[1], 'x') return redis.call('LMOVE', KEYS[1], KEYS[2], 'LEFT', 'RIGHT')",
			"redis.call('DEL', KEYS[1]) redis.call('ZADD', KEYS[1], 1, 'x') redis.call('ZUNIONSTORE', KEYS[2], 1, KEYS[1]) return redis.call('ZRANGE', KEYS[2], 0, -1)[1]",
			"redis.call('DEL', KEYS[1]) redis.call('XADD', KEYS[1], '1-1', 'f', 'x') return redis.call('XREAD', 'COUNT', 1, 'STREAMS', KEYS[1], '0')[1][2][1][2][2]",
			"redis.call('PING') redis.call('TIME') redis.call('ECHO', 'hi') return 'x'",
			"local k = 'prefix' .. ARGV[1] redis.call('SET', k, 'x') return redis.call('GET', k)",
		} {
			keys := k12
			var args []interface{}
			if strings.Contains(src, "ARGV") {
				keys, args = []string{"prefix:1"}, []interface{}{":1"}
			}
			expect(t, run(src, keys, args...), 200, `{"result":"x"}`)
		}

		// A key outside KEYS is refused, with Upstash's text, before the
		// command runs.
		for _, c := range []struct{ src, key string }{
			{"return redis.call('SET', 'other', 'x')", "other"},
			{"return redis.call('GET', KEYS[1] .. ':suffix')", "{t}:a:suffix"},
			{"return redis.call('DEL', KEYS[1], 'other')", "other"},
			{"return redis.call('MSET', KEYS[1], 'x', 'other', 'y')", "other"},
			{"return redis.call('RENAME', KEYS[1], 'other')", "other"},
			{"return redis.call('ZUNIONSTORE', 'other', 1, KEYS[1])", "other"},
			{"return redis.call('ZUNIONSTORE', KEYS[1], 2, KEYS[2], 'other')", "other"},
			{"return redis.call('XREAD', 'STREAMS', KEYS[1], 'other', '0', '0')", "other"},
			{"return redis.call('SORT', KEYS[1], 'STORE', 'other')", "other"},
			{"return redis.call('set', 42, 'x')", "42"},
			{"redis.call('SET', KEYS[1], 'first') return redis.call('SET', 'other', 'x')", "other"},
		} {
			s.FlushAll()
			expect(t, run(c.src, k12), 400, mustJSON(t, map[string]string{"error": dynamicKey(c.key)}))
			if v := get(t, s, "other"); v != nil {
				t.Errorf("%s: the refused command ran: other = %v", c.src, v)
			}
		}
		// Commands before the refused one have run, as with any script error.
		if v := get(t, s, "{t}:a"); v != "first" {
			t.Errorf("{t}:a = %v, want first", v)
		}

		// redis.pcall returns the refusal as an error table.
		expect(t, run("local r = redis.pcall('GET', 'other') return r.err", k12), 200,
			mustJSON(t, map[string]string{"result": dynamicKey("other")}))
		expect(t, run("return redis.pcall('GET', 'other')", k12), 400,
			mustJSON(t, map[string]string{"error": dynamicKey("other")}))

		// Commands that need the whole database are refused.
		if _, err := s.Do("SET", "keep", "1"); err != nil {
			t.Fatal(err)
		}
		for _, c := range []string{"FLUSHDB", "FLUSHALL", "KEYS", "DBSIZE", "RANDOMKEY"} {
			src := "return redis.call('" + c + "'" + map[bool]string{true: ", '*'", false: ""}[c == "KEYS"] + ")"
			expectError(t, run(src, k12), 400, "ERR Command '"+strings.ToLower(c)+"' needs the global lock")
		}
		if get(t, s, "keep") != "1" {
			t.Error("FLUSHDB/FLUSHALL ran")
		}

		// The same refusals through EVALSHA, a pipeline and a transaction.
		src := "#!lua flags=allow-key-locking\nreturn redis.call('GET', ARGV[1])"
		sha := sha1Of(src)
		expect(t, send(t, s, req{path: "/pipeline", body: mustJSON(t, [][]interface{}{
			{"EVAL", src, 1, "k", "k"},
			{"EVALSHA", sha, 1, "k", "other"},
			{"EVALSHA", sha, 1, "other", "other"},
		})}), 200, `[{"result":null},{"error":`+mustJSON(t, dynamicKey("other"))+`},{"result":null}]`)
		expect(t, send(t, s, req{path: "/multi-exec", body: mustJSON(t, [][]interface{}{
			{"SET", "k", "v"},
			{"EVALSHA", sha, 1, "k", "other"},
			{"EVALSHA", sha, 1, "k", "k"},
		})}), 200, `[{"result":"OK"},{"error":`+mustJSON(t, dynamicKey("other"))+`},{"result":"v"}]`)

		// Without the flag any key may be used, as on Upstash.
		expect(t, cmd(t, s, "EVAL", "return redis.call('SET', 'free', 'x')", 0), 200, `{"result":"OK"}`)
	})
}

func TestScriptNoWrites(t *testing.T) {
	eachBackend(t, func(t *testing.T, s *upstashtest.Server) {
		if _, err := s.Do("SET", "k", "v"); err != nil {
			t.Fatal(err)
		}
		for _, shebang := range []string{"#!lua flags=no-writes", "#!lua flags=allow-key-locking,no-writes"} {
			expect(t, cmd(t, s, "EVAL", shebang+"\nreturn redis.call('GET', KEYS[1])", 1, "k"), 200, `{"result":"v"}`)
			expectError(t, cmd(t, s, "EVAL", shebang+"\nreturn redis.call('SET', KEYS[1], 'w')", 1, "k"), 400,
				"ERR Write commands are not allowed from read-only scripts.")
			expectError(t, cmd(t, s, "EVAL", shebang+"\nreturn redis.call('DEL', KEYS[1])", 1, "k"), 400,
				"ERR Write commands are not allowed from read-only scripts.")
			if v := get(t, s, "k"); v != "v" {
				t.Fatalf("%s: a write ran: k = %v", shebang, v)
			}
		}
	})
}

func TestScriptErrorsNameTheGivenSource(t *testing.T) {
	eachBackend(t, func(t *testing.T, s *upstashtest.Server) {
		if _, err := s.Do("SET", "k", "v"); err != nil {
			t.Fatal(err)
		}
		// A command error inside a translated script: the text names the
		// SHA-1 of the source as given, never that of the translation.
		src := "#!lua flags=allow-key-locking\nreturn redis.call('INCR', KEYS[1])"
		got := cmd(t, s, "EVAL", src, 1, "k")
		expectError(t, got, 400, "")
		if !strings.Contains(got.body, "not an integer") {
			t.Errorf("error %s: want Redis's INCR error", got.body)
		}
		if !s.Embedded() && !strings.Contains(got.body, sha1Of(src)) {
			t.Errorf("error %s does not name the script's SHA-1 %s", got.body, sha1Of(src))
		}

		// Compile errors keep the line numbers of the source as given.
		for _, src := range []string{
			"#!lua flags=allow-key-locking\nlocal a = 1\nreturn +",
			"local a = 1\nlocal b = 2\nreturn +",
		} {
			got := cmd(t, s, "EVAL", src, 0)
			expectError(t, got, 400, "ERR Error compiling script")
			want := "user_script:3:"
			if s.Embedded() {
				want = "line:3"
			}
			if !strings.Contains(got.body, want) {
				t.Errorf("compile error %s: want %q", got.body, want)
			}
		}
	})
}

func TestScriptNumbersFormattedLikeRedis(t *testing.T) {
	eachBackend(t, func(t *testing.T, s *upstashtest.Server) {
		expect(t, cmd(t, s, "EVAL", "redis.call('SET', KEYS[1], 0.1) return redis.call('GET', KEYS[1])", 1, "f"), 200,
			`{"result":"0.10000000000000001"}`)
		expect(t, cmd(t, s, "EVAL", "redis.call('SET', KEYS[1], 100) return redis.call('GET', KEYS[1])", 1, "f"), 200,
			`{"result":"100"}`)
		// 1e17 reaches Redis as "1e+17", which is not an integer: the
		// call fails instead of trimming with a wrapped-around number.
		expect(t, cmd(t, s, "EVAL", "return redis.pcall('LTRIM', KEYS[1], -1e17, -1).err", 1, "f"), 200,
			`{"result":"ERR value is not an integer or out of range"}`)
		expect(t, cmd(t, s, "EVAL", "return redis.pcall('SET', KEYS[1], 'v', 'PX', tonumber(ARGV[1])).err", 1, "f", "9223372036854775807"), 200,
			`{"result":"ERR value is not an integer or out of range"}`)
	})
}
