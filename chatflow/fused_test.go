package chatflow

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/chatstate/upstash"
)

// TestFusedPath runs the flow tests that do not depend on the single
// operations' sequence again with the flows on the fused operations.
// Left out: DebounceIgnoresDropNewest (it counts QueueDepth calls, and
// Finish replaces the look after releasing), FailureClearsDedupeMarker (it
// fails AcquireLock, which Admit replaces) and QueueEntryExpires (Finish
// judges expiry by the server's clock, not the test's fake one; the root
// package's fused tests cover it).
func TestFusedPath(t *testing.T) {
	runFused(t, map[string]func(*testing.T){
		"DropHandlesOnceAndDedupes":          TestDropHandlesOnceAndDedupes,
		"DropBusyLock":                       TestDropBusyLock,
		"DropForceTakesOver":                 TestDropForceTakesOver,
		"QueueHolderDrainsLatestWithSkipped": TestQueueHolderDrainsLatestWithSkipped,
		"QueueFull":                          TestQueueFull,
		"DebounceWaitsForQuiet":              TestDebounceWaitsForQuiet,
		"BurstWaitsOneWindow":                TestBurstWaitsOneWindow,
		"ConcurrentCapsPerThread":            TestConcurrentCapsPerThread,
		"ChannelScope":                       TestChannelScope,
		"HeartbeatExtendsWhileHandlerRuns":   TestHeartbeatExtendsWhileHandlerRuns,
		"HeartbeatFailingCancelsBeforeLapse": TestHeartbeatFailingCancelsBeforeLapse,
		"HeartbeatLockGone":                  TestHeartbeatLockGone,
		"MaxLockLifetime":                    TestMaxLockLifetime,
		"HandlerErrors":                      TestHandlerErrors,
		"DrainSweepsStrandedQueue":           TestDrainSweepsStrandedQueue,
		"RandomFaults":                       TestRandomFaults,
		"ThreadHelpers":                      TestThreadHelpers,
	})
}

// plainOnly hides the fused operations of the adapter it wraps: a Flow
// over it takes the 18-operation path.
type plainOnly struct{ upstash.StateAdapter }

// requestCounts is the HTTP requests one webhook costs, by outcome.
type requestCounts struct{ handled, queued, duplicate int64 }

// TestRequestsPerWebhook counts the HTTP requests (upstashtest's Stats) of
// a handled, a queued and a duplicate webhook for every strategy, on the
// fused path (State as it is) and on the plain one (plainOnly), and holds
// the fused path to issue 11's limits: 2 per handled webhook, 1 per
// queued or duplicate one (Concurrent: 1, no lock; Drop: a busy lock's
// message is dropped in 1; Debounce and Burst: 3 per handled webhook, the
// look at the queue after the window being a Dequeue).
func TestRequestsPerWebhook(t *testing.T) {
	var table []string
	for _, fused := range []bool{true, false} {
		for _, st := range []Strategy{Queue, Debounce, Burst, Drop, Concurrent} {
			name := fmt.Sprintf("%s/fused=%v", st, fused)
			t.Run(name, func(t *testing.T) {
				got := countRequests(t, st, fused)
				table = append(table, fmt.Sprintf("| %-10s | %-5s | %d | %d | %d |", st, map[bool]string{true: "fused", false: "plain"}[fused], got.handled, got.queued, got.duplicate))
				if !fused {
					if got.duplicate != 1 {
						t.Errorf("plain: duplicate in %d requests, want 1", got.duplicate)
					}
					return
				}
				want := requestCounts{handled: 2, queued: 1, duplicate: 1}
				switch st {
				case Concurrent:
					want.handled, want.queued = 1, 0
				case Debounce, Burst:
					// The holder looks at the queue after its window,
					// before the handler: one Dequeue more.
					want.handled = 3
				}
				if got != want {
					t.Errorf("fused: %+v, want %+v", got, want)
				}
			})
		}
	}
	t.Logf("requests per webhook (handled | queued, or dropped under Drop | duplicate):\n%s", strings.Join(table, "\n"))
}

