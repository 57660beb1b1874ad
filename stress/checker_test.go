package stress_test

import (
	"context"
	"errors"
	"fmt"
	"net/http/httptrace"
	"sort"
	"sync"
	"time"

	"github.com/chatstate/upstash"
)

// The checker records what the workers did, as they did it, and judges it
// once the round is over. Every time it records is taken conservatively:
//
//   - a critical section runs from the start of the reply to the acquire
//     that took the lock (the last reply of that call: the lock was set by
//     then) to the moment just before the release was called (the lock is
//     still there then). Each recorded section therefore lies inside the
//     time the lock really was held, and two recorded sections of one key
//     that intersect prove two holders at once;
//   - a call "could hold" the lock from the moment it was called until its
//     release returned; an acquire that failed could hold it until it
//     returned, or for the rest of the round if its outcome is unknown,
//     as could a lock whose release failed. A busy answer is only wrong
//     when no other call could hold the lock during the whole of the
//     acquire that got it.

// section is one critical section: the lock of key held under token with
// fencing token fence, from acquired to released.
type section struct {
	key      string
	worker   int
	token    string
	fence    int64
	acquired time.Time
	released time.Time
}

// mayHold is the time during which the acquire call id could have held the
// lock of key: from its start to its end, or for ever when open.
type mayHold struct {
	key  string
	id   int
	from time.Time
	to   time.Time
	open bool
}

// busyAnswer is an acquire call (id, on key) that was told the lock was
// busy, with the interval of the whole call.
type busyAnswer struct {
	key  string
	id   int
	from time.Time
	to   time.Time
}

// checker collects the records of one round. Its methods are safe for
// concurrent use.
type checker struct {
	now      func() time.Time // time.Now, or a test's clock
	mu       sync.Mutex
	nextID   int
	inflight map[string]map[int]time.Time // key → acquire call id → its start
	holds    map[int]*mayHold
	sections []section
	busy     []busyAnswer
	known    map[string]bool // tokens some worker was handed

	calls, unknown, otherErrs int
	callsByOp                 map[string]int
	errSamples                []string
	lostWhileHeld             int
	lostSamples               []string
}

func newChecker() *checker {
	return &checker{
		now:       time.Now,
		inflight:  map[string]map[int]time.Time{},
		holds:     map[int]*mayHold{},
		known:     map[string]bool{},
		callsByOp: map[string]int{},
	}
}

// startAcquire records an acquire call on key starting now. Until its
// outcome is known, it could hold the lock.
func (c *checker) startAcquire(key string) (id int, start time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.nextID++
	id = c.nextID
	start = c.now()
	if c.inflight[key] == nil {
		c.inflight[key] = map[int]time.Time{}
	}
	c.inflight[key][id] = start
	c.holds[id] = &mayHold{key: key, id: id, from: start, open: true}
	return id, start
}

// acquireBusy records that the acquire call id, which ended at end, was
// told another holder has the lock: it holds nothing.
func (c *checker) acquireBusy(id int, end time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	h := c.holds[id]
	c.busy = append(c.busy, busyAnswer{key: h.key, id: id, from: h.from, to: end})
	delete(c.holds, id)
	delete(c.inflight[h.key], id)
}

// acquireFailed records that the acquire call id ended at end with an
// error; unknown says whether it may have left the lock held.
func (c *checker) acquireFailed(id int, end time.Time, unknown bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	h := c.holds[id]
	h.to, h.open = end, unknown
	delete(c.inflight[h.key], id)
}

// acquired records that the acquire call id got the lock under token.
func (c *checker) acquired(id int, token string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.known[token] = true
	delete(c.inflight[c.holds[id].key], id)
}

// releaseDone records the end of the release of the lock acquire call id
// took. held says the lock is known to be gone when it returned (released,
// or found not held); otherwise it could stay held for the rest of the
// round.
func (c *checker) releaseDone(id int, end time.Time, gone bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	h := c.holds[id]
	h.to, h.open = end, !gone
}

// addSection records a critical section.
func (c *checker) addSection(s section) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.sections = append(c.sections, s)
}

// isKnown reports whether token was handed to a worker.
func (c *checker) isKnown(token string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.known[token]
}

// acquiresBefore reports whether an acquire call on key that started at
// or before t is still in flight.
func (c *checker) acquiresBefore(key string, t time.Time) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, start := range c.inflight[key] {
		if !start.After(t) {
			return true
		}
	}
	return false
}

// waitAcquiresBefore waits until every acquire call on key that started at
// or before t has returned and been recorded.
func (c *checker) waitAcquiresBefore(ctx context.Context, key string, t time.Time) error {
	for c.acquiresBefore(key, t) {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(2 * time.Millisecond):
		}
	}
	return nil
}

