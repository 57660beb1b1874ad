package chatflow

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chatstate/upstash"
)

const th = "slack:C1:1700000000.000100"

// handleAsync runs Handle in a goroutine; wait returns its result.
func handleAsync(ctx context.Context, f *Flow, m *Message) (done <-chan struct{}, wait func() (Result, error)) {
	ch := make(chan struct{})
	var res Result
	var err error
	go func() {
		defer close(ch)
		res, err = f.Handle(ctx, "slack", m)
	}()
	return ch, func() (Result, error) {
		select {
		case <-ch:
		case <-time.After(waitLimit):
			panic("Handle did not return")
		}
		return res, err
	}
}

func mustHandle(t *testing.T, f *Flow, m *Message, want Status) Result {
	t.Helper()
	res, err := f.Handle(bg(t), "slack", m)
	if err != nil {
		t.Fatalf("Handle(%s): %v", m.ID, err)
	}
	if res.Status != want {
		t.Fatalf("Handle(%s) status %q, want %q (%+v)", m.ID, res.Status, want, res)
	}
	return res
}

func wantTurns(t *testing.T, got []turnRecord, want ...turnRecord) {
	t.Helper()
	norm := func(ts []turnRecord) []string {
		var out []string
		for _, x := range ts {
			out = append(out, fmt.Sprintf("%s<-%v@%s", x.latest, x.skipped, x.thread))
		}
		return out
	}
	if !reflect.DeepEqual(norm(got), norm(want)) {
		t.Fatalf("turns\n got %v\nwant %v", norm(got), norm(want))
	}
}

