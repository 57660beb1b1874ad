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

// FusedAdapter is a StateAdapter that also offers the fused operations:
// Admit and Finish, each one request (one atomic script), which together
// take a webhook through the Chat SDK flow in two round trips instead of
// seven or more. Code written for any StateAdapter (the package chatflow,
// say) finds them with a type assertion:
//
//	if f, ok := state.(upstash.FusedAdapter); ok { … f.Admit(ctx, req) … }
//
// *State implements it. The operations touch only the keys the 18
// operations touch, with the same bytes, so TypeScript bots sharing the
// database see what they would see from state-redis.
type FusedAdapter interface {
	StateAdapter
	// Admit dedupes an incoming message, reads whether its thread is
	// subscribed, takes the thread's lock or, when it is busy, queues the
	// message, and reads the cache values the holder needs.
	// A request with the OperationID of an earlier Admit applies nothing
	// and returns that Admit's outcome (its lock with the token held).
	Admit(ctx context.Context, req AdmitRequest) (AdmitResult, error)
	// Finish writes the turn's cache values and list items under the lock,
	// then releases the lock if the queue holds no live entry, or pops the
	// next live entry (up to FinishRequest.Take of them) and keeps the
	// lock for it; with FinishRequest.Release, it releases the lock and
	// leaves the queue alone. A request with the OperationID of an earlier
	// Finish applies nothing and returns that Finish's result (the same
	// popped entries).
	Finish(ctx context.Context, req FinishRequest) (FinishResult, error)
}

var _ FusedAdapter = (*State)(nil)

// AdmitRequest says what Admit does. Each part is optional and off in the
// zero value, except that a ThreadID needs a LockTTL; an empty request
// does nothing.
type AdmitRequest struct {
	// DedupeKey is the cache key to claim, as SetIfNotExists(DedupeKey,
	// DedupeValue, DedupeTTL) would ("dedupe:{adapter}:{messageId}" in the
	// Chat SDK). When it is present already, the message is a duplicate
	// and Admit does nothing else. "" (the zero value): no dedupe.
	DedupeKey string
	// DedupeValue is the value stored at DedupeKey, encoded as Set encodes
	// values; nil (the zero value) stores true, the Chat SDK's marker.
	DedupeValue any
	// DedupeTTL is the dedupe key's TTL; 0 means none (the Chat SDK uses
	// 10 minutes). Negative values are refused.
	DedupeTTL time.Duration

	// Append lists items to append, as AppendToList would, once the
	// message is known not to be a duplicate, whatever happens to the lock
	// (the Chat SDK appends every new message to its thread's history
	// before it locks). nil (the zero value): none.
	Append []ListAppend

	// CheckSubscription is the thread id to look up in the subscriptions
	// (IsSubscribed), the result going to AdmitResult.Subscribed. ""
	// (the zero value): no lookup.
	CheckSubscription string

	// ThreadID is the lock key: the thread id, or the channel id under the
	// Chat SDK's channel lock scope. Admit takes its lock as AcquireLock
	// does (a new token, PX LockTTL, a fencing token). "" (the zero value):
	// no lock is taken and nothing is queued (the Chat SDK's concurrent
	// strategy).
	ThreadID string
	// LockTTL is the lock's TTL; it must be positive when ThreadID is set.
	// WithLockTTLWithinDeadline bounds it as it bounds AcquireLock's.
	LockTTL time.Duration
	// TakeOver removes another holder's lock and takes it (the Chat SDK's
	// onLockConflict "force": ForceReleaseLock then AcquireLock, here in
	// one atomic step). false (the zero value): a busy lock is left alone.
	TakeOver bool

	// Entry is queued, as Enqueue(ThreadID, *Entry, MaxQueue) would queue
	// it, when the lock is busy: same bytes, same cap, same TTL rule
	// (max(Entry.ExpiresAt − now, 60 s) for the whole queue). nil (the
	// zero value): nothing is queued (the Chat SDK's drop strategy).
	Entry *QueueEntry
	// MaxQueue caps the queue as Enqueue's maxSize: 0 (the zero value)
	// means no cap; otherwise the oldest entries beyond MaxQueue are
	// dropped, unless DropNewest is set.
	MaxQueue int
	// DropNewest leaves the entry out instead when the queue already holds
	// MaxQueue entries (the Chat SDK's onQueueFull "drop-newest"; the
	// check counts expired entries not yet discarded, as QueueDepth does).
	// false (the zero value): drop the oldest ("drop-oldest").
	DropNewest bool

	// OperationID is the operation's id (see NewOperationID): 16 to 64
	// ASCII letters, digits, '-' or '_', else ErrInvalidArgument before any
	// request. "" (the zero value): a fresh random id for this call. Set it
	// to send the same request again after ErrOutcomeUnknown: a repeat with
	// the id of an Admit that was applied applies nothing and returns the
	// recorded outcome (Duplicate, the Lock it took with its token and
	// fence, Busy, Queued), while one whose Admit never ran applies it now.
	// Use an id for one request only, and resend before the record expires
	// (10 minutes, or the first call's context deadline plus a minute when
	// that is later).
	OperationID string

	// Read lists cache keys to read, as Get would, when the caller gets
	// the lock or asked for none (ThreadID ""): the thread's state, say.
	// Their values are in AdmitResult.Values, in the same order.
	Read []string
}

