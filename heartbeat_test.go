package upstash_test

import (
	"context"
	"errors"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chatstate/upstash"
	"github.com/chatstate/upstash/upstashtest"
)

// advance moves the State's manual clock by d and, on the embedded
// backend, the server's clock too (on a real Redis only the State's clock
// moves: use it where the server's time does not matter).
func (env stateEnv) advance(t *testing.T, clk *upstash.ManualClock, d time.Duration) {
	t.Helper()
	if env.srv.Embedded() {
		must(t, env.srv.FastForward(d))
	}
	clk.Advance(d)
}

// noneLeft fails the test if a heartbeat goroutine (KeepLockAlive's or
// WithLock's) or a timer of clk is left.
func noneLeft(t *testing.T, clk *upstash.ManualClock, after string) {
	t.Helper()
	if heartbeatRunning() {
		t.Errorf("a heartbeat goroutine outlived %s", after)
	}
	if n := clk.ActiveTimers(); n != 0 {
		t.Errorf("%d timers outlived %s", n, after)
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
	ok, err := s.ExtendLock(ctxT(t), lock, ttl) // load the script: one request per extend below
	must(t, err)
	if !ok {
		t.Fatal("ExtendLock = false")
	}
	original := *lock
	lost, stop := s.KeepLockAlive(ctxT(t), lock, ttl)
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
		t.Errorf("KeepLockAlive mutated the caller's lock while running: %+v, was %+v", *lock, original)
	}

	stop()
	if heartbeatRunning() {
		t.Fatal("the heartbeat goroutine outlived stop()")
	}
	if n := clk.ActiveTimers(); n != 0 {
		t.Fatalf("%d timers outlived stop()", n)
	}
	// stop hands the caller the expiry of the last extend.
	if want := original.ExpiresAt.Add(4 * ttl / 3); !lock.ExpiresAt.Equal(want) {
		t.Errorf("after stop, lock.ExpiresAt = %v, want %v (the last extend's)", lock.ExpiresAt, want)
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
	lost, stop := s.KeepLockAlive(ctxT(t), lock, ttl)
	defer stop()
	waitArmed(t, clk)
	must(t, s.ForceReleaseLock(ctxT(t), "t"))
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

// TestKeepLockAliveLostBeforeLapse: with every extend failing, lost is
// closed a margin (a tenth of the TTL) before the lock could lapse, while
// the server still holds it; not before, since errors are retried at each
// tick meanwhile.
func TestKeepLockAliveLostBeforeLapse(t *testing.T) {
	env, clk := newLockEnv(t)
	s := env.state
	// 30 s: on the embedded backend the server's clock is moved with the
	// test's, and real time passing meanwhile stays far below the margin.
	const ttl = 30 * time.Second
	const margin = ttl / 10 // the manual clock sees no round trip
	lock := mustAcquire(t, s, "t", ttl)
	lapse := lock.ExpiresAt.Add(-margin)
	lost, stop := s.KeepLockAlive(ctxT(t), lock, ttl)
	defer stop()
	waitArmed(t, clk)
	env.srv.SetFaultRate(1, upstashtest.FaultStatus) // every request fails with 503
	defer env.srv.ClearFaults()
	env.srv.ResetStats()
	var d time.Duration
	for i := 1; i <= 2; i++ {
		env.advance(t, clk, ttl/3)
		d = waitArmed(t, clk) // the extend failed and the next wake-up is armed
		if n := env.srv.Stats().Faults[upstashtest.FaultStatus]; n == 0 {
			t.Fatalf("tick %d: no extend reached the server", i)
		}
		if closed(lost) {
			t.Fatalf("lost was closed at tick %d, %v before the lock could lapse", i, ttl-time.Duration(i)*ttl/3)
		}
	}
	if want := ttl - margin - 2*ttl/3; d != want {
		t.Fatalf("after two failed extends the heartbeat wakes in %v, want %v: a margin before the lapse", d, want)
	}
	env.advance(t, clk, d-time.Millisecond)
	if closed(lost) {
		t.Fatal("lost was closed before the margin")
	}
	env.advance(t, clk, time.Millisecond)
	waitClosed(t, lost, "lost, a margin before the lock could lapse")
	if !clk.Now().Equal(lapse) {
		t.Errorf("lost closed at %v, want %v", clk.Now(), lapse)
	}
	waitStopped(t, clk)
	env.srv.ClearFaults()
	if env.srv.Embedded() { // the server's clock moved with the test's
		if left := pttl(t, env.client, "chat-sdk:lock:t"); left <= 0 || left > margin {
			t.Errorf("the lock's PTTL when lost closed is %v, want within (0, %v]", left, margin)
		}
	}
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
		lost, stop := s.KeepLockAlive(ctxT(t), tc.lock, tc.ttl)
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
	lost, stop := s.KeepLockAlive(ctxT(t), lock, time.Minute)
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

// ---- WithLock ----

// TestWithLockKeepsLockAcrossTTLs: a handler that runs for two TTLs keeps
// its lock, sees its expiry move with each extend, and the lock is released
// when it returns.
func TestWithLockKeepsLockAcrossTTLs(t *testing.T) {
	env, clk := newLockEnv(t)
	s := env.state
	const ttl = 3 * time.Second
	mustDo(t, env.client, "PING") // a pooled connection before counting
	var token string
	err := s.WithLock(ctxT(t), "t", ttl, func(ctx context.Context, h *upstash.HeldLock) error {
		first := h.ExpiresAt()
		token = h.Snapshot().Token
		if h.Fence() <= 0 {
			t.Errorf("Fence = %d", h.Fence())
		}
		stopReading := make(chan struct{})
		var wg sync.WaitGroup
		wg.Add(1)
		go func() { // reads the lock while the heartbeat updates it (-race)
			defer wg.Done()
			for {
				select {
				case <-stopReading:
					return
				default:
					_ = h.ExpiresAt()
					runtime.Gosched()
				}
			}
		}()
		defer func() { close(stopReading); wg.Wait() }()
		if d := waitArmed(t, clk); d != ttl/3 {
			t.Fatalf("first tick in %v, want %v", d, ttl/3)
		}
		for i := 1; i <= 6; i++ { // 6 × ttl/3: two TTLs
			env.pass(t, clk, ttl/3)
			if d := waitArmed(t, clk); d != ttl/3 {
				t.Fatalf("tick %d: next tick in %v, want %v", i, d, ttl/3)
			}
			if ctx.Err() != nil {
				t.Fatalf("tick %d: the handler's context ended (%v) while the lock was kept", i, context.Cause(ctx))
			}
		}
		if want := first.Add(2 * ttl); !h.ExpiresAt().Equal(want) {
			t.Errorf("ExpiresAt after 6 extends = %v, want %v", h.ExpiresAt(), want)
		}
		if got := rawString(t, env.client, "GET", "chat-sdk:lock:t"); got != token {
			t.Errorf("the lock holds %q, want the handler's token", got)
		}
		return nil
	})
	must(t, err)
	if n := rawInt(t, env.client, "EXISTS", "chat-sdk:lock:t"); n != 0 {
		t.Error("the lock was not released after the handler")
	}
	noneLeft(t, clk, "WithLock")
}

// TestWithLockForceRelease: the first extend after a force release cancels
// the handler's context, long before the lock's expiry.
func TestWithLockForceRelease(t *testing.T) {
	env, clk := newLockEnv(t)
	s := env.state
	const ttl = 3 * time.Second
	var newHolder *upstash.Lock
	errStopped := errors.New("handler stopped")
	err := s.WithLock(ctxT(t), "t", ttl, func(ctx context.Context, h *upstash.HeldLock) error {
		waitArmed(t, clk)
		must(t, s.ForceReleaseLock(ctxT(t), "t"))
		newHolder = mustAcquire(t, s, "t", time.Minute)
		clk.Advance(ttl / 3) // the next extend finds another token
		waitClosed(t, ctx.Done(), "the handler's context after a force release")
		if !errors.Is(context.Cause(ctx), upstash.ErrLockNotHeld) {
			t.Errorf("cause %v, want ErrLockNotHeld", context.Cause(ctx))
		}
		if left := h.ExpiresAt().Sub(clk.Now()); left < ttl/10 {
			t.Errorf("cancelled %v before the lock's expiry, want at least the margin %v", left, ttl/10)
		}
		return errStopped
	})
	if !errors.Is(err, errStopped) || !errors.Is(err, upstash.ErrLockNotHeld) {
		t.Fatalf("WithLock = %v, want the handler's error and ErrLockNotHeld", err)
	}
	if got := rawString(t, env.client, "GET", "chat-sdk:lock:t"); got != newHolder.Token {
		t.Errorf("lock holds %q, want the new holder's token", got)
	}
	noneLeft(t, clk, "WithLock")
}

// TestWithLockExpired: a lock the server let expire (its TTL cut short
// behind the holder's back) cancels the handler at the next extend.
func TestWithLockExpired(t *testing.T) {
	env, clk := newLockEnv(t)
	s := env.state
	const ttl = 3 * time.Second
	err := s.WithLock(ctxT(t), "t", ttl, func(ctx context.Context, h *upstash.HeldLock) error {
		waitArmed(t, clk)
		mustDo(t, env.client, "PEXPIRE", "chat-sdk:lock:t", 1)
		waitFor(t, func() bool { return rawInt(t, env.client, "EXISTS", "chat-sdk:lock:t") == 0 }, "the lock to expire")
		clk.Advance(ttl / 3)
		waitClosed(t, ctx.Done(), "the handler's context after the lock expired")
		if !errors.Is(context.Cause(ctx), upstash.ErrLockNotHeld) {
			t.Errorf("cause %v, want ErrLockNotHeld", context.Cause(ctx))
		}
		return nil
	})
	if !errors.Is(err, upstash.ErrLockNotHeld) || !strings.HasPrefix(err.Error(), "upstash: WithLock: ") {
		t.Fatalf("WithLock = %v, want an error matching ErrLockNotHeld", err)
	}
	noneLeft(t, clk, "WithLock")
}

// TestWithLockUnreachable: with every extend failing, the handler's context
// is cancelled a margin (a tenth of the TTL) before the lock could lapse,
// while the server still holds it; not before.
func TestWithLockUnreachable(t *testing.T) {
	env, clk := newLockEnv(t)
	s := env.state
	const ttl = 30 * time.Second // see TestKeepLockAliveLostBeforeLapse
	const margin = ttl / 10
	err := s.WithLock(ctxT(t), "t", ttl, func(ctx context.Context, h *upstash.HeldLock) error {
		lapse := h.ExpiresAt().Add(-margin)
		waitArmed(t, clk)
		env.srv.SetFaultRate(1, upstashtest.FaultStatus)
		defer env.srv.ClearFaults()
		var d time.Duration
		for i := 1; i <= 2; i++ {
			env.advance(t, clk, ttl/3)
			d = waitArmed(t, clk)
		}
		env.advance(t, clk, d-time.Millisecond)
		if ctx.Err() != nil {
			t.Fatalf("cancelled %v before the margin", time.Millisecond)
		}
		env.advance(t, clk, time.Millisecond)
		waitClosed(t, ctx.Done(), "the handler's context with the server unreachable")
		if !clk.Now().Equal(lapse) {
			t.Errorf("cancelled at %v, want %v (the expiry less the margin)", clk.Now(), lapse)
		}
		if !errors.Is(context.Cause(ctx), upstash.ErrLockNotHeld) {
			t.Errorf("cause %v, want ErrLockNotHeld", context.Cause(ctx))
		}
		env.srv.ClearFaults()
		if env.srv.Embedded() {
			if left := pttl(t, env.client, "chat-sdk:lock:t"); left <= 0 || left > margin {
				t.Errorf("the lock's PTTL at the cancel is %v, want within (0, %v]", left, margin)
			}
		}
		return nil
	})
	if !errors.Is(err, upstash.ErrLockNotHeld) {
		t.Fatalf("WithLock = %v, want an error matching ErrLockNotHeld", err)
	}
	// The lock could still be held when the handler stopped: it is released.
	if n := rawInt(t, env.client, "EXISTS", "chat-sdk:lock:t"); n != 0 {
		t.Error("the lock was not released")
	}
	noneLeft(t, clk, "WithLock")
}

func TestWithLockBusyPanicAndCancel(t *testing.T) {
	env, clk := newLockEnv(t)
	s := env.state
	ctx := ctxT(t)

	holder := mustAcquire(t, s, "busy", time.Minute)
	ran := false
	err := s.WithLock(ctx, "busy", time.Minute, func(context.Context, *upstash.HeldLock) error { ran = true; return nil })
	if !errors.Is(err, upstash.ErrLockBusy) || ran {
		t.Fatalf("WithLock on a held lock = %v (ran %v), want ErrLockBusy without running", err, ran)
	}
	if got := rawString(t, env.client, "GET", "chat-sdk:lock:busy"); got != holder.Token {
		t.Errorf("the holder's lock holds %q", got)
	}
	if err := s.WithLock(ctx, "x", time.Minute, nil); !errors.Is(err, upstash.ErrInvalidArgument) {
		t.Errorf("WithLock with a nil function: %v", err)
	}
	noneLeft(t, clk, "WithLock on a busy lock")

	// A panicking handler: the lock is released, the panic goes on.
	func() {
		defer func() {
			if r := recover(); r != "boom" {
				t.Errorf("recovered %v, want the handler's panic", r)
			}
		}()
		_ = s.WithLock(ctx, "p", time.Minute, func(context.Context, *upstash.HeldLock) error { panic("boom") })
	}()
	if n := rawInt(t, env.client, "EXISTS", "chat-sdk:lock:p"); n != 0 {
		t.Error("the lock outlived a panicking handler")
	}
	noneLeft(t, clk, "a panicking handler")

	// The caller cancels: the handler sees it, and the release still runs
	// (on a context detached from the cancellation).
	cctx, cancel := context.WithCancel(ctx)
	err = s.WithLock(cctx, "c", time.Minute, func(hctx context.Context, _ *upstash.HeldLock) error {
		cancel()
		waitClosed(t, hctx.Done(), "the handler's context after the caller's cancel")
		return hctx.Err()
	})
	if !errors.Is(err, context.Canceled) || errors.Is(err, upstash.ErrLockNotHeld) {
		t.Errorf("WithLock cancelled by its caller = %v, want context.Canceled only", err)
	}
	if n := rawInt(t, env.client, "EXISTS", "chat-sdk:lock:c"); n != 0 {
		t.Error("the lock outlived a cancelled WithLock")
	}
	noneLeft(t, clk, "a cancelled WithLock")
}

// ---- deadline-bounded TTLs ----

func TestTTLWithinDeadline(t *testing.T) {
	if got := upstash.TTLWithinDeadline(context.Background(), time.Hour, time.Second); got != time.Hour {
		t.Errorf("without a deadline: %v, want the ttl", got)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	before := time.Now()
	got := upstash.TTLWithinDeadline(ctx, time.Hour, time.Second)
	dl, _ := ctx.Deadline()
	if hi := dl.Sub(before) + time.Second; got > hi || got < hi-time.Since(before) {
		t.Errorf("with a deadline: %v, want the time left plus the margin, %v at most", got, hi)
	}
	if got := upstash.TTLWithinDeadline(ctx, time.Second, time.Second); got != time.Second {
		t.Errorf("a ttl shorter than the bound: %v", got)
	}
	past, cancel2 := context.WithDeadline(context.Background(), time.Now().Add(-time.Hour))
	defer cancel2()
	if got := upstash.TTLWithinDeadline(past, time.Hour, time.Second); got != time.Millisecond {
		t.Errorf("past the deadline: %v, want 1ms", got)
	}
}

func TestWithLockTTLWithinDeadline(t *testing.T) {
	env := newStateEnv(t, upstash.WithLockTTLWithinDeadline(time.Second))
	s, c := env.state, env.client
	ctx, cancel := context.WithTimeout(ctxT(t), 5*time.Second)
	defer cancel()
	lock := mustAcquireCtx(t, ctx, s, "t", time.Hour)
	wantTTLBetween(t, c, "chat-sdk:lock:t", time.Millisecond, 6*time.Second)
	if lock.ExpiresAt.After(time.Now().Add(6 * time.Second)) {
		t.Errorf("ExpiresAt %v is beyond the deadline plus the margin", lock.ExpiresAt)
	}
	ok, err := s.ExtendLock(ctx, lock, time.Hour)
	must(t, err)
	if !ok {
		t.Fatal("ExtendLock = false")
	}
	wantTTLBetween(t, c, "chat-sdk:lock:t", time.Millisecond, 6*time.Second)
	// Without a deadline, the TTL is as given.
	must(t, s.Refresh(context.Background(), lock, time.Hour))
	wantTTLBetween(t, c, "chat-sdk:lock:t", 59*time.Minute, time.Hour)
}

func mustAcquireCtx(t *testing.T, ctx context.Context, s *upstash.State, id string, ttl time.Duration) *upstash.Lock {
	t.Helper()
	lock, err := s.AcquireLock(ctx, id, ttl)
	must(t, err)
	if lock == nil {
		t.Fatalf("AcquireLock(%q) = nil", id)
	}
	return lock
}

// ---- AcquireLockWait ----

func TestAcquireLockWait(t *testing.T) {
	env, clk := newLockEnv(t)
	s := env.state
	ctx := ctxT(t)
	holder := mustAcquire(t, s, "t", time.Minute)
	type result struct {
		lock *upstash.Lock
		err  error
	}
	done := make(chan result, 1)
	go func() {
		l, err := s.AcquireLockWait(ctx, "t", time.Minute)
		done <- result{l, err}
	}()
	d := waitArmed(t, clk) // the first try found the lock busy
	env.srv.ResetStats()
	ceiling := 50 * time.Millisecond
	for i := 1; i <= 6; i++ {
		if d < 0 || d > ceiling {
			t.Fatalf("wait %d = %v, want within [0, %v]", i, d, ceiling)
		}
		clk.Advance(d)
		d = waitArmed(t, clk)
		ceiling = min(2*ceiling, time.Second)
	}
	if n := env.srv.Stats().TotalRequests; n != 6 {
		t.Errorf("%d requests for 6 waits, want one per try", n)
	}
	must(t, s.ReleaseLock(ctx, holder))
	clk.Advance(d)
	var r result
	select {
	case r = <-done:
	case <-time.After(eventWait):
		t.Fatal("AcquireLockWait did not return after the lock came free")
	}
	must(t, r.err)
	if r.lock == nil || rawString(t, env.client, "GET", "chat-sdk:lock:t") != r.lock.Token {
		t.Fatalf("AcquireLockWait = %+v, want the lock", r.lock)
	}

	// The context ends while it waits.
	cctx, cancel := context.WithCancel(ctx)
	go func() {
		l, err := s.AcquireLockWait(cctx, "t", time.Minute)
		done <- result{l, err}
	}()
	waitArmed(t, clk)
	cancel()
	select {
	case r = <-done:
	case <-time.After(eventWait):
		t.Fatal("AcquireLockWait did not return after its context ended")
	}
	if r.lock != nil || !errors.Is(r.err, upstash.ErrLockBusy) || !errors.Is(r.err, context.Canceled) {
		t.Errorf("AcquireLockWait with its context cancelled = %v, %v; want ErrLockBusy and context.Canceled", r.lock, r.err)
	}
	if n := clk.ActiveTimers(); n != 0 {
		t.Errorf("%d timers outlived AcquireLockWait", n)
	}
}
