package upstashtest_test

import (
	"net/http"
	"strings"
	"testing"

	"github.com/chatstate/upstash/upstashtest"
)

func TestCommandInBody(t *testing.T) {
	eachBackend(t, func(t *testing.T, s *upstashtest.Server) {
		steps := []struct {
			name   string
			body   string
			status int
			want   string
		}{
			{"set", `["SET","k","v"]`, 200, `{"result":"OK"}`},
			{"lower-case name", `["get","k"]`, 200, `{"result":"v"}`},
			{"mixed-case name", `["gEt","k"]`, 200, `{"result":"v"}`},
			{"nil", `["GET","missing"]`, 200, `{"result":null}`},
			{"integer", `["INCR","n"]`, 200, `{"result":1}`},
			{"array with nil", `["MGET","k","missing"]`, 200, `{"result":["v",null]}`},
			{"empty array", `["LRANGE","nolist",0,-1]`, 200, `{"result":[]}`},
			{"status", `["PING"]`, 200, `{"result":"PONG"}`},
			{"type status", `["TYPE","k"]`, 200, `{"result":"string"}`},
			{"command error", `["INCR","k"]`, 400, `{"error":"ERR value is not an integer or out of range"}`},
			{"arity error", `["GET"]`, 400, `{"error":"ERR wrong number of arguments for 'get' command"}`},
			{"float reply is a string", `["INCRBYFLOAT","f",1.5]`, 200, `{"result":"1.5"}`},
			{"json text value", `["SET","j","{\"a\":[1,2]}"]`, 200, `{"result":"OK"}`},
			{"json text read back", `["GET","j"]`, 200, `{"result":"{\"a\":[1,2]}"}`},
			{"unicode", `["ECHO","héllo 😀 漢字"]`, 200, `{"result":"héllo 😀 漢字"}`},
		}
		for _, st := range steps {
			got := send(t, s, req{body: st.body})
			if got.status != st.status || !jsonEqual(got.body, st.want) {
				t.Errorf("%s: %s -> %d %s, want %d %s", st.name, st.body, got.status, got.body, st.status, st.want)
			}
			if ct := got.header.Get("Content-Type"); ct != "application/json" {
				t.Errorf("%s: Content-Type %q", st.name, ct)
			}
		}
	})
}

func TestUnknownCommand(t *testing.T) {
	eachBackend(t, func(t *testing.T, s *upstashtest.Server) {
		expectError(t, cmd(t, s, "NOSUCHCOMMAND", "x"), 400, "ERR unknown command")
	})
}

func TestResultAlwaysPresent(t *testing.T) {
	eachBackend(t, func(t *testing.T, s *upstashtest.Server) {
		got := cmd(t, s, "GET", "missing")
		if got.body != `{"result":null}` {
			t.Errorf("body = %s, want exactly {\"result\":null}", got.body)
		}
	})
}

func TestNumbersKeepTheirLiteralText(t *testing.T) {
	eachBackend(t, func(t *testing.T, s *upstashtest.Server) {
		for _, lit := range []string{"1.5", "1700000000000", "12345678901234567890", "-7", "0.000001", "1e+21", "3.25"} {
			expect(t, send(t, s, req{body: `["SET","num",` + lit + `]`}), 200, `{"result":"OK"}`)
			if got := get(t, s, "num"); got != lit {
				t.Errorf("SET num %s stored %q", lit, got)
			}
		}
		// Numbers as command arguments that Redis parses.
		expect(t, send(t, s, req{body: `["INCRBY","counter",1700000000000]`}), 200, `{"result":1700000000000}`)
		expect(t, send(t, s, req{body: `["INCRBYFLOAT","fl",1.5]`}), 200, `{"result":"1.5"}`)
		expect(t, send(t, s, req{body: `["SET","ttl","v","PX",60000]`}), 200, `{"result":"OK"}`)
	})
}