// AdmitResult says what Admit did. Exactly one of Duplicate, Lock != nil
// and Busy is true when a lock was asked for; with no ThreadID, only
// Duplicate can be.
type AdmitResult struct {
	// Duplicate: the dedupe key was present. Nothing else was done or read.
	Duplicate bool
	// Subscribed reports whether CheckSubscription is subscribed (false
	// when none was asked for, or for a duplicate).
	Subscribed bool
	// Lock is the lock taken for ThreadID, as AcquireLock returns it; nil
	// when none was asked for, the message is a duplicate, or the lock is
	// busy. Hand it to Finish at the end of the turn.
	Lock *Lock
	// TookOver: Lock was taken by removing another holder's (TakeOver).
	TookOver bool
	// Busy: another holder has the lock.
	Busy bool
	// Queued: the lock was busy and Entry was queued.
	Queued bool
	// QueueDepth is the queue's length: right after the entry was queued
	// (Queued), when the entry was dropped (DropNewest), or when the lock
	// was taken; 0 when no lock was asked for. Like QueueDepth, it counts
	// expired entries not yet discarded.
	QueueDepth int
	// Values holds the value of each Read key, in order, as Get returns
	// it: nil for a missing key, "null" for a stored null. It is nil when
	// nothing was read (busy, duplicate). A value that is not valid JSON
	// is left nil here and reported in ReadErr.
	Values []json.RawMessage
	// ReadErr is nil, or reports the Read values that are not valid JSON:
	// a *CorruptValueError per key (errors.Join of them when there are
	// several). Everything else in the result holds: the lock, if taken,
	// is held.
	ReadErr error
	// InDoubtLock is set only when Admit's error matches ErrOutcomeUnknown
	// and a lock was asked for: it is the lock Admit may have taken.
	// Finish with it releases it (or hands over what was queued
	// meanwhile), and reports ErrLockNotHeld if it was never taken;
	// otherwise it lapses after LockTTL.
	InDoubtLock *Lock
	// OperationID is the operation id Admit used: AdmitRequest.OperationID,
	// or the one it made. After ErrOutcomeUnknown, send the same request
	// again with it to learn the outcome.
	OperationID string
}

// CacheWrite is one value Finish stores, as Set(Key, Value, TTL) would.
type CacheWrite struct {
	// Key is the cache key ("thread-state:{threadId}", say).
	Key string
	// Value is encoded as Set encodes it.
	Value any
	// TTL is the value's TTL; 0 stores it without one, clearing any TTL
	// the key had, as Set does. Negative values are refused.
	TTL time.Duration
}

// ListAppend is one item Finish appends, as AppendToList(Key, Value,
// Options) would.
type ListAppend struct {
	// Key is the list key ("msg-history:{threadId}", say).
	Key string
	// Value is encoded as Set encodes it.
	Value any
	// Options caps the list and sets its TTL, as in AppendToList.
	Options ListOptions
}

