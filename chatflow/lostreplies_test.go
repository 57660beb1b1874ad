package chatflow

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chatstate/upstash"
	"github.com/chatstate/upstash/upstashtest"
)

// The fault matrix of issue 12: every strategy and option, on the fused
// path (Admit/Finish of *upstash.State) and on the 18 operations, under
// random faults of every kind that matters to delivery: 503 answers and
// connection resets (nothing ran) and lost replies (the command ran, its
// reply never came back). The client retries little (two retries, a few
// milliseconds apart), so that some operations fail on every attempt and
// the flow meets outcomes it cannot know.
//
// What is counted, at the server and by the recorder (not from Handle's
// returns alone):
//   - every message is handled exactly once, except messages dropped by
//     design (ErrLocked under Drop, DropNewest, a full queue trimming its
//     oldest entry: at most one per enqueue that reported a full queue),
//     and except what the flow logged as in doubt: each "may be handled
//     twice" line allows one extra handling, each "may be lost" line (and
//     each put-back or dedupe-marker deletion that failed) one missing
//     message;
//   - no two handlers at once on a lock key; under ConflictForce, a
//     handler may overlap only holders whose lock was taken over after they
//     asked for it; under Concurrent, never more than the cap per thread;
//   - a turn that outlives a heartbeat either sees its lock extended or its
//     context cancelled with ErrLockLost, and an extend sent after a
//     takeover of its lock fails (ConflictForce's promise: the forced-out
//     handler's context is cancelled at its next heartbeat);
//   - with history on, each admitted message is in its thread's history, at
//     most once per delivery of its webhook;
//   - after a sweep (Drain on every lock key, once stranded locks lapsed),
//     no lock, no queue and no dead-letter list is left, and every handled
//     message keeps its dedupe marker (unless rewriting it after a claim
//     in doubt failed, logged);
//   - lost replies hit the operations of both paths (counted per operation
//     by a tap in front of the server).

// faultCase is one row of the matrix.
type faultCase struct {
	name     string
	strategy Strategy
	history  bool
	force    bool      // Drop with ConflictForce
	channel  bool      // ScopeChannel, two threads per channel
	maxQueue int       // 0: 100
	onFull   QueueFull // "": DropOldest
	// writes: every turn merges its messages' ids into its thread's state
	// (SetState), with WithDeferredWrites on the fused path; each handled
	// message must be in the state after the sweep unless a call that
	// handled it reported its writes failed or in doubt.
	writes bool
}

var faultMatrix = []faultCase{
	{name: "queue", strategy: Queue, history: true},
	{name: "queue-nohistory", strategy: Queue},
	{name: "queue-dropnewest3", strategy: Queue, history: true, maxQueue: 3, onFull: DropNewest},
	{name: "queue-dropoldest3", strategy: Queue, history: true, maxQueue: 3, onFull: DropOldest},
	{name: "queue-channel", strategy: Queue, history: true, channel: true},
	{name: "burst", strategy: Burst, history: true},
	{name: "debounce", strategy: Debounce, history: true},
	{name: "drop", strategy: Drop, history: true},
	{name: "drop-force", strategy: Drop, history: true, force: true},
	{name: "concurrent", strategy: Concurrent, history: true},
	{name: "queue-deferred", strategy: Queue, history: true, writes: true},
	{name: "queue-channel-deferred", strategy: Queue, history: true, channel: true, writes: true},
	{name: "debounce-deferred", strategy: Debounce, history: true, writes: true},
	{name: "drop-force-deferred", strategy: Drop, history: true, force: true, writes: true},
}

// lostReplyRate is the fault rate: a third each of 503, reset and lost
// reply. With two retries, about one operation in 40 fails on every
// attempt.
const lostReplyRate = 0.3

// matrixResends counts the Admit and Finish requests the fused runs sent
// again under their operation id (the matrix's subtests run in parallel).
var matrixResends atomic.Int64

// Log lines that allow an extra handling or a missing message.
const (
	logTwice   = "may be handled twice"
	logLost    = "may be lost"
	logIsLost  = "it is lost"
	logMarker  = "could not clear the dedupe marker"
	logHistory = "history append outcome unknown"
)