func TestBooleansBecomeText(t *testing.T) {
	eachBackend(t, func(t *testing.T, s *upstashtest.Server) {
		expect(t, send(t, s, req{body: `["SET","b",true]`}), 200, `{"result":"OK"}`)
		if got := get(t, s, "b"); got != "true" {
			t.Errorf("stored %q, want \"true\"", got)
		}
		expect(t, send(t, s, req{body: `["SET","b",false]`}), 200, `{"result":"OK"}`)
		if got := get(t, s, "b"); got != "false" {
			t.Errorf("stored %q, want \"false\"", got)
		}
	})
}

func TestBadRequests(t *testing.T) {
	eachBackend(t, func(t *testing.T, s *upstashtest.Server) {
		cases := []struct {
			name, path, body, prefix string
		}{
			{"malformed JSON", "/", `["SET","k"`, "ERR failed to parse command: invalid JSON"},
			{"trailing garbage", "/", `["GET","k"] x`, "ERR failed to parse command: invalid JSON"},
			{"object body", "/", `{}`, "ERR failed to parse command: the request body must be a JSON array"},
			{"string body", "/", `"GET"`, "ERR failed to parse command: the request body must be a JSON array"},
			{"empty body", "/", ``, "ERR failed to parse command: empty request body"},
			{"empty command", "/", `[]`, "ERR empty command"},
			{"null argument", "/", `["SET","k",null]`, "ERR invalid argument at index 2: null is not allowed"},
			{"object argument", "/", `["SET","k",{"a":1}]`, "ERR invalid argument at index 2: a JSON object is not allowed"},
			{"nested array argument", "/", `["SET","k",["a"]]`, "ERR invalid argument at index 2: a JSON array is not allowed"},
			{"empty pipeline", "/pipeline", `[]`, "ERR empty pipeline"},
			{"pipeline of strings", "/pipeline", `["GET","k"]`, "ERR failed to parse pipeline: command at index 0 is not a JSON array"},
			{"pipeline with empty row", "/pipeline", `[["PING"],[]]`, "ERR failed to parse pipeline: command at index 1 is empty"},
			{"pipeline object", "/pipeline", `{"a":1}`, "ERR failed to parse pipeline: the request body must be a JSON array"},
			{"pipeline null argument", "/pipeline", `[["SET","k","v"],["SET","k",null]]`, "ERR invalid argument at index 2 of the command at index 1"},
			{"malformed pipeline", "/pipeline", `[["PING"]`, "ERR failed to parse pipeline: invalid JSON"},
			{"empty transaction", "/multi-exec", `[]`, "ERR empty transaction"},
			{"transaction object argument", "/multi-exec", `[["SET","k",{}]]`, "ERR invalid argument at index 2 of the command at index 0"},
		}
		for _, c := range cases {
			t.Run(c.name, func(t *testing.T) {
				expectError(t, send(t, s, req{path: c.path, body: c.body}), 400, c.prefix)
			})
		}
		// None of the bad requests ran anything.
		if got := get(t, s, "k"); got != nil {
			t.Errorf("k = %q after bad requests, want nil", got)
		}
		if n := s.Stats().TotalCommands; n != 0 {
			t.Errorf("TotalCommands = %d after bad requests, want 0", n)
		}
	})
}

func TestMaxRequestSize(t *testing.T) {
	eachBackend(t, func(t *testing.T, s *upstashtest.Server) {
		big := `["SET","big","` + strings.Repeat("x", 10*1024*1024) + `"]`
		expectError(t, send(t, s, req{body: big}), 400, "ERR max request size exceeded")
		if got := get(t, s, "big"); got != nil {
			t.Error("the oversized SET ran")
		}
		// Just under the limit works.
		ok := `["SET","big","` + strings.Repeat("x", 10*1024*1024-20) + `"]`
		expect(t, send(t, s, req{body: ok}), 200, `{"result":"OK"}`)
		// Path style with a raw body counts too.
		expectError(t, send(t, s, req{path: "/set/big2", body: strings.Repeat("y", 10*1024*1024+1)}), 400, "ERR max request size exceeded")
	})
	t.Run("WithMaxRequestBytes", func(t *testing.T) {
		s := upstashtest.NewServer(t, upstashtest.WithEmbedded(), upstashtest.WithMaxRequestBytes(64))
		expectError(t, cmd(t, s, "SET", "k", strings.Repeat("z", 64)), 400, "ERR max request size exceeded")
		expect(t, cmd(t, s, "SET", "k", "small"), 200, `{"result":"OK"}`)
	})
}

