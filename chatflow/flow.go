package chatflow

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/chatstate/upstash"
)

var (
	// ErrLocked is returned by Handle under the Drop strategy when the
	// lock is busy (and was not taken over with ConflictForce): the message
	// is dropped and its dedupe marker kept, as the TypeScript core's
	// LockError does.
	ErrLocked = errors.New("chatflow: the lock is held by another handler")
	// ErrLockLost is the cause (context.Cause) of a handler's context
	// cancelled because the lock is gone (an extend found another token)
	// or could lapse before the next extend (extends failed, the process
	// was frozen, or the maximum lock lifetime was reached).
	ErrLockLost = errors.New("chatflow: the lock was lost")
	// ErrNoTime is returned when a call starts too close to its deadline to
	// take a lock and release it safely. Nothing was written.
	ErrNoTime = errors.New("chatflow: not enough time left before the deadline")
)

// HandlerFunc is the bot's own logic for one turn. It runs with the lock
// held (except under Concurrent) and must return when ctx is done: ctx is
// cancelled before the lock could lapse (context.Cause is then
// ErrLockLost) and ReleaseReserve before the call's deadline.
type HandlerFunc func(ctx context.Context, turn *Turn) error

// Turn is one call of the handler: the latest message of a thread and the
// ones it superseded.
type Turn struct {
	// Thread is the message's thread, with its state, subscription and
	// history helpers.
	Thread Thread
	// LockKey is the key of the lock held (the thread or channel id), or
	// "" under Concurrent.
	LockKey string
	// Message is the latest message.
	Message *Message
	// Skipped are older messages of the same thread collected with it
	// (queue drains, debounce, burst), oldest first; the TypeScript core
	// passes them as context.skipped.
	Skipped []*Message
}

// Status says what happened to the message passed to Handle.
type Status string

const (
	// StatusHandled: this call handed the message to the handler (as
	// Turn.Message or in Turn.Skipped).
	StatusHandled Status = "handled"
	// StatusQueued: the lock was busy; the message waits in the queue for
	// the holder.
	StatusQueued Status = "queued"
	// StatusDuplicate: the message id was seen within the dedupe TTL.
	StatusDuplicate Status = "duplicate"
	// StatusDropped: the lock was busy under Drop (with ErrLocked), or the
	// queue was full under DropNewest.
	StatusDropped Status = "dropped"
	// StatusIgnored: the bot's own message (Author.IsMe), skipped before
	// dedupe as the TypeScript core skips it.
	StatusIgnored Status = "ignored"
	// StatusBusy: Drain found the lock held; its holder drains the queue.
	StatusBusy Status = "busy"
)

// Result reports one Handle or Drain call.
type Result struct {
	// Status is what happened to the message passed to Handle ("" for a
	// Drain that found the lock free).
	Status Status
	// Delivered lists the ids of the messages this call handed to the
	// handler, in the order it handed them (a turn's skipped messages
	// before its latest).
	Delivered []string
	// Turns counts the handler calls.
	Turns int
	// QueueDepth is the queue's depth right after this call enqueued its
	// message (StatusQueued).
	QueueDepth int
	// Left is the number of queue entries this call left for the next
	// holder because too little time remained.
	Left int
	// Errors holds the handler's errors for turns that did not include
	// the message passed to Handle (queued messages of other webhooks);
	// the drain goes on after them. With WithDeferredWrites it also
	// reports writes Finish could not apply (ErrWritesNotApplied) or
	// whose outcome stayed unknown (upstash.ErrOutcomeUnknown).
	Errors []error
}

