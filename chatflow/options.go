package chatflow

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/chatstate/upstash"
)

// The Chat SDK core's defaults (chat 4.41.1), which a Flow shares.
const (
	// DefaultDedupeTTL is how long a message id is remembered
	// ("dedupe:{adapter}:{id}", the core's dedupeTtlMs).
	DefaultDedupeTTL = 10 * time.Minute
	// DefaultLockTTL is the lock's time to live; the heartbeat extends it
	// to this every third of it (the core's 30 s, extended every 10 s).
	DefaultLockTTL = 30 * time.Second
	// DefaultMaxLockLifetime is how long the heartbeat keeps a lock alive
	// (maxLockLifetimeMs).
	DefaultMaxLockLifetime = 10 * time.Minute
	// DefaultMaxQueueSize is the most entries a thread's queue keeps
	// (maxQueueSize).
	DefaultMaxQueueSize = 10
	// DefaultQueueEntryTTL is how long a queued message stays deliverable
	// (queueEntryTtlMs).
	DefaultQueueEntryTTL = 90 * time.Second
	// DefaultDebounce is the debounce and burst window (debounceMs).
	DefaultDebounce = 1500 * time.Millisecond
	// DefaultHistoryMessages is the most messages a history list keeps.
	DefaultHistoryMessages = 100
	// DefaultHistoryTTL is the history list's time to live, refreshed on
	// every append.
	DefaultHistoryTTL = 7 * 24 * time.Hour
	// ThreadStateTTL is the time to live of a thread's state
	// ("thread-state:{id}"), refreshed on every write.
	ThreadStateTTL = 30 * 24 * time.Hour
)

// Serverless timing (Go only; the TypeScript core has no time budget).
const (
	// LockMargin is how long before the lock could lapse the handler's
	// context is cancelled when extends fail (at most a quarter of the
	// lock's TTL).
	LockMargin = 2 * time.Second
	// ReleaseReserve is the time held back before the deadline to release
	// the lock and clean up (at most a quarter of the time left).
	ReleaseReserve = time.Second
	// MinDrainTime is the least time left before the deadline for the lock
	// holder to take more messages off the queue; with less, they stay
	// queued for the next holder (on the fused path, the holder's Finish
	// then releases the lock without popping any: FinishRequest.Release).
	MinDrainTime = 500 * time.Millisecond

	// lockSkew is added to the time left when the lock TTL is bounded by
	// the deadline: clocks of this process and of Redis may disagree.
	lockSkew = time.Second
	// minWork is the least time a call needs to do anything useful.
	minWork = 250 * time.Millisecond
	// cleanupTimeout bounds a release or an undo when no deadline is near.
	cleanupTimeout = 2 * time.Second
	// minCleanup is the least time given to a release or an undo.
	minCleanup = 250 * time.Millisecond
)

// Strategy is what a Flow does with a message whose lock is busy; the
// names are the TypeScript core's.
type Strategy string

const (
	// Drop (the default) handles a message only if its lock is free; a
	// busy lock drops it with ErrLocked (or, with ConflictForce, takes the
	// lock over).
	Drop Strategy = "drop"
	// Queue handles the message if the lock is free and then drains the
	// queue; a busy lock enqueues it for the holder, which hands queued
	// messages to the handler as the latest one plus the skipped ones.
	Queue Strategy = "queue"
	// Debounce enqueues every message and lets the holder wait for a quiet
	// window (WithDebounce) before handing over the latest one, the others
	// as skipped.
	Debounce Strategy = "debounce"
	// Burst lets the holder wait one window after the first message, then
	// hands over the latest one, the others as skipped, and drains.
	Burst Strategy = "burst"
	// Concurrent takes no lock: every message is handled at once, at most
	// WithMaxConcurrent at a time per thread in this process.
	Concurrent Strategy = "concurrent"
)

// LockScope chooses the lock key: the thread id or its channel id.
type LockScope string