func TestAuth(t *testing.T) {
	eachBackend(t, func(t *testing.T, s *upstashtest.Server) {
		const unauthorized = `{"error":"WRONGPASS invalid or missing auth token"}`
		cases := []struct {
			name   string
			r      req
			status int
			want   string
		}{
			{"bearer", req{body: `["PING"]`}, 200, `{"result":"PONG"}`},
			{"lower-case scheme", req{body: `["PING"]`, token: "-", header: map[string]string{"authorization": "bearer " + s.Token}}, 200, `{"result":"PONG"}`},
			{"_token", req{path: "/?_token=" + s.Token, body: `["PING"]`, token: "-"}, 200, `{"result":"PONG"}`},
			{"_token path style", req{method: "GET", path: "/ping?_token=" + s.Token, token: "-"}, 200, `{"result":"PONG"}`},
			{"missing", req{body: `["PING"]`, token: "-"}, 401, unauthorized},
			{"wrong bearer", req{body: `["PING"]`, token: s.Token + "x"}, 401, unauthorized},
			{"wrong _token", req{path: "/?_token=nope", body: `["PING"]`, token: "-"}, 401, unauthorized},
			{"not bearer", req{body: `["PING"]`, token: "-", header: map[string]string{"Authorization": "Basic " + s.Token}}, 401, unauthorized},
			{"empty bearer", req{body: `["PING"]`, token: "-", header: map[string]string{"Authorization": "Bearer "}}, 401, unauthorized},
			{"pipeline", req{path: "/pipeline", body: `[["PING"]]`, token: "nope"}, 401, unauthorized},
			{"multi-exec", req{path: "/multi-exec", body: `[["PING"]]`, token: "nope"}, 401, unauthorized},
			{"read-only token", req{body: `["PING"]`, token: s.ReadOnlyToken}, 200, `{"result":"PONG"}`},
		}
		for _, c := range cases {
			t.Run(c.name, func(t *testing.T) {
				expect(t, send(t, s, c.r), c.status, c.want)
			})
		}
		// Nothing ran for the rejected ones.
		expect(t, send(t, s, req{body: `["SET","k","v"]`, token: "wrong"}), 401, unauthorized)
		if got := get(t, s, "k"); got != nil {
			t.Error("a request with a wrong token ran")
		}
	})
}

func TestTokens(t *testing.T) {
	s := upstashtest.NewServer(t, upstashtest.WithEmbedded())
	if len(s.Token) < 32 || len(s.ReadOnlyToken) < 32 || s.Token == s.ReadOnlyToken {
		t.Errorf("default tokens %q / %q: want two different random tokens", s.Token, s.ReadOnlyToken)
	}
	s2 := upstashtest.NewServer(t, upstashtest.WithEmbedded())
	if s2.Token == s.Token {
		t.Error("two servers got the same random token")
	}
	s3 := upstashtest.NewServer(t, upstashtest.WithEmbedded(),
		upstashtest.WithToken("full"), upstashtest.WithReadOnlyToken("ro"))
	if s3.Token != "full" || s3.ReadOnlyToken != "ro" {
		t.Errorf("tokens %q %q", s3.Token, s3.ReadOnlyToken)
	}
	expect(t, send(t, s3, req{body: `["PING"]`, token: "ro"}), 200, `{"result":"PONG"}`)
	// An empty read-only token disables read-only access.
	s4 := upstashtest.NewServer(t, upstashtest.WithEmbedded(), upstashtest.WithReadOnlyToken(""))
	if s4.ReadOnlyToken != "" {
		t.Errorf("ReadOnlyToken = %q, want empty", s4.ReadOnlyToken)
	}
	expect(t, send(t, s4, req{path: "/?_token=", body: `["PING"]`, token: "-"}), 401,
		`{"error":"WRONGPASS invalid or missing auth token"}`)
}

