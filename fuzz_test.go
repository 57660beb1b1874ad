package upstash_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"strconv"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/chatstate/upstash"
)

// FuzzDecodeReply: any body decodes to a value or an error, never a panic;
// errors are protocol errors or command errors; decoding is deterministic.
func FuzzDecodeReply(f *testing.F) {
	for _, seed := range []string{
		`{"result":"OK"}`, `{"result":"T0s="}`, `{"result":"YQ"}`, `{"result":"YQ="}`, `{"result":"Y"}`,
		`{"result":null}`, `{"result":42}`, `{"result":-9223372036854775808}`, `{"result":9223372036854775808}`,
		`{"result":1.5}`, `{"result":1e400}`, `{"result":["OK",["OK",null,1],"AP8="]}`, `{"result":[]}`,
		`{"result":true}`, `{"result":{"a":1}}`, `{"error":"ERR x"}`, `{"error":null,"result":"YmFy"}`,
		`{}`, `[]`, `null`, ``, `{`, `{"result":"\u0000\ud800"}`, "{\"result\":\"\xff\xfe\"}",
		`{"result":` + strings.Repeat("[", 64) + strings.Repeat("]", 64) + `}`,
		`{"result":1} `, `{"result":1}{}`, `{"RESULT":"YQ=="}`, `{"result":"YW\nJj"}`,
	} {
		f.Add([]byte(seed), true)
		f.Add([]byte(seed), false)
	}
	f.Fuzz(func(t *testing.T, body []byte, b64 bool) {
		v, err := upstash.DecodeReply(body, b64)
		if err != nil {
			var e *upstash.Error
			if !errors.Is(err, upstash.ErrProtocol) && !errors.As(err, &e) {
				t.Fatalf("error %v (%T) is neither ErrProtocol nor *Error", err, err)
			}
			if !v.IsNil() {
				t.Fatalf("value %v returned with error %v", v, err)
			}
			if want, ok := referenceDecode(body, b64); ok {
				t.Fatalf("DecodeReply fails with %v; the reference decoder gives %s", err, want)
			}
			_ = err.Error()
			return
		}
		s := v.String() // walks the whole value
		if want, ok := referenceDecode(body, b64); !ok || want != s {
			t.Fatalf("DecodeReply gives %s; the reference decoder gives %s (ok %v)", s, want, ok)
		}
		v2, err2 := upstash.DecodeReply(body, b64)
		if err2 != nil || v2.String() != s {
			t.Fatalf("not deterministic: %v/%v then %v/%v", v, err, v2, err2)
		}
		_, _ = v.Int64()
		_, _ = v.Bool()
		_, _ = v.Strings()
		// Without base64 a string result is exactly the JSON string.
		if !b64 && v.Kind() == upstash.KindString {
			var r struct{ Result string }
			if json.Unmarshal(body, &r) == nil {
				if b, _ := v.Bytes(); string(b) != r.Result {
					t.Fatalf("raw string %q decoded as %q", r.Result, b)
				}
			}
		}
	})
}

// FuzzEnvelope: the reader of reply objects gives what json.Unmarshal
// gives, for one reply and for an array of them, on any body.
func FuzzEnvelope(f *testing.F) {
	for _, seed := range []string{
		`{"result":"OK"}`, `{"error":"ERR x"}`, `{"error":null,"result":"YmFy"}`, `{"RESULT":1,"Error":"E"}`,
		`{"result":1,"result":2}`, `{"error":"a","error":null}`, `{"error":"\u0041"}`, `{"error":1}`,
		`{"res\u0075lt":1}`, "{\"re\u017fult\":1}", `{"x":{"result":1},"result":[1,{"a":"]"}]}`,
		`[{"result":1},{"error":"E"}]`, `[{"result":1},null]`, `[]`, `[1]`, ` [ { "result" : "a\"b" } , {} ] `,
		`{}`, `null`, ``, `{"result":1}{}`, `[{"result":1}]x`, `{"result":-1.5e3,"error":"ERR"}`,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		if diff := upstash.CheckEnvelope(body); diff != "" {
			t.Fatalf("%q: %s", body, diff)
		}
	})
}

// referenceDecode is a plain decoder written from the protocol notes
// (upstash-rest-protocol.md §14.2): a JSON decoder that keeps numbers, then
// OK stays OK, other strings are strict padded base64, then unpadded, else
// kept raw; integers are int64. It returns Value.String() of the result, or
// false when the body has no usable result.
func referenceDecode(body []byte, b64 bool) (string, bool) {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	var r struct {
		Result json.RawMessage `json:"result"`
		Error  *string         `json:"error"`
	}
	if dec.Decode(&r) != nil || r.Error != nil || r.Result == nil {
		return "", false
	}
	if _, err := dec.Token(); err != io.EOF {
		return "", false
	}
	var x any
	dec = json.NewDecoder(bytes.NewReader(r.Result))
	dec.UseNumber()
	if dec.Decode(&x) != nil {
		return "", false
	}
	v, ok := referenceValue(x, b64, 0)
	if !ok {
		return "", false
	}
	return v.String(), true
}