// Flow is the Chat SDK core's webhook orchestration over any
// upstash.StateAdapter: dedupe, lock (or queue), heartbeat, handler,
// drain, release. Build it once with New; it is safe for concurrent use.
type Flow struct {
	state   upstash.StateAdapter
	handler HandlerFunc
	s       settings
	log     *slog.Logger

	mu    sync.Mutex
	slots map[string]*slot // Concurrent: in-flight handlers per thread

	// fused is the adapter's fused operations (issue 11), found with a
	// type assertion in New; nil when it offers only the 18 operations.
	// With them, admission (dedupe, history append, lock or enqueue) and
	// finishing (release-or-next) are one request each, and Finish's
	// release-or-next replaces the recheck after enqueueing and the look
	// at the queue after releasing (see fused.go).
	fused upstash.FusedAdapter
}

// New returns a Flow that runs handler over state. Options default to the
// TypeScript core's defaults (Drop, thread scope, 10 min dedupe, 30 s lock
// extended every 10 s, queue of 10 with entries living 90 s, 1.5 s
// debounce). Invalid options are reported together, wrapping
// upstash.ErrConfig.
func New(state upstash.StateAdapter, handler HandlerFunc, opts ...Option) (*Flow, error) {
	s := defaultSettings()
	if state == nil {
		s.badf("nil StateAdapter")
	}
	if handler == nil {
		s.badf("nil HandlerFunc")
	}
	for _, o := range opts {
		if o != nil {
			o(&s)
		}
	}
	if err := s.validate(); err != nil {
		return nil, err
	}
	f := &Flow{state: state, handler: handler, s: s, log: s.logger, slots: map[string]*slot{}}
	f.fused, _ = state.(upstash.FusedAdapter)
	return f, nil
}

// LockKey returns the lock key of threadID: the thread id, or its channel
// id under ScopeChannel.
func (f *Flow) LockKey(threadID string) string {
	if f.s.scope == ScopeChannel {
		return f.s.channelOf(threadID)
	}
	return threadID
}

// Handle runs one incoming message through the flow, as the TypeScript
// core's handleIncomingMessage does, and returns when everything it
// started has finished: no goroutine of it outlives the call.
//
//  1. The bot's own messages (Author.IsMe) are ignored.
//  2. Dedupe: setIfNotExists("dedupe:{adapter}:{id}", true, dedupe TTL);
//     a duplicate stops here.
//  3. With history on, the message is appended to the thread's history
//     (and the channel's).
//  4. The strategy: see Strategy. The holder's handler runs with a
//     heartbeat, then the queue is drained, then the lock released on a
//     context detached from ctx's cancellation.
//
// Handle returns an error only when the message was not handed to the
// handler, not queued and not deliberately dropped, and it then deletes
// the dedupe marker first, so that the platform's retry is processed
// instead of being taken for a duplicate; or when the handler returned an
// error for this message (the marker is kept: it was delivered). When the
// outcome of a write is unknown (the error matches
// upstash.ErrOutcomeUnknown), the message may have been queued and will
// then be handled twice if the platform retries: this library prefers a
// message handled twice to a message lost. ErrLocked (Drop, busy lock)
// comes with StatusDropped and keeps the marker, as in TypeScript.
func (f *Flow) Handle(ctx context.Context, adapter string, m *Message) (Result, error) {
	var res Result
	if adapter == "" {
		return res, fmt.Errorf("%w: chatflow: empty adapter name", upstash.ErrInvalidArgument)
	}
	if m == nil || m.ID == "" || m.ThreadID == "" {
		return res, fmt.Errorf("%w: chatflow: a message needs an id and a thread id", upstash.ErrInvalidArgument)
	}
	if _, err := m.MarshalJSON(); err != nil {
		return res, fmt.Errorf("%w: chatflow: message %s cannot be serialized: %w", upstash.ErrInvalidArgument, m.ID, err)
	}
	if m.Author.IsMe {
		res.Status = StatusIgnored
		return res, nil
	}
	lockKey := ""
	if f.s.strategy != Concurrent {
		lockKey = f.LockKey(m.ThreadID)
	}
	c, err := f.newCall(ctx, lockKey, &res)
	if err != nil {
		return res, err
	}
	defer c.cancel()
	c.own, c.adapter = m, adapter
	c.log = c.log.With("message", m.ID, "thread", m.ThreadID)

	if f.fused != nil {
		return c.handleFused()
	}

	// Dedupe comes first, as in the core.
	key := DedupeKey(adapter, m.ID)
	first, err := f.state.SetIfNotExists(c.work, key, true, f.s.dedupeTTL)
	claimInDoubt := false
	if errors.Is(err, upstash.ErrOutcomeUnknown) {
		// The marker may or may not be written; handling the message
		// (perhaps twice) beats dropping it.
		c.log.WarnContext(c.parent, "chatflow: dedupe outcome unknown, handling the message", "error", err)
		first, err, claimInDoubt = true, nil, true
	}
	if err != nil {
		return res, fmt.Errorf("chatflow: dedupe %s: %w", m.ID, err)
	}
	if !first {
		c.log.DebugContext(c.parent, "chatflow: duplicate")
		res.Status = StatusDuplicate
		return res, nil
	}
	defer func() {
		switch {
		case !c.committed && !c.ownDelivered():
			c.unclaim(key)
		case claimInDoubt:
			c.reclaim(key)
		}
	}()

	if h := f.s.history; h != nil {
		if err := f.appendHistory(c.work, m, *h); err != nil {
			if !errors.Is(err, upstash.ErrOutcomeUnknown) {
				return res, err
			}
			// Perhaps appended: a retry would append it twice.
			c.log.WarnContext(c.parent, "chatflow: history append outcome unknown, going on", "error", err)
		}
	}

	switch f.s.strategy {
	case Concurrent:
		err = c.runConcurrent()
	case Drop:
		err = c.runDrop()
	default:
		err = c.runQueued()
	}
	if c.ownDelivered() {
		res.Status = StatusHandled
		if c.ownErr != nil {
			return res, fmt.Errorf("chatflow: handler for %s: %w", m.ID, c.ownErr)
		}
		return res, nil
	}
	return res, err
}