func TestMethodNotAllowed(t *testing.T) {
	eachBackend(t, func(t *testing.T, s *upstashtest.Server) {
		for _, m := range []string{http.MethodDelete, http.MethodPatch, http.MethodOptions, "TRACE"} {
			got := send(t, s, req{method: m, path: "/ping"})
			expectError(t, got, 405, "ERR method "+m+" is not allowed")
		}
		// The allowed ones.
		for _, m := range []string{http.MethodGet, http.MethodPost, http.MethodPut} {
			expect(t, send(t, s, req{method: m, path: "/ping"}), 200, `{"result":"PONG"}`)
		}
		got := send(t, s, req{method: http.MethodHead, path: "/ping"})
		if got.status != 200 {
			t.Errorf("HEAD /ping: status %d", got.status)
		}
	})
}

func TestNoContentTypeRequired(t *testing.T) {
	eachBackend(t, func(t *testing.T, s *upstashtest.Server) {
		for _, ct := range []string{"", "text/plain", "application/json; charset=utf-8", "application/x-www-form-urlencoded"} {
			expect(t, send(t, s, req{body: `["ECHO","x"]`, header: map[string]string{"Content-Type": ct}}), 200, `{"result":"x"}`)
		}
	})
}

func TestPathStyle(t *testing.T) {
	eachBackend(t, func(t *testing.T, s *upstashtest.Server) {
		steps := []struct {
			name   string
			r      req
			status int
			want   string
		}{
			{"set", req{method: "GET", path: "/set/foo/bar"}, 200, `{"result":"OK"}`},
			{"get", req{method: "GET", path: "/get/foo"}, 200, `{"result":"bar"}`},
			{"upper-case", req{method: "GET", path: "/GET/foo"}, 200, `{"result":"bar"}`},
			{"percent-decoded segments", req{method: "GET", path: "/set/a%2Fb/x%20y%25"}, 200, `{"result":"OK"}`},
			{"read it back", req{method: "GET", path: "/get/a%2Fb"}, 200, `{"result":"x y%"}`},
			{"plus stays a plus in the path", req{method: "GET", path: "/echo/a+b"}, 200, `{"result":"a+b"}`},
			{"query args appended", req{method: "GET", path: "/set/q/v?EX=100"}, 200, `{"result":"OK"}`},
			{"ttl from query", req{method: "GET", path: "/ttl/q"}, 200, `{"result":100}`},
			{"query without value", req{method: "GET", path: "/set/q/w?NX"}, 200, `{"result":null}`},
			{"body as last argument", req{method: "POST", path: "/set/body", body: `{"json":"value"}`}, 200, `{"result":"OK"}`},
			{"body read back", req{method: "GET", path: "/get/body"}, 200, `{"result":"{\"json\":\"value\"}"}`},
			{"body then query", req{method: "POST", path: "/set/bq?EX=50", body: "val"}, 200, `{"result":"OK"}`},
			{"ttl of body then query", req{method: "POST", path: "/ttl/bq"}, 200, `{"result":50}`},
			{"PUT with body", req{method: "PUT", path: "/set/put", body: "pv"}, 200, `{"result":"OK"}`},
			{"put read back", req{method: "GET", path: "/get/put"}, 200, `{"result":"pv"}`},
			{"_token is not an argument", req{method: "GET", path: "/get/foo?_token=" + s.Token, token: "-"}, 200, `{"result":"bar"}`},
			{"query value decoding", req{method: "GET", path: "/echo?a%20b"}, 200, `{"result":"a b"}`},
			{"empty segments dropped", req{method: "GET", path: "/get//foo"}, 200, `{"result":"bar"}`},
			{"error", req{method: "GET", path: "/incr/foo"}, 400, `{"error":"ERR value is not an integer or out of range"}`},
			{"multiple query pairs in order", req{method: "GET", path: "/zadd/z?10=a&20=b"}, 200, `{"result":2}`},
			{"zrange", req{method: "GET", path: "/zrange/z/0/-1/WITHSCORES"}, 200, `{"result":["a","10","b","20"]}`},
		}
		for _, st := range steps {
			got := send(t, s, st.r)
			if got.status != st.status || !jsonEqual(got.body, st.want) {
				t.Errorf("%s: %s %s -> %d %s, want %d %s", st.name, st.r.method, st.r.path, got.status, got.body, st.status, st.want)
			}
		}
		if n := s.Stats().Requests["path"]; n != int64(len(steps)) {
			t.Errorf("Stats.Requests[path] = %d, want %d", n, len(steps))
		}
	})
}

