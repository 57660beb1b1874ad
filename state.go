package upstash

import (
	"bytes"
	"context"
	_ "embed"
	"encoding"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"reflect"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// StateAdapter is the Chat SDK's state contract (the TypeScript interface
// StateAdapter in the chat package): thread subscriptions, per-thread locks,
// a JSON cache with millisecond TTLs, capped lists and per-thread message
// queues. *State implements it over Upstash Redis with the key layout and
// value encoding of @chat-adapter/state-redis. The package statetest checks
// any implementation against the contract.
//
// Every method takes a context first and honours it. An empty thread id or
// key is refused with an error matching ErrInvalidArgument before any
// request is sent.
type StateAdapter interface {
	// Connect checks the URL and the token with one cheap request (PING).
	Connect(ctx context.Context) error
	// Disconnect releases nothing (HTTP holds no session) and returns nil.
	Disconnect(ctx context.Context) error
	// Subscribe adds threadID to the set of subscribed threads.
	Subscribe(ctx context.Context, threadID string) error
	// Unsubscribe removes threadID from the set of subscribed threads.
	Unsubscribe(ctx context.Context, threadID string) error
	// IsSubscribed reports whether threadID is in the set.
	IsSubscribed(ctx context.Context, threadID string) (bool, error)
	// AcquireLock takes the lock of threadID for ttl. It returns (nil, nil)
	// when another holder has it.
	AcquireLock(ctx context.Context, threadID string, ttl time.Duration) (*Lock, error)
	// ReleaseLock releases lock if it is still held under its token; a stale
	// or foreign lock is a silent no-op.
	ReleaseLock(ctx context.Context, lock *Lock) error
	// ExtendLock sets the lock's remaining time to ttl from now if it is still
	// held under its token, and reports whether it was.
	ExtendLock(ctx context.Context, lock *Lock, ttl time.Duration) (bool, error)
	// ForceReleaseLock removes the lock of threadID, whoever holds it.
	ForceReleaseLock(ctx context.Context, threadID string) error
	// Get returns the JSON text stored at key: nil for a missing key,
	// "null" for a stored null.
	Get(ctx context.Context, key string) (json.RawMessage, error)
	// Set stores value, encoded as JSON, at key; ttl 0 means no expiry.
	Set(ctx context.Context, key string, value any, ttl time.Duration) error
	// SetIfNotExists stores value at key only if key is absent, and reports
	// whether this call wrote it. It never overwrites.
	SetIfNotExists(ctx context.Context, key string, value any, ttl time.Duration) (bool, error)
	// Delete removes key from the cache.
	Delete(ctx context.Context, key string) error
	// AppendToList appends value to the list at key, atomically trimming and
	// refreshing the TTL as opts say.
	AppendToList(ctx context.Context, key string, value any, opts ListOptions) error
	// GetList returns the list at key, oldest first; [] for a missing key.
	GetList(ctx context.Context, key string) ([]json.RawMessage, error)
	// Enqueue appends entry to the queue of threadID, keeping at most maxSize
	// newest entries when maxSize > 0, and returns the new depth.
	Enqueue(ctx context.Context, threadID string, entry QueueEntry, maxSize int) (int, error)
	// Dequeue removes and returns the oldest live entry of the queue of
	// threadID; nil when there is none.
	Dequeue(ctx context.Context, threadID string) (*QueueEntry, error)
	// QueueDepth returns the number of entries in the queue of threadID.
	QueueDepth(ctx context.Context, threadID string) (int, error)
}

// ListOptions tunes AppendToList.
type ListOptions struct {
	// MaxLength keeps only the newest MaxLength items after the append; 0
	// means no trimming. Negative values are refused.
	MaxLength int
	// TTL sets the whole list to expire TTL after this append; 0 keeps the
	// list's current TTL (possibly none). Negative values are refused.
	TTL time.Duration
}

// QueueEntry is one queued message, as the Chat SDK's QueueEntry type. Its
// JSON form is exactly the TypeScript one:
// {"message":…,"enqueuedAt":<Unix ms>,"expiresAt":<Unix ms>}.
type QueueEntry struct {
	// Message is the message's JSON text (in the Chat SDK, Message.toJSON()).
	Message json.RawMessage `json:"message"`
	// EnqueuedAt is when the entry was made; JSON "enqueuedAt", Unix ms.
	EnqueuedAt time.Time `json:"-"`
	// ExpiresAt is when the entry goes stale; JSON "expiresAt", Unix ms.
	// Dequeue discards entries whose ExpiresAt has passed.
	ExpiresAt time.Time `json:"-"`
}

// NewQueueEntry encodes message as JSON and returns an entry enqueued now
// that expires after ttl. It fails with an error matching
// ErrInvalidArgument if message cannot be encoded (see State.Set) or ttl is
// not positive.
func NewQueueEntry(message any, ttl time.Duration) (QueueEntry, error) {
	if ttl <= 0 {
		return QueueEntry{}, fmt.Errorf("%w: queue entry TTL must be positive, got %v", ErrInvalidArgument, ttl)
	}
	data, err := encodeJSON("queue entry message", message)
	if err != nil {
		return QueueEntry{}, err
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

// unixMillis is a time encoded in JSON as integer Unix milliseconds, as
// JavaScript's Date.now() gives them. The zero time is encoded as 0, and 0
// decodes to the zero time.
type unixMillis time.Time

func (u unixMillis) MarshalJSON() ([]byte, error) {
	t := time.Time(u)
	if t.IsZero() {
		return []byte("0"), nil
	}
	return strconv.AppendInt(nil, t.UnixMilli(), 10), nil
}

func (u *unixMillis) UnmarshalJSON(data []byte) error {
	if string(data) == "null" {
		*u = unixMillis{}
		return nil
	}
	ms, err := strconv.ParseInt(string(data), 10, 64)
	if err != nil {
		f, ferr := strconv.ParseFloat(string(data), 64)
		if ferr != nil || math.IsNaN(f) || math.IsInf(f, 0) || math.Abs(f) > 1<<53 {
			return fmt.Errorf("upstash: time %s is not a number of Unix milliseconds", truncate(string(data), 40))
		}
		ms = int64(math.Floor(f))
	}
	if ms == 0 {
		*u = unixMillis{}
		return nil
	}
	*u = unixMillis(time.UnixMilli(ms))
	return nil
}

// ErrCorruptValue is matched (errors.Is) by every *CorruptValueError.
var ErrCorruptValue = errors.New("upstash: stored value is not valid JSON")

// CorruptValueError reports bytes in the database that are not a valid
// JSON text (or, in a queue, not a queue entry). Nothing is deleted: the
// bytes stay where they are, and Raw holds a copy.
type CorruptValueError struct {
	// Key is the Redis key, prefix included ("chat-sdk:cache:k").
	Key string
	// Index is the item's position in a list, or -1.
	Index int
	// Raw is the stored bytes.
	Raw []byte
	// Err is the decoding error, if any.
	Err error
}

func (e *CorruptValueError) Error() string {
	where := strconv.Quote(e.Key)
	if e.Index >= 0 {
		where += " item " + strconv.Itoa(e.Index)
	}
	msg := "upstash: corrupt value at " + where + " (" + strconv.Itoa(len(e.Raw)) + " bytes)"
	if e.Err != nil {
		msg += ": " + e.Err.Error()
	}
	return msg
}

// Unwrap returns the decoding error.
func (e *CorruptValueError) Unwrap() error { return e.Err }

// Is makes errors.Is(err, ErrCorruptValue) true.
func (e *CorruptValueError) Is(target error) bool { return target == ErrCorruptValue }

// DefaultKeyPrefix is the key prefix of state-redis and of NewState.
const DefaultKeyPrefix = "chat-sdk"

type stateSettings struct {
	prefix string
}

// StateOption configures a State.
type StateOption func(*stateSettings)

// WithKeyPrefix sets the prefix of every key (default "chat-sdk"). As in
// state-redis, "" means the default.
func WithKeyPrefix(prefix string) StateOption {
	return func(s *stateSettings) { s.prefix = prefix }
}

// State implements StateAdapter over Upstash Redis, byte-compatible with
// @chat-adapter/state-redis: Go and TypeScript bots can share one database.
// Keys ({p} is the prefix, "chat-sdk" by default):
//
//	{p}:subscriptions   SET of thread ids
//	{p}:lock:{id}       STRING holding the lock token, PX ttl
//	{p}:cache:{key}     STRING holding the value's JSON text, optional PX ttl
//	{p}:list:{key}      LIST of JSON texts
//	{p}:queue:{id}      LIST of JSON queue entries
//
// Values are stored as their raw JSON text with no envelope: the string
// "abc" is stored with its quotes, true as true. Every operation is one HTTP
// request; scripts are sent as EVALSHA with an EVAL fallback.
//
// A State is safe for concurrent use.
type State struct {
	c      *Client
	prefix string
}

var _ StateAdapter = (*State)(nil)

// NewState returns the state adapter over c.
func NewState(c *Client, opts ...StateOption) *State {
	s := stateSettings{}
	for _, o := range opts {
		o(&s)
	}
	if s.prefix == "" {
		s.prefix = DefaultKeyPrefix
	}
	return &State{c: c, prefix: s.prefix}
}

// Client returns the client the state runs on, for commands of its own.
func (s *State) Client() *Client { return s.c }

func (s *State) key(kind, id string) string { return s.prefix + ":" + kind + ":" + id }

func (s *State) subscriptionsKey() string { return s.prefix + ":subscriptions" }

// checkID refuses an empty thread id or key.
func checkID(what, id string) error {
	if id == "" {
		return fmt.Errorf("%w: empty %s", ErrInvalidArgument, what)
	}
	return nil
}

// Connect sends one PING, which checks the URL and the token (a read-only
// token passes too). Calling it at init time, outside the handler, moves the
// TLS handshake out of the first invocation.
func (s *State) Connect(ctx context.Context) error {
	// The client's error already reads "upstash: PING: …"; a second
	// prefix would only repeat it.
	return s.c.Ping(ctx)
}

// Disconnect returns nil: HTTP holds no session to close. The State stays
// usable afterwards (state-redis would refuse calls until connect).
func (s *State) Disconnect(ctx context.Context) error { return nil }

// Subscribe runs SADD {p}:subscriptions threadID. The reply is discarded,
// so the command is safe to retry after a lost reply.
func (s *State) Subscribe(ctx context.Context, threadID string) error {
	if err := checkID("thread id", threadID); err != nil {
		return err
	}
	_, err := s.c.Run(ctx, Cmd("SADD", s.subscriptionsKey(), threadID).Idempotent())
	return err
}

// Unsubscribe runs SREM {p}:subscriptions threadID (retried like Subscribe).
func (s *State) Unsubscribe(ctx context.Context, threadID string) error {
	if err := checkID("thread id", threadID); err != nil {
		return err
	}
	_, err := s.c.Run(ctx, Cmd("SREM", s.subscriptionsKey(), threadID).Idempotent())
	return err
}

// IsSubscribed runs SISMEMBER {p}:subscriptions threadID.
func (s *State) IsSubscribed(ctx context.Context, threadID string) (bool, error) {
	if err := checkID("thread id", threadID); err != nil {
		return false, err
	}
	v, err := s.c.Run(ctx, Cmd("SISMEMBER", s.subscriptionsKey(), threadID))
	if err != nil {
		return false, err
	}
	n, err := v.Int64()
	return n == 1, err
}

// Get runs GET {p}:cache:{key} and returns the stored JSON text, nil for a
// missing key and "null" for a stored null. Stored bytes that are not a
// valid JSON text (in valid UTF-8) give a *CorruptValueError and are left in
// place. (state-redis returns such bytes as a raw string instead; a Go caller
// gets a typed error and the bytes in its Raw field.)
func (s *State) Get(ctx context.Context, key string) (json.RawMessage, error) {
	if err := checkID("key", key); err != nil {
		return nil, err
	}
	rkey := s.key("cache", key)
	v, err := s.c.Run(ctx, Cmd("GET", rkey))
	if err != nil {
		return nil, err
	}
	if v.IsNil() {
		return nil, nil
	}
	b, err := v.Bytes()
	if err != nil {
		return nil, fmt.Errorf("upstash: GET %q: %w", rkey, err)
	}
	return checkStored(rkey, -1, b)
}

// checkStored returns b as JSON, or a *CorruptValueError if it is not a
// valid JSON text.
func checkStored(rkey string, index int, b []byte) (json.RawMessage, error) {
	if !utf8.Valid(b) {
		return nil, &CorruptValueError{Key: rkey, Index: index, Raw: b, Err: errors.New("not valid UTF-8")}
	}
	if !json.Valid(b) {
		var x any
		err := json.Unmarshal(b, &x)
		if err == nil {
			err = errors.New("not a JSON text")
		}
		return nil, &CorruptValueError{Key: rkey, Index: index, Raw: b, Err: err}
	}
	return json.RawMessage(b), nil
}

// GetJSON reads key with s.Get and decodes the JSON into a T. found is false
// (and err nil) for a missing key; a stored null gives found true and the
// zero T. A JSON text that does not fit T gives an error from
// encoding/json, wrapped with the key.
func GetJSON[T any](ctx context.Context, s StateAdapter, key string) (value T, found bool, err error) {
	raw, err := s.Get(ctx, key)
	if err != nil || raw == nil {
		return value, false, err
	}
	if err := json.Unmarshal(raw, &value); err != nil {
		var zero T
		return zero, true, fmt.Errorf("upstash: decode %q as %T: %w", key, zero, err)
	}
	return value, true, nil
}

// Set encodes value as JSON and stores it at {p}:cache:{key}.
//
// ttl 0 sends a plain SET, which also clears any TTL the key had (as
// state-redis does); ttl > 0 sends SET PX (milliseconds, a sub-millisecond
// remainder rounded up); a negative ttl is refused with ErrInvalidArgument.
//
// Encoding: encoding/json, adjusted to write what JavaScript's
// JSON.stringify writes (<, > and & unescaped, U+2028 and U+2029 raw, -0 as
// 0), so a value stored from Go is byte-identical to the same value stored
// by state-redis. One difference remains: encoding/json sorts map keys,
// while JSON.stringify keeps insertion order (struct fields keep their
// order). A json.RawMessage is stored exactly as given once it is checked to
// be valid JSON in valid UTF-8. A []byte is stored as encoding/json encodes
// it: a base64 JSON string (GetJSON[[]byte] reads it back); wrap
// pre-encoded JSON in json.RawMessage instead. Values encoding/json cannot
// encode (channels, functions, NaN, ±Inf, cycles) and strings or map keys
// that are not valid UTF-8 (which encoding/json would silently turn into
// U+FFFD) are refused with an error matching ErrInvalidArgument that names
// the key, before any request.
//
// A plain SET is safe to repeat, so it is retried after a lost reply.
func (s *State) Set(ctx context.Context, key string, value any, ttl time.Duration) error {
	if err := checkID("key", key); err != nil {
		return err
	}
	if ttl < 0 {
		return fmt.Errorf("%w: Set %q: negative TTL %v", ErrInvalidArgument, key, ttl)
	}
	data, err := encodeJSON(strconv.Quote(key), value)
	if err != nil {
		return err
	}
	args := []any{s.key("cache", key), string(data)}
	if ttl > 0 {
		args = append(args, "PX", durationMillis(ttl))
	}
	_, err = s.c.Run(ctx, Cmd("SET", args...))
	return err
}

// SetIfNotExists stores value at {p}:cache:{key} with SET NX (PX ttl when
// ttl > 0), and returns true only if this call wrote it. It never
// overwrites; an expired key counts as absent. Encoding and TTL rules are
// those of Set.
//
// SET NX is never retried once the request may have reached the server: if
// the reply is lost the error matches ErrOutcomeUnknown, and the caller
// cannot know whether the value was written. For deduplication, treat that
// as "not seen before" (process the message twice rather than drop it).
func (s *State) SetIfNotExists(ctx context.Context, key string, value any, ttl time.Duration) (bool, error) {
	if err := checkID("key", key); err != nil {
		return false, err
	}
	if ttl < 0 {
		return false, fmt.Errorf("%w: SetIfNotExists %q: negative TTL %v", ErrInvalidArgument, key, ttl)
	}
	data, err := encodeJSON(strconv.Quote(key), value)
	if err != nil {
		return false, err
	}
	args := []any{s.key("cache", key), string(data), "NX"}
	if ttl > 0 {
		args = append(args, "PX", durationMillis(ttl))
	}
	v, err := s.c.Run(ctx, Cmd("SET", args...))
	if err != nil {
		return false, err
	}
	return v.Bool()
}

// Delete runs DEL {p}:cache:{key}; a missing key is not an error. It is
// retried after a lost reply (deleting twice is harmless).
func (s *State) Delete(ctx context.Context, key string) error {
	if err := checkID("key", key); err != nil {
		return err
	}
	_, err := s.c.Run(ctx, Cmd("DEL", s.key("cache", key)).Idempotent())
	return err
}

//go:embed append.lua
var appendSource string

var appendScript = NewScript(appendSource)

// AppendToList appends value's JSON (encoded as in Set) to {p}:list:{key}
// in one script: RPUSH; LTRIM to the newest opts.MaxLength items when it is
// positive; PEXPIRE opts.TTL when it is positive (otherwise the list keeps
// its TTL, possibly none). Negative MaxLength or TTL is refused with
// ErrInvalidArgument (state-redis ignores a negative MaxLength, while the
// memory and pg adapters wipe the list). The script is never retried after
// the request may have landed (the error then matches ErrOutcomeUnknown), so
// an item is never appended twice.
func (s *State) AppendToList(ctx context.Context, key string, value any, opts ListOptions) error {
	if err := checkID("key", key); err != nil {
		return err
	}
	if opts.MaxLength < 0 || opts.TTL < 0 {
		return fmt.Errorf("%w: AppendToList %q: negative MaxLength (%d) or TTL (%v)", ErrInvalidArgument, key, opts.MaxLength, opts.TTL)
	}
	data, err := encodeJSON(strconv.Quote(key), value)
	if err != nil {
		return err
	}
	_, err = appendScript.Run(ctx, s.c, []string{s.key("list", key)}, string(data), opts.MaxLength, durationMillis(opts.TTL))
	return err
}

// GetList runs LRANGE {p}:list:{key} 0 -1 and returns the items oldest
// first; a missing key gives an empty, non-nil slice. An item that is not
// valid JSON gives a *CorruptValueError with its index; nothing is deleted.
func (s *State) GetList(ctx context.Context, key string) ([]json.RawMessage, error) {
	if err := checkID("key", key); err != nil {
		return nil, err
	}
	rkey := s.key("list", key)
	v, err := s.c.Run(ctx, Cmd("LRANGE", rkey, 0, -1))
	if err != nil {
		return nil, err
	}
	items, err := v.Array()
	if err != nil {
		return nil, fmt.Errorf("upstash: LRANGE %q: %w", rkey, err)
	}
	out := make([]json.RawMessage, len(items))
	for i, it := range items {
		b, err := it.Bytes()
		if err != nil {
			return nil, fmt.Errorf("upstash: LRANGE %q item %d: %w", rkey, i, err)
		}
		if out[i], err = checkStored(rkey, i, b); err != nil {
			return nil, err
		}
	}
	return out, nil
}

//go:embed enqueue.lua
var enqueueSource string

var enqueueScript = NewScript(enqueueSource)

// minQueueTTL is state-redis's floor for the queue list's TTL.
const minQueueTTL = 60 * time.Second

// Enqueue appends entry's JSON to {p}:queue:{threadID} in one script:
// RPUSH; LTRIM to the newest maxSize entries when maxSize > 0; PEXPIRE the
// list to max(entry.ExpiresAt − now, 60 s) (state-redis's rule, computed on
// the client); and returns LLEN, the new depth. maxSize < 0, an empty or
// invalid Message, or a zero ExpiresAt are refused with ErrInvalidArgument.
// The script is never retried after the request may have landed (the error
// then matches ErrOutcomeUnknown).
func (s *State) Enqueue(ctx context.Context, threadID string, entry QueueEntry, maxSize int) (int, error) {
	if err := checkID("thread id", threadID); err != nil {
		return 0, err
	}
	if maxSize < 0 {
		return 0, fmt.Errorf("%w: Enqueue %q: negative maxSize %d", ErrInvalidArgument, threadID, maxSize)
	}
	if len(entry.Message) == 0 || !json.Valid(entry.Message) || !utf8.Valid(entry.Message) {
		return 0, fmt.Errorf("%w: Enqueue %q: entry message is empty or not valid JSON", ErrInvalidArgument, threadID)
	}
	if entry.ExpiresAt.IsZero() {
		return 0, fmt.Errorf("%w: Enqueue %q: entry has no ExpiresAt", ErrInvalidArgument, threadID)
	}
	data, err := entry.MarshalJSON()
	if err != nil {
		return 0, fmt.Errorf("%w: Enqueue %q: %w", ErrInvalidArgument, threadID, err)
	}
	ttl := max(entry.ExpiresAt.Sub(wallNow()), minQueueTTL)
	v, err := enqueueScript.Run(ctx, s.c, []string{s.key("queue", threadID)}, string(data), maxSize, durationMillis(ttl))
	if err != nil {
		return 0, err
	}
	n, err := v.Int64()
	return int(n), err
}

//go:embed dequeue.lua
var dequeueSource string

var dequeueScript = NewScript(dequeueSource)

// Dequeue removes and returns the oldest live entry of {p}:queue:{threadID},
// or nil when there is none. It runs one script that pops and discards
// expired entries (ExpiresAt at or before the client's clock, sent along)
// until it finds a live one, which it pops and returns. This differs from
// state-redis, whose LPOP hands expired entries back for the caller to drop;
// the Chat SDK core drops them anyway.
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
// The script is never retried after the request may have landed (the error
// then matches ErrOutcomeUnknown).
func (s *State) Dequeue(ctx context.Context, threadID string) (*QueueEntry, error) {
	if err := checkID("thread id", threadID); err != nil {
		return nil, err
	}
	rkey, dead := s.key("queue", threadID), s.key("queue-corrupt", threadID)
	v, err := dequeueScript.Run(ctx, s.c, []string{rkey, dead}, wallNow().UnixMilli(), deadLetterTTL.Milliseconds())
	if err != nil {
		return nil, err
	}
	if v.IsNil() {
		return nil, nil
	}
	parts, err := v.Array()
	if err != nil || len(parts) != 2 {
		return nil, protocolErrorf("dequeue script replied %s", v)
	}
	status, err1 := parts[0].Int64()
	raw, err2 := parts[1].Bytes()
	if err1 != nil || err2 != nil {
		return nil, protocolErrorf("dequeue script replied %s", v)
	}
	if status != 1 {
		return nil, &CorruptValueError{Key: rkey, Index: 0, Raw: raw, Err: fmt.Errorf("queue entry has no readable expiresAt; moved to %s", dead)}
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
	// dead-letter list rather than losing them.
	results, err := s.c.Pipeline(ctx, Cmd("RPUSH", dead, raw), Cmd("PEXPIRE", dead, deadLetterTTL.Milliseconds()))
	if err == nil {
		err = results[0].Err
	}
	if err != nil {
		return nil, &CorruptValueError{Key: rkey, Index: 0, Raw: raw, Err: fmt.Errorf("queue entry cannot be decoded (%v) and could not be moved to %s: %w", decodeErr, dead, err)}
	}
	return nil, &CorruptValueError{Key: rkey, Index: 0, Raw: raw, Err: fmt.Errorf("queue entry cannot be decoded (%v); moved to %s", decodeErr, dead)}
}

// deadLetterTTL is how long {p}:queue-corrupt:{id} keeps corrupt entries.
const deadLetterTTL = 7 * 24 * time.Hour

// QueueDepth runs LLEN {p}:queue:{threadID}. Like state-redis, it counts
// expired entries that Dequeue has not discarded yet.
func (s *State) QueueDepth(ctx context.Context, threadID string) (int, error) {
	if err := checkID("thread id", threadID); err != nil {
		return 0, err
	}
	v, err := s.c.Run(ctx, Cmd("LLEN", s.key("queue", threadID)))
	if err != nil {
		return 0, err
	}
	n, err := v.Int64()
	return int(n), err
}

// wallNow returns the current time without its monotonic reading, so that
// differences are wall-clock differences, comparable with the server's and
// other processes' clocks.
func wallNow() time.Time { return time.Now().Round(0) }

// encodeJSON encodes value for storage. what names the value in errors.
func encodeJSON(what string, value any) ([]byte, error) {
	if raw, ok := value.(json.RawMessage); ok {
		if !utf8.Valid(raw) || !json.Valid(raw) {
			return nil, fmt.Errorf("%w: value for %s: json.RawMessage is not valid JSON", ErrInvalidArgument, what)
		}
		return raw, nil
	}
	data, err := marshalCompat(value)
	if err != nil {
		return nil, fmt.Errorf("%w: value for %s cannot be encoded as JSON: %w", ErrInvalidArgument, what, err)
	}
	if !utf8.Valid(data) {
		return nil, fmt.Errorf("%w: value for %s: a MarshalJSON method produced invalid UTF-8", ErrInvalidArgument, what)
	}
	if bytes.Contains(data, []byte(`\ufffd`)) {
		if path := findInvalidUTF8(value); path != "" {
			return nil, fmt.Errorf("%w: value for %s: string at %s is not valid UTF-8 (encoding/json would replace it with U+FFFD)", ErrInvalidArgument, what, path)
		}
	}
	return data, nil
}

// marshalCompat encodes v like json.Marshal, but writes what JavaScript's
// JSON.stringify writes where the two differ: <, > and & unescaped, U+2028
// and U+2029 as themselves rather than \u2028 and \u2029, and negative
// zero as 0.
func marshalCompat(v any) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	out := bytes.TrimSuffix(buf.Bytes(), []byte("\n"))
	if bytes.Contains(out, []byte(`\u202`)) || bytes.Contains(out, []byte("-0")) {
		out = jsCompat(out)
	}
	return out, nil
}

// jsCompat rewrites valid compact JSON from encoding/json: the escapes
// \u2028 and \u2029 inside strings become the raw characters, and the
// number -0 becomes 0. Both changes keep the JSON value (up to the sign of
// zero, which JSON.stringify drops too).
func jsCompat(in []byte) []byte {
	out := make([]byte, 0, len(in))
	inString := false
	for i := 0; i < len(in); i++ {
		c := in[i]
		switch {
		case inString && c == '\\':
			if i+5 < len(in) && in[i+1] == 'u' && (string(in[i+2:i+6]) == "2028" || string(in[i+2:i+6]) == "2029") {
				if in[i+5] == '8' {
					out = append(out, "\u2028"...)
				} else {
					out = append(out, "\u2029"...)
				}
				i += 5
				continue
			}
			out = append(out, c, in[i+1]) // any other escape, kept whole
			i++
			continue
		case c == '"':
			inString = !inString
		case !inString && c == '-' && i+1 < len(in) && in[i+1] == '0' && (i+2 == len(in) || bytes.IndexByte([]byte(",]} \t\r\n"), in[i+2]) >= 0):
			out = append(out, '0')
			i++
			continue
		}
		out = append(out, c)
	}
	return out
}

var (
	jsonMarshalerType = reflect.TypeOf((*json.Marshaler)(nil)).Elem()
	textMarshalerType = reflect.TypeOf((*encoding.TextMarshaler)(nil)).Elem()
)

// findInvalidUTF8 returns a path to a string or map key in v that is not
// valid UTF-8 and that encoding/json would encode (silently replacing the
// bad bytes with U+FFFD), or "" if there is none. It follows what
// encoding/json visits: exported fields not tagged "-", map keys and values,
// slice and array elements, pointers and interfaces; values with their own
// MarshalJSON are skipped (their output is checked separately), and
// MarshalText output is checked, since encoding/json quotes it.
func findInvalidUTF8(v any) string {
	return walkUTF8(reflect.ValueOf(v), "value", 0)
}

func walkUTF8(v reflect.Value, path string, depth int) string {
	if !v.IsValid() || depth > 64 {
		return ""
	}
	t := v.Type()
	if t.Implements(jsonMarshalerType) || reflect.PointerTo(t).Implements(jsonMarshalerType) && v.CanAddr() {
		return ""
	}
	if t.Implements(textMarshalerType) {
		if (t.Kind() == reflect.Pointer || t.Kind() == reflect.Interface) && v.IsNil() || !v.CanInterface() {
			return ""
		}
		if b, err := v.Interface().(encoding.TextMarshaler).MarshalText(); err == nil && !utf8.Valid(b) {
			return path
		}
		return ""
	}
	switch v.Kind() {
	case reflect.String:
		if !utf8.ValidString(v.String()) {
			return path
		}
	case reflect.Pointer, reflect.Interface:
		if !v.IsNil() {
			return walkUTF8(v.Elem(), path, depth+1)
		}
	case reflect.Slice:
		if t.Elem().Kind() == reflect.Uint8 && !t.Elem().Implements(jsonMarshalerType) && !t.Elem().Implements(textMarshalerType) {
			return "" // []byte is encoded as base64
		}
		fallthrough
	case reflect.Array:
		for i := 0; i < v.Len(); i++ {
			if p := walkUTF8(v.Index(i), path+"["+strconv.Itoa(i)+"]", depth+1); p != "" {
				return p
			}
		}
	case reflect.Map:
		iter := v.MapRange()
		for iter.Next() {
			k := iter.Key()
			name := "?"
			if k.Kind() == reflect.String {
				name = k.String()
			} else if k.CanInterface() {
				name = fmt.Sprint(k.Interface())
			}
			if k.Kind() == reflect.String && !utf8.ValidString(k.String()) {
				return path + " (a map key)"
			}
			if k.Kind() != reflect.String && k.Type().Implements(textMarshalerType) && k.CanInterface() {
				if b, err := k.Interface().(encoding.TextMarshaler).MarshalText(); err == nil && !utf8.Valid(b) {
					return path + " (a map key)"
				}
			}
			if p := walkUTF8(iter.Value(), path+"["+strconv.Quote(name)+"]", depth+1); p != "" {
				return p
			}
		}
	case reflect.Struct:
		for i := 0; i < t.NumField(); i++ {
			f := t.Field(i)
			if f.Tag.Get("json") == "-" || !f.IsExported() && !f.Anonymous {
				continue
			}
			name := f.Name
			if tag, _, _ := strings.Cut(f.Tag.Get("json"), ","); tag != "" {
				name = tag
			}
			if !utf8.ValidString(name) {
				return path + "." + strconv.Quote(name)
			}
			if p := walkUTF8(v.Field(i), path+"."+name, depth+1); p != "" {
				return p
			}
		}
	}
	return ""
}
