package upstash

import (
	"context"
	"crypto/rand"
	_ "embed"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"
)

// Lock is a held per-thread lock, as the Chat SDK's Lock type. Its JSON form
// is exactly the TypeScript one: {"threadId":…,"token":…,"expiresAt":<Unix ms>}.
// Locks come from AcquireLock (or from JSON); a Lock with an empty ThreadID
// or Token, the zero value included, is refused by every method.
type Lock struct {
	// ThreadID is the lock key the lock was taken for (a thread id, or a
	// channel id under the channel lock scope); JSON "threadId".
	ThreadID string `json:"-"`
	// Token identifies this holder; JSON "token". State tokens are "go_"
	// followed by 32 hex digits from crypto/rand.
	Token string `json:"-"`
	// ExpiresAt is when the lock lapses unless extended, by the local clock;
	// JSON "expiresAt", Unix ms. It is computed from the time just before the
	// request was sent, so it is never later than the server's expiry. The
	// zero time (JSON 0) means unknown: KeepLockAlive then assumes a full
	// ttl is left.
	ExpiresAt time.Time `json:"-"`
}

type lockJSON struct {
	ThreadID  string     `json:"threadId"`
	Token     string     `json:"token"`
	ExpiresAt unixMillis `json:"expiresAt"`
}

// MarshalJSON encodes the lock as {"threadId":…,"token":…,"expiresAt":…},
// the time as integer Unix milliseconds (a zero time as 0).
func (l Lock) MarshalJSON() ([]byte, error) {
	return marshalCompat(lockJSON{ThreadID: l.ThreadID, Token: l.Token, ExpiresAt: unixMillis(l.ExpiresAt)})
}

// UnmarshalJSON decodes the TypeScript form.
func (l *Lock) UnmarshalJSON(data []byte) error {
	var w lockJSON
	if err := json.Unmarshal(data, &w); err != nil {
		return err
	}
	*l = Lock{ThreadID: w.ThreadID, Token: w.Token, ExpiresAt: time.Time(w.ExpiresAt)}
	return nil
}

// tokenPrefix marks tokens made by this library, as state-redis uses
// "redis_" and state-ioredis "ioredis_".
const tokenPrefix = "go_"

func newToken() (string, error) {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("lock token: %w", err)
	}
	return tokenPrefix + hex.EncodeToString(b[:]), nil
}

// checkLock refuses a nil lock or one without a thread id or token.
func checkLock(lock *Lock) error {
	switch {
	case lock == nil:
		return fmt.Errorf("%w: nil lock", ErrInvalidArgument)
	case lock.ThreadID == "":
		return fmt.Errorf("%w: lock has an empty thread id", ErrInvalidArgument)
	case lock.Token == "":
		return fmt.Errorf("%w: lock has an empty token", ErrInvalidArgument)
	}
	return nil
}

// msFloor truncates t to whole milliseconds, so a lock survives a JSON round
// trip unchanged and ExpiresAt never rounds up past the server's expiry.
func msFloor(t time.Time) time.Time { return time.UnixMilli(t.UnixMilli()) }

// AcquireLock takes the lock of threadID with SET {p}:lock:{threadID} token
// NX PX ttl, and returns it, or (nil, nil) when another holder has it. The
// token is "go_" plus 16 random bytes in hex. ExpiresAt is the local time
// just before the request plus ttl, so it is never later than the server's
// expiry. There is no waiting or retrying for a busy lock.
//
// ttl must be positive: a ttl ≤ 0 is refused with ErrInvalidArgument
// (state-redis fails too, since Redis refuses PX 0).
//
// SET NX is not safe to resend, so if its reply is lost the outcome is
// resolved by reading the key back (GET, which is retried and carries the
// read-your-writes token): our token means we hold the lock; another token
// or no key means we do not, and (nil, nil) is returned after a best-effort
// token-checked delete (in case the read came from a lagging replica and
// our SET did land). If the read fails too, the error matches
// ErrOutcomeUnknown; the lock may then be held under a token nobody knows
// until ttl passes.
func (s *State) AcquireLock(ctx context.Context, threadID string, ttl time.Duration) (*Lock, error) {
	lock, err := s.acquireLock(ctx, threadID, ttl)
	return lock, opError("AcquireLock", err)
}