// countRequests runs, on a fresh server, a warm-up webhook (the scripts
// loaded), a handled webhook, a webhook meeting a lock held elsewhere and
// a duplicate, counting each one's requests; then it releases the lock,
// drains, and checks that every message was handed over once and nothing
// is left locked or queued.
func countRequests(t *testing.T, st Strategy, fused bool) requestCounts {
	e := newEnv(t)
	ctx := bg(t)
	var state upstash.StateAdapter = e.state
	if !fused {
		state = plainOnly{e.state}
	}
	f, err := New(state, e.rec.handle, WithStrategy(st), WithDebounce(time.Millisecond), WithLogger(slog.New(e.logs)))
	if err != nil {
		t.Fatal(err)
	}
	if (f.fused != nil) != fused {
		t.Fatalf("fused operations found: %v, want %v", f.fused != nil, fused)
	}
	requests := func() int64 { return e.srv.Stats().TotalRequests }
	step := func(m *Message, want Status) int64 {
		t.Helper()
		before := requests()
		res, err := f.Handle(ctx, "slack", m)
		if res.Status != want || (err != nil && res.Status != StatusDropped) {
			t.Fatalf("%s: %+v, %v; want %s", m.ID, res, err, want)
		}
		return requests() - before
	}
	// Warm-up: the scripts are loaded (EVALSHA finds them afterwards).
	step(msg("warm", "slack:C0:1.0"), StatusHandled)
	lock, err := e.state.AcquireLock(ctx, "slack:C9:1.0", 30*time.Second)
	if err != nil || lock == nil {
		t.Fatal(err)
	}
	busy := StatusQueued
	switch st {
	case Drop:
		busy = StatusDropped
	case Concurrent:
		busy = StatusHandled
	}
	step(msg("warm2", "slack:C9:1.0"), busy)

	var got requestCounts
	got.handled = step(msg("a", th), StatusHandled)
	if st != Concurrent {
		got.queued = step(msg("b", "slack:C9:1.0"), busy)
	}
	got.duplicate = step(msg("a", th), StatusDuplicate)

	if err := e.state.ReleaseLock(ctx, lock); err != nil {
		t.Fatal(err)
	}
	if _, err := f.Drain(ctx, "slack:C9:1.0"); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"warm", "a"} {
		if n := e.rec.count(id); n != 1 {
			t.Errorf("%s handed over %d times", id, n)
		}
	}
	queued := []string{"warm2", "b"}
	switch st {
	case Drop:
		queued = nil // dropped on purpose
	case Concurrent:
		queued = queued[:1] // b was never sent: Concurrent has no busy lock
	}
	{
		for _, id := range queued {
			if n := e.rec.count(id); n != 1 {
				t.Errorf("%s handed over %d times", id, n)
			}
		}
	}
	e.assertClean()
	return got
}

// The lock is force-released while the holder's handler runs and two
// messages wait in the queue: Finish finds the lock gone, and the holder
// takes it again and hands both over (nobody else would).
func TestFusedLockLostBeforeFinish(t *testing.T) {
	e := newEnv(t)
	e.fused = true
	ctx := bg(t)
	f := e.flow(WithStrategy(Queue))
	started, open := e.rec.gate("a")
	_, waitA := handleAsync(ctx, f, msg("a", th))
	waitClosed(t, started, "a's turn")
	mustHandle(t, f, msg("b", th), StatusQueued)
	mustHandle(t, f, msg("c", th), StatusQueued)
	if err := e.state.ForceReleaseLock(ctx, th); err != nil {
		t.Fatal(err)
	}
	open()
	res, err := waitA()
	if err != nil || len(res.Delivered) != 3 {
		t.Fatalf("holder: %+v, %v", res, err)
	}
	for _, id := range []string{"a", "b", "c"} {
		if n := e.rec.count(id); n != 1 {
			t.Errorf("%s handed over %d times", id, n)
		}
	}
	// The lost Finish, the one handing b and c over at once (no Dequeue),
	// the one releasing.
	if e.hooks.count("Finish") != 3 || e.hooks.count("Dequeue") != 0 || e.logs.containing("lock lost before finishing") != 1 {
		t.Errorf("%d Finish, %d Dequeue calls; log:\n%s", e.hooks.count("Finish"), e.hooks.count("Dequeue"), e.logs.dump())
	}
	e.assertClean()
}

// A drain of N queued messages is one Finish handing the batch over (the
// latest as Turn.Message, the others skipped) and one releasing: N+1
// Dequeues fewer than a Dequeue loop.
func TestFusedDrainInOneFinish(t *testing.T) {
	for _, n := range []int{1, 5, 10} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			e := newEnv(t)
			e.fused = true
			ctx := bg(t)
			warmFused(t, e)
			f := e.flow(WithStrategy(Queue))
			started, open := e.rec.gate("a")
			_, waitA := handleAsync(ctx, f, msg("a", th))
			waitClosed(t, started, "a's turn")
			var ids []string
			for i := 0; i < n; i++ {
				id := fmt.Sprintf("q%d", i)
				ids = append(ids, id)
				mustHandle(t, f, msg(id, th), StatusQueued)
			}
			before := e.srv.Stats().TotalRequests
			open()
			res, err := waitA()
			if err != nil || len(res.Delivered) != n+1 || res.Turns != 2 {
				t.Fatalf("holder: %+v, %v", res, err)
			}
			// a's Finish hands the batch over, the next one releases.
			if got := e.srv.Stats().TotalRequests - before; got != 2 {
				t.Errorf("drain of %d: %d requests, want 2", n, got)
			}
			if e.hooks.count("Finish") != 2 || e.hooks.count("Dequeue") != 0 {
				t.Errorf("%d Finish, %d Dequeue calls, want 2 and 0", e.hooks.count("Finish"), e.hooks.count("Dequeue"))
			}
			turns := e.rec.turnList()
			last := turns[len(turns)-1]
			if last.latest != ids[n-1] || strings.Join(last.skipped, ",") != strings.Join(ids[:n-1], ",") {
				t.Errorf("drained turn %+v, want latest %s, skipped %v", last, ids[n-1], ids[:n-1])
			}
			e.assertClean()
		})
	}
}