const (
	// ScopeThread (the default) locks each thread on its own.
	ScopeThread LockScope = "thread"
	// ScopeChannel locks the whole channel (the TypeScript default for
	// WhatsApp and Telegram).
	ScopeChannel LockScope = "channel"
)

// LockConflict is what the Drop strategy does when the lock is busy.
type LockConflict string

const (
	// ConflictDrop (the default) drops the message with ErrLocked.
	ConflictDrop LockConflict = "drop"
	// ConflictForce force-releases the lock and takes it: the earlier
	// handler keeps running (its context is cancelled at its next
	// heartbeat), so two handlers may briefly overlap, as in TypeScript.
	// With the fused operations the takeover is one atomic step; on the 18
	// operations it is a force-release then an acquire, and a message
	// whose acquire loses to another webhook's in between is dropped with
	// ErrLocked.
	ConflictForce LockConflict = "force"
)

// QueueFull is what a full queue does with one more message.
type QueueFull string

const (
	// DropOldest (the default) enqueues it and trims the oldest entry.
	DropOldest QueueFull = "drop-oldest"
	// DropNewest drops the new message (Status Dropped). Debounce always
	// behaves as DropOldest, as in TypeScript.
	DropNewest QueueFull = "drop-newest"
)

// HistoryOptions turns on message history: every incoming message is
// appended, raw payload blanked, to "msg-history:{threadId}" (and to
// "msg-history:{channelId}" when the channel id differs) before the lock
// is taken, as the TypeScript core does for adapters with
// persistThreadHistory.
type HistoryOptions struct {
	// MaxMessages keeps the newest MaxMessages items; 0 means
	// DefaultHistoryMessages.
	MaxMessages int
	// TTL is the list's time to live, refreshed on every append; 0 means
	// DefaultHistoryTTL.
	TTL time.Duration
}

func (h HistoryOptions) withDefaults() HistoryOptions {
	if h.MaxMessages == 0 {
		h.MaxMessages = DefaultHistoryMessages
	}
	if h.TTL == 0 {
		h.TTL = DefaultHistoryTTL
	}
	return h
}

type settings struct {
	strategy      Strategy
	scope         LockScope
	channelOf     func(threadID string) string
	conflict      LockConflict
	dedupeTTL     time.Duration
	lockTTL       time.Duration
	maxLifetime   time.Duration
	maxQueue      int
	onFull        QueueFull
	entryTTL      time.Duration
	debounce      time.Duration
	maxConcurrent int // 0: no cap
	history       *HistoryOptions
	budget        time.Duration // 0: none
	deferWrites   bool
	logger        *slog.Logger
	clock         clock
	errs          []string
}

func defaultSettings() settings {
	return settings{
		strategy:    Drop,
		scope:       ScopeThread,
		channelOf:   DefaultChannelOf,
		conflict:    ConflictDrop,
		dedupeTTL:   DefaultDedupeTTL,
		lockTTL:     DefaultLockTTL,
		maxLifetime: DefaultMaxLockLifetime,
		maxQueue:    DefaultMaxQueueSize,
		onFull:      DropOldest,
		entryTTL:    DefaultQueueEntryTTL,
		debounce:    DefaultDebounce,
		logger:      slog.New(discardHandler{}),
		clock:       realClock{},
	}
}

func (s *settings) badf(format string, args ...any) {
	s.errs = append(s.errs, fmt.Sprintf(format, args...))
}

// Option configures a Flow in New.
type Option func(*settings)

// WithStrategy sets what happens to a message whose lock is busy (default
// Drop).
func WithStrategy(st Strategy) Option {
	return func(s *settings) {
		switch st {
		case Drop, Queue, Debounce, Burst, Concurrent:
			s.strategy = st
		default:
			s.badf("unknown strategy %q", st)
		}
	}
}

