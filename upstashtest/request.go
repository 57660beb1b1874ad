package upstashtest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/url"
	"strings"
)

// command is one Redis command as it will be sent: an upper-case name and
// binary-safe arguments.
type command struct {
	name string
	args [][]byte
}

func (c command) redisArgs() []interface{} {
	out := make([]interface{}, len(c.args))
	for i, a := range c.args {
		out[i] = a
	}
	return out
}

// requestError is a malformed request: answered 400 with its text.
type requestError string

func (e requestError) Error() string { return string(e) }

func badRequest(format string, args ...interface{}) error {
	return requestError(fmt.Sprintf(format, args...))
}

// parseCommandBody parses the body of POST /: one JSON array.
func parseCommandBody(body []byte) (command, error) {
	elems, err := jsonArray(body, "command")
	if err != nil {
		return command{}, err
	}
	if len(elems) == 0 {
		return command{}, requestError("ERR empty command")
	}
	return commandFromJSON(elems, "")
}

// parseBatchBody parses the body of /pipeline and /multi-exec: a non-empty
// JSON array of non-empty JSON arrays. what is "pipeline" or "transaction".
func parseBatchBody(body []byte, what string) ([]command, error) {
	rows, err := jsonArray(body, what)
	if err != nil {
		return nil, err
	}
	if len(rows) == 0 {
		return nil, badRequest("ERR empty %s", what)
	}
	cmds := make([]command, 0, len(rows))
	for i, row := range rows {
		if firstByte(row) != '[' {
			return nil, badRequest("ERR failed to parse %s: command at index %d is not a JSON array", what, i)
		}
		var elems []json.RawMessage
		if err := json.Unmarshal(row, &elems); err != nil {
			return nil, badRequest("ERR failed to parse %s: command at index %d: %v", what, i, err)
		}
		if len(elems) == 0 {
			return nil, badRequest("ERR failed to parse %s: command at index %d is empty", what, i)
		}
		c, err := commandFromJSON(elems, fmt.Sprintf(" of the command at index %d", i))
		if err != nil {
			return nil, err
		}
		cmds = append(cmds, c)
	}
	return cmds, nil
}

// jsonArray checks that body is exactly one JSON array and returns its raw
// elements.
func jsonArray(body []byte, what string) ([]json.RawMessage, error) {
	if len(bytes.TrimSpace(body)) == 0 {
		return nil, badRequest("ERR failed to parse %s: empty request body, expected a JSON array", what)
	}
	if !json.Valid(body) {
		var v interface{}
		err := json.Unmarshal(body, &v)
		return nil, badRequest("ERR failed to parse %s: invalid JSON: %v", what, err)
	}
	if firstByte(body) != '[' {
		return nil, badRequest("ERR failed to parse %s: the request body must be a JSON array", what)
	}
	var elems []json.RawMessage
	if err := json.Unmarshal(body, &elems); err != nil {
		return nil, badRequest("ERR failed to parse %s: %v", what, err)
	}
	return elems, nil
}

func firstByte(b []byte) byte {
	b = bytes.TrimLeft(b, " \t\r\n")
	if len(b) == 0 {
		return 0
	}
	return b[0]
}

// commandFromJSON turns JSON elements into a command. Strings are taken as
// they are, numbers as their literal text, booleans as "true"/"false";
// null, objects and arrays are refused.
func commandFromJSON(elems []json.RawMessage, where string) (command, error) {
	args := make([][]byte, len(elems))
	for i, e := range elems {
		e = bytes.TrimSpace(e)
		var kind string
		switch firstByte(e) {
		case '"':
			var s string
			if err := json.Unmarshal(e, &s); err != nil {
				return command{}, badRequest("ERR invalid argument at index %d%s: %v", i, where, err)
			}
			args[i] = []byte(s)
			continue
		case 't', 'f':
			args[i] = append([]byte(nil), e...) // the literal true or false
			continue
		case 'n':
			kind = "null"
		case '{':
			kind = "a JSON object"
		case '[':
			kind = "a JSON array"
		default: // a number: keep its exact literal text
			args[i] = append([]byte(nil), e...)
			continue
		}
		return command{}, badRequest("ERR invalid argument at index %d%s: %s is not allowed, only strings, numbers and booleans", i, where, kind)
	}
	return command{name: strings.ToUpper(string(args[0])), args: args[1:]}, nil
}

// parsePathCommand builds a command from a path-style request: the
// percent-decoded path segments (empty ones dropped), then the raw body if
// non-empty, then each query pair (key, then value if non-empty), _token
// excluded.
func parsePathCommand(u *url.URL, body []byte) (command, error) {
	var args [][]byte
	for _, seg := range strings.Split(u.EscapedPath(), "/") {
		if seg == "" {
			continue
		}
		s, err := url.PathUnescape(seg)
		if err != nil {
			return command{}, badRequest("ERR failed to parse command: bad path segment %q: %v", seg, err)
		}
		args = append(args, []byte(s))
	}
	if len(args) == 0 {
		return command{}, requestError("ERR empty command")
	}
	if len(body) > 0 {
		args = append(args, body)
	}
	if u.RawQuery != "" {
		for _, pair := range strings.Split(u.RawQuery, "&") {
			if pair == "" {
				continue
			}
			k, v, _ := strings.Cut(pair, "=")
			key, err1 := url.QueryUnescape(k)
			val, err2 := url.QueryUnescape(v)
			if err1 != nil || err2 != nil {
				// Not echoed: it could be a malformed _token.
				return command{}, requestError("ERR failed to parse command: bad percent-encoding in the query string")
			}
			if key == "_token" {
				continue
			}
			args = append(args, []byte(key))
			if val != "" {
				args = append(args, []byte(val))
			}
		}
	}
	return command{name: strings.ToUpper(string(args[0])), args: args[1:]}, nil
}
