package upstash

import (
	"bytes"
	"encoding"
	"encoding/json"
	"fmt"
	"math"
	"reflect"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// This file holds the JSON encoding of the state layer: values stored from
// Go are written the way JavaScript's JSON.stringify writes them, so that a
// Go bot and a TypeScript bot sharing one database store the same bytes.

// encodeJSON encodes value for storage. what names the value in errors.
func encodeJSON(what string, value any) ([]byte, error) {
	if raw, ok := value.(json.RawMessage); ok {
		if !utf8.Valid(raw) || !json.Valid(raw) {
			return nil, fmt.Errorf("%w: value for %s: json.RawMessage is not valid JSON", ErrInvalidArgument, what)
		}
		var buf bytes.Buffer
		if err := json.Compact(&buf, raw); err != nil {
			return nil, fmt.Errorf("%w: value for %s: json.RawMessage: %w", ErrInvalidArgument, what, err)
		}
		return jsCompat(buf.Bytes()), nil
	}
	data, err := marshalCompat(value)
	if err != nil {
		return nil, fmt.Errorf("%w: value for %s cannot be encoded as JSON: %w", ErrInvalidArgument, what, err)
	}
	if !utf8.Valid(data) {
		return nil, fmt.Errorf("%w: value for %s: a MarshalJSON method produced invalid UTF-8", ErrInvalidArgument, what)
	}
	if bytes.Contains(data, []byte(`\ufffd`)) {
		if path := findInvalidUTF8(value); path != "" {
			return nil, fmt.Errorf("%w: value for %s: string at %s is not valid UTF-8 (encoding/json would replace it with U+FFFD)", ErrInvalidArgument, what, path)
		}
	}
	return data, nil
}

// marshalCompat encodes v like json.Marshal, but writes what JavaScript's
// JSON.stringify writes where the two differ: <, > and & unescaped, U+2028
// and U+2029 as themselves rather than \u2028 and \u2029, and negative
// zero as 0 (also inside the output of a MarshalJSON method, such as a
// json.RawMessage field).
func marshalCompat(v any) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return jsCompat(bytes.TrimSuffix(buf.Bytes(), []byte("\n"))), nil
}

// jsCompat rewrites valid compact JSON: the escapes \u2028 and \u2029
// inside strings become the raw characters, and a number whose value is
// zero loses its minus sign (-0 becomes 0, -0.0 becomes 0.0). Both changes
// keep the JSON value (up to the sign of zero, which JSON.stringify drops
// too). Other numbers and escapes are kept as written.
func jsCompat(in []byte) []byte {
	if !bytes.Contains(in, []byte(`\u202`)) && !bytes.Contains(in, []byte("-0")) {
		return in
	}
	out := make([]byte, 0, len(in))
	inString := false
	for i := 0; i < len(in); i++ {
		c := in[i]
		switch {
		case inString && c == '\\':
			if i+5 < len(in) && in[i+1] == 'u' && (string(in[i+2:i+6]) == "2028" || string(in[i+2:i+6]) == "2029") {
				if in[i+5] == '8' {
					out = append(out, "\u2028"...)
				} else {
					out = append(out, "\u2029"...)
				}
				i += 5
				continue
			}
			out = append(out, c, in[i+1]) // any other escape, kept whole
			i++
			continue
		case c == '"':
			inString = !inString
		case !inString && c == '-' && isZeroNumber(in[i+1:]):
			continue // the sign of a zero
		}
		out = append(out, c)
	}
	return out
}

// isZeroNumber reports whether b starts with a JSON number (without its
// sign) whose value is zero: 0, 0.0, 0e5, 0.00E-3...
func isZeroNumber(b []byte) bool {
	if len(b) == 0 || b[0] != '0' {
		return false
	}
	i := 1
	if i < len(b) && b[i] == '.' {
		for i++; i < len(b) && b[i] >= '0' && b[i] <= '9'; i++ {
			if b[i] != '0' {
				return false
			}
		}
	}
	return true // an exponent cannot make zero anything else
}

var (
	jsonMarshalerType = reflect.TypeOf((*json.Marshaler)(nil)).Elem()
	textMarshalerType = reflect.TypeOf((*encoding.TextMarshaler)(nil)).Elem()
)

// findInvalidUTF8 returns a path to a string or map key in v that is not
// valid UTF-8 and that encoding/json would encode (silently replacing the
// bad bytes with U+FFFD), or "" if there is none. It follows what
// encoding/json visits: exported fields not tagged "-", map keys and values,
// slice and array elements, pointers and interfaces; values with their own
// MarshalJSON are skipped (their output is checked separately), and
// MarshalText output is checked, since encoding/json quotes it.
//
// It goes to any depth. It is only called on values encoding/json has
// encoded without error, so the pointers, maps and slices it follows hold
// no cycle that encoding/json would follow; walking stops at a value it is
// already inside, so a cycle elsewhere cannot make it loop either.
func findInvalidUTF8(v any) string {
	w := utf8Walker{inside: map[walkRef]bool{}}
	return w.walk(reflect.ValueOf(v), "value")
}