// WithLockScope sets the lock key: the thread (default) or its channel.
func WithLockScope(scope LockScope) Option {
	return func(s *settings) {
		switch scope {
		case ScopeThread, ScopeChannel:
			s.scope = scope
		default:
			s.badf("unknown lock scope %q", scope)
		}
	}
}

// WithChannelOf sets how a thread id maps to its channel id (the adapter's
// channelIdFromThreadId in TypeScript), used by ScopeChannel and by channel
// history. The default is DefaultChannelOf.
func WithChannelOf(fn func(threadID string) string) Option {
	return func(s *settings) {
		if fn == nil {
			s.badf("WithChannelOf(nil)")
			return
		}
		s.channelOf = fn
	}
}

// DefaultChannelOf returns the first two colon-separated parts of a Chat
// SDK thread id ("slack:C123:1700000000.000100" → "slack:C123"), or the
// thread id itself when it has fewer than three parts.
func DefaultChannelOf(threadID string) string {
	first := strings.IndexByte(threadID, ':')
	if first < 0 {
		return threadID
	}
	second := strings.IndexByte(threadID[first+1:], ':')
	if second < 0 {
		return threadID
	}
	return threadID[:first+1+second]
}

// WithOnLockConflict sets what the Drop strategy does when the lock is
// busy (default ConflictDrop).
func WithOnLockConflict(c LockConflict) Option {
	return func(s *settings) {
		switch c {
		case ConflictDrop, ConflictForce:
			s.conflict = c
		default:
			s.badf("unknown lock conflict policy %q", c)
		}
	}
}

// WithDedupeTTL sets how long a message id is remembered (default
// DefaultDedupeTTL; must be positive).
func WithDedupeTTL(d time.Duration) Option {
	return func(s *settings) { s.dedupeTTL = positive(s, "dedupe TTL", d) }
}

// WithLockTTL sets the lock's time to live (default DefaultLockTTL; at
// least 3 ms). The TypeScript core's is fixed at 30 s; a bot sharing
// threads with TypeScript bots should keep it.
func WithLockTTL(d time.Duration) Option {
	return func(s *settings) {
		if d < 3*time.Millisecond {
			s.badf("lock TTL %v is shorter than 3ms", d)
			return
		}
		s.lockTTL = d
	}
}

// WithMaxLockLifetime sets how long the heartbeat keeps extending a lock
// (default DefaultMaxLockLifetime). Past it the lock is left to lapse, and
// the handler's context is cancelled LockMargin before it could.
func WithMaxLockLifetime(d time.Duration) Option {
	return func(s *settings) { s.maxLifetime = positive(s, "maximum lock lifetime", d) }
}

// WithMaxQueueSize sets the most entries a thread's queue keeps (default
// DefaultMaxQueueSize; at least 1).
func WithMaxQueueSize(n int) Option {
	return func(s *settings) {
		if n < 1 {
			s.badf("maximum queue size %d is less than 1", n)
			return
		}
		s.maxQueue = n
	}
}

// WithOnQueueFull sets what a full queue does with one more message
// (default DropOldest).
func WithOnQueueFull(p QueueFull) Option {
	return func(s *settings) {
		switch p {
		case DropOldest, DropNewest:
			s.onFull = p
		default:
			s.badf("unknown queue-full policy %q", p)
		}
	}
}

// WithQueueEntryTTL sets how long a queued message stays deliverable
// (default DefaultQueueEntryTTL; must be positive).
func WithQueueEntryTTL(d time.Duration) Option {
	return func(s *settings) { s.entryTTL = positive(s, "queue entry TTL", d) }
}

// WithDebounce sets the Debounce and Burst window (default
// DefaultDebounce; must be positive).
func WithDebounce(d time.Duration) Option {
	return func(s *settings) { s.debounce = positive(s, "debounce window", d) }
}

// WithMaxConcurrent caps the handlers running at once per thread in this
// process under the Concurrent strategy (default: no cap). It is an error
// with another strategy.
func WithMaxConcurrent(n int) Option {
	return func(s *settings) {
		if n < 1 {
			s.badf("maximum concurrency %d is less than 1", n)
			return
		}
		s.maxConcurrent = n
	}
}

