package chatbot

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/chatstate/upstash"
)

// Defaults, the Chat SDK core's constants (chat-state-semantics.md §2.1).
const (
	DefaultLockTTL        = 30 * time.Second
	DefaultDedupeTTL      = 10 * time.Minute
	DefaultQueueEntryTTL  = 90 * time.Second
	DefaultMaxQueue       = 10
	DefaultThreadStateTTL = 30 * 24 * time.Hour
	DefaultHistoryMax     = 100
	DefaultHistoryTTL     = 7 * 24 * time.Hour
	DefaultMention        = "@bot"

	// DefaultBudget bounds an invocation whose context has no deadline.
	DefaultBudget = 25 * time.Second
	// DefaultReleaseReserve is the time held back before the deadline to
	// release the lock (at most a quarter of the time left).
	DefaultReleaseReserve = time.Second
	// DefaultMinDrainTime is the least time left before the work deadline for
	// the holder to take one more message off the queue.
	DefaultMinDrainTime = 500 * time.Millisecond

	// lockSkew is added to the time left when the lock TTL is derived from
	// the deadline: clocks of this process and of Redis may disagree a little.
	lockSkew = time.Second
	// minWork is the least time an invocation needs to do anything useful.
	minWork = 250 * time.Millisecond
	// release timeouts: at least this, at most that.
	minRelease, maxRelease = 250 * time.Millisecond, 2 * time.Second
)

// ErrNoTime reports an invocation that started too close to its deadline to
// take the lock and release it safely. Nothing was written.
var ErrNoTime = errors.New("not enough time left before the deadline")

// Message is what the bot's own logic (Bot.OnMessage) sees for one message.
type Message struct {
	Webhook
	// State is the thread's state after this message was counted.
	State ThreadState
	// Drained is true when the message waited in the queue and was handled
	// by the invocation that held the lock.
	Drained bool
}

// Bot handles chat webhooks with the Chat SDK's lock-and-queue strategy.
// Set its fields before the first Handle; it is then safe for concurrent use
// (Lambda Managed Instances run several invocations in one process).
type Bot struct {
	State *upstash.State

	Mention        string        // a message containing it subscribes the thread (DefaultMention)
	LockTTL        time.Duration // upper bound of the lock TTL (DefaultLockTTL)
	DedupeTTL      time.Duration
	QueueEntryTTL  time.Duration
	MaxQueue       int
	ThreadStateTTL time.Duration
	HistoryMax     int
	HistoryTTL     time.Duration
	Budget         time.Duration // used when the context has no deadline (DefaultBudget)
	ReleaseReserve time.Duration
	MinDrainTime   time.Duration

	// OnEvent receives one Event per step (deduped, locked, queued, ...). It
	// is called from the invocation's goroutine; make it safe for concurrent
	// use. Nil discards events.
	OnEvent func(Event)

	// OnMessage is the bot's own logic (reply, call a model, ...). It runs
	// while the thread's lock is held, once per handled message of a
	// subscribed thread, before the thread state is saved.
	OnMessage func(ctx context.Context, m Message)
}

// New returns a Bot over state with the Chat SDK's defaults.
func New(state *upstash.State) *Bot {
	return &Bot{
		State:          state,
		Mention:        DefaultMention,
		LockTTL:        DefaultLockTTL,
		DedupeTTL:      DefaultDedupeTTL,
		QueueEntryTTL:  DefaultQueueEntryTTL,
		MaxQueue:       DefaultMaxQueue,
		ThreadStateTTL: DefaultThreadStateTTL,
		HistoryMax:     DefaultHistoryMax,
		HistoryTTL:     DefaultHistoryTTL,
		Budget:         DefaultBudget,
		ReleaseReserve: DefaultReleaseReserve,
		MinDrainTime:   DefaultMinDrainTime,
	}
}

// Status says what happened to the invocation's own message.
type Status string

const (
	StatusHandled   Status = "handled"   // handled by this invocation
	StatusIgnored   Status = "ignored"   // recorded in history; thread not subscribed and no mention
	StatusQueued    Status = "queued"    // the thread was busy: queued for the lock holder
	StatusDuplicate Status = "duplicate" // already seen (a platform retry)
)

// Outcome is the result of one Handle call.
type Outcome struct {
	Status    Status   `json:"status"`
	MessageID string   `json:"messageId"`
	ThreadID  string   `json:"threadId"`
	Depth     int      `json:"queueDepth,omitempty"` // queue depth after enqueueing (StatusQueued)
	Handled   []string `json:"handled,omitempty"`    // every message this invocation handled, own and drained
	Left      int      `json:"left,omitempty"`       // messages left queued when the budget ran out
}