func TestRandomFaultsLostReplies(t *testing.T) {
	var mu sync.Mutex
	total := map[string]map[upstashtest.Fault]int{} // "path/op" -> fault -> count
	var summary []string
	t.Run("matrix", func(t *testing.T) {
		for i, fc := range faultMatrix {
			for _, fused := range []bool{false, true} {
				fc, fused, seed := fc, fused, int64(100+2*i)
				if fused {
					seed++
				}
				path := map[bool]string{false: "plain", true: "fused"}[fused]
				t.Run(fc.name+"/"+path, func(t *testing.T) {
					t.Parallel()
					hits, line := runLostReplies(t, fc, fused, seed)
					mu.Lock()
					defer mu.Unlock()
					summary = append(summary, line)
					for op, byKind := range hits {
						k := path + "/" + op
						if total[k] == nil {
							total[k] = map[upstashtest.Fault]int{}
						}
						for f, n := range byKind {
							total[k][f] += n
						}
					}
				})
			}
		}
	})
	if t.Failed() {
		return
	}
	if n := heartbeats(); n > 0 {
		t.Errorf("%d heartbeat goroutines alive after every call returned", n)
	}
	sort.Strings(summary)
	t.Logf("matrix (config/path seed: webhooks, redeliveries, handled twice/allowed, missing/allowed, by design, faults):\n%s", strings.Join(summary, "\n"))
	var ops []string
	for k := range total {
		ops = append(ops, k)
	}
	sort.Strings(ops)
	var table []string
	for _, k := range ops {
		f := total[k]
		table = append(table, fmt.Sprintf("%-28s status %3d reset %3d drop %3d", k, f[upstashtest.FaultStatus], f[upstashtest.FaultReset], f[upstashtest.FaultDrop]))
	}
	t.Logf("faults by operation (all configurations):\n%s", strings.Join(table, "\n"))
	// Lost replies must have hit every operation that writes on each path
	// (checked when the whole matrix ran, not a -run selection).
	if len(summary) < 2*len(faultMatrix) {
		return
	}
	for _, k := range []string{
		"fused/Admit", "fused/Finish", "fused/Dequeue",
		"plain/SetIfNotExists", "plain/AppendToList", "plain/AcquireLock", "plain/Enqueue",
		"plain/Dequeue", "plain/ReleaseLock",
	} {
		if total[k][upstashtest.FaultDrop] == 0 {
			t.Errorf("no lost reply hit %s", k)
		}
	}
	if matrixResends.Load() == 0 {
		t.Error("no Admit or Finish in doubt was sent again under its operation id")
	}
	// The heartbeat is the same on both paths, and extends are fewer (a
	// few per configuration): counted together.
	if total["fused/ExtendLock"][upstashtest.FaultDrop]+total["plain/ExtendLock"][upstashtest.FaultDrop] == 0 {
		t.Error("no lost reply hit ExtendLock")
	}
}

// faultWatch follows what the hooks see: successful extends per call;
// the takeovers of each lock key (a force-release, an Admit asking for a
// takeover), each with the event index of its reply (none while in
// flight) and the index at which each call last asked for a lock; and
// enqueues that reported a full queue. A holder may have been forced out
// by a takeover whose reply came after it asked for its lock (the takeover
// may have run after its lock was taken), or that is still in flight.
type faultWatch struct {
	mu        sync.Mutex
	changed   chan struct{} // closed and replaced on every extend
	extends   map[int64]int
	events    int64
	takeovers map[string][]*takeover // lock key -> takeovers
	asked     map[int64]int64        // call -> event index of its latest lock request
	fullSeen  int
	maxQueue  int
	trace     []string // lock events, printed when the test fails

	// For the check that an extend fails after a takeover: each call's
	// lock key, the event index at which it got its lock and at which it
	// last sent an extend, and the extends that succeeded when they could
	// not have.
	lockKey    map[int64]string
	gotAt      map[int64]int64
	extendSent map[int64]int64
	badExtends []string
	refused    int // extends that found another token after a takeover
}

type takeover struct {
	call    int64
	sent    int64 // event index of the request
	replied int64 // event index of the reply; 0 while in flight
	sure    bool  // it took the lock over (a force-release, or an Admit that says so)
}

// forcedOut reports whether call, holding key's lock, may have been forced
// out (w.mu held).
func (w *faultWatch) forcedOut(key string, call int64) bool {
	for _, to := range w.takeovers[key] {
		if to.call != call && (to.replied == 0 || to.replied > w.asked[call]) {
			return true
		}
	}
	return false
}

// pending returns call's takeover of key still in flight.
func (w *faultWatch) pending(key string, call int64) *takeover {
	for _, to := range w.takeovers[key] {
		if to.call == call && to.replied == 0 {
			return to
		}
	}
	return nil
}

// note adds a line to the trace (w.mu held).
func (w *faultWatch) note(format string, args ...any) {
	if len(w.trace) < 5000 {
		w.trace = append(w.trace, fmt.Sprintf("%d: ", w.events)+fmt.Sprintf(format, args...))
	}
}

type callKey struct{}

func callOf(ctx context.Context) int64 {
	id, _ := ctx.Value(callKey{}).(int64)
	return id
}

