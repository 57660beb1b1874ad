package upstash

import (
	"sync"
	"time"
)

// This file lets the external tests (package upstash_test) drive the lock
// code's clock: KeepLockAlive's heartbeat ticks when a test says so, and
// the test learns when the heartbeat has finished a tick.

// ManualClock is a clock that moves only when Advance is called. Its timers
// fire during Advance, once the clock reaches their deadline.
type ManualClock struct {
	mu     sync.Mutex
	t      time.Time
	timers []*manualTimer
	// armed gets the duration of every timer started or reset, and stopped
	// one value per timer stopped: events the tests wait for.
	armed   chan time.Duration
	stopped chan struct{}
}

// NewManualClock returns a clock set to the current time, truncated to
// whole milliseconds (so lock expiry times survive a JSON round trip).
func NewManualClock() *ManualClock {
	return &ManualClock{
		t:       time.UnixMilli(time.Now().UnixMilli()),
		armed:   make(chan time.Duration, 1000),
		stopped: make(chan struct{}, 1000),
	}
}

// SetClock makes s use c for its locks, KeepLockAlive, WithLock,
// AcquireLockWait and Dequeue's "now". Call it before s is used.
func SetClock(s *State, c *ManualClock) { s.clock = c }

// Now returns the clock's time.
func (c *ManualClock) Now() time.Time { return c.now() }

// Advance moves the clock forward by d and fires the timers that are due.
func (c *ManualClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
	for _, tm := range c.timers {
		if tm.active && !tm.deadline.After(c.t) {
			tm.fire(c.t)
		}
	}
}

// ActiveTimers returns the number of timers started or reset and not yet
// fired or stopped.
func (c *ManualClock) ActiveTimers() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, tm := range c.timers {
		if tm.active {
			n++
		}
	}
	return n
}

// Armed delivers the duration of each timer started or reset, in order: a
// heartbeat that armed its timer has finished what it did before and waits
// for the next tick.
func (c *ManualClock) Armed() <-chan time.Duration { return c.armed }

// Stopped delivers one value per timer stopped: the heartbeat stops its
// timer only when it returns.
func (c *ManualClock) Stopped() <-chan struct{} { return c.stopped }

func (c *ManualClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *ManualClock) newTimer(d time.Duration) clockTimer {
	tm := &manualTimer{clock: c, ch: make(chan time.Time, 1)}
	c.mu.Lock()
	c.timers = append(c.timers, tm)
	c.mu.Unlock()
	tm.reset(d)
	return tm
}

type manualTimer struct {
	clock    *ManualClock
	ch       chan time.Time
	deadline time.Time
	active   bool
}

// fire delivers now; the caller holds the clock's lock.
func (tm *manualTimer) fire(now time.Time) {
	tm.active = false
	select {
	case tm.ch <- now:
	default:
	}
}

func (tm *manualTimer) c() <-chan time.Time { return tm.ch }

func (tm *manualTimer) reset(d time.Duration) {
	c := tm.clock
	c.mu.Lock()
	tm.deadline, tm.active = c.t.Add(d), true
	if d <= 0 {
		tm.fire(c.t)
	}
	c.mu.Unlock()
	c.armed <- d
}

func (tm *manualTimer) stop() {
	c := tm.clock
	c.mu.Lock()
	tm.active = false
	c.mu.Unlock()
	c.stopped <- struct{}{}
}

// StateScriptSources returns the Lua source of every script of the state
// layer, by file name.
func StateScriptSources() map[string]string {
	return map[string]string{
		"subscription.lua": subscriptionSource,
		"set.lua":          setSource,
		"delete.lua":       deleteSource,
		"append.lua":       appendSource,
		"enqueue.lua":      enqueueSource,
		"dequeue.lua":      dequeueSource,
		"acquire.lua":      acquireSource,
		"release.lua":      releaseSource,
		"extend.lua":       extendSource,
	}
}
