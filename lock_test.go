package upstash_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"regexp"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/chatstate/upstash"
	"github.com/chatstate/upstash/upstashtest"
)

// ---- helpers ----

// eventWait bounds every wait for an event (a tick armed, a channel
// closed, a request received). It only stops a broken test from hanging:
// the events themselves take milliseconds.
const eventWait = 30 * time.Second

// newLockEnv is newStateEnv with a manual clock on the State, so that the
// test decides when KeepLockAlive's heartbeat ticks.
func newLockEnv(t *testing.T) (stateEnv, *upstash.ManualClock) {
	t.Helper()
	env := newStateEnv(t)
	clk := upstash.NewManualClock()
	upstash.SetClock(env.state, clk)
	return env, clk
}

// pass lets d go by for the lock on the server and then on the State's
// clock (firing the heartbeat's timer when it is due). On the embedded
// backend the server's clock is moved forward; on a real Redis, d of real
// time passes.
func (env stateEnv) pass(t *testing.T, clk *upstash.ManualClock, d time.Duration) {
	t.Helper()
	if env.srv.Embedded() {
		must(t, env.srv.FastForward(d))
	} else {
		time.Sleep(d)
	}
	clk.Advance(d)
}

// waitArmed waits until the heartbeat has armed its timer (it then waits
// for the next tick, having finished the previous one) and returns the
// timer's duration.
func waitArmed(t *testing.T, clk *upstash.ManualClock) time.Duration {
	t.Helper()
	select {
	case d := <-clk.Armed():
		return d
	case <-time.After(eventWait):
		t.Fatalf("the heartbeat armed no timer within %v", eventWait)
		return 0
	}
}

// waitStopped waits until the heartbeat has stopped its timer, which it
// does only when it returns.
func waitStopped(t *testing.T, clk *upstash.ManualClock) {
	t.Helper()
	select {
	case <-clk.Stopped():
	case <-time.After(eventWait):
		t.Fatalf("the heartbeat did not return within %v", eventWait)
	}
}

func waitClosed(t *testing.T, ch <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(eventWait):
		t.Fatalf("%s: not closed within %v", what, eventWait)
	}
}

