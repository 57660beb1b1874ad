package chatflow

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/chatstate/upstash"
)

// The fused path: when the adapter is an upstash.FusedAdapter, Handle
// admits a message with one Admit (dedupe, history append, the thread's
// subscription and state, lock or enqueue: a queued or duplicate webhook
// is one request) and ends each holder's turn with one Finish
// (release-or-next, taking the whole queue as the next turn, and the
// turn's deferred writes: a handled webhook is two requests). Admit's lock check and enqueue are one atomic step and Finish
// releases only over an empty queue, so the stranded message of
// vercel/chat#928 cannot happen and neither the recheck after enqueueing
// nor the look at the queue after releasing is needed.

// handleFused is Handle after its argument checks, over the fused
// operations.
func (c *call) handleFused() (Result, error) {
	f, m, res := c.f, c.own, c.res
	key := DedupeKey(c.adapter, m.ID)
	req := upstash.AdmitRequest{DedupeKey: key, DedupeTTL: f.s.dedupeTTL}
	// The turn's reads, along with the lock (see Thread).
	req.CheckSubscription, req.Read = m.ThreadID, []string{ThreadStateKey(m.ThreadID)}
	if h := f.s.history; h != nil {
		opts := upstash.ListOptions{MaxLength: h.MaxMessages, TTL: h.TTL}
		req.Append = append(req.Append, upstash.ListAppend{Key: HistoryKey(m.ThreadID), Value: m.forHistory(), Options: opts})
		if ch := f.s.channelOf(m.ThreadID); ch != "" && ch != m.ThreadID {
			req.Append = append(req.Append, upstash.ListAppend{Key: HistoryKey(ch), Value: m.forHistory(), Options: opts})
		}
	}
	ttl := c.leaseTTL()
	if c.lockKey != "" {
		req.ThreadID, req.LockTTL = c.lockKey, ttl
		switch f.s.strategy {
		case Drop:
			req.TakeOver = f.s.conflict == ConflictForce
		default:
			e := c.newEntry(m)
			req.Entry, req.MaxQueue = &e, f.s.maxQueue
			req.DropNewest = f.s.strategy != Debounce && f.s.onFull == DropNewest
		}
	}
	sent := f.s.clock.Now()
	ar, inDoubt, err := c.admit(req)
	unknown := errors.Is(err, upstash.ErrOutcomeUnknown)
	claimInDoubt := false
	switch {
	case unknown && c.lockKey == "":
		// Concurrent: only the dedupe claim and the history append are in
		// doubt; handling the message (perhaps twice) beats dropping it.
		c.log.WarnContext(c.parent, "chatflow: admit outcome unknown, handling the message", "error", err)
		err, claimInDoubt = nil, true
	case unknown:
		// The message may be queued, or the lock taken for it: hand the
		// lock Admit may have taken to Finish (which hands over whatever
		// queued meanwhile), clear the marker and let the platform retry
		// (the message may then be handled twice, never lost).
		c.log.WarnContext(c.parent, "chatflow: admit outcome unknown: the message may be queued, and after the platform's retry it may be handled twice", "error", err)
		// Any attempt may be the one that took the lock, each with a token
		// of its own: Finish with the others finds their lock not held.
		for _, l := range inDoubt {
			c.hs = c.newHold()
			c.finishLoop(&lease{lock: l, sent: sent, ttl: ttl})
		}
		if c.ownDelivered() {
			// Admit had queued it after all, and this call's drain (after
			// its Finish found the lock never taken) handed it over; so
			// Admit ran, and wrote the dedupe marker.
			res.Status = StatusHandled
			if c.ownErr != nil {
				return *res, fmt.Errorf("chatflow: handler for %s: %w", m.ID, c.ownErr)
			}
			return *res, nil
		}
		c.unclaim(key)
		return *res, fmt.Errorf("chatflow: admit %s: %w", m.ID, err)
	case err != nil:
		return *res, fmt.Errorf("chatflow: admit %s: %w", m.ID, err)
	}
	if ar.Duplicate {
		c.log.DebugContext(c.parent, "chatflow: duplicate")
		res.Status = StatusDuplicate
		return *res, nil
	}
	defer func() {
		switch {
		case !c.committed && !c.ownDelivered():
			c.unclaim(key)
		case claimInDoubt:
			c.reclaim(key)
		}
	}()

	if c.lockKey == "" || ar.Lock != nil {
		c.hs = c.newHold()
		c.hs.seed(m.ThreadID, ar)
	}
	switch {
	case c.lockKey == "":
		err = c.runConcurrent()
	case ar.Lock != nil:
		if ar.TookOver {
			c.log.InfoContext(c.parent, "chatflow: lock busy, taken over (force)")
		}
		c.holdFused(&lease{lock: ar.Lock, sent: sent, ttl: ttl}, []item{{m: m}})
		if !c.ownDelivered() && !c.committed {
			err = c.notDelivered()
		}
	case ar.Queued:
		c.committed = true
		res.Status, res.QueueDepth = StatusQueued, ar.QueueDepth
		c.log.InfoContext(c.parent, "chatflow: lock busy, message queued", "depth", ar.QueueDepth)
	case f.s.strategy == Drop:
		c.committed = true // dropped on purpose; the marker stays, as in TypeScript
		res.Status = StatusDropped
		c.log.InfoContext(c.parent, "chatflow: lock busy, message dropped")
		err = fmt.Errorf("%w: %q", ErrLocked, c.lockKey)
	default: // the queue was full under DropNewest
		c.committed = true
		res.Status = StatusDropped
		c.log.InfoContext(c.parent, "chatflow: queue full, message dropped (drop-newest)", "depth", ar.QueueDepth)
	}
	if c.ownDelivered() {
		res.Status = StatusHandled
		if c.ownErr != nil {
			return *res, fmt.Errorf("chatflow: handler for %s: %w", m.ID, c.ownErr)
		}
		return *res, nil
	}
	return *res, err
}

