package upstash

import (
	"context"
	"crypto/rand"
	_ "embed"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"
)

// Lock is a held per-thread lock, as the Chat SDK's Lock type. Its JSON form
// is exactly the TypeScript one: {"threadId":…,"token":…,"expiresAt":<Unix ms>}
// (Fence, which TypeScript does not have, is left out).
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
	// Fence is the fencing token of this acquire: larger than the Fence of
	// every earlier acquire of the same ThreadID by this library, also after
	// the lock expired (see AcquireLock). Pass it along with writes to a
	// store that can refuse a write carrying a smaller fence than one it has
	// seen; a holder that lost its lock without noticing is then refused.
	// It is 0 for a lock that did not come from AcquireLock, and it is not
	// part of the JSON form.
	Fence int64 `json:"-"`
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

// UnmarshalJSON decodes the TypeScript form. Fence is set to 0.
func (l *Lock) UnmarshalJSON(data []byte) error {
	var w lockJSON
	if err := json.Unmarshal(data, &w); err != nil {
		return err
	}
	*l = Lock{ThreadID: w.ThreadID, Token: w.Token, ExpiresAt: time.Time(w.ExpiresAt)}
	return nil
}

// Sentinels of the lock operations.
var (
	// ErrLockNotHeld reports a lock its caller no longer holds: it expired,
	// was released or force-released, or another holder took it over. Unlock,
	// Refresh and WithLock return errors that match it; ReleaseLock and
	// ExtendLock keep the TypeScript contract (nil, false) instead.
	ErrLockNotHeld = errors.New("upstash: lock not held (expired, released or taken over)")

	// ErrLockBusy reports a lock another holder has: WithLock returns an
	// error matching it, and AcquireLockWait when the context ends before
	// the lock comes free.
	ErrLockBusy = errors.New("upstash: lock held by another holder")
)

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

// checkTTL refuses a lock TTL that is not positive.
func checkTTL(threadID string, ttl time.Duration) error {
	if ttl <= 0 {
		return fmt.Errorf("%w: thread %q: TTL must be positive, got %v", ErrInvalidArgument, threadID, ttl)
	}
	return nil
}

// msFloor truncates t to whole milliseconds, so a lock survives a JSON round
// trip unchanged and ExpiresAt never rounds up past the server's expiry.
func msFloor(t time.Time) time.Time { return time.UnixMilli(t.UnixMilli()) }

// TTLWithinDeadline returns ttl, shortened when ctx has a deadline to the
// time left until it plus margin (but never below a millisecond). Give a
// lock this TTL (or use the State option WithLockTTLWithinDeadline) so that
// a function killed at its deadline leaves a lock that lapses margin after
// the deadline rather than a full TTL later; margin covers the clock skew
// between this process and the server, a few hundred milliseconds is
// plenty. It works with any StateAdapter.
func TTLWithinDeadline(ctx context.Context, ttl, margin time.Duration) time.Duration {
	dl, ok := ctx.Deadline()
	if !ok {
		return ttl
	}
	if b := time.Until(dl) + margin; b < ttl {
		return max(b, time.Millisecond)
	}
	return ttl
}

// lockTTL is ttl as the State applies it to a call with ctx: bounded by
// TTLWithinDeadline when the State was made WithLockTTLWithinDeadline. A
// ttl that is not positive is returned as is, to be refused.
func (s *State) lockTTL(ctx context.Context, ttl time.Duration) time.Duration {
	if !s.boundLocks || ttl <= 0 {
		return ttl
	}
	return TTLWithinDeadline(ctx, ttl, s.lockMargin)
}

// The lock scripts (see op.go; acquire.lua uses the token as its id).
var (
	//go:embed acquire.lua
	acquireSource string
	acquireScript = NewScript(acquireSource).Idempotent()

	//go:embed release.lua
	releaseSource string
	releaseScript = NewScript(releaseSource).Idempotent()

	//go:embed extend.lua
	extendSource string
	extendScript = NewScript(extendSource).Idempotent()
)