// walkRef identifies a pointer, map or slice being walked.
type walkRef struct {
	ptr uintptr
	typ reflect.Type
	n   int
}

type utf8Walker struct {
	inside map[walkRef]bool
}

func (w utf8Walker) walk(v reflect.Value, path string) string {
	if !v.IsValid() {
		return ""
	}
	switch v.Kind() {
	case reflect.Pointer, reflect.Map, reflect.Slice:
		if v.IsNil() {
			break
		}
		ref := walkRef{ptr: v.Pointer(), typ: v.Type()}
		if v.Kind() == reflect.Slice {
			ref.n = v.Len()
		}
		if w.inside[ref] {
			return ""
		}
		w.inside[ref] = true
		defer delete(w.inside, ref)
	}
	return w.walkValue(v, path)
}

func (w utf8Walker) walkValue(v reflect.Value, path string) string {
	t := v.Type()
	if t.Implements(jsonMarshalerType) || reflect.PointerTo(t).Implements(jsonMarshalerType) && v.CanAddr() {
		return ""
	}
	if t.Implements(textMarshalerType) {
		if (t.Kind() == reflect.Pointer || t.Kind() == reflect.Interface) && v.IsNil() || !v.CanInterface() {
			return ""
		}
		if b, err := v.Interface().(encoding.TextMarshaler).MarshalText(); err == nil && !utf8.Valid(b) {
			return path
		}
		return ""
	}
	switch v.Kind() {
	case reflect.String:
		if !utf8.ValidString(v.String()) {
			return path
		}
	case reflect.Pointer, reflect.Interface:
		if !v.IsNil() {
			return w.walk(v.Elem(), path)
		}
	case reflect.Slice:
		if t.Elem().Kind() == reflect.Uint8 && !t.Elem().Implements(jsonMarshalerType) && !t.Elem().Implements(textMarshalerType) {
			return "" // []byte is encoded as base64
		}
		fallthrough
	case reflect.Array:
		for i := 0; i < v.Len(); i++ {
			if p := w.walk(v.Index(i), path+"["+strconv.Itoa(i)+"]"); p != "" {
				return p
			}
		}
	case reflect.Map:
		iter := v.MapRange()
		for iter.Next() {
			k := iter.Key()
			name := "?"
			if k.Kind() == reflect.String {
				name = k.String()
			} else if k.CanInterface() {
				name = fmt.Sprint(k.Interface())
			}
			if k.Kind() == reflect.String && !utf8.ValidString(k.String()) {
				return path + " (a map key)"
			}
			if k.Kind() != reflect.String && k.Type().Implements(textMarshalerType) && k.CanInterface() {
				if b, err := k.Interface().(encoding.TextMarshaler).MarshalText(); err == nil && !utf8.Valid(b) {
					return path + " (a map key)"
				}
			}
			if p := w.walk(iter.Value(), path+"["+strconv.Quote(name)+"]"); p != "" {
				return p
			}
		}
	case reflect.Struct:
		for i := 0; i < t.NumField(); i++ {
			f := t.Field(i)
			if f.Tag.Get("json") == "-" || !f.IsExported() && !f.Anonymous {
				continue
			}
			name := f.Name
			if tag, _, _ := strings.Cut(f.Tag.Get("json"), ","); tag != "" {
				name = tag
			}
			if !utf8.ValidString(name) {
				return path + "." + strconv.Quote(name)
			}
			if p := w.walk(v.Field(i), path+"."+name); p != "" {
				return p
			}
		}
	}
	return ""
}

// unixMillis is a time encoded in JSON as integer Unix milliseconds, as
// JavaScript's Date.now() gives them. The zero time is encoded as 0, and 0
// decodes to the zero time.
type unixMillis time.Time

func (u unixMillis) MarshalJSON() ([]byte, error) {
	t := time.Time(u)
	if t.IsZero() {
		return []byte("0"), nil
	}
	return strconv.AppendInt(nil, t.UnixMilli(), 10), nil
}

func (u *unixMillis) UnmarshalJSON(data []byte) error {
	if string(data) == "null" {
		*u = unixMillis{}
		return nil
	}
	ms, err := strconv.ParseInt(string(data), 10, 64)
	if err != nil {
		f, ferr := strconv.ParseFloat(string(data), 64)
		if ferr != nil || math.IsNaN(f) || math.IsInf(f, 0) || math.Abs(f) > 1<<53 {
			return fmt.Errorf("upstash: time %s is not a number of Unix milliseconds", truncate(string(data), 40))
		}
		ms = int64(math.Floor(f))
	}
	if ms == 0 {
		*u = unixMillis{}
		return nil
	}
	*u = unixMillis(time.UnixMilli(ms))
	return nil
}