// Take is the queue's cap: when another writer (a TypeScript bot with a
// larger cap) queued more, the rest comes with the next Finish, as a turn
// of its own, and nothing is left.
func TestFusedDrainBeyondTheCap(t *testing.T) {
	e := newEnv(t)
	e.fused = true
	ctx := bg(t)
	f := e.flow(WithStrategy(Queue), WithMaxQueueSize(3))
	for i := 0; i < 5; i++ {
		data, _ := msg(fmt.Sprintf("q%d", i), th).MarshalJSON()
		now := time.Now()
		if _, err := e.state.Enqueue(ctx, th, upstash.QueueEntry{Message: data, EnqueuedAt: now, ExpiresAt: now.Add(time.Minute)}, 0); err != nil {
			t.Fatal(err)
		}
	}
	res, err := f.Drain(ctx, th)
	if err != nil || len(res.Delivered) != 5 || res.Turns != 2 {
		t.Fatalf("drain: %+v, %v", res, err)
	}
	if e.hooks.count("Finish") != 3 || e.hooks.count("Dequeue") != 0 {
		t.Errorf("%d Finish, %d Dequeue calls, want 3 and 0", e.hooks.count("Finish"), e.hooks.count("Dequeue"))
	}
	wantTurns(t, e.rec.turnList(),
		turnRecord{latest: "q2", skipped: []string{"q0", "q1"}, thread: th, lockKey: th},
		turnRecord{latest: "q4", skipped: []string{"q3"}, thread: th, lockKey: th})
	e.assertClean()
}

// warmFused loads Admit's and Finish's scripts (a webhook on a thread of
// its own, past the hooks), so that request counts see EVALSHA only.
func warmFused(t *testing.T, e *env) {
	t.Helper()
	ctx := bg(t)
	ar, err := e.state.Admit(ctx, upstash.AdmitRequest{ThreadID: "warm", LockTTL: time.Minute})
	if err != nil || ar.Lock == nil {
		t.Fatal(ar, err)
	}
	if _, err := e.state.Finish(ctx, upstash.FinishRequest{Lock: ar.Lock, LockTTL: time.Minute}); err != nil {
		t.Fatal(err)
	}
}

// newNoRetryEnv is newEnv with a client that never retries, on the fused
// path: one dropped reply is an outcome unknown to the caller.
func newNoRetryEnv(t *testing.T) *env {
	t.Helper()
	e := newEnv(t)
	client, err := upstash.New(upstash.Config{URL: e.srv.URL, Token: e.srv.Token}, upstash.WithRetry(upstash.RetryPolicy{}))
	if err != nil {
		t.Fatal(err)
	}
	e.state = upstash.NewState(client)
	e.hooks = newHooks(e.state)
	e.fused = true
	return e
}

// An Admit whose reply is lost (the client gives up: ErrOutcomeUnknown)
// is sent again under its operation id, and the repeat returns what the
// first one did: the lock it took. The message is handled once, no doubt
// is left (nothing logged as "may be handled twice").
func TestFusedAdmitResentUnderItsOperationID(t *testing.T) {
	e := newNoRetryEnv(t)
	ctx := bg(t)
	warmFused(t, e)
	f := e.flow(WithStrategy(Queue))
	e.srv.DropResponseNext(2) // net/http resends an idempotent request once by itself
	res, err := f.Handle(ctx, "slack", msg("a", th))
	if err != nil || res.Status != StatusHandled || e.rec.count("a") != 1 {
		t.Fatalf("%+v, %v; handled %d times", res, err, e.rec.count("a"))
	}
	// Each drop costs a resend, unless net/http resent it by itself.
	resent := e.logs.containing("admit in doubt, sending it again")
	if resent < 1 || e.hooks.count("Admit") != 1+resent ||
		e.logs.containing("admit outcome unknown") != 0 || e.logs.containing(logTwice) != 0 {
		t.Errorf("%d Admit calls; log:\n%s", e.hooks.count("Admit"), e.logs.dump())
	}
	if n, err := e.srv.Do("EXISTS", "chat-sdk:cache:"+DedupeKey("slack", "a")); err != nil || n.(int64) != 1 {
		t.Errorf("dedupe marker: %v, %v", n, err)
	}
	e.assertClean()
}