// call counts one call of the library (op names it) and classifies its
// error: nil, one matching ErrOutcomeUnknown, or another error. Errors the
// caller expects (a busy lock, a lost lock) must be left out by it.
func (c *checker) call(op string, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.calls++
	c.callsByOp[op]++
	switch {
	case err == nil:
	case errors.Is(err, upstash.ErrOutcomeUnknown):
		c.unknown++
		c.sample(op, err)
	default:
		c.otherErrs++
		c.sample(op, err)
	}
}

func (c *checker) sample(op string, err error) {
	if len(c.errSamples) < 5 {
		c.errSamples = append(c.errSamples, fmt.Sprintf("%s: %v", op, err))
	}
}

// lost records a lock found not held by its holder (Unlock, Refresh or
// WithLock said so, or WithLock cancelled its function).
func (c *checker) lost(what string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.lostWhileHeld++
	if len(c.lostSamples) < 5 {
		c.lostSamples = append(c.lostSamples, what)
	}
}

// holdsList returns the may-hold intervals, ordered by call id.
func (c *checker) holdsList() []mayHold {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]mayHold, 0, len(c.holds))
	for _, h := range c.holds {
		out = append(out, *h)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].id < out[j].id })
	return out
}

// ---- the judgements, pure functions of the records ----

// bySectionStart groups sections by key, each group in acquisition order.
func bySectionStart(sections []section) map[string][]section {
	out := map[string][]section{}
	for _, s := range sections {
		out[s.key] = append(out[s.key], s)
	}
	for _, g := range out {
		sort.SliceStable(g, func(i, j int) bool { return g[i].acquired.Before(g[j].acquired) })
	}
	return out
}

// countOverlaps returns how many sections began before an earlier section
// of the same key had ended, with a description of the first few.
func countOverlaps(sections []section) (int, []string) {
	n := 0
	var samples []string
	for key, g := range bySectionStart(sections) {
		var last section
		for i, s := range g {
			if i > 0 && s.acquired.Before(last.released) {
				n++
				if len(samples) < 3 {
					samples = append(samples, fmt.Sprintf("thread %q: worker %d (fence %d) held it from %s to %s, worker %d (fence %d) from %s",
						key, last.worker, last.fence, stamp(last.acquired), stamp(last.released), s.worker, s.fence, stamp(s.acquired)))
				}
			}
			if i == 0 || s.released.After(last.released) {
				last = s
			}
		}
	}
	return n, samples
}

// countFenceDisorder returns how many sections, taken per key in
// acquisition order, carry a fencing token not larger than the one before.
func countFenceDisorder(sections []section) (int, []string) {
	n := 0
	var samples []string
	for key, g := range bySectionStart(sections) {
		for i := 1; i < len(g); i++ {
			if g[i].fence <= g[i-1].fence {
				n++
				if len(samples) < 3 {
					samples = append(samples, fmt.Sprintf("thread %q: fence %d acquired at %s after fence %d acquired at %s",
						key, g[i].fence, stamp(g[i].acquired), g[i-1].fence, stamp(g[i-1].acquired)))
				}
			}
		}
	}
	return n, samples
}

// countDisorder returns how many elements of seq are not larger than the
// one before.
func countDisorder(seq []int64) int {
	n := 0
	for i := 1; i < len(seq); i++ {
		if seq[i] <= seq[i-1] {
			n++
		}
	}
	return n
}

// countFalseBusy returns the busy answers during which no other call could
// hold the lock of their key at any moment.
func countFalseBusy(busy []busyAnswer, holds []mayHold) (int, []string) {
	byKey := map[string][]mayHold{}
	for _, h := range holds {
		byKey[h.key] = append(byKey[h.key], h)
	}
	n := 0
	var samples []string
	for _, b := range busy {
		justified := false
		for _, h := range byKey[b.key] {
			if h.id != b.id && !h.from.After(b.to) && (h.open || !h.to.Before(b.from)) {
				justified = true
				break
			}
		}
		if !justified {
			n++
			if len(samples) < 3 {
				samples = append(samples, fmt.Sprintf("thread %q: busy answer to an acquire from %s to %s, with no other holder possible", b.key, stamp(b.from), stamp(b.to)))
			}
		}
	}
	return n, samples
}

// countTimes counts the occurrences of each id in seq.
func countTimes(seq []string) map[string]int {
	out := make(map[string]int, len(seq))
	for _, s := range seq {
		out[s]++
	}
	return out
}

// stamp prints t to the microsecond, for failure messages.
func stamp(t time.Time) string { return t.Format("15:04:05.000000") }

// replyClock records, through httptrace, when the last reply of a call
// began to arrive.
type replyClock struct {
	mu   sync.Mutex
	last time.Time
}

// trace returns ctx with a hook that records each reply's first byte.
func (r *replyClock) trace(ctx context.Context) context.Context {
	return httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{
		GotFirstResponseByte: func() {
			now := time.Now()
			r.mu.Lock()
			r.last = now
			r.mu.Unlock()
		},
	})
}

// lastReply returns the start of the last reply, or fallback when none
// was seen.
func (r *replyClock) lastReply(fallback time.Time) time.Time {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.last.IsZero() {
		return fallback
	}
	return r.last
}
