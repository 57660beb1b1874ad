package upstash

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"strconv"
	"unicode/utf8"
)

// ---- requests ----

// encodeCommand appends cmd as a JSON array to buf, checking its arguments.
// index is the command's position in a batch, or -1; label names the call
// in errors.
func encodeCommand(buf []byte, cmd Command, index int, label string) ([]byte, error) {
	name := cmd.Name()
	where := ""
	if index >= 0 {
		where = fmt.Sprintf("command %d (%s): ", index, name)
	}
	if name == "" {
		if index < 0 {
			return buf, fmt.Errorf("%w: a command needs a non-empty name", ErrInvalidArgument)
		}
		return buf, callErrorf(label, "command %d: %w: a command needs a non-empty name", index, ErrInvalidArgument)
	}
	buf = append(buf, '[')
	for i, a := range cmd.args {
		if i > 0 {
			buf = append(buf, ',')
		}
		var err error
		if buf, err = appendArg(buf, a); err != nil {
			return buf, callErrorf(label, "%sargument %d: %w", where, i, err)
		}
	}
	return append(buf, ']'), nil
}

// checkRequestSize refuses a request body over max bytes (no limit if max
// is 0 or less) before it is sent.
func checkRequestSize(body []byte, label string, max int) error {
	if max > 0 && len(body) > max {
		return callErrorf(label, "%w: the request of %d bytes exceeds the %d-byte limit (Limits.MaxRequestBytes)", ErrRequestTooLarge, len(body), max)
	}
	return nil
}

// appendArg appends one command argument to buf as a JSON string. Every
// argument travels as a string: Redis sees only strings anyway, and it avoids
// any doubt about how the server would print a JSON number.
func appendArg(buf []byte, arg any) ([]byte, error) {
	switch a := arg.(type) {
	case string:
		return appendJSONString(buf, a)
	case []byte:
		return appendJSONString(buf, string(a))
	case int:
		return appendQuotedInt(buf, int64(a)), nil
	case int8:
		return appendQuotedInt(buf, int64(a)), nil
	case int16:
		return appendQuotedInt(buf, int64(a)), nil
	case int32:
		return appendQuotedInt(buf, int64(a)), nil
	case int64:
		return appendQuotedInt(buf, a), nil
	case uint:
		return appendQuotedUint(buf, uint64(a)), nil
	case uint8:
		return appendQuotedUint(buf, uint64(a)), nil
	case uint16:
		return appendQuotedUint(buf, uint64(a)), nil
	case uint32:
		return appendQuotedUint(buf, uint64(a)), nil
	case uint64:
		return appendQuotedUint(buf, a), nil
	case float64:
		return appendQuotedFloat(buf, a, 64)
	case float32:
		return appendQuotedFloat(buf, float64(a), 32)
	case bool:
		if a {
			return append(buf, `"1"`...), nil
		}
		return append(buf, `"0"`...), nil
	case json.Number:
		return appendJSONString(buf, string(a))
	case nil:
		return buf, fmt.Errorf("%w: nil value", ErrInvalidArgument)
	}
	return buf, fmt.Errorf("%w: unsupported argument type %T (use string, []byte, an integer, a float or bool)", ErrInvalidArgument, arg)
}

func appendQuotedInt(buf []byte, n int64) []byte {
	buf = append(buf, '"')
	buf = strconv.AppendInt(buf, n, 10)
	return append(buf, '"')
}

func appendQuotedUint(buf []byte, n uint64) []byte {
	buf = append(buf, '"')
	buf = strconv.AppendUint(buf, n, 10)
	return append(buf, '"')
}

func appendQuotedFloat(buf []byte, f float64, bits int) ([]byte, error) {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return buf, fmt.Errorf("%w: float argument %v has no Redis form", ErrInvalidArgument, f)
	}
	buf = append(buf, '"')
	buf = strconv.AppendFloat(buf, f, 'f', -1, bits)
	return append(buf, '"'), nil
}

const hexDigits = "0123456789abcdef"

// appendJSONString appends s as a JSON string literal. It refuses invalid
// UTF-8, which a JSON body cannot carry without silently changing it.
func appendJSONString(buf []byte, s string) ([]byte, error) {
	if !utf8.ValidString(s) {
		return buf, fmt.Errorf("%w: not valid UTF-8 (a JSON request cannot carry it unchanged; encode binary data, for example as base64, before sending)", ErrInvalidArgument)
	}
	buf = append(buf, '"')
	start := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 0x20 && c != '"' && c != '\\' {
			continue
		}
		buf = append(buf, s[start:i]...)
		switch c {
		case '"', '\\':
			buf = append(buf, '\\', c)
		case '\n':
			buf = append(buf, '\\', 'n')
		case '\r':
			buf = append(buf, '\\', 'r')
		case '\t':
			buf = append(buf, '\\', 't')
		default:
			buf = append(buf, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
		}
		start = i + 1
	}
	buf = append(buf, s[start:]...)
	return append(buf, '"'), nil
}

// ---- responses ----

