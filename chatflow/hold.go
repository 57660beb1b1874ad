package chatflow

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/chatstate/upstash"
)

// maxDequeueRound bounds the entries taken off a queue in one round, so a
// queue refilled as fast as it is emptied cannot keep a round going.
const maxDequeueRound = 1000

// maxDequeueFailures is how many drain rounds in a row may fail before the
// holder stops draining (the entries then wait for the next holder).
const maxDequeueFailures = 3

// putBackAttempts is how often a message taken off the queue is offered
// back before it is reported lost. A retry after an enqueue whose outcome
// was unknown may queue it twice: handled twice rather than lost.
const putBackAttempts = 3

// releaseAttempts is how often a release, or a Finish whose outcome is
// unknown, is sent before the lock is left to lapse at its TTL (blocking
// its thread until then).
const releaseAttempts = 3

// minRetry is the least wait before another extend after one failed.
const minRetry = 100 * time.Millisecond

// item is a message in hand: from the queue (entry set) or the call's own.
type item struct {
	m     *Message
	entry *upstash.QueueEntry // nil: not taken from the queue
}

// hold runs fn with the lock held: a heartbeat keeps it alive and cancels
// fn's context (cause ErrLockLost) before it could lapse; then the
// heartbeat is stopped (its goroutine has returned) and the lock released
// on a context detached from the caller's cancellation.
func (c *call) hold(l *lease, fn func(ctx context.Context)) {
	defer c.release(l)
	c.held(l, fn)
}

// held runs fn with the lock held and the heartbeat keeping it alive, and
// returns once the heartbeat has stopped, the lock still held (unless it
// was lost): the caller releases it, or hands it to Finish.
func (c *call) held(l *lease, fn func(ctx context.Context)) {
	ctx, lose := context.WithCancelCause(c.work)
	defer lose(nil)
	stop := c.startHeartbeat(ctx, lose, l)
	defer stop()
	fn(ctx)
}

// release gives the lock back (the 18-operation path; with the fused
// operations, Finish's release-or-next replaces it and the look at the
// queue that follows it, drainAfterRelease).
func (c *call) release(l *lease) {
	ctx, cancel := c.cleanupCtx()
	defer cancel()
	var err error
	for try := 0; try < releaseAttempts; try++ {
		// Sent again after any failure: a release only deletes the lock
		// under its own token, so a repeat of one that ran does nothing.
		if err = c.f.state.ReleaseLock(ctx, l.lock); err == nil || ctx.Err() != nil {
			break
		}
	}
	if err != nil {
		c.log.WarnContext(c.parent, "chatflow: release failed; the lock lapses at its TTL", "error", err)
	}
}

// startHeartbeat starts the goroutine that extends the lock; stop ends it
// and waits for it to return.
func (c *call) startHeartbeat(hold context.Context, lose context.CancelCauseFunc, l *lease) (stop func()) {
	ctx, cancel := context.WithCancel(hold)
	done := make(chan struct{})
	go func() {
		defer close(done)
		c.runHeartbeat(ctx, lose, l)
	}()
	return func() {
		cancel()
		<-done
	}
}

// runHeartbeat extends the lock every third of its TTL (the core's 10 s
// for 30 s) until ctx ends or the maximum lock lifetime passes. It cancels
// the hold (lose) when an extend reports the lock gone, and LockMargin
// before the lock could lapse when extends fail or have stopped.
func (c *call) runHeartbeat(ctx context.Context, lose context.CancelCauseFunc, l *lease) {
	clk := c.f.s.clock
	ttl := l.ttl
	heldUntil := l.sent.Add(ttl) // the lock is surely held until then
	lifetimeEnd := l.sent.Add(c.f.s.maxLifetime)
	nextTick := l.sent.Add(ttl / 3)
	extending := true
	for {
		guard := heldUntil.Add(-min(LockMargin, ttl/4))
		now := clk.Now()
		if !now.Before(guard) {
			lose(c.lapseCause(extending, heldUntil))
			return
		}
		wake := guard
		if extending && nextTick.Before(wake) {
			wake = nextTick
		}
		t := clk.NewTimer(wake.Sub(now))
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C():
		}
		now = clk.Now()
		if !now.Before(guard) {
			lose(c.lapseCause(extending, heldUntil))
			return
		}
		if !extending || now.Before(nextTick) {
			continue
		}
		if !now.Before(lifetimeEnd) {
			extending = false
			c.log.WarnContext(c.parent, "chatflow: maximum lock lifetime reached; the lock lapses at its TTL and the handler's context ends before", "lifetime", c.f.s.maxLifetime)
			continue
		}
		newTTL := c.leaseTTL()
		// An extend that cannot finish before the lock lapses is useless.
		callCtx, cancel := context.WithTimeout(ctx, heldUntil.Sub(now))
		sent := clk.Now()
		ok, err := c.f.state.ExtendLock(callCtx, l.lock, newTTL)
		cancel()
		if ctx.Err() != nil {
			return
		}
		switch {
		case err == nil && ok:
			ttl, heldUntil = newTTL, sent.Add(newTTL)
			nextTick = sent.Add(newTTL / 3)
		case err == nil:
			lose(fmt.Errorf("%w: %q is held under another token (it expired or was force-released)", ErrLockLost, c.lockKey))
			c.log.WarnContext(c.parent, "chatflow: lock lost: held under another token")
			return
		default:
			c.log.WarnContext(c.parent, "chatflow: extending the lock failed; retrying", "error", err)
			now = clk.Now()
			nextTick = now.Add(max(min(ttl/3, guard.Sub(now)/2), minRetry))
		}
	}
}

