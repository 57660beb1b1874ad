package upstash

import (
	"context"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
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

// DefaultKeyPrefix is the key prefix of state-redis and of NewState.
const DefaultKeyPrefix = "chat-sdk"

type stateSettings struct {
	prefix string
	// boundLocks and lockMargin: WithLockTTLWithinDeadline.
	boundLocks bool
	lockMargin time.Duration
}

// StateOption configures a State. NewState with no options gives the
// defaults each option documents.
type StateOption func(*stateSettings)

// WithKeyPrefix sets the prefix of every key. Without it, or with "" (as
// in state-redis), the prefix is DefaultKeyPrefix, "chat-sdk".
func WithKeyPrefix(prefix string) StateOption {
	return func(s *stateSettings) { s.prefix = prefix }
}

// WithLockTTLWithinDeadline bounds the TTL of every lock the State takes
// or extends (AcquireLock, AcquireLockWait, ExtendLock, Refresh,
// KeepLockAlive, WithLock) by the call context's deadline plus margin, as
// TTLWithinDeadline does. A function killed at its deadline (Lambda,
// Vercel) then leaves a lock that lapses margin after it, instead of a
// full TTL later. Contexts without a deadline are not affected.
func WithLockTTLWithinDeadline(margin time.Duration) StateOption {
	return func(s *stateSettings) { s.boundLocks, s.lockMargin = true, margin }
}

// State implements StateAdapter over Upstash Redis, byte-compatible with
// @chat-adapter/state-redis: Go and TypeScript bots can share one database.
// Keys ({p} is the prefix, "chat-sdk" by default):
//
//	{p}:subscriptions         SET of thread ids
//	{p}:lock:{id}             STRING holding the lock token, PX ttl
//	{p}:cache:{key}           STRING holding the value's JSON text, optional PX ttl
//	{p}:list:{key}            LIST of JSON texts
//	{p}:queue:{id}            LIST of JSON queue entries
//	{p}:queue-corrupt:{id}    LIST of queue entries Dequeue could not read
//	{p}:op:{opID}             the recorded outcome of one operation (Go only)
//	{p}:fence:{id}            the lock's fencing counter (Go only)
//
// Values are stored as their raw JSON text with no envelope: the string
// "abc" is stored with its quotes, true as true. Every operation is one HTTP
// request; scripts are sent as EVALSHA with an EVAL fallback, and every
// script declares Upstash's allow-key-locking flag, so it locks only the
// keys it names instead of the whole database.
//
// Exactly once on the wire: every operation whose repeat could change
// anything (Subscribe, Unsubscribe, Set, SetIfNotExists, Delete,
// AppendToList, Enqueue, Dequeue and the lock operations) runs as one
// script that carries a random operation id, made once per call. The
// script records its outcome under {p}:op:{opID} (a few dozen bytes; for
// Dequeue, the entry it popped) for at least 10 minutes, or the call's
// deadline plus a minute when that is longer, and a repeat of the same id
// applies nothing and returns the recorded outcome. So these operations
// are retried like reads (after a lost reply, a reset, a 503, or net/http
// resending the request), a retry never lands on top of another client's
// newer write, and the result is the one of the single application. Only
// when every attempt within the deadline failed does the error match
// ErrOutcomeUnknown: the operation then ran once or not at all. TypeScript
// adapters never read the op and fence keys.
//
// An error from a State method names the method: "upstash: Enqueue: …". It
// wraps the underlying error, so errors.Is and errors.As see the sentinels
// (ErrInvalidArgument, ErrOutcomeUnknown…), *Error and *CorruptValueError
// as before.
//
// A State is safe for concurrent use. Build it with NewState; the zero
// State has no client and cannot be used.
type State struct {
	c      *Client
	prefix string
	// boundLocks and lockMargin: WithLockTTLWithinDeadline.
	boundLocks bool
	lockMargin time.Duration
	// clock is the time source of locks and KeepLockAlive: the wall clock,
	// or a manual clock in this package's tests.
	clock clock
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
	return &State{c: c, prefix: s.prefix, boundLocks: s.boundLocks, lockMargin: s.lockMargin, clock: wallClock{}}
}

// Client returns the client the state runs on, for commands of its own.
func (s *State) Client() *Client { return s.c }

// opError gives err the name of the State method the user called: its text
// is "upstash: <op>: " followed by err's text without its own leading
// "upstash: ", so the prefix appears once. It unwraps to err, so errors.Is
// and errors.As see every sentinel and error type err carries. A nil err
// gives nil.
func opError(op string, err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("upstash: %s: %w", op, unprefixed{err})
}

// wrapf adds context (a command and its key, say) to err the way opError
// does: "upstash: <context>: <err without its prefix>".
func wrapf(err error, format string, args ...any) error {
	return opError(fmt.Sprintf(format, args...), err)
}

// unprefixed is err quoted inside another error: the same error, with its
// text stripped of the leading "upstash: ".
type unprefixed struct{ err error }

func (u unprefixed) Error() string { return withoutPrefix(u.err) }

func (u unprefixed) Unwrap() error { return u.err }

// withoutPrefix returns err's text without its leading "upstash: ".
func withoutPrefix(err error) string { return strings.TrimPrefix(err.Error(), "upstash: ") }

// checkID refuses an empty thread id or key.
func checkID(what, id string) error {
	if id == "" {
		return fmt.Errorf("%w: empty %s", ErrInvalidArgument, what)
	}
	return nil
}

// wallNow returns the current time without its monotonic reading, so that
// differences are wall-clock differences, comparable with the server's and
// other processes' clocks.
func wallNow() time.Time { return time.Now().Round(0) }

// Connect sends one PING, which checks the URL and the token (a read-only
// token passes too). Calling it at init time, outside the handler, moves the
// TLS handshake out of the first invocation.
func (s *State) Connect(ctx context.Context) error {
	return opError("Connect", s.c.Ping(ctx))
}

// Disconnect returns nil: HTTP holds no session to close. The State stays
// usable afterwards (state-redis would refuse calls until connect).
func (s *State) Disconnect(ctx context.Context) error { return nil }

// The scripts of the subscription and cache operations (see op.go).
var (
	//go:embed subscription.lua
	subscriptionSource string
	subscriptionScript = NewScript(subscriptionSource).Idempotent()

	//go:embed set.lua
	setSource string
	setScript = NewScript(setSource).Idempotent()

	//go:embed delete.lua
	deleteSource string
	deleteScript = NewScript(deleteSource).Idempotent()
)

// Subscribe adds threadID to the set {p}:subscriptions (SADD, in a script
// with an operation id: a retry cannot undo a later Unsubscribe).
func (s *State) Subscribe(ctx context.Context, threadID string) error {
	return opError("Subscribe", s.subscription(ctx, "SADD", threadID))
}

// Unsubscribe removes threadID from {p}:subscriptions (SREM, in a script
// with an operation id, as Subscribe).
func (s *State) Unsubscribe(ctx context.Context, threadID string) error {
	return opError("Unsubscribe", s.subscription(ctx, "SREM", threadID))
}

func (s *State) subscription(ctx context.Context, command, threadID string) error {
	if err := checkID("thread id", threadID); err != nil {
		return err
	}
	_, err := s.runOp(ctx, subscriptionScript, []string{s.subscriptionsKey()}, command, threadID)
	return err
}

// IsSubscribed runs SISMEMBER {p}:subscriptions threadID.
func (s *State) IsSubscribed(ctx context.Context, threadID string) (bool, error) {
	if err := checkID("thread id", threadID); err != nil {
		return false, opError("IsSubscribed", err)
	}
	v, err := s.c.Run(ctx, Cmd("SISMEMBER", s.subscriptionsKey(), threadID))
	if err != nil {
		return false, opError("IsSubscribed", err)
	}
	n, err := v.Int64()
	return n == 1, opError("IsSubscribed", err)
}

// Get runs GET {p}:cache:{key} and returns the stored JSON text, nil for a
// missing key and "null" for a stored null. Stored bytes that are not a
// valid JSON text (in valid UTF-8) give a *CorruptValueError and are left in
// place. (state-redis returns such bytes as a raw string instead; a Go caller
// gets a typed error and the bytes in its Raw field.)
func (s *State) Get(ctx context.Context, key string) (json.RawMessage, error) {
	v, err := s.get(ctx, key)
	return v, opError("Get", err)
}

func (s *State) get(ctx context.Context, key string) (json.RawMessage, error) {
	if err := checkID("key", key); err != nil {
		return nil, err
	}
	rkey := s.cacheKey(key)
	v, err := s.c.Run(ctx, Cmd("GET", rkey))
	if err != nil {
		return nil, err
	}
	if v.IsNil() {
		return nil, nil
	}
	b, err := v.Bytes()
	if err != nil {
		return nil, wrapf(err, "GET %q", rkey)
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
// zero T. An error from s.Get is returned as it is; a JSON text that does
// not fit T gives an error from encoding/json, wrapped with the key
// ("upstash: GetJSON: decode …").
func GetJSON[T any](ctx context.Context, s StateAdapter, key string) (value T, found bool, err error) {
	raw, err := s.Get(ctx, key)
	if err != nil || raw == nil {
		return value, false, err
	}
	if err := json.Unmarshal(raw, &value); err != nil {
		var zero T
		return zero, true, opError("GetJSON", fmt.Errorf("decode %q as %T: %w", key, zero, err))
	}
	return value, true, nil
}

// Set encodes value as JSON and stores it at {p}:cache:{key}.
//
// ttl 0 stores it without expiry, clearing any TTL the key had (as
// state-redis does); ttl > 0 stores it with that TTL (milliseconds, a
// sub-millisecond remainder rounded up); a negative ttl is refused with
// ErrInvalidArgument.
//
// Encoding: encoding/json, adjusted to write what JavaScript's
// JSON.stringify writes (<, > and & unescaped, U+2028 and U+2029 raw, -0 as
// 0), so a value stored from Go is byte-identical to the same value stored
// by state-redis. One difference remains: encoding/json sorts map keys,
// while JSON.stringify keeps insertion order (struct fields keep their
// order). A json.RawMessage is checked to be valid JSON in valid UTF-8 and
// compacted like any other value: whitespace outside strings removed, the
// sign of a zero dropped (-0 is stored as 0), \u2028 and \u2029 escapes
// written raw; other number literals and escapes are kept as written. A
// []byte is stored as encoding/json encodes it: a base64 JSON string
// (GetJSON[[]byte] reads it back); wrap pre-encoded JSON in json.RawMessage
// instead. Values encoding/json cannot encode (channels, functions, NaN,
// ±Inf, cycles) and strings or map keys that are not valid UTF-8 at any
// depth (which encoding/json would silently turn into U+FFFD) are refused
// with an error matching ErrInvalidArgument that names the key, before any
// request.
//
// The SET runs in a script with an operation id (see State), so a retry
// after a lost reply never overwrites a newer write of another client.
func (s *State) Set(ctx context.Context, key string, value any, ttl time.Duration) error {
	_, err := s.set(ctx, key, value, ttl, "")
	return opError("Set", err)
}

// set runs set.lua; nx is "NX" for SetIfNotExists and "" for Set.
func (s *State) set(ctx context.Context, key string, value any, ttl time.Duration, nx string) (bool, error) {
	if err := checkID("key", key); err != nil {
		return false, err
	}
	if ttl < 0 {
		return false, fmt.Errorf("%w: key %q: negative TTL %v", ErrInvalidArgument, key, ttl)
	}
	data, err := encodeJSON(strconv.Quote(key), value)
	if err != nil {
		return false, err
	}
	v, err := s.runOp(ctx, setScript, []string{s.cacheKey(key)}, string(data), nx, msArg(ttl))
	if err != nil {
		return false, err
	}
	return opFlag(v, "SET")
}

// SetIfNotExists stores value at {p}:cache:{key} only if the key is absent
// (SET NX, with PX ttl when ttl > 0), and returns true only if this call
// wrote it. It never overwrites; an expired key counts as absent. Encoding
// and TTL rules are those of Set.
//
// The SET NX runs in a script with an operation id (see State): a retry
// after a lost reply returns what the first run found, so true and false
// are always exact. Only when every attempt failed does the error match
// ErrOutcomeUnknown. For deduplication, treat that as "not seen before"
// (process the message twice rather than drop it); it takes a failure of
// every attempt within the call's deadline.
func (s *State) SetIfNotExists(ctx context.Context, key string, value any, ttl time.Duration) (bool, error) {
	ok, err := s.set(ctx, key, value, ttl, "NX")
	return ok, opError("SetIfNotExists", err)
}

// Delete removes {p}:cache:{key}; a missing key is not an error. The DEL
// runs in a script with an operation id (see State), so a retry never
// deletes a value another client wrote in the meantime.
func (s *State) Delete(ctx context.Context, key string) error {
	if err := checkID("key", key); err != nil {
		return opError("Delete", err)
	}
	_, err := s.runOp(ctx, deleteScript, []string{s.cacheKey(key)})
	return opError("Delete", err)
}

// ErrCorruptValue is matched (errors.Is) by every *CorruptValueError.
var ErrCorruptValue = errors.New("upstash: stored value is not valid JSON")

// CorruptValueError reports bytes in the database that are not a valid
// JSON text (or, in a queue, not a queue entry). Nothing is deleted: the
// bytes stay where they are, and Raw holds a copy.
type CorruptValueError struct {
	// Key is the Redis key, prefix included ("chat-sdk:cache:k").
	Key string
	// Index is the item's position in a list or queue (0 for the head of a
	// queue, where Dequeue reads), or -1 for a cache value.
	Index int
	// Raw is the stored bytes.
	Raw []byte
	// Err is the decoding error, if any.
	Err error
}

// Error names the key, the item and the size, never the bytes themselves.
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