// plan is the time budget of one invocation.
type plan struct {
	parent context.Context // the caller's context, for release (without its cancellation)
	work   context.Context // ends ReleaseReserve before the hard deadline
	cancel context.CancelFunc
	hard   time.Time     // the caller's deadline, or now + Budget
	ttl    time.Duration // lock TTL: min(LockTTL, time left + skew)
	reqID  string
}

// newPlan derives the budget from the context's deadline (serverless.md §6
// items 3, 7, 8). On Lambda the deadline is the moment the process is
// frozen or killed; the lock must be released before it, and its TTL must
// not outlive it by much, since a killed invocation never releases. now is
// the current time (a parameter, so that tests can fix it).
func (b *Bot) newPlan(ctx context.Context, now time.Time) (*plan, error) {
	hard, ok := ctx.Deadline()
	if !ok {
		hard = now.Add(b.Budget)
	}
	left := hard.Sub(now)
	reserve := min(b.ReleaseReserve, left/4)
	if left-reserve < minWork {
		return nil, fmt.Errorf("%w: %v left", ErrNoTime, left.Round(time.Millisecond))
	}
	work, cancel := context.WithDeadline(ctx, hard.Add(-reserve))
	return &plan{
		parent: ctx,
		work:   work,
		cancel: cancel,
		hard:   hard,
		ttl:    min(b.LockTTL, ceil100ms(left+lockSkew)),
		reqID:  RequestID(ctx),
	}, nil
}

// ceil100ms rounds d up to a multiple of 100 ms (so "ttl 11s" reads well).
func ceil100ms(d time.Duration) time.Duration {
	const step = 100 * time.Millisecond
	if d%step == 0 {
		return d
	}
	return d.Truncate(step) + step
}

// cleanupCtx is a context for work that must happen even when the work
// context is done (release, putting a message back): not cancelled with the
// caller, and bounded by the time left before the hard deadline.
func (p *plan) cleanupCtx() (context.Context, context.CancelFunc) {
	d := min(max(time.Until(p.hard), minRelease), maxRelease)
	return context.WithTimeout(context.WithoutCancel(p.parent), d)
}

func (p *plan) timeLeft() time.Duration {
	dl, _ := p.work.Deadline()
	return time.Until(dl)
}

// Handle processes one webhook: dedupe, lock (or queue), handle, drain,
// release. It returns only after every goroutine it started has stopped.
//
// Delivery is at-least-once: when Handle fails before the message was
// handled or queued, it deletes the dedupe marker again so that the
// platform's retry is processed rather than dropped.
func (b *Bot) Handle(ctx context.Context, w Webhook) (out Outcome, err error) {
	out = Outcome{MessageID: w.MessageID, ThreadID: w.ThreadID}
	p, err := b.newPlan(ctx, time.Now())
	if err != nil {
		return out, err
	}
	defer p.cancel()
	st := b.State

	// 1. Dedupe before anything else, as the Chat SDK does.
	key := DedupeKey(w)
	first, err := st.SetIfNotExists(p.work, key, true, b.DedupeTTL)
	if errors.Is(err, upstash.ErrOutcomeUnknown) {
		// The marker may or may not have been written. Handling the message
		// (perhaps twice) beats dropping it.
		b.emit(p, w, EventError, "dedupe outcome unknown (%v): handling the message anyway", err)
		first, err = true, nil
	}
	if err != nil {
		return out, fmt.Errorf("dedupe: %w", err)
	}
	if !first {
		b.emit(p, w, EventDeduped, "%s already set: a platform retry, dropped", key)
		out.Status = StatusDuplicate
		return out, nil
	}
	committed := false // the message is handled or safely queued
	defer func() {
		if !committed {
			b.unclaim(p, w)
		}
	}()

	// 2. The thread's lock, or the queue.
	lock, err := st.AcquireLock(p.work, w.ThreadID, p.ttl)
	if err != nil {
		return out, fmt.Errorf("acquire lock: %w", err)
	}
	own := &w
	if lock == nil {
		entry, err := upstash.NewQueueEntry(w, b.QueueEntryTTL)
		if err != nil {
			return out, fmt.Errorf("queue entry: %w", err)
		}
		// Like the Chat SDK, look at the depth first: a full queue drops its
		// oldest entry to make room (onQueueFull: drop-oldest). Enqueue
		// itself does not say whether it trimmed.
		before, err := st.QueueDepth(p.work, w.ThreadID)
		if err != nil {
			return out, fmt.Errorf("queue depth: %w", err)
		}
		depth, err := st.Enqueue(p.work, w.ThreadID, entry, b.MaxQueue)
		if err != nil {
			return out, fmt.Errorf("enqueue: %w", err)
		}
		committed = true
		out.Status, out.Depth = StatusQueued, depth
		b.emit(p, w, EventQueued, "lock busy: queued for the holder (depth %d)", depth)
		if b.MaxQueue > 0 && before >= b.MaxQueue {
			b.emit(p, w, EventQueueFull, "the queue was full (%d): its oldest message was dropped to make room", b.MaxQueue)
		}
		// The holder may have taken its last (empty) look at the queue and
		// released between our AcquireLock and our Enqueue; then nobody would
		// drain our entry. Try once more: if the lock is free now, drain it
		// ourselves. (Chat SDK issue #928.)
		lock, err = st.AcquireLock(p.work, w.ThreadID, p.ttl)
		if err != nil || lock == nil {
			return out, nil
		}
		b.emit(p, w, EventLocked, "lock free after queueing: draining ourselves (ttl %v)", p.ttl)
		own = nil
	} else {
		b.emit(p, w, EventLocked, "ttl %v", p.ttl)
	}

	// 3. Hold the lock: handle, drain, release; then make sure nothing was
	// queued behind our back after our last look.
	for {
		res := b.hold(p, lock, w.ThreadID, own)
		out.Handled = append(out.Handled, res.handled...)
		if res.ownDone {
			committed = true
			if res.ownStatus != "" {
				out.Status = res.ownStatus
			}
		}
		own = nil
		if res.err != nil {
			if !committed {
				return out, res.err
			}
			// Our own message is handled (or queued); the failure concerns
			// the queue of others. The platform's retry would be deduped, so
			// answer for our message and log the rest.
			b.emit(p, w, EventError, "draining stopped: %v", res.err)
			break
		}
		// On a context of its own: when the work context is over, we still
		// want to say what is left.
		cctx, cancel := p.cleanupCtx()
		depth, err := st.QueueDepth(cctx, w.ThreadID)
		cancel()
		if err != nil || depth == 0 {
			break
		}
		if p.timeLeft() < b.MinDrainTime {
			out.Left = depth
			b.emitThread(p, w.ThreadID, EventLeft, "", "out of time: %d left queued for the next holder (or until they expire)", depth)
			break
		}
		if lock, err = st.AcquireLock(p.work, w.ThreadID, p.ttl); err != nil || lock == nil {
			break // the new holder drains them
		}
		b.emit(p, w, EventLocked, "again: %d queued after release (ttl %v)", depth, p.ttl)
	}
	if out.Status == StatusQueued {
		for _, id := range out.Handled {
			if id == w.MessageID {
				out.Status = StatusHandled
			}
		}
	}
	return out, nil
}