func (c *call) lapseCause(extending bool, heldUntil time.Time) error {
	if !extending {
		c.log.WarnContext(c.parent, "chatflow: lock about to lapse after its maximum lifetime; handler cancelled")
		return fmt.Errorf("%w: %q reached its maximum lifetime %v", ErrLockLost, c.lockKey, c.f.s.maxLifetime)
	}
	c.log.WarnContext(c.parent, "chatflow: lock could lapse (extends failed or the process was frozen); handler cancelled")
	return fmt.Errorf("%w: %q could not be extended and may lapse at %s", ErrLockLost, c.lockKey, heldUntil.Format(time.RFC3339Nano))
}

// deliver hands items to the handler: one turn per thread, in the order of
// each thread's latest message, the latest as Turn.Message and the others
// as Turn.Skipped. It returns false when ctx ended first; the items not
// handed over are put back on the queue.
func (c *call) deliver(ctx context.Context, items []item) bool {
	groups := groupByThread(items)
	for i, g := range groups {
		if ctx.Err() != nil {
			for _, rest := range groups[i:] {
				c.putBack(rest)
			}
			return false
		}
		c.turn(ctx, g)
	}
	return true
}

func (c *call) turn(ctx context.Context, g []item) {
	latest := g[len(g)-1].m
	skipped := make([]*Message, 0, len(g)-1)
	for _, it := range g[:len(g)-1] {
		skipped = append(skipped, it.m)
	}
	t := &Turn{Thread: c.f.thread(latest.ThreadID, c.hs), LockKey: c.lockKey, Message: latest, Skipped: skipped}
	err := c.f.handler(ctx, t)
	c.res.Turns++
	hasOwn := false
	for _, it := range g {
		c.delivered[it.m.ID] = true
		c.res.Delivered = append(c.res.Delivered, it.m.ID)
		if c.own != nil && it.m.ID == c.own.ID && it.m.ThreadID == c.own.ThreadID {
			hasOwn = true
		}
	}
	c.log.DebugContext(c.parent, "chatflow: turn", "latest", latest.ID, "skipped", len(skipped))
	if err == nil {
		return
	}
	if hasOwn {
		c.ownErr = err
		return
	}
	c.log.WarnContext(c.parent, "chatflow: handler failed for a queued message", "latest", latest.ID, "error", err)
	c.res.Errors = append(c.res.Errors, fmt.Errorf("chatflow: handler for %s: %w", latest.ID, err))
}

// groupByThread splits items by thread id, keeping their order within a
// thread, the groups ordered by the position of their last item.
func groupByThread(items []item) [][]item {
	if len(items) == 0 {
		return nil
	}
	last := map[string]int{}
	byThread := map[string][]item{}
	for i, it := range items {
		last[it.m.ThreadID] = i
		byThread[it.m.ThreadID] = append(byThread[it.m.ThreadID], it)
	}
	threads := make([]string, 0, len(last))
	for id := range last {
		threads = append(threads, id)
	}
	sort.Slice(threads, func(i, j int) bool { return last[threads[i]] < last[threads[j]] })
	groups := make([][]item, 0, len(threads))
	for _, id := range threads {
		groups = append(groups, byThread[id])
	}
	return groups
}

