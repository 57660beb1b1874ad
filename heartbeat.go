package upstash

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"
)

// Holding a lock while work runs: KeepLockAlive, WithLock, AcquireLockWait,
// and the clock they run on.

// KeepLockAlive extends lock to ttl every ttl/3 for as long as a handler
// runs: a thin, optional heartbeat (the Chat SDK core does the same with
// 30 s every 10 s). It starts one goroutine, which stops when stop is called
// or ctx is done, and never outlives them: stop cancels any extend in
// flight and waits for the goroutine to return. Call stop (it is
// idempotent) before releasing the lock, typically with defer. WithLock
// does all of this and also cancels the handler's context.
//
// lost is closed, and the goroutine exits, as soon as the lock is known to
// be gone (an extend found another token, or none: expired, force-released,
// taken over), or a safety margin before it could lapse while no extend has
// succeeded (the network failed, or the process was frozen): the margin is
// max(a tenth of the TTL last granted, the last extend's round trip), so
// lost is closed while the lock is still held. Failed extends are
// otherwise tried again at the next tick. lost is never closed because of
// stop or ctx. The handler decides what to do about a lost lock;
// KeepLockAlive aborts nothing.
//
// The heartbeat extends a private copy of the lock, so the caller may read
// its *Lock while it runs; stop, once the goroutine has returned, copies
// the last expiry the heartbeat obtained into lock.ExpiresAt. A nil or
// incomplete lock, or ttl ≤ 0, gives a lost channel that is already closed.
// With WithLockTTLWithinDeadline, each extend is bounded by ctx's deadline.
func (s *State) KeepLockAlive(ctx context.Context, lock *Lock, ttl time.Duration) (lost <-chan struct{}, stop func()) {
	lostCh := make(chan struct{})
	if checkLock(lock) != nil || ttl <= 0 {
		close(lostCh)
		return lostCh, func() {}
	}
	own := *lock
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.heartbeat(ctx, &own, ttl, 0, nil, func(error, bool) { close(lostCh) })
	}()
	var once sync.Once
	return lostCh, func() {
		once.Do(func() {
			cancel()
			<-done
			lock.ExpiresAt = own.ExpiresAt
		})
	}
}

// heartbeat extends lock to ttl (bounded as lockTTL says) every ttl/3 until
// ctx ends or the lock is lost; it updates lock.ExpiresAt after each
// successful extend and then calls onExtend, if set, with a copy. rtt is the
// round trip of the acquire, if known. onLost is called once, with the
// cause (matching ErrLockNotHeld) and whether the lock is known to be gone
// (true) or only could lapse (false), and heartbeat then returns.
func (s *State) heartbeat(ctx context.Context, lock *Lock, ttl, rtt time.Duration, onExtend func(Lock), onLost func(cause error, gone bool)) {
	clk := s.clk()
	interval := max(ttl/3, time.Millisecond)
	now := clk.now()
	// held is the last moment the lock is known to be held until, by the
	// local clock; grant is the TTL that moment came from.
	held := now.Add(ttl)
	if !lock.ExpiresAt.IsZero() && lock.ExpiresAt.Before(held) {
		held = lock.ExpiresAt
	}
	grant := held.Sub(now)
	// The first extend comes early enough for a lock that has less than
	// ttl left.
	next := now.Add(min(interval, max(grant/2, time.Millisecond)))
	lapse := func() time.Time { return held.Add(-max(grant/10, rtt)) }
	wake := func(now time.Time) time.Duration {
		at := next
		if l := lapse(); l.Before(at) {
			at = l
		}
		return max(at.Sub(now), 0)
	}
	timer := clk.newTimer(wake(now))
	defer timer.stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-timer.c():
		}
		now := clk.now()
		if l := lapse(); !now.Before(l) {
			onLost(fmt.Errorf("%w: thread %q: no extend succeeded, and the lock could lapse %v from now", ErrLockNotHeld, lock.ThreadID, held.Sub(now)), false)
			return
		}
		if !now.Before(next) {
			// An extend that cannot finish before the lock could lapse is
			// useless.
			callCtx, cancel := context.WithTimeout(ctx, lapse().Sub(now))
			t := s.lockTTL(ctx, ttl)
			ok, err := s.extendLock(callCtx, lock, t)
			cancel()
			after := clk.now()
			switch {
			case ctx.Err() != nil:
				return
			case err == nil && !ok:
				onLost(fmt.Errorf("%w: thread %q: an extend found another token or none", ErrLockNotHeld, lock.ThreadID), true)
				return
			case err == nil:
				held, grant, rtt = lock.ExpiresAt, t, after.Sub(now)
				if onExtend != nil {
					onExtend(*lock)
				}
			}
			// After an error, try again at the next tick while time is left.
			next = after.Add(interval)
		}
		timer.reset(wake(clk.now()))
	}
}