// FinishRequest says what Finish does.
type FinishRequest struct {
	// Lock is the lock held for the turn (from Admit, AcquireLock or JSON);
	// required.
	Lock *Lock
	// LockTTL is the lock's TTL from now when Finish keeps it for the next
	// entry; it must be positive. WithLockTTLWithinDeadline bounds it as
	// it bounds ExtendLock's.
	LockTTL time.Duration
	// Set lists the cache values to store, in order; nil: none.
	Set []CacheWrite
	// Append lists the list items to append, in order; nil: none.
	Append []ListAppend
	// OperationID is the operation's id (see NewOperationID), as in
	// AdmitRequest: "" (the zero value) makes a fresh one for this call;
	// set it to send the same request again after ErrOutcomeUnknown and get
	// the recorded result (the same Next and More, nothing popped or
	// written twice, the lock released once) or apply it now if it never
	// ran. Use an id for one request only.
	OperationID string
	// Take is the most live entries Finish pops when the queue holds any:
	// 0 (the zero value) or 1 pops one, handed over in Next; n > 1 pops up
	// to n, the oldest in Next and the others in FinishResult.More, all
	// under the one kept lock (a drain that hands a batch over at once).
	// Expired and unreadable entries discarded on the way do not count.
	// Negative values are refused.
	Take int
	// Release releases the lock whatever the queue holds: no entry is
	// popped, expired, or dead-lettered (they all stay queued for the next
	// holder or a Drain), and FinishResult.Next is nil. The writes are
	// still applied, fenced by the lock, and a repeat under the same
	// OperationID returns the same outcome. A holder out of time uses it
	// to end its turn without taking entries it could not handle. LockTTL
	// is not used and may be 0. Release with Take above 1 is refused with
	// ErrInvalidArgument. false (the zero value): release-or-next.
	Release bool
}

// FinishResult says what Finish did when the lock was held.
type FinishResult struct {
	// Next is the oldest live queue entry, popped from the queue: the lock
	// is kept for it, extended to LockTTL (and Lock.ExpiresAt updated), and
	// the caller handles it, then calls Finish again. nil: the queue held
	// no live entry and the lock was released.
	Next *QueueEntry
	// More holds the other live entries popped with Next when
	// FinishRequest.Take is above 1, oldest first (at most Take − 1 of
	// them; fewer when the queue held fewer): the lock is kept for them as
	// for Next, and what is left stays queued. nil when only Next was
	// popped, and always when Take is 0 or 1.
	More []QueueEntry
	// Expired counts the expired entries (ExpiresAt before now) popped
	// and discarded on the way.
	Expired int
	// DeadLettered counts the unreadable entries moved on the way to the
	// dead-letter list {p}:queue-corrupt:{threadID}, as Dequeue moves them.
	DeadLettered int
	// DeadLetterErr is nil, or reports that entries popped along with Next
	// and More but that Go cannot decode were perhaps not moved to the
	// dead-letter list: the follow-up request that moves them failed (it
	// matches that request's error, ErrOutcomeUnknown say), and they are
	// not counted in DeadLettered. Such an entry then stays only in the
	// operation's record until that expires. Everything else in the result
	// holds: Next and More are popped, and the lock is kept for them.
	DeadLetterErr error
	// OperationID is the operation id Finish used for its first request:
	// FinishRequest.OperationID, or the one it made. After
	// ErrOutcomeUnknown, send the same request again with it to learn the
	// outcome.
	OperationID string
}

// The fused scripts.
var (
	//go:embed admit.lua
	admitSource string
	admitScript = NewScript(admitSource).Idempotent()

	//go:embed finish.lua
	finishSource string
	finishScript = NewScript(finishSource).Idempotent()
)

// Admit runs the first half of a webhook in one request: one script,
// applied atomically, in this order:
//
//  1. Dedupe: SET NX on {p}:cache:{DedupeKey}, as SetIfNotExists. A
//     duplicate stops here: no append, no lock, no queue, no reads.
//  2. Each Append item is appended to {p}:list:{key} as AppendToList
//     appends it.
//  3. SISMEMBER {p}:subscriptions CheckSubscription.
//  4. The lock {p}:lock:{ThreadID}: taken as AcquireLock takes it (token
//     "go_" + 32 hex digits, PX LockTTL, fencing token in Lock.Fence, kept
//     at {p}:fence:{ThreadID}); taken over when busy and TakeOver is set.
//     When another holder has it, Entry is queued at {p}:queue:{ThreadID}
//     exactly as Enqueue queues it (RPUSH, trim to MaxQueue, PEXPIRE the
//     queue to max(Entry.ExpiresAt − now, 60 s)), unless DropNewest finds
//     the queue full. The lock check and the enqueue are one atomic step,
//     and Finish releases only in an atomic step that sees the queue
//     empty: an entry queued here is never stranded (vercel/chat#928).
//  5. GET {p}:cache:{key} for each Read key, when the lock was taken or
//     none was asked for.
//
// Values are stored byte for byte as SetIfNotExists, AppendToList and
// Enqueue store them, and the keys are state-redis's (plus this library's
// op and fence keys), so a TypeScript bot on the same database sees a
// dedupe marker, a history item, a lock and a queue entry as its own
// adapter writes them.
//
// Like the single operations, Admit carries an operation id (see State):
// after a lost reply, a reset or a 503 it is sent again, and the repeat
// applies nothing and returns the recorded outcome (the subscription, the
// queue's length and the values are read again). When every attempt
// failed, the error matches ErrOutcomeUnknown, names the operation id and
// says to resend, and InDoubtLock is the lock Admit may have taken. Send
// the same request again with OperationID set to that id
// (AdmitResult.OperationID; or set your own from NewOperationID before the
// first call) to end the doubt: if the first Admit was applied, the repeat
// returns its outcome (Duplicate, or the Lock it took, with the token and
// fence actually held and ExpiresAt from the lock's remaining TTL, or Busy
// and Queued) and applies nothing; if not, it applies it now. A repeat
// whose lock has since been released or lost still returns it, with an
// ExpiresAt not in the future: Finish with it reports ErrLockNotHeld.
// Otherwise Finish with InDoubtLock resolves the lock, not the dedupe
// claim, append or queueing. Invalid arguments (an empty key in Read, a
// negative TTL, a ThreadID without a positive LockTTL, an Entry or
// TakeOver without a ThreadID, an Entry Enqueue would refuse, a value Set
// would refuse, an invalid OperationID) are refused with
// ErrInvalidArgument before any request.
func (s *State) Admit(ctx context.Context, req AdmitRequest) (AdmitResult, error) {
	res, err := s.admit(ctx, req)
	return res, opError("Admit", err)
}

