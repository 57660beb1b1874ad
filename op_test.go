package upstash_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chatstate/upstash"
	"github.com/chatstate/upstash/upstashtest"
)

// Tests of the operation ids: every state operation that writes is safe
// to send again. Each one is run with the server failing its first
// attempt in each way a request can fail (the reply dropped after the
// command ran, a reset before it ran, a 503), and the client's retry must
// give the result of exactly one application and no error.

// hookTransport runs before(n) before the n-th request it carries (from 1),
// so a test can act between two attempts of one call. Each request goes
// out on a new connection: net/http then never resends a request by itself
// (it does on a reused connection that died), so every attempt passes
// through the hook.
type hookTransport struct {
	mu     sync.Mutex
	n      int
	before func(n int)
	rt     http.Transport
}

func newHookTransport() *hookTransport {
	return &hookTransport{rt: http.Transport{DisableKeepAlives: true}}
}

func (h *hookTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	h.mu.Lock()
	h.n++
	n, f := h.n, h.before
	h.mu.Unlock()
	if f != nil {
		f(n)
	}
	return h.rt.RoundTrip(req)
}

// arm makes the next requests count from 1 and run before.
func (h *hookTransport) arm(before func(n int)) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.n, h.before = 0, before
}

// hookedEnv is a stateEnv whose client goes through a hookTransport, plus
// a second client (other) without one, for the writes of "another
// process".
type hookedEnv struct {
	stateEnv
	hook  *hookTransport
	other *upstash.Client
}

func newHookedEnv(t *testing.T) hookedEnv {
	t.Helper()
	hook := newHookTransport()
	srv, c := newServer(t, upstash.WithTransport(hook))
	return hookedEnv{
		stateEnv: stateEnv{srv: srv, client: c, state: upstash.NewState(c)},
		hook:     hook,
		other:    clientOf(t, srv.URL, srv.Token),
	}
}

// faultKinds are the ways the first attempt of a call fails: the command
// runs and its reply is lost, or it never runs.
var faultKinds = []struct {
	name   string
	inject func(srv *upstashtest.Server)
	ran    bool // the first attempt applied the operation
}{
	{"reply dropped after it ran", func(srv *upstashtest.Server) { srv.DropResponseNext(1) }, true},
	{"reset before it ran", func(srv *upstashtest.Server) { srv.ResetNext(1) }, false},
	{"503 before it ran", func(srv *upstashtest.Server) { srv.FailNext(1, http.StatusServiceUnavailable) }, false},
}

// opCase is one state operation: setup prepares the database, run calls
// the operation and returns its result as text, want is that text for a
// single application, and check looks at the database afterwards.
type opCase struct {
	name  string
	setup func(t *testing.T, env stateEnv)
	run   func(ctx context.Context, s *upstash.State) (string, error)
	want  string
	check func(t *testing.T, env stateEnv)
}

func textOf(v any, err error) (string, error) {
	if err != nil {
		return "", err
	}
	b, err := json.Marshal(v)
	return string(b), err
}

func mustEntry(t *testing.T, msg string) upstash.QueueEntry {
	t.Helper()
	e, err := upstash.NewQueueEntry(msg, time.Hour)
	must(t, err)
	return e
}

// fixedLock is the lock the lock cases set up by hand, so their results
// are known in advance.
var fixedLock = upstash.Lock{ThreadID: "t", Token: "go_fixed"}