// AcquireLock takes the lock of threadID: it sets {p}:lock:{threadID} to a
// new token with PX ttl if the key is absent, and returns the lock, or
// (nil, nil) when another holder's token is in the key, and only then.
// The token is "go_" plus 16 random bytes in hex. ExpiresAt is the local
// time just before the request plus ttl, so it is never later than the
// server's expiry. There is no waiting for a busy lock (see
// AcquireLockWait).
//
// The token doubles as the operation id: the script is retried after a
// lost reply, a reset or a 503, and a repeat that finds its own token in
// the key reports the lock held. Only when every attempt failed is the
// error ErrOutcomeUnknown; before returning it, AcquireLock releases the
// token it may have set, if the context leaves time for it, so no lock is
// left behind under a token nobody knows (unless that fails as well).
//
// Each acquire returns a fencing token in Lock.Fence: max(the lock key's
// last fence + 1, the server's clock in microseconds), the last fence
// being kept at {p}:fence:{threadID} for as long as the lock lives. It is
// strictly larger than the fence of every earlier acquire of the key by
// this library, even after the lock and the counter expired, provided the
// server's clock never goes back.
//
// ttl must be positive: a ttl ≤ 0 is refused with ErrInvalidArgument
// (state-redis fails too, since Redis refuses PX 0).
func (s *State) AcquireLock(ctx context.Context, threadID string, ttl time.Duration) (*Lock, error) {
	lock, err := s.acquireLock(ctx, threadID, s.lockTTL(ctx, ttl))
	return lock, opError("AcquireLock", err)
}

func (s *State) acquireLock(ctx context.Context, threadID string, ttl time.Duration) (*Lock, error) {
	if err := checkID("thread id", threadID); err != nil {
		return nil, err
	}
	if err := checkTTL(threadID, ttl); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	token, err := newToken()
	if err != nil {
		return nil, err
	}
	before := s.now()
	lock := &Lock{ThreadID: threadID, Token: token, ExpiresAt: msFloor(before.Add(ttl))}
	v, err := acquireScript.Run(ctx, s.c, []string{s.lockKey(threadID), s.fenceKey(threadID)}, token, msArg(ttl))
	if doubt := inDoubt(err); errors.Is(doubt, ErrOutcomeUnknown) {
		return nil, s.abandonAcquire(ctx, lock, err, doubt)
	}
	if err != nil {
		return nil, err
	}
	if v.IsNil() {
		return nil, nil
	}
	r, err := opReply(v, "acquire")
	if err != nil {
		return nil, err
	}
	if lock.Fence, err = strconv.ParseInt(r, 10, 64); err != nil || lock.Fence <= 0 {
		return nil, protocolErrorf("acquire script replied %q", truncate(r, 40))
	}
	return lock, nil
}

// abandonAcquire handles an acquire whose every attempt failed with err
// (doubt is inDoubt(err)): the lock may be held under our token. If ctx
// leaves time, the token is released; once that is done, the lock is
// known not to be ours, and the error no longer matches ErrOutcomeUnknown.
func (s *State) abandonAcquire(ctx context.Context, lock *Lock, err, doubt error) error {
	if ctxDone(ctx) != nil {
		return doubt
	}
	if _, rerr := s.release(ctx, lock); rerr != nil {
		return doubt
	}
	return fmt.Errorf("%w (every attempt failed; the token it may have set is released, so the lock is not held)", settled{err})
}

// ReleaseLock deletes the lock only if it still holds lock.Token (one
// compare-and-delete script with an operation id, retried after a lost
// reply). A lock that expired, was force-released or is held by someone
// else is left alone and nil is returned, as in state-redis; Unlock tells
// these cases apart. A nil lock or one without ThreadID or Token is refused
// with ErrInvalidArgument.
func (s *State) ReleaseLock(ctx context.Context, lock *Lock) error {
	if err := checkLock(lock); err != nil {
		return opError("ReleaseLock", err)
	}
	_, err := s.release(ctx, lock)
	return opError("ReleaseLock", err)
}