func (s *State) admit(ctx context.Context, req AdmitRequest) (AdmitResult, error) {
	var res AdmitResult
	id, err := operationID(req.OperationID)
	if err != nil {
		return res, err
	}
	res.OperationID = id
	// admit.lua's keys and arguments (after the operation id's), in order.
	keys := make([]string, 0, 5+len(req.Append)+len(req.Read))
	dedupeJSON, dedupeTTL := "", "0"
	subscription := ""
	token, lockTTL, takeOver := "", "0", "0"
	entryJSON, maxQueue, entryQueueTTL, dropNewest := "", "0", "0", "0"
	var appendArgs []any

	if req.DedupeKey != "" {
		if req.DedupeTTL < 0 {
			return res, fmt.Errorf("%w: dedupe key %q: negative TTL %v", ErrInvalidArgument, req.DedupeKey, req.DedupeTTL)
		}
		value := req.DedupeValue
		if value == nil {
			value = true
		}
		data, err := encodeJSON(strconv.Quote(req.DedupeKey), value)
		if err != nil {
			return res, err
		}
		keys = append(keys, s.cacheKey(req.DedupeKey))
		dedupeJSON, dedupeTTL = string(data), msArg(req.DedupeTTL)
	}
	if req.CheckSubscription != "" {
		keys = append(keys, s.subscriptionsKey())
		subscription = req.CheckSubscription
	}
	var lock *Lock
	if req.ThreadID == "" {
		if req.Entry != nil || req.TakeOver {
			return res, fmt.Errorf("%w: an Entry or TakeOver needs a ThreadID", ErrInvalidArgument)
		}
	} else {
		ttl := s.lockTTL(ctx, req.LockTTL)
		if err := checkTTL(req.ThreadID, ttl); err != nil {
			return res, err
		}
		if req.TakeOver {
			takeOver = "1"
		}
		if req.Entry != nil {
			data, err := entryData(req.ThreadID, *req.Entry, req.MaxQueue)
			if err != nil {
				return res, err
			}
			entryJSON, maxQueue = string(data), strconv.Itoa(req.MaxQueue)
			entryQueueTTL = msArg(queueTTL(*req.Entry, s.now()))
			if req.DropNewest {
				dropNewest = "1"
			}
		}
		t, err := newToken()
		if err != nil {
			return res, err
		}
		keys = append(keys, s.lockKey(req.ThreadID), s.fenceKey(req.ThreadID), s.queueKey(req.ThreadID))
		token, lockTTL = t, msArg(ttl)
		// ExpiresAt from the time before the request, so it is never later
		// than the server's expiry.
		lock = &Lock{ThreadID: req.ThreadID, Token: token, ExpiresAt: msFloor(s.now().Add(ttl))}
	}
	for _, l := range req.Append {
		data, err := s.appendData(l)
		if err != nil {
			return res, err
		}
		keys = append(keys, s.listKey(l.Key))
		appendArgs = append(appendArgs, string(data), strconv.Itoa(l.Options.MaxLength), msArg(l.Options.TTL))
	}
	for _, key := range req.Read {
		if err := checkID("key", key); err != nil {
			return res, err
		}
		keys = append(keys, s.cacheKey(key))
	}
	args := append([]any{
		dedupeJSON, dedupeTTL,
		subscription,
		token, lockTTL, takeOver,
		entryJSON, maxQueue, entryQueueTTL, dropNewest,
		strconv.Itoa(len(req.Read)), strconv.Itoa(len(req.Append)),
	}, appendArgs...)

	before := s.now()
	v, err := s.runOpID(ctx, id, admitScript, keys, args...)
	if err != nil {
		if errors.Is(err, ErrOutcomeUnknown) {
			if lock != nil {
				res.InDoubtLock = lock
			}
			err = resendable(err, id)
		}
		return res, err
	}
	res, err = s.admitResult(v, req, lock, before)
	res.OperationID = id
	return res, err
}