func opCases() []opCase {
	return []opCase{
		{
			name: "Subscribe",
			run:  func(ctx context.Context, s *upstash.State) (string, error) { return "ok", s.Subscribe(ctx, "t") },
			want: "ok",
			check: func(t *testing.T, env stateEnv) {
				if rawInt(t, env.client, "SISMEMBER", "chat-sdk:subscriptions", "t") != 1 {
					t.Error("not subscribed")
				}
			},
		},
		{
			name:  "Unsubscribe",
			setup: func(t *testing.T, env stateEnv) { mustDo(t, env.client, "SADD", "chat-sdk:subscriptions", "t") },
			run:   func(ctx context.Context, s *upstash.State) (string, error) { return "ok", s.Unsubscribe(ctx, "t") },
			want:  "ok",
			check: func(t *testing.T, env stateEnv) {
				if rawInt(t, env.client, "SISMEMBER", "chat-sdk:subscriptions", "t") != 0 {
					t.Error("still subscribed")
				}
			},
		},
		{
			name: "Set",
			run: func(ctx context.Context, s *upstash.State) (string, error) {
				return "ok", s.Set(ctx, "k", "v", time.Hour)
			},
			want: "ok",
			check: func(t *testing.T, env stateEnv) {
				if got := rawString(t, env.client, "GET", "chat-sdk:cache:k"); got != `"v"` {
					t.Errorf("GET = %s", got)
				}
			},
		},
		{
			name: "SetIfNotExists",
			run: func(ctx context.Context, s *upstash.State) (string, error) {
				return textOf(s.SetIfNotExists(ctx, "k", "v", time.Hour))
			},
			want: "true", // the retry reports what the first run did
			check: func(t *testing.T, env stateEnv) {
				if got := rawString(t, env.client, "GET", "chat-sdk:cache:k"); got != `"v"` {
					t.Errorf("GET = %s", got)
				}
			},
		},
		{
			name:  "Delete",
			setup: func(t *testing.T, env stateEnv) { mustDo(t, env.client, "SET", "chat-sdk:cache:k", "1") },
			run:   func(ctx context.Context, s *upstash.State) (string, error) { return "ok", s.Delete(ctx, "k") },
			want:  "ok",
			check: func(t *testing.T, env stateEnv) {
				if rawInt(t, env.client, "EXISTS", "chat-sdk:cache:k") != 0 {
					t.Error("not deleted")
				}
			},
		},
		{
			name: "AppendToList",
			setup: func(t *testing.T, env stateEnv) {
				mustDo(t, env.client, "RPUSH", "chat-sdk:list:l", `"a"`, `"b"`)
			},
			run: func(ctx context.Context, s *upstash.State) (string, error) {
				return "ok", s.AppendToList(ctx, "l", "c", upstash.ListOptions{MaxLength: 2, TTL: time.Hour})
			},
			want: "ok",
			check: func(t *testing.T, env stateEnv) {
				// Appended once and trimmed once: b, c (twice would give c, c).
				if got := rawStrings(t, env.client, "LRANGE", "chat-sdk:list:l", 0, -1); strings.Join(got, " ") != `"b" "c"` {
					t.Errorf("list = %q, want [\"b\" \"c\"]", got)
				}
			},
		},
		{
			name: "Enqueue",
			setup: func(t *testing.T, env stateEnv) {
				mustDo(t, env.client, "RPUSH", "chat-sdk:queue:q", `{"message":"a","enqueuedAt":1,"expiresAt":99999999999999}`)
			},
			run: func(ctx context.Context, s *upstash.State) (string, error) {
				return textOf(s.Enqueue(ctx, "q", upstash.QueueEntry{Message: json.RawMessage(`"b"`), EnqueuedAt: time.UnixMilli(1), ExpiresAt: time.UnixMilli(99999999999999)}, 10))
			},
			want: "2",
			check: func(t *testing.T, env stateEnv) {
				if n := rawInt(t, env.client, "LLEN", "chat-sdk:queue:q"); n != 2 {
					t.Errorf("LLEN = %d, want 2", n)
				}
			},
		},
		{
			name: "Dequeue",
			setup: func(t *testing.T, env stateEnv) {
				mustDo(t, env.client, "RPUSH", "chat-sdk:queue:q",
					`{"message":"a","enqueuedAt":1,"expiresAt":99999999999999}`,
					`{"message":"b","enqueuedAt":1,"expiresAt":99999999999999}`)
			},
			run: func(ctx context.Context, s *upstash.State) (string, error) {
				e, err := s.Dequeue(ctx, "q")
				if err != nil || e == nil {
					return "nil", err
				}
				return string(e.Message), nil
			},
			want: `"a"`, // the popped entry is handed over by the retry
			check: func(t *testing.T, env stateEnv) {
				if got := rawStrings(t, env.client, "LRANGE", "chat-sdk:queue:q", 0, -1); len(got) != 1 || !strings.Contains(got[0], `"b"`) {
					t.Errorf("queue = %q, want only b", got)
				}
			},
		},
		{
			name: "AcquireLock",
			run: func(ctx context.Context, s *upstash.State) (string, error) {
				l, err := s.AcquireLock(ctx, "t", time.Hour)
				if err != nil || l == nil {
					return "nil", err
				}
				if l.Fence <= 0 {
					return "no fence", nil
				}
				return "held", nil
			},
			want: "held", // the retry finds its own token
			check: func(t *testing.T, env stateEnv) {
				if got := rawString(t, env.client, "GET", "chat-sdk:lock:t"); !strings.HasPrefix(got, "go_") {
					t.Errorf("lock = %q", got)
				}
			},
		},
		{
			name:  "Unlock",
			setup: setupFixedLock,
			run: func(ctx context.Context, s *upstash.State) (string, error) {
				l := fixedLock
				return "ok", s.Unlock(ctx, &l) // not ErrLockNotHeld: the first run released it
			},
			want: "ok",
			check: func(t *testing.T, env stateEnv) {
				if rawInt(t, env.client, "EXISTS", "chat-sdk:lock:t") != 0 {
					t.Error("not released")
				}
			},
		},
		{
			name:  "ReleaseLock",
			setup: setupFixedLock,
			run: func(ctx context.Context, s *upstash.State) (string, error) {
				l := fixedLock
				return "ok", s.ReleaseLock(ctx, &l)
			},
			want: "ok",
			check: func(t *testing.T, env stateEnv) {
				if rawInt(t, env.client, "EXISTS", "chat-sdk:lock:t") != 0 {
					t.Error("not released")
				}
			},
		},
		{
			name:  "ExtendLock",
			setup: setupFixedLock,
			run: func(ctx context.Context, s *upstash.State) (string, error) {
				l := fixedLock
				return textOf(s.ExtendLock(ctx, &l, time.Hour))
			},
			want: "true",
			check: func(t *testing.T, env stateEnv) {
				wantTTLBetween(t, env.client, "chat-sdk:lock:t", 59*time.Minute, time.Hour)
			},
		},
		{
			name:  "Refresh",
			setup: setupFixedLock,
			run: func(ctx context.Context, s *upstash.State) (string, error) {
				l := fixedLock
				return "ok", s.Refresh(ctx, &l, time.Hour)
			},
			want: "ok",
			check: func(t *testing.T, env stateEnv) {
				wantTTLBetween(t, env.client, "chat-sdk:lock:t", 59*time.Minute, time.Hour)
			},
		},
		{
			name:  "ForceReleaseLock",
			setup: setupFixedLock,
			run: func(ctx context.Context, s *upstash.State) (string, error) {
				return "ok", s.ForceReleaseLock(ctx, "t")
			},
			want: "ok",
			check: func(t *testing.T, env stateEnv) {
				if rawInt(t, env.client, "EXISTS", "chat-sdk:lock:t") != 0 {
					t.Error("not deleted")
				}
			},
		},
	}
}