func (w *faultWatch) observe(ctx context.Context, op string, res any, err error) {
	call := callOf(ctx)
	w.mu.Lock()
	defer w.mu.Unlock()
	w.events++
	switch op {
	case "AcquireLock:send", "ForceReleaseLock:send", "ForceReleaseLock", "ExtendLock", "ReleaseLock":
		w.note("call %d %s %v err=%v", call, op, res, err)
	case "AcquireLock":
		l, _ := res.(*upstash.Lock)
		w.note("call %d %s got=%v err=%v", call, op, l != nil, err)
	case "Admit:send":
		req := res.(upstash.AdmitRequest)
		w.note("call %d %s %s takeover=%v", call, op, req.ThreadID, req.TakeOver)
	case "Admit":
		r := res.(upstash.AdmitResult)
		w.note("call %d %s lock=%v tookOver=%v dup=%v busy=%v err=%v", call, op, r.Lock != nil, r.TookOver, r.Duplicate, r.Busy, err)
	case "Finish":
		r := res.(upstash.FinishResult)
		w.note("call %d %s next=%v err=%v", call, op, r.Next != nil, err)
	}
	switch op {
	case "AcquireLock:send":
		w.asked[call], w.lockKey[call] = w.events, res.(string)
	case "AcquireLock":
		if l, _ := res.(*upstash.Lock); l != nil && err == nil {
			w.gotAt[call] = w.events
		}
	case "ForceReleaseLock:send":
		key := res.(string)
		w.takeovers[key] = append(w.takeovers[key], &takeover{call: call, sent: w.events})
	case "ForceReleaseLock":
		if to := w.pending(res.(string), call); to != nil {
			to.replied, to.sure = w.events, err == nil
		}
	case "Admit:send":
		if req := res.(upstash.AdmitRequest); req.ThreadID != "" {
			w.asked[call], w.lockKey[call] = w.events, req.ThreadID
			if req.TakeOver {
				w.takeovers[req.ThreadID] = append(w.takeovers[req.ThreadID], &takeover{call: call, sent: w.events})
			}
		}
	case "Admit":
		r := res.(upstash.AdmitResult)
		if err == nil && r.Lock != nil {
			w.gotAt[call] = w.events
		}
		for key := range w.takeovers {
			to := w.pending(key, call)
			if to == nil {
				continue
			}
			if err == nil && !r.TookOver {
				to.replied = -1 // took nothing over: forced nobody out
			} else {
				to.replied = w.events // took over, or may have
				to.sure = err == nil
			}
		}
		if err == nil && r.Queued && r.QueueDepth >= w.maxQueue {
			w.fullSeen++
		}
	case "ExtendLock:send":
		w.extendSent[call] = w.events
	case "Enqueue":
		if n := res.(int); err == nil && n >= w.maxQueue {
			w.fullSeen++
		}
	case "ExtendLock":
		// A takeover sent after this holder got its lock and answered
		// before this extend was sent ran in between: the extend must find
		// another token.
		var after *takeover
		for _, to := range w.takeovers[w.lockKey[call]] {
			if to.sure && to.call != call && to.sent > w.gotAt[call] && to.replied > 0 && to.replied < w.extendSent[call] {
				after = to
			}
		}
		ok := res.(bool)
		if after != nil && err == nil && !ok {
			w.refused++
		}
		if after != nil && err == nil && ok {
			w.badExtends = append(w.badExtends, fmt.Sprintf("call %d extended its lock on %s (extend sent at %d) after call %d took it over (sent at %d, answered at %d; lock got at %d)",
				call, w.lockKey[call], w.extendSent[call], after.call, after.sent, after.replied, w.gotAt[call]))
		}
		if err == nil && ok {
			w.extends[call]++
			close(w.changed)
			w.changed = make(chan struct{})
		}
	}
}

// waitExtends waits until call's heartbeat extended its lock n times or
// ctx ends; it reports whether the extends came.
func (w *faultWatch) waitExtends(ctx context.Context, call int64, n int) bool {
	for {
		w.mu.Lock()
		got, ch := w.extends[call], w.changed
		w.mu.Unlock()
		if got >= n {
			return true
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return false
		}
	}
}

// faultTap names the operation of every request (a header set by its
// transport from the hooks' context label) and, in front of the server,
// counts the injected faults by operation: a 503, a connection closed
// before the body was read (reset) or after (lost reply).
type faultTap struct {
	base http.RoundTripper
	mu   sync.Mutex
	hits map[string]map[upstashtest.Fault]int
}

const tapHeader = "X-Chatflow-Test-Op"

func (ft *faultTap) RoundTrip(req *http.Request) (*http.Response, error) {
	op := opLabel(req.Context())
	if op == "" {
		op = "other"
	}
	r := req.Clone(req.Context())
	r.Header.Set(tapHeader, op)
	return ft.base.RoundTrip(r)
}

