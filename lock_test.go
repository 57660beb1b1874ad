package upstash_test

import (
	"context"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/chatstate/upstash"
	"github.com/chatstate/upstash/upstashtest"
)

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

func TestKeepLockAliveKeepsLock(t *testing.T) {
	env := newStateEnv(t)
	s := env.state
	const ttl = 300 * time.Millisecond
	lock := mustAcquire(t, s, "t", ttl)
	original := *lock
	lost, stop := s.KeepLockAlive(testCtx(t), lock, ttl)
	defer stop()

	deadline := time.Now().Add(time.Second)
	for time.Now().Before(deadline) {
		_ = lock.ExpiresAt // the caller may read its lock meanwhile (-race checks)
		time.Sleep(50 * time.Millisecond)
	}
	if closed(lost) {
		t.Fatal("lost was closed while the lock was being kept alive")
	}
	if !isHeld(t, s, "t") {
		t.Fatal("a 300 ms lock lapsed within 1 s despite KeepLockAlive")
	}
	if *lock != original {
		t.Errorf("KeepLockAlive mutated the caller's lock: %+v, was %+v", *lock, original)
	}

	stop()
	if heartbeatRunning() {
		t.Fatal("the heartbeat goroutine outlived stop()")
	}
	env.srv.ResetStats()
	time.Sleep(ttl + 200*time.Millisecond)
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
	env := newStateEnv(t)
	s := env.state
	const ttl = 300 * time.Millisecond
	lock := mustAcquire(t, s, "t", ttl)
	lost, stop := s.KeepLockAlive(testCtx(t), lock, ttl)
	defer stop()
	time.Sleep(50 * time.Millisecond)
	must(t, s.ForceReleaseLock(testCtx(t), "t"))
	newHolder := mustAcquire(t, s, "t", time.Minute)
	select {
	case <-lost:
	case <-time.After(2 * ttl):
		t.Fatal("lost was not closed within 2×ttl of a force release")
	}
	// The heartbeat exits by itself and did not touch the new holder's lock.
	waitFor(t, time.Second, func() bool { return !heartbeatRunning() }, "the heartbeat to exit after losing the lock")
	if got := rawString(t, env.client, "GET", "chat-sdk:lock:t"); got != newHolder.Token {
		t.Errorf("lock holds %q, want the new holder's token", got)
	}
	wantTTLBetween(t, env.client, "chat-sdk:lock:t", 50*time.Second, time.Minute)
}

func TestKeepLockAliveLostWhenExtendsKeepFailing(t *testing.T) {
	env := newStateEnv(t)
	s := env.state
	const ttl = 300 * time.Millisecond
	lock := mustAcquire(t, s, "t", ttl)
	lost, stop := s.KeepLockAlive(testCtx(t), lock, ttl)
	defer stop()
	env.srv.SetFaultRate(1, upstashtest.FaultStatus) // every request fails with 503
	defer env.srv.ClearFaults()
	start := time.Now()
	select {
	case <-lost:
	case <-time.After(3 * time.Second):
		t.Fatal("lost was not closed although no extend could succeed")
	}
	// Not before the lock could have lapsed: errors are retried meanwhile.
	if d := time.Since(start); d < ttl/2 {
		t.Errorf("lost closed after %v, before the TTL could lapse", d)
	}
}

func TestKeepLockAliveStopsWithContext(t *testing.T) {
	env := newStateEnv(t)
	s := env.state
	lock := mustAcquire(t, s, "t", time.Second)
	ctx, cancel := context.WithCancel(context.Background())
	lost, stop := s.KeepLockAlive(ctx, lock, time.Second)
	cancel()
	waitFor(t, time.Second, func() bool { return !heartbeatRunning() }, "the heartbeat to exit after ctx is done")
	stop()
	if closed(lost) {
		t.Error("cancelling ctx closed lost")
	}
}

func TestKeepLockAliveStopIsPrompt(t *testing.T) {
	env := newStateEnv(t)
	s := env.state
	const ttl = 3 * time.Second
	lock := mustAcquire(t, s, "t", ttl)
	lost, stop := s.KeepLockAlive(testCtx(t), lock, ttl)
	env.srv.SetLatency(5 * time.Second) // the first extend will hang
	defer env.srv.SetLatency(0)
	time.Sleep(ttl/3 + 100*time.Millisecond) // the extend is in flight
	start := time.Now()
	stop()
	if d := time.Since(start); d > 500*time.Millisecond {
		t.Errorf("stop() took %v with an extend in flight, want it to cancel the request", d)
	}
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

func waitFor(t *testing.T, limit time.Duration, cond func() bool, what string) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", limit, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestKeepLockAliveShortRemainingTime(t *testing.T) {
	env := newStateEnv(t)
	s := env.state
	// The lock has 200 ms left but the heartbeat's ttl is 3 s: the first
	// extend must come before the lock lapses, not after ttl/3 = 1 s.
	lock := mustAcquire(t, s, "t", 200*time.Millisecond)
	lost, stop := s.KeepLockAlive(testCtx(t), lock, 3*time.Second)
	defer stop()
	time.Sleep(500 * time.Millisecond)
	if closed(lost) {
		t.Fatal("lost was closed")
	}
	if !isHeld(t, s, "t") {
		t.Fatal("the lock lapsed before the first extend")
	}
	wantTTLBetween(t, env.client, "chat-sdk:lock:t", 2*time.Second, 3*time.Second)
}