// WithHistory turns message history on (see HistoryOptions); it is off by
// default.
func WithHistory(h HistoryOptions) Option {
	return func(s *settings) {
		if h.MaxMessages < 0 || h.TTL < 0 {
			s.badf("negative history option %+v", h)
			return
		}
		h = h.withDefaults()
		s.history = &h
	}
}

// WithBudget bounds a Handle or Drain whose context has no deadline (on
// Vercel, r.Context() never has one: use the function's maxDuration minus
// the time the response needs). With a deadline, the deadline rules. With
// neither, a call runs as long as its work and the lock's maximum lifetime
// allow.
func WithBudget(d time.Duration) Option {
	return func(s *settings) { s.budget = positive(s, "budget", d) }
}

// WithDeferredWrites makes the thread writes a handler makes through its
// Turn's Thread (SetState, ReplaceState, AppendHistory) wait for the end
// of the turn and go out with its Finish, on the fused path (an adapter
// with upstash.FusedAdapter) and while the lock is held: Finish applies
// them atomically with its release-or-next, and only if the lock is still
// this holder's (fenced: never after the lock was lost and another holder
// may have written). A handled webhook whose handler reads the
// subscription and the state and writes the state is then 2 requests,
// Admit and Finish. Off by default; without a lock (Concurrent) or on the
// 18 operations, writes go out at once.
//
// The trade-off: a write is not in the database before its turn ends, so
// other processes (and Thread helpers outside the turn) see it only then,
// and a crash between the write and Finish loses it, as such a crash
// would leave the lock to lapse. Within the turn and the rest of its lock
// hold, State, SetState's merge and History see the pending writes. Input
// errors are returned at once; a write that could not be applied (the
// lock was lost, Finish failed) is reported in Result.Errors (matching
// ErrWritesNotApplied, or upstash.ErrOutcomeUnknown when Finish's outcome
// stayed unknown) and logged at Error level, never dropped silently.
func WithDeferredWrites() Option {
	return func(s *settings) { s.deferWrites = true }
}

// WithLogger makes the Flow log what it does (queued, drained, lock lost,
// outcomes in doubt) at debug, info, warn and error levels. Lines name
// thread ids, lock keys and message ids, never message content. Records
// are logged with the context passed to Handle or Drain (slog's *Context
// methods), so a handler can add request-scoped attributes, such as
// Lambda's request id, from it. The default discards everything.
func WithLogger(l *slog.Logger) Option {
	return func(s *settings) {
		if l == nil {
			s.badf("WithLogger(nil)")
			return
		}
		s.logger = l
	}
}

// withClock replaces the clock (tests).
func withClock(c clock) Option { return func(s *settings) { s.clock = c } }

func positive(s *settings, what string, d time.Duration) time.Duration {
	if d <= 0 {
		s.badf("%s %v is not positive", what, d)
	}
	return d
}

// discardHandler is a slog.Handler that drops everything
// (slog.DiscardHandler needs Go 1.24).
type discardHandler struct{}

func (discardHandler) Enabled(context.Context, slog.Level) bool  { return false }
func (discardHandler) Handle(context.Context, slog.Record) error { return nil }
func (d discardHandler) WithAttrs([]slog.Attr) slog.Handler      { return d }
func (d discardHandler) WithGroup(string) slog.Handler           { return d }

// validate reports every problem at once, wrapping upstash.ErrConfig.
func (s *settings) validate() error {
	if s.maxConcurrent > 0 && s.strategy != Concurrent {
		s.badf("WithMaxConcurrent has no effect with the %q strategy", s.strategy)
	}
	if len(s.errs) > 0 {
		return fmt.Errorf("%w: chatflow: %s", upstash.ErrConfig, strings.Join(s.errs, "; "))
	}
	return nil
}