func (ft *faultTap) front(inner http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		op := r.Header.Get(tapHeader)
		if strings.HasSuffix(r.URL.Path, "/pipeline") {
			op += "+batch" // an auto-pipelined batch, named after its leader
		}
		body := &readFlag{ReadCloser: r.Body}
		r.Body = body
		tw := &tapWriter{ResponseWriter: w}
		inner.ServeHTTP(tw, r)
		var kind upstashtest.Fault
		switch {
		case tw.hijacked && body.read.Load():
			kind = upstashtest.FaultDrop
		case tw.hijacked:
			kind = upstashtest.FaultReset
		case tw.status == http.StatusServiceUnavailable:
			kind = upstashtest.FaultStatus
		default:
			return
		}
		ft.mu.Lock()
		defer ft.mu.Unlock()
		if ft.hits[op] == nil {
			ft.hits[op] = map[upstashtest.Fault]int{}
		}
		ft.hits[op][kind]++
	})
}

// readFlag is a request body that remembers whether it was read.
type readFlag struct {
	io.ReadCloser
	read atomic.Bool
}

func (b *readFlag) Read(p []byte) (int, error) {
	b.read.Store(true)
	return b.ReadCloser.Read(p)
}

type tapWriter struct {
	http.ResponseWriter
	status   int
	hijacked bool
}

func (w *tapWriter) WriteHeader(code int) {
	w.status = code
	w.ResponseWriter.WriteHeader(code)
}

func (w *tapWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	w.hijacked = true
	return w.ResponseWriter.(http.Hijacker).Hijack()
}

