package upstashtest

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"

	"github.com/gomodule/redigo/redis"
)

// resultJSON is a successful reply. Result is always present, null for nil.
type resultJSON struct {
	Result interface{} `json:"result"`
}

// errorJSON is a failed reply: no result key.
type errorJSON struct {
	Error string `json:"error"`
}

// replyValue converts a redigo reply into the JSON value Upstash sends.
//
// redigo gives a status reply as string, a bulk string as []byte, an
// integer as int64, nil as nil, an array as []interface{} and an error as
// redis.Error. With b64 set, every string is base64 encoded except a status
// reply "OK" at the top level (top); strings inside arrays are all encoded,
// status replies included. Without b64, strings are sent raw and
// encoding/json replaces invalid UTF-8 with U+FFFD.
//
// An error nested in an array (a Lua table holding redis.error_reply, for
// example) becomes its text, treated like a status string.
func replyValue(v interface{}, b64, top bool) interface{} {
	switch v := v.(type) {
	case nil:
		return nil
	case int64:
		return v
	case string:
		if b64 && !(top && v == "OK") {
			return base64.StdEncoding.EncodeToString([]byte(v))
		}
		return v
	case []byte:
		if b64 {
			return base64.StdEncoding.EncodeToString(v)
		}
		return string(v)
	case redis.Error:
		return replyValue(string(v), b64, false)
	case []interface{}:
		out := make([]interface{}, len(v))
		for i, e := range v {
			out[i] = replyValue(e, b64, false)
		}
		return out
	default:
		// Not produced by redigo's RESP2 reader; keep the reply well-formed.
		return replyValue(fmt.Sprint(v), b64, false)
	}
}

// elementJSON is one element of a /pipeline or /multi-exec reply.
func elementJSON(v interface{}, b64 bool) interface{} {
	if e, ok := v.(redis.Error); ok {
		return errorJSON{Error: string(e)}
	}
	return resultJSON{Result: replyValue(v, b64, true)}
}

// marshalJSON encodes v without HTML escaping and without a trailing
// newline.
func marshalJSON(v interface{}) []byte {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		// Only strings, int64, nil, slices and the two structs reach here.
		panic(fmt.Sprintf("upstashtest: encoding a reply: %v", err))
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n"))
}
