package chatflow

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"

	"github.com/chatstate/upstash"
)

// The TypeScript core's cache and list key names (the adapter adds its own
// prefix, "chat-sdk:cache:" or "chat-sdk:list:" for state-redis and
// upstash.State).

// DedupeKey is the cache key marking messageID of adapter as seen:
// "dedupe:{adapter}:{messageID}".
func DedupeKey(adapter, messageID string) string { return "dedupe:" + adapter + ":" + messageID }

// ThreadStateKey is the cache key of a thread's state:
// "thread-state:{threadID}".
func ThreadStateKey(threadID string) string { return "thread-state:" + threadID }

// HistoryKey is the list key of a thread's (or channel's) message history:
// "msg-history:{id}".
func HistoryKey(id string) string { return "msg-history:" + id }

// Thread gives a handler the thread helpers of the TypeScript core's
// Thread: subscription, state and history, under the core's key names, so
// a TypeScript bot on the same database sees the same thread.
//
// Each call is a request, except in a Turn's Thread on the fused path
// (an adapter with upstash.FusedAdapter): there Admit has read the
// message's thread's subscription and state along with the lock, and
// IsSubscribed and State answer from that read without a request while it
// is current, that is within the lock hold that read it: the admitted
// message's turn and the turns of the drain that follows under the same
// lock, the read updated by this Flow's own writes through the helpers
// (Subscribe, Unsubscribe, SetState, ReplaceState). Other threads of a
// channel-scoped drain and the turns of a Drain read live (until the hold
// writes them through the helpers), and so does a turn whose lock was
// lost (context.Cause ErrLockLost). Under Concurrent (no lock) the
// turn answers from its own admission's read, updated by its own writes,
// unless it waited for a WithMaxConcurrent slot (then it reads live):
// another webhook may write the thread meanwhile, as it may between any
// read and write without a lock. With WithDeferredWrites, SetState,
// ReplaceState and AppendHistory are carried by the turn's Finish (see
// the option); State, SetState's merge and History see them at once.
type Thread struct {
	// ID is the thread id.
	ID      string
	state   upstash.StateAdapter
	history HistoryOptions
	hold    *holdState // nil: every call is a request
}

// Thread returns the helpers for threadID, every call a request. History
// reads and appends use the Flow's history options (the defaults when
// history is off).
func (f *Flow) Thread(threadID string) Thread { return f.thread(threadID, nil) }

func (f *Flow) thread(threadID string, hs *holdState) Thread {
	h := HistoryOptions{}.withDefaults()
	if f.s.history != nil {
		h = *f.s.history
	}
	return Thread{ID: threadID, state: f.state, history: h, hold: hs}
}

// Subscribe adds the thread to the subscribed threads.
func (t Thread) Subscribe(ctx context.Context) error {
	err := t.state.Subscribe(ctx, t.ID)
	t.hold.update(t.ID, func(v *threadView) { v.subKnown, v.sub = err == nil, true })
	if err != nil {
		return fmt.Errorf("chatflow: subscribe %q: %w", t.ID, err)
	}
	return nil
}

// Unsubscribe removes the thread from the subscribed threads.
func (t Thread) Unsubscribe(ctx context.Context) error {
	err := t.state.Unsubscribe(ctx, t.ID)
	t.hold.update(t.ID, func(v *threadView) { v.subKnown, v.sub = err == nil, false })
	if err != nil {
		return fmt.Errorf("chatflow: unsubscribe %q: %w", t.ID, err)
	}
	return nil
}

// IsSubscribed reports whether the thread is subscribed (from the
// admission's read when current: see Thread).
func (t Thread) IsSubscribed(ctx context.Context) (bool, error) {
	if v, ok := t.hold.known(ctx, t.ID); ok && v.subKnown {
		return v.sub, nil
	}
	ok, err := t.state.IsSubscribed(ctx, t.ID)
	if err != nil {
		return false, fmt.Errorf("chatflow: is subscribed %q: %w", t.ID, err)
	}
	return ok, nil
}

// State returns the thread's state as JSON, nil when there is none (from
// the admission's read when current: see Thread).
func (t Thread) State(ctx context.Context) (json.RawMessage, error) {
	if v, ok := t.hold.known(ctx, t.ID); ok && v.stateKnown {
		return append(json.RawMessage(nil), v.state...), nil
	}
	v, err := t.state.Get(ctx, ThreadStateKey(t.ID))
	if err != nil {
		return nil, fmt.Errorf("chatflow: thread state %q: %w", t.ID, err)
	}
	return v, nil
}

// SetState merges partial, which must encode as a JSON object, into the
// thread's state, as the core's setState does ({...existing, ...partial}:
// existing keys keep their place, new ones are appended; a state that is
// not an object counts as empty), and keeps it for ThreadStateTTL. Like
// the core's, the merge reads then writes: two writers at once can lose an
// update (a handler holding the thread's lock is alone). In a turn on the
// fused path the read is the admission's when current (see Thread), so
// the merge costs only the write, and with WithDeferredWrites nothing.
func (t Thread) SetState(ctx context.Context, partial any) error {
	patch, err := marshalJS(partial)
	if err != nil {
		return fmt.Errorf("%w: chatflow: thread state: %w", upstash.ErrInvalidArgument, err)
	}
	add, ok := objectMembers(patch)
	if !ok {
		return fmt.Errorf("%w: chatflow: thread state must be a JSON object, got %.40s", upstash.ErrInvalidArgument, patch)
	}
	old, err := t.State(ctx)
	if err != nil {
		return err
	}
	merged, _ := objectMembers(old)
	for _, m := range add {
		replaced := false
		for i := range merged {
			if merged[i].key == m.key {
				merged[i].value, replaced = m.value, true
				break
			}
		}
		if !replaced {
			merged = append(merged, m)
		}
	}
	return t.ReplaceState(ctx, encodeMembers(merged))
}