// putBack re-enqueues, with their original times, the queue entries taken
// off the queue but not handed over (the lock was lost or time ran out),
// so that the next holder gets them. Items not from the queue are left to
// the caller.
func (c *call) putBack(items []item) {
	ctx, cancel := c.cleanupCtx()
	defer cancel()
	for _, it := range items {
		if it.entry == nil {
			continue
		}
		var err error
		for try := 0; try < putBackAttempts; try++ {
			if _, err = c.f.state.Enqueue(ctx, c.lockKey, *it.entry, c.f.s.maxQueue); err == nil || ctx.Err() != nil {
				break
			}
			if errors.Is(err, upstash.ErrOutcomeUnknown) && try+1 < putBackAttempts {
				c.log.WarnContext(c.parent, "chatflow: put-back outcome unknown, offering it again: the message may be queued twice, and it may be handled twice", "queued", it.m.ID, "error", err)
			}
		}
		if err != nil {
			c.log.ErrorContext(c.parent, "chatflow: could not put a message back on the queue: it is lost", "queued", it.m.ID, "error", err)
			continue
		}
		c.log.InfoContext(c.parent, "chatflow: message put back on the queue", "queued", it.m.ID)
	}
}

// dequeueAll takes every live entry off the queue, oldest first, dropping
// expired ones (the core keeps an entry while now <= expiresAt) and ones
// that are not messages. It stops at the first error, returning what it
// took so far.
func (c *call) dequeueAll(ctx context.Context) ([]item, error) {
	var out []item
	for n := 0; n < maxDequeueRound; n++ {
		if err := ctx.Err(); err != nil {
			return out, err
		}
		// Not on ctx: a dequeue cancelled in flight (the lock lost, the
		// caller gone) may have taken an entry whose reply nobody reads.
		opCtx, cancel := c.opCtx()
		e, err := c.f.state.Dequeue(opCtx, c.lockKey)
		cancel()
		if err != nil {
			var corrupt *upstash.CorruptValueError
			switch {
			case errors.As(err, &corrupt):
				c.log.ErrorContext(c.parent, "chatflow: corrupt queue entry skipped", "error", err)
				continue
			case errors.Is(err, upstash.ErrOutcomeUnknown):
				// Finish's Next is safe from this (its reply is recorded
				// under an operation id); a single Dequeue is not.
				c.log.ErrorContext(c.parent, "chatflow: dequeue outcome unknown: one queued message may be lost", "error", err)
			default:
				c.log.WarnContext(c.parent, "chatflow: dequeue failed; stopping this drain", "error", err)
			}
			return out, err
		}
		if e == nil {
			return out, nil
		}
		if !e.ExpiresAt.IsZero() && c.f.s.clock.Now().After(e.ExpiresAt) {
			c.log.InfoContext(c.parent, "chatflow: queued message expired", "enqueuedAt", e.EnqueuedAt)
			continue
		}
		if it, ok := c.queuedItem(e); ok {
			out = append(out, it)
		}
	}
	return out, nil
}

// queuedItem decodes a queue entry into the message it carries; an entry
// that is not a chat message is logged and dropped (ok false).
func (c *call) queuedItem(e *upstash.QueueEntry) (it item, ok bool) {
	var m Message
	if err := json.Unmarshal(e.Message, &m); err != nil || m.ID == "" || m.ThreadID == "" {
		c.log.ErrorContext(c.parent, "chatflow: queue entry is not a chat message; dropped", "bytes", len(e.Message), "error", err)
		return item{}, false
	}
	return item{m: &m, entry: e}, true
}

// opCtx is for one state operation that must not be abandoned half-way
// (a dequeue): not cancelled with the caller or the hold, but bounded by
// the work deadline (when there is none, by the client's own timeout).
func (c *call) opCtx() (context.Context, context.CancelFunc) {
	ctx := context.WithoutCancel(c.parent)
	if dl, ok := c.work.Deadline(); ok {
		return context.WithDeadline(ctx, dl)
	}
	return context.WithCancel(ctx)
}