// runLostReplies runs one configuration on one path and returns the
// faults the tap counted by operation and a summary line.
func runLostReplies(t *testing.T, fc faultCase, fused bool, seed int64) (map[string]map[upstashtest.Fault]int, string) {
	srv := upstashtest.NewServer(t, upstashtest.WithSeed(seed))
	tap := &faultTap{base: http.DefaultTransport.(*http.Transport).Clone(), hits: map[string]map[upstashtest.Fault]int{}}
	front := httptest.NewServer(tap.front(srv.Handler()))
	t.Cleanup(front.Close)
	t.Cleanup(tap.base.(*http.Transport).CloseIdleConnections)
	client, err := upstash.New(upstash.Config{URL: front.URL, Token: srv.Token},
		upstash.WithTransport(tap),
		upstash.WithRetry(upstash.RetryPolicy{MaxRetries: 2, MinBackoff: time.Millisecond, MaxBackoff: 4 * time.Millisecond}))
	if err != nil {
		t.Fatal(err)
	}
	state := upstash.NewState(client)
	e := &env{t: t, srv: srv, state: state, hooks: newHooks(state), rec: newRecorder(), clock: newFakeClock(), logs: &logCounter{}, fused: fused}
	e.rec.delay = 3 * time.Millisecond // long enough for webhooks to meet a busy lock

	maxQueue := fc.maxQueue
	if maxQueue == 0 {
		maxQueue = 100
	}
	watch := &faultWatch{changed: make(chan struct{}), extends: map[int64]int{}, takeovers: map[string][]*takeover{}, asked: map[int64]int64{},
		lockKey: map[int64]string{}, gotAt: map[int64]int64{}, extendSent: map[int64]int64{}, maxQueue: maxQueue}
	e.hooks.observer = watch.observe

	opts := []Option{
		WithStrategy(fc.strategy), WithMaxQueueSize(maxQueue), WithDebounce(20 * time.Millisecond),
		WithLockTTL(3 * time.Second), WithLogger(slog.New(e.logs)),
	}
	if fc.history {
		opts = append(opts, WithHistory(HistoryOptions{}))
	}
	if fc.force {
		opts = append(opts, WithOnLockConflict(ConflictForce))
	}
	if fc.channel {
		opts = append(opts, WithLockScope(ScopeChannel))
	}
	if fc.onFull != "" {
		opts = append(opts, WithOnQueueFull(fc.onFull))
	}
	if fc.writes {
		opts = append(opts, WithDeferredWrites())
	}
	const maxConcurrent = 2
	if fc.strategy == Concurrent {
		opts = append(opts, WithMaxConcurrent(maxConcurrent))
	}

	// The handler: the recorder, behind a check that a handler starting on
	// a lock key overlaps only holders forced out (ConflictForce).
	var (
		runMu     sync.Mutex
		running   = map[string]map[int64]int{} // lock key -> call -> turns running
		forcedOut []string
		badForce  []string
	)
	var (
		writesMu     sync.Mutex
		writtenBy    = map[string][]int64{} // message -> calls whose turn wrote it
		writesFailed = map[int64]bool{}     // calls whose writes failed or are in doubt
	)
	failedWrites := func(call int64, res Result) {
		for _, err := range res.Errors {
			if errors.Is(err, ErrWritesNotApplied) || errors.Is(err, upstash.ErrOutcomeUnknown) {
				writesMu.Lock()
				writesFailed[call] = true
				writesMu.Unlock()
			}
		}
	}
	handler := func(ctx context.Context, turn *Turn) error {
		if fc.writes {
			call := callOf(ctx)
			patch := map[string]bool{}
			writesMu.Lock()
			for _, m := range append([]*Message{turn.Message}, turn.Skipped...) {
				patch["m:"+m.ID] = true
				writtenBy[m.ID] = append(writtenBy[m.ID], call)
			}
			writesMu.Unlock()
			if err := turn.Thread.SetState(ctx, patch); err != nil {
				writesMu.Lock()
				writesFailed[call] = true
				writesMu.Unlock()
			}
		}
		if turn.LockKey == "" || !fc.force {
			return e.rec.handle(ctx, turn)
		}
		call := callOf(ctx)
		runMu.Lock()
		watch.mu.Lock()
		watch.note("call %d handler start %s (asked at %d)", call, turn.Message.ID, watch.asked[call])
		for other, n := range running[turn.LockKey] {
			if n == 0 || other == call {
				continue
			}
			// Allowed when either was forced out: its lock was taken over
			// after it asked for it (the late one may be the forced-out
			// holder, whose lock request's reply came back late).
			if watch.forcedOut(turn.LockKey, other) || watch.forcedOut(turn.LockKey, call) {
				forcedOut = append(forcedOut, fmt.Sprintf("%s: call %d overlaps forced-out call %d", turn.LockKey, call, other))
			} else {
				badForce = append(badForce, fmt.Sprintf("%s: call %d (latest %s) overlaps call %d, whose lock was not taken over", turn.LockKey, call, turn.Message.ID, other))
			}
		}
		watch.mu.Unlock()
		if running[turn.LockKey] == nil {
			running[turn.LockKey] = map[int64]int{}
		}
		running[turn.LockKey][call]++
		runMu.Unlock()
		defer func() {
			runMu.Lock()
			running[turn.LockKey][call]--
			runMu.Unlock()
			watch.mu.Lock()
			watch.note("call %d handler end %s", call, turn.Message.ID)
			watch.mu.Unlock()
		}()
		return e.rec.handle(ctx, turn)
	}

	// One message of each thread is slow: its turn lasts until its lock
	// was extended twice (a heartbeat every second) or its context ends.
	var (
		slowMu    sync.Mutex
		slowDone  = map[string]bool{}
		slowTurns []string
		slowBad   []string
	)
	board := &jobBoard{changed: make(chan struct{}), started: map[string]bool{}, running: map[string]int64{}, done: map[string]bool{}}
	laterOf := map[string][]string{} // slow message -> its thread's later messages
	if fc.strategy != Concurrent {
		e.rec.also = func(ctx context.Context, turn *Turn) {
			slow := false
			slowMu.Lock()
			for _, m := range append([]*Message{turn.Message}, turn.Skipped...) {
				if strings.HasSuffix(m.ID, "-2") && !slowDone[m.ID] {
					slowDone[m.ID], slow = true, true
					board.update(func() { board.started[m.ID] = true })
				}
			}
			slowMu.Unlock()
			if !slow {
				return
			}
			call := callOf(ctx)
			extended := watch.waitExtends(ctx, call, 2)
			if extended && fc.maxQueue > 0 {
				// With a small queue, the turn also holds the lock until its
				// thread's later messages were delivered (and overflowed
				// the queue), those of this very call apart.
				extended = board.waitCtx(ctx, func() bool {
					for _, slowID := range slowIDs(turn) {
						for _, later := range laterOf[slowID] {
							if !board.done[later] && board.running[later] != call {
								return false
							}
						}
					}
					return true
				})
			}
			cause := context.Cause(ctx)
			slowMu.Lock()
			defer slowMu.Unlock()
			switch {
			case extended:
				slowTurns = append(slowTurns, "extended")
			case errors.Is(cause, ErrLockLost):
				slowTurns = append(slowTurns, "lock lost")
			default:
				slowBad = append(slowBad, fmt.Sprintf("slow turn of %s ended by %v, neither extended nor ErrLockLost", turn.Message.ID, cause))
			}
		}
	}

	f, err := New(e.adapter(), handler, opts...)
	if err != nil {
		t.Fatal(err)
	}
	if (f.fused != nil) != fused {
		t.Fatalf("flow on the fused path: %v, want %v", f.fused != nil, fused)
	}
	base := bg(t)
	var calls atomic.Int64
	callCtx := func() context.Context { return context.WithValue(base, callKey{}, calls.Add(1)) }

	threads := []string{"slack:C0:1.0", "slack:C1:1.0", "slack:C2:1.0"}
	if fc.channel {
		threads = []string{"slack:C0:1.0", "slack:C0:2.0", "slack:C1:1.0", "slack:C1:2.0"}
	}
	const perThread, workers, maxDeliveries = 8, 6, 50
	var all []*Message
	byThread := make([][]*Message, len(threads))
	for i := 0; i < perThread; i++ {
		for j, th := range threads {
			m := msg(fmt.Sprintf("m%d-%d", j, i), th)
			all = append(all, m)
			byThread[j] = append(byThread[j], m)
			if i > 2 {
				slowID := fmt.Sprintf("m%d-2", j)
				laterOf[slowID] = append(laterOf[slowID], m.ID)
			}
		}
	}
	srv.SetFaultRate(lostReplyRate, upstashtest.FaultStatus, upstashtest.FaultReset, upstashtest.FaultDrop)

	var mu sync.Mutex
	final := map[string]error{}
	status := map[string]Status{}
	deliveries := map[string]int{}
	jobs := make(chan *Message)
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for m := range jobs {
				board.update(func() { board.inflight++ })
				var err error
				var res Result
				for attempt := 0; attempt < maxDeliveries; attempt++ {
					mu.Lock()
					deliveries[m.ID]++
					mu.Unlock()
					id := calls.Add(1)
					board.update(func() { board.running[m.ID] = id })
					res, err = f.Handle(context.WithValue(base, callKey{}, id), "slack", m)
					failedWrites(id, res)
					if err == nil || errors.Is(err, ErrLocked) {
						break
					}
				}
				mu.Lock()
				final[m.ID], status[m.ID] = err, res.Status
				mu.Unlock()
				board.update(func() {
					board.inflight--
					board.done[m.ID] = true
					delete(board.running, m.ID)
				})
			}
		}()
	}
	// One dispatcher per thread. With a small queue, a thread's later
	// messages come once its slow turn holds the lock, so that they
	// overflow the queue (or once nothing is in flight any more: the slow
	// turn is not coming, its message failed, was lost or waits behind a
	// lock left to lapse).
	var dispatch sync.WaitGroup
	for j := range threads {
		dispatch.Add(1)
		go func(j int) {
			defer dispatch.Done()
			slowID := fmt.Sprintf("m%d-2", j)
			for i, m := range byThread[j] {
				if fc.maxQueue > 0 && i > 2 {
					board.wait(func() bool { return board.started[slowID] || board.inflight == 0 })
				}
				jobs <- m
			}
		}(j)
	}
	dispatch.Wait()
	close(jobs)
	wg.Wait()
	srv.ClearFaults()
	faults := srv.Stats().Faults

	// A sweep, as a scheduled Drain would: what a lock whose release (or
	// Finish) failed holds back is drained once it lapses (3 s TTL).
	lockKeys := map[string]bool{}
	for _, th := range threads {
		lockKeys[f.LockKey(th)] = true
	}
	if fc.strategy != Concurrent {
		for key := range lockKeys {
			deadline := time.Now().Add(waitLimit)
			for {
				ctx := callCtx()
				res, err := f.Drain(ctx, key)
				failedWrites(callOf(ctx), res)
				if err == nil && res.Status != StatusBusy {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("sweep: %s still busy after %v (%+v, %v)", key, waitLimit, res, err)
				}
				time.Sleep(20 * time.Millisecond)
			}
		}
	}

	// Delivery, counted by the recorder.
	twice, lost := e.logs.containing(logTwice), e.logs.containing(logLost)+e.logs.containing(logIsLost)+e.logs.containing(logMarker)
	extra, missing, trimmed, byDesign, redelivered := 0, 0, 0, 0, 0
	for _, m := range all {
		err, st, n := final[m.ID], status[m.ID], e.rec.count(m.ID)
		if deliveries[m.ID] > 1 {
			redelivered++
		}
		switch {
		case errors.Is(err, ErrLocked):
			byDesign++
			if fc.strategy != Drop || n != 0 {
				t.Errorf("%s: dropped (%v) but handled %d times", m.ID, err, n)
			}
		case err != nil:
			t.Errorf("%s: still failing after %d deliveries: %v", m.ID, maxDeliveries, err)
		case st == StatusDropped:
			byDesign++
			// Handled once is right when an earlier delivery, in doubt
			// (logged), had queued it after all.
			if fc.onFull != DropNewest || n > 1 || n == 1 && (deliveries[m.ID] == 1 || twice == 0) {
				t.Errorf("%s: dropped by a full queue but handled %d times (%d deliveries)", m.ID, n, deliveries[m.ID])
			}
		case n == 0 && st == StatusQueued && fc.maxQueue > 0:
			trimmed++ // the queue's drop-oldest trimming (checked below)
		case n == 0:
			missing++
			t.Logf("%s never handled (last status %q, %d deliveries)", m.ID, st, deliveries[m.ID])
		case n > 1:
			extra += n - 1
			t.Logf("%s handled %d times (%d deliveries)", m.ID, n, deliveries[m.ID])
		}
	}
	if extra > twice {
		t.Errorf("%d extra handlings, but only %d logged doubts (%q)", extra, twice, logTwice)
	}
	if missing > lost {
		t.Errorf("%d messages never handled, but only %d logged losses", missing, lost)
	}
	watch.mu.Lock()
	fullSeen := watch.fullSeen
	watch.mu.Unlock()
	if trimmed > fullSeen+twice+lost {
		t.Errorf("%d queued messages never handled, but only %d enqueues found the queue full", trimmed, fullSeen)
	}
	if fc.maxQueue > 0 && byDesign+trimmed == 0 {
		t.Errorf("the queue of %d never overflowed (%s): the option was not exercised", fc.maxQueue, fc.onFull)
	}

	// Never two handlers at once.
	switch {
	case fc.strategy == Concurrent:
		for _, th := range threads {
			if p := e.rec.peakOf(th); p > maxConcurrent {
				t.Errorf("%s: %d handlers at once, cap %d", th, p, maxConcurrent)
			}
		}
	case fc.force:
		runMu.Lock()
		for _, b := range badForce {
			t.Error(b)
		}
		runMu.Unlock()
	default:
		e.rec.assertNoOverlap(t)
	}
	watch.mu.Lock()
	for _, b := range watch.badExtends {
		t.Error(b) // the forced-out holder's context would not be cancelled
	}
	watch.mu.Unlock()
	slowMu.Lock()
	for _, b := range slowBad {
		t.Error(b)
	}
	slowSummary := fmt.Sprint(len(slowTurns), " slow turns ", countStrings(slowTurns))
	slowMu.Unlock()

	// History: every admitted message is in its thread's history, at most
	// once per delivery of its webhook.
	if fc.history {
		counts := map[string]int{}
		for _, th := range threads {
			items, err := state.GetList(base, HistoryKey(th))
			if err != nil {
				t.Fatal(err)
			}
			for _, raw := range items {
				var m Message
				if err := json.Unmarshal(raw, &m); err != nil {
					t.Fatalf("history of %s: %v", th, err)
				}
				if m.ThreadID != th {
					t.Errorf("history of %s holds %s of %s", th, m.ID, m.ThreadID)
				}
				counts[m.ID]++
			}
		}
		gaps := 0
		for _, m := range all {
			if counts[m.ID] > deliveries[m.ID] {
				t.Errorf("%s is %d times in the history after %d deliveries", m.ID, counts[m.ID], deliveries[m.ID])
			}
			if counts[m.ID] == 0 && (final[m.ID] == nil || errors.Is(final[m.ID], ErrLocked)) {
				gaps++
			}
		}
		if allowed := e.logs.containing(logHistory) + lost + e.logs.containing("admit outcome unknown"); gaps > allowed {
			t.Errorf("%d admitted messages missing from the history, %d allowed by logged doubts", gaps, allowed)
		}
	}

	// Thread state: every handled message was merged into its thread's
	// state by a turn, unless every call that handled it reported its
	// writes failed or in doubt (or a write failed in the handler). The
	// plain path under ConflictForce is left out: overlapping handlers'
	// merges may overwrite each other there, as in TypeScript.
	if fc.writes && (fused || !fc.force) {
		inState := map[string]bool{}
		for _, th := range threads {
			raw, err := state.Get(base, ThreadStateKey(th))
			if err != nil {
				t.Fatal(err)
			}
			members, _ := objectMembers(raw)
			for _, m := range members {
				inState[strings.TrimPrefix(m.key, "m:")] = true
			}
		}
		missingState, excused := 0, 0
		writesMu.Lock()
		for _, m := range all {
			if e.rec.count(m.ID) == 0 || inState[m.ID] {
				continue
			}
			allowed := true
			for _, call := range writtenBy[m.ID] {
				allowed = allowed && writesFailed[call]
			}
			if allowed && len(writtenBy[m.ID]) > 0 {
				excused++
				continue
			}
			missingState++
			t.Errorf("%s handled (by calls %v) but missing from its thread's state", m.ID, writtenBy[m.ID])
		}
		writesMu.Unlock()
		t.Logf("thread state: %d handled messages missing, excused by reported write failures: %d", missingState+excused, excused)
	}

	// Nothing left locked or queued, and handled messages keep their
	// dedupe marker (a platform's late retry stays a duplicate).
	for _, pattern := range []string{"chat-sdk:lock:*", "chat-sdk:queue:*", "chat-sdk:queue-corrupt:*"} {
		if k := e.keys(pattern); len(k) > 0 {
			t.Errorf("left after the sweep: %v", k)
		}
	}
	unmarked := 0
	for _, m := range all {
		if e.rec.count(m.ID) == 0 {
			continue
		}
		if v, err := srv.Do("EXISTS", "chat-sdk:cache:"+DedupeKey("slack", m.ID)); err != nil {
			t.Fatal(err)
		} else if v.(int64) != 1 {
			unmarked++
		}
	}
	if allowed := e.logs.containing("could not write the dedupe marker") + lost; unmarked > allowed {
		t.Errorf("%d handled messages without a dedupe marker, %d allowed by logged doubts", unmarked, allowed)
	}

	// The faults reached the server, lost replies included, and the tap
	// saw each of them.
	tap.mu.Lock()
	hits := tap.hits
	tap.mu.Unlock()
	tapped := map[upstashtest.Fault]int{}
	for _, byKind := range hits {
		for k, n := range byKind {
			tapped[k] += n
		}
	}
	if faults[upstashtest.FaultStatus]+faults[upstashtest.FaultReset]+faults[upstashtest.FaultDrop] == 0 {
		t.Error("no fault was injected")
	}
	for _, k := range []upstashtest.Fault{upstashtest.FaultStatus, upstashtest.FaultReset, upstashtest.FaultDrop} {
		if int64(tapped[k]) != faults[k] {
			t.Errorf("tap counted %d %v faults, the server %d", tapped[k], k, faults[k])
		}
	}
	path := map[bool]string{false: "plain", true: "fused"}[fused]
	// On the fused path an Admit or a Finish in doubt is sent again under
	// its operation id: the doubts that cost a message handled twice or
	// lost are gone (each would need a dozen failed HTTP attempts in a
	// row), and the resends happened.
	resends := e.logs.containing("sending it again under its operation id")
	if fused {
		matrixResends.Add(int64(resends))
		for _, doubt := range []string{"admit outcome unknown", "finish outcome unknown"} {
			if n := e.logs.containing(doubt); n > 0 {
				t.Errorf("%d %q lines on the fused path, want 0 after resending under the operation id", n, doubt)
			}
		}
	}
	watch.mu.Lock()
	refused := watch.refused
	watch.mu.Unlock()
	if fc.force && refused == 0 {
		t.Error("no holder's extend met a takeover: ConflictForce's cancellation was not exercised")
	}
	line := fmt.Sprintf("%-18s %s seed %d: %d webhooks, %d redelivered, twice %d/%d, missing %d/%d, by design %d (trimmed %d), %s, faults %v, forced-out overlaps %d, extends refused after a takeover %d, Admit/Finish resent %d",
		fc.name, path, seed, len(all), redelivered, extra, twice, missing, lost, byDesign, trimmed, slowSummary, faults, len(forcedOut), refused, resends)
	t.Log(line)
	if t.Failed() || testing.Verbose() && os.Getenv("CHATFLOW_FLOW_LOG") != "" {
		t.Logf("flow log:\n%s", e.logs.dump())
		watch.mu.Lock()
		t.Logf("lock trace:\n%s", strings.Join(watch.trace, "\n"))
		watch.mu.Unlock()
	}
	return hits, line
}

