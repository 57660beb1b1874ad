package upstash

import (
	"context"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"
	"unicode/utf8"
)

// QueueEntry is one queued message, as the Chat SDK's QueueEntry type. Its
// JSON form is exactly the TypeScript one:
// {"message":…,"enqueuedAt":<Unix ms>,"expiresAt":<Unix ms>}. The zero
// value is not enqueueable (it has no Message and no ExpiresAt); build
// entries with NewQueueEntry.
type QueueEntry struct {
	// Message is the message's JSON text (in the Chat SDK, Message.toJSON()).
	// Empty (the zero value) is encoded as null and refused by Enqueue.
	Message json.RawMessage `json:"message"`
	// EnqueuedAt is when the entry was made; JSON "enqueuedAt", Unix ms. The
	// zero time is encoded as 0.
	EnqueuedAt time.Time `json:"-"`
	// ExpiresAt is when the entry goes stale; JSON "expiresAt", Unix ms.
	// Dequeue discards entries whose ExpiresAt has passed. The zero time is
	// encoded as 0 and refused by Enqueue.
	ExpiresAt time.Time `json:"-"`
}

// NewQueueEntry encodes message as JSON and returns an entry enqueued now
// that expires after ttl. It fails with an error matching
// ErrInvalidArgument if message cannot be encoded (see State.Set) or ttl is
// not positive.
func NewQueueEntry(message any, ttl time.Duration) (QueueEntry, error) {
	if ttl <= 0 {
		return QueueEntry{}, opError("NewQueueEntry", fmt.Errorf("%w: TTL must be positive, got %v", ErrInvalidArgument, ttl))
	}
	data, err := encodeJSON("queue entry message", message)
	if err != nil {
		return QueueEntry{}, opError("NewQueueEntry", err)
	}
	now := wallNow()
	return QueueEntry{Message: data, EnqueuedAt: now, ExpiresAt: now.Add(ttl)}, nil
}

// queueEntryJSON is the wire form of QueueEntry.
type queueEntryJSON struct {
	Message    json.RawMessage `json:"message"`
	EnqueuedAt unixMillis      `json:"enqueuedAt"`
	ExpiresAt  unixMillis      `json:"expiresAt"`
}

// MarshalJSON encodes the entry as {"message":…,"enqueuedAt":…,"expiresAt":…}
// with the times as integer Unix milliseconds (a zero time as 0). An empty
// Message is encoded as null.
func (e QueueEntry) MarshalJSON() ([]byte, error) {
	msg := e.Message
	if len(msg) == 0 {
		msg = json.RawMessage("null")
	}
	return marshalCompat(queueEntryJSON{Message: msg, EnqueuedAt: unixMillis(e.EnqueuedAt), ExpiresAt: unixMillis(e.ExpiresAt)})
}

// UnmarshalJSON decodes the TypeScript form. Times may be integers or
// fractional numbers of Unix milliseconds; 0, null or a missing field gives
// the zero time.
func (e *QueueEntry) UnmarshalJSON(data []byte) error {
	var w queueEntryJSON
	if err := json.Unmarshal(data, &w); err != nil {
		return err
	}
	*e = QueueEntry{EnqueuedAt: time.Time(w.EnqueuedAt), ExpiresAt: time.Time(w.ExpiresAt)}
	if len(w.Message) > 0 {
		e.Message = append(json.RawMessage(nil), w.Message...)
	}
	return nil
}

//go:embed enqueue.lua
var enqueueSource string

var enqueueScript = NewScript(enqueueSource).Idempotent()

// minQueueTTL is state-redis's floor for the queue list's TTL.
const minQueueTTL = 60 * time.Second

