package chatbot

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/chatstate/upstash/chatflow"
)

// DefaultMention is the mention that subscribes a thread when Bot.Mention
// is empty.
const DefaultMention = "@bot"

// ThreadState is the bot's state per thread, kept with chatflow's thread
// state helpers under "thread-state:<thread>" for chatflow.ThreadStateTTL.
type ThreadState struct {
	Handled       int       `json:"handled"`
	LastMessageID string    `json:"lastMessageId,omitempty"`
	LastUser      string    `json:"lastUser,omitempty"`
	UpdatedAt     time.Time `json:"updatedAt"`
}

// Handled is what the bot did with one message of a turn; OnMessage hooks
// see it.
type Handled struct {
	// Webhook is decoded from Message.Raw, or built from the message's
	// fields for a message a TypeScript bot queued.
	Webhook
	// State is the thread's state after counting (zero when Ignored).
	State ThreadState
	// Drained says the message came from the queue: it was in
	// Turn.Skipped, or it was the turn's latest message but not the one
	// the Flow.Handle call was given (see WithMessage).
	Drained bool
	// Subscribed says this message subscribed the thread (a mention).
	Subscribed bool
	// Ignored says the thread is not subscribed and the message does not
	// mention the bot: it is only kept in the history.
	Ignored bool
}

// Bot is the bot's own logic. Its Handle method is the chatflow.HandlerFunc
// the examples pass to chatflow.New. Set its fields before the Flow's
// first call; it is then safe for concurrent use.
type Bot struct {
	// Mention subscribes a thread when a message contains it; ""
	// means DefaultMention.
	Mention string
	// OnMessage, when set, is called once per message of a turn (ignored
	// ones included), after counting, with the lock held; it may run on
	// several goroutines at once (for different threads).
	OnMessage func(ctx context.Context, h Handled)
}

type ownKey struct{}

// WithMessage marks m as the message the Flow.Handle call with ctx is
// given (chatflow passes ctx's values on to the handler), so that
// Bot.Handle reports every other message it gets in that call as Drained.
// Without it, only the messages in Turn.Skipped count as drained.
func WithMessage(ctx context.Context, m *chatflow.Message) context.Context {
	return context.WithValue(ctx, ownKey{}, m)
}

// Handle runs the bot's logic for every message of the turn, skipped ones
// first: a message mentioning the bot subscribes the thread; for a
// subscribed thread, the message is counted in the thread state (read
// once per turn, written with ReplaceState after each message), then
// OnMessage is called. A message of a thread that is not subscribed is
// only kept in the history (chatflow appended it).
func (b *Bot) Handle(ctx context.Context, t *chatflow.Turn) error {
	mention := b.Mention
	if mention == "" {
		mention = DefaultMention
	}
	subscribed, err := t.Thread.IsSubscribed(ctx)
	if err != nil {
		return fmt.Errorf("chatbot: is subscribed: %w", err)
	}
	var st ThreadState
	if subscribed {
		if st, err = readState(ctx, t.Thread); err != nil {
			return err
		}
	}
	own, _ := ctx.Value(ownKey{}).(*chatflow.Message)
	msgs := append(append(make([]*chatflow.Message, 0, len(t.Skipped)+1), t.Skipped...), t.Message)
	for i, m := range msgs {
		h := Handled{Webhook: webhookOf(m), Drained: i < len(t.Skipped) || (own != nil && (own.ID != m.ID || own.ThreadID != m.ThreadID))}
		if !subscribed && h.Mentions(mention) {
			if err := t.Thread.Subscribe(ctx); err != nil {
				return fmt.Errorf("chatbot: subscribe: %w", err)
			}
			subscribed, h.Subscribed = true, true
			if st, err = readState(ctx, t.Thread); err != nil {
				return err
			}
		}
		if !subscribed {
			h.Ignored = true
		} else {
			st.Handled++
			st.LastMessageID, st.LastUser, st.UpdatedAt = m.ID, h.User, time.Now().UTC()
			if err := t.Thread.ReplaceState(ctx, st); err != nil {
				return fmt.Errorf("chatbot: save thread state: %w", err)
			}
			h.State = st
		}
		if b.OnMessage != nil {
			b.OnMessage(ctx, h)
		}
	}
	return nil
}

// readState reads the thread's state; none (or one that is not ours) is
// the zero state.
func readState(ctx context.Context, th chatflow.Thread) (ThreadState, error) {
	var st ThreadState
	raw, err := th.State(ctx)
	if err != nil {
		return st, fmt.Errorf("chatbot: read thread state: %w", err)
	}
	if len(raw) > 0 && json.Unmarshal(raw, &st) != nil {
		st = ThreadState{}
	}
	return st, nil
}
