package chatflow

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chatstate/upstash"
	"github.com/chatstate/upstash/upstashtest"
)

// waitLimit bounds every wait for an event in these tests; it is a
// safety net against a hang, never a statement about speed.
const waitLimit = 60 * time.Second

// ---------------------------------------------------------------- clock

// fakeClock is a clock that moves only when Advance is called.
type fakeClock struct {
	mu      sync.Mutex
	now     time.Time
	timers  []*fakeTimer
	changed chan struct{} // closed and replaced on every change
}

func newFakeClock() *fakeClock {
	return &fakeClock{now: time.Now().Round(0), changed: make(chan struct{})}
}

type fakeTimer struct {
	c  *fakeClock
	at time.Time
	ch chan time.Time
}

func (f *fakeClock) Now() time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.now
}

func (f *fakeClock) NewTimer(d time.Duration) timer {
	f.mu.Lock()
	defer f.mu.Unlock()
	t := &fakeTimer{c: f, at: f.now.Add(d), ch: make(chan time.Time, 1)}
	if d <= 0 {
		t.ch <- f.now
		return t
	}
	f.timers = append(f.timers, t)
	f.notify()
	return t
}

func (t *fakeTimer) C() <-chan time.Time { return t.ch }

func (t *fakeTimer) Stop() bool {
	f := t.c
	f.mu.Lock()
	defer f.mu.Unlock()
	for i, x := range f.timers {
		if x == t {
			f.timers = append(f.timers[:i], f.timers[i+1:]...)
			f.notify()
			return true
		}
	}
	return false
}

func (f *fakeClock) notify() {
	close(f.changed)
	f.changed = make(chan struct{})
}

// Advance moves the clock on by d and fires the timers that fell due.
func (f *fakeClock) Advance(d time.Duration) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.now = f.now.Add(d)
	keep := f.timers[:0]
	for _, t := range f.timers {
		if !t.at.After(f.now) {
			t.ch <- f.now
		} else {
			keep = append(keep, t)
		}
	}
	f.timers = keep
	f.notify()
}

// WaitTimers blocks until at least n timers are pending, that is until
// the code under test is waiting on the clock.
func (f *fakeClock) WaitTimers(t testing.TB, n int) {
	t.Helper()
	f.waitTimersOr(t, n, nil)
}

// waitTimersOr is WaitTimers that returns false as soon as done is closed.
func (f *fakeClock) waitTimersOr(t testing.TB, n int, done <-chan struct{}) bool {
	t.Helper()
	deadline := time.NewTimer(waitLimit)
	defer deadline.Stop()
	for {
		f.mu.Lock()
		got, ch := len(f.timers), f.changed
		f.mu.Unlock()
		if got >= n {
			return true
		}
		select {
		case <-ch:
		case <-done:
			return false
		case <-deadline.C:
			t.Fatalf("fake clock: %d timers pending after %v, want %d", got, waitLimit, n)
		}
	}
}

// stepUntil advances the clock by step, each time waiting for the code
// under test to wait on the clock again (n timers), until done is closed;
// it returns how far it advanced.
func (f *fakeClock) stepUntil(t testing.TB, step time.Duration, n int, done <-chan struct{}) time.Duration {
	t.Helper()
	var total time.Duration
	for f.waitTimersOr(t, n, done) {
		f.Advance(step)
		total += step
		if total > time.Hour {
			t.Fatal("stepUntil: an hour of fake time passed")
		}
	}
	return total
}

// ---------------------------------------------------------------- setup

type env struct {
	t     *testing.T
	srv   *upstashtest.Server
	state *upstash.State
	hooks *hookState
	rec   *recorder
	clock *fakeClock
	logs  *logCounter
	fused bool // flows use the fused operations (adapter)
}

// newEnv starts an upstashtest server (the backend UPSTASHTEST_REDIS
// selects) and a State on it, wrapped in hooks.
func newEnv(t *testing.T, opts ...upstashtest.Option) *env {
	t.Helper()
	srv := upstashtest.NewServer(t, opts...)
	client, err := upstash.New(upstash.Config{URL: srv.URL, Token: srv.Token})
	if err != nil {
		t.Fatal(err)
	}
	st := upstash.NewState(client)
	return &env{t: t, srv: srv, state: st, hooks: newHooks(st), rec: newRecorder(), clock: newFakeClock(), logs: &logCounter{}, fused: fusedMode}
}