// drain hands the queue to the handler round by round, after the carried
// items (messages already in hand), until the queue is empty, ctx ends
// (the lock was lost, time ran out: entries in hand go back on the queue)
// or too little time is left. A failed dequeue is tried again (a retry
// cannot take an entry twice) up to maxDequeueFailures rounds in a row.
// It reports whether it took or handed over anything.
func (c *call) drain(ctx context.Context, carried []item) (progress bool) {
	failures := 0
	for {
		if ctx.Err() != nil {
			c.putBack(carried)
			if errors.Is(context.Cause(ctx), ErrLockLost) {
				c.log.WarnContext(c.parent, "chatflow: stopping the drain: lock lost")
			}
			return progress
		}
		var pending []item
		var err error
		if c.timeLeft() >= MinDrainTime {
			pending, err = c.dequeueAll(ctx)
		}
		if err != nil && ctx.Err() == nil {
			failures++
		} else {
			failures = 0
		}
		all := append(carried, pending...)
		carried = nil
		if len(all) > 0 {
			progress = true
			if !c.deliver(ctx, all) {
				return progress
			}
			if c.f.fused != nil && err == nil {
				return progress // Finish takes the next look at the queue
			}
		} else if err == nil {
			return progress
		}
		if failures >= maxDequeueFailures || c.timeLeft() < MinDrainTime {
			return progress
		}
	}
}

// debounce is the Debounce holder: wait a window, take the queue; if more
// arrived meanwhile, carry everything over and wait again; once a window
// passes quietly, hand over the latest message with the others as
// skipped. It ends after a window that brings nothing, and reports
// whether it took or handed over anything.
func (c *call) debounce(ctx context.Context, carried []item) (progress bool) {
	progress = len(carried) > 0
	for {
		if !sleep(ctx, c.f.s.clock, c.f.s.debounce) {
			c.putBack(carried)
			return progress
		}
		var pending []item
		var err error
		if c.timeLeft() >= MinDrainTime {
			pending, err = c.dequeueAll(ctx)
		}
		carried = append(carried, pending...)
		if len(carried) == 0 {
			return progress
		}
		progress = true
		if len(pending) > 0 && err == nil && c.timeLeft() >= MinDrainTime {
			depth, derr := c.f.state.QueueDepth(ctx, c.lockKey)
			if derr == nil && depth > 0 {
				c.log.InfoContext(c.parent, "chatflow: superseded, waiting another window", "depth", depth)
				continue
			}
		}
		if !c.deliver(ctx, carried) || err != nil || c.f.fused != nil {
			return progress // (fused: Finish takes the next look at the queue)
		}
		carried = nil
	}
}

// slot counts a thread's in-flight handlers under Concurrent.
type slot struct {
	inFlight int
	waiters  []chan struct{}
}

// runConcurrent is the Concurrent strategy: no lock, at most
// WithMaxConcurrent handlers per thread in this process.
func (c *call) runConcurrent() error {
	tid := c.own.ThreadID
	if n := c.f.s.maxConcurrent; n > 0 {
		waited, err := c.f.acquireSlot(c.work, tid, n)
		if err != nil {
			return fmt.Errorf("chatflow: waiting for a handler slot on %q: %w", tid, err)
		}
		if waited {
			c.hs = nil // the admission's read may be stale by now: read live
		}
		defer c.f.releaseSlot(tid)
	}
	c.deliver(c.work, []item{{m: c.own}})
	if !c.ownDelivered() {
		return c.notDelivered()
	}
	return nil
}

// acquireSlot takes one of tid's n slots, waiting for one when all are
// taken; waited reports that it had to.
func (f *Flow) acquireSlot(ctx context.Context, tid string, n int) (waited bool, err error) {
	f.mu.Lock()
	s := f.slots[tid]
	if s == nil {
		s = &slot{}
		f.slots[tid] = s
	}
	if s.inFlight < n {
		s.inFlight++
		f.mu.Unlock()
		return false, nil
	}
	ch := make(chan struct{})
	s.waiters = append(s.waiters, ch)
	f.mu.Unlock()
	select {
	case <-ch:
		return true, nil
	case <-ctx.Done():
	}
	f.mu.Lock()
	select {
	case <-ch: // handed a slot meanwhile: give it back
		f.mu.Unlock()
		f.releaseSlot(tid)
		return true, context.Cause(ctx)
	default:
	}
	for i, w := range s.waiters {
		if w == ch {
			s.waiters = append(s.waiters[:i], s.waiters[i+1:]...)
			break
		}
	}
	f.mu.Unlock()
	return true, context.Cause(ctx)
}

// releaseSlot hands the slot to the first waiter, or frees it.
func (f *Flow) releaseSlot(tid string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	s := f.slots[tid]
	if s == nil {
		return
	}
	if len(s.waiters) > 0 {
		ch := s.waiters[0]
		s.waiters = s.waiters[1:]
		close(ch)
		return
	}
	s.inFlight--
	if s.inFlight <= 0 {
		delete(f.slots, tid)
	}
}