// HeldLock is the lock WithLock holds while its function runs. Its expiry
// follows the heartbeat's extends; its methods are safe to call from any
// goroutine.
type HeldLock struct {
	mu   sync.Mutex
	lock Lock
}

// Snapshot returns a copy of the lock as it is now: its ExpiresAt is the
// one of the last successful extend.
func (h *HeldLock) Snapshot() Lock {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.lock
}

// ExpiresAt returns when the lock lapses unless extended again, by the
// local clock (never later than the server's expiry).
func (h *HeldLock) ExpiresAt() time.Time { return h.Snapshot().ExpiresAt }

// Fence returns the lock's fencing token (see Lock.Fence).
func (h *HeldLock) Fence() int64 { return h.Snapshot().Fence }

func (h *HeldLock) set(l Lock) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.lock = l
}

// releaseTimeout bounds WithLock's release, which runs on a context
// detached from the caller's cancellation.
const releaseTimeout = 10 * time.Second

// WithLock takes the lock of threadID for ttl, runs fn while a heartbeat
// extends it every ttl/3, and releases it when fn returns (or panics). If
// another holder has the lock it returns an error matching ErrLockBusy at
// once, without running fn (see AcquireLockWait to wait instead).
//
// fn's context is cancelled, with a cause matching ErrLockNotHeld
// (context.Cause), as soon as an extend finds the lock gone (expired,
// force-released, taken over), and a safety margin before the lock could
// lapse while no extend succeeds (the server is unreachable, the process
// was frozen): the margin is max(a tenth of the TTL last granted, the last
// round trip), so fn is told to stop while the lock is still held. fn
// should check its context before every write that needs the lock (and
// pass the lock's Fence along where the store can check it). The
// HeldLock fn receives keeps the current expiry.
//
// WithLock returns fn's error, joined with an error matching
// ErrLockNotHeld if the lock was lost while fn ran or had lapsed when it
// was released, and with the release's own error if it failed. The release
// runs on a context detached from ctx's cancellation (at most 10 s), so a
// cancelled ctx still frees the lock. No goroutine or timer outlives the
// call. With WithLockTTLWithinDeadline, the acquire and every extend are
// bounded by ctx's deadline.
func (s *State) WithLock(ctx context.Context, threadID string, ttl time.Duration, fn func(ctx context.Context, lock *HeldLock) error) (err error) {
	if fn == nil {
		return opError("WithLock", fmt.Errorf("%w: nil function", ErrInvalidArgument))
	}
	start := s.now()
	lock, err := s.acquireLock(ctx, threadID, s.lockTTL(ctx, ttl))
	if err != nil {
		return opError("WithLock", err)
	}
	if lock == nil {
		return opError("WithLock", fmt.Errorf("%w: thread %q", ErrLockBusy, threadID))
	}
	rtt := s.now().Sub(start)
	held := &HeldLock{lock: *lock}
	fnCtx, cancelFn := context.WithCancelCause(ctx)
	beatCtx, stopBeat := context.WithCancel(ctx)
	// Written by the heartbeat goroutine, read once it has returned.
	var lost error
	var gone bool
	done := make(chan struct{})
	go func() {
		defer close(done)
		own := *lock
		s.heartbeat(beatCtx, &own, ttl, rtt, held.set, func(cause error, known bool) {
			lost, gone = cause, known
			cancelFn(cause)
		})
	}()
	defer func() {
		stopBeat()
		<-done
		cancelFn(context.Canceled)
		lockErr := lost
		if !gone {
			final := held.Snapshot()
			rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), releaseTimeout)
			ok, rerr := s.release(rctx, &final)
			cancel()
			switch {
			case rerr != nil:
				lockErr = errors.Join(lockErr, fmt.Errorf("release: %w", unprefixed{rerr}))
			case !ok && lockErr == nil:
				lockErr = fmt.Errorf("%w: thread %q: the lock had lapsed when it was released", ErrLockNotHeld, threadID)
			}
		}
		if lockErr != nil {
			err = errors.Join(err, opError("WithLock", lockErr))
		}
	}()
	return fn(fnCtx, held)
}