// fusedMode makes newEnv's flows run on the fused path (set only by
// runFused, which runs tests one at a time: no test using newEnv is
// parallel; the fault matrix's parallel subtests set env.fused themselves).
var fusedMode bool

// runFused runs tests with their flows on the fused path.
func runFused(t *testing.T, tests map[string]func(*testing.T)) {
	names := make([]string, 0, len(tests))
	for n := range tests {
		names = append(names, n)
	}
	sort.Strings(names)
	fusedMode = true
	defer func() { fusedMode = false }()
	for _, n := range names {
		t.Run(n, tests[n])
	}
}

// adapter is the state the env's flows run on: the hooked state, which
// offers only the 18 operations (the plain path), or, in fused mode, the
// hooked state with the fused operations passed through.
func (e *env) adapter() upstash.StateAdapter {
	if e.fused {
		return &fusedHooks{hookState: e.hooks, f: e.state}
	}
	return e.hooks
}

// fusedHooks is hookState with Admit and Finish passed through (counted,
// hookable like the other operations).
type fusedHooks struct {
	*hookState
	f upstash.FusedAdapter
}

func (h *fusedHooks) Admit(ctx context.Context, req upstash.AdmitRequest) (upstash.AdmitResult, error) {
	ctx, err := h.enter(ctx, "Admit")
	if err != nil {
		return upstash.AdmitResult{}, err
	}
	h.seen(ctx, "Admit:send", req, nil)
	res, err := h.f.Admit(ctx, req)
	h.seen(ctx, "Admit", res, err)
	return res, err
}

func (h *fusedHooks) Finish(ctx context.Context, req upstash.FinishRequest) (upstash.FinishResult, error) {
	ctx, err := h.enter(ctx, "Finish")
	if err != nil {
		return upstash.FinishResult{}, err
	}
	res, err := h.f.Finish(ctx, req)
	h.seen(ctx, "Finish", res, err)
	return res, err
}

// flow builds a Flow over the hooked state with the recorder as handler,
// the fake clock and the counting logger.
func (e *env) flow(opts ...Option) *Flow {
	e.t.Helper()
	all := append([]Option{withClock(e.clock), WithLogger(slog.New(e.logs))}, opts...)
	f, err := New(e.adapter(), e.rec.handle, all...)
	if err != nil {
		e.t.Fatal(err)
	}
	return f
}

// realFlow is flow with the real clock.
func (e *env) realFlow(opts ...Option) *Flow {
	e.t.Helper()
	all := append([]Option{WithLogger(slog.New(e.logs))}, opts...)
	f, err := New(e.adapter(), e.rec.handle, all...)
	if err != nil {
		e.t.Fatal(err)
	}
	return f
}

func msg(id, thread string) *Message {
	return &Message{
		ID: id, ThreadID: thread, Text: "text of " + id,
		Formatted: FormattedText("text of " + id),
		Raw:       []byte(`{"id":"` + id + `"}`),
		Author:    Author{UserID: "U1", UserName: "ada", FullName: "Ada"},
		Metadata:  Metadata{DateSent: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)},
	}
}

func bg(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*waitLimit)
	t.Cleanup(cancel)
	return ctx
}

// keys returns the keys matching pattern, sorted.
func (e *env) keys(pattern string) []string {
	e.t.Helper()
	v, err := e.srv.Do("KEYS", pattern)
	if err != nil {
		e.t.Fatalf("KEYS %s: %v", pattern, err)
	}
	var out []string
	for _, k := range v.([]interface{}) {
		out = append(out, string(k.([]byte)))
	}
	sort.Strings(out)
	return out
}

// assertClean fails unless no lock and no queue is left.
func (e *env) assertClean() {
	e.t.Helper()
	if k := e.keys("chat-sdk:lock:*"); len(k) > 0 {
		e.t.Errorf("locks left: %v", k)
	}
	if k := e.keys("chat-sdk:queue:*"); len(k) > 0 {
		e.t.Errorf("queues left: %v", k)
	}
	if n := heartbeats(); n > 0 {
		e.t.Errorf("%d heartbeat goroutines alive after the calls returned", n)
	}
}