func setupFixedLock(t *testing.T, env stateEnv) {
	mustDo(t, env.client, "SET", "chat-sdk:lock:t", fixedLock.Token, "PX", 60000)
}

// warmScripts loads every state script into the server's cache, so the
// next call of each operation is one EVALSHA request (a fault queued for
// "the next request" then hits the operation itself, not a NOSCRIPT).
func warmScripts(t *testing.T, s *upstash.State) {
	t.Helper()
	ctx := ctxT(t)
	for _, c := range opCases() {
		_, _ = c.run(ctx, s)
	}
}

// TestStateRepeatPaths runs every writing operation with its first attempt
// failing in each way, followed by the client's retry: one application, the
// single application's result, no error.
func TestStateRepeatPaths(t *testing.T) {
	for _, fk := range faultKinds {
		for _, c := range opCases() {
			t.Run(fk.name+"/"+c.name, func(t *testing.T) {
				env := newStateEnv(t)
				warmScripts(t, env.state)
				must(t, env.srv.FlushAll())
				if c.setup != nil {
					c.setup(t, env)
				}
				env.srv.ResetStats()
				fk.inject(env.srv)
				got, err := c.run(ctxT(t), env.state)
				if err != nil {
					t.Fatalf("error %v, want a successful retry", err)
				}
				if got != c.want {
					t.Errorf("result %s, want %s", got, c.want)
				}
				st := env.srv.Stats()
				if st.TotalRequests != 2 || faultCount(st) != 1 {
					t.Errorf("%d requests with %d faults, want one failed attempt and one retry", st.TotalRequests, faultCount(st))
				}
				c.check(t, env)
			})
		}
	}
}