// resendable is err, an ErrOutcomeUnknown of the operation id, saying that
// the same request can be sent again with that id.
func resendable(err error, id string) error {
	return fmt.Errorf("%w (send the same request again with OperationID %q to apply it once or learn its outcome)", err, id)
}

// admitResult reads admit.lua's reply.
func (s *State) admitResult(v Value, req AdmitRequest, lock *Lock, before time.Time) (AdmitResult, error) {
	var res AdmitResult
	bad := func() (AdmitResult, error) {
		return AdmitResult{}, protocolErrorf("admit script replied %s", truncate(v.String(), 80))
	}
	parts, err := v.Array()
	if err != nil || len(parts) < 4 {
		return bad()
	}
	outcome, err1 := parts[0].Text()
	sub, err2 := parts[1].Text()
	llen, err3 := parts[2].Text()
	pttl, err4 := parts[3].Text()
	if err1 != nil || err2 != nil || err3 != nil || err4 != nil || outcome == "" {
		return bad()
	}
	res.Subscribed = sub == "1"
	if llen != "" {
		if res.QueueDepth, err = strconv.Atoi(llen); err != nil {
			return bad()
		}
	}
	kind, rest := outcome[0], outcome[1:]
	switch kind {
	case 'd':
		return AdmitResult{Duplicate: true}, nil
	case 'n':
		if lock != nil {
			return bad()
		}
	case 'a', 'f':
		if lock == nil {
			return bad()
		}
		fence, token, ok := strings.Cut(rest, ":")
		if !ok || token == "" {
			return bad()
		}
		if lock.Fence, err = strconv.ParseInt(fence, 10, 64); err != nil || lock.Fence <= 0 {
			return bad()
		}
		// A replay: the lock and its token are the first attempt's, and
		// the script says how long it has left (-2: it is no longer held).
		lock.Token = token
		if pttl != "" {
			ms, err := strconv.ParseInt(pttl, 10, 64)
			if err != nil {
				return bad()
			}
			lock.ExpiresAt = msFloor(before.Add(time.Duration(max(ms, 0)) * time.Millisecond))
		}
		res.Lock, res.TookOver = lock, kind == 'f'
	case 'q', 'b':
		if lock == nil {
			return bad()
		}
		if res.QueueDepth, err = strconv.Atoi(rest); err != nil {
			return bad()
		}
		res.Busy, res.Queued = true, kind == 'q'
		return res, nil
	default:
		return bad()
	}
	if len(parts) != 4+len(req.Read) {
		return bad()
	}
	if len(req.Read) == 0 {
		return res, nil
	}
	res.Values = make([]json.RawMessage, len(req.Read))
	var errs []error
	for i, p := range parts[4:] {
		if p.IsNil() {
			continue
		}
		rkey := s.cacheKey(req.Read[i])
		b, err := p.Bytes()
		if err != nil {
			return bad()
		}
		if res.Values[i], err = checkStored(rkey, -1, b); err != nil {
			errs = append(errs, err)
		}
	}
	res.ReadErr = errors.Join(errs...)
	return res, nil
}

