package upstashtest

import (
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/chatstate/upstash/internal/testtool"
)

// scriptSource returns the script body a command sent to the backend
// carries (EVAL, EVAL_RO, SCRIPT LOAD), if any.
func scriptSource(c command) (string, bool) {
	switch {
	case (c.name == "EVAL" || c.name == "EVAL_RO") && len(c.args) > 0:
		return string(c.args[0]), true
	case c.name == "SCRIPT" && len(c.args) == 2 && strings.EqualFold(string(c.args[0]), "LOAD"):
		return string(c.args[1]), true
	}
	return "", false
}

// checkSentScripts installs a hook that checks every script body sent to
// the backend: none may carry the allow-key-locking flag (which Redis
// refuses) or, on the embedded backend, any shebang (which miniredis
// cannot compile), and none may hold a shebang past its first byte. It
// returns the number of bodies checked so far.
func checkSentScripts(t *testing.T, embedded bool) func() int64 {
	t.Helper()
	var n atomic.Int64
	var mu sync.Mutex
	var bad []string
	hook := func(cmds []command) {
		for _, c := range cmds {
			src, ok := scriptSource(c)
			if !ok {
				continue
			}
			n.Add(1)
			first, _, _ := strings.Cut(src, "\n")
			switch {
			case embedded && strings.HasPrefix(src, "#"),
				strings.HasPrefix(first, "#!") && strings.Contains(first, flagAllowKeyLocking),
				strings.Contains(src[min(len(src), 1):], "#!lua"):
				mu.Lock()
				bad = append(bad, fmt.Sprintf("%s %.60q", c.name, src))
				mu.Unlock()
			}
		}
	}
	testHookBackendSend.Store(&hook)
	t.Cleanup(func() {
		testHookBackendSend.Store(nil)
		mu.Lock()
		defer mu.Unlock()
		for _, b := range bad {
			t.Errorf("sent to the backend untranslated: %s", b)
		}
	})
	return n.Load
}

// eachBackendInternal runs fn on an embedded server and on a private
// redis-server.
func eachBackendInternal(t *testing.T, fn func(t *testing.T, s *Server)) {
	t.Run("embedded", func(t *testing.T) { fn(t, NewServer(t, WithEmbedded())) })
	t.Run("redis-server", func(t *testing.T) {
		testtool.RequireRedisServer(t)
		fn(t, NewServer(t, WithRedisServer()))
	})
}

const noScriptReply = `{"error":"NOSCRIPT No matching script. Please use EVAL."}`