func TestNewRejectsBadOptions(t *testing.T) {
	e := newEnv(t)
	_, err := New(e.state, e.rec.handle, WithStrategy("fifo"), WithMaxQueueSize(0), WithDedupeTTL(-1),
		WithLockTTL(time.Millisecond), WithMaxConcurrent(2), WithOnQueueFull("x"), WithLockScope("org"),
		WithOnLockConflict("kill"), WithDebounce(0), WithQueueEntryTTL(0), WithBudget(0), WithHistory(HistoryOptions{MaxMessages: -1}),
		WithMaxLockLifetime(0), WithLogger(nil), WithChannelOf(nil))
	if !errors.Is(err, upstash.ErrConfig) {
		t.Fatalf("err = %v, want ErrConfig", err)
	}
	for _, part := range []string{"fifo", "queue size 0", "dedupe TTL", "lock TTL", "WithMaxConcurrent", "queue-full", "lock scope", "conflict", "debounce", "entry TTL", "budget", "history", "lifetime", "WithLogger", "WithChannelOf"} {
		if !strings.Contains(err.Error(), part) {
			t.Errorf("error does not mention %q: %v", part, err)
		}
	}
	if _, err := New(nil, nil); !errors.Is(err, upstash.ErrConfig) {
		t.Errorf("New(nil, nil) = %v", err)
	}
	f, err := New(e.state, e.rec.handle)
	if err != nil {
		t.Fatal(err)
	}
	s := f.s
	if s.strategy != Drop || s.scope != ScopeThread || s.dedupeTTL != 10*time.Minute || s.lockTTL != 30*time.Second ||
		s.maxQueue != 10 || s.onFull != DropOldest || s.entryTTL != 90*time.Second || s.debounce != 1500*time.Millisecond ||
		s.maxLifetime != 10*time.Minute || s.history != nil || s.maxConcurrent != 0 {
		t.Errorf("defaults differ from the TypeScript core's: %+v", s)
	}
	if got := f.LockKey(th); got != th {
		t.Errorf("LockKey = %q", got)
	}
	for in, want := range map[string]string{"slack:C1:1.2": "slack:C1", "teams:a:b:c": "teams:a", "x:y": "x:y", "x": "x"} {
		if got := DefaultChannelOf(in); got != want {
			t.Errorf("DefaultChannelOf(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestHandleRefusesBadInput(t *testing.T) {
	e := newEnv(t)
	f := e.flow()
	ctx := bg(t)
	e.srv.ResetStats()
	bad := msg("x", th)
	bad.Metadata.DateSent = time.Date(12000, 1, 1, 0, 0, 0, 0, time.UTC)
	for name, call := range map[string]func() (Result, error){
		"no adapter":  func() (Result, error) { return f.Handle(ctx, "", msg("a", th)) },
		"nil message": func() (Result, error) { return f.Handle(ctx, "slack", nil) },
		"no id":       func() (Result, error) { return f.Handle(ctx, "slack", msg("", th)) },
		"no thread":   func() (Result, error) { return f.Handle(ctx, "slack", msg("a", "")) },
		"bad date":    func() (Result, error) { return f.Handle(ctx, "slack", bad) },
		"drain":       func() (Result, error) { return f.Drain(ctx, "") },
	} {
		if _, err := call(); !errors.Is(err, upstash.ErrInvalidArgument) {
			t.Errorf("%s: err = %v, want ErrInvalidArgument", name, err)
		}
	}
	me := msg("mine", th)
	me.Author.IsMe = true
	if res, err := f.Handle(ctx, "slack", me); err != nil || res.Status != StatusIgnored {
		t.Errorf("own message: %+v, %v", res, err)
	}
	if n := e.srv.Stats().TotalRequests; n != 0 {
		t.Errorf("%d requests for refused or ignored messages", n)
	}
	// Too little time to take a lock and release it: nothing is written.
	short, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancel()
	if _, err := f.Handle(short, "slack", msg("late", th)); !errors.Is(err, ErrNoTime) {
		t.Errorf("short deadline: %v, want ErrNoTime", err)
	}
	if n := e.srv.Stats().TotalRequests; n != 0 {
		t.Errorf("%d requests with no time left", n)
	}
}

func TestDropHandlesOnceAndDedupes(t *testing.T) {
	e := newEnv(t)
	f := e.flow()
	res := mustHandle(t, f, msg("a", th), StatusHandled)
	if !reflect.DeepEqual(res.Delivered, []string{"a"}) || res.Turns != 1 {
		t.Errorf("result %+v", res)
	}
	v, err := e.srv.Do("GET", "chat-sdk:cache:dedupe:slack:a")
	if err != nil || string(v.([]byte)) != "true" {
		t.Fatalf("dedupe marker = %v, %v", v, err)
	}
	if ttl := e.pttl("chat-sdk:cache:dedupe:slack:a"); ttl <= 9*time.Minute || ttl > 10*time.Minute {
		t.Errorf("dedupe TTL %v, want 10 min", ttl)
	}
	mustHandle(t, f, msg("a", th), StatusDuplicate)
	if n := e.rec.count("a"); n != 1 {
		t.Errorf("a handled %d times", n)
	}
	e.assertClean()
	if e.srv.Embedded() {
		if err := e.srv.FastForward(DefaultDedupeTTL + time.Second); err != nil {
			t.Fatal(err)
		}
		mustHandle(t, f, msg("a", th), StatusHandled) // forgotten after the dedupe TTL
	}
}

func TestDropBusyLock(t *testing.T) {
	e := newEnv(t)
	ctx := bg(t)
	other, err := e.state.AcquireLock(ctx, th, 30*time.Second)
	if err != nil || other == nil {
		t.Fatal(err)
	}
	res, err := e.flow().Handle(ctx, "slack", msg("a", th))
	if !errors.Is(err, ErrLocked) || res.Status != StatusDropped {
		t.Fatalf("busy lock: %+v, %v; want ErrLocked and StatusDropped", res, err)
	}
	if e.rec.count("a") != 0 {
		t.Error("dropped message was handled")
	}
	// As in TypeScript, the marker stays: the message is dropped for good.
	if v, _ := e.srv.Do("GET", "chat-sdk:cache:dedupe:slack:a"); v == nil {
		t.Error("dedupe marker of a dropped message was cleared")
	}
	if err := e.state.ReleaseLock(ctx, other); err != nil {
		t.Fatal(err)
	}
	e.assertClean()
}

// ConflictForce takes the lock over; the earlier holder's heartbeat finds
// it gone and cancels its handler with ErrLockLost.
func TestDropForceTakesOver(t *testing.T) {
	e := newEnv(t)
	ctx := bg(t)
	f := e.flow(WithOnLockConflict(ConflictForce))
	started, open := e.rec.gate("a")
	defer open()
	doneA, waitA := handleAsync(ctx, f, msg("a", th))
	waitClosed(t, started, "a's turn")
	mustHandle(t, f, msg("b", th), StatusHandled)
	if e.rec.peakOf(th) != 2 {
		t.Errorf("force: peak %d handlers, want the documented overlap of 2", e.rec.peakOf(th))
	}
	// a's next heartbeat finds the lock under another token (b released it).
	e.clock.stepUntil(t, time.Second, 1, doneA)
	res, err := waitA()
	if !errors.Is(err, ErrLockLost) || res.Status != StatusHandled {
		t.Fatalf("a: %+v, %v; want the handler's ErrLockLost", res, err)
	}
	if cause := e.rec.ctxErr("a"); !errors.Is(cause, ErrLockLost) || !strings.Contains(cause.Error(), "another token") {
		t.Errorf("a's context cause = %v", cause)
	}
	e.assertClean()
}

func TestQueueHolderDrainsLatestWithSkipped(t *testing.T) {
	e := newEnv(t)
	ctx := bg(t)
	f := e.flow(WithStrategy(Queue), WithHistory(HistoryOptions{}))
	started, open := e.rec.gate("a")
	_, waitA := handleAsync(ctx, f, msg("a", th))
	waitClosed(t, started, "a's turn")
	rb := mustHandle(t, f, msg("b", th), StatusQueued)
	rc := mustHandle(t, f, msg("c", th), StatusQueued)
	if rb.QueueDepth != 1 || rc.QueueDepth != 2 {
		t.Errorf("depths %d, %d", rb.QueueDepth, rc.QueueDepth)
	}
	open()
	res, err := waitA()
	if err != nil || res.Status != StatusHandled || res.Turns != 2 || !reflect.DeepEqual(res.Delivered, []string{"a", "b", "c"}) {
		t.Fatalf("holder: %+v, %v", res, err)
	}
	wantTurns(t, e.rec.turnList(), turnRecord{latest: "a", thread: th}, turnRecord{latest: "c", skipped: []string{"b"}, thread: th})
	e.rec.assertNoOverlap(t)
	e.assertClean()
	// The queue held Message.toJSON(); history got every message, raw null.
	hist, err := f.Thread(th).History(ctx, 0)
	if err != nil || len(hist) != 3 || hist[0].ID != "a" || string(hist[2].Raw) != "null" {
		t.Fatalf("history %v, %v", hist, err)
	}
}

func TestQueueFull(t *testing.T) {
	for _, tc := range []struct {
		policy    QueueFull
		statusD   Status
		wantTurns []turnRecord
	}{
		{DropOldest, StatusQueued, []turnRecord{{latest: "a"}, {latest: "d", skipped: []string{"c"}}}},
		{DropNewest, StatusDropped, []turnRecord{{latest: "a"}, {latest: "c", skipped: []string{"b"}}}},
	} {
		t.Run(string(tc.policy), func(t *testing.T) {
			e := newEnv(t)
			ctx := bg(t)
			f := e.flow(WithStrategy(Queue), WithMaxQueueSize(2), WithOnQueueFull(tc.policy))
			started, open := e.rec.gate("a")
			_, waitA := handleAsync(ctx, f, msg("a", th))
			waitClosed(t, started, "a's turn")
			mustHandle(t, f, msg("b", th), StatusQueued)
			mustHandle(t, f, msg("c", th), StatusQueued)
			mustHandle(t, f, msg("d", th), tc.statusD)
			open()
			if _, err := waitA(); err != nil {
				t.Fatal(err)
			}
			for i := range tc.wantTurns {
				tc.wantTurns[i].thread = th
			}
			wantTurns(t, e.rec.turnList(), tc.wantTurns...)
			e.assertClean()
		})
	}
}

func TestDebounceWaitsForQuiet(t *testing.T) {
	e := newEnv(t)
	ctx := bg(t)
	f := e.flow(WithStrategy(Debounce))
	doneA, waitA := handleAsync(ctx, f, msg("a", th))
	e.clock.WaitTimers(t, 2) // the heartbeat and the first window
	mustHandle(t, f, msg("b", th), StatusQueued)
	// During the window's dequeue, one more message arrives: superseded,
	// the holder waits another window.
	var once sync.Once
	var resC Result
	var errC error
	e.hooks.on("QueueDepth", func(ctx context.Context) error {
		once.Do(func() { resC, errC = f.Handle(ctx, "slack", msg("c", th)) })
		return nil
	})
	e.clock.Advance(DefaultDebounce)
	e.clock.WaitTimers(t, 2)
	if n := len(e.rec.turnList()); n != 0 {
		t.Fatalf("%d turns before a quiet window", n)
	}
	e.clock.Advance(DefaultDebounce)
	e.clock.stepUntil(t, DefaultDebounce, 2, doneA) // one more, empty, window; then done
	res, err := waitA()
	if err != nil || res.Status != StatusHandled || !reflect.DeepEqual(res.Delivered, []string{"a", "b", "c"}) {
		t.Fatalf("holder: %+v, %v", res, err)
	}
	wantTurns(t, e.rec.turnList(), turnRecord{latest: "c", skipped: []string{"a", "b"}, thread: th})
	if errC != nil || resC.Status != StatusQueued {
		t.Errorf("c: %+v, %v", resC, errC)
	}
	e.assertClean()
}

func TestBurstWaitsOneWindow(t *testing.T) {
	e := newEnv(t)
	ctx := bg(t)
	f := e.flow(WithStrategy(Burst))
	_, waitA := handleAsync(ctx, f, msg("a", th))
	e.clock.WaitTimers(t, 2)
	mustHandle(t, f, msg("b", th), StatusQueued)
	mustHandle(t, f, msg("c", th), StatusQueued)
	e.clock.Advance(DefaultDebounce)
	res, err := waitA()
	if err != nil || res.Status != StatusHandled || res.Turns != 1 {
		t.Fatalf("holder: %+v, %v", res, err)
	}
	wantTurns(t, e.rec.turnList(), turnRecord{latest: "c", skipped: []string{"a", "b"}, thread: th})
	e.assertClean()
}

func TestConcurrentCapsPerThread(t *testing.T) {
	e := newEnv(t)
	ctx := bg(t)
	f := e.realFlow(WithStrategy(Concurrent), WithMaxConcurrent(2))
	ids := []string{"a", "b", "c", "d"}
	var opens []func()
	var starts []<-chan struct{}
	for _, id := range ids {
		s, o := e.rec.gate(id)
		starts, opens = append(starts, s), append(opens, o)
	}
	var waits []func() (Result, error)
	for _, id := range ids {
		_, w := handleAsync(ctx, f, msg(id, th))
		waits = append(waits, w)
	}
	waiters := func() int {
		f.mu.Lock()
		defer f.mu.Unlock()
		if s := f.slots[th]; s != nil {
			return len(s.waiters)
		}
		return 0
	}
	// Two run, two wait for a slot.
	waitFor(t, "two waiters", func() bool { return waiters() == 2 })
	// A fifth one gives up when its context ends: not handled, marker
	// cleared for the retry.
	short, cancel := context.WithCancel(ctx)
	_, waitE := handleAsync(short, f, msg("e", th))
	waitFor(t, "three waiters", func() bool { return waiters() == 3 })
	cancel()
	if _, err := waitE(); !errors.Is(err, context.Canceled) {
		t.Errorf("e: %v, want context.Canceled", err)
	}
	if v, _ := e.srv.Do("GET", "chat-sdk:cache:dedupe:slack:e"); v != nil {
		t.Error("e's dedupe marker was not cleared")
	}
	for _, o := range opens {
		o()
	}
	for i, w := range waits {
		if res, err := w(); err != nil || res.Status != StatusHandled {
			t.Errorf("%s: %+v, %v", ids[i], res, err)
		}
	}
	if p := e.rec.peakOf(th); p != 2 {
		t.Errorf("peak %d handlers at once, want 2", p)
	}
	if n := e.hooks.count("AcquireLock"); n != 0 {
		t.Errorf("Concurrent took %d locks", n)
	}
	f.mu.Lock()
	if len(f.slots) != 0 {
		t.Errorf("slots left: %v", f.slots)
	}
	f.mu.Unlock()
	e.assertClean()
}

func TestChannelScope(t *testing.T) {
	e := newEnv(t)
	ctx := bg(t)
	f := e.flow(WithStrategy(Queue), WithLockScope(ScopeChannel), WithHistory(HistoryOptions{}))
	t1, t2 := "slack:C1:1.1", "slack:C1:2.2"
	started, open := e.rec.gate("a")
	_, waitA := handleAsync(ctx, f, msg("a", t1))
	waitClosed(t, started, "a's turn")
	mustHandle(t, f, msg("b", t2), StatusQueued)
	mustHandle(t, f, msg("c", t1), StatusQueued)
	mustHandle(t, f, msg("d", t2), StatusQueued)
	open()
	if res, err := waitA(); err != nil || len(res.Delivered) != 4 {
		t.Fatalf("holder: %+v, %v", res, err)
	}
	// The TypeScript core hands over only the latest thread's messages and
	// drops the other thread's; here each thread gets its turn.
	wantTurns(t, e.rec.turnList(),
		turnRecord{latest: "a", thread: t1}, turnRecord{latest: "c", thread: t1}, turnRecord{latest: "d", skipped: []string{"b"}, thread: t2})
	for _, tr := range e.rec.turnList() {
		if tr.lockKey != "slack:C1" {
			t.Errorf("turn %s lock key %q", tr.latest, tr.lockKey)
		}
	}
	for key, want := range map[string]int{HistoryKey(t1): 2, HistoryKey(t2): 2, HistoryKey("slack:C1"): 4} {
		items, err := e.state.GetList(ctx, key)
		if err != nil || len(items) != want {
			t.Errorf("%s: %d items, want %d (%v)", key, len(items), want, err)
		}
	}
	e.assertClean()
}

func TestHeartbeatExtendsWhileHandlerRuns(t *testing.T) {
	e := newEnv(t)
	ctx := bg(t)
	f := e.flow(WithStrategy(Queue))
	extended := make(chan struct{}, 10)
	e.hooks.on("ExtendLock", func(context.Context) error {
		extended <- struct{}{}
		return nil
	})
	started, open := e.rec.gate("a")
	_, waitA := handleAsync(ctx, f, msg("a", th))
	waitClosed(t, started, "a's turn")
	for i := 0; i < 3; i++ {
		e.clock.WaitTimers(t, 1)
		e.clock.Advance(DefaultLockTTL / 3)
		select {
		case <-extended:
		case <-time.After(waitLimit):
			t.Fatalf("no extend after %d ticks", i+1)
		}
	}
	// Three ticks of 10 s: the lock is 30 s old and still held.
	if ttl := e.pttl("chat-sdk:lock:" + th); ttl <= 0 {
		t.Fatalf("lock TTL %v after extends", ttl)
	}
	open()
	if _, err := waitA(); err != nil {
		t.Fatal(err)
	}
	e.assertClean()
}

// Extends that keep failing: the handler's context is cancelled a margin
// before the lock could lapse, never after.
func TestHeartbeatFailingCancelsBeforeLapse(t *testing.T) {
	e := newEnv(t)
	ctx := bg(t)
	f := e.flow(WithStrategy(Queue))
	e.hooks.on("ExtendLock", func(context.Context) error { return errInjected })
	started, _ := e.rec.gate("a")
	doneA, waitA := handleAsync(ctx, f, msg("a", th))
	waitClosed(t, started, "a's turn")
	advanced := e.clock.stepUntil(t, 250*time.Millisecond, 1, doneA)
	res, err := waitA()
	if !errors.Is(err, ErrLockLost) || res.Status != StatusHandled {
		t.Fatalf("a: %+v, %v", res, err)
	}
	lapse, guard := DefaultLockTTL, DefaultLockTTL-LockMargin
	if advanced < guard || advanced >= lapse {
		t.Errorf("handler cancelled after %v, want in [%v, %v)", advanced, guard, lapse)
	}
	if n := e.hooks.count("ExtendLock"); n < 2 {
		t.Errorf("%d extend attempts, want retries", n)
	}
	if !strings.Contains(e.rec.ctxErr("a").Error(), "could not be extended") {
		t.Errorf("cause = %v", e.rec.ctxErr("a"))
	}
	e.assertClean()
}

func TestHeartbeatLockGone(t *testing.T) {
	e := newEnv(t)
	ctx := bg(t)
	f := e.flow(WithStrategy(Queue))
	started, _ := e.rec.gate("a")
	doneA, waitA := handleAsync(ctx, f, msg("a", th))
	waitClosed(t, started, "a's turn")
	if _, err := e.srv.Do("DEL", "chat-sdk:lock:"+th); err != nil {
		t.Fatal(err)
	}
	advanced := e.clock.stepUntil(t, time.Second, 1, doneA)
	if _, err := waitA(); !errors.Is(err, ErrLockLost) {
		t.Fatalf("a: %v", err)
	}
	if advanced != DefaultLockTTL/3 {
		t.Errorf("cancelled after %v, want at the first extend (%v)", advanced, DefaultLockTTL/3)
	}
	e.assertClean()
}

func TestMaxLockLifetime(t *testing.T) {
	e := newEnv(t)
	ctx := bg(t)
	f := e.flow(WithStrategy(Queue), WithMaxLockLifetime(25*time.Second))
	started, _ := e.rec.gate("a")
	doneA, waitA := handleAsync(ctx, f, msg("a", th))
	waitClosed(t, started, "a's turn")
	advanced := e.clock.stepUntil(t, time.Second, 1, doneA)
	if _, err := waitA(); !errors.Is(err, ErrLockLost) {
		t.Fatalf("a: %v", err)
	}
	// Extended at 10 s and 20 s; not at 30 s (past 25 s); the lease from
	// 20 s lapses at 50 s, so the handler ends at 48 s.
	if n := e.hooks.count("ExtendLock"); n != 2 {
		t.Errorf("%d extends, want 2", n)
	}
	if want := 20*time.Second + DefaultLockTTL - LockMargin; advanced != want {
		t.Errorf("cancelled after %v, want %v", advanced, want)
	}
	if !strings.Contains(e.rec.ctxErr("a").Error(), "maximum lifetime") {
		t.Errorf("cause = %v", e.rec.ctxErr("a"))
	}
	e.assertClean()
}

func TestBudgetBoundsLockAndHandler(t *testing.T) {
	e := newEnv(t)
	type seen struct {
		ttl         time.Duration
		dl          time.Time
		hasDeadline bool
	}
	var got seen
	f, err := New(e.state, func(ctx context.Context, turn *Turn) error {
		got.ttl = e.pttl("chat-sdk:lock:" + turn.LockKey)
		got.dl, got.hasDeadline = ctx.Deadline()
		return nil
	}, WithBudget(4*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	// Lambda: the context's deadline rules.
	ctx, cancel := context.WithTimeout(bg(t), 5*time.Second)
	defer cancel()
	deadline, _ := ctx.Deadline()
	if _, err := f.Handle(ctx, "slack", msg("a", th)); err != nil {
		t.Fatal(err)
	}
	if got.ttl <= 0 || got.ttl > 5*time.Second+lockSkew {
		t.Errorf("deadline in 5 s: lock TTL %v", got.ttl)
	}
	if !got.hasDeadline || !got.dl.Equal(deadline.Add(-ReleaseReserve)) {
		t.Errorf("handler deadline %v, want the call's minus %v", got.dl, ReleaseReserve)
	}
	// Vercel: no deadline; WithBudget's 4 s.
	start := time.Now()
	if _, err := f.Handle(context.Background(), "slack", msg("b", th)); err != nil {
		t.Fatal(err)
	}
	if got.ttl <= 0 || got.ttl > 4*time.Second+lockSkew {
		t.Errorf("budget 4 s: lock TTL %v", got.ttl)
	}
	if !got.hasDeadline || got.dl.Before(start.Add(3*time.Second-ReleaseReserve)) || got.dl.After(time.Now().Add(3*time.Second)) {
		t.Errorf("budget 4 s: handler deadline %v (started %v)", got.dl, start)
	}
	// Neither: the lock's own TTL, no deadline.
	f2, err := New(e.state, func(ctx context.Context, turn *Turn) error {
		got.ttl = e.pttl("chat-sdk:lock:" + turn.LockKey)
		_, got.hasDeadline = ctx.Deadline()
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f2.Handle(context.Background(), "slack", msg("c", th)); err != nil {
		t.Fatal(err)
	}
	if got.ttl <= 10*time.Second || got.ttl > DefaultLockTTL || got.hasDeadline {
		t.Errorf("no budget: lock TTL %v, deadline %v", got.ttl, got.hasDeadline)
	}
	e.assertClean()
}

// The caller's context ends while the handler runs: the lock is still
// released (on a detached context).
func TestReleaseSurvivesCallerCancel(t *testing.T) {
	e := newEnv(t)
	ctx, cancel := context.WithCancel(bg(t))
	f, err := New(e.state, func(ctx context.Context, turn *Turn) error {
		cancel()
		<-ctx.Done()
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if res, err := f.Handle(ctx, "slack", msg("a", th)); err != nil || res.Status != StatusHandled {
		t.Fatalf("%+v, %v", res, err)
	}
	e.assertClean()
}

func TestHandlerErrors(t *testing.T) {
	e := newEnv(t)
	ctx := bg(t)
	f := e.flow(WithStrategy(Queue))
	e.rec.failWith("a", errInjected)
	res, err := f.Handle(ctx, "slack", msg("a", th))
	if !errors.Is(err, errInjected) || res.Status != StatusHandled {
		t.Fatalf("own failure: %+v, %v", res, err)
	}
	if v, _ := e.srv.Do("GET", "chat-sdk:cache:dedupe:slack:a"); v == nil {
		t.Error("dedupe marker cleared although the message was delivered")
	}
	// A queued message's failure is reported in Errors; the drain goes on.
	started, open := e.rec.gate("b")
	_, waitB := handleAsync(ctx, f, msg("b", th))
	waitClosed(t, started, "b's turn")
	mustHandle(t, f, msg("c", "slack:C1:other"), StatusHandled) // another thread, free lock
	mustHandle(t, f, msg("d", th), StatusQueued)
	e.rec.failWith("d", errInjected)
	open()
	res, err = waitB()
	if err != nil || len(res.Errors) != 1 || !errors.Is(res.Errors[0], errInjected) {
		t.Fatalf("holder: %+v, %v", res, err)
	}
	e.assertClean()
}

// A failure before the message was handled or queued clears its dedupe
// marker, so the platform's retry is processed.
func TestFailureClearsDedupeMarker(t *testing.T) {
	e := newEnv(t)
	ctx := bg(t)
	f := e.flow(WithStrategy(Queue))
	e.hooks.on("AcquireLock", func(context.Context) error { return errInjected })
	if _, err := f.Handle(ctx, "slack", msg("a", th)); !errors.Is(err, errInjected) {
		t.Fatalf("err = %v", err)
	}
	if v, _ := e.srv.Do("GET", "chat-sdk:cache:dedupe:slack:a"); v != nil {
		t.Fatal("marker kept after a failure")
	}
	e.hooks.on("AcquireLock", nil)
	mustHandle(t, f, msg("a", th), StatusHandled)
	e.assertClean()
}

// B finds the lock busy; the holder takes its last (empty) look and
// releases; then B's entry lands. B's recheck finds the lock free and
// drains its own message.
func TestStrandedRaceEnqueuerRechecks(t *testing.T) {
	e := newEnv(t)
	ctx := bg(t)
	f := e.flow(WithStrategy(Queue))
	holder, err := e.state.AcquireLock(ctx, th, 30*time.Second)
	if err != nil || holder == nil {
		t.Fatal(err)
	}
	var once sync.Once
	e.hooks.on("Enqueue", func(ctx context.Context) error {
		once.Do(func() {
			if err := e.state.ReleaseLock(ctx, holder); err != nil {
				t.Error(err)
			}
		})
		return nil
	})
	res := mustHandle(t, f, msg("b", th), StatusHandled)
	if !reflect.DeepEqual(res.Delivered, []string{"b"}) {
		t.Errorf("result %+v", res)
	}
	e.assertClean()
}

// B enqueues after the holder's last look, and its recheck still finds
// the lock held; the holder looks at the queue after releasing and drains.
func TestStrandedRaceHolderLooksAfterRelease(t *testing.T) {
	e := newEnv(t)
	f := e.flow(WithStrategy(Queue))
	var once sync.Once
	var resB Result
	e.hooks.on("ReleaseLock", func(context.Context) error {
		once.Do(func() { resB = mustHandle(t, f, msg("b", th), StatusQueued) })
		return nil
	})
	res := mustHandle(t, f, msg("a", th), StatusHandled)
	if !reflect.DeepEqual(res.Delivered, []string{"a", "b"}) || resB.Status != StatusQueued {
		t.Errorf("holder %+v, b %+v", res, resB)
	}
	e.assertClean()
}

func TestQueueEntryExpires(t *testing.T) {
	e := newEnv(t)
	ctx := bg(t)
	f := e.flow(WithStrategy(Queue), WithQueueEntryTTL(5*time.Second))
	started, open := e.rec.gate("a")
	_, waitA := handleAsync(ctx, f, msg("a", th))
	waitClosed(t, started, "a's turn")
	mustHandle(t, f, msg("b", th), StatusQueued)
	e.clock.Advance(6 * time.Second) // before the first heartbeat tick
	open()
	res, err := waitA()
	if err != nil || !reflect.DeepEqual(res.Delivered, []string{"a"}) {
		t.Fatalf("holder: %+v, %v", res, err)
	}
	if e.rec.count("b") != 0 || e.logs.containing("expired") != 1 {
		t.Errorf("b delivered %d times; %d expiry log lines", e.rec.count("b"), e.logs.containing("expired"))
	}
	e.assertClean()
}

// Drain picks up a queue nobody is left to drain (its holder was killed).
func TestDrainSweepsStrandedQueue(t *testing.T) {
	e := newEnv(t)
	ctx := bg(t)
	f := e.flow(WithStrategy(Queue))
	for _, id := range []string{"x", "y"} {
		entry := upstash.QueueEntry{Message: mustJSON(t, msg(id, th)), EnqueuedAt: time.Now(), ExpiresAt: time.Now().Add(time.Minute)}
		if _, err := e.state.Enqueue(ctx, th, entry, 10); err != nil {
			t.Fatal(err)
		}
	}
	other, err := e.state.AcquireLock(ctx, th, 30*time.Second)
	if err != nil || other == nil {
		t.Fatal(err)
	}
	if res, err := f.Drain(ctx, th); err != nil || res.Status != StatusBusy {
		t.Fatalf("busy: %+v, %v", res, err)
	}
	if err := e.state.ReleaseLock(ctx, other); err != nil {
		t.Fatal(err)
	}
	res, err := f.Drain(ctx, th)
	if err != nil || !reflect.DeepEqual(res.Delivered, []string{"x", "y"}) {
		t.Fatalf("drain: %+v, %v", res, err)
	}
	wantTurns(t, e.rec.turnList(), turnRecord{latest: "y", skipped: []string{"x"}, thread: th})
	e.assertClean()
}

// waitFor polls cond (a state the code under test reaches by itself, not
// a timing assumption) until it holds.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitLimit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

func mustJSON(t *testing.T, v any) json.RawMessage {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestThreadHelpers(t *testing.T) {
	e := newEnv(t)
	ctx := bg(t)
	f := e.flow(WithHistory(HistoryOptions{MaxMessages: 2}))
	tr := f.Thread(th)
	if v, err := tr.State(ctx); err != nil || v != nil {
		t.Fatalf("no state: %s, %v", v, err)
	}
	if _, err := e.srv.Do("SET", "chat-sdk:cache:"+ThreadStateKey(th), `{"b":1,"a":{"x":true}}`); err != nil {
		t.Fatal(err)
	}
	if err := tr.SetState(ctx, map[string]any{"c": "<&>", "a": 3}); err != nil {
		t.Fatal(err)
	}
	if v, _ := tr.State(ctx); string(v) != `{"b":1,"a":3,"c":"<&>"}` {
		t.Errorf("merged state %s", v)
	}
	if ttl := e.pttl("chat-sdk:cache:" + ThreadStateKey(th)); ttl <= ThreadStateTTL-time.Minute || ttl > ThreadStateTTL {
		t.Errorf("state TTL %v", ttl)
	}
	if err := tr.SetState(ctx, []int{1}); !errors.Is(err, upstash.ErrInvalidArgument) {
		t.Errorf("SetState(array) = %v", err)
	}
	if err := tr.ReplaceState(ctx, map[string]int{"z": 1}); err != nil {
		t.Fatal(err)
	}
	if v, _ := tr.State(ctx); string(v) != `{"z":1}` {
		t.Errorf("replaced state %s", v)
	}
	if ok, err := tr.IsSubscribed(ctx); err != nil || ok {
		t.Fatalf("subscribed before: %v %v", ok, err)
	}
	if err := tr.Subscribe(ctx); err != nil {
		t.Fatal(err)
	}
	if ok, _ := tr.IsSubscribed(ctx); !ok {
		t.Error("not subscribed after Subscribe")
	}
	if err := tr.Unsubscribe(ctx); err != nil {
		t.Fatal(err)
	}
	if ok, _ := tr.IsSubscribed(ctx); ok {
		t.Error("subscribed after Unsubscribe")
	}
	for _, id := range []string{"a", "b", "c"} {
		mustHandle(t, f, msg(id, th), StatusHandled)
	}
	if err := tr.AppendHistory(ctx, msg("reply", th)); err != nil {
		t.Fatal(err)
	}
	hist, err := tr.History(ctx, 0)
	if err != nil || len(hist) != 2 || hist[0].ID != "c" || hist[1].ID != "reply" || string(hist[1].Raw) != "null" {
		t.Fatalf("history %v, %v", hist, err)
	}
	if last, _ := tr.History(ctx, 1); len(last) != 1 || last[0].ID != "reply" {
		t.Errorf("History(1) = %v", last)
	}
	if ttl := e.pttl("chat-sdk:list:" + HistoryKey(th)); ttl <= DefaultHistoryTTL-time.Minute || ttl > DefaultHistoryTTL {
		t.Errorf("history TTL %v", ttl)
	}
	e.assertClean()
}

func TestOptionsReachTheState(t *testing.T) {
	e := newEnv(t)
	ctx := bg(t)
	var lockTTL time.Duration
	var lockKey string
	f, err := New(e.state, func(ctx context.Context, turn *Turn) error {
		lockKey = turn.LockKey
		lockTTL = e.pttl("chat-sdk:lock:" + turn.LockKey)
		return nil
	}, WithDedupeTTL(time.Minute), WithLockTTL(5*time.Second), WithLockScope(ScopeChannel),
		WithChannelOf(func(threadID string) string { return "room-" + threadID[len(threadID)-1:] }))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Handle(ctx, "slack", msg("a", "thread-7")); err != nil {
		t.Fatal(err)
	}
	if lockKey != "room-7" || lockTTL <= 0 || lockTTL > 5*time.Second {
		t.Errorf("lock %q with TTL %v, want room-7 within 5s", lockKey, lockTTL)
	}
	if ttl := e.pttl("chat-sdk:cache:dedupe:slack:a"); ttl <= 0 || ttl > time.Minute {
		t.Errorf("dedupe TTL %v, want 1 min", ttl)
	}
	e.assertClean()
}

// Debounce ignores DropNewest, as the TypeScript core does: a full queue
// drops its oldest entry.
func TestDebounceIgnoresDropNewest(t *testing.T) {
	e := newEnv(t)
	ctx := bg(t)
	f := e.flow(WithStrategy(Debounce), WithMaxQueueSize(1), WithOnQueueFull(DropNewest))
	doneA, waitA := handleAsync(ctx, f, msg("a", th))
	e.clock.WaitTimers(t, 2)
	mustHandle(t, f, msg("b", th), StatusQueued)
	mustHandle(t, f, msg("c", th), StatusQueued) // trims b
	e.clock.stepUntil(t, DefaultDebounce, 2, doneA)
	if _, err := waitA(); err != nil {
		t.Fatal(err)
	}
	wantTurns(t, e.rec.turnList(), turnRecord{latest: "c", skipped: []string{"a"}, thread: th})
	if e.hooks.count("QueueDepth") != 2 { // one per non-empty window, one after the release
		t.Errorf("%d QueueDepth calls", e.hooks.count("QueueDepth"))
	}
	e.assertClean()
}