func TestPipeline(t *testing.T) {
	eachBackend(t, func(t *testing.T, s *upstashtest.Server) {
		cmd(t, s, "SET", "bad", "not a number")
		got := send(t, s, req{path: "/pipeline", body: `[["SET","a","1"],["INCR","bad"],["INCR","a"],["GET","a"],["GET","missing"],["BLPOP","l",0],["ECHO","after"]]`})
		expect(t, got, 200, `[
			{"result":"OK"},
			{"error":"ERR value is not an integer or out of range"},
			{"result":2},
			{"result":"2"},
			{"result":null},
			{"error":"ERR Command is not available: 'blpop' (blocking commands are not supported by the Upstash REST API)"},
			{"result":"after"}]`)
		// A failed element has no result key.
		if strings.Contains(got.body, `"error":"ERR value is not an integer or out of range","result"`) ||
			strings.Count(got.body, `"result"`) != 5 {
			t.Errorf("error elements must not carry a result key: %s", got.body)
		}
		if n := s.Stats().Requests["/pipeline"]; n != 1 {
			t.Errorf("Stats.Requests[/pipeline] = %d", n)
		}
	})
}

func TestMultiExec(t *testing.T) {
	eachBackend(t, func(t *testing.T, s *upstashtest.Server) {
		t.Run("ok", func(t *testing.T) {
			expect(t, send(t, s, req{path: "/multi-exec", body: `[["SET","tx","1"],["INCR","tx"],["GET","tx"],["PING"]]`}), 200,
				`[{"result":"OK"},{"result":2},{"result":"2"},{"result":"PONG"}]`)
		})
		t.Run("run-time error", func(t *testing.T) {
			cmd(t, s, "SET", "rt:bad", "not a number")
			expect(t, send(t, s, req{path: "/multi-exec", body: `[["SET","rt:a","x"],["INCR","rt:bad"],["SET","rt:b","y"]]`}), 200,
				`[{"result":"OK"},{"error":"ERR value is not an integer or out of range"},{"result":"OK"}]`)
			if get(t, s, "rt:b") != "y" {
				t.Error("the commands after the run-time error did not commit")
			}
		})
		t.Run("queue-time error", func(t *testing.T) {
			got := send(t, s, req{path: "/multi-exec", body: `[["SET","qt:a","x"],["LPUSH","qt:l"],["SET","qt:b","y"]]`})
			expectError(t, got, 400, "ERR wrong number of arguments for 'lpush' command")
			if strings.HasPrefix(strings.TrimSpace(got.body), "[") {
				t.Error("a discarded transaction must answer an object, not an array")
			}
			if get(t, s, "qt:a") != nil || get(t, s, "qt:b") != nil {
				t.Error("a discarded transaction wrote")
			}
		})
		t.Run("unknown command discards", func(t *testing.T) {
			expectError(t, send(t, s, req{path: "/multi-exec", body: `[["SET","uc:a","x"],["NOSUCH"]]`}), 400, "ERR unknown command")
			if get(t, s, "uc:a") != nil {
				t.Error("a discarded transaction wrote")
			}
		})
		t.Run("unsupported command discards", func(t *testing.T) {
			expectError(t, send(t, s, req{path: "/multi-exec", body: `[["SET","us:a","x"],["WATCH","us:a"]]`}), 400, "ERR Command is not available: 'watch'")
			if get(t, s, "us:a") != nil {
				t.Error("a discarded transaction wrote")
			}
		})
		t.Run("atomic", func(t *testing.T) {
			const clients, n = 4, 30
			body := "[" + strings.TrimSuffix(strings.Repeat(`["INCR","atomic"],`, n), ",") + "]"
			results := make(chan string, clients)
			for i := 0; i < clients; i++ {
				go func() {
					r, err := sendErr(s, req{path: "/multi-exec", body: body})
					if err != nil {
						results <- err.Error()
						return
					}
					results <- r.body
				}()
			}
			firsts := map[int]bool{}
			for i := 0; i < clients; i++ {
				v, err := decodeJSON(<-results)
				if err != nil {
					t.Fatal(err)
				}
				arr, ok := v.([]interface{})
				if !ok || len(arr) != n {
					t.Fatalf("reply %v", v)
				}
				var prev int64
				for j, e := range arr {
					num, _ := e.(map[string]interface{})["result"].(interface{ Int64() (int64, error) }).Int64()
					if j > 0 && num != prev+1 {
						t.Fatalf("transaction interleaved: %v", arr)
					}
					prev = num
					if j == 0 {
						firsts[int(num)] = true
					}
				}
			}
			for i := 0; i < clients; i++ {
				if !firsts[i*n+1] {
					t.Errorf("first results %v, want 1, %d, %d, %d", firsts, n+1, 2*n+1, 3*n+1)
				}
			}
		})
	})
}

