package upstashtest_test

import (
	"encoding/base64"
	"testing"

	"github.com/chatstate/upstash/upstashtest"
)

var b64Header = map[string]string{"Upstash-Encoding": "base64"}

func b64(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }

func TestBase64Encoding(t *testing.T) {
	eachBackend(t, func(t *testing.T, s *upstashtest.Server) {
		// Binary value with NUL and invalid UTF-8, set through a path-style
		// raw body.
		const binary = "a\x00b\xff\xfe\xc3(z"
		expect(t, send(t, s, req{path: "/set/bin", body: binary}), 200, `{"result":"OK"}`)
		if got := get(t, s, "bin"); got != binary {
			t.Fatalf("stored %q, want %q", got, binary)
		}

		cases := []struct {
			name   string
			path   string
			body   string
			header map[string]string
			status int
			want   string
		}{
			{"top-level status OK stays raw", "/", `["SET","okkey","OK"]`, b64Header, 200, `{"result":"OK"}`},
			{"bulk OK is encoded", "/", `["GET","okkey"]`, b64Header, 200, `{"result":"T0s="}`},
			{"PING status is encoded", "/", `["PING"]`, b64Header, 200, `{"result":"UE9ORw=="}`},
			{"other status is encoded", "/", `["TYPE","okkey"]`, b64Header, 200, `{"result":"` + b64("string") + `"}`},
			{"nil untouched", "/", `["GET","missing"]`, b64Header, 200, `{"result":null}`},
			{"integer untouched", "/", `["STRLEN","okkey"]`, b64Header, 200, `{"result":2}`},
			{"array: every string encoded, nil kept", "/", `["MGET","okkey","missing","bin"]`, b64Header, 200,
				`{"result":["T0s=",null,"` + b64(binary) + `"]}`},
			{"binary round-trip", "/", `["GET","bin"]`, b64Header, 200, `{"result":"` + b64(binary) + `"}`},
			{"header value is case-insensitive", "/", `["GET","bin"]`, map[string]string{"Upstash-Encoding": "BASE64"}, 200, `{"result":"` + b64(binary) + `"}`},
			{"without the header: U+FFFD for invalid UTF-8", "/", `["GET","bin"]`, nil, 200, `{"result":"a\u0000b\ufffd\ufffd\ufffd(z"}`},
			{"without the header: bulk OK raw", "/", `["GET","okkey"]`, nil, 200, `{"result":"OK"}`},
			{"Lua top-level status OK raw", "/", `["EVAL","return redis.status_reply('OK')",0]`, b64Header, 200, `{"result":"OK"}`},
			{"Lua top-level other status encoded", "/", `["EVAL","return redis.status_reply('DONE')",0]`, b64Header, 200, `{"result":"` + b64("DONE") + `"}`},
			{"Lua table: nested status OK encoded", "/", `["EVAL","return {redis.status_reply('OK'), 'x', 1}",0]`, b64Header, 200, `{"result":["T0s=","eA==",1]}`},
			{"Lua nested tables", "/", `["EVAL","return {1, {redis.status_reply('OK'), 'y'}}",0]`, b64Header, 200, `{"result":[1,["T0s=","eQ=="]]}`},
			{"Lua table without the header", "/", `["EVAL","return {redis.status_reply('OK'), 'x', 1}",0]`, nil, 200, `{"result":["OK","x",1]}`},
			{"errors are never encoded", "/", `["INCR","okkey"]`, b64Header, 400, `{"error":"ERR value is not an integer or out of range"}`},
			{"pipeline: per-command top level", "/pipeline", `[["SET","p","OK"],["GET","p"],["PING"],["INCR","p"],["MGET","p"],["GET","nope"]]`, b64Header, 200,
				`[{"result":"OK"},{"result":"T0s="},{"result":"UE9ORw=="},{"error":"ERR value is not an integer or out of range"},{"result":["T0s="]},{"result":null}]`},
			{"multi-exec: per-command top level", "/multi-exec", `[["SET","m","v"],["GET","m"],["INCR","m"],["LPUSH","ml","OK"],["LRANGE","ml",0,-1]]`, b64Header, 200,
				`[{"result":"OK"},{"result":"dg=="},{"error":"ERR value is not an integer or out of range"},{"result":1},{"result":["T0s="]}]`},
			{"path style", "/get/okkey", ``, b64Header, 200, `{"result":"T0s="}`},
		}
		for _, c := range cases {
			t.Run(c.name, func(t *testing.T) {
				expect(t, send(t, s, req{path: c.path, body: c.body, header: c.header}), c.status, c.want)
			})
		}
	})
}
