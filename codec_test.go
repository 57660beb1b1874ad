package upstash_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/chatstate/upstash"
)

func TestDecodeReply(t *testing.T) {
	tests := []struct {
		name string
		body string
		b64  bool
		want string // Value.String(), or "" when an error is expected
		err  error  // sentinel the error matches
	}{
		// Base64 on: the status OK stays raw at every depth.
		{"top-level OK raw", `{"result":"OK"}`, true, `"OK"`, nil},
		{"OK at depth 1", `{"result":["OK","T0s="]}`, true, `["OK", "OK"]`, nil},
		{"OK at depth 2", `{"result":[["OK"],[["OK"]]]}`, true, `[["OK"], [["OK"]]]`, nil},
		{"bulk OK is T0s=", `{"result":"T0s="}`, true, `"OK"`, nil},
		{"OA is the byte 8", `{"result":"OA"}`, true, `"8"`, nil},
		{"padded one byte", `{"result":"YQ=="}`, true, `"a"`, nil},
		{"unpadded one byte", `{"result":"YQ"}`, true, `"a"`, nil},
		{"padded two bytes", `{"result":"YWI="}`, true, `"ab"`, nil},
		{"unpadded two bytes", `{"result":"YWI"}`, true, `"ab"`, nil},
		{"no padding needed", `{"result":"YmFy"}`, true, `"bar"`, nil},
		{"empty string", `{"result":""}`, true, `""`, nil},
		{"PONG", `{"result":"UE9ORw=="}`, true, `"PONG"`, nil},
		{"NUL bytes", `{"result":"AGEAAA=="}`, true, `"\x00a\x00\x00"`, nil},
		{"invalid UTF-8 decoded exactly", `{"result":"/wDDKICA"}`, true, `"\xff\x00\xc3(\x80\x80"`, nil},
		{"unicode", `{"result":"w7zwn5qA"}`, true, `"ü🚀"`, nil},
		{"invalid base64 kept raw", `{"result":"not base64!"}`, true, `"not base64!"`, nil},
		{"single character kept raw", `{"result":"Y"}`, true, `"Y"`, nil},
		{"bad padding kept raw", `{"result":"YQ="}`, true, `"YQ="`, nil},
		{"non-canonical bits kept raw", `{"result":"YR=="}`, true, `"YR=="`, nil},
		{"URL alphabet kept raw", `{"result":"-_-_"}`, true, `"-_-_"`, nil},
		// Go's decoder skips CR and LF even in strict mode, as atob (the
		// official client's decoder) skips whitespace.
		{"embedded newline skipped", `{"result":"YW\nJj"}`, true, `"abc"`, nil},
		{"integers untouched", `{"result":[1,-2,0,9223372036854775807,-9223372036854775808]}`, true,
			`[(integer) 1, (integer) -2, (integer) 0, (integer) 9223372036854775807, (integer) -9223372036854775808]`, nil},
		{"numeric string decoded", `{"result":"MTAxNjAwMDAwMDAwMTUwMDgxNDY3"}`, true, `"101600000000150081467"`, nil},
		{"nil", `{"result":null}`, true, `(nil)`, nil},
		{"nil in arrays", `{"result":[null,"YQ==",[null,1]]}`, true, `[(nil), "a", [(nil), (integer) 1]]`, nil},
		{"empty array", `{"result":[]}`, true, `[]`, nil},
		{"SCAN shape", `{"result":["MA==",["a2V5MQ==","a2V5Mg=="]]}`, true, `["0", ["key1", "key2"]]`, nil},
		{"booleans", `{"result":[true,false]}`, true, `[(integer) 1, (integer) 0]`, nil},
		{"extra fields ignored", `{"result":"YmFy","other":{"x":[1]}}`, true, `"bar"`, nil},
		{"whitespace around", " \n{ \"result\" : 1 }\n ", true, `(integer) 1`, nil},
		// Base64 off: strings raw.
		{"raw string", `{"result":"YmFy"}`, false, `"YmFy"`, nil},
		{"raw OK", `{"result":"OK"}`, false, `"OK"`, nil},
		{"raw escapes", `{"result":"a\u0000b\n\u00e9\ud83d\ude80"}`, false, `"a\x00b\né🚀"`, nil},
		{"raw replacement character", `{"result":"a\ufffdb"}`, false, `"a�b"`, nil},
		{"raw nested", `{"result":["T0s=",["OK"],null,3]}`, false, `["T0s=", ["OK"], (nil), (integer) 3]`, nil},
		// Protocol errors.
		{"missing result", `{}`, true, "", upstash.ErrProtocol},
		{"null body", `null`, true, "", upstash.ErrProtocol},
		{"empty body", ``, true, "", upstash.ErrProtocol},
		{"array body", `[{"result":1}]`, true, "", upstash.ErrProtocol},
		{"string body", `"OK"`, true, "", upstash.ErrProtocol},
		{"truncated", `{"result":["YQ==",`, true, "", upstash.ErrProtocol},
		{"trailing data", `{"result":1}x`, true, "", upstash.ErrProtocol},
		{"two objects", `{"result":1}{"result":2}`, true, "", upstash.ErrProtocol},
		{"float", `{"result":1.5}`, true, "", upstash.ErrProtocol},
		{"exponent", `{"result":1e3}`, true, "", upstash.ErrProtocol},
		{"integer overflow", `{"result":9223372036854775808}`, true, "", upstash.ErrProtocol},
		{"object result", `{"result":{"a":1}}`, true, "", upstash.ErrProtocol},
		{"object in array", `{"result":[1,{"a":1}]}`, true, "", upstash.ErrProtocol},
		{"error not a string", `{"error":["x"]}`, true, "", upstash.ErrProtocol},
		{"invalid UTF-8 in JSON", "{\"result\":\"\xff\"}", false, `"�"`, nil},
		{"too deep", `{"result":` + strings.Repeat("[", 70) + strings.Repeat("]", 70) + `}`, true, "", upstash.ErrProtocol},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			v, err := upstash.DecodeReply([]byte(tc.body), tc.b64)
			if tc.err != nil {
				if !errors.Is(err, tc.err) {
					t.Fatalf("got %v, %v; want an error matching %v", v, err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatalf("error %v", err)
			}
			if got := v.String(); got != tc.want {
				t.Fatalf("got %s, want %s", got, tc.want)
			}
		})
	}
}