// faultCount is the number of faults the server injected.
func faultCount(st upstashtest.Stats) int64 {
	var n int64
	for _, v := range st.Faults {
		n += v
	}
	return n
}

// TestStateRetryNeverOverwritesNewerWrite: the first attempt runs and its
// reply is lost; another client writes before the retry; the retry returns
// the first run's outcome and leaves the newer write alone.
func TestStateRetryNeverOverwritesNewerWrite(t *testing.T) {
	cases := []struct {
		name  string
		setup func(t *testing.T, env hookedEnv)
		run   func(ctx context.Context, s *upstash.State) error
		newer func(t *testing.T, env hookedEnv)
		check func(t *testing.T, env hookedEnv)
	}{
		{
			name: "Set",
			run:  func(ctx context.Context, s *upstash.State) error { return s.Set(ctx, "k", "old", 0) },
			newer: func(t *testing.T, env hookedEnv) {
				mustDo(t, env.other, "SET", "chat-sdk:cache:k", `"new"`)
			},
			check: func(t *testing.T, env hookedEnv) {
				if got := rawString(t, env.other, "GET", "chat-sdk:cache:k"); got != `"new"` {
					t.Errorf("GET = %s, want the newer write", got)
				}
			},
		},
		{
			name:  "Delete",
			setup: func(t *testing.T, env hookedEnv) { mustDo(t, env.other, "SET", "chat-sdk:cache:k", `"old"`) },
			run:   func(ctx context.Context, s *upstash.State) error { return s.Delete(ctx, "k") },
			newer: func(t *testing.T, env hookedEnv) {
				mustDo(t, env.other, "SET", "chat-sdk:cache:k", `"new"`)
			},
			check: func(t *testing.T, env hookedEnv) {
				if got := rawString(t, env.other, "GET", "chat-sdk:cache:k"); got != `"new"` {
					t.Errorf("GET = %s, want the newer write", got)
				}
			},
		},
		{
			name: "Subscribe",
			run:  func(ctx context.Context, s *upstash.State) error { return s.Subscribe(ctx, "t") },
			newer: func(t *testing.T, env hookedEnv) {
				mustDo(t, env.other, "SREM", "chat-sdk:subscriptions", "t")
			},
			check: func(t *testing.T, env hookedEnv) {
				if rawInt(t, env.other, "SISMEMBER", "chat-sdk:subscriptions", "t") != 0 {
					t.Error("the retried Subscribe undid a later Unsubscribe")
				}
			},
		},
		{
			name:  "Unsubscribe",
			setup: func(t *testing.T, env hookedEnv) { mustDo(t, env.other, "SADD", "chat-sdk:subscriptions", "t") },
			run:   func(ctx context.Context, s *upstash.State) error { return s.Unsubscribe(ctx, "t") },
			newer: func(t *testing.T, env hookedEnv) {
				mustDo(t, env.other, "SADD", "chat-sdk:subscriptions", "t")
			},
			check: func(t *testing.T, env hookedEnv) {
				if rawInt(t, env.other, "SISMEMBER", "chat-sdk:subscriptions", "t") != 1 {
					t.Error("the retried Unsubscribe undid a later Subscribe")
				}
			},
		},
		{
			name: "ForceReleaseLock",
			setup: func(t *testing.T, env hookedEnv) {
				mustDo(t, env.other, "SET", "chat-sdk:lock:t", "go_old", "PX", 60000)
			},
			run: func(ctx context.Context, s *upstash.State) error { return s.ForceReleaseLock(ctx, "t") },
			newer: func(t *testing.T, env hookedEnv) {
				l, err := upstash.NewState(env.other).AcquireLock(ctxT(t), "t", time.Minute)
				if err != nil || l == nil {
					t.Errorf("the next holder's acquire = %v, %v", l, err)
				}
			},
			check: func(t *testing.T, env hookedEnv) {
				if got := rawString(t, env.other, "GET", "chat-sdk:lock:t"); got == "go_old" || !strings.HasPrefix(got, "go_") {
					t.Errorf("lock = %q: the retried force release deleted the next holder's lock", got)
				}
			},
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			env := newHookedEnv(t)
			warmScripts(t, env.state)
			must(t, env.srv.FlushAll())
			if c.setup != nil {
				c.setup(t, env)
			}
			env.srv.DropResponseNext(1)
			env.hook.arm(func(n int) {
				if n == 2 { // after the first attempt ran, before the retry
					c.newer(t, env)
				}
			})
			err := c.run(ctxT(t), env.state)
			env.hook.arm(nil)
			if err != nil {
				t.Fatalf("error %v, want a successful retry", err)
			}
			c.check(t, env)
		})
	}
}