// ReplaceState stores v as the thread's whole state for ThreadStateTTL
// (the core's setState with {replace: true}). With WithDeferredWrites, in
// a turn holding the lock on the fused path, v is encoded now (an error
// is returned at once) and stored by the turn's Finish.
func (t Thread) ReplaceState(ctx context.Context, v any) error {
	if t.hold.deferring() {
		data, err := marshalJS(v)
		if err != nil {
			return fmt.Errorf("%w: chatflow: thread state: %w", upstash.ErrInvalidArgument, err)
		}
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("chatflow: set thread state %q: %w", t.ID, context.Cause(ctx))
		}
		t.hold.deferSet(t.ID, data)
		return nil
	}
	err := t.state.Set(ctx, ThreadStateKey(t.ID), v, ThreadStateTTL)
	if t.hold != nil {
		data, merr := marshalJS(v)
		t.hold.update(t.ID, func(tv *threadView) {
			// Known again only when written and encoded as stored.
			tv.stateKnown, tv.state = err == nil && merr == nil, data
		})
	}
	if err != nil {
		return fmt.Errorf("chatflow: set thread state %q: %w", t.ID, err)
	}
	return nil
}

// History returns the thread's history, oldest first: the newest limit
// messages, or all of them when limit <= 0.
func (t Thread) History(ctx context.Context, limit int) ([]*Message, error) {
	items, err := t.state.GetList(ctx, HistoryKey(t.ID))
	if err != nil {
		return nil, fmt.Errorf("chatflow: history %q: %w", t.ID, err)
	}
	if pending := t.hold.pendingItems(HistoryKey(t.ID)); len(pending) > 0 {
		items = append(items, pending...)
		if len(items) > t.history.MaxMessages {
			items = items[len(items)-t.history.MaxMessages:]
		}
	}
	if limit > 0 && len(items) > limit {
		items = items[len(items)-limit:]
	}
	out := make([]*Message, 0, len(items))
	for i, raw := range items {
		var m Message
		if err := json.Unmarshal(raw, &m); err != nil {
			return nil, fmt.Errorf("chatflow: history %q item %d: %w", t.ID, i, err)
		}
		out = append(out, &m)
	}
	return out, nil
}

// AppendHistory appends m to the thread's history, raw payload blanked,
// trimmed and kept as the history options say; the core appends the bot's
// own posted messages this way. With WithDeferredWrites, in a turn holding
// the lock on the fused path, m is encoded now and appended by the turn's
// Finish (History sees it at once).
func (t Thread) AppendHistory(ctx context.Context, m *Message) error {
	if t.hold.deferring() {
		if m == nil {
			return fmt.Errorf("%w: chatflow: nil message", upstash.ErrInvalidArgument)
		}
		data, err := m.forHistory().MarshalJSON()
		if err != nil {
			return fmt.Errorf("%w: chatflow: message %s: %w", upstash.ErrInvalidArgument, m.ID, err)
		}
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("chatflow: append %s to %q: %w", m.ID, HistoryKey(t.ID), context.Cause(ctx))
		}
		opts := upstash.ListOptions{MaxLength: t.history.MaxMessages, TTL: t.history.TTL}
		t.hold.deferAppend(upstash.ListAppend{Key: HistoryKey(t.ID), Value: json.RawMessage(data), Options: opts})
		return nil
	}
	return appendList(ctx, t.state, HistoryKey(t.ID), m, t.history)
}

func appendList(ctx context.Context, st upstash.StateAdapter, key string, m *Message, h HistoryOptions) error {
	if m == nil {
		return fmt.Errorf("%w: chatflow: nil message", upstash.ErrInvalidArgument)
	}
	if err := st.AppendToList(ctx, key, m.forHistory(), upstash.ListOptions{MaxLength: h.MaxMessages, TTL: h.TTL}); err != nil {
		return fmt.Errorf("chatflow: append %s to %q: %w", m.ID, key, err)
	}
	return nil
}

// appendHistory records an incoming message in its thread's history and,
// when the channel id differs, its channel's.
func (f *Flow) appendHistory(ctx context.Context, m *Message, h HistoryOptions) error {
	if err := appendList(ctx, f.state, HistoryKey(m.ThreadID), m, h); err != nil {
		return err
	}
	if ch := f.s.channelOf(m.ThreadID); ch != "" && ch != m.ThreadID {
		return appendList(ctx, f.state, HistoryKey(ch), m, h)
	}
	return nil
}

type member struct {
	key   string
	value json.RawMessage
}

// objectMembers returns the members of a JSON object in order (a repeated
// key keeps its first place and its last value, as JSON.parse does), or
// false when data is not an object.
func objectMembers(data []byte) ([]member, bool) {
	dec := json.NewDecoder(bytes.NewReader(data))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return nil, false
	}
	var out []member
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, false
		}
		key, _ := tok.(string)
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			return nil, false
		}
		replaced := false
		for i := range out {
			if out[i].key == key {
				out[i].value, replaced = v, true
			}
		}
		if !replaced {
			out = append(out, member{key, v})
		}
	}
	return out, true
}

func encodeMembers(ms []member) json.RawMessage {
	var b bytes.Buffer
	b.WriteByte('{')
	for i, m := range ms {
		if i > 0 {
			b.WriteByte(',')
		}
		k, _ := marshalJS(m.key)
		b.Write(k)
		b.WriteByte(':')
		b.Write(m.value)
	}
	b.WriteByte('}')
	return b.Bytes()
}