func (e *env) pttl(key string) time.Duration {
	e.t.Helper()
	v, err := e.srv.Do("PTTL", key)
	if err != nil {
		e.t.Fatal(err)
	}
	return time.Duration(v.(int64)) * time.Millisecond
}

// heartbeats counts the goroutines running a Flow's heartbeat.
func heartbeats() int {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	return strings.Count(string(buf), "chatflow.(*call).runHeartbeat(")
}

// ---------------------------------------------------------------- handler

// recorder is the test handler: it records every delivery, counts the
// handlers running at once per lock key, and can block a message's turn
// until the test opens its gate.
type recorder struct {
	mu        sync.Mutex
	delivered map[string]int // message id -> times handed over
	turns     []turnRecord
	running   map[string]int // lock key (or thread) -> handlers running
	overlaps  []string
	gates     map[string]chan struct{}
	started   map[string]chan struct{}
	errs      map[string]error
	ctxErrs   map[string]error                   // the context's cause when a gated turn ended early
	peak      map[string]int                     // lock key (or thread) -> most handlers running at once
	delay     time.Duration                      // every turn lasts at least this long (set before use)
	also      func(ctx context.Context, t *Turn) // runs in every turn (set before use)
}

type turnRecord struct {
	latest  string
	skipped []string
	thread  string
	lockKey string
}

func newRecorder() *recorder {
	return &recorder{
		delivered: map[string]int{}, running: map[string]int{}, gates: map[string]chan struct{}{},
		started: map[string]chan struct{}{}, errs: map[string]error{}, ctxErrs: map[string]error{}, peak: map[string]int{},
	}
}

// gate makes the turn whose latest message is id wait until the returned
// function is called (or its context ends); started is closed when the
// turn begins.
func (r *recorder) gate(id string) (started <-chan struct{}, open func()) {
	r.mu.Lock()
	defer r.mu.Unlock()
	g, s := make(chan struct{}), make(chan struct{})
	r.gates[id], r.started[id] = g, s
	var once sync.Once
	return s, func() { once.Do(func() { close(g) }) }
}

// failWith makes the turn whose latest message is id return err.
func (r *recorder) failWith(id string, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.errs[id] = err
}

func (r *recorder) handle(ctx context.Context, t *Turn) error {
	key := t.LockKey
	if key == "" {
		key = t.Thread.ID
	}
	r.mu.Lock()
	r.running[key]++
	r.peak[key] = max(r.peak[key], r.running[key])
	if r.running[key] > 1 && t.LockKey != "" {
		r.overlaps = append(r.overlaps, fmt.Sprintf("%s: %d handlers at once (latest %s)", key, r.running[key], t.Message.ID))
	}
	rec := turnRecord{latest: t.Message.ID, thread: t.Thread.ID, lockKey: t.LockKey}
	for _, m := range t.Skipped {
		rec.skipped = append(rec.skipped, m.ID)
		r.delivered[m.ID]++
	}
	r.delivered[t.Message.ID]++
	r.turns = append(r.turns, rec)
	g, s, err := r.gates[t.Message.ID], r.started[t.Message.ID], r.errs[t.Message.ID]
	r.mu.Unlock()
	if r.also != nil {
		r.also(ctx, t)
	}
	defer func() {
		r.mu.Lock()
		r.running[key]--
		r.mu.Unlock()
	}()
	if s != nil {
		close(s)
	}
	if r.delay > 0 {
		select {
		case <-time.After(r.delay):
		case <-ctx.Done():
			return context.Cause(ctx)
		}
	}
	if g != nil {
		select {
		case <-g:
		case <-ctx.Done():
			r.mu.Lock()
			r.ctxErrs[t.Message.ID] = context.Cause(ctx)
			r.mu.Unlock()
			return context.Cause(ctx)
		}
	}
	return err
}

func (r *recorder) count(id string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.delivered[id]
}

func (r *recorder) turnList() []turnRecord {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]turnRecord(nil), r.turns...)
}

func (r *recorder) ctxErr(id string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.ctxErrs[id]
}