func TestRefusedCommands(t *testing.T) {
	eachBackend(t, func(t *testing.T, s *upstashtest.Server) {
		for _, c := range [][]interface{}{
			{"BLPOP", "l", 0}, {"BRPOP", "l", 0}, {"BRPOPLPUSH", "a", "b", 0}, {"BLMOVE", "a", "b", "LEFT", "LEFT", 0},
			{"BLMPOP", 0, 1, "l", "LEFT"}, {"BZPOPMIN", "z", 0}, {"BZPOPMAX", "z", 0}, {"BZMPOP", 0, 1, "z", "MIN"},
			{"XREAD", "BLOCK", 0, "STREAMS", "s", "$"}, {"XREADGROUP", "GROUP", "g", "c", "BLOCK", 0, "STREAMS", "s", ">"},
			{"WATCH", "k"}, {"UNWATCH"}, {"MULTI"}, {"EXEC"}, {"DISCARD"},
			{"SUBSCRIBE", "ch"}, {"PSUBSCRIBE", "p*"}, {"UNSUBSCRIBE"},
			{"AUTH", "x"}, {"SELECT", 1}, {"HELLO", 3}, {"CLIENT", "LIST"}, {"QUIT"}, {"RESET"},
			{"MONITOR"}, {"SHUTDOWN"}, {"WAIT", 1, 0},
		} {
			name := strings.ToLower(c[0].(string))
			expectError(t, cmd(t, s, c...), 400, "ERR Command is not available: '"+name+"'")
		}
		// Non-blocking XREAD is fine.
		cmd(t, s, "XADD", "s", "1-1", "f", "v")
		expect(t, cmd(t, s, "XREAD", "COUNT", 1, "STREAMS", "s", "0"), 200, `{"result":[["s",[["1-1",["f","v"]]]]]}`)
		if n := s.Stats().Commands["BLPOP"]; n != 0 {
			t.Errorf("a refused command was counted as executed: %d", n)
		}
	})
}