func referenceValue(x any, b64 bool, depth int) (upstash.Value, bool) {
	if depth > 64 {
		return upstash.Value{}, false
	}
	switch t := x.(type) {
	case nil:
		return upstash.NilValue(), true
	case bool:
		if t {
			return upstash.IntValue(1), true
		}
		return upstash.IntValue(0), true
	case json.Number:
		n, err := strconv.ParseInt(string(t), 10, 64)
		return upstash.IntValue(n), err == nil
	case string:
		if !b64 || t == "OK" {
			return upstash.StringValue([]byte(t)), true
		}
		if b, err := base64.StdEncoding.Strict().DecodeString(t); err == nil {
			return upstash.StringValue(b), true
		}
		if b, err := base64.RawStdEncoding.Strict().DecodeString(t); err == nil {
			return upstash.StringValue(b), true
		}
		return upstash.StringValue([]byte(t)), true
	case []any:
		vs := make([]upstash.Value, len(t))
		for i, e := range t {
			v, ok := referenceValue(e, b64, depth+1)
			if !ok {
				return upstash.Value{}, false
			}
			vs[i] = v
		}
		return upstash.ArrayValue(vs...), true
	}
	return upstash.Value{}, false
}

// FuzzArgumentEncoding: any string is either refused with ErrInvalidArgument
// before a request is made, or sent in a body that is valid JSON and decodes
// back to the same string, as a string and as bytes, in a single command and
// in a pipeline.
func FuzzArgumentEncoding(f *testing.F) {
	for _, seed := range []string{
		"", "plain", "OK", `quote" back\slash /`, "\x00\x01\x1f\x7f", "\n\r\t\b\f", "ünïcödé 🚀",
		"\u2028\u2029", "<script>&amp;", "\xff", "a\xc3(", "\xed\xa0\x80", "\xef\xbf\xbd", "\xf4\x90\x80\x80",
		"\xe2\x82", strings.Repeat("é", 100),
	} {
		f.Add(seed)
	}
	ct := &captureTransport{}
	c, err := upstash.New(upstash.Config{URL: "https://fuzz.upstash.io", Token: "t"},
		upstash.WithTransport(ct), upstash.WithRetry(upstash.NoRetry), upstash.WithTelemetry(false))
	if err != nil {
		f.Fatal(err)
	}
	ctx := context.Background()
	f.Fuzz(func(t *testing.T, s string) {
		valid := utf8.ValidString(s)
		_, err := c.Do(ctx, "SET", s, []byte(s))
		n, body := ct.take()
		if !valid {
			if !errors.Is(err, upstash.ErrInvalidArgument) {
				t.Fatalf("invalid UTF-8 %q: error %v", s, err)
			}
			if n != 0 {
				t.Fatalf("invalid UTF-8 %q: %d requests were made", s, n)
			}
			return
		}
		if err != nil {
			// The string is sent twice, and escaping can make it six
			// times longer.
			if errors.Is(err, upstash.ErrRequestTooLarge) && 12*len(s)+32 > upstash.DefaultLimits.MaxRequestBytes {
				return
			}
			t.Fatalf("%q: %v", s, err)
		}
		checkBody(t, body, [][]string{{"SET", s, s}}, false)

		_, err = c.Pipeline(ctx, upstash.Cmd("ECHO", s), upstash.Cmd("GET", "k"))
		if err == nil || !errors.Is(err, upstash.ErrProtocol) {
			// The canned reply is not an array, so the pipeline fails to
			// decode; the body it sent is what matters here.
			t.Fatalf("pipeline: %v", err)
		}
		_, body = ct.take()
		checkBody(t, body, [][]string{{"ECHO", s}, {"GET", "k"}}, true)
	})
}

func checkBody(t *testing.T, body []byte, want [][]string, batch bool) {
	t.Helper()
	if !json.Valid(body) {
		t.Fatalf("body is not valid JSON: %q", body)
	}
	if !utf8.Valid(body) {
		t.Fatalf("body is not valid UTF-8: %q", body)
	}
	var got [][]string
	if batch {
		if err := json.Unmarshal(body, &got); err != nil {
			t.Fatalf("body %q: %v", body, err)
		}
	} else {
		var one []string
		if err := json.Unmarshal(body, &one); err != nil {
			t.Fatalf("body %q: %v", body, err)
		}
		got = [][]string{one}
	}
	if len(got) != len(want) {
		t.Fatalf("body %q: %d commands", body, len(got))
	}
	for i := range want {
		if len(got[i]) != len(want[i]) {
			t.Fatalf("body %q: command %d has %d arguments", body, i, len(got[i]))
		}
		for j := range want[i] {
			if got[i][j] != want[i][j] {
				t.Fatalf("argument %d.%d: sent %q, decodes to %q (body %q)", i, j, want[i][j], got[i][j], body)
			}
		}
	}
}