// Enqueue appends entry's JSON to {p}:queue:{threadID} in one script:
// RPUSH; LTRIM to the newest maxSize entries when maxSize > 0; PEXPIRE the
// list to max(entry.ExpiresAt − now, 60 s) (state-redis's rule, computed on
// the client); and returns LLEN, the new depth. maxSize 0 means no limit; a
// maxSize that is negative or above MaxListLength, an empty or invalid
// Message, or a zero ExpiresAt are refused with ErrInvalidArgument. The
// script carries an operation id (see State): a retry after a lost reply
// never queues the entry twice, and returns the depth of the single
// application.
func (s *State) Enqueue(ctx context.Context, threadID string, entry QueueEntry, maxSize int) (int, error) {
	n, err := s.enqueue(ctx, threadID, entry, maxSize)
	return n, opError("Enqueue", err)
}

func (s *State) enqueue(ctx context.Context, threadID string, entry QueueEntry, maxSize int) (int, error) {
	if err := checkID("thread id", threadID); err != nil {
		return 0, err
	}
	data, err := entryData(threadID, entry, maxSize)
	if err != nil {
		return 0, err
	}
	ttl := queueTTL(entry, s.now())
	v, err := s.runOp(ctx, enqueueScript, []string{s.queueKey(threadID)}, string(data), strconv.Itoa(maxSize), msArg(ttl))
	if err != nil {
		return 0, err
	}
	r, err := opReply(v, "enqueue")
	if err != nil {
		return 0, err
	}
	n, err := strconv.Atoi(r)
	if err != nil {
		return 0, protocolErrorf("enqueue script replied %q", truncate(r, 40))
	}
	return n, nil
}

// entryData checks entry and maxSize as Enqueue does (Admit too) and
// returns the entry's JSON.
func entryData(threadID string, entry QueueEntry, maxSize int) ([]byte, error) {
	if err := checkLength("maxSize", threadID, maxSize); err != nil {
		return nil, err
	}
	if len(entry.Message) == 0 || !json.Valid(entry.Message) || !utf8.Valid(entry.Message) {
		return nil, fmt.Errorf("%w: thread %q: entry message is empty or not valid JSON", ErrInvalidArgument, threadID)
	}
	if entry.ExpiresAt.IsZero() {
		return nil, fmt.Errorf("%w: thread %q: entry has no ExpiresAt", ErrInvalidArgument, threadID)
	}
	data, err := entry.MarshalJSON()
	if err != nil {
		return nil, fmt.Errorf("%w: thread %q: %w", ErrInvalidArgument, threadID, err)
	}
	return data, nil
}

// queueTTL is the TTL a queue gets when entry is queued at now:
// max(entry.ExpiresAt − now, 60 s), state-redis's rule.
func queueTTL(entry QueueEntry, now time.Time) time.Duration {
	return max(entry.ExpiresAt.Sub(now), minQueueTTL)
}

//go:embed dequeue.lua
var dequeueSource string

var dequeueScript = NewScript(dequeueSource).Idempotent()

// deadLetterTTL is how long {p}:queue-corrupt:{id} keeps corrupt entries.
const deadLetterTTL = 7 * 24 * time.Hour

// Dequeue removes and returns the oldest live entry of {p}:queue:{threadID},
// or nil when there is none. It runs one script that pops and discards
// expired entries (ExpiresAt before the client's clock, sent along; an
// entry expiring at this very millisecond is live, as in the Chat SDK core)
// until it finds a live one, which it pops and returns. This differs from
// state-redis, whose LPOP hands expired entries back for the caller to
// drop; the Chat SDK core drops them anyway.
//
// The script carries an operation id (see State) and records the entry it
// popped under {p}:op:{opID}: a retry after a lost reply pops nothing more
// and hands over the same entry, so no entry is lost to a lost reply. If
// every attempt fails (the error matches ErrOutcomeUnknown), the entry may
// have been popped; it then stays in that record, which nobody reads, until
// the record expires (10 minutes, or the call's deadline plus a minute),
// and is lost. The record costs the entry's size for that long.
//
// The script reads expiresAt from the end of the entry, where both
// JSON.stringify and Go write it, and decodes the entry with cjson only
// when it is laid out otherwise; so a message of any size or depth costs no
// decoding on the server.
//
// A corrupt entry (not JSON, no numeric expiresAt, or not decodable by Go)
// is moved to the dead-letter list {p}:queue-corrupt:{threadID}, kept for
// seven days, and Dequeue returns a *CorruptValueError naming the queue,
// with the bytes in Raw. Nothing is lost and the queue is not blocked: the
// next Dequeue goes on with the next entry. (state-redis throws after
// popping such an entry, losing it.) The "queue-corrupt" namespace is not
// one that state-redis uses, so it cannot collide with a thread's queue.
func (s *State) Dequeue(ctx context.Context, threadID string) (*QueueEntry, error) {
	e, err := s.dequeue(ctx, threadID)
	return e, opError("Dequeue", err)
}