// Finish runs the end of a turn in one request: one script, applied
// atomically, in this order:
//
//  1. If {p}:lock:{ThreadID} no longer holds Lock.Token (it expired, was
//     released or force-released, or another holder took it over),
//     nothing is written and the error matches ErrLockNotHeld: the writes
//     were made under a lock that was lost, and another holder may have
//     written since. Another holder's lock is never touched.
//  2. Each CacheWrite is stored as Set stores it and each ListAppend
//     appended as AppendToList appends it (same bytes, TTL and cap rules).
//  3. Release-or-next on {p}:queue:{ThreadID}: entries whose ExpiresAt is
//     before now (the State's clock) are popped and discarded and
//     unreadable ones moved to the dead-letter list, as Dequeue does,
//     while live entries are popped until the queue is empty or Take of
//     them are (one for a Take of 0). The oldest is returned in Next and
//     the others, with Take above 1, in More, and the lock is kept and
//     extended to LockTTL from now. When no live entry is left, the lock
//     is deleted. Deciding and releasing in one atomic step closes
//     vercel/chat#928: an entry another client queues (Admit or Enqueue)
//     is either seen here, or queued after the release, when that client
//     can take the lock itself.
//
// With Release set, step 3 is a plain release: the lock is deleted and the
// queue is left as it is (nothing popped, expired entries and unreadable
// ones included), for the next holder or a Drain. A holder short of time
// ends its turn so, instead of popping entries it cannot handle and
// putting them back; the writes of step 2 are still applied under the
// lock, and ErrLockNotHeld still means nothing was written.
//
// Call it again with Next (and More) handled, and its own writes, until
// Next is nil. Stop KeepLockAlive on the lock first: Finish updates
// Lock.ExpiresAt when it keeps the lock.
//
// Finish carries an operation id (see State): after a lost reply, a reset
// or a 503 it is sent again, and the repeat applies nothing and returns the
// recorded result, every popped entry included, so no entry is lost to a
// lost reply. When every attempt failed, the error matches
// ErrOutcomeUnknown, names the operation id and says to resend: the writes
// and the release-or-next were applied once or not at all. Send the same
// request again (same Lock, writes and Take) with OperationID set to that
// id (FinishResult.OperationID, or your own from NewOperationID) before
// the record expires: if the first was applied, the repeat applies
// nothing and returns its result, the same Next and More, with
// Lock.ExpiresAt from the kept lock's remaining TTL (not in the future if
// it has lapsed since); a recorded release stays a release, even if
// another holder has taken the lock since (its lock is left alone). If it
// was not applied, the repeat applies it now. Without a repeat, entries
// popped then stay in the record, unread, until it expires, and the lock,
// if kept, lapses after LockTTL.
//
// An entry whose expiresAt the script can read but Go cannot decode (not
// JSON, not valid UTF-8) is moved to the dead-letter list by a follow-up
// request, counted in DeadLettered and left out of Next and More. When
// every entry popped was such an entry, the follow-up also goes on with
// release-or-next (popping up to Take entries again); should the lock be
// lost in between, the follow-up still moves the entries, and the error
// matches ErrLockNotHeld although the writes were applied. When decodable
// entries were popped too, the follow-up only moves the others, Finish
// returns the decodable ones, and a failure of the follow-up is reported
// in DeadLetterErr, not as Finish's error. The follow-up requests carry
// operation ids of their own, derived from Finish's (the id, a '.' and a
// suffix), so a repeat of a Finish whose follow-up ran repeats the
// follow-up too: it moves nothing twice and returns the entries the
// follow-up popped, and one whose follow-up never ran runs it now.
// Invalid arguments (an invalid OperationID among them) are refused with
// ErrInvalidArgument before any request.
func (s *State) Finish(ctx context.Context, req FinishRequest) (FinishResult, error) {
	res, err := s.finish(ctx, req)
	return res, opError("Finish", err)
}

// finishArgs is finish.lua's arguments from ARGV[9] on, and its keys from
// the writes on.
func (s *State) finishArgs(req FinishRequest) (keys []string, args []any, err error) {
	keys = make([]string, 0, len(req.Set)+len(req.Append))
	args = make([]any, 0, 2+2*len(req.Set)+3*len(req.Append))
	args = append(args, strconv.Itoa(len(req.Set)), strconv.Itoa(len(req.Append)))
	for _, w := range req.Set {
		if err := checkID("key", w.Key); err != nil {
			return nil, nil, err
		}
		if w.TTL < 0 {
			return nil, nil, fmt.Errorf("%w: key %q: negative TTL %v", ErrInvalidArgument, w.Key, w.TTL)
		}
		data, err := encodeJSON(strconv.Quote(w.Key), w.Value)
		if err != nil {
			return nil, nil, err
		}
		keys = append(keys, s.cacheKey(w.Key))
		args = append(args, string(data), msArg(w.TTL))
	}
	for _, l := range req.Append {
		data, err := s.appendData(l)
		if err != nil {
			return nil, nil, err
		}
		keys = append(keys, s.listKey(l.Key))
		args = append(args, string(data), strconv.Itoa(l.Options.MaxLength), msArg(l.Options.TTL))
	}
	return keys, args, nil
}

