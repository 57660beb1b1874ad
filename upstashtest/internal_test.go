package upstashtest

import (
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/gomodule/redigo/redis"
)

func TestPanicBecomes500(t *testing.T) {
	s := NewServer(t, WithEmbedded())
	hook := func(r *http.Request) {
		if r.URL.Path == "/boom" {
			panic("boom")
		}
	}
	testHookHandle.Store(&hook)
	defer testHookHandle.Store(nil)

	res, err := http.Post(s.URL+"/boom?_token="+s.Token, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != 500 || string(body) != `{"error":"ERR upstashtest: internal error"}` {
		t.Errorf("panic: %d %s", res.StatusCode, body)
	}
	// The server goes on.
	res, err = http.Post(s.URL+"/ping?_token="+s.Token, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != 200 {
		t.Errorf("after a panic: %d", res.StatusCode)
	}
}

func TestReplyValue(t *testing.T) {
	cases := []struct {
		name string
		in   interface{}
		b64  bool
		want string
	}{
		{"nil", nil, true, `null`},
		{"int", int64(-42), true, `-42`},
		{"status OK raw", "OK", true, `"OK"`},
		{"status OK no b64", "OK", false, `"OK"`},
		{"status PONG", "PONG", true, `"UE9ORw=="`},
		{"bulk OK", []byte("OK"), true, `"T0s="`},
		{"bulk raw", []byte("héllo"), false, `"héllo"`},
		{"bulk invalid UTF-8", []byte("a\xffb"), false, `"a\ufffdb"`},
		{"bulk invalid UTF-8 b64", []byte("a\xffb"), true, `"Yf9i"`},
		{"html not escaped", []byte("<&>"), false, `"<&>"`},
		{"empty bulk", []byte{}, true, `""`},
		{"array", []interface{}{"OK", []byte("OK"), int64(1), nil, []interface{}{"OK"}}, true, `["T0s=","T0s=",1,null,["T0s="]]`},
		{"array raw", []interface{}{"OK", []byte("x"), []interface{}{}}, false, `["OK","x",[]]`},
		{"nested error", []interface{}{redis.Error("ERR x")}, false, `["ERR x"]`},
	}
	for _, c := range cases {
		got := string(marshalJSON(replyValue(c.in, c.b64, true)))
		if got != c.want {
			t.Errorf("%s: %s, want %s", c.name, got, c.want)
		}
	}
}

func TestParsePathCommand(t *testing.T) {
	cases := []struct {
		target string
		body   string
		want   []string
		err    string
	}{
		{"/set/foo/bar", "", []string{"SET", "foo", "bar"}, ""},
		{"/set/a%2Fb/c%20d?EX=10", "", []string{"SET", "a/b", "c d", "EX", "10"}, ""},
		{"/set/k?EX=10&NX", "body", []string{"SET", "k", "body", "EX", "10", "NX"}, ""},
		{"/get/k?_token=secret", "", []string{"GET", "k"}, ""},
		{"/echo?a+b=c%2Bd", "", []string{"ECHO", "a b", "c+d"}, ""},
		{"/echo/a+b", "", []string{"ECHO", "a+b"}, ""},
		{"//get///k/", "", []string{"GET", "k"}, ""},
		{"/get?_token=%zz", "", nil, "ERR failed to parse command: bad percent-encoding"},
	}
	for _, c := range cases {
		u, err := url.ParseRequestURI(c.target)
		if err != nil {
			t.Fatalf("%s: %v", c.target, err)
		}
		cmd, err := parsePathCommand(u, []byte(c.body))
		if c.err != "" {
			if err == nil || !strings.HasPrefix(err.Error(), c.err) {
				t.Errorf("%s: err %v, want %q", c.target, err, c.err)
			}
			if err != nil && strings.Contains(err.Error(), "secret") {
				t.Errorf("%s: error echoes the token", c.target)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: %v", c.target, err)
			continue
		}
		got := append([]string{cmd.name}, argStrings(cmd.args)...)
		if strings.Join(got, "|") != strings.Join(c.want, "|") {
			t.Errorf("%s: %q, want %q", c.target, got, c.want)
		}
	}
}

func argStrings(args [][]byte) []string {
	out := make([]string, len(args))
	for i, a := range args {
		out[i] = string(a)
	}
	return out
}

func TestCommandFromJSON(t *testing.T) {
	cases := []struct {
		body string
		want []string
		err  string
	}{
		{`["set","k","v"]`, []string{"SET", "k", "v"}, ""},
		{`["SET","k",1.5]`, []string{"SET", "k", "1.5"}, ""},
		{`["SET","k",12345678901234567890123]`, []string{"SET", "k", "12345678901234567890123"}, ""},
		{`["SET","k",-1e+21]`, []string{"SET", "k", "-1e+21"}, ""},
		{`["SET","k",true]`, []string{"SET", "k", "true"}, ""},
		{` [ "get" , "k" ] `, []string{"GET", "k"}, ""},
		{`["SET","k","\u0000\ud83d\ude00"]`, []string{"SET", "k", "\x00😀"}, ""},
		{`["SET","k",null]`, nil, "ERR invalid argument at index 2: null"},
		{`[null]`, nil, "ERR invalid argument at index 0: null"},
		{`[]`, nil, "ERR empty command"},
		{`{"a":1}`, nil, "ERR failed to parse command: the request body must be a JSON array"},
		{`[`, nil, "ERR failed to parse command: invalid JSON"},
	}
	for _, c := range cases {
		cmd, err := parseCommandBody([]byte(c.body))
		if c.err != "" {
			if err == nil || !strings.HasPrefix(err.Error(), c.err) {
				t.Errorf("%s: err %v, want %q", c.body, err, c.err)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: %v", c.body, err)
			continue
		}
		got := append([]string{cmd.name}, argStrings(cmd.args)...)
		if strings.Join(got, "|") != strings.Join(c.want, "|") {
			t.Errorf("%s: %q, want %q", c.body, got, c.want)
		}
	}
}

func TestEmbeddedFixups(t *testing.T) {
	cases := []struct {
		in   interface{}
		want interface{}
	}{
		{[]byte("1.7e+12"), "1700000000000"},
		{[]byte("1.5"), "1.5"},
		{[]byte("1e+21"), "1e+21"},
		{[]byte("1.25e-07"), "1.25e-07"},
		{[]byte("-2.5e+3"), "-2500"},
		{[]byte("inf"), "inf"},
		{[]byte("member"), "member"},
	}
	for _, c := range cases {
		got := string(fixFloat(c.in).([]byte))
		if got != c.want {
			t.Errorf("fixFloat(%s) = %s, want %s", c.in, got, c.want)
		}
	}
	if got := roundTTL(int64(99_501)); got != int64(100) {
		t.Errorf("roundTTL(99501) = %v", got)
	}
	if got := roundTTL(int64(-2)); got != int64(-2) {
		t.Errorf("roundTTL(-2) = %v", got)
	}
	// Members named like floats are left alone in WITHSCORES replies.
	_, fix := embeddedFixup(command{name: "ZRANGE", args: [][]byte{[]byte("z"), []byte("0"), []byte("-1"), []byte("withscores")}})
	out, _ := json.Marshal(fix([]interface{}{[]byte("1e+3"), []byte("1.7e+12")}))
	if string(out) != `["MWUrMw==","MTcwMDAwMDAwMDAwMA=="]` {
		t.Errorf("ZRANGE WITHSCORES fixup: %s", out)
	}
}

// FuzzParseBodies checks that no body makes the parsers panic, and that an
// accepted command has a non-empty name.
func FuzzParseBodies(f *testing.F) {
	for _, s := range []string{`["SET","k","v"]`, `[["PING"],["GET","k"]]`, `[1.5,true,null]`, `{}`, `[[]]`, `"x"`, `[`, ``} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		if c, err := parseCommandBody(body); err == nil && c.name == "" && len(body) > 0 && !strings.Contains(string(body), `""`) {
			t.Errorf("accepted %q with an empty name", body)
		}
		_, _ = parseBatchBody(body, "pipeline")
		u := &url.URL{Path: string(body), RawQuery: string(body)}
		_, _ = parsePathCommand(u, body)
	})
}