// TestFlaggedScriptPaths goes through the paths by which a script's source
// could reach the backend without its translation, and checks both what
// the client sees and every script body the backend is sent: EVALSHA
// before any EVAL and the EVAL that follows, in single commands,
// pipelines and transactions; a fault between the request's arrival and
// the backend call (reset: nothing ran; dropped reply: it ran); many
// clients using one new script at the same moment (all of them inside the
// handler before any goes on); SCRIPT FLUSH and FLUSHALL between calls;
// SCRIPT LOAD; and, on redis-server, a second Server on the same Redis
// (as after a restart of upstash-local), whose translation map is empty.
func TestFlaggedScriptPaths(t *testing.T) {
	eachBackendInternal(t, func(t *testing.T, s *Server) {
		sent := checkSentScripts(t, s.Embedded())
		script := func(i int) (string, string) {
			src := fmt.Sprintf("#!lua flags=allow-key-locking\nredis.call('SET', KEYS[1], ARGV[1])\nreturn %d", i)
			return src, sha1Hex(src)
		}

		// EVALSHA first, then the EVAL fallback: single, pipeline, transaction.
		src, sha := script(1)
		expectStatus(t, s, "/", fmt.Sprintf(`["EVALSHA",%q,1,"k","v"]`, sha), 400, noScriptReply)
		expectStatus(t, s, "/", jsonCmd("EVAL", src, 1, "k", "v"), 200, `{"result":1}`)
		expectStatus(t, s, "/", jsonCmd("EVALSHA", sha, 1, "k", "v"), 200, `{"result":1}`)
		src, sha = script(2)
		expectStatus(t, s, "/pipeline", "["+jsonCmd("EVALSHA", sha, 1, "k", "v")+"]", 200, `[`+noScriptReply+`]`)
		expectStatus(t, s, "/pipeline", "["+jsonCmd("EVAL", src, 1, "k", "v")+","+jsonCmd("EVALSHA", sha, 1, "k", "v")+"]", 200, `[{"result":2},{"result":2}]`)
		src, _ = script(3)
		expectStatus(t, s, "/multi-exec", "["+jsonCmd("EVAL", src, 1, "k", "v")+"]", 200, `[{"result":3}]`)

		// A reset before anything runs, then a dropped reply after it ran.
		src, sha = script(4)
		s.ResetNext(1)
		if _, _, err := sendRaw(s, "/", jsonCmd("EVAL", src, 1, "k", "v")); err == nil {
			t.Error("a reset request got a response")
		}
		expectStatus(t, s, "/", jsonCmd("EVALSHA", sha, 1, "k", "v"), 400, noScriptReply)
		src, sha = script(5)
		s.DropResponseNext(1)
		if _, _, err := sendRaw(s, "/pipeline", "["+jsonCmd("EVAL", src, 1, "k", "v")+"]"); err == nil {
			t.Error("a dropped response arrived")
		}
		expectStatus(t, s, "/", jsonCmd("EVALSHA", sha, 1, "k", "v"), 200, `{"result":5}`)

		// Many clients, one new script, at the same moment.
		const clients = 8
		src, sha = script(6)
		var arrived sync.WaitGroup
		arrived.Add(clients)
		gate := make(chan struct{})
		hook := func(r *http.Request) {
			arrived.Done()
			<-gate
		}
		testHookHandle.Store(&hook)
		results := make(chan string, clients)
		for i := 0; i < clients; i++ {
			go func() {
				status, body := postPathErr(s, "/", jsonCmd("EVAL", src, 1, "k", "v"))
				results <- fmt.Sprintf("%d %s", status, body)
			}()
		}
		arrived.Wait()
		testHookHandle.Store(nil)
		close(gate)
		for i := 0; i < clients; i++ {
			if got := <-results; got != `200 {"result":6}` {
				t.Errorf("concurrent first EVAL: %s", got)
			}
		}
		expectStatus(t, s, "/", jsonCmd("EVALSHA", sha, 1, "k", "v"), 200, `{"result":6}`)

		// SCRIPT FLUSH and FLUSHALL between calls, SCRIPT LOAD.
		expectStatus(t, s, "/", `["SCRIPT","FLUSH"]`, 200, `{"result":"OK"}`)
		expectStatus(t, s, "/", jsonCmd("EVALSHA", sha, 1, "k", "v"), 400, noScriptReply)
		expectStatus(t, s, "/", jsonCmd("EVAL", src, 1, "k", "v"), 200, `{"result":6}`)
		expectStatus(t, s, "/", `["FLUSHALL"]`, 200, `{"result":"OK"}`)
		expectStatus(t, s, "/", jsonCmd("EVALSHA", sha, 1, "k", "v"), 200, `{"result":6}`)
		src, sha = script(7)
		expectStatus(t, s, "/", jsonCmd("SCRIPT", "LOAD", src), 200, `{"result":"`+sha+`"}`)
		expectStatus(t, s, "/", jsonCmd("EVALSHA", sha, 1, "k", "v"), 200, `{"result":7}`)

		// A second Server on the same Redis knows none of the translations.
		if !s.Embedded() {
			s2 := NewServer(t, WithRedisAddr(s.RedisAddr()))
			expectStatus(t, s2, "/", jsonCmd("EVALSHA", sha, 1, "k", "v"), 400, noScriptReply)
			expectStatus(t, s2, "/", jsonCmd("EVAL", src, 1, "k", "v"), 200, `{"result":7}`)
			expectStatus(t, s2, "/", jsonCmd("EVALSHA", sha, 1, "k", "v"), 200, `{"result":7}`)
		}
		if n := sent(); n < 10 {
			t.Errorf("the backend was sent %d script bodies, want at least 10", n)
		}
	})
}

func jsonCmd(args ...interface{}) string {
	parts := make([]string, len(args))
	for i, a := range args {
		switch a := a.(type) {
		case string:
			parts[i] = fmt.Sprintf("%q", a)
		default:
			parts[i] = fmt.Sprint(a)
		}
	}
	return "[" + strings.Join(parts, ",") + "]"
}

func expectStatus(t *testing.T, s *Server, path, body string, status int, want string) {
	t.Helper()
	if gotStatus, got := postPath(t, s, path, body); gotStatus != status || got != want {
		t.Errorf("%s %.80s: %d %s, want %d %s", path, body, gotStatus, got, status, want)
	}
}