// jobBoard is what the job dispatcher waits on: the slow turns started
// and the webhooks in flight.
type jobBoard struct {
	mu       sync.Mutex
	changed  chan struct{} // closed and replaced on every update
	started  map[string]bool
	inflight int
	running  map[string]int64 // message -> call of its delivery in flight
	done     map[string]bool  // message -> its deliveries are over
}

func (b *jobBoard) update(fn func()) {
	b.mu.Lock()
	defer b.mu.Unlock()
	fn()
	close(b.changed)
	b.changed = make(chan struct{})
}

// wait blocks until cond (called with the board locked) holds.
func (b *jobBoard) wait(cond func() bool) {
	b.waitCtx(context.Background(), cond)
}

// waitCtx is wait that gives up, returning false, when ctx ends.
func (b *jobBoard) waitCtx(ctx context.Context, cond func() bool) bool {
	for {
		b.mu.Lock()
		ok, ch := cond(), b.changed
		b.mu.Unlock()
		if ok {
			return true
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return false
		}
	}
}

// slowIDs returns the slow messages (ids ending in -2) of a turn.
func slowIDs(turn *Turn) []string {
	var out []string
	for _, m := range append([]*Message{turn.Message}, turn.Skipped...) {
		if strings.HasSuffix(m.ID, "-2") {
			out = append(out, m.ID)
		}
	}
	return out
}

func countStrings(ss []string) map[string]int {
	out := map[string]int{}
	for _, s := range ss {
		out[s]++
	}
	return out
}