func (s *State) dequeue(ctx context.Context, threadID string) (*QueueEntry, error) {
	if err := checkID("thread id", threadID); err != nil {
		return nil, err
	}
	rkey, dead := s.queueKey(threadID), s.deadLetterKey(threadID)
	v, err := s.runOp(ctx, dequeueScript, []string{rkey, dead}, strconv.FormatInt(s.now().UnixMilli(), 10), msArg(deadLetterTTL))
	if err != nil {
		return nil, err
	}
	r, err := opReply(v, "dequeue")
	if err != nil {
		return nil, err
	}
	status, raw := "", []byte(nil)
	if r != "" {
		status, raw = r[:1], []byte(r[1:])
	}
	switch status {
	case "n":
		return nil, nil
	case "c":
		return nil, &CorruptValueError{Key: rkey, Index: 0, Raw: raw, Err: fmt.Errorf("queue entry has no readable expiresAt; moved to %s", dead)}
	case "e":
	default:
		return nil, protocolErrorf("dequeue script replied %q", truncate(r, 40))
	}
	var e QueueEntry
	decodeErr := errors.New("not valid UTF-8")
	if utf8.Valid(raw) {
		decodeErr = json.Unmarshal(raw, &e)
	}
	if decodeErr == nil {
		return &e, nil
	}
	// The script took the entry off the queue; keep its bytes in the
	// dead-letter list rather than losing them (append.lua, with an
	// operation id of its own).
	if !utf8.Valid(raw) {
		return nil, &CorruptValueError{Key: rkey, Index: 0, Raw: raw, Err: fmt.Errorf("queue entry cannot be decoded (%s) and cannot be sent back to move it to %s (a request carries only valid UTF-8)", withoutPrefix(decodeErr), dead)}
	}
	_, err = s.runOp(ctx, appendScript, []string{dead}, string(raw), "0", msArg(deadLetterTTL))
	if err != nil {
		return nil, &CorruptValueError{Key: rkey, Index: 0, Raw: raw, Err: fmt.Errorf("queue entry cannot be decoded (%s) and could not be moved to %s: %w", withoutPrefix(decodeErr), dead, unprefixed{err})}
	}
	return nil, &CorruptValueError{Key: rkey, Index: 0, Raw: raw, Err: fmt.Errorf("queue entry cannot be decoded (%s); moved to %s", withoutPrefix(decodeErr), dead)}
}

// QueueDepth runs LLEN {p}:queue:{threadID}. Like state-redis, it counts
// expired entries that Dequeue has not discarded yet.
func (s *State) QueueDepth(ctx context.Context, threadID string) (int, error) {
	n, err := s.queueDepth(ctx, threadID)
	return n, opError("QueueDepth", err)
}

func (s *State) queueDepth(ctx context.Context, threadID string) (int, error) {
	if err := checkID("thread id", threadID); err != nil {
		return 0, err
	}
	v, err := s.c.Run(ctx, Cmd("LLEN", s.queueKey(threadID)))
	if err != nil {
		return 0, err
	}
	n, err := v.Int64()
	return int(n), err
}