// waitFor polls cond until it holds.
func waitFor(t *testing.T, cond func() bool, what string) {
	t.Helper()
	deadline := time.Now().Add(eventWait)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", eventWait, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// heartbeatRunning reports whether a KeepLockAlive goroutine exists.
func heartbeatRunning() bool {
	buf := make([]byte, 1<<20)
	n := runtime.Stack(buf, true)
	return strings.Contains(string(buf[:n]), "upstash.(*State).heartbeat")
}

func mustAcquire(t *testing.T, s *upstash.State, id string, ttl time.Duration) *upstash.Lock {
	t.Helper()
	lock, err := s.AcquireLock(testCtx(t), id, ttl)
	must(t, err)
	if lock == nil {
		t.Fatalf("AcquireLock(%q) = nil", id)
	}
	return lock
}

func isHeld(t *testing.T, s *upstash.State, id string) bool {
	t.Helper()
	lock, err := s.AcquireLock(testCtx(t), id, time.Minute)
	must(t, err)
	if lock != nil {
		must(t, s.ReleaseLock(testCtx(t), lock))
	}
	return lock == nil
}

func closed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// ---- KeepLockAlive ----

func TestKeepLockAliveKeepsLock(t *testing.T) {
	env, clk := newLockEnv(t)
	s := env.state
	// Seconds: on a real Redis the time between two extends is real, and
	// a tenfold slowdown of the requests still leaves most of the TTL.
	const ttl = 3 * time.Second
	lock := mustAcquire(t, s, "t", ttl)
	ok, err := s.ExtendLock(testCtx(t), lock, ttl) // load the script: one request per extend below
	must(t, err)
	if !ok {
		t.Fatal("ExtendLock = false")
	}
	original := *lock
	lost, stop := s.KeepLockAlive(testCtx(t), lock, ttl)
	defer stop()
	if d := waitArmed(t, clk); d != ttl/3 {
		t.Fatalf("first tick in %v, want ttl/3 = %v", d, ttl/3)
	}
	env.srv.ResetStats()
	for i := 1; i <= 4; i++ { // 4 × ttl/3: past the lock's first TTL
		_ = lock.ExpiresAt // the caller may read its lock meanwhile (-race checks)
		env.pass(t, clk, ttl/3)
		if d := waitArmed(t, clk); d != ttl/3 { // the tick's extend is done
			t.Fatalf("tick %d: next tick in %v, want %v", i, d, ttl/3)
		}
		if n := env.srv.Stats().Commands["EVALSHA"]; n != int64(i) {
			t.Fatalf("%d extends after %d ticks, want one per tick", n, i)
		}
		if closed(lost) {
			t.Fatalf("lost was closed at tick %d while the lock was being kept alive", i)
		}
	}
	if !isHeld(t, s, "t") {
		t.Fatal("a 3 s lock lapsed after 4 s despite KeepLockAlive")
	}
	if *lock != original {
		t.Errorf("KeepLockAlive mutated the caller's lock: %+v, was %+v", *lock, original)
	}

	stop()
	if heartbeatRunning() {
		t.Fatal("the heartbeat goroutine outlived stop()")
	}
	env.srv.ResetStats()
	env.pass(t, clk, ttl+250*time.Millisecond) // past the last extend's TTL
	if n := env.srv.Stats().TotalRequests; n != 0 {
		t.Errorf("%d requests after stop(), want 0", n)
	}
	if closed(lost) {
		t.Error("stop() closed lost")
	}
	if isHeld(t, s, "t") {
		t.Error("the lock is still held after stop() and its TTL")
	}
	stop() // idempotent
}

func TestKeepLockAliveReportsForceRelease(t *testing.T) {
	env, clk := newLockEnv(t)
	s := env.state
	const ttl = 3 * time.Second
	lock := mustAcquire(t, s, "t", ttl)
	lost, stop := s.KeepLockAlive(testCtx(t), lock, ttl)
	defer stop()
	waitArmed(t, clk)
	must(t, s.ForceReleaseLock(testCtx(t), "t"))
	newHolder := mustAcquire(t, s, "t", time.Minute)
	clk.Advance(ttl / 3) // the next extend finds another token
	waitClosed(t, lost, "lost, at the first tick after a force release")
	// The heartbeat exits by itself and did not touch the new holder's lock.
	waitStopped(t, clk)
	waitFor(t, func() bool { return !heartbeatRunning() }, "the heartbeat to exit after losing the lock")
	if got := rawString(t, env.client, "GET", "chat-sdk:lock:t"); got != newHolder.Token {
		t.Errorf("lock holds %q, want the new holder's token", got)
	}
	wantTTLBetween(t, env.client, "chat-sdk:lock:t", 50*time.Second, time.Minute)
}

func TestKeepLockAliveLostWhenExtendsKeepFailing(t *testing.T) {
	env, clk := newLockEnv(t)
	s := env.state
	const ttl = 3 * time.Second
	lock := mustAcquire(t, s, "t", ttl)
	lost, stop := s.KeepLockAlive(testCtx(t), lock, ttl)
	defer stop()
	waitArmed(t, clk)
	env.srv.SetFaultRate(1, upstashtest.FaultStatus) // every request fails with 503
	defer env.srv.ClearFaults()
	env.srv.ResetStats()
	// Not before the lock could have lapsed: errors are retried meanwhile.
	for i := 1; i <= 2; i++ {
		clk.Advance(ttl / 3)
		waitArmed(t, clk) // the extend failed and the next tick is armed
		if n := env.srv.Stats().Faults[upstashtest.FaultStatus]; n == 0 {
			t.Fatalf("tick %d: no extend reached the server", i)
		}
		if closed(lost) {
			t.Fatalf("lost was closed at tick %d, %v before the lock could lapse", i, ttl-time.Duration(i)*ttl/3)
		}
	}
	clk.Advance(ttl / 3) // ttl has passed since the last successful extend
	waitClosed(t, lost, "lost, once ttl passed with every extend failing")
}

func TestKeepLockAliveStopsWithContext(t *testing.T) {
	env, clk := newLockEnv(t)
	s := env.state
	lock := mustAcquire(t, s, "t", time.Second)
	ctx, cancel := context.WithCancel(context.Background())
	lost, stop := s.KeepLockAlive(ctx, lock, time.Second)
	waitArmed(t, clk)
	cancel()
	waitStopped(t, clk)
	waitFor(t, func() bool { return !heartbeatRunning() }, "the heartbeat to exit after ctx is done")
	stop()
	if closed(lost) {
		t.Error("cancelling ctx closed lost")
	}
}

func TestKeepLockAliveStopCancelsExtendInFlight(t *testing.T) {
	env, clk := newLockEnv(t)
	s := env.state
	// With an hour-long ttl, an extend may take 40 minutes before the
	// heartbeat gives up on it by itself; and ctx has no deadline.
	const ttl = time.Hour
	lock := mustAcquire(t, s, "t", ttl)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	lost, stop := s.KeepLockAlive(ctx, lock, ttl)
	waitArmed(t, clk)
	env.srv.SetLatency(ttl) // the next extend hangs on the server
	defer env.srv.SetLatency(0)
	env.srv.ResetStats()
	clk.Advance(ttl / 3)
	waitFor(t, func() bool { return env.srv.Stats().TotalRequests > 0 }, "the extend to reach the server")
	stopped := make(chan struct{})
	go func() {
		stop()
		close(stopped)
	}()
	waitClosed(t, stopped, "stop() with an extend in flight (it must cancel the request, which the server holds for an hour)")
	if heartbeatRunning() {
		t.Error("the heartbeat goroutine outlived stop()")
	}
	if closed(lost) {
		t.Error("stop() closed lost")
	}
}

func TestKeepLockAliveBadInput(t *testing.T) {
	env := newStateEnv(t)
	s := env.state
	lock := mustAcquire(t, s, "t", time.Minute)
	for name, tc := range map[string]struct {
		lock *upstash.Lock
		ttl  time.Duration
	}{
		"nil lock":  {nil, time.Second},
		"no token":  {&upstash.Lock{ThreadID: "t"}, time.Second},
		"zero ttl":  {lock, 0},
		"negative":  {lock, -time.Second},
		"no thread": {&upstash.Lock{Token: "x"}, time.Second},
	} {
		lost, stop := s.KeepLockAlive(testCtx(t), tc.lock, tc.ttl)
		if !closed(lost) {
			t.Errorf("%s: lost is not closed", name)
		}
		stop()
	}
	if heartbeatRunning() {
		t.Error("a heartbeat started for bad input")
	}
}

func TestKeepLockAliveShortRemainingTime(t *testing.T) {
	env, clk := newLockEnv(t)
	s := env.state
	// The lock has 4 s left but the heartbeat's ttl is 60 s: the first
	// extend must come before the lock lapses (at half the time left), not
	// after ttl/3 = 20 s.
	lock := mustAcquire(t, s, "t", 4*time.Second)
	lost, stop := s.KeepLockAlive(testCtx(t), lock, time.Minute)
	defer stop()
	d := waitArmed(t, clk)
	if d != 2*time.Second {
		t.Fatalf("first tick in %v, want 2 s: half the time the lock has left", d)
	}
	env.pass(t, clk, d)
	waitArmed(t, clk) // the extend is done
	if closed(lost) {
		t.Fatal("lost was closed")
	}
	if !isHeld(t, s, "t") {
		t.Fatal("the lock lapsed before the first extend")
	}
	wantTTLBetween(t, env.client, "chat-sdk:lock:t", 50*time.Second, time.Minute)
}

// ---- locks: layout, lost replies, JSON ----

func TestStateLayoutLock(t *testing.T) {
	env := newStateEnv(t)
	ctx, c, s := testCtx(t), env.client, env.state
	lock, err := s.AcquireLock(ctx, "slack:C1:1.2", 30*time.Second)
	must(t, err)
	if lock == nil {
		t.Fatal("AcquireLock = nil")
	}
	if !regexp.MustCompile(`^go_[0-9a-f]{32}$`).MatchString(lock.Token) {
		t.Errorf("token %q is not go_ + 32 hex digits", lock.Token)
	}
	key := "chat-sdk:lock:slack:C1:1.2"
	if got := rawString(t, c, "GET", key); got != lock.Token {
		t.Errorf("GET %s = %q, want the token %q", key, got, lock.Token)
	}
	wantTTLBetween(t, c, key, 29*time.Second, 30*time.Second)
	// ExpiresAt is never later than the server's expiry.
	if serverExpiry := time.Now().Add(pttl(t, c, key)); lock.ExpiresAt.After(serverExpiry.Add(5 * time.Millisecond)) {
		t.Errorf("ExpiresAt %v is after the server's expiry %v", lock.ExpiresAt, serverExpiry)
	}

	ok, err := s.ExtendLock(ctx, lock, 2*time.Minute)
	must(t, err)
	if !ok {
		t.Fatal("ExtendLock = false")
	}
	wantTTLBetween(t, c, key, 119*time.Second, 2*time.Minute)
	ok, err = s.ExtendLock(ctx, lock, 10*time.Second) // sets, does not add
	must(t, err)
	if !ok {
		t.Fatal("ExtendLock = false")
	}
	wantTTLBetween(t, c, key, 9*time.Second, 10*time.Second)

	// A lock taken by TypeScript is respected, and its JSON decodes.
	raw(t, c, "SET", "chat-sdk:lock:ts", "redis_1712345678901_abc123", "PX", 30000)
	if l, err := s.AcquireLock(ctx, "ts", time.Minute); err != nil || l != nil {
		t.Fatalf("AcquireLock of a TypeScript-held lock = %v, %v", l, err)
	}
	var tsLock upstash.Lock
	must(t, json.Unmarshal([]byte(`{"threadId":"ts","token":"redis_1712345678901_abc123","expiresAt":1712345708901}`), &tsLock))
	must(t, s.ReleaseLock(ctx, &tsLock))
	if n := rawInt(t, c, "EXISTS", "chat-sdk:lock:ts"); n != 0 {
		t.Errorf("the TypeScript lock survived ReleaseLock with its own token")
	}

	must(t, s.ForceReleaseLock(ctx, "slack:C1:1.2"))
	if n := rawInt(t, c, "EXISTS", key); n != 0 {
		t.Errorf("EXISTS %s after ForceReleaseLock = %d", key, n)
	}
}

func TestAcquireLockLostReply(t *testing.T) {
	env := newStateEnv(t)
	ctx, s := testCtx(t), env.state
	// The SET NX runs but its reply is lost: the GET that follows finds our
	// token, so the lock is ours.
	env.srv.DropResponseNext(1)
	lock, err := s.AcquireLock(ctx, "t", time.Minute)
	must(t, err)
	if lock == nil {
		t.Fatal("AcquireLock after a lost reply = nil; the SET had landed")
	}
	if got := rawString(t, env.client, "GET", "chat-sdk:lock:t"); got != lock.Token {
		t.Errorf("lock holds %q, want our token %q", got, lock.Token)
	}
	// Someone else holds it and our reply is lost: not acquired.
	env.srv.DropResponseNext(1)
	other, err := s.AcquireLock(ctx, "t", time.Minute)
	if err != nil || other != nil {
		t.Fatalf("AcquireLock of a held lock after a lost reply = %v, %v; want nil, nil", other, err)
	}
	if got := rawString(t, env.client, "GET", "chat-sdk:lock:t"); got != lock.Token {
		t.Errorf("after a failed acquire with a lost reply the lock holds %q, want the holder's %q", got, lock.Token)
	}
	// The reply is lost and the read-back fails as well: the outcome is unknown.
	env.srv.DropResponseNext(1)
	env.srv.FailNext(10, http.StatusServiceUnavailable)
	_, err = s.AcquireLock(ctx, "u", time.Minute)
	if !errors.Is(err, upstash.ErrOutcomeUnknown) {
		t.Fatalf("AcquireLock with the reply and the read-back lost: %v, want ErrOutcomeUnknown", err)
	}
	env.srv.ClearFaults()
}

func TestLockJSON(t *testing.T) {
	l := upstash.Lock{ThreadID: "slack:C1:1.2", Token: "go_00ff", ExpiresAt: time.UnixMilli(1712345678901)}
	b, err := json.Marshal(l)
	must(t, err)
	if want := `{"threadId":"slack:C1:1.2","token":"go_00ff","expiresAt":1712345678901}`; string(b) != want {
		t.Errorf("json.Marshal(Lock) = %s, want %s", b, want)
	}
	var back upstash.Lock
	must(t, json.Unmarshal(b, &back))
	if back.ThreadID != l.ThreadID || back.Token != l.Token || !back.ExpiresAt.Equal(l.ExpiresAt) {
		t.Errorf("round trip = %+v, want %+v", back, l)
	}
	// Sub-millisecond precision is dropped, never rounded up.
	b, err = json.Marshal(upstash.Lock{ThreadID: "t", Token: "x", ExpiresAt: time.UnixMilli(5).Add(999 * time.Microsecond)})
	must(t, err)
	if want := `{"threadId":"t","token":"x","expiresAt":5}`; string(b) != want {
		t.Errorf("json.Marshal = %s, want %s", b, want)
	}
	// MarshalJSON itself does not escape HTML, as JSON.stringify; a
	// surrounding json.Marshal does (its choice), which decodes the same.
	b, err = (&upstash.Lock{ThreadID: "<&>", Token: "t"}).MarshalJSON()
	must(t, err)
	if want := `{"threadId":"<&>","token":"t","expiresAt":0}`; string(b) != want {
		t.Errorf("MarshalJSON = %s, want %s", b, want)
	}
	b, err = json.Marshal(map[string]*upstash.Lock{"l": {ThreadID: "<&>", Token: "t"}})
	must(t, err)
	if want := `{"l":{"threadId":"\u003c\u0026\u003e","token":"t","expiresAt":0}}`; string(b) != want {
		t.Errorf("json.Marshal = %s, want %s", b, want)
	}
	for _, bad := range []string{`{"expiresAt":"x"}`, `{"expiresAt":1e400}`, `[]`, `{"token":5}`} {
		if err := json.Unmarshal([]byte(bad), &back); err == nil {
			t.Errorf("Unmarshal(%s) succeeded", bad)
		}
	}
	must(t, json.Unmarshal([]byte(`{"threadId":"a","token":"b","expiresAt":1712345678901.7}`), &back))
	if back.ExpiresAt.UnixMilli() != 1712345678901 {
		t.Errorf("fractional ms decoded as %d", back.ExpiresAt.UnixMilli())
	}
	must(t, json.Unmarshal([]byte(`{"threadId":"a","token":"b","expiresAt":null}`), &back))
	if !back.ExpiresAt.IsZero() {
		t.Errorf("null expiresAt decoded as %v", back.ExpiresAt)
	}
}
