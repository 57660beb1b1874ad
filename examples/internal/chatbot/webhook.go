// Package chatbot is what the Lambda and Vercel examples share on top of
// the package chatflow, which runs the Chat SDK's webhook flow (dedupe by
// message id, one lock per thread, the queue of messages that arrive while
// the lock is held, the drain, message history): the examples' webhook
// format, the bot's own logic as a chatflow.HandlerFunc (subscribe a
// thread on a mention, count its messages in the thread state) and the
// HTTP answer. Each example configures its chatflow.Flow itself.
//
// The package is internal to the examples. To reuse it, copy this folder
// into your own module.
package chatbot

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

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

// ParseWebhook decodes and checks a webhook body: one JSON object of at
// most MaxBodyBytes, with platform, messageId and threadId set (at most
// 512 bytes each) and a text of at most 40,000 bytes. Unknown fields are
// ignored, as platforms add fields over time. Errors match ErrBadWebhook.
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

// Message is the webhook as the Chat SDK's serialized message, what
// chatflow.Flow.Handle takes: Raw is the webhook's JSON (so a queued
// message keeps every field), Formatted the text as a minimal mdast Root,
// the author is User (id, user name and full name), and DateSent is now in
// UTC.
func (w Webhook) Message(now time.Time) *chatflow.Message {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false) // as JSON.stringify writes it
	var raw json.RawMessage
	if enc.Encode(w) == nil { // strings always encode
		raw = bytes.TrimSuffix(buf.Bytes(), []byte("\n"))
	}
	return &chatflow.Message{
		ID:        w.MessageID,
		ThreadID:  w.ThreadID,
		Text:      w.Text,
		Formatted: chatflow.FormattedText(w.Text),
		Raw:       raw,
		Author:    chatflow.Author{UserID: w.User, UserName: w.User, FullName: w.User},
		Metadata:  chatflow.Metadata{DateSent: now.UTC()},
	}
}

// webhookOf returns the webhook a message was built from (Message.Raw), or,
// for a message whose Raw is not one of ours (a TypeScript bot queued it
// with its platform's payload), a webhook built from the message's fields,
// the platform taken from the thread id ("slack:C1:t1" → "slack").
func webhookOf(m *chatflow.Message) Webhook {
	var w Webhook
	if err := json.Unmarshal(m.Raw, &w); err == nil && w.MessageID == m.ID && w.ThreadID == m.ThreadID {
		return w
	}
	platform, _, _ := strings.Cut(m.ThreadID, ":")
	return Webhook{Platform: platform, MessageID: m.ID, ThreadID: m.ThreadID, User: m.Author.UserID, Text: m.Text}
}