// decodeValue turns one decoded JSON value of a "result" field into a Value.
// With base64 on, strings are decoded as the protocol notes (section 14.2)
// say: the status "OK" stays as it is at every depth (it is not the canonical
// base64 of any byte string), other strings are strict padded base64, then
// unpadded; a string that is neither is kept raw, as the official client does.
func decodeValue(x any, b64 bool, depth int) (Value, error) {
	if depth > maxDepth {
		return Value{}, protocolErrorf("reply nested deeper than %d levels", maxDepth)
	}
	switch t := x.(type) {
	case nil:
		return Value{}, nil
	case json.Number:
		n, err := strconv.ParseInt(string(t), 10, 64)
		if err != nil {
			return Value{}, protocolErrorf("number %s in reply is not a 64-bit integer", truncate(string(t), 32))
		}
		return Value{kind: KindInt, num: n}, nil
	case string:
		if !b64 || t == "OK" {
			return Value{kind: KindString, str: []byte(t)}, nil
		}
		return Value{kind: KindString, str: decodeBase64(t)}, nil
	case []any:
		arr := make([]Value, len(t))
		for i, e := range t {
			v, err := decodeValue(e, b64, depth+1)
			if err != nil {
				return Value{}, err
			}
			arr[i] = v
		}
		return Value{kind: KindArray, arr: arr}, nil
	case bool:
		// Not produced by Upstash (RESP2 has no booleans); map like RESP3 would.
		if t {
			return Value{kind: KindInt, num: 1}, nil
		}
		return Value{kind: KindInt, num: 0}, nil
	}
	return Value{}, protocolErrorf("unexpected %T in reply", x)
}

const maxDepth = 64

var (
	strictStd = base64.StdEncoding.Strict()
	strictRaw = base64.RawStdEncoding.Strict()
)

// decodeBase64 decodes s as strict padded base64, then as strict unpadded
// base64; if it is neither, s itself is the value (kept raw, as the official
// client does). decodeBase64Bytes is the same rule for a []byte; the two
// stay separate so that neither path copies its input first.
func decodeBase64(s string) []byte {
	if b, err := strictStd.DecodeString(s); err == nil {
		return b
	}
	if b, err := strictRaw.DecodeString(s); err == nil {
		return b
	}
	return []byte(s)
}

// decodeBase64Bytes is decodeBase64 for src, which the caller owns.
func decodeBase64Bytes(src []byte) []byte {
	// The unpadded bound is the larger one (for "OA", 1 byte against 0).
	buf := make([]byte, strictRaw.DecodedLen(len(src)))
	if n, err := strictStd.Decode(buf, src); err == nil {
		return buf[:n]
	}
	if n, err := strictRaw.Decode(buf, src); err == nil {
		return buf[:n]
	}
	return src
}

// fastValue decodes the common results without a JSON decoder: null, an
// integer, and a string with no escapes (every base64 string). raw is one
// valid JSON value that the caller owns. Anything else reports false and
// goes through decodeValue, with the same outcome.
func fastValue(raw []byte, b64 bool) (Value, bool) {
	if len(raw) == 0 {
		return Value{}, false
	}
	switch c := raw[0]; {
	case c == 'n':
		return Value{}, string(raw) == "null"
	case c == '-' || c >= '0' && c <= '9':
		n, err := strconv.ParseInt(string(raw), 10, 64)
		return Value{kind: KindInt, num: n}, err == nil
	case c != '"' || len(raw) < 2:
		return Value{}, false
	}
	str := raw[1 : len(raw)-1]
	// Escapes need unquoting, and encoding/json replaces invalid UTF-8
	// with U+FFFD: leave both to the decoder.
	if bytes.IndexByte(str, '\\') >= 0 || !utf8.Valid(str) {
		return Value{}, false
	}
	if !b64 || string(str) == "OK" {
		return Value{kind: KindString, str: str}, true
	}
	return Value{kind: KindString, str: decodeBase64Bytes(str)}, true
}

// reply is one {"result": ...} or {"error": ...} object.
type reply struct {
	Result json.RawMessage `json:"result"`
	Error  *string         `json:"error"`
}

// parseReplies decodes a response body into a reply or a []reply. Those
// hold no numbers outside their raw "result", so json.Unmarshal (which
// checks for trailing data and does not copy the input into a decoder
// buffer) serves.
func parseReplies(data []byte, v any) error { return json.Unmarshal(data, v) }

// parseJSON decodes one JSON value into v keeping numbers as json.Number.
// Its input is a reply's raw "result", which json.Unmarshal has already cut
// to exactly one value, so there is no trailing data to look for.
func parseJSON(data []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	return dec.Decode(v)
}

// resultValue decodes a reply's result; it is an error for it to be missing.
func (r *reply) resultValue(b64 bool) (Value, error) {
	if r.Result == nil {
		return Value{}, protocolErrorf(`reply has neither "result" nor "error"`)
	}
	if v, ok := fastValue(r.Result, b64); ok {
		return v, nil
	}
	var x any
	if err := parseJSON(r.Result, &x); err != nil {
		return Value{}, protocolErrorf("result is not JSON: %v", err)
	}
	return decodeValue(x, b64, 0)
}

// decodeReply decodes the body of a successful single-command response
// ({"result": ...} or {"error": ...}) to the command label the way the
// client does, with tok cut out of an error text; any input yields a value
// or an error, never a panic.
func decodeReply(body []byte, base64Encoded bool, tok secret, label string) (Value, error) {
	var r reply
	if err := parseReplies(body, &r); err != nil {
		return Value{}, callErrorf(label, "%w: body is not a JSON object: %s", ErrProtocol, err.Error())
	}
	if r.Error != nil {
		return Value{}, newError(tok, label, -1, http.StatusOK, *r.Error)
	}
	v, err := r.resultValue(base64Encoded)
	if err != nil {
		return Value{}, withLabel(label, err)
	}
	return v, nil
}