// Drain takes lockKey's lock if it is free and hands every queued message
// to the handler (grouped by thread, the latest with the skipped ones),
// then releases it; StatusBusy when another holder has the lock. Handle
// drains by itself; Drain is for queues nobody is left to drain, such as
// after an invocation was killed while holding the lock (a scheduled job
// can call it for threads with a non-zero QueueDepth).
func (f *Flow) Drain(ctx context.Context, lockKey string) (Result, error) {
	var res Result
	if lockKey == "" {
		return res, fmt.Errorf("%w: chatflow: empty lock key", upstash.ErrInvalidArgument)
	}
	c, err := f.newCall(ctx, lockKey, &res)
	if err != nil {
		return res, err
	}
	defer c.cancel()
	lease, err := c.acquire()
	if err != nil {
		return res, err
	}
	if lease == nil {
		res.Status = StatusBusy
		return res, nil
	}
	if f.fused != nil {
		c.hs = c.newHold()
		c.holdFused(lease, nil)
		return res, nil
	}
	c.hold(lease, func(ctx context.Context) { c.drain(ctx, nil) })
	c.drainAfterRelease()
	return res, nil
}

// call is the state of one Handle or Drain.
type call struct {
	f       *Flow
	parent  context.Context // the caller's, for cleanups (without its cancellation)
	work    context.Context // ends ReleaseReserve before the deadline
	cancel  context.CancelFunc
	hard    time.Time // the deadline, when bounded
	bounded bool
	lockKey string
	res     *Result
	log     *slog.Logger

	adapter   string
	own       *Message // nil for Drain
	committed bool     // own is queued or deliberately dropped
	ownErr    error    // the handler's error for own's turn
	delivered map[string]bool

	// hs is the current lock hold's reads and deferred writes (fused path;
	// nil on the 18 operations).
	hs *holdState
}

