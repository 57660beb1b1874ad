package upstash_test

import (
	"encoding/json"
	"errors"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/chatstate/upstash"
)

// TestJSONStringifyEncoding checks the bytes Set stores for each kind of
// value: what JavaScript's JSON.stringify writes for the same value.
func TestJSONStringifyEncoding(t *testing.T) {
	env := newStateEnv(t)
	ctx, c, s := ctxT(t), env.client, env.state
	cases := []struct {
		key   string
		value any
		want  string
	}{
		{"k", map[string]int{"a": 1}, `{"a":1}`},
		{"str", "abc", `"abc"`},
		{"dedupe:slack:1", true, `true`},
		{"num", 1.5e21, `1.5e+21`},
		{"html", "<b>&</b>", `"<b>&</b>"`},
		{"raw", json.RawMessage(" {\"b\": [1, 2],\n \"s\": \"a b\"} "), `{"b":[1,2],"s":"a b"}`},
		{"raw zeros", json.RawMessage(`[-0, -0.0, -0e3, -0.00E-1, -1, -0.5, 0, "-0"]`), `[0,0.0,0e3,0.00E-1,-1,-0.5,0,"-0"]`},
		{"raw separators", json.RawMessage(`"a\u2028b\u2029c\u0041"`), "\"a\u2028b\u2029c\\u0041\""},
		{"raw field", struct {
			R json.RawMessage `json:"r"`
		}{json.RawMessage(`{ "z" : -0 }`)}, `{"r":{"z":0}}`},
		{"bytes", []byte("hi"), `"aGk="`},
		{"null", nil, `null`},
		{"line separators", "a\u2028b\u2029c", "\"a\u2028b\u2029c\""}, // raw, as JSON.stringify
		{"backslash u2028 text", `a\u2028`, `"a\\u2028"`},
		{"negative zero", math.Copysign(0, -1), `0`},
		{"quoted -0 and separators", "say \"-0\"\u2028\\", "\"say \\\"-0\\\"\u2028\\\\\""},
		{"key -0", map[string]int{"-0": -0}, `{"-0":0}`},
		{"negative zero inside", map[string]any{"z": []float64{math.Copysign(0, -1), -0.5}}, `{"z":[0,-0.5]}`},
		{"struct", struct {
			A string `json:"a"`
			B int    `json:"b,omitempty"`
		}{A: "x"}, `{"a":"x"}`},
	}
	for _, tc := range cases {
		must(t, s.Set(ctx, tc.key, tc.value, 0))
		if got := rawString(t, c, "GET", "chat-sdk:cache:"+tc.key); got != tc.want {
			t.Errorf("GET chat-sdk:cache:%s = %s, want %s", tc.key, got, tc.want)
		}
		if got := pttl(t, c, "chat-sdk:cache:"+tc.key); got != -time.Millisecond {
			t.Errorf("PTTL after Set with ttl 0 = %v, want -1ms (no expiry)", got)
		}
	}
}

func TestStateMarshalErrorsNameTheKey(t *testing.T) {
	env := newStateEnv(t)
	ctx, s := ctxT(t), env.state
	env.srv.ResetStats()
	type inner struct{ Text string }
	type outer struct {
		Items []inner
		M     map[string]*inner
	}
	cases := map[string]any{
		"nan":     math.NaN(),
		"chan":    struct{ C chan int }{make(chan int)},
		"nested":  outer{M: map[string]*inner{"a": {Text: "bad\x80"}}},
		"deep":    outer{Items: []inner{{"ok"}, {"\xff"}}},
		"mapkey":  map[string]string{"\xc0": "v"},
		"iface":   []any{map[string]any{"x": "\xe2\x82"}},
		"pointer": &inner{Text: "\xff"},
	}
	// At any depth: 200 levels of []any and of maps, and a long pointer
	// chain through the same type.
	var deepSlice any = "\xff"
	var deepMap any = map[string]any{"k": "ok", "bad": "\xfe"}
	for i := 0; i < 200; i++ {
		deepSlice = []any{"ok", deepSlice}
		deepMap = map[string]any{"a": deepMap}
	}
	type node struct {
		Next *node
		Text string
	}
	chain := &node{Text: "\xff"}
	for i := 0; i < 200; i++ {
		chain = &node{Next: chain, Text: "ok"}
	}
	cases["deep slices"], cases["deep maps"], cases["pointer chain"] = deepSlice, deepMap, chain
	for key, v := range cases {
		err := s.Set(ctx, key, v, 0)
		if !errors.Is(err, upstash.ErrInvalidArgument) || !strings.Contains(err.Error(), `"`+key+`"`) {
			t.Errorf("Set(%s): %v; want ErrInvalidArgument naming the key", key, err)
		}
	}
	if n := env.srv.Stats().TotalRequests; n != 0 {
		t.Errorf("%d requests were sent for unencodable values", n)
	}
	// A json.Marshaler's output with an escaped U+FFFD is not a false alarm.
	must(t, s.Set(ctx, "escaped", json.RawMessage(`"\ufffd"`), 0))
	must(t, s.Set(ctx, "escaped2", struct{ R json.RawMessage }{json.RawMessage(`"\ufffd"`)}, 0))
	must(t, s.Set(ctx, "literal", `\ufffd`, 0)) // six ASCII characters
	if got := rawString(t, env.client, "GET", "chat-sdk:cache:literal"); got != `"\\ufffd"` {
		t.Errorf("GET literal = %s", got)
	}
}