// Backoff of AcquireLockWait: waits drawn uniformly from [0, c], c
// doubling from lockWaitMin to lockWaitMax.
const (
	lockWaitMin = 50 * time.Millisecond
	lockWaitMax = time.Second
)

// AcquireLockWait is AcquireLock that waits for a busy lock: it tries
// again after a random wait (exponential backoff with full jitter: drawn
// from [0, c], with c doubling from 50 ms to 1 s) until it gets the lock or
// ctx ends. When ctx ends first, the error matches ErrLockBusy and ctx's
// error (context.DeadlineExceeded or context.Canceled). Any other error
// stops it at once.
//
// Cost: each try is one request (Upstash bills per request). The mean waits
// are 25, 50, 100, 200, 400 ms and then 500 ms, so a lock held for a
// long time costs about 6 requests in the first second of waiting and 2 per
// second after that, per waiting caller. Give ctx a deadline.
func (s *State) AcquireLockWait(ctx context.Context, threadID string, ttl time.Duration) (*Lock, error) {
	clk := s.clk()
	for n := 0; ; n++ {
		lock, err := s.acquireLock(ctx, threadID, s.lockTTL(ctx, ttl))
		if err != nil || lock != nil {
			return lock, opError("AcquireLockWait", err)
		}
		ceiling := min(lockWaitMax, lockWaitMin<<min(n, 10))
		t := clk.newTimer(rand.N(ceiling + 1))
		select {
		case <-ctx.Done():
			t.stop()
			return nil, opError("AcquireLockWait", fmt.Errorf("%w: thread %q: %w", ErrLockBusy, threadID, context.Cause(ctx)))
		case <-t.c():
		}
	}
}

// clock is the time source of the lock and queue code (lock expiry times,
// the heartbeat's ticks, AcquireLockWait's waits, Dequeue's "now"). NewState
// gives every State the wall clock; this package's tests give theirs a
// manual clock, to move the heartbeat tick by tick instead of waiting for
// it.
type clock interface {
	// now returns the current wall-clock time, without a monotonic reading.
	now() time.Time
	// newTimer starts a timer that fires once, d from now.
	newTimer(d time.Duration) clockTimer
}

// clockTimer is a timer of a clock, as time.Timer.
type clockTimer interface {
	// c delivers the time when the timer fires.
	c() <-chan time.Time
	// reset restarts a stopped or fired (and drained) timer, to fire d from
	// now.
	reset(d time.Duration)
	// stop stops the timer.
	stop()
}

// wallClock is the clock of time.Now and time.Timer.
type wallClock struct{}

func (wallClock) now() time.Time { return wallNow() }

func (wallClock) newTimer(d time.Duration) clockTimer { return wallTimer{time.NewTimer(d)} }

type wallTimer struct{ t *time.Timer }

func (w wallTimer) c() <-chan time.Time { return w.t.C }

func (w wallTimer) reset(d time.Duration) { w.t.Reset(d) }

func (w wallTimer) stop() { w.t.Stop() }

// clk returns the State's clock (the wall clock for a State not made by
// NewState).
func (s *State) clk() clock {
	if s.clock == nil {
		return wallClock{}
	}
	return s.clock
}

// now is the current time by the State's clock.
func (s *State) now() time.Time { return s.clk().now() }