func TestReadOnlyToken(t *testing.T) {
	eachBackend(t, func(t *testing.T, s *upstashtest.Server) {
		cmd(t, s, "SET", "k", "v")
		cmd(t, s, "RPUSH", "l", "a", "b")
		ro := func(body string) resp { return send(t, s, req{body: body, token: s.ReadOnlyToken}) }
		expect(t, ro(`["GET","k"]`), 200, `{"result":"v"}`)
		expect(t, ro(`["MGET","k","x"]`), 200, `{"result":["v",null]}`)
		expect(t, ro(`["EXISTS","k"]`), 200, `{"result":1}`)
		expect(t, ro(`["LRANGE","l",0,-1]`), 200, `{"result":["a","b"]}`)
		expect(t, ro(`["EVAL_RO","return redis.call('GET', KEYS[1])",1,"k"]`), 200, `{"result":"v"}`)
		expect(t, ro(`["ping"]`), 200, `{"result":"PONG"}`)
		for _, c := range []struct{ body, name string }{
			{`["SET","k","w"]`, "set"},
			{`["incr","n"]`, "incr"},
			{`["DEL","k"]`, "del"},
			{`["EVAL","return 1",0]`, "eval"},
			{`["EVALSHA","0000000000000000000000000000000000000000",0]`, "evalsha"},
			{`["KEYS","*"]`, "keys"},
			{`["SCAN",0]`, "scan"},
			{`["FLUSHALL"]`, "flushall"},
			{`["SCRIPT","FLUSH"]`, "script"},
		} {
			expect(t, ro(c.body), 400, `{"error":"NOPERM this user has no permissions to run the '`+c.name+`' command or its subcommand"}`)
		}
		if get(t, s, "k") != "v" {
			t.Error("the read-only token wrote")
		}
		// In a pipeline the write fails alone.
		expect(t, send(t, s, req{path: "/pipeline", token: s.ReadOnlyToken, body: `[["GET","k"],["SET","k","ro"],["GET","k"]]`}), 200,
			`[{"result":"v"},{"error":"NOPERM this user has no permissions to run the 'set' command or its subcommand"},{"result":"v"}]`)
		// In a transaction it discards the whole transaction.
		expectError(t, send(t, s, req{path: "/multi-exec", token: s.ReadOnlyToken, body: `[["GET","k"],["SET","k","ro"]]`}), 400,
			"NOPERM this user has no permissions to run the 'set' command or its subcommand")
	})
}

func TestNoScript(t *testing.T) {
	eachBackend(t, func(t *testing.T, s *upstashtest.Server) {
		const src = "return ARGV[1]"
		got := cmd(t, s, "SCRIPT", "LOAD", src)
		v, _ := decodeJSON(got.body)
		sha, _ := v.(map[string]interface{})["result"].(string)
		if len(sha) != 40 {
			t.Fatalf("SCRIPT LOAD: %s", got.body)
		}
		expect(t, cmd(t, s, "EVALSHA", sha, 0, "hi"), 200, `{"result":"hi"}`)
		expect(t, cmd(t, s, "SCRIPT", "FLUSH"), 200, `{"result":"OK"}`)
		expect(t, cmd(t, s, "EVALSHA", sha, 0, "hi"), 400, `{"error":"NOSCRIPT No matching script. Please use EVAL."}`)
		expect(t, send(t, s, req{path: "/pipeline", body: mustJSON(t, [][]interface{}{{"EVALSHA", sha, 0, "a"}, {"EVAL", src, 0, "b"}, {"EVALSHA", sha, 0, "c"}})}), 200,
			`[{"error":"NOSCRIPT No matching script. Please use EVAL."},{"result":"b"},{"result":"c"}]`)
	})
}