// TestStateEveryAttemptFails: when no attempt gets a reply, the error
// matches ErrOutcomeUnknown, and the operation ran at most once.
func TestStateEveryAttemptFails(t *testing.T) {
	// More than newServer's client makes (1 + fastRetry.MaxRetries), with
	// net/http's own resends on a reused connection; cleared after each call.
	const attempts = 20
	env := newStateEnv(t)
	ctx, c, s := ctxT(t), env.client, env.state
	warmScripts(t, s)
	must(t, env.srv.FlushAll())
	e := mustEntry(t, "m")

	// Every reply lost: the first attempt applied the operation, the
	// others found its record.
	env.srv.DropResponseNext(attempts)
	_, err := s.Enqueue(ctx, "q", e, 0)
	env.srv.ClearFaults()
	wantErrIs(t, err, upstash.ErrOutcomeUnknown)
	if n := rawInt(t, c, "LLEN", "chat-sdk:queue:q"); n != 1 {
		t.Errorf("LLEN = %d after %d attempts, want 1", n, attempts)
	}
	env.srv.DropResponseNext(attempts)
	err = s.AppendToList(ctx, "l", 1, upstash.ListOptions{})
	env.srv.ClearFaults()
	wantErrIs(t, err, upstash.ErrOutcomeUnknown)
	if n := rawInt(t, c, "LLEN", "chat-sdk:list:l"); n != 1 {
		t.Errorf("list LLEN = %d after %d attempts, want 1", n, attempts)
	}
	env.srv.DropResponseNext(attempts)
	_, err = s.SetIfNotExists(ctx, "nx", true, time.Minute)
	env.srv.ClearFaults()
	wantErrIs(t, err, upstash.ErrOutcomeUnknown)

	// A Dequeue whose every reply was lost: the entry left the queue, and
	// its only copy is the operation's record, until that expires.
	env.srv.DropResponseNext(attempts)
	_, err = s.Dequeue(ctx, "q")
	env.srv.ClearFaults()
	wantErrIs(t, err, upstash.ErrOutcomeUnknown)
	if n := rawInt(t, c, "LLEN", "chat-sdk:queue:q"); n != 0 {
		t.Errorf("queue LLEN = %d, want 0", n)
	}
	var records []string
	for _, k := range rawStrings(t, c, "KEYS", "chat-sdk:op:*") {
		if v := rawString(t, c, "GET", k); strings.HasPrefix(v, "e{") {
			records = append(records, v)
			if ttl := pttl(t, c, k); ttl <= 9*time.Minute || ttl > 10*time.Minute {
				t.Errorf("the dequeue record's PTTL is %v, want about 10 minutes", ttl)
			}
		}
	}
	if len(records) != 1 || !strings.Contains(records[0], `"message":"m"`) {
		t.Errorf("dequeue records = %q, want the one popped entry", records)
	}

	// Every attempt refused with a 503 (which may come after a command
	// ran, so the client cannot tell): unknown as well.
	env.srv.FailNext(attempts, http.StatusServiceUnavailable)
	err = s.Set(ctx, "k", 1, 0)
	env.srv.ClearFaults()
	wantErrIs(t, err, upstash.ErrOutcomeUnknown)
	if !strings.HasPrefix(err.Error(), "upstash: Set: outcome unknown") || strings.Count(err.Error(), "upstash:") != 1 {
		t.Errorf("error text %q", err)
	}

	// A Redis error is an answer: the script stopped before writing.
	mustDo(t, c, "SET", "chat-sdk:queue:str", "not a list")
	_, err = s.Enqueue(ctx, "str", e, 0)
	if err == nil || errors.Is(err, upstash.ErrOutcomeUnknown) {
		t.Errorf("Enqueue onto a string: %v, want a WRONGTYPE error that is not ErrOutcomeUnknown", err)
	}
}

