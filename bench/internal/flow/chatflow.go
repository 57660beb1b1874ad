package flow

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/chatstate/upstash"
	"github.com/chatstate/upstash/chatflow"
)

// Adapter is the adapter name the chatflow configuration passes to
// Flow.Handle: its dedupe keys are "dedupe:bench:<msg>", as the other
// configurations' are.
const Adapter = "bench"

// Chatflow is the flow of configuration go-chatflow: each webhook goes
// through a chatflow.Flow (strategy Queue, history on, deferred writes, the
// same constants as Calls), whose handler does the bot's work that
// chatflow does not do itself: read the thread state and write it back
// updated. The read is answered from Admit's (which reads the thread state
// with the lock) and the write rides on the turn's Finish
// (chatflow.WithDeferredWrites), so the handler's work costs no request of
// its own. chatflow appends the history in its Admit, for every
// admitted message (queued ones included), and hands a drain's messages to
// the handler as one turn (the latest, the others as Turn.Skipped), as the
// Chat SDK core does; it does not look at subscriptions (the core does so
// to route a message to its handlers, which chatflow leaves to the
// handler), so ThreadState.Subscribed stays false here.
//
// It counts the state calls each webhook makes (Outcome.Calls, and
// Outcome.HandlerCalls for the handler's own), through a counting wrapper
// around the State: each is one HTTP request when alone, fewer when
// auto-pipelining merges concurrent ones.
type Chatflow struct {
	Flow  *chatflow.Flow
	state countingState
	ops   atomic.Int64

	mu     sync.Mutex
	handed map[string]int // message id → turns that handed it over
	twice  int            // messages handed over more than once
}

// NewChatflow returns the chatflow configuration over st. The client under
// st should have auto-pipelining on (the default), as a bot's would.
func NewChatflow(st *upstash.State) (*Chatflow, error) {
	c := &Chatflow{state: countingState{st}, handed: map[string]int{}}
	f, err := chatflow.New(c.state, c.handle,
		chatflow.WithStrategy(chatflow.Queue),
		chatflow.WithDedupeTTL(DedupeTTL),
		chatflow.WithLockTTL(LockTTL),
		chatflow.WithMaxQueueSize(MaxQueue),
		chatflow.WithQueueEntryTTL(QueueEntryTTL),
		chatflow.WithHistory(chatflow.HistoryOptions{MaxMessages: HistoryMax, TTL: HistoryTTL}),
		chatflow.WithDeferredWrites(),
	)
	if err != nil {
		return nil, err
	}
	c.Flow = f
	return c, nil
}

// handle is the bot's work on one turn: the thread state read and written
// back, counting the turn's messages.
func (c *Chatflow) handle(ctx context.Context, turn *chatflow.Turn) error {
	ctx = context.WithValue(ctx, inHandlerKey{}, true)
	c.mu.Lock()
	for _, m := range append(turn.Skipped, turn.Message) {
		c.handed[m.ID]++
		if c.handed[m.ID] == 2 {
			c.twice++
		}
	}
	c.mu.Unlock()
	var ts ThreadState
	raw, err := turn.Thread.State(ctx)
	if err != nil {
		return err
	}
	if raw != nil {
		if err := json.Unmarshal(raw, &ts); err != nil {
			return fmt.Errorf("thread state: %w", err)
		}
	}
	ts = ThreadState{Count: ts.Count + 1 + len(turn.Skipped), Last: turn.Message.ID}
	return turn.Thread.ReplaceState(ctx, ts)
}

// HandedTwice returns how many messages the handler got more than once.
func (c *Chatflow) HandedTwice() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.twice
}

// Ops implements Handler. As for Fused, it counts the state operations of
// Calls that the webhook's work stands for (1 per duplicate, 5 per queued
// webhook, 8 per handled one plus 4 per message drained), from each
// webhook's outcome, so that per-operation figures divide the same work.
func (c *Chatflow) Ops() int64 { return c.ops.Load() }

// Warmup implements Handler: on thread "bench:warmup", one webhook queued
// behind a lock held elsewhere, then one handled that drains it, so that
// the connection is open and every script the flow uses (Admit, Finish)
// is loaded.
func (c *Chatflow) Warmup(ctx context.Context) error {
	st := c.state.s
	const thread = "bench:warmup"
	lock, err := st.AcquireLock(ctx, thread, LockTTL)
	if err != nil {
		return err
	}
	if lock == nil {
		return errors.New("warm-up: the lock of " + thread + " is busy")
	}
	out, err := c.Handle(ctx, Webhook{Seq: -1, MessageID: "warmup-queued", ThreadID: thread})
	if err != nil {
		return err
	}
	if out.Status != Queued {
		return fmt.Errorf("warm-up: queued webhook %s", out.Status)
	}
	if err := st.ReleaseLock(ctx, lock); err != nil {
		return err
	}
	out, err = c.Handle(ctx, Webhook{Seq: -2, MessageID: "warmup", ThreadID: thread})
	if err != nil {
		return err
	}
	if out.Status != Handled || out.Drained != 1 {
		return fmt.Errorf("warm-up: handled webhook %+v, want 1 drained", out)
	}
	return nil
}

// NewChatMessage returns the webhook's message as a chatflow.Message: the
// same JSON as NewMessage's.
func NewChatMessage(w Webhook) *chatflow.Message {
	m := NewMessage(w)
	no := false
	return &chatflow.Message{
		ID:        m.ID,
		ThreadID:  m.ThreadID,
		Text:      m.Text,
		Formatted: m.Formatted,
		Raw:       m.Raw,
		Author: chatflow.Author{UserID: m.Author.UserID, UserName: m.Author.UserName, FullName: m.Author.FullName,
			IsSystem: &no},
		Metadata:    chatflow.Metadata{DateSent: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)},
		Attachments: []chatflow.Attachment{},
		IsMention:   &no,
	}
}

