package upstashtest

import (
	"encoding/json"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/chatstate/upstash/internal/testtool"
)

// post sends one JSON command to s and returns the status and body.
func post(t *testing.T, s *Server, args ...interface{}) (int, string) {
	t.Helper()
	body, err := json.Marshal(args)
	if err != nil {
		t.Fatal(err)
	}
	return postPath(t, s, "/", string(body))
}

// postPath posts body to path on s and returns the status and body.
func postPath(t *testing.T, s *Server, path, body string) (int, string) {
	t.Helper()
	status, got, err := sendRaw(s, path, body)
	if err != nil {
		t.Fatalf("POST %s: %v", path, err)
	}
	return status, got
}

// postPathErr is postPath for another goroutine: an error is status 0
// with the error's text.
func postPathErr(s *Server, path, body string) (int, string) {
	status, got, err := sendRaw(s, path, body)
	if err != nil {
		return 0, err.Error()
	}
	return status, got
}

// sendRaw posts body to path on s over a connection of its own.
func sendRaw(s *Server, path, body string) (int, string, error) {
	r, err := http.NewRequest(http.MethodPost, s.URL+path, strings.NewReader(body))
	if err != nil {
		return 0, "", err
	}
	r.Header.Set("Authorization", "Bearer "+s.Token)
	r.Close = true
	res, err := s.Client().Do(r)
	if err != nil {
		return 0, "", err
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		return 0, "", err
	}
	return res.StatusCode, string(b), nil
}

// TestRedisServerPortTakenByAnotherRedis gives the private redis-server a
// port on which another Redis already listens: here another Server's
// embedded miniredis, as a test running at the same time could hold once
// freePort has closed its probe listener. The new redis-server cannot bind
// it and exits, but the other Redis answers PING. The server must not take
// that Redis for its own: it would share another test's data, and, as it
// translates scripts for a real Redis, send miniredis a shebang, which
// fails with "ERR Error compiling script (new function): <string>
// line:1(column:1) near '#'" (the flake seen once in
// TestFusedUnderRandomFaults on UPSTASHTEST_REDIS=redis-server).
func TestRedisServerPortTakenByAnotherRedis(t *testing.T) {
	testtool.RequireRedisServer(t)
	for _, tc := range []struct {
		name string
		opt  Option
	}{
		{"miniredis", WithEmbedded()},
		{"redis-server", WithRedisServer()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			other := NewServer(t, tc.opt)
			_, portText, err := net.SplitHostPort(other.RedisAddr())
			if err != nil {
				t.Fatal(err)
			}
			taken, err := strconv.Atoi(portText)
			if err != nil {
				t.Fatal(err)
			}
			var calls atomic.Int32
			hook := func() (int, error) {
				if calls.Add(1) == 1 {
					return taken, nil
				}
				return freePort()
			}
			testHookFreePort.Store(&hook)
			defer testHookFreePort.Store(nil)

			s := NewServer(t, WithRedisServer())
			if n := calls.Load(); n < 2 {
				t.Errorf("the port hook was called %d times, want a first attempt on the taken port and a retry", n)
			}
			if s.RedisAddr() == other.RedisAddr() {
				t.Errorf("the server uses the other server's Redis at %s", s.RedisAddr())
			}
			const script = "#!lua flags=allow-key-locking\nredis.call('SET', KEYS[1], ARGV[1])\nreturn redis.call('GET', KEYS[1])"
			status, body := post(t, s, "EVAL", script, 1, "k", "v")
			if status != http.StatusOK || body != `{"result":"v"}` {
				t.Errorf("EVAL of a flagged script: %d %s, want 200 {\"result\":\"v\"}", status, body)
			}
			if n, err := other.Do("DBSIZE"); err != nil || n != int64(0) {
				t.Errorf("the other server's Redis holds %v keys (%v), want 0", n, err)
			}
		})
	}
}