func (s *State) acquireLock(ctx context.Context, threadID string, ttl time.Duration) (*Lock, error) {
	if err := checkID("thread id", threadID); err != nil {
		return nil, err
	}
	if ttl <= 0 {
		return nil, fmt.Errorf("%w: thread %q: TTL must be positive, got %v", ErrInvalidArgument, threadID, ttl)
	}
	token, err := newToken()
	if err != nil {
		return nil, err
	}
	rkey := s.lockKey(threadID)
	before := s.now()
	lock := &Lock{ThreadID: threadID, Token: token, ExpiresAt: msFloor(before.Add(ttl))}
	v, err := s.c.Run(ctx, Cmd("SET", rkey, token, "NX", "PX", durationMillis(ttl)))
	if errors.Is(err, ErrOutcomeUnknown) {
		return s.resolveAcquire(ctx, lock, err)
	}
	if err != nil {
		return nil, err
	}
	ok, err := v.Bool()
	if err != nil || !ok {
		return nil, err
	}
	return lock, nil
}

// resolveAcquire settles an acquire whose SET NX reply was lost (setErr) by
// reading the lock back. Our token means the SET landed. Anything else
// means we do not hold the lock; because a read served by a lagging replica
// could miss a SET that did land, a token-checked delete (best effort, on
// the primary like every script) then makes sure no lock is left behind
// under a token nobody knows.
func (s *State) resolveAcquire(ctx context.Context, lock *Lock, setErr error) (*Lock, error) {
	rkey := s.lockKey(lock.ThreadID)
	got, err := s.c.Run(ctx, Cmd("GET", rkey))
	if err != nil {
		return nil, fmt.Errorf("%w (reading the lock back failed too: %w)", unprefixed{setErr}, unprefixed{err})
	}
	if b, berr := got.Bytes(); berr == nil && string(b) == lock.Token {
		return lock, nil
	}
	_, _ = releaseScript.Run(ctx, s.c, []string{rkey}, lock.Token)
	return nil, nil
}

//go:embed release.lua
var releaseSource string

var releaseScript = NewScript(releaseSource).Idempotent()

// ReleaseLock deletes the lock only if it still holds lock.Token (one
// compare-and-delete script, retried after a lost reply since a second run
// changes nothing). A lock that expired, was force-released or is held by
// someone else is left alone and nil is returned, as in state-redis. A nil
// lock or one without ThreadID or Token is refused with ErrInvalidArgument.
func (s *State) ReleaseLock(ctx context.Context, lock *Lock) error {
	if err := checkLock(lock); err != nil {
		return opError("ReleaseLock", err)
	}
	_, err := releaseScript.Run(ctx, s.c, []string{s.lockKey(lock.ThreadID)}, lock.Token)
	return opError("ReleaseLock", err)
}

//go:embed extend.lua
var extendSource string

var extendScript = NewScript(extendSource).Idempotent()

// ExtendLock sets the lock's TTL to ttl from now (not added to what is
// left) if it still holds lock.Token, with one compare-and-PEXPIRE script,
// and reports whether it did. On true it sets lock.ExpiresAt to the local
// time just before the request plus ttl (state-redis leaves expiresAt
// alone). It cannot revive a lock that has expired: that gives false.
//
// ttl must be positive: a ttl ≤ 0 is refused with ErrInvalidArgument
// (in state-redis, PEXPIRE 0 deletes the lock yet reports true). The script
// is retried after a lost reply, since a second run has the same effect.
func (s *State) ExtendLock(ctx context.Context, lock *Lock, ttl time.Duration) (bool, error) {
	ok, err := s.extendLock(ctx, lock, ttl)
	return ok, opError("ExtendLock", err)
}

