package upstash

import (
	"fmt"
	"strconv"
	"strings"
)

// Kind is the type of a reply value.
type Kind uint8

// The kinds of reply the REST API returns.
const (
	KindNil    Kind = iota // nil reply: a missing key or element
	KindInt                // integer reply
	KindString             // bulk or status string (binary-safe bytes)
	KindArray              // array reply, possibly nested
)

func (k Kind) String() string {
	switch k {
	case KindNil:
		return "nil"
	case KindInt:
		return "integer"
	case KindString:
		return "string"
	case KindArray:
		return "array"
	}
	return "Kind(" + strconv.Itoa(int(k)) + ")"
}

// Value is one reply from Upstash: nil, an integer, a string of bytes, or an
// array of values. The zero Value is nil. Accessors return ErrNil for a nil
// reply and an error matching ErrProtocol for a reply of another kind.
type Value struct {
	kind Kind
	num  int64
	str  []byte
	arr  []Value
}

// NilValue, IntValue, StringValue and ArrayValue build values; they are
// useful in tests of code that consumes replies.
func NilValue() Value { return Value{} }

// IntValue returns an integer reply.
func IntValue(n int64) Value { return Value{kind: KindInt, num: n} }

// StringValue returns a string reply holding b.
func StringValue(b []byte) Value { return Value{kind: KindString, str: b} }

// ArrayValue returns an array reply.
func ArrayValue(vs ...Value) Value { return Value{kind: KindArray, arr: vs} }

// Kind returns the reply's type.
func (v Value) Kind() Kind { return v.kind }

// IsNil reports whether the reply is nil.
func (v Value) IsNil() bool { return v.kind == KindNil }

func (v Value) mismatch(want Kind) error {
	if v.kind == KindNil {
		return ErrNil
	}
	return protocolErrorf("reply is %s, not %s", v.kind, want)
}

// Int64 returns an integer reply, or a string reply that holds a base-10
// integer (as GET of a counter returns).
func (v Value) Int64() (int64, error) {
	switch v.kind {
	case KindInt:
		return v.num, nil
	case KindString:
		n, err := strconv.ParseInt(string(v.str), 10, 64)
		if err != nil {
			return 0, protocolErrorf("string reply is not an integer")
		}
		return n, nil
	}
	return 0, v.mismatch(KindInt)
}

// Bytes returns a string reply's bytes exactly as stored.
func (v Value) Bytes() ([]byte, error) {
	if v.kind != KindString {
		return nil, v.mismatch(KindString)
	}
	return v.str, nil
}

// Text returns a string reply as a Go string. An integer reply is formatted
// in base 10.
func (v Value) Text() (string, error) {
	switch v.kind {
	case KindString:
		return string(v.str), nil
	case KindInt:
		return strconv.FormatInt(v.num, 10), nil
	}
	return "", v.mismatch(KindString)
}

// Bool returns true for the integer 1 or the status "OK", false for the
// integer 0 or a nil reply (as SET NX and SISMEMBER report "no").
func (v Value) Bool() (bool, error) {
	switch v.kind {
	case KindNil:
		return false, nil
	case KindInt:
		return v.num != 0, nil
	case KindString:
		if string(v.str) == "OK" {
			return true, nil
		}
	}
	return false, protocolErrorf("reply %s is not a boolean", v.kind)
}

// Array returns an array reply's elements.
func (v Value) Array() ([]Value, error) {
	if v.kind != KindArray {
		return nil, v.mismatch(KindArray)
	}
	return v.arr, nil
}

// Strings returns an array reply of strings as Go strings; nil elements
// become "".
func (v Value) Strings() ([]string, error) {
	arr, err := v.Array()
	if err != nil {
		return nil, err
	}
	out := make([]string, len(arr))
	for i, e := range arr {
		if e.kind == KindNil {
			continue
		}
		if out[i], err = e.Text(); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// String formats the value for debugging, in a Redis-CLI-like notation.
func (v Value) String() string {
	switch v.kind {
	case KindNil:
		return "(nil)"
	case KindInt:
		return "(integer) " + strconv.FormatInt(v.num, 10)
	case KindString:
		return strconv.Quote(string(v.str))
	case KindArray:
		parts := make([]string, len(v.arr))
		for i, e := range v.arr {
			parts[i] = e.String()
		}
		return "[" + strings.Join(parts, ", ") + "]"
	}
	return fmt.Sprintf("Value(%d)", v.kind)
}

// Result is one command's outcome in a pipeline or transaction.
type Result struct {
	Value Value
	// Err is the command's own error (an *Error), or nil. For a script that
	// Pipeline re-sent as EVAL after NOSCRIPT, it can also be the error of
	// that second request, naming the command's index.
	Err error
}