// newCall plans the call's time: a deadline from ctx or WithBudget, the
// work context ending ReleaseReserve before it.
func (f *Flow) newCall(ctx context.Context, lockKey string, res *Result) (*call, error) {
	c := &call{f: f, parent: ctx, lockKey: lockKey, res: res, log: f.log.With("lock", lockKey), delivered: map[string]bool{}}
	now := time.Now()
	hard, ok := ctx.Deadline()
	if !ok && f.s.budget > 0 {
		hard, ok = now.Add(f.s.budget), true
	}
	if !ok {
		c.work, c.cancel = context.WithCancel(ctx)
		return c, nil
	}
	left := hard.Sub(now)
	reserve := min(ReleaseReserve, left/4)
	if left-reserve < minWork {
		return nil, fmt.Errorf("%w: %v left", ErrNoTime, left.Round(time.Millisecond))
	}
	c.hard, c.bounded = hard, true
	c.work, c.cancel = context.WithDeadline(ctx, hard.Add(-reserve))
	return c, nil
}

// timeLeft is the time until the work context's deadline (a day when
// unbounded).
func (c *call) timeLeft() time.Duration {
	if dl, ok := c.work.Deadline(); ok {
		return time.Until(dl)
	}
	return 24 * time.Hour
}

// leaseTTL is the lock TTL to ask for now: WithLockTTL, bounded by the
// time left before the deadline plus a skew, so that a killed invocation's
// lock does not outlive it by much.
func (c *call) leaseTTL() time.Duration {
	ttl := c.f.s.lockTTL
	if c.bounded {
		ttl = min(ttl, max(time.Until(c.hard), 0)+lockSkew)
	}
	return ttl.Truncate(time.Millisecond)
}

// cleanupCtx is for work that must happen even when the work context is
// done (release, undo): not cancelled with the caller, bounded by the
// deadline.
func (c *call) cleanupCtx() (context.Context, context.CancelFunc) {
	d := cleanupTimeout
	if c.bounded {
		d = min(max(time.Until(c.hard), minCleanup), cleanupTimeout)
	}
	return context.WithTimeout(context.WithoutCancel(c.parent), d)
}

func (c *call) ownDelivered() bool { return c.own != nil && c.delivered[c.own.ID] }

// unclaim deletes the dedupe marker of a message that was neither handled
// nor queued, so that the platform's retry is processed.
func (c *call) unclaim(key string) {
	ctx, cancel := c.cleanupCtx()
	defer cancel()
	if err := c.f.state.Delete(ctx, key); err != nil {
		c.log.ErrorContext(c.parent, "chatflow: could not clear the dedupe marker: a retry within the dedupe TTL will be dropped", "error", err)
		return
	}
	c.log.InfoContext(c.parent, "chatflow: not handled; dedupe marker cleared so that a retry is processed")
}

// reclaim writes the dedupe marker of a message handled (or queued, or
// dropped on purpose) after a claim whose outcome was unknown: the claim
// may not have written it, and the platform's retry would then have the
// message handled again. A marker written by the claim, or by anyone, is
// left as it is.
func (c *call) reclaim(key string) {
	ctx, cancel := c.cleanupCtx()
	defer cancel()
	if _, err := c.f.state.SetIfNotExists(ctx, key, true, c.f.s.dedupeTTL); err != nil {
		c.log.WarnContext(c.parent, "chatflow: could not write the dedupe marker after a claim in doubt: the message may be handled twice if the platform retries", "error", err)
	}
}

// lease is a held lock and what the heartbeat needs to know of it.
type lease struct {
	lock *upstash.Lock
	sent time.Time     // clock time just before the acquire was sent
	ttl  time.Duration // the TTL asked for
}

// acquire takes the lock, or returns nil when it is busy.
func (c *call) acquire() (*lease, error) {
	ttl := c.leaseTTL()
	sent := c.f.s.clock.Now()
	lock, err := c.f.state.AcquireLock(c.work, c.lockKey, ttl)
	if err != nil {
		return nil, fmt.Errorf("chatflow: acquire lock %q: %w", c.lockKey, err)
	}
	if lock == nil {
		return nil, nil
	}
	return &lease{lock: lock, sent: sent, ttl: ttl}, nil
}