// TestAcquireLockEveryAttemptFails: an acquire whose attempts all failed
// releases the token it may have set when the context leaves time, and
// then knows the lock is not held.
func TestAcquireLockEveryAttemptFails(t *testing.T) {
	// 1 + fastRetry.MaxRetries; the hooked client's requests each use a new
	// connection, so net/http resends none of them by itself.
	const attempts = 4
	env := newHookedEnv(t)
	ctx, c, s := ctxT(t), env.client, env.state
	warmScripts(t, s)
	must(t, env.srv.FlushAll())

	// The first attempt took the lock; every reply is lost; the release
	// that follows deletes it.
	env.srv.DropResponseNext(attempts)
	l, err := s.AcquireLock(ctx, "t", time.Minute)
	if l != nil || err == nil || errors.Is(err, upstash.ErrOutcomeUnknown) {
		t.Fatalf("AcquireLock = %v, %v; want nil and an error that is not ErrOutcomeUnknown", l, err)
	}
	if !strings.Contains(err.Error(), "released") {
		t.Errorf("error %q does not say the token was released", err)
	}
	if n := rawInt(t, c, "EXISTS", "chat-sdk:lock:t"); n != 0 {
		t.Error("a lock was left under a token nobody knows")
	}

	// The release fails too: the outcome is unknown.
	env.srv.FailNext(2*attempts, http.StatusServiceUnavailable)
	_, err = s.AcquireLock(ctx, "u", time.Minute)
	wantErrIs(t, err, upstash.ErrOutcomeUnknown)
	env.srv.ClearFaults()
}

// TestStateScriptsDeclareKeyLocking: every script takes Upstash's
// allow-key-locking flag, so it locks only its keys. (upstashtest refuses a
// flagged script that touches a key outside KEYS, on both backends, so the
// rest of the suite proves the scripts keep the rule.)
func TestStateScriptsDeclareKeyLocking(t *testing.T) {
	sources := upstash.StateScriptSources()
	if len(sources) < 9 {
		t.Fatalf("%d scripts, want at least 9", len(sources))
	}
	for name, src := range sources {
		if !strings.HasPrefix(src, "#!lua flags=allow-key-locking\n") {
			t.Errorf("%s does not start with #!lua flags=allow-key-locking", name)
		}
	}
}

// TestStateInputRanges: lengths a script cannot hold exactly are refused
// before anything is sent; the largest accepted one works on the server.
func TestStateInputRanges(t *testing.T) {
	env := newStateEnv(t)
	ctx, c, s := ctxT(t), env.client, env.state
	e := mustEntry(t, "m")
	env.srv.ResetStats()
	for _, n := range []int{upstash.MaxListLength + 1, 1e17, 1<<63 - 1} {
		err := s.AppendToList(ctx, "l", 1, upstash.ListOptions{MaxLength: n})
		wantErrIs(t, err, upstash.ErrInvalidArgument)
		_, err = s.Enqueue(ctx, "q", e, n)
		wantErrIs(t, err, upstash.ErrInvalidArgument)
	}
	if n := env.srv.Stats().TotalRequests; n != 0 {
		t.Errorf("%d requests sent for refused lengths", n)
	}
	must(t, s.AppendToList(ctx, "l", 1, upstash.ListOptions{MaxLength: upstash.MaxListLength}))
	must(t, s.AppendToList(ctx, "l", 2, upstash.ListOptions{MaxLength: upstash.MaxListLength}))
	if got := rawStrings(t, c, "LRANGE", "chat-sdk:list:l", 0, -1); strings.Join(got, ",") != "1,2" {
		t.Errorf("list = %q, want 1,2", got)
	}
	for i := 1; i <= 2; i++ {
		n, err := s.Enqueue(ctx, "q", e, upstash.MaxListLength)
		must(t, err)
		if n != i {
			t.Errorf("Enqueue %d returned depth %d", i, n)
		}
	}
}

// freezeProxy sits between a client and the test server and plays what a
// frozen process (a Lambda between invocations) lives through: freeze
// closes the server's side of every connection, as an idle timeout on the
// server would, while the client, stopped, notices nothing (no FIN reaches
// it). The first bytes the client then sends on such a connection are
// answered with a TCP reset and never reach the server.
type freezeProxy struct {
	ln     net.Listener
	target string
	resets atomic.Int32 // requests answered with a reset
	mu     sync.Mutex
	pairs  []*proxyPair
}