// Unlock is ReleaseLock that reports whether the lock was still held: it
// returns nil when it deleted the lock, and an error matching
// ErrLockNotHeld when the lock no longer held lock.Token (it expired, was
// released or force-released, or another holder took it over). A retry of
// a release that went through still reports nil.
func (s *State) Unlock(ctx context.Context, lock *Lock) error {
	if err := checkLock(lock); err != nil {
		return opError("Unlock", err)
	}
	ok, err := s.release(ctx, lock)
	if err == nil && !ok {
		err = fmt.Errorf("%w: thread %q", ErrLockNotHeld, lock.ThreadID)
	}
	return opError("Unlock", err)
}

func (s *State) release(ctx context.Context, lock *Lock) (bool, error) {
	v, err := s.runOp(ctx, releaseScript, []string{s.lockKey(lock.ThreadID)}, lock.Token)
	if err != nil {
		return false, err
	}
	return opFlag(v, "release")
}

// ExtendLock sets the lock's TTL to ttl from now (not added to what is
// left) if it still holds lock.Token, with one compare-and-PEXPIRE script
// (with an operation id, retried after a lost reply), and reports whether
// it did. On true it sets lock.ExpiresAt to the local time just before the
// request plus ttl (state-redis leaves expiresAt alone). It cannot revive a
// lock that has expired: that gives false. Refresh gives an error instead
// of false.
//
// ttl must be positive: a ttl ≤ 0 is refused with ErrInvalidArgument
// (in state-redis, PEXPIRE 0 deletes the lock yet reports true).
func (s *State) ExtendLock(ctx context.Context, lock *Lock, ttl time.Duration) (bool, error) {
	ok, err := s.extendLock(ctx, lock, s.lockTTL(ctx, ttl))
	return ok, opError("ExtendLock", err)
}

// Refresh is ExtendLock that returns an error matching ErrLockNotHeld
// instead of false when the lock no longer holds lock.Token.
func (s *State) Refresh(ctx context.Context, lock *Lock, ttl time.Duration) error {
	ok, err := s.extendLock(ctx, lock, s.lockTTL(ctx, ttl))
	if err == nil && !ok {
		err = fmt.Errorf("%w: thread %q", ErrLockNotHeld, lock.ThreadID)
	}
	return opError("Refresh", err)
}

func (s *State) extendLock(ctx context.Context, lock *Lock, ttl time.Duration) (bool, error) {
	if err := checkLock(lock); err != nil {
		return false, err
	}
	if err := checkTTL(lock.ThreadID, ttl); err != nil {
		return false, err
	}
	before := s.now()
	v, err := s.runOp(ctx, extendScript, []string{s.lockKey(lock.ThreadID), s.fenceKey(lock.ThreadID)}, lock.Token, msArg(ttl))
	if err != nil {
		return false, err
	}
	ok, err := opFlag(v, "extend")
	if ok {
		lock.ExpiresAt = msFloor(before.Add(ttl))
	}
	return ok, err
}

// ForceReleaseLock deletes the lock of threadID whoever holds it (DEL, in
// a script with an operation id). The old holder keeps running; its later
// ReleaseLock does nothing, and Unlock and Refresh report ErrLockNotHeld.
// A retry never deletes the lock of a holder that took it after the first
// run: only the lock in the key when the call ran is deleted.
func (s *State) ForceReleaseLock(ctx context.Context, threadID string) error {
	if err := checkID("thread id", threadID); err != nil {
		return opError("ForceReleaseLock", err)
	}
	_, err := s.runOp(ctx, deleteScript, []string{s.lockKey(threadID)})
	return opError("ForceReleaseLock", err)
}