func (s *State) extendLock(ctx context.Context, lock *Lock, ttl time.Duration) (bool, error) {
	if err := checkLock(lock); err != nil {
		return false, err
	}
	if ttl <= 0 {
		return false, fmt.Errorf("%w: thread %q: TTL must be positive, got %v", ErrInvalidArgument, lock.ThreadID, ttl)
	}
	before := s.now()
	v, err := extendScript.Run(ctx, s.c, []string{s.lockKey(lock.ThreadID)}, lock.Token, durationMillis(ttl))
	if err != nil {
		return false, err
	}
	n, err := v.Int64()
	if err != nil || n != 1 {
		return false, err
	}
	lock.ExpiresAt = msFloor(before.Add(ttl))
	return true, nil
}

// ForceReleaseLock deletes the lock of threadID whoever holds it (DEL,
// retried after a lost reply). The old holder keeps running; its later
// ReleaseLock does nothing, because its token no longer matches.
func (s *State) ForceReleaseLock(ctx context.Context, threadID string) error {
	if err := checkID("thread id", threadID); err != nil {
		return opError("ForceReleaseLock", err)
	}
	_, err := s.c.Run(ctx, Cmd("DEL", s.lockKey(threadID)).Idempotent())
	return opError("ForceReleaseLock", err)
}

// KeepLockAlive extends lock to ttl every ttl/3 for as long as a handler
// runs: a thin, optional heartbeat (the Chat SDK core does the same with 30 s
// every 10 s). It starts one goroutine, which stops when stop is called or
// ctx is done, and never outlives them: stop cancels any extend in flight
// and waits for the goroutine to return. Call stop (it is idempotent) before
// releasing the lock, typically with defer.
//
// lost is closed, and the goroutine exits, when the lock is known to be
// gone: an extend reported that the token no longer matches (expired,
// force-released, taken over), or more than ttl of wall-clock time passed
// since the last successful extend (the process was frozen, or the network
// failed for that long). Network errors are otherwise retried at the next
// tick. lost is never closed because of stop or ctx. The handler decides
// what to do about a lost lock; KeepLockAlive aborts nothing.
//
// The heartbeat extends a private copy of the lock: the caller's *Lock is
// not mutated (its ExpiresAt stays as it was), so reading it concurrently is
// not a data race. A nil or incomplete lock, or ttl ≤ 0, gives a lost
// channel that is already closed.
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
		s.heartbeat(ctx, &own, ttl, lostCh)
	}()
	var once sync.Once
	return lostCh, func() {
		once.Do(cancel)
		<-done
	}
}

func (s *State) heartbeat(ctx context.Context, lock *Lock, ttl time.Duration, lost chan struct{}) {
	clk := s.clk()
	interval := max(ttl/3, time.Millisecond)
	// The last moment the lock is known to be held until, by the wall clock.
	held := clk.now().Add(ttl)
	if !lock.ExpiresAt.IsZero() && lock.ExpiresAt.Before(held) {
		held = lock.ExpiresAt
	}
	// The first extend comes early enough for a lock that has less than ttl
	// left.
	timer := clk.newTimer(min(interval, max(held.Sub(clk.now())/2, time.Millisecond)))
	defer timer.stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-timer.c():
		}
		now := clk.now()
		if !now.Before(held) {
			close(lost)
			return
		}
		// An extend that cannot finish before the lock lapses is useless.
		callCtx, cancel := context.WithTimeout(ctx, held.Sub(now))
		ok, err := s.extendLock(callCtx, lock, ttl)
		cancel()
		switch {
		case ctx.Err() != nil:
			return
		case err == nil && !ok:
			close(lost)
			return
		case err == nil:
			held = lock.ExpiresAt
		}
		// After an error, try again at the next tick while time is left.
		timer.reset(min(interval, max(held.Sub(clk.now()), 0)))
	}
}

// clock is the time source of the lock code. NewState gives every State
// the wall clock; this package's tests give theirs a manual clock, to move
// KeepLockAlive's heartbeat tick by tick instead of waiting for it.
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