// A Finish whose reply is lost after it took the queue is sent again under
// its operation id and returns the same batch: the queued messages are
// handed over once, none lost.
func TestFusedFinishResentUnderItsOperationID(t *testing.T) {
	e := newNoRetryEnv(t)
	ctx := bg(t)
	warmFused(t, e)
	f := e.flow(WithStrategy(Queue))
	started, open := e.rec.gate("a")
	_, waitA := handleAsync(ctx, f, msg("a", th))
	waitClosed(t, started, "a's turn")
	mustHandle(t, f, msg("b", th), StatusQueued)
	mustHandle(t, f, msg("c", th), StatusQueued)
	e.srv.DropResponseNext(2) // a's Finish, which takes b and c (net/http resends it once by itself)
	open()
	res, err := waitA()
	if err != nil || len(res.Delivered) != 3 {
		t.Fatalf("holder: %+v, %v", res, err)
	}
	for _, id := range []string{"a", "b", "c"} {
		if n := e.rec.count(id); n != 1 {
			t.Errorf("%s handed over %d times", id, n)
		}
	}
	// The lost one, its repeats, the release.
	resent := e.logs.containing("finish in doubt, sending it again")
	if resent < 1 || e.hooks.count("Finish") != 2+resent ||
		e.logs.containing("finish outcome unknown") != 0 || e.logs.containing(logLost) != 0 {
		t.Errorf("%d Finish calls; log:\n%s", e.hooks.count("Finish"), e.logs.dump())
	}
	e.assertClean()
}

// A holder out of time (its context done) ends its turn with one Finish
// that releases the lock and pops nothing: the queued messages stay where
// they are, in their order and byte for byte, with no Enqueue (no put
// back), for the next holder, which drains them.
func TestFusedOutOfTimeReleasesWithoutPopping(t *testing.T) {
	e := newEnv(t)
	e.fused = true
	ctx, cancel := context.WithCancel(bg(t))
	defer cancel()
	f := e.flow(WithStrategy(Queue))
	started, open := e.rec.gate("a")
	_, waitA := handleAsync(ctx, f, msg("a", th))
	waitClosed(t, started, "a's turn")
	for _, id := range []string{"b", "c", "d"} {
		mustHandle(t, f, msg(id, th), StatusQueued)
	}
	queued := e.queue(th)
	cancel() // the holder's time is up
	open()
	res, _ := waitA()
	if res.Left != 3 || e.rec.count("b") != 0 {
		t.Errorf("holder: %+v, want 3 left and nothing drained", res)
	}
	if got := e.queue(th); strings.Join(got, "\n") != strings.Join(queued, "\n") {
		t.Errorf("queue after the holder = %q, want it untouched: %q", got, queued)
	}
	if e.hooks.count("Finish") != 1 || e.hooks.count("Enqueue") != 0 || e.hooks.count("Dequeue") != 0 || e.hooks.count("ReleaseLock") != 0 {
		t.Errorf("%d Finish, %d Enqueue, %d Dequeue, %d ReleaseLock calls, want 1, 0, 0, 0", e.hooks.count("Finish"), e.hooks.count("Enqueue"), e.hooks.count("Dequeue"), e.hooks.count("ReleaseLock"))
	}
	if k := e.keys("chat-sdk:lock:*"); len(k) > 0 {
		t.Errorf("locks left: %v", k)
	}
	if e.logs.containing("out of time, messages left queued") != 1 {
		t.Errorf("log:\n%s", e.logs.dump())
	}
	// The next holder drains them, oldest first.
	if _, err := f.Drain(bg(t), th); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"b", "c", "d"} {
		if n := e.rec.count(id); n != 1 {
			t.Errorf("%s handed over %d times, want once", id, n)
		}
	}
	turns := e.rec.turnList()
	if last := turns[len(turns)-1]; last.latest != "d" || strings.Join(last.skipped, ",") != "b,c" {
		t.Errorf("drained turn %+v, want d with b and c skipped", last)
	}
	e.assertClean()
}

// queue returns the raw entries queued for lockKey, oldest first.
func (e *env) queue(lockKey string) []string {
	e.t.Helper()
	v, err := e.srv.Do("LRANGE", "chat-sdk:queue:"+lockKey, "0", "-1")
	if err != nil {
		e.t.Fatalf("LRANGE: %v", err)
	}
	var out []string
	for _, x := range v.([]interface{}) {
		out = append(out, string(x.([]byte)))
	}
	return out
}
