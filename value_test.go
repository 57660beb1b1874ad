package upstash_test

// Tests of Value (value.go) and its accessors.

import (
	"errors"
	"strings"
	"testing"

	"github.com/chatstate/upstash"
)

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