// runDrop is the Drop strategy: the lock or nothing.
func (c *call) runDrop() error {
	l, err := c.acquire()
	if err != nil {
		return err
	}
	if l == nil && c.f.s.conflict == ConflictForce {
		c.log.InfoContext(c.parent, "chatflow: lock busy, force-releasing it")
		if err := c.f.state.ForceReleaseLock(c.work, c.lockKey); err != nil {
			return fmt.Errorf("chatflow: force-release lock %q: %w", c.lockKey, err)
		}
		if l, err = c.acquire(); err != nil {
			return err
		}
	}
	if l == nil {
		c.committed = true // dropped on purpose; the marker stays, as in TypeScript
		c.res.Status = StatusDropped
		c.log.InfoContext(c.parent, "chatflow: lock busy, message dropped")
		return fmt.Errorf("%w: %q", ErrLocked, c.lockKey)
	}
	c.hold(l, func(ctx context.Context) {
		c.deliver(ctx, []item{{m: c.own}})
	})
	if !c.ownDelivered() {
		return c.notDelivered()
	}
	return nil
}

// notDelivered is the error for a message the call could not hand over.
func (c *call) notDelivered() error {
	cause := context.Cause(c.work)
	if cause == nil {
		cause = ErrLockLost
	}
	return fmt.Errorf("chatflow: %s not handled: %w", c.own.ID, cause)
}

// runQueued is the Queue, Debounce and Burst strategies.
func (c *call) runQueued() error {
	l, err := c.acquire()
	if err != nil {
		return err
	}
	if l != nil {
		c.holdQueued(l, true)
		c.drainAfterRelease()
		if !c.ownDelivered() && !c.committed {
			return c.notDelivered()
		}
		return nil
	}

	// The lock is busy: queue the message for the holder.
	if c.f.s.strategy != Debounce && c.f.s.onFull == DropNewest {
		depth, err := c.f.state.QueueDepth(c.work, c.lockKey)
		if err != nil {
			return fmt.Errorf("chatflow: queue depth %q: %w", c.lockKey, err)
		}
		if depth >= c.f.s.maxQueue {
			c.committed = true
			c.res.Status = StatusDropped
			c.log.InfoContext(c.parent, "chatflow: queue full, message dropped (drop-newest)", "depth", depth)
			return nil
		}
	}
	inDoubt := false
	entry := c.newEntry(c.own)
	depth, err := c.f.state.Enqueue(c.work, c.lockKey, entry, c.f.s.maxQueue)
	switch {
	case errors.Is(err, upstash.ErrOutcomeUnknown):
		inDoubt = true
		c.log.WarnContext(c.parent, "chatflow: enqueue outcome unknown: the message may be queued, and after the platform's retry it may be handled twice", "error", err)
	case err != nil:
		return fmt.Errorf("chatflow: enqueue on %q: %w", c.lockKey, err)
	default:
		c.committed = true
		c.res.Status, c.res.QueueDepth = StatusQueued, depth
		c.log.InfoContext(c.parent, "chatflow: lock busy, message queued", "depth", depth)
	}

	// The holder may have taken its last (empty) look at the queue and
	// released between our acquire and our enqueue: then nobody would
	// drain our entry. Try once more (vercel/chat#928).
	// (The fused path needs no recheck: Admit's lock check and enqueue are
	// one atomic step, and Finish never releases over a non-empty queue.)
	l, err = c.acquire()
	if err != nil {
		c.log.WarnContext(c.parent, "chatflow: recheck after enqueueing failed; the holder drains", "error", err)
	}
	if l != nil {
		c.log.InfoContext(c.parent, "chatflow: lock free after enqueueing, draining")
		c.holdQueued(l, false)
		c.drainAfterRelease()
	}
	if inDoubt && !c.ownDelivered() {
		// Perhaps queued, perhaps not: let the platform retry (the message
		// may then be handled twice).
		return fmt.Errorf("chatflow: enqueue %s on %q: %w", c.own.ID, c.lockKey, upstash.ErrOutcomeUnknown)
	}
	return nil
}