// resendAttempts is how often an Admit or a Finish whose outcome is
// unknown is sent again under its operation id (the repeat applies it once
// or returns the recorded outcome), while the call's budget allows, before
// the flow treats the outcome as unknown.
const resendAttempts = 3

// resendBackoff is the wait before the first resend, doubled before each
// next one.
const resendBackoff = 20 * time.Millisecond

// wait sleeps d of real time (a network backoff, not the flow's clock),
// or until ctx ends; it reports whether ctx is still live.
func wait(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// admit runs Admit under one operation id, sent again after each
// ErrOutcomeUnknown (up to resendAttempts, within the work context), so
// that an Admit that ran is learnt from its record rather than guessed.
// When the outcome stays unknown, inDoubt lists the lock each attempt may
// have taken.
func (c *call) admit(req upstash.AdmitRequest) (ar upstash.AdmitResult, inDoubt []*upstash.Lock, err error) {
	if id, err := upstash.NewOperationID(); err == nil {
		req.OperationID = id
	}
	backoff := resendBackoff
	for try := 0; ; try++ {
		ar, err = c.f.fused.Admit(c.work, req)
		if !errors.Is(err, upstash.ErrOutcomeUnknown) {
			return ar, nil, err
		}
		if ar.InDoubtLock != nil {
			inDoubt = append(inDoubt, ar.InDoubtLock)
		}
		if req.OperationID == "" || try >= resendAttempts || !wait(c.work, backoff) {
			return ar, inDoubt, err
		}
		backoff *= 2
		c.log.InfoContext(c.parent, "chatflow: admit in doubt, sending it again under its operation id", "attempt", try+2, "error", err)
	}
}

// holdFused runs the strategy's holder part with l held, carried in hand
// (the call's own message, or nothing for Drain), then Finish; while
// Finish hands over a batch of queued entries, it runs the holder part
// again with them. With nothing in hand under Queue and Drop (a Drain, a
// lock taken again), it goes straight to Finish, which hands the queue
// over.
func (c *call) holdFused(l *lease, carried []item) {
	withOwn := len(carried) > 0 && carried[0].entry == nil
	for {
		if len(carried) > 0 || c.f.s.strategy == Debounce || c.f.s.strategy == Burst {
			c.held(l, func(ctx context.Context) { c.holdFusedTurn(ctx, carried) })
		}
		if withOwn {
			withOwn = false
			// Lost lock or no time: queued before Finish, so that Finish
			// hands it over if the lock is still held.
			if !c.ownDelivered() && c.work.Err() == nil {
				c.requeueOwn()
			}
		}
		hs := c.hs
		next, nl := c.finish(l)
		if nl == nil {
			c.endHold(hs)
			return
		}
		l, carried = nl, next
	}
}

// holdFusedTurn is the strategy's holder part on the fused path: Queue
// (and Drop, and Drain) hands over the own message alone, or the batch
// Finish took off the queue (the latest message with the older ones as
// skipped, the core's drain); Debounce and Burst wait their windows as on
// the plain path.
func (c *call) holdFusedTurn(ctx context.Context, carried []item) {
	switch c.f.s.strategy {
	case Burst:
		if !sleep(ctx, c.f.s.clock, c.f.s.debounce) {
			c.putBack(carried)
			return
		}
		c.drain(ctx, carried)
	case Debounce:
		c.debounce(ctx, carried)
	default:
		// The own message, or Finish's batch: Finish takes the next look
		// at the queue.
		c.deliver(ctx, carried)
	}
}

// finishLoop finishes l and hands over what Finish returns until the
// queue is empty (the lock released) or the lock is lost.
func (c *call) finishLoop(l *lease) {
	hs := c.hs
	next, nl := c.finish(l)
	if nl == nil {
		c.endHold(hs)
		return
	}
	c.holdFused(nl, next)
}

// take is FinishRequest.Take: the queue's cap, so that one Finish hands
// over everything a writer with the same cap can have queued (DropNewest
// keeps a queue within the cap too). Should another writer (a TypeScript
// bot with a larger cap) have queued more, the rest comes with the next
// Finish, as another turn.
func (c *call) take() int { return c.f.s.maxQueue }

// finish ends a turn with Finish: nil when the lock was released (the
// queue held no live entry) or lost, otherwise the batch of queued
// messages Finish took (up to take(), oldest first) and the lease kept for
// them. When Finish fails, the lock is released with the single operations
// and the queue looked at as on the plain path.
func (c *call) finish(l *lease) ([]item, *lease) {
	w := c.hs.takeWrites() // the turn's deferred writes, fenced by Finish
	unknown := 0
	for {
		ttl := c.leaseTTL()
		sent := c.f.s.clock.Now()
		// Out of time: release whatever is queued, popping nothing, so the
		// entries stay where they are, in their order, for the next holder
		// (or a Drain), instead of being taken and put back.
		outOfTime := c.work.Err() != nil || c.timeLeft() < MinDrainTime
		req := upstash.FinishRequest{Lock: l.lock, LockTTL: ttl, Set: w.sets, Append: w.appends, Take: c.take()}
		if outOfTime {
			req.Release, req.Take = true, 1
		}
		fr, err := c.finishOnce(req)
		switch {
		case errors.Is(err, upstash.ErrLockNotHeld):
			c.log.WarnContext(c.parent, "chatflow: lock lost before finishing", "error", err)
			c.writesFailed(w, err, unknown > 0)
			c.endHold(c.hs)
			return c.retake()
		case errors.Is(err, upstash.ErrOutcomeUnknown) && unknown+1 < releaseAttempts && (!c.bounded || time.Until(c.hard) > minCleanup):
			// Sent again (a new operation): if the first one ran, it
			// released the lock (this one then finds it gone) or popped a
			// batch whose reply is lost (this one pops what is left or
			// releases); otherwise this one does what it did not.
			unknown++
			c.log.ErrorContext(c.parent, "chatflow: finish outcome unknown, finishing again: queued messages may be lost", "upTo", c.take(), "error", err)
			continue
		case errors.Is(err, upstash.ErrOutcomeUnknown):
			c.log.ErrorContext(c.parent, "chatflow: finish outcome unknown: the lock lapses at its TTL and queued messages may be lost", "upTo", c.take(), "error", err)
			c.writesFailed(w, err, true)
			return nil, nil
		case err != nil:
			c.log.WarnContext(c.parent, "chatflow: finish failed; releasing with the single operations", "error", err)
			c.writesFailed(w, err, unknown > 0)
			c.release(l)
			c.hs = nil // the plain path's turns write at once
			c.drainAfterRelease()
			return nil, nil
		}
		if fr.DeadLettered > 0 {
			c.log.ErrorContext(c.parent, "chatflow: unreadable queue entries moved to the dead-letter list", "count", fr.DeadLettered)
		}
		if fr.DeadLetterErr != nil {
			c.log.ErrorContext(c.parent, "chatflow: unreadable queue entries taken with the batch could not be moved to the dead-letter list", "error", fr.DeadLetterErr)
		}
		if outOfTime {
			c.leftForNext()
			return nil, nil
		}
		if fr.Next == nil {
			return nil, nil
		}
		nl := &lease{lock: l.lock, sent: sent, ttl: ttl}
		entries := append([]upstash.QueueEntry{*fr.Next}, fr.More...)
		batch := make([]item, 0, len(entries))
		for i := range entries {
			if it, ok := c.queuedItem(&entries[i]); ok {
				batch = append(batch, it)
			}
		}
		if len(batch) == 0 {
			l = nl
			continue
		}
		if c.work.Err() != nil || c.timeLeft() < MinDrainTime {
			// Time ran out while Finish popped them: too late to hand them
			// over, so back on the queue for the next holder (or a Drain),
			// and the lock released.
			c.putBack(batch)
			c.release(nl)
			ctx, cancel := c.cleanupCtx()
			depth, err := c.f.state.QueueDepth(ctx, c.lockKey)
			cancel()
			if err != nil {
				depth = len(batch)
			}
			c.res.Left = depth
			c.log.WarnContext(c.parent, "chatflow: out of time, messages left queued for the next holder", "depth", depth)
			return nil, nil
		}
		return batch, nl
	}
}

// leftForNext follows a Finish with Release (the call out of time): it
// reads how many entries the release left queued, into Result.Left, and
// warns when there are any.
func (c *call) leftForNext() {
	ctx, cancel := c.cleanupCtx()
	depth, err := c.f.state.QueueDepth(ctx, c.lockKey)
	cancel()
	if err != nil {
		c.log.WarnContext(c.parent, "chatflow: out of time, messages may be left queued for the next holder", "error", err)
		return
	}
	if depth > 0 {
		c.res.Left = depth
		c.log.WarnContext(c.parent, "chatflow: out of time, messages left queued for the next holder", "depth", depth)
	}
}

// finishOnce runs one Finish under one operation id, sent again after
// each ErrOutcomeUnknown (up to resendAttempts, while time is left for a
// cleanup), so that a Finish that ran returns its recorded result (the
// same batch, nothing popped or written twice) instead of being lost.
func (c *call) finishOnce(req upstash.FinishRequest) (upstash.FinishResult, error) {
	if id, err := upstash.NewOperationID(); err == nil {
		req.OperationID = id
	}
	backoff := resendBackoff
	for try := 0; ; try++ {
		ctx, cancel := c.cleanupCtx()
		fr, err := c.f.fused.Finish(ctx, req)
		cancel()
		if !errors.Is(err, upstash.ErrOutcomeUnknown) || req.OperationID == "" || try >= resendAttempts ||
			(c.bounded && time.Until(c.hard) <= minCleanup+backoff) || !wait(context.WithoutCancel(c.parent), backoff) {
			return fr, err
		}
		backoff *= 2
		c.log.InfoContext(c.parent, "chatflow: finish in doubt, sending it again under its operation id", "attempt", try+2, "error", err)
	}
}

// retake follows a lock lost before Finish (it expired or was
// force-released): when entries are queued and the lock is free, nobody
// else may be left to drain them, so the call takes the lock again and
// hands over the queue (as the plain path's look after releasing does).
func (c *call) retake() ([]item, *lease) {
	if c.work.Err() != nil {
		return nil, nil
	}
	depth, err := c.f.state.QueueDepth(c.work, c.lockKey)
	if err != nil || depth == 0 {
		return nil, nil
	}
	if c.timeLeft() < MinDrainTime {
		c.res.Left = depth
		c.log.WarnContext(c.parent, "chatflow: out of time, messages left queued for the next holder", "depth", depth)
		return nil, nil
	}
	l, err := c.acquire()
	if err != nil || l == nil {
		return nil, nil // another holder has it, and Finish hands over to it
	}
	c.log.InfoContext(c.parent, "chatflow: lock taken again to drain after losing it", "depth", depth)
	c.hs = c.newHold() // a new hold: what the lost one knew may be stale
	c.holdFused(l, nil)
	return nil, nil
}

// newHold starts a lock hold's reads and deferred writes (see holdState):
// writes are deferred with WithDeferredWrites when a lock is held.
func (c *call) newHold() *holdState {
	return newHoldState(c.f.s.deferWrites && c.lockKey != "")
}