// appendData checks l as AppendToList checks its arguments and returns
// the value's JSON.
func (s *State) appendData(l ListAppend) ([]byte, error) {
	if err := checkID("key", l.Key); err != nil {
		return nil, err
	}
	if err := checkLength("MaxLength", l.Key, l.Options.MaxLength); err != nil {
		return nil, err
	}
	if l.Options.TTL < 0 {
		return nil, fmt.Errorf("%w: key %q: negative TTL %v", ErrInvalidArgument, l.Key, l.Options.TTL)
	}
	return encodeJSON(strconv.Quote(l.Key), l.Value)
}

func (s *State) finish(ctx context.Context, req FinishRequest) (FinishResult, error) {
	var res FinishResult
	if err := checkLock(req.Lock); err != nil {
		return res, err
	}
	lock := req.Lock
	if req.Take < 0 {
		return res, fmt.Errorf("%w: thread %q: negative Take %d", ErrInvalidArgument, lock.ThreadID, req.Take)
	}
	take := strconv.Itoa(max(req.Take, 1))
	ttl := s.lockTTL(ctx, req.LockTTL)
	if req.Release {
		if req.Take > 1 {
			return res, fmt.Errorf("%w: thread %q: Release with Take %d (Release pops nothing)", ErrInvalidArgument, lock.ThreadID, req.Take)
		}
		// finish.lua's take '0': the lock deleted, the queue left alone;
		// the lock's TTL is not used.
		take, ttl = "0", max(ttl, time.Millisecond)
	} else if err := checkTTL(lock.ThreadID, ttl); err != nil {
		return res, err
	}
	opID, err := operationID(req.OperationID)
	if err != nil {
		return res, err
	}
	res.OperationID = opID
	writeKeys, writeArgs, err := s.finishArgs(req)
	if err != nil {
		return res, err
	}
	prevOp, bad := "", "" // a request all of whose entries Go could not decode, and their positions
	for n := 0; ; n++ {
		if err := ctx.Err(); err != nil {
			return res, err
		}
		// The follow-ups' ids derive from the operation's, so a repeat of
		// the whole Finish repeats them too ('.' is never in a given id).
		id := opID
		if n > 0 {
			id = opID + "." + strconv.Itoa(n)
		}
		var keys []string
		var args []any
		if prevOp == "" {
			keys, args = s.finishCall(ctx, id, lock, ttl, take, "0", "", "")
			keys = append(keys, writeKeys...)
			args = append(args, writeArgs...)
		} else {
			// A follow-up: no writes (they were applied), the bad entries
			// moved from prevOp's record, then release-or-next again.
			keys, args = s.finishCall(ctx, id, lock, ttl, take, "1", prevOp, bad)
			args = append(args, "0", "0")
		}
		before := s.now()
		kind, expired, dead, raws, left, err := s.runFinish(ctx, keys, args)
		if err != nil {
			if errors.Is(err, ErrOutcomeUnknown) {
				err = resendable(err, opID)
			}
			return res, err
		}
		res.Expired += expired
		res.DeadLettered += dead
		switch kind {
		case 'h':
			if prevOp != "" {
				return res, fmt.Errorf("%w: thread %q: lost after the writes were applied, while unreadable entries were moved", ErrLockNotHeld, lock.ThreadID)
			}
			return res, fmt.Errorf("%w: thread %q: nothing was written", ErrLockNotHeld, lock.ThreadID)
		case 'r':
			return res, nil
		case 'd':
			return res, protocolErrorf("finish script replied kind d to a request that does not only move entries")
		}
		if left >= 0 {
			// A repeat: the lock was kept by an earlier attempt, and has
			// left ms to live (0: it is no longer held).
			lock.ExpiresAt = msFloor(before.Add(left))
		} else {
			lock.ExpiresAt = msFloor(before.Add(ttl))
		}
		var good []QueueEntry
		var positions []string
		for i, raw := range raws {
			var e QueueEntry
			if utf8.Valid(raw) && json.Unmarshal(raw, &e) == nil {
				good = append(good, e)
			} else {
				positions = append(positions, strconv.Itoa(i+1))
			}
		}
		bad = strings.Join(positions, ",")
		if len(good) == 0 {
			prevOp = id
			continue
		}
		res.Next = &good[0]
		if len(good) > 1 {
			res.More = good[1:]
		}
		if bad != "" {
			moved, err := s.deadLetterPopped(ctx, opID+".d", lock, ttl, take, id, bad)
			res.DeadLettered += moved
			res.DeadLetterErr = wrapf(err, "Finish: moving %d unreadable entries to the dead-letter list", len(positions))
		}
		return res, nil
	}
}

