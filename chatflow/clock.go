package chatflow

import (
	"context"
	"time"
)

// clock is the time source of a Flow: the heartbeat's ticks, the debounce
// and burst waits, the maximum lock lifetime, queue entry timestamps and
// their expiry. Tests replace it to drive time; the time budget and the
// contexts' deadlines always use the real clock.
type clock interface {
	Now() time.Time
	NewTimer(d time.Duration) timer
}

// timer is the part of *time.Timer a Flow uses.
type timer interface {
	C() <-chan time.Time
	Stop() bool
}

type realClock struct{}

// Now is the wall-clock time without its monotonic reading, so that times
// compare with other processes' clocks (queue entries' expiresAt).
func (realClock) Now() time.Time { return time.Now().Round(0) }

func (realClock) NewTimer(d time.Duration) timer { return realTimer{time.NewTimer(d)} }

type realTimer struct{ t *time.Timer }

func (r realTimer) C() <-chan time.Time { return r.t.C }
func (r realTimer) Stop() bool          { return r.t.Stop() }

// sleep waits for d on c, or until ctx is done; it reports whether the
// whole d passed.
func sleep(ctx context.Context, c clock, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := c.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C():
		return true
	}
}
