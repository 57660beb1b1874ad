package upstashtest_test

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/chatstate/upstash/upstashtest"
)

// After an expiry command, the key is in one of these states.
const (
	untouched = "untouched" // still "v" without a TTL
	farAway   = "far away"  // exists, PTTL beyond 200 years
	gone      = "gone"      // deleted
)

// expiryCases are what Redis 7 answers for expiry times at the edges of
// its millisecond range (checked against redis-server 7.0), on the key "k"
// holding "v" without a TTL. The embedded backend must answer the same.
var expiryCases = []struct {
	args  []string
	reply string // JSON result, or "ERR ..." for an error
	after string
}{
	{[]string{"SET", "k", "v", "PX", "9223372036854775807"}, "ERR invalid expire time in 'set' command", untouched},
	{[]string{"SET", "k", "v", "PX", "9223372036854775"}, `"OK"`, farAway},
	{[]string{"SET", "k", "v", "PX", "9223372036855"}, `"OK"`, farAway},
	{[]string{"SET", "k", "v", "EX", "9223372036854775"}, "ERR invalid expire time in 'set' command", untouched},
	{[]string{"SET", "k", "v", "EX", "9223372036854776"}, "ERR invalid expire time in 'set' command", untouched},
	{[]string{"SET", "k", "v", "EX", "9223372036854"}, `"OK"`, farAway},
	{[]string{"SET", "k", "v", "NX", "PX", "9223372036854775807"}, "ERR invalid expire time in 'set' command", untouched},
	{[]string{"SET", "k", "v", "XX", "GET", "PX", "9223372036854775"}, `"v"`, farAway},
	{[]string{"SET", "k", "v", "PX", "0"}, "ERR invalid expire time in 'set' command", untouched},
	{[]string{"SET", "k", "v", "EX", "-1"}, "ERR invalid expire time in 'set' command", untouched},
	{[]string{"SET", "k", "v", "PX", "+5"}, "ERR value is not an integer or out of range", untouched},
	{[]string{"SET", "k", "v", "PX", "007"}, "ERR value is not an integer or out of range", untouched},
	{[]string{"SET", "k", "v", "PX", "9223372036854775808"}, "ERR value is not an integer or out of range", untouched},
	{[]string{"SET", "k", "v", "EXAT", "9223372036854775"}, `"OK"`, farAway},
	{[]string{"SET", "k", "v", "EXAT", "9223372036854776"}, "ERR invalid expire time in 'set' command", untouched},
	{[]string{"SET", "k", "v", "PXAT", "9223372036854775807"}, `"OK"`, farAway},
	{[]string{"PSETEX", "k", "9223372036854775807", "v"}, "ERR invalid expire time in 'psetex' command", untouched},
	{[]string{"PSETEX", "k", "9223372036854775", "v"}, `"OK"`, farAway},
	{[]string{"SETEX", "k", "9223372036854775807", "v"}, "ERR invalid expire time in 'setex' command", untouched},
	{[]string{"SETEX", "k", "9223372036854", "v"}, `"OK"`, farAway},
	{[]string{"SETEX", "k", "0", "v"}, "ERR invalid expire time in 'setex' command", untouched},
	{[]string{"GETEX", "k", "PX", "9223372036854775807"}, "ERR invalid expire time in 'getex' command", untouched},
	{[]string{"GETEX", "k", "PX", "9223372036854775"}, `"v"`, farAway},
	{[]string{"GETEX", "k", "EX", "9223372037"}, `"v"`, farAway},
	{[]string{"PEXPIRE", "k", "9223372036854775807"}, "ERR invalid expire time in 'pexpire' command", untouched},
	{[]string{"PEXPIRE", "k", "9223370000000000000"}, "1", farAway},
	{[]string{"PEXPIRE", "k", "9223372036854775"}, "1", farAway},
	{[]string{"PEXPIRE", "k", "9223372036854775", "NX"}, "1", farAway},
	{[]string{"PEXPIRE", "missing", "9223372036854775807"}, "ERR invalid expire time in 'pexpire' command", untouched},
	{[]string{"PEXPIRE", "k", "-9223372036854775807"}, "1", gone},
	{[]string{"EXPIRE", "k", "9223372036854775807"}, "ERR invalid expire time in 'expire' command", untouched},
	{[]string{"EXPIRE", "k", "9223372036854775"}, "ERR invalid expire time in 'expire' command", untouched},
	{[]string{"EXPIRE", "k", "9223372036854"}, "1", farAway},
	{[]string{"EXPIRE", "k", "-9223372036854776"}, "ERR invalid expire time in 'expire' command", untouched},
	{[]string{"EXPIRE", "k", "-9223372036854"}, "1", gone},
	{[]string{"EXPIREAT", "k", "9223372036854775807"}, "ERR invalid expire time in 'expireat' command", untouched},
	{[]string{"EXPIREAT", "k", "9223372036854775"}, "1", farAway},
	{[]string{"PEXPIREAT", "k", "9223372036854775807"}, "1", farAway},
}