type holdResult struct {
	handled   []string
	ownDone   bool
	ownStatus Status
	err       error
}

// hold runs with the lock held: it keeps the lock alive, handles own (if
// any), drains the queue, and releases. KeepLockAlive's goroutine is
// stopped before hold returns.
func (b *Bot) hold(p *plan, lock *upstash.Lock, thread string, own *Webhook) (res holdResult) {
	st := b.State
	acquired := time.Now()
	lost, stop := st.KeepLockAlive(p.work, lock, p.ttl)
	lockLost := false
	defer func() {
		stop()
		b.release(p, lock, thread, acquired, lockLost || isClosed(lost))
	}()

	if own != nil {
		status, _, err := b.handleOne(p, *own, false)
		if err != nil {
			res.err = fmt.Errorf("handle %s: %w", own.MessageID, err)
			return res
		}
		res.ownDone, res.ownStatus = true, status
		res.handled = append(res.handled, own.MessageID)
	}
	for {
		if isClosed(lost) {
			b.emitThread(p, thread, EventLockLost, "", "lock lost while draining: stopping; the queue is left to the new holder")
			return res
		}
		if p.timeLeft() < b.MinDrainTime {
			return res // Handle reports what is left, after the release
		}
		entry, err := st.Dequeue(p.work, thread)
		if err != nil {
			res.err = fmt.Errorf("dequeue: %w", err)
			return res
		}
		if entry == nil {
			return res
		}
		var m Webhook
		if err := json.Unmarshal(entry.Message, &m); err != nil {
			b.emitThread(p, thread, EventError, "", "dropped a queue entry that is not a webhook: %v", err)
			continue
		}
		if !entry.ExpiresAt.IsZero() && time.Now().After(entry.ExpiresAt) {
			b.emit(p, m, EventExpired, "waited %v, past its %v TTL: dropped", time.Since(entry.EnqueuedAt).Round(time.Millisecond), b.QueueEntryTTL)
			continue
		}
		ok, err := st.ExtendLock(p.work, lock, p.ttl)
		if err != nil || !ok {
			b.putBack(p, m, *entry)
			if err != nil {
				res.err = fmt.Errorf("extend lock: %w", err)
			} else {
				lockLost = true
				b.emitThread(p, thread, EventLockLost, m.MessageID, "lock lost before handling a queued message: put it back")
			}
			return res
		}
		status, n, err := b.handleOne(p, m, true)
		if err != nil {
			b.putBack(p, m, *entry)
			res.err = fmt.Errorf("handle %s: %w", m.MessageID, err)
			return res
		}
		res.handled = append(res.handled, m.MessageID)
		waited := time.Since(entry.EnqueuedAt).Round(time.Millisecond)
		if status == StatusIgnored {
			b.emit(p, m, EventDrained, "waited %v in the queue; ignored (thread not subscribed)", waited)
		} else {
			b.emit(p, m, EventDrained, "thread message #%d, waited %v in the queue", n, waited)
		}
	}
}