func (r *recorder) peakOf(key string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.peak[key]
}

func (r *recorder) assertNoOverlap(t *testing.T) {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, o := range r.overlaps {
		t.Errorf("two handlers on one lock: %s", o)
	}
}

func waitClosed(t *testing.T, ch <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(waitLimit):
		t.Fatalf("timed out waiting for %s", what)
	}
}

// ---------------------------------------------------------------- hooks

// hookState wraps a StateAdapter: it counts calls by operation and runs a
// hook before an operation (a hook returning an error replaces the call).
type hookState struct {
	upstash.StateAdapter
	mu     sync.Mutex
	counts map[string]int
	before map[string]func(ctx context.Context) error
	// observer, when set, sees every operation's outcome after the call
	// (op "X"), and AcquireLock, ForceReleaseLock, ExtendLock and Admit
	// also before they are sent (op "X:send", res the lock key, the lock
	// or the request).
	observer func(ctx context.Context, op string, res any, err error)
}

func newHooks(st upstash.StateAdapter) *hookState {
	return &hookState{StateAdapter: st, counts: map[string]int{}, before: map[string]func(context.Context) error{}}
}

func (h *hookState) on(op string, fn func(ctx context.Context) error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if fn == nil {
		delete(h.before, op)
		return
	}
	h.before[op] = fn
}

func (h *hookState) count(op string) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.counts[op]
}

func (h *hookState) enter(ctx context.Context, op string) (context.Context, error) {
	ctx = context.WithValue(ctx, opLabelKey{}, op)
	h.mu.Lock()
	h.counts[op]++
	fn := h.before[op]
	h.mu.Unlock()
	if fn != nil {
		return ctx, fn(ctx)
	}
	return ctx, nil
}

// opLabelKey is the context key under which hookState names the operation
// a request belongs to (read by the fault tap of lostreplies_test.go).
type opLabelKey struct{}

// opLabel is the operation hookState named in ctx, or "".
func opLabel(ctx context.Context) string {
	s, _ := ctx.Value(opLabelKey{}).(string)
	return s
}

// seen calls the observer, if any, with an operation's outcome.
func (h *hookState) seen(ctx context.Context, op string, res any, err error) {
	h.mu.Lock()
	fn := h.observer
	h.mu.Unlock()
	if fn != nil {
		fn(ctx, op, res, err)
	}
}

func (h *hookState) AcquireLock(ctx context.Context, id string, ttl time.Duration) (*upstash.Lock, error) {
	ctx, err := h.enter(ctx, "AcquireLock")
	if err != nil {
		return nil, err
	}
	h.seen(ctx, "AcquireLock:send", id, nil)
	l, err := h.StateAdapter.AcquireLock(ctx, id, ttl)
	h.seen(ctx, "AcquireLock", l, err)
	return l, err
}

func (h *hookState) ReleaseLock(ctx context.Context, l *upstash.Lock) error {
	ctx, err := h.enter(ctx, "ReleaseLock")
	if err != nil {
		return err
	}
	err = h.StateAdapter.ReleaseLock(ctx, l)
	h.seen(ctx, "ReleaseLock", nil, err)
	return err
}

func (h *hookState) ForceReleaseLock(ctx context.Context, id string) error {
	ctx, err := h.enter(ctx, "ForceReleaseLock")
	if err != nil {
		return err
	}
	h.seen(ctx, "ForceReleaseLock:send", id, nil)
	err = h.StateAdapter.ForceReleaseLock(ctx, id)
	h.seen(ctx, "ForceReleaseLock", id, err)
	return err
}

func (h *hookState) ExtendLock(ctx context.Context, l *upstash.Lock, ttl time.Duration) (bool, error) {
	ctx, err := h.enter(ctx, "ExtendLock")
	if err != nil {
		return false, err
	}
	h.seen(ctx, "ExtendLock:send", l, nil)
	ok, err := h.StateAdapter.ExtendLock(ctx, l, ttl)
	h.seen(ctx, "ExtendLock", ok, err)
	return ok, err
}

