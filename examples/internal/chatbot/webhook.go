// Package chatbot is the bot shared by the Lambda and Vercel examples:
// what the package chatflow leaves to a bot. chatflow runs the Chat SDK's
// webhook flow (dedupe by message id, one lock per thread, a queue for
// the messages that arrive while the lock is held, the drain, message
// history); this package parses the examples' webhook, answers HTTP,
// reads the configuration from the environment, subscribes a thread on a
// mention, keeps a per-thread counter and reports each step as an Event.
//
// The package is internal to the examples. To reuse it, copy this folder
// into your own module (see examples/vercel/README.md).
package chatbot

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/chatstate/upstash"
	"github.com/chatstate/upstash/chatflow"
)

// Webhook is the small chat webhook the examples accept:
//
//	{"platform":"slack","messageId":"m1","threadId":"slack:C1:1700000000.000100","user":"U1","text":"@bot hi"}
//
// A real bot would translate the platform's own payload into this shape.
type Webhook struct {
	Platform  string `json:"platform"`
	MessageID string `json:"messageId"`
	ThreadID  string `json:"threadId"`
	User      string `json:"user"`
	Text      string `json:"text"`
}

// ErrBadWebhook reports a request body that is not a usable webhook.
var ErrBadWebhook = errors.New("bad webhook")

// Size limits for webhook fields. Ids become parts of Redis keys.
const (
	maxIDBytes   = 512
	maxTextBytes = 40_000
	// MaxBodyBytes bounds a webhook body.
	MaxBodyBytes = 1 << 20
)

// ParseWebhook decodes and checks a webhook body. Unknown fields are
// ignored, as platforms add fields over time.
func ParseWebhook(body []byte) (Webhook, error) {
	var w Webhook
	if len(body) > MaxBodyBytes {
		return w, fmt.Errorf("%w: body of %d bytes exceeds %d", ErrBadWebhook, len(body), MaxBodyBytes)
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	if err := dec.Decode(&w); err != nil {
		return w, fmt.Errorf("%w: body is not a JSON object: %v", ErrBadWebhook, err)
	}
	if dec.More() {
		return w, fmt.Errorf("%w: trailing data after the JSON object", ErrBadWebhook)
	}
	var missing []string
	for _, f := range []struct{ name, v string }{
		{"platform", w.Platform}, {"messageId", w.MessageID}, {"threadId", w.ThreadID},
	} {
		switch {
		case strings.TrimSpace(f.v) == "":
			missing = append(missing, f.name)
		case len(f.v) > maxIDBytes:
			return w, fmt.Errorf("%w: %s is longer than %d bytes", ErrBadWebhook, f.name, maxIDBytes)
		}
	}
	if len(missing) > 0 {
		return w, fmt.Errorf("%w: missing %s", ErrBadWebhook, strings.Join(missing, ", "))
	}
	if len(w.Text) > maxTextBytes {
		return w, fmt.Errorf("%w: text is longer than %d bytes", ErrBadWebhook, maxTextBytes)
	}
	return w, nil
}

// Mentions reports whether the text mentions name ("@bot"), ignoring case.
func (w Webhook) Mentions(name string) bool {
	return name != "" && strings.Contains(strings.ToLower(w.Text), strings.ToLower(name))
}

// Keys, as the Chat SDK core names them. The state adapter adds its prefix
// and namespace ("chat-sdk:cache:", "chat-sdk:list:").

// DedupeKey is the cache key that marks a message as seen.
func DedupeKey(w Webhook) string { return "dedupe:" + w.Platform + ":" + w.MessageID }

// ThreadStateKey is the cache key of a thread's state.
func ThreadStateKey(threadID string) string { return "thread-state:" + threadID }

// HistoryKey is the list key of a thread's message history.
func HistoryKey(threadID string) string { return "msg-history:" + threadID }

// ThreadState is what the bot keeps per thread under ThreadStateKey.
type ThreadState struct {
	Handled       int       `json:"handled"`
	LastMessageID string    `json:"lastMessageId,omitempty"`
	LastUser      string    `json:"lastUser,omitempty"`
	UpdatedAt     time.Time `json:"updatedAt"`
}

// HistoryCounts reads the thread's history (chatflow's, the Chat SDK's
// serialized messages) and returns how many times each message id appears
// in it: every message admitted once (not a duplicate) appears once,
// whether it was handled, queued or dropped from a full queue.
func HistoryCounts(ctx context.Context, state upstash.StateAdapter, threadID string) (map[string]int, error) {
	items, err := state.GetList(ctx, HistoryKey(threadID))
	if err != nil {
		return nil, err
	}
	seen := make(map[string]int, len(items))
	for i, raw := range items {
		var m chatflow.Message
		if err := json.Unmarshal(raw, &m); err != nil {
			return nil, fmt.Errorf("%s item %d: %w", HistoryKey(threadID), i, err)
		}
		seen[m.ID]++
	}
	return seen, nil
}
