package upstashtest

import (
	"net/http"
	"sync"
	"testing"
	"time"
)

// fakeClock is a wall clock that moves only when told.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// newClockServer starts an embedded server whose clock is clk.
func newClockServer(t *testing.T) (*Server, *fakeClock) {
	t.Helper()
	clk := &fakeClock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	now := clk.Now
	testHookClock.Store(&now)
	defer testHookClock.Store(nil)
	return NewServer(t, WithEmbedded()), clk
}

func expectReply(t *testing.T, s *Server, want string, args ...interface{}) {
	t.Helper()
	if status, body := post(t, s, args...); status != http.StatusOK || body != want {
		t.Errorf("%v: %d %s, want 200 %s", args, status, body, want)
	}
}

// TestEmbeddedClockStep: a request that neither sets nor reads a TTL
// moves the embedded clock only when it lags by clockStep or more; one
// that does, and FastForward, move it exactly.
func TestEmbeddedClockStep(t *testing.T) {
	s, clk := newClockServer(t)
	moves := s.be.clockMoves.Load
	expectReply(t, s, `{"result":"OK"}`, "SET", "k", "v", "PX", 100) // exact
	m := moves()
	clk.Advance(99 * time.Millisecond)
	expectReply(t, s, `{"result":"v"}`, "GET", "k") // lags 99 ms: moved
	if got := moves(); got != m+1 {
		t.Errorf("GET lagging 99 ms moved the clock %d times, want 1", got-m)
	}
	// The TTL has run out, but the clock lags less than a step: GET sees
	// the key (the documented bound), and does not move the clock.
	clk.Advance(time.Millisecond)
	expectReply(t, s, `{"result":"v"}`, "GET", "k")
	if got := moves(); got != m+1 {
		t.Errorf("GET lagging 1 ms moved the clock")
	}
	// PTTL moves it exactly: the key is gone.
	expectReply(t, s, `{"result":-2}`, "PTTL", "k")
	expectReply(t, s, `{"result":null}`, "GET", "k")

	// A lag of one step is caught up by any request.
	expectReply(t, s, `{"result":"OK"}`, "SET", "j", "v", "PX", 100)
	clk.Advance(100*time.Millisecond - clockStep)
	expectReply(t, s, `{"result":"v"}`, "GET", "j") // moved to 100 ms - step
	clk.Advance(clockStep - time.Millisecond)
	expectReply(t, s, `{"result":"v"}`, "GET", "j") // lags step - 1 ms: not moved
	clk.Advance(time.Millisecond)
	expectReply(t, s, `{"result":null}`, "GET", "j") // lags a step: moved, TTL out
	// In a pipeline and a transaction too.
	expectReply(t, s, `{"result":"OK"}`, "SET", "p", "v", "PX", 100)
	clk.Advance(100 * time.Millisecond)
	m = moves()
	if status, body := postPath(t, s, "/pipeline", `[["GET","p"],["EXISTS","p"]]`); status != http.StatusOK || body != `[{"result":null},{"result":0}]` {
		t.Errorf("pipeline after the TTL: %d %s", status, body)
	}
	expectReply(t, s, `{"result":"OK"}`, "SET", "q", "v", "PX", 100)
	clk.Advance(100 * time.Millisecond)
	if status, body := postPath(t, s, "/multi-exec", `[["GET","q"]]`); status != http.StatusOK || body != `[{"result":null}]` {
		t.Errorf("transaction after the TTL: %d %s", status, body)
	}
	if got := moves(); got != m+2 {
		t.Errorf("pipeline, SET and transaction moved the clock %d times, want 2 (SET with PX moves it, but it had just moved)", got-m)
	}

	// FastForward is exact whatever the lag: 10 s - 2 ms - 1 s left.
	expectReply(t, s, `{"result":"OK"}`, "SET", "f", "v", "PX", 10000)
	clk.Advance(2 * time.Millisecond)
	expectReply(t, s, `{"result":"v"}`, "GET", "f") // not moved
	if err := s.FastForward(time.Second); err != nil {
		t.Fatal(err)
	}
	if v, err := s.Do("PTTL", "f"); err != nil || v != int64(8998) {
		t.Errorf("PTTL after FastForward: %v, %v; want 8998", v, err)
	}
	// A TTL set by SET with PX starts from now, not from the lagging clock.
	clk.Advance(3 * time.Millisecond)
	expectReply(t, s, `{"result":"v"}`, "GET", "f") // not moved: lags 3 ms
	expectReply(t, s, `{"result":"OK"}`, "SET", "g", "v", "PX", 10)
	clk.Advance(9 * time.Millisecond)
	expectReply(t, s, `{"result":1}`, "PTTL", "g")
}

// TestEmbeddedClockWaitersMoveItOnce: requests that find the clock being
// moved wait for it and do not move it again.
func TestEmbeddedClockWaitersMoveItOnce(t *testing.T) {
	s, clk := newClockServer(t)
	clk.Advance(time.Second)
	const n = 8
	var waiting, done sync.WaitGroup
	waiting.Add(n)
	done.Add(n)
	s.be.hookClockWait = waiting.Done
	s.be.clockMu.Lock() // the clock is being moved
	for i := 0; i < n; i++ {
		go func() {
			defer done.Done()
			s.be.tick(false)
		}()
	}
	waiting.Wait() // all n lag a second and go for the lock
	m := s.be.clockMoves.Load()
	s.be.clockMu.Unlock()
	done.Wait()
	if got := s.be.clockMoves.Load(); got != m+1 {
		t.Errorf("%d waiting requests moved the clock %d times, want once", n, got-m)
	}
}
