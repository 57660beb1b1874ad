package upstash_test

import (
	"encoding/json"
	"errors"
	"regexp"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/chatstate/upstash"
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
	lock, err := s.AcquireLock(ctxT(t), id, ttl)
	must(t, err)
	if lock == nil {
		t.Fatalf("AcquireLock(%q) = nil", id)
	}
	return lock
}

func isHeld(t *testing.T, s *upstash.State, id string) bool {
	t.Helper()
	lock, err := s.AcquireLock(ctxT(t), id, time.Minute)
	must(t, err)
	if lock != nil {
		must(t, s.ReleaseLock(ctxT(t), lock))
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

// ---- locks: layout, lost replies, JSON ----

func TestStateLayoutLock(t *testing.T) {
	env := newStateEnv(t)
	ctx, c, s := ctxT(t), env.client, env.state
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
	// ExpiresAt is never later than the server's expiry, which is at most
	// the PTTL after the reply came (read the clock after the PTTL); the
	// embedded backend may end a script's TTL up to scriptTTLEarly sooner.
	left := pttl(t, c, key)
	if serverExpiry := time.Now().Add(left); lock.ExpiresAt.After(serverExpiry.Add(time.Millisecond + scriptTTLEarly)) {
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
	mustDo(t, c, "SET", "chat-sdk:lock:ts", "redis_1712345678901_abc123", "PX", 30000)
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

// TestAcquireLockRepeats: the token is the acquire's operation id. A retry
// after a lost reply finds its own token and reports the lock held, with
// the fence it got; (nil, nil) means another token is in the key, and only
// that.
func TestAcquireLockRepeats(t *testing.T) {
	env := newStateEnv(t)
	ctx, c, s := ctxT(t), env.client, env.state
	warmScripts(t, s)
	must(t, env.srv.FlushAll())
	env.srv.DropResponseNext(1)
	lock, err := s.AcquireLock(ctx, "t", time.Minute)
	must(t, err)
	if lock == nil {
		t.Fatal("AcquireLock after a lost reply = nil; the first attempt took the lock")
	}
	if got := rawString(t, c, "GET", "chat-sdk:lock:t"); got != lock.Token {
		t.Errorf("lock holds %q, want our token %q", got, lock.Token)
	}
	if got := rawString(t, c, "GET", "chat-sdk:fence:t"); got != itoa(lock.Fence) {
		t.Errorf("fence key holds %s, want the fence the retry returned, %d", got, lock.Fence)
	}
	// Held by someone else, with a lost reply or a reset or a 503: busy.
	for _, fk := range faultKinds {
		fk.inject(env.srv)
		other, err := s.AcquireLock(ctx, "t", time.Minute)
		if err != nil || other != nil {
			t.Fatalf("%s: AcquireLock of a held lock = %v, %v; want nil, nil", fk.name, other, err)
		}
	}
	if got := rawString(t, c, "GET", "chat-sdk:lock:t"); got != lock.Token {
		t.Errorf("the holder's lock holds %q", got)
	}
	// A free lock is never reported busy, whatever failed first.
	for i, fk := range faultKinds {
		id := "free" + itoa(int64(i))
		fk.inject(env.srv)
		l, err := s.AcquireLock(ctx, id, time.Minute)
		if err != nil || l == nil {
			t.Errorf("%s: AcquireLock of a free lock = %v, %v; want the lock", fk.name, l, err)
		}
	}
}

func TestLockFence(t *testing.T) {
	env := newStateEnv(t)
	ctx, c, s := ctxT(t), env.client, env.state
	a := mustAcquire(t, s, "t", time.Minute)
	if a.Fence <= 0 {
		t.Fatalf("Fence = %d", a.Fence)
	}
	// The fence follows the server's clock in microseconds.
	serverNow := func() int64 {
		parts, err := mustDo(t, c, "TIME").Strings()
		must(t, err)
		sec, _ := json.Number(parts[0]).Int64()
		usec, _ := json.Number(parts[1]).Int64()
		return sec*1e6 + usec
	}
	if now := serverNow(); a.Fence > now || a.Fence < now-int64(time.Minute/time.Microsecond) {
		t.Errorf("Fence %d is not the server's time in µs (now %d)", a.Fence, now)
	}
	// The counter lives as long as the lock, and moves with it.
	if lt, ft := pttl(t, c, "chat-sdk:lock:t"), pttl(t, c, "chat-sdk:fence:t"); ft < lt-time.Second || ft > lt {
		t.Errorf("fence PTTL %v, lock PTTL %v: want the same", ft, lt)
	}
	must(t, s.Refresh(ctx, a, 2*time.Minute))
	wantTTLBetween(t, c, "chat-sdk:fence:t", 119*time.Second, 2*time.Minute)

	// Strictly increasing: after a release, a force release, a TypeScript
	// holder, and a counter far ahead of the clock.
	last := a.Fence
	next := func(what string) *upstash.Lock {
		t.Helper()
		l := mustAcquire(t, s, "t", time.Minute)
		if l.Fence <= last {
			t.Errorf("%s: fence %d after %d, want larger", what, l.Fence, last)
		}
		last = l.Fence
		return l
	}
	must(t, s.Unlock(ctx, a))
	b := next("after a release")
	must(t, s.ForceReleaseLock(ctx, "t"))
	_ = next("after a force release")
	must(t, s.ForceReleaseLock(ctx, "t"))
	mustDo(t, c, "SET", "chat-sdk:lock:t", "redis_1_ts", "PX", 100)
	waitFor(t, func() bool { return rawInt(t, c, "EXISTS", "chat-sdk:lock:t") == 0 }, "the TypeScript lock to expire")
	_ = next("after a TypeScript holder")
	must(t, s.ForceReleaseLock(ctx, "t"))
	ahead := serverNow() + 3600e6
	mustDo(t, c, "SET", "chat-sdk:fence:t", itoa(ahead), "PX", 60000)
	if l := next("with the counter ahead of the clock"); l.Fence != ahead+1 {
		t.Errorf("fence %d, want the counter + 1 = %d", l.Fence, ahead+1)
	}
	// After the lock and the counter expired: the clock alone still gives
	// a larger number.
	must(t, s.ForceReleaseLock(ctx, "t"))
	mustDo(t, c, "DEL", "chat-sdk:fence:t")
	short := mustAcquire(t, s, "u", 50*time.Millisecond)
	waitFor(t, func() bool {
		return rawInt(t, c, "EXISTS", "chat-sdk:lock:u") == 0 && rawInt(t, c, "EXISTS", "chat-sdk:fence:u") == 0
	}, "the lock and its counter to expire")
	if l := mustAcquire(t, s, "u", time.Minute); l.Fence <= short.Fence {
		t.Errorf("fence %d after expiry, want more than %d", l.Fence, short.Fence)
	}
	// Fence is Go's own: not in the JSON form.
	if data, err := json.Marshal(b); err != nil || strings.Contains(string(data), "ence") {
		t.Errorf("json.Marshal(lock) = %s, %v", data, err)
	}
}

// TestUnlockAndRefresh: the honest release and extend tell "done" from "not
// held any more"; ReleaseLock and ExtendLock keep the TypeScript contract.
func TestUnlockAndRefresh(t *testing.T) {
	env := newStateEnv(t)
	ctx, s := ctxT(t), env.state
	lock := mustAcquire(t, s, "t", time.Minute)
	before := time.Now()
	must(t, s.Refresh(ctx, lock, 2*time.Minute))
	if lock.ExpiresAt.Before(before.Add(2 * time.Minute).Add(-time.Millisecond)) {
		t.Errorf("Refresh left ExpiresAt at %v", lock.ExpiresAt)
	}
	must(t, s.Unlock(ctx, lock))
	err := s.Unlock(ctx, lock)
	if !errors.Is(err, upstash.ErrLockNotHeld) || !strings.HasPrefix(err.Error(), "upstash: Unlock: ") {
		t.Errorf("a second Unlock: %v, want ErrLockNotHeld", err)
	}
	must(t, s.ReleaseLock(ctx, lock)) // the TypeScript contract: silent
	err = s.Refresh(ctx, lock, time.Minute)
	if !errors.Is(err, upstash.ErrLockNotHeld) || !strings.HasPrefix(err.Error(), "upstash: Refresh: ") {
		t.Errorf("Refresh of a released lock: %v, want ErrLockNotHeld", err)
	}
	if ok, err := s.ExtendLock(ctx, lock, time.Minute); ok || err != nil {
		t.Errorf("ExtendLock of a released lock = %v, %v; want false, nil", ok, err)
	}
	// Force-released and taken over.
	old := mustAcquire(t, s, "u", time.Minute)
	must(t, s.ForceReleaseLock(ctx, "u"))
	mustAcquire(t, s, "u", time.Minute)
	if err := s.Refresh(ctx, old, time.Minute); !errors.Is(err, upstash.ErrLockNotHeld) {
		t.Errorf("Refresh of a taken-over lock: %v", err)
	}
	if err := s.Unlock(ctx, old); !errors.Is(err, upstash.ErrLockNotHeld) {
		t.Errorf("Unlock of a taken-over lock: %v", err)
	}
	if !isHeld(t, s, "u") {
		t.Error("the stale Unlock freed the new holder's lock")
	}
	for name, err := range map[string]error{
		"Unlock":  s.Unlock(ctx, nil),
		"Refresh": s.Refresh(ctx, &upstash.Lock{ThreadID: "t", Token: "x"}, 0),
	} {
		if !errors.Is(err, upstash.ErrInvalidArgument) {
			t.Errorf("%s with bad input: %v", name, err)
		}
	}
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