// handleOne is the bot's work for one message, with the lock held. It
// returns the message's number in the thread (0 when ignored).
func (b *Bot) handleOne(p *plan, m Webhook, drained bool) (Status, int, error) {
	st := b.State
	ctx := p.work
	subscribed, err := st.IsSubscribed(ctx, m.ThreadID)
	if err != nil {
		return "", 0, fmt.Errorf("is subscribed: %w", err)
	}
	if !subscribed && m.Mentions(b.Mention) {
		if err := st.Subscribe(ctx, m.ThreadID); err != nil {
			return "", 0, fmt.Errorf("subscribe: %w", err)
		}
		subscribed = true
		b.emit(p, m, EventSubscribed, "mentioned %s: thread subscribed", b.Mention)
	}
	now := time.Now().UTC()
	item := HistoryItem{MessageID: m.MessageID, User: m.User, Text: m.Text, At: now}
	if err := st.AppendToList(ctx, HistoryKey(m.ThreadID), item, upstash.ListOptions{MaxLength: b.HistoryMax, TTL: b.HistoryTTL}); err != nil {
		return "", 0, fmt.Errorf("append history: %w", err)
	}
	if !subscribed {
		b.emit(p, m, EventIgnored, "thread not subscribed and no %s mention: kept in history only", b.Mention)
		return StatusIgnored, 0, nil
	}
	ts, _, err := upstash.GetJSON[ThreadState](ctx, st, ThreadStateKey(m.ThreadID))
	if err != nil {
		return "", 0, fmt.Errorf("read thread state: %w", err)
	}
	ts.Handled++
	ts.LastMessageID, ts.LastUser, ts.UpdatedAt = m.MessageID, m.User, now
	if b.OnMessage != nil {
		b.OnMessage(ctx, Message{Webhook: m, State: ts, Drained: drained})
	}
	if err := st.Set(ctx, ThreadStateKey(m.ThreadID), ts, b.ThreadStateTTL); err != nil {
		return "", 0, fmt.Errorf("save thread state: %w", err)
	}
	if !drained {
		b.emit(p, m, EventHandled, "thread message #%d", ts.Handled)
	}
	return StatusHandled, ts.Handled, nil
}

// release gives the lock back on a context that survives the caller's
// cancellation, bounded by the hard deadline.
func (b *Bot) release(p *plan, lock *upstash.Lock, thread string, since time.Time, lost bool) {
	ctx, cancel := p.cleanupCtx()
	defer cancel()
	if err := b.State.ReleaseLock(ctx, lock); err != nil {
		b.emitThread(p, thread, EventError, "", "release failed (%v): the lock expires by its TTL (%v)", err, p.ttl)
		return
	}
	if lost {
		// ReleaseLock leaves a lock held under another token alone.
		b.emitThread(p, thread, EventReleased, "", "after %v; the lock had already been lost, so nothing was deleted", time.Since(since).Round(time.Millisecond))
		return
	}
	b.emitThread(p, thread, EventReleased, "", "held %v", time.Since(since).Round(time.Millisecond))
}

// putBack re-enqueues a message taken off the queue that could not be
// handled, so that the next holder gets it.
func (b *Bot) putBack(p *plan, m Webhook, entry upstash.QueueEntry) {
	ctx, cancel := p.cleanupCtx()
	defer cancel()
	if _, err := b.State.Enqueue(ctx, m.ThreadID, entry, b.MaxQueue); err != nil {
		b.emit(p, m, EventError, "could not put the message back on the queue: %v", err)
		return
	}
	b.emit(p, m, EventRequeued, "put back on the queue")
}

// unclaim deletes the dedupe marker of a message that was neither handled
// nor queued, so that the platform's retry is processed.
func (b *Bot) unclaim(p *plan, w Webhook) {
	ctx, cancel := p.cleanupCtx()
	defer cancel()
	if err := b.State.Delete(ctx, DedupeKey(w)); err != nil {
		b.emit(p, w, EventError, "could not clear the dedupe marker (%v): a retry within %v will be dropped", err, b.DedupeTTL)
		return
	}
	b.emit(p, w, EventUnclaimed, "failed before handling: dedupe marker cleared so the platform's retry is processed")
}

func isClosed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}