func (c *call) newEntry(m *Message) upstash.QueueEntry {
	now := c.f.s.clock.Now()
	data, _ := m.MarshalJSON() // a Message always encodes (its dates are checked in Handle)
	return upstash.QueueEntry{Message: data, EnqueuedAt: now, ExpiresAt: now.Add(c.f.s.entryTTL)}
}

// holdQueued runs the strategy's holder part with l held. withOwn says
// whether the call's own message is in hand (not in the queue). It reports
// whether anything was taken off the queue or handed over.
func (c *call) holdQueued(l *lease, withOwn bool) (progress bool) {
	var carried []item
	if withOwn {
		carried = []item{{m: c.own}}
	}
	c.hold(l, func(ctx context.Context) {
		switch c.f.s.strategy {
		case Burst:
			if !sleep(ctx, c.f.s.clock, c.f.s.debounce) {
				c.putBack(carried)
				return
			}
			progress = c.drain(ctx, carried)
		case Debounce:
			progress = c.debounce(ctx, carried)
		default: // Queue (and a Drop or Concurrent flow's Drain)
			// The holder's own message first, alone, then the queue.
			if len(carried) > 0 {
				progress = true
				if !c.deliver(ctx, carried) {
					return
				}
			}
			progress = c.drain(ctx, nil) || progress
		}
	})
	// An own message still in hand (the lock was lost or time ran out
	// before it was delivered) goes back on the queue for the next holder.
	if withOwn && !c.ownDelivered() && c.work.Err() == nil {
		c.requeueOwn()
	}
	return progress
}

// requeueOwn puts the call's own, undelivered message on the queue.
func (c *call) requeueOwn() {
	ctx, cancel := c.cleanupCtx()
	defer cancel()
	depth, err := c.f.state.Enqueue(ctx, c.lockKey, c.newEntry(c.own), c.f.s.maxQueue)
	if errors.Is(err, upstash.ErrOutcomeUnknown) {
		// Handle reports the message as not handled (the platform retries),
		// and it may be queued as well.
		c.log.WarnContext(c.parent, "chatflow: enqueue of the undelivered message outcome unknown: it may be queued, and after the platform's retry it may be handled twice", "error", err)
		return
	}
	if err != nil {
		c.log.WarnContext(c.parent, "chatflow: could not queue the undelivered message", "error", err)
		return
	}
	c.committed = true
	c.res.Status, c.res.QueueDepth = StatusQueued, depth
}

// drainAfterRelease looks at the queue after each release and drains
// again while entries are left and the lock is free: an entry enqueued
// after the holder's last look, whose enqueuer found the lock still held
// when it checked, would otherwise wait for nobody.
func (c *call) drainAfterRelease() {
	for c.work.Err() == nil {
		depth, err := c.f.state.QueueDepth(c.work, c.lockKey)
		if err != nil || depth == 0 {
			return
		}
		if c.timeLeft() < MinDrainTime {
			c.res.Left = depth
			c.log.WarnContext(c.parent, "chatflow: out of time, messages left queued for the next holder", "depth", depth)
			return
		}
		l, err := c.acquire()
		if err != nil {
			c.log.WarnContext(c.parent, "chatflow: could not take the lock again to drain; left to the next holder", "depth", depth, "error", err)
			return
		}
		if l == nil {
			return // the holder will look after its release
		}
		c.log.InfoContext(c.parent, "chatflow: queue not empty after release, draining again", "depth", depth)
		if !c.holdQueued(l, false) {
			return // nothing could be taken: leave it to the next holder
		}
	}
}