func (h *hookState) Enqueue(ctx context.Context, id string, e upstash.QueueEntry, max int) (int, error) {
	ctx, err := h.enter(ctx, "Enqueue")
	if err != nil {
		return 0, err
	}
	n, err := h.StateAdapter.Enqueue(ctx, id, e, max)
	h.seen(ctx, "Enqueue", n, err)
	return n, err
}

func (h *hookState) Dequeue(ctx context.Context, id string) (*upstash.QueueEntry, error) {
	ctx, err := h.enter(ctx, "Dequeue")
	if err != nil {
		return nil, err
	}
	e, err := h.StateAdapter.Dequeue(ctx, id)
	h.seen(ctx, "Dequeue", e, err)
	return e, err
}

func (h *hookState) QueueDepth(ctx context.Context, id string) (int, error) {
	ctx, err := h.enter(ctx, "QueueDepth")
	if err != nil {
		return 0, err
	}
	n, err := h.StateAdapter.QueueDepth(ctx, id)
	h.seen(ctx, "QueueDepth", n, err)
	return n, err
}

func (h *hookState) SetIfNotExists(ctx context.Context, key string, v any, ttl time.Duration) (bool, error) {
	ctx, err := h.enter(ctx, "SetIfNotExists")
	if err != nil {
		return false, err
	}
	ok, err := h.StateAdapter.SetIfNotExists(ctx, key, v, ttl)
	h.seen(ctx, "SetIfNotExists", ok, err)
	return ok, err
}

func (h *hookState) Delete(ctx context.Context, key string) error {
	ctx, err := h.enter(ctx, "Delete")
	if err != nil {
		return err
	}
	err = h.StateAdapter.Delete(ctx, key)
	h.seen(ctx, "Delete", key, err)
	return err
}

func (h *hookState) AppendToList(ctx context.Context, key string, v any, o upstash.ListOptions) error {
	ctx, err := h.enter(ctx, "AppendToList")
	if err != nil {
		return err
	}
	err = h.StateAdapter.AppendToList(ctx, key, v, o)
	h.seen(ctx, "AppendToList", key, err)
	return err
}

// ---------------------------------------------------------------- logs

// logCounter is a slog.Handler counting records by message, for the
// outcomes the Flow reports as in doubt (a record carrying "upTo" counts
// that many times).
type logCounter struct {
	mu     sync.Mutex
	counts map[string]int
	lines  []string
}

func (l *logCounter) Enabled(context.Context, slog.Level) bool { return true }
func (l *logCounter) Handle(_ context.Context, r slog.Record) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.counts == nil {
		l.counts = map[string]int{}
	}
	// A record with an int attribute "upTo" (a Finish in doubt that may
	// have taken a batch) counts that many times.
	weight := 1
	r.Attrs(func(a slog.Attr) bool {
		if a.Key == "upTo" && a.Value.Kind() == slog.KindInt64 {
			weight = int(a.Value.Int64())
			return false
		}
		return true
	})
	l.counts[r.Message] += weight
	if len(l.lines) < 2000 {
		line := r.Level.String() + " " + r.Message
		r.Attrs(func(a slog.Attr) bool {
			line += " " + a.String()
			return true
		})
		l.lines = append(l.lines, line)
	}
	return nil
}
func (l *logCounter) WithAttrs(attrs []slog.Attr) slog.Handler { return &attrHandler{l, attrs} }
func (l *logCounter) WithGroup(string) slog.Handler            { return l }

// containing counts the records whose message contains s.
func (l *logCounter) containing(s string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for m, c := range l.counts {
		if strings.Contains(m, s) {
			n += c
		}
	}
	return n
}

func (l *logCounter) dump() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Join(l.lines, "\n")
}

type attrHandler struct {
	l     *logCounter
	attrs []slog.Attr
}

func (a *attrHandler) Enabled(ctx context.Context, lv slog.Level) bool { return true }
func (a *attrHandler) Handle(ctx context.Context, r slog.Record) error {
	r.AddAttrs(a.attrs...)
	return a.l.Handle(ctx, r)
}
func (a *attrHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	return &attrHandler{a.l, append(append([]slog.Attr(nil), a.attrs...), attrs...)}
}
func (a *attrHandler) WithGroup(string) slog.Handler { return a }

var errInjected = errors.New("injected failure")