func TestDecodeReplyDepth(t *testing.T) {
	// 64 levels of nesting are fine, 65 are not.
	ok := `{"result":` + strings.Repeat("[", 64) + `"YQ=="` + strings.Repeat("]", 64) + `}`
	if _, err := upstash.DecodeReply([]byte(ok), true); err != nil {
		t.Fatalf("64 levels: %v", err)
	}
	deep := `{"result":` + strings.Repeat("[", 65) + `"YQ=="` + strings.Repeat("]", 65) + `}`
	if _, err := upstash.DecodeReply([]byte(deep), true); !errors.Is(err, upstash.ErrProtocol) {
		t.Fatalf("65 levels: %v", err)
	}
	// Far deeper than encoding/json allows: an error, never a stack overflow.
	abyss := `{"result":` + strings.Repeat("[", 100000) + strings.Repeat("]", 100000) + `}`
	if _, err := upstash.DecodeReply([]byte(abyss), true); !errors.Is(err, upstash.ErrProtocol) {
		t.Fatalf("100000 levels: %v", err)
	}
}

func TestDecodeReplyError(t *testing.T) {
	for _, body := range []string{
		`{"error":"WRONGTYPE Operation against a key holding the wrong kind of value"}`,
		`{"error":"WRONGTYPE Operation against a key holding the wrong kind of value","result":"YQ=="}`,
	} {
		_, err := upstash.DecodeReply([]byte(body), true)
		var e *upstash.Error
		if !errors.As(err, &e) {
			t.Fatalf("%s: %v is not an *Error", body, err)
		}
		if e.Code != "WRONGTYPE" || e.Index != -1 || e.Status != 200 || e.Command != "" {
			t.Fatalf("%s: %+v", body, *e)
		}
	}
	// Error texts are never base64-decoded.
	_, err := upstash.DecodeReply([]byte(`{"error":"T0s="}`), true)
	var e *upstash.Error
	if !errors.As(err, &e) || e.Message != "T0s=" {
		t.Fatalf("%v", err)
	}
	for msg, code := range map[string]string{
		"ERR syntax error": "ERR",
		"NOSCRIPT No matching script. Please use EVAL.": "NOSCRIPT",
		"NOPERM this user has no permissions":           "NOPERM",
		"BUSYGROUP Consumer Group name already exists":  "BUSYGROUP",
		"MISCONF_X y":  "MISCONF_X",
		"Unauthorized": "",
		"user_script:1: Script attempted to access a nonexistent global variable": "",
		"":   "",
		"ER": "ER",
	} {
		e := &upstash.Error{}
		_, err := upstash.DecodeReply([]byte(`{"error":"`+msg+`"}`), true)
		if !errors.As(err, &e) || e.Code != code {
			t.Errorf("code of %q = %q, want %q", msg, e.Code, code)
		}
	}
}