// Handle implements Handler.
func (c *Chatflow) Handle(ctx context.Context, w Webhook) (Outcome, error) {
	n := &callCounts{}
	res, err := c.Flow.Handle(context.WithValue(ctx, countsKey{}, n), Adapter, NewChatMessage(w))
	out := Outcome{Calls: int(n.total.Load()), HandlerCalls: int(n.handler.Load())}
	switch res.Status {
	case chatflow.StatusDuplicate:
		out.Status = Duplicate
		c.ops.Add(1)
	case chatflow.StatusQueued:
		out.Status = Queued
		c.ops.Add(5)
	case chatflow.StatusHandled:
		out.Status = Handled
		out.Drained = len(res.Delivered) - 1
		c.ops.Add(8 + 4*int64(out.Drained))
	default:
		if err == nil {
			err = fmt.Errorf("unexpected status %q", res.Status)
		}
	}
	if err == nil && len(res.Errors) > 0 {
		err = errors.Join(res.Errors...)
	}
	return out, err
}

// callCounts counts one webhook's state calls.
type callCounts struct{ total, handler atomic.Int64 }

type (
	countsKey    struct{}
	inHandlerKey struct{} // in the contexts of the handler's calls
)

func countsFrom(ctx context.Context) *callCounts {
	n, _ := ctx.Value(countsKey{}).(*callCounts)
	return n
}

// count adds one call to the webhook whose context ctx derives from.
func count(ctx context.Context) {
	if n := countsFrom(ctx); n != nil {
		n.total.Add(1)
		if ctx.Value(inHandlerKey{}) != nil {
			n.handler.Add(1)
		}
	}
}

// countingState is a *upstash.State that counts each call in the
// callCounts of its context. It implements upstash.FusedAdapter, so a
// chatflow.Flow over it takes the fused path.
type countingState struct{ s *upstash.State }

var _ upstash.FusedAdapter = countingState{}

func (c countingState) Connect(ctx context.Context) error { count(ctx); return c.s.Connect(ctx) }

func (c countingState) Disconnect(ctx context.Context) error {
	count(ctx)
	return c.s.Disconnect(ctx)
}

func (c countingState) Subscribe(ctx context.Context, threadID string) error {
	count(ctx)
	return c.s.Subscribe(ctx, threadID)
}

func (c countingState) Unsubscribe(ctx context.Context, threadID string) error {
	count(ctx)
	return c.s.Unsubscribe(ctx, threadID)
}

func (c countingState) IsSubscribed(ctx context.Context, threadID string) (bool, error) {
	count(ctx)
	return c.s.IsSubscribed(ctx, threadID)
}

func (c countingState) AcquireLock(ctx context.Context, threadID string, ttl time.Duration) (*upstash.Lock, error) {
	count(ctx)
	return c.s.AcquireLock(ctx, threadID, ttl)
}

func (c countingState) ReleaseLock(ctx context.Context, lock *upstash.Lock) error {
	count(ctx)
	return c.s.ReleaseLock(ctx, lock)
}

func (c countingState) ExtendLock(ctx context.Context, lock *upstash.Lock, ttl time.Duration) (bool, error) {
	count(ctx)
	return c.s.ExtendLock(ctx, lock, ttl)
}

func (c countingState) ForceReleaseLock(ctx context.Context, threadID string) error {
	count(ctx)
	return c.s.ForceReleaseLock(ctx, threadID)
}

func (c countingState) Get(ctx context.Context, key string) (json.RawMessage, error) {
	count(ctx)
	return c.s.Get(ctx, key)
}

func (c countingState) Set(ctx context.Context, key string, value any, ttl time.Duration) error {
	count(ctx)
	return c.s.Set(ctx, key, value, ttl)
}

func (c countingState) SetIfNotExists(ctx context.Context, key string, value any, ttl time.Duration) (bool, error) {
	count(ctx)
	return c.s.SetIfNotExists(ctx, key, value, ttl)
}

func (c countingState) Delete(ctx context.Context, key string) error {
	count(ctx)
	return c.s.Delete(ctx, key)
}

func (c countingState) AppendToList(ctx context.Context, key string, value any, opts upstash.ListOptions) error {
	count(ctx)
	return c.s.AppendToList(ctx, key, value, opts)
}

func (c countingState) GetList(ctx context.Context, key string) ([]json.RawMessage, error) {
	count(ctx)
	return c.s.GetList(ctx, key)
}

func (c countingState) Enqueue(ctx context.Context, threadID string, entry upstash.QueueEntry, maxSize int) (int, error) {
	count(ctx)
	return c.s.Enqueue(ctx, threadID, entry, maxSize)
}

func (c countingState) Dequeue(ctx context.Context, threadID string) (*upstash.QueueEntry, error) {
	count(ctx)
	return c.s.Dequeue(ctx, threadID)
}

func (c countingState) QueueDepth(ctx context.Context, threadID string) (int, error) {
	count(ctx)
	return c.s.QueueDepth(ctx, threadID)
}

func (c countingState) Admit(ctx context.Context, req upstash.AdmitRequest) (upstash.AdmitResult, error) {
	count(ctx)
	return c.s.Admit(ctx, req)
}

func (c countingState) Finish(ctx context.Context, req upstash.FinishRequest) (upstash.FinishResult, error) {
	count(ctx)
	return c.s.Finish(ctx, req)
}
