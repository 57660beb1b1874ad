package chatbot

import (
	"context"
	"fmt"
	"strings"
	"time"
)

// EventKind names one step of the flow.
type EventKind string

const (
	EventDeduped    EventKind = "deduped"    // a message already seen: dropped
	EventSubscribed EventKind = "subscribed" // the thread was subscribed (a mention)
	EventLocked     EventKind = "locked"     // this invocation holds the thread's lock (its first turn began)
	EventQueued     EventKind = "queued"     // the lock was busy: the message went to the queue
	EventHandled    EventKind = "handled"    // the invocation's own message was handled
	EventIgnored    EventKind = "ignored"    // recorded in history only (not subscribed, no mention)
	EventDrained    EventKind = "drained"    // a queued message was handled by the holder
	EventExpired    EventKind = "expired"    // a queued message outlived its TTL: dropped
	EventReleased   EventKind = "released"   // the lock was released
	EventLockLost   EventKind = "lock-lost"  // the lock expired or was taken while held
	EventLeft       EventKind = "left"       // the budget ran out with messages still queued
	EventRequeued   EventKind = "requeued"   // a dequeued message was put back
	EventUnclaimed  EventKind = "unclaimed"  // a failed message's dedupe marker was cleared
	EventError      EventKind = "error"
)

// Event is one line of what an invocation did.
type Event struct {
	Time      time.Time
	RequestID string
	Kind      EventKind
	ThreadID  string
	MessageID string // empty for thread-level events (released, ...)
	Detail    string
}

// String formats the event as one aligned line without the time:
//
//	req-04  locked      slack:C-eng:t1  m2   ttl 11s
func (e Event) String() string {
	msg := e.MessageID
	if msg == "" {
		msg = "-"
	}
	return fmt.Sprintf("%-8s %-10s %-22s %-4s %s", e.RequestID, e.Kind, e.ThreadID, msg, e.Detail)
}

func (b *Bot) emit(reqID, thread, msgID string, kind EventKind, format string, args ...any) {
	if b.OnEvent == nil {
		return
	}
	b.OnEvent(Event{Time: time.Now(), RequestID: reqID, Kind: kind, ThreadID: thread, MessageID: msgID, Detail: strings.TrimSpace(fmt.Sprintf(format, args...))})
}

type requestIDKey struct{}

// WithRequestID attaches the platform's request id (Lambda's AwsRequestID,
// Vercel's x-vercel-id) to ctx, to label events.
func WithRequestID(ctx context.Context, id string) context.Context {
	return context.WithValue(ctx, requestIDKey{}, id)
}

// RequestID returns the id set by WithRequestID, or "".
func RequestID(ctx context.Context) string {
	id, _ := ctx.Value(requestIDKey{}).(string)
	return id
}