// finishCall is a finish.lua call with the operation id id, up to its
// writes: the keys (with KEYS[6] = prevOp's record when there is a
// follow-up) and ARGV[1] to ARGV[8].
func (s *State) finishCall(ctx context.Context, id string, lock *Lock, ttl time.Duration, take, followUp, prevOp, positions string) (keys []string, args []any) {
	keys = []string{s.opKey(id), s.lockKey(lock.ThreadID), s.fenceKey(lock.ThreadID), s.queueKey(lock.ThreadID), s.deadLetterKey(lock.ThreadID)}
	if prevOp != "" {
		keys = append(keys, s.opKey(prevOp))
	}
	args = []any{msArg(opRecordTTL(ctx)), lock.Token, msArg(ttl), strconv.FormatInt(s.now().UnixMilli(), 10), msArg(deadLetterTTL), take, followUp, positions}
	return keys, args
}

// runFinish runs finish.lua and parses its reply. left is -1, or, when the
// reply is a repeat's, the time the lock has left (0 when it no longer
// holds the token).
func (s *State) runFinish(ctx context.Context, keys []string, args []any) (kind byte, expired, dead int, entries [][]byte, left time.Duration, err error) {
	v, err := finishScript.Run(ctx, s.c, keys, args...)
	if err = inDoubt(err); err != nil {
		return 0, 0, 0, nil, 0, err
	}
	left = -1
	if parts, err := v.Array(); err == nil {
		// A repeat: {record, the lock's PTTL in ms}.
		ms, err := parts[min(1, len(parts)-1)].Text()
		n, err2 := strconv.ParseInt(ms, 10, 64)
		if len(parts) != 2 || err != nil || err2 != nil {
			return 0, 0, 0, nil, 0, protocolErrorf("finish script replied %s", truncate(v.String(), 80))
		}
		v, left = parts[0], time.Duration(max(n, 0))*time.Millisecond
	}
	r, err := opReply(v, "finish")
	if err != nil {
		return 0, 0, 0, nil, 0, err
	}
	kind, expired, dead, entries, ok := parseFinish(r)
	if !ok {
		return 0, 0, 0, nil, 0, protocolErrorf("finish script replied %q", truncate(r, 40))
	}
	return kind, expired, dead, entries, left, nil
}

// deadLetterPopped moves the entries at positions (from 1, separated by
// commas) of operation prevOp's record to the dead-letter list, in a
// follow-up request of its own that does nothing else, and returns how
// many it moved.
func (s *State) deadLetterPopped(ctx context.Context, id string, lock *Lock, ttl time.Duration, take, prevOp, positions string) (int, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	keys, args := s.finishCall(ctx, id, lock, ttl, take, "2", prevOp, positions)
	kind, _, dead, _, _, err := s.runFinish(ctx, keys, append(args, "0", "0"))
	if err != nil {
		return 0, err
	}
	if kind != 'd' {
		return 0, protocolErrorf("finish script replied kind %q to a request that only moves entries", string(kind))
	}
	return dead, nil
}

// parseFinish splits finish.lua's reply
// kind:expired:dead:count:(length:entry)*.
func parseFinish(r string) (kind byte, expired, dead int, entries [][]byte, ok bool) {
	parts := strings.SplitN(r, ":", 5)
	if len(parts) != 5 || len(parts[0]) != 1 || !strings.Contains("nrhd", parts[0]) {
		return 0, 0, 0, nil, false
	}
	count, err1 := strconv.Atoi(parts[3])
	expired, err2 := strconv.Atoi(parts[1])
	dead, err3 := strconv.Atoi(parts[2])
	if err1 != nil || err2 != nil || err3 != nil || count < 0 || expired < 0 || dead < 0 || (parts[0] == "n") != (count > 0) {
		return 0, 0, 0, nil, false
	}
	rest := parts[4]
	for i := 0; i < count; i++ {
		colon := strings.IndexByte(rest, ':')
		if colon <= 0 {
			return 0, 0, 0, nil, false
		}
		n, err := strconv.Atoi(rest[:colon])
		if err != nil || n < 0 || n > len(rest)-colon-1 {
			return 0, 0, 0, nil, false
		}
		entries = append(entries, []byte(rest[colon+1:colon+1+n]))
		rest = rest[colon+1+n:]
	}
	if rest != "" {
		return 0, 0, 0, nil, false
	}
	return parts[0][0], expired, dead, entries, true
}
