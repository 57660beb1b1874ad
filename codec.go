package upstash

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"strconv"
	"strings"
	"unicode/utf8"
	"unsafe"
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

// valueSize is what one Value takes in memory, charged against a reply's
// budget for each value it decodes to.
const valueSize = int64(unsafe.Sizeof(Value{}))

// valueDecoder turns one JSON value into a Value directly, without an
// intermediate any (which for an array of small elements takes dozens of
// times the reply's size). Its input is a reply's raw "result", which
// json.Unmarshal has checked to be exactly one valid JSON value, and which
// the decoder owns: strings without escapes are sliced from it. With base64
// on, strings are decoded as the protocol notes (section 14.2) say: the
// status "OK" stays as it is at every depth (it is not the canonical base64
// of any byte string), other strings are strict padded base64, then
// unpadded; a string that is neither is kept raw, as the official client
// does. Every value is charged against budget (valueSize, plus a string's
// bytes); a budget that runs out is an error. A nil budget is no limit.
type valueDecoder struct {
	data   []byte
	pos    int
	b64    bool
	budget *int64
}

// charge takes n bytes from the budget.
func (d *valueDecoder) charge(n int64) error {
	if d.budget == nil {
		return nil
	}
	*d.budget -= n
	if *d.budget < 0 {
		return protocolErrorf("the reply decodes to values larger than the response limit (Limits.MaxResponseBytes)")
	}
	return nil
}

func (d *valueDecoder) skipSpace() {
	for d.pos < len(d.data) {
		switch d.data[d.pos] {
		case ' ', '\t', '\n', '\r':
			d.pos++
		default:
			return
		}
	}
}

// value decodes the value at d.pos, depth levels of arrays deep.
func (d *valueDecoder) value(depth int) (Value, error) {
	if depth > maxDepth {
		return Value{}, protocolErrorf("reply nested deeper than %d levels", maxDepth)
	}
	if err := d.charge(valueSize); err != nil {
		return Value{}, err
	}
	d.skipSpace()
	if d.pos >= len(d.data) {
		return Value{}, protocolErrorf("result is not JSON: unexpected end")
	}
	switch c := d.data[d.pos]; c {
	case 'n':
		d.pos += len("null")
		return Value{}, nil
	case 't':
		// Not produced by Upstash (RESP2 has no booleans); map like RESP3 would.
		d.pos += len("true")
		return Value{kind: KindInt, num: 1}, nil
	case 'f':
		d.pos += len("false")
		return Value{kind: KindInt, num: 0}, nil
	case '"':
		return d.str()
	case '[':
		d.pos++
		var arr []Value
		for {
			d.skipSpace()
			if d.pos >= len(d.data) {
				return Value{}, protocolErrorf("result is not JSON: unexpected end")
			}
			if d.data[d.pos] == ']' {
				d.pos++
				if arr == nil {
					arr = []Value{}
				}
				return Value{kind: KindArray, arr: arr}, nil
			}
			if d.data[d.pos] == ',' {
				d.pos++
				continue
			}
			v, err := d.value(depth + 1)
			if err != nil {
				return Value{}, err
			}
			if len(arr) == cap(arr) {
				// Doubling (append grows large slices by a quarter, which
				// allocates about five times the final array in all).
				grown := make([]Value, len(arr), max(4, 2*cap(arr)))
				copy(grown, arr)
				arr = grown
			}
			arr = append(arr, v)
		}
	case '{':
		return Value{}, protocolErrorf("unexpected object in reply")
	}
	start := d.pos
	for d.pos < len(d.data) && strings.IndexByte("+-.0123456789eE", d.data[d.pos]) >= 0 {
		d.pos++
	}
	num := d.data[start:d.pos]
	n, ok := parseInt64(num)
	if !ok {
		return Value{}, protocolErrorf("number %s in reply is not a 64-bit integer", truncate(string(num), 32))
	}
	return Value{kind: KindInt, num: n}, nil
}

// parseInt64 parses a base-10 integer of JSON's syntax (no leading +, as
// the caller's valid JSON guarantees) without converting it to a string,
// which for a reply of many numbers would allocate for each.
func parseInt64(b []byte) (int64, bool) {
	neg := len(b) > 0 && b[0] == '-'
	if neg {
		b = b[1:]
	}
	if len(b) == 0 || len(b) > 19 { // 19 digits cannot overflow a uint64
		return 0, false
	}
	var n uint64
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + uint64(c-'0')
	}
	switch {
	case neg && n <= 1<<63:
		return int64(-n), true
	case !neg && n <= 1<<63-1:
		return int64(n), true
	}
	return 0, false
}

// str decodes the string at d.pos.
func (d *valueDecoder) str() (Value, error) {
	start := d.pos
	escaped := false
	d.pos++
	for d.pos < len(d.data) && d.data[d.pos] != '"' {
		if d.data[d.pos] == '\\' {
			escaped = true
			d.pos++
		}
		d.pos++
	}
	d.pos++ // the closing quote
	if d.pos > len(d.data) {
		return Value{}, protocolErrorf("result is not JSON: unexpected end")
	}
	tok := d.data[start:d.pos]
	str := tok[1 : len(tok)-1]
	// Escapes need unquoting, and encoding/json replaces invalid UTF-8
	// with U+FFFD: leave both to it.
	if escaped || !utf8.Valid(str) {
		var s string
		if err := json.Unmarshal(tok, &s); err != nil {
			return Value{}, protocolErrorf("result is not JSON: %v", err)
		}
		str = []byte(s)
	}
	if d.b64 && string(str) != "OK" {
		str = decodeBase64Bytes(str)
	}
	if err := d.charge(int64(len(str))); err != nil {
		return Value{}, err
	}
	return Value{kind: KindString, str: str}, nil
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

// resultValue decodes a reply's result, charging budget (nil: no limit);
// it is an error for it to be missing.
func (r *reply) resultValue(b64 bool, budget *int64) (Value, error) {
	if r.Result == nil {
		return Value{}, protocolErrorf(`reply has neither "result" nor "error"`)
	}
	d := valueDecoder{data: r.Result, b64: b64, budget: budget}
	return d.value(0)
}

// decodeReply decodes the body of a successful single-command response
// ({"result": ...} or {"error": ...}) to the command label the way the
// client does, with tok cut out of an error text, and the values charged
// against budget (nil: no limit); any input yields a value or an error,
// never a panic.
func decodeReply(body []byte, base64Encoded bool, tok secret, budget *int64, label string) (Value, error) {
	var r reply
	if err := parseReplies(body, &r); err != nil {
		return Value{}, callErrorf(label, "%w: body is not a JSON object: %s", ErrProtocol, err.Error())
	}
	if r.Error != nil {
		return Value{}, newError(tok, label, -1, http.StatusOK, *r.Error)
	}
	v, err := r.resultValue(base64Encoded, budget)
	if err != nil {
		return Value{}, withLabel(label, err)
	}
	return v, nil
}
