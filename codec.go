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

// encodedSize is about the size of cmd encoded: exact unless strings need
// escapes, so that encoding allocates once.
func encodedSize(cmd Command) int {
	n := 2
	for _, a := range cmd.args {
		switch a := a.(type) {
		case string:
			n += len(a) + 3
		case []byte:
			n += len(a) + 3
		default:
			n += 24
		}
	}
	return n
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

// decodeBase64Strict decodes src as strict padded base64, then as strict
// unpadded base64, into a new buffer; ok is false if it is neither (the
// string is then kept raw, as the official client does).
func decodeBase64Strict(src []byte) (b []byte, ok bool) {
	// The unpadded bound is the larger one (for "OA", 1 byte against 0).
	buf := make([]byte, strictRaw.DecodedLen(len(src)))
	if n, err := strictStd.Decode(buf, src); err == nil {
		return buf[:n], true
	}
	if n, err := strictRaw.Decode(buf, src); err == nil {
		return buf[:n], true
	}
	return nil, false
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
// does. Every value is charged against the budget (valueSize, plus a
// string's bytes) when there is one; a budget that runs out is an error.
type valueDecoder struct {
	data    []byte
	pos     int
	b64     bool
	limited bool  // the budget applies
	left    int64 // the budget
}

// charge takes n bytes from the budget.
func (d *valueDecoder) charge(n int64) error {
	if !d.limited {
		return nil
	}
	d.left -= n
	if d.left < 0 {
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
	// fresh says that str is a buffer of its own, not a part of the
	// reply: a value never keeps the reply alive, nor shares its bytes
	// with another caller's value.
	fresh := false
	// Escapes need unquoting, and encoding/json replaces invalid UTF-8
	// with U+FFFD: leave both to it.
	if escaped || !utf8.Valid(str) {
		var s string
		if err := json.Unmarshal(tok, &s); err != nil {
			return Value{}, protocolErrorf("result is not JSON: %v", err)
		}
		str, fresh = []byte(s), true
	}
	if d.b64 && string(str) != "OK" {
		if b, ok := decodeBase64Strict(str); ok {
			str, fresh = b, true
		}
	}
	if !fresh {
		own := make([]byte, len(str))
		copy(own, str)
		str = own
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

// parseReply decodes a response body into a reply, as json.Unmarshal
// would. The common shape ({"result": …} or {"error": "…"}, keys in
// plain ASCII) is read directly from the checked body, with "result"
// sliced from it rather than copied; anything else goes to
// json.Unmarshal.
func parseReply(data []byte, r *reply) error {
	*r = reply{}
	if json.Valid(data) {
		p := envelope{data: data}
		p.space()
		if p.object(r) {
			return nil
		}
		*r = reply{}
	}
	// A reply of its own, so that only this path puts one on the heap.
	var slow reply
	err := json.Unmarshal(data, &slow)
	*r = slow
	return err
}

// parseReplyArray decodes the body of a /pipeline or /multi-exec reply
// into one reply per element, as json.Unmarshal would.
func parseReplyArray(data []byte) ([]reply, error) {
	if json.Valid(data) {
		p := envelope{data: data}
		if replies, ok := p.array(); ok {
			return replies, nil
		}
	}
	var replies []reply
	err := json.Unmarshal(data, &replies)
	return replies, err
}

// envelope reads the reply objects of a body json.Valid has accepted.
// Each method reports false for a shape it leaves to json.Unmarshal.
type envelope struct {
	data []byte
	pos  int
}

func (p *envelope) space() {
	for p.pos < len(p.data) {
		switch p.data[p.pos] {
		case ' ', '\t', '\n', '\r':
			p.pos++
		default:
			return
		}
	}
}

// array reads '[' reply objects ']' up to the end of the body.
func (p *envelope) array() ([]reply, bool) {
	p.space()
	if p.pos >= len(p.data) || p.data[p.pos] != '[' {
		return nil, false
	}
	p.pos++
	n := 1 + bytesCount(p.data, `{"`) // at least one per element
	replies := make([]reply, 0, n)
	for {
		p.space()
		switch p.data[p.pos] {
		case ']':
			p.pos++
			p.space()
			return replies, p.pos == len(p.data)
		case ',':
			p.pos++
			continue
		}
		replies = append(replies, reply{})
		if !p.element(&replies[len(replies)-1]) {
			return nil, false
		}
	}
}

// object reads one reply object up to the end of the body.
func (p *envelope) object(r *reply) bool {
	if !p.element(r) {
		return false
	}
	p.space()
	return p.pos == len(p.data)
}

// element reads one reply object: "result" (any case) is kept raw,
// "error" must be a string without escapes or null, other keys are
// skipped; a repeated key's last value wins.
func (p *envelope) element(r *reply) bool {
	if p.pos >= len(p.data) || p.data[p.pos] != '{' {
		return false
	}
	p.pos++
	for {
		p.space()
		switch p.data[p.pos] {
		case '}':
			p.pos++
			return true
		case ',':
			p.pos++
			continue
		}
		key, ok := p.plainString()
		if !ok {
			return false
		}
		p.space()
		p.pos++ // ':'
		p.space()
		start := p.pos
		p.skipValue()
		value := p.data[start:p.pos:p.pos]
		switch {
		case asciiEqualFold(key, "result"):
			r.Result = value
		case asciiEqualFold(key, "error"):
			switch {
			case string(value) == "null":
				r.Error = nil
			case value[0] == '"':
				q := envelope{data: value}
				text, ok := q.plainString()
				if !ok {
					return false
				}
				msg := string(text)
				r.Error = &msg
			default:
				return false
			}
		}
	}
}

// plainString reads a string of printable ASCII without escapes.
func (p *envelope) plainString() ([]byte, bool) {
	if p.data[p.pos] != '"' {
		return nil, false
	}
	start := p.pos + 1
	for i := start; i < len(p.data); i++ {
		switch c := p.data[i]; {
		case c == '"':
			p.pos = i + 1
			return p.data[start:i], true
		case c == '\\' || c < 0x20 || c >= 0x80:
			return nil, false
		}
	}
	return nil, false
}

// skipValue moves past the (valid) JSON value at p.pos.
func (p *envelope) skipValue() {
	depth := 0
	for p.pos < len(p.data) {
		switch c := p.data[p.pos]; c {
		case '"':
			p.pos++
			for p.data[p.pos] != '"' {
				if p.data[p.pos] == '\\' {
					p.pos++
				}
				p.pos++
			}
			p.pos++
		case '[', '{':
			depth++
			p.pos++
			continue
		case ']', '}':
			if depth == 0 {
				return
			}
			depth--
			p.pos++
		case ',':
			if depth == 0 {
				return
			}
			p.pos++
			continue
		case ' ', '\t', '\n', '\r', ':':
			p.pos++
			continue
		default: // a number or a literal
			for p.pos < len(p.data) && strings.IndexByte(",]} \t\n\r", p.data[p.pos]) < 0 {
				p.pos++
			}
		}
		if depth == 0 {
			return
		}
	}
}

// asciiEqualFold reports whether b equals the lower-case ASCII word s,
// ignoring case.
func asciiEqualFold(b []byte, s string) bool {
	if len(b) != len(s) {
		return false
	}
	for i := range b {
		if b[i]|0x20 != s[i] {
			return false
		}
	}
	return true
}

// bytesCount counts the occurrences of sep in b.
func bytesCount(b []byte, sep string) int {
	n := 0
	for {
		i := strings.Index(string(b), sep)
		if i < 0 {
			return n
		}
		n++
		b = b[i+len(sep):]
	}
}

// resultValue decodes a reply's result within left bytes of memory when
// limited, and returns what is left; it is an error for it to be missing.
func (r *reply) resultValue(b64, limited bool, left int64) (Value, int64, error) {
	if r.Result == nil {
		return Value{}, left, protocolErrorf(`reply has neither "result" nor "error"`)
	}
	d := valueDecoder{data: r.Result, b64: b64, limited: limited, left: left}
	v, err := d.value(0)
	return v, d.left, err
}

// decodeReply decodes the body of a successful single-command response
// ({"result": ...} or {"error": ...}) to the command label the way the
// client does, with tok cut out of an error text, and the values limited
// to limit bytes in memory (no limit if 0 or less); any input yields a
// value or an error, never a panic.
func decodeReply(body []byte, base64Encoded bool, tok secret, limit int64, label string) (Value, error) {
	var r reply
	if err := parseReply(body, &r); err != nil {
		return Value{}, callErrorf(label, "%w: body is not a JSON object: %s", ErrProtocol, err.Error())
	}
	if r.Error != nil {
		return Value{}, newError(tok, label, -1, http.StatusOK, *r.Error)
	}
	v, _, err := r.resultValue(base64Encoded, limit > 0, limit)
	if err != nil {
		return Value{}, withLabel(label, err)
	}
	return v, nil
}