// TestHugeExpiryLikeRedis sends each case as a REST command, inside a
// transaction, and from a Lua script, on both backends.
func TestHugeExpiryLikeRedis(t *testing.T) {
	eachBackend(t, func(t *testing.T, s *upstashtest.Server) {
		for _, c := range expiryCases {
			for _, via := range []string{"rest", "multi-exec", "script"} {
				name := via + " " + strings.Join(c.args, " ")
				if _, err := s.Do("SET", "k", "v"); err != nil {
					t.Fatal(err)
				}
				var got resp
				var body string // the reply's result or error element
				switch via {
				case "rest":
					got = cmd(t, s, toInterfaces(c.args)...)
					body = got.body
				case "multi-exec":
					got = send(t, s, req{path: "/multi-exec", body: mustJSON(t, [][]interface{}{toInterfaces(c.args), {"GET", "k"}})})
					var arr []json.RawMessage
					if err := json.Unmarshal([]byte(got.body), &arr); err != nil || len(arr) != 2 {
						t.Fatalf("%s: reply %s", name, got.body)
					}
					body = string(arr[0])
					if got.status == 200 {
						got.status = 400 // judged by the element below
						if strings.HasPrefix(body, `{"result"`) {
							got.status = 200
						}
					}
				case "script":
					args := append([]interface{}{"EVAL", "return redis.call(unpack(ARGV))", 1, c.args[1]}, toInterfaces(c.args)...)
					got = cmd(t, s, args...)
					body = got.body
				}
				checkExpiryReply(t, name, got.status, body, c.reply)
				checkExpiryState(t, s, name, c.after)
				s.Do("DEL", "k", "missing")
			}
		}
	})
}

func toInterfaces(args []string) []interface{} {
	out := make([]interface{}, len(args))
	for i, a := range args {
		out[i] = a
	}
	return out
}

func checkExpiryReply(t *testing.T, name string, status int, body, want string) {
	t.Helper()
	var m map[string]json.RawMessage
	if err := json.Unmarshal([]byte(body), &m); err != nil {
		t.Errorf("%s: reply %s is not a JSON object", name, body)
		return
	}
	if strings.HasPrefix(want, "ERR ") {
		var e string
		_ = json.Unmarshal(m["error"], &e)
		// Inside a script a real Redis appends " script: <sha1>, on
		// @user_script:1." to the error text.
		if status != 400 || !strings.HasPrefix(e, want) {
			t.Errorf("%s: got %d %s, want error %q", name, status, body, want)
		}
		return
	}
	if status != 200 || !jsonEqual(string(m["result"]), want) {
		t.Errorf("%s: got %d %s, want result %s", name, status, body, want)
	}
}

func checkExpiryState(t *testing.T, s *upstashtest.Server, name, want string) {
	t.Helper()
	v, err := s.Do("PTTL", "k")
	if err != nil {
		t.Fatal(err)
	}
	pttl, _ := v.(int64)
	var state string
	switch {
	case pttl == -2:
		state = gone
	case pttl == -1 && get(t, s, "k") == "v":
		state = untouched
	case pttl > 200*365*24*3600*1000:
		state = farAway
	default:
		state = "PTTL " + mustJSON(t, pttl)
	}
	if state != want {
		t.Errorf("%s: key is %s, want %s", name, state, want)
	}
}