type proxyPair struct {
	client, server net.Conn
	frozen         atomic.Bool
}

func newFreezeProxy(t *testing.T, target string) *freezeProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	must(t, err)
	p := &freezeProxy{ln: ln, target: target}
	t.Cleanup(func() {
		ln.Close()
		p.mu.Lock()
		defer p.mu.Unlock()
		for _, pr := range p.pairs {
			pr.client.Close()
			pr.server.Close()
		}
	})
	go p.serve()
	return p
}

func (p *freezeProxy) URL() string { return "http://" + p.ln.Addr().String() }

func (p *freezeProxy) serve() {
	for {
		client, err := p.ln.Accept()
		if err != nil {
			return
		}
		server, err := net.Dial("tcp", p.target)
		if err != nil {
			client.Close()
			continue
		}
		pr := &proxyPair{client: client, server: server}
		p.mu.Lock()
		p.pairs = append(p.pairs, pr)
		p.mu.Unlock()
		go func() { // client to server
			buf := make([]byte, 32<<10)
			for {
				n, err := client.Read(buf)
				if n > 0 && pr.frozen.Load() {
					p.resets.Add(1)
					if tc, ok := client.(*net.TCPConn); ok {
						_ = tc.SetLinger(0)
					}
					client.Close()
					return
				}
				if n > 0 {
					if _, werr := server.Write(buf[:n]); werr != nil {
						client.Close()
						return
					}
				}
				if err != nil {
					server.Close()
					return
				}
			}
		}()
		go func() { // server to client; a frozen pair keeps the client open
			_, _ = io.Copy(client, server)
			if !pr.frozen.Load() {
				client.Close()
			}
		}()
	}
}

// freeze closes the server side of every open connection behind the
// client's back.
func (p *freezeProxy) freeze() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, pr := range p.pairs {
		pr.frozen.Store(true)
		pr.server.Close()
	}
}

// TestStateAfterFreeze: the first operations after a freeze, whose pooled
// connection the server closed meanwhile, are resent (by net/http or the
// retry loop) and applied once, with the right result.
func TestStateAfterFreeze(t *testing.T) {
	srv := upstashtest.NewServer(t)
	proxy := newFreezeProxy(t, strings.TrimPrefix(srv.URL, "http://"))
	c := clientOf(t, proxy.URL(), srv.Token)
	s := upstash.NewState(c)
	ctx := ctxT(t)
	warmScripts(t, s)
	must(t, srv.FlushAll())
	e := mustEntry(t, "m")
	steps := []struct {
		name string
		run  func() (string, error)
		want string
	}{
		{"SetIfNotExists", func() (string, error) { return textOf(s.SetIfNotExists(ctx, "dedupe", true, time.Minute)) }, "true"},
		{"AcquireLock", func() (string, error) {
			l, err := s.AcquireLock(ctx, "t", time.Minute)
			return textOf(l != nil, err)
		}, "true"},
		{"Enqueue", func() (string, error) { return textOf(s.Enqueue(ctx, "q", e, 0)) }, "1"},
		{"Dequeue", func() (string, error) {
			got, err := s.Dequeue(ctx, "q")
			if err != nil || got == nil {
				return "nil", err
			}
			return string(got.Message), nil
		}, `"m"`},
	}
	for _, st := range steps {
		proxy.freeze()
		srv.ResetStats()
		resets := proxy.resets.Load()
		got, err := st.run()
		if proxy.resets.Load() == resets {
			t.Errorf("%s did not meet the dead connection", st.name)
		}
		if err != nil || got != st.want {
			t.Errorf("%s after a freeze = %s, %v; want %s", st.name, got, err, st.want)
		}
		if n := srv.Stats().TotalRequests; n != 1 {
			t.Errorf("%s: the server got %d requests, want 1 (the one on the dead connection never arrived)", st.name, n)
		}
	}
	if n := rawInt(t, c, "LLEN", "chat-sdk:queue:q"); n != 0 {
		t.Errorf("queue LLEN = %d, want 0", n)
	}
}
