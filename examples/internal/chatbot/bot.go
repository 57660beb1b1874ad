package chatbot

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/chatstate/upstash"
	"github.com/chatstate/upstash/chatflow"
)

// Defaults, the Chat SDK core's constants (chat-state-semantics.md §2.1).
const (
	DefaultLockTTL        = chatflow.DefaultLockTTL
	DefaultDedupeTTL      = chatflow.DefaultDedupeTTL
	DefaultQueueEntryTTL  = chatflow.DefaultQueueEntryTTL
	DefaultMaxQueue       = chatflow.DefaultMaxQueueSize
	DefaultThreadStateTTL = 30 * 24 * time.Hour
	DefaultHistoryMax     = chatflow.DefaultHistoryMessages
	DefaultHistoryTTL     = chatflow.DefaultHistoryTTL
	DefaultMention        = "@bot"

	// DefaultBudget bounds an invocation whose context has no deadline.
	DefaultBudget = 25 * time.Second
)

// ErrNoTime reports an invocation that started too close to its deadline to
// take the lock and release it safely. Nothing was written.
var ErrNoTime = chatflow.ErrNoTime

// Message is what the bot's own logic (Bot.OnMessage) sees for one message.
type Message struct {
	Webhook
	// State is the thread's state after this message was counted.
	State ThreadState
	// Drained is true when the message waited in the queue and was handled
	// by the invocation that held the lock.
	Drained bool
}

// Bot is the examples' bot: a chatflow.Flow (the Chat SDK's queue
// strategy: dedupe, one lock per thread, the queue, the drain, message
// history) around the bot's own logic (subscribe on a mention, count the
// thread's messages in its state, call OnMessage). Set its fields before
// the first Handle; it is then safe for concurrent use (Lambda Managed
// Instances run several invocations in one process).
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

	// OnEvent receives one Event per step (deduped, locked, queued, ...). It
	// may be called from several goroutines; make it safe for concurrent
	// use. Nil discards events.
	OnEvent func(Event)

	// OnMessage is the bot's own logic (reply, call a model, ...). It runs
	// while the thread's lock is held, once per handled message of a
	// subscribed thread, before the thread state is saved.
	OnMessage func(ctx context.Context, m Message)

	once    sync.Once
	flow    *chatflow.Flow
	flowErr error
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
	}
}

// Status says what happened to the invocation's own message.
type Status string

// The statuses of Outcome.
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

// call is what the handler needs to know of the Handle call it runs in.
type call struct {
	reqID     string
	own       Webhook
	locked    bool   // a turn ran: the lock was taken
	ownStatus Status // StatusHandled or StatusIgnored once the own message was handled
}

type callKey struct{}

// build makes the Flow once, from the Bot's fields.
func (b *Bot) build() (*chatflow.Flow, error) {
	b.once.Do(func() {
		if b.State == nil {
			b.flowErr = fmt.Errorf("%w: chatbot: nil State", upstash.ErrConfig)
			return
		}
		b.flow, b.flowErr = chatflow.New(b.State, b.turn,
			chatflow.WithStrategy(chatflow.Queue),
			chatflow.WithLockTTL(b.LockTTL),
			chatflow.WithDedupeTTL(b.DedupeTTL),
			chatflow.WithQueueEntryTTL(b.QueueEntryTTL),
			chatflow.WithMaxQueueSize(b.MaxQueue),
			chatflow.WithHistory(chatflow.HistoryOptions{MaxMessages: b.HistoryMax, TTL: b.HistoryTTL}),
			chatflow.WithBudget(b.Budget),
			chatflow.WithLogger(slog.New(&eventLog{bot: b})),
		)
	})
	return b.flow, b.flowErr
}