func TestValueAccessors(t *testing.T) {
	nilV, intV := upstash.NilValue(), upstash.IntValue(42)
	strV, numStr := upstash.StringValue([]byte("hello")), upstash.StringValue([]byte("-17"))
	okV := upstash.StringValue([]byte("OK"))
	arr := upstash.ArrayValue(upstash.StringValue([]byte("a")), nilV, upstash.IntValue(3))
	nested := upstash.ArrayValue(arr)

	if nilV.Kind() != upstash.KindNil || !nilV.IsNil() || intV.IsNil() || (upstash.Value{}).Kind() != upstash.KindNil {
		t.Error("Kind/IsNil")
	}
	for k, want := range map[upstash.Kind]string{upstash.KindNil: "nil", upstash.KindInt: "integer", upstash.KindString: "string", upstash.KindArray: "array", 9: "Kind(9)"} {
		if k.String() != want {
			t.Errorf("Kind(%d).String() = %q", k, k.String())
		}
	}
	// Int64
	if n, err := intV.Int64(); n != 42 || err != nil {
		t.Errorf("Int64 of integer: %d %v", n, err)
	}
	if n, err := numStr.Int64(); n != -17 || err != nil {
		t.Errorf("Int64 of numeric string: %d %v", n, err)
	}
	if _, err := strV.Int64(); !errors.Is(err, upstash.ErrProtocol) {
		t.Errorf("Int64 of text: %v", err)
	}
	if _, err := nilV.Int64(); !errors.Is(err, upstash.ErrNil) {
		t.Errorf("Int64 of nil: %v", err)
	}
	if _, err := arr.Int64(); !errors.Is(err, upstash.ErrProtocol) {
		t.Errorf("Int64 of array: %v", err)
	}
	// Bytes and Text
	if b, err := strV.Bytes(); string(b) != "hello" || err != nil {
		t.Errorf("Bytes: %q %v", b, err)
	}
	if _, err := intV.Bytes(); !errors.Is(err, upstash.ErrProtocol) {
		t.Errorf("Bytes of integer: %v", err)
	}
	if _, err := nilV.Bytes(); !errors.Is(err, upstash.ErrNil) {
		t.Errorf("Bytes of nil: %v", err)
	}
	if s, err := intV.Text(); s != "42" || err != nil {
		t.Errorf("Text of integer: %q %v", s, err)
	}
	if _, err := nilV.Text(); !errors.Is(err, upstash.ErrNil) {
		t.Errorf("Text of nil: %v", err)
	}
	if _, err := arr.Text(); !errors.Is(err, upstash.ErrProtocol) {
		t.Errorf("Text of array: %v", err)
	}
	// Bool
	for _, tc := range []struct {
		v    upstash.Value
		want bool
		ok   bool
	}{{nilV, false, true}, {upstash.IntValue(0), false, true}, {upstash.IntValue(1), true, true}, {okV, true, true}, {strV, false, false}, {arr, false, false}} {
		got, err := tc.v.Bool()
		if got != tc.want || (err == nil) != tc.ok {
			t.Errorf("Bool(%v) = %v, %v", tc.v, got, err)
		}
	}
	// Array and Strings
	if a, err := arr.Array(); len(a) != 3 || err != nil {
		t.Errorf("Array: %v %v", a, err)
	}
	if _, err := strV.Array(); !errors.Is(err, upstash.ErrProtocol) {
		t.Errorf("Array of string: %v", err)
	}
	if _, err := nilV.Array(); !errors.Is(err, upstash.ErrNil) {
		t.Errorf("Array of nil: %v", err)
	}
	if s, err := arr.Strings(); err != nil || strings.Join(s, "|") != "a||3" {
		t.Errorf("Strings: %q %v", s, err)
	}
	if _, err := nested.Strings(); !errors.Is(err, upstash.ErrProtocol) {
		t.Errorf("Strings of nested: %v", err)
	}
	if got := nested.String(); got != `[["a", (nil), (integer) 3]]` {
		t.Errorf("String() = %s", got)
	}
}

func TestDecodeReplyDoesNotAliasTheBody(t *testing.T) {
	for _, b64 := range []bool{false, true} {
		body := []byte(`{"result":["YmFy","OK"],"x":0}`)
		single := []byte(`{"result":"YmFy"}`)
		v, err := upstash.DecodeReply(body, b64)
		if err != nil {
			t.Fatal(err)
		}
		w, err := upstash.DecodeReply(single, b64)
		if err != nil {
			t.Fatal(err)
		}
		before, wBefore := v.String(), w.String()
		for i := range body {
			body[i] = 'Z'
		}
		for i := range single {
			single[i] = 'Z'
		}
		if v.String() != before || w.String() != wBefore {
			t.Fatalf("values changed with the body: %s -> %s, %s -> %s", before, v, wBefore, w)
		}
	}
}
