package chatflow

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"

	"github.com/chatstate/upstash"
)

// ErrWritesNotApplied is matched by the Result.Errors entry reporting
// writes deferred to Finish (WithDeferredWrites) that were not applied:
// the lock was lost before Finish, or Finish failed without running. A
// Finish whose outcome stayed unknown is reported with
// upstash.ErrOutcomeUnknown instead: its writes may or may not be applied.
var ErrWritesNotApplied = errors.New("chatflow: deferred writes not applied")

// holdState is what one lock hold knows of its threads and what it has
// yet to write. A hold runs from the lock's acquisition (Admit, or an
// acquire in Drain) through every turn Finish hands over under the same
// lock, to its release; a lock taken again after losing it starts a new
// one. While the lock is held nobody else writes the thread (the core's
// handlers run under the same lock), so the admission's read, updated by
// the hold's own writes through the Thread helpers, stays current.
type holdState struct {
	// deferred: SetState, ReplaceState and AppendHistory wait for the
	// hold's next Finish (WithDeferredWrites, with a lock).
	deferred bool

	mu      sync.Mutex
	ended   bool // the hold's last Finish was sent: writes go out at once
	views   map[string]*threadView
	sets    []upstash.CacheWrite
	appends []upstash.ListAppend
}

// threadView is a thread's subscription and state as the hold knows them.
type threadView struct {
	subKnown, sub bool
	stateKnown    bool
	state         json.RawMessage // nil: no state
}

// pendingWrites are the writes a Finish carries.
type pendingWrites struct {
	sets    []upstash.CacheWrite
	appends []upstash.ListAppend
}

func (w pendingWrites) empty() bool { return len(w.sets) == 0 && len(w.appends) == 0 }

// keys lists the keys written, sorted, without repeats.
func (w pendingWrites) keys() string {
	seen := map[string]bool{}
	var out []string
	for _, s := range w.sets {
		if !seen[s.Key] {
			seen[s.Key] = true
			out = append(out, s.Key)
		}
	}
	for _, a := range w.appends {
		if !seen[a.Key] {
			seen[a.Key] = true
			out = append(out, a.Key)
		}
	}
	sort.Strings(out)
	return strings.Join(out, ", ")
}

func newHoldState(deferred bool) *holdState {
	return &holdState{deferred: deferred, views: map[string]*threadView{}}
}

// seed records Admit's read of threadID: its subscription and, when the
// value was readable, its state.
func (h *holdState) seed(threadID string, ar upstash.AdmitResult) {
	v := &threadView{subKnown: true, sub: ar.Subscribed}
	if ar.ReadErr == nil && len(ar.Values) == 1 {
		v.stateKnown, v.state = true, ar.Values[0]
	}
	h.mu.Lock()
	h.views[threadID] = v
	h.mu.Unlock()
}

// known returns what the hold knows of threadID, when it may answer for
// the handler: the hold exists and its lock was not lost.
func (h *holdState) known(ctx context.Context, threadID string) (threadView, bool) {
	if h == nil || errors.Is(context.Cause(ctx), ErrLockLost) {
		return threadView{}, false
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	v := h.views[threadID]
	if v == nil {
		return threadView{}, false
	}
	return *v, true
}

// update changes threadID's view (creating it) under the hold's mutex.
func (h *holdState) update(threadID string, fn func(v *threadView)) {
	if h == nil {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	v := h.views[threadID]
	if v == nil {
		v = &threadView{}
		h.views[threadID] = v
	}
	fn(v)
}

// deferSet queues the thread's state for Finish (a later write of the same
// key replaces it) and records it as the thread's state.
func (h *holdState) deferSet(threadID string, data json.RawMessage) {
	key := ThreadStateKey(threadID)
	h.mu.Lock()
	replaced := false
	for i := range h.sets {
		if h.sets[i].Key == key {
			h.sets[i].Value, replaced = data, true
		}
	}
	if !replaced {
		h.sets = append(h.sets, upstash.CacheWrite{Key: key, Value: data, TTL: ThreadStateTTL})
	}
	h.mu.Unlock()
	h.update(threadID, func(v *threadView) { v.stateKnown, v.state = true, data })
}

// deferring reports whether a write now waits for Finish.
func (h *holdState) deferring() bool {
	if h == nil || !h.deferred {
		return false
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	return !h.ended
}

// end marks the hold over (its lock released or lost): later writes
// through its Threads (a handler's goroutine still running) go out at
// once. It returns what was deferred after the last Finish took the
// writes, which nothing will carry.
func (h *holdState) end() pendingWrites {
	if h == nil {
		return pendingWrites{}
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.ended = true
	w := pendingWrites{sets: h.sets, appends: h.appends}
	h.sets, h.appends = nil, nil
	return w
}

// endHold ends hs, reporting writes deferred too late for its last Finish.
func (c *call) endHold(hs *holdState) {
	if w := hs.end(); !w.empty() {
		c.writesFailed(w, errors.New("chatflow: written after the turn's Finish was sent"), false)
	}
}

func (h *holdState) deferAppend(a upstash.ListAppend) {
	h.mu.Lock()
	h.appends = append(h.appends, a)
	h.mu.Unlock()
}

// pendingItems returns the items appended to key and not yet written.
func (h *holdState) pendingItems(key string) []json.RawMessage {
	if h == nil {
		return nil
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []json.RawMessage
	for _, a := range h.appends {
		if a.Key == key {
			out = append(out, a.Value.(json.RawMessage))
		}
	}
	return out
}

// takeWrites hands the pending writes over to a Finish.
func (h *holdState) takeWrites() pendingWrites {
	if h == nil {
		return pendingWrites{}
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	w := pendingWrites{sets: h.sets, appends: h.appends}
	h.sets, h.appends = nil, nil
	return w
}

// writesFailed reports deferred writes a Finish did not apply (or, in
// doubt, may not have applied) in Result.Errors and at Error level.
func (c *call) writesFailed(w pendingWrites, err error, inDoubt bool) {
	if w.empty() {
		return
	}
	n := len(w.sets) + len(w.appends)
	var e error
	if inDoubt {
		e = fmt.Errorf("chatflow: %d deferred writes to %s, outcome unknown (%w): %w", n, w.keys(), upstash.ErrOutcomeUnknown, err)
		c.log.ErrorContext(c.parent, "chatflow: deferred writes in doubt: they may not have been applied", "writes", n, "keys", w.keys(), "error", err)
	} else {
		e = fmt.Errorf("%w: %d writes to %s: %w", ErrWritesNotApplied, n, w.keys(), err)
		c.log.ErrorContext(c.parent, "chatflow: deferred writes not applied", "writes", n, "keys", w.keys(), "error", err)
	}
	c.res.Errors = append(c.res.Errors, e)
}