// Handle processes one webhook with the Flow: dedupe, lock (or queue),
// the bot's logic for its message and for the ones queued meanwhile,
// release. It returns only after every goroutine it started has stopped.
// Delivery is at-least-once: when Handle fails before the message was
// handled or queued, the dedupe marker is deleted again so that the
// platform's retry is processed.
func (b *Bot) Handle(ctx context.Context, w Webhook) (Outcome, error) {
	out := Outcome{MessageID: w.MessageID, ThreadID: w.ThreadID}
	flow, err := b.build()
	if err != nil {
		return out, err
	}
	c := &call{reqID: RequestID(ctx), own: w}
	raw, err := json.Marshal(w)
	if err != nil {
		return out, fmt.Errorf("%w: %v", ErrBadWebhook, err)
	}
	m := &chatflow.Message{
		ID: w.MessageID, ThreadID: w.ThreadID, Text: w.Text,
		Formatted: chatflow.FormattedText(w.Text), Raw: raw,
		Author:   chatflow.Author{UserID: w.User, UserName: w.User, FullName: w.User},
		Metadata: chatflow.Metadata{DateSent: time.Now().UTC()},
	}
	res, err := flow.Handle(context.WithValue(ctx, callKey{}, c), w.Platform, m)
	out.Handled, out.Left = res.Delivered, res.Left
	if c.locked {
		b.emit(c.reqID, w.ThreadID, "", EventReleased, "%d message(s) handled", len(res.Delivered))
	}
	if res.Left > 0 {
		b.emit(c.reqID, w.ThreadID, "", EventLeft, "out of time: %d left queued for the next holder (or until they expire)", res.Left)
	}
	for _, e := range res.Errors {
		b.emit(c.reqID, w.ThreadID, "", EventError, "%v", e)
	}
	if err != nil && res.Status == chatflow.StatusHandled && c.ownStatus == "" {
		// The bot's logic failed for this message (the Flow counts it as
		// delivered and keeps its marker): clear the marker, so that the
		// platform's retry runs it again.
		b.unclaim(ctx, w)
	}
	switch res.Status {
	case chatflow.StatusDuplicate:
		out.Status = StatusDuplicate
		b.emit(c.reqID, w.ThreadID, w.MessageID, EventDeduped, "%s already set: a platform retry, dropped", chatflow.DedupeKey(w.Platform, w.MessageID))
	case chatflow.StatusQueued:
		out.Status, out.Depth = StatusQueued, res.QueueDepth
		b.emit(c.reqID, w.ThreadID, w.MessageID, EventQueued, "lock busy: queued for the holder (depth %d)", res.QueueDepth)
	case chatflow.StatusHandled:
		out.Status = c.ownStatus
		if out.Status == "" {
			out.Status = StatusHandled
		}
	}
	return out, err
}

// unclaim deletes the dedupe marker of a message whose handling failed, on
// a context not cancelled with the caller's.
func (b *Bot) unclaim(ctx context.Context, w Webhook) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
	defer cancel()
	if err := b.State.Delete(ctx, chatflow.DedupeKey(w.Platform, w.MessageID)); err != nil {
		b.emit(RequestID(ctx), w.ThreadID, w.MessageID, EventError, "could not clear the dedupe marker (%v): a retry within %v will be dropped", err, b.DedupeTTL)
		return
	}
	b.emit(RequestID(ctx), w.ThreadID, w.MessageID, EventUnclaimed, "failed while handling: dedupe marker cleared so the platform's retry is processed")
}

// turn is the Flow's handler: the bot's logic for each message of the
// turn, the skipped ones first.
func (b *Bot) turn(ctx context.Context, t *chatflow.Turn) error {
	c, _ := ctx.Value(callKey{}).(*call)
	if c == nil {
		c = &call{}
	}
	if !c.locked {
		c.locked = true
		b.emit(c.reqID, t.LockKey, "", EventLocked, "handling %s", t.Message.ID)
	}
	for _, m := range append(append([]*chatflow.Message(nil), t.Skipped...), t.Message) {
		var w Webhook
		if err := json.Unmarshal(m.Raw, &w); err != nil || w.MessageID == "" {
			// A message queued by another bot on the thread: its text is
			// what the bot needs.
			w = Webhook{MessageID: m.ID, ThreadID: m.ThreadID, User: m.Author.UserID, Text: m.Text}
		}
		own := m.ID == c.own.MessageID && m.ThreadID == c.own.ThreadID
		status, n, err := b.handleOne(ctx, w, !own)
		if err != nil {
			return fmt.Errorf("handle %s: %w", m.ID, err)
		}
		switch {
		case own:
			c.ownStatus = status
			if status == StatusIgnored {
				b.emit(c.reqID, w.ThreadID, w.MessageID, EventIgnored, "thread not subscribed and no %s mention: kept in history only", b.Mention)
			} else {
				b.emit(c.reqID, w.ThreadID, w.MessageID, EventHandled, "thread message #%d", n)
			}
		case status == StatusIgnored:
			b.emit(c.reqID, w.ThreadID, w.MessageID, EventDrained, "from the queue; ignored (thread not subscribed)")
		default:
			b.emit(c.reqID, w.ThreadID, w.MessageID, EventDrained, "thread message #%d, from the queue", n)
		}
	}
	return nil
}