func TestSyncToken(t *testing.T) {
	eachBackend(t, func(t *testing.T, s *upstashtest.Server) {
		token := func(r resp) string {
			t.Helper()
			tok := r.header.Get("Upstash-Sync-Token")
			if tok == "" {
				t.Fatalf("no upstash-sync-token on a %d response", r.status)
			}
			return tok
		}
		t0 := token(cmd(t, s, "GET", "k"))
		t1 := token(cmd(t, s, "SET", "k", "1"))
		if t1 == t0 {
			t.Error("sync token did not change after a write")
		}
		t2 := token(cmd(t, s, "SET", "k", "2"))
		if t2 == t1 {
			t.Error("sync token did not change after a second write")
		}
		t3 := token(send(t, s, req{path: "/pipeline", body: `[["GET","k"],["INCR","n"]]`}))
		if t3 == t2 {
			t.Error("sync token did not change after a pipeline with a write")
		}
		t4 := token(send(t, s, req{path: "/multi-exec", body: `[["INCR","n"]]`}))
		if t4 == t3 {
			t.Error("sync token did not change after a transaction with a write")
		}
		// Reads leave it alone.
		if t5 := token(cmd(t, s, "GET", "k")); t5 != t4 {
			t.Errorf("a read moved the sync token: %s -> %s", t4, t5)
		}
		// A write whose response was dropped still moves it.
		s.DropResponseNext(1)
		if _, err := sendErr(s, req{body: `["SET","k","2"]`}); err == nil {
			t.Fatal("dropped request got a response")
		}
		if t6 := token(cmd(t, s, "GET", "k")); t6 == t4 {
			t.Error("sync token did not change after a write whose response was dropped")
		}
		// Requests carrying any sync token are accepted.
		for _, h := range []string{"", t0, t4, "garbage-that-was-never-issued"} {
			got := send(t, s, req{body: `["GET","k"]`, header: map[string]string{"upstash-sync-token": h}})
			expect(t, got, 200, `{"result":"2"}`)
			token(got)
		}
	})
}

func TestStats(t *testing.T) {
	eachBackend(t, func(t *testing.T, s *upstashtest.Server) {
		cmd(t, s, "SET", "k", "v")
		cmd(t, s, "get", "k")
		send(t, s, req{path: "/pipeline", body: `[["GET","k"],["INCR","n"],["BLPOP","x",0]]`})
		send(t, s, req{path: "/multi-exec", body: `[["INCR","n"],["GET","k"]]`})
		send(t, s, req{method: "GET", path: "/get/k"})
		send(t, s, req{body: `["GET","k"]`, token: "wrong"})
		send(t, s, req{path: "/multi-exec", body: `[["INCR","n"],["LPUSH","l"]]`}) // discarded
		st := s.Stats()
		wantReq := map[string]int64{"/": 3, "/pipeline": 1, "/multi-exec": 2, "path": 1}
		for k, v := range wantReq {
			if st.Requests[k] != v {
				t.Errorf("Requests[%q] = %d, want %d (all: %v)", k, st.Requests[k], v, st.Requests)
			}
		}
		if st.TotalRequests != 7 {
			t.Errorf("TotalRequests = %d, want 7", st.TotalRequests)
		}
		wantCmd := map[string]int64{"SET": 1, "GET": 4, "INCR": 2}
		for k, v := range wantCmd {
			if st.Commands[k] != v {
				t.Errorf("Commands[%q] = %d, want %d (all: %v)", k, st.Commands[k], v, st.Commands)
			}
		}
		if st.TotalCommands != 7 || len(st.Commands) != 3 {
			t.Errorf("TotalCommands = %d, Commands = %v; want 7 over SET, GET, INCR", st.TotalCommands, st.Commands)
		}
		// A copy: mutating it does not change the server's.
		st.Requests["/"] = 100
		if s.Stats().Requests["/"] != 3 {
			t.Error("Stats returned the live map")
		}
		s.ResetStats()
		st = s.Stats()
		if st.TotalRequests != 0 || st.TotalCommands != 0 || len(st.Requests) != 0 || len(st.Commands) != 0 {
			t.Errorf("after ResetStats: %+v", st)
		}
	})
}