// handleOne is the bot's work for one message, with the lock held. It
// returns the message's number in the thread (0 when ignored).
func (b *Bot) handleOne(ctx context.Context, m Webhook, drained bool) (Status, int, error) {
	st := b.State
	subscribed, err := st.IsSubscribed(ctx, m.ThreadID)
	if err != nil {
		return "", 0, fmt.Errorf("is subscribed: %w", err)
	}
	if !subscribed && m.Mentions(b.Mention) {
		if err := st.Subscribe(ctx, m.ThreadID); err != nil {
			return "", 0, fmt.Errorf("subscribe: %w", err)
		}
		subscribed = true
		b.emit(RequestID(ctx), m.ThreadID, m.MessageID, EventSubscribed, "mentioned %s: thread subscribed", b.Mention)
	}
	if !subscribed {
		return StatusIgnored, 0, nil
	}
	ts, _, err := upstash.GetJSON[ThreadState](ctx, st, ThreadStateKey(m.ThreadID))
	if err != nil {
		return "", 0, fmt.Errorf("read thread state: %w", err)
	}
	ts.Handled++
	ts.LastMessageID, ts.LastUser, ts.UpdatedAt = m.MessageID, m.User, time.Now().UTC()
	if b.OnMessage != nil {
		b.OnMessage(ctx, Message{Webhook: m, State: ts, Drained: drained})
	}
	if err := st.Set(ctx, ThreadStateKey(m.ThreadID), ts, b.ThreadStateTTL); err != nil {
		return "", 0, fmt.Errorf("save thread state: %w", err)
	}
	return StatusHandled, ts.Handled, nil
}

// eventLog turns the Flow's log lines about the lock and the queue into
// events (the Flow logs them; it has no event hook).
type eventLog struct {
	bot   *Bot
	attrs []slog.Attr
}

func (l *eventLog) Enabled(_ context.Context, lv slog.Level) bool { return lv >= slog.LevelInfo }

func (l *eventLog) Handle(ctx context.Context, r slog.Record) error {
	var kind EventKind
	switch msg := r.Message; {
	case strings.Contains(msg, "lock lost"), strings.Contains(msg, "could lapse"), strings.Contains(msg, "about to lapse"):
		kind = EventLockLost
	case strings.Contains(msg, "put back on the queue"):
		kind = EventRequeued
	case strings.Contains(msg, "expired"):
		kind = EventExpired
	case strings.Contains(msg, "dedupe marker cleared"):
		kind = EventUnclaimed
	case strings.Contains(msg, "taken again"):
		kind = EventLocked
	case r.Level >= slog.LevelWarn:
		kind = EventError
	default:
		return nil
	}
	var thread, id string
	var detail []string
	add := func(a slog.Attr) bool {
		switch a.Key {
		case "thread", "lock":
			if thread == "" {
				thread = a.Value.String()
			}
		case "message":
			id = a.Value.String()
		default:
			detail = append(detail, a.Key+"="+a.Value.String())
		}
		return true
	}
	for _, a := range l.attrs {
		add(a)
	}
	r.Attrs(add)
	l.bot.emit(RequestID(ctx), thread, id, kind, "%s %s", strings.TrimPrefix(r.Message, "chatflow: "), strings.Join(detail, " "))
	return nil
}

func (l *eventLog) WithAttrs(as []slog.Attr) slog.Handler {
	return &eventLog{bot: l.bot, attrs: append(append([]slog.Attr(nil), l.attrs...), as...)}
}

func (l *eventLog) WithGroup(string) slog.Handler { return l }
