package chatflow

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/chatstate/upstash"
	"github.com/chatstate/upstash/upstashtest"
)

// Random faults that never run the command (503 answers, connection
// resets): whatever the client makes of them (retries, outcomes it cannot
// know), every message is handled exactly once, never two handlers hold a
// thread at once, and nothing is left locked or queued. The platform is
// simulated: a webhook whose Handle fails is delivered again.
func TestRandomFaults(t *testing.T) {
	for i, st := range []Strategy{Queue, Burst, Debounce, Drop, Concurrent} {
		t.Run(string(st), func(t *testing.T) { runRandomFaults(t, st, int64(i+1)) })
	}
}

func runRandomFaults(t *testing.T, st Strategy, seed int64) {
	e := newEnv(t, upstashtest.WithSeed(seed))
	e.rec.delay = 3 * time.Millisecond // long enough for webhooks to meet a busy lock
	opts := []Option{
		WithStrategy(st), WithMaxQueueSize(100), WithDebounce(20 * time.Millisecond),
		WithLockTTL(3 * time.Second), WithHistory(HistoryOptions{}),
	}
	if st == Concurrent {
		opts = append(opts, WithMaxConcurrent(2))
	}
	f := e.realFlow(opts...)
	ctx := bg(t)

	const threads, perThread, workers, maxDeliveries = 3, 8, 6, 50
	var all []*Message
	for i := 0; i < perThread; i++ {
		for j := 0; j < threads; j++ {
			all = append(all, msg(fmt.Sprintf("m%d-%d", j, i), fmt.Sprintf("slack:C%d:1.0", j)))
		}
	}
	e.srv.SetFaultRate(0.25, upstashtest.FaultStatus, upstashtest.FaultReset)

	var mu sync.Mutex
	final := map[string]error{}
	deliveries := map[string]int{}
	jobs := make(chan *Message)
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for m := range jobs {
				var err error
				for attempt := 0; attempt < maxDeliveries; attempt++ {
					mu.Lock()
					deliveries[m.ID]++
					mu.Unlock()
					if _, err = f.Handle(ctx, "slack", m); err == nil || errors.Is(err, ErrLocked) {
						break
					}
				}
				mu.Lock()
				final[m.ID] = err
				mu.Unlock()
			}
		}()
	}
	for _, m := range all {
		jobs <- m
	}
	close(jobs)
	wg.Wait()
	e.srv.ClearFaults()
	faults := e.srv.Stats().Faults
	if faults[upstashtest.FaultStatus]+faults[upstashtest.FaultReset] == 0 {
		t.Fatal("no fault was injected")
	}

	// What a failed release or dequeue left behind (its lock lapses within
	// the 3 s TTL) is picked up by a sweep, as a scheduled Drain would.
	for j := 0; j < threads; j++ {
		key := fmt.Sprintf("slack:C%d:1.0", j)
		waitFor(t, "a free lock on "+key, func() bool {
			res, err := f.Drain(ctx, key)
			return err == nil && res.Status != StatusBusy
		})
	}

	retried := 0
	for _, m := range all {
		err, n := final[m.ID], e.rec.count(m.ID)
		if deliveries[m.ID] > 1 {
			retried++
		}
		switch {
		case errors.Is(err, ErrLocked):
			if st != Drop || n != 0 {
				t.Errorf("%s: dropped (%v) but handled %d times", m.ID, err, n)
			}
		case err != nil:
			t.Errorf("%s: still failing after %d deliveries: %v", m.ID, maxDeliveries, err)
		case n != 1:
			t.Errorf("%s handled %d times (delivered %d times)", m.ID, n, deliveries[m.ID])
		}
	}
	t.Logf("%s: %v faults, %d of %d webhooks delivered again", st, faults, retried, len(all))
	if st == Concurrent {
		for j := 0; j < threads; j++ {
			if p := e.rec.peakOf(fmt.Sprintf("slack:C%d:1.0", j)); p > 2 {
				t.Errorf("thread %d: %d handlers at once, cap 2", j, p)
			}
		}
	} else {
		e.rec.assertNoOverlap(t)
	}
	e.assertClean()
	if t.Failed() {
		t.Logf("flow log:\n%s", e.logs.dump())
	}
}

// A dedupe claim whose reply is lost: the State sends it again under its
// operation id and gets the recorded outcome, so the flow handles the
// message once, without doubt; the retry is a duplicate.
func TestLostReplyDedupe(t *testing.T) {
	e := newEnv(t)
	f := e.flow(WithStrategy(Queue))
	var once sync.Once
	e.hooks.on("SetIfNotExists", func(context.Context) error {
		once.Do(func() { e.srv.DropResponseNext(1) })
		return nil
	})
	mustHandle(t, f, msg("a", th), StatusHandled)
	mustHandle(t, f, msg("a", th), StatusDuplicate)
	if e.rec.count("a") != 1 || e.logs.containing("outcome unknown") != 0 || e.srv.Stats().Faults[upstashtest.FaultDrop] != 1 {
		t.Errorf("handled %d times, %d drops; log:\n%s", e.rec.count("a"), e.srv.Stats().Faults[upstashtest.FaultDrop], e.logs.dump())
	}
	e.assertClean()
}

// An enqueue whose reply is lost: sent again under its operation id, it
// reports the recorded depth; the message is queued once, its dedupe
// marker kept, and the holder's drain hands it over once.
func TestLostReplyEnqueue(t *testing.T) {
	e := newEnv(t)
	ctx := bg(t)
	f := e.flow(WithStrategy(Queue))
	warmScripts(t, e)
	other, err := e.state.AcquireLock(ctx, th, 30*time.Second)
	if err != nil || other == nil {
		t.Fatal(err)
	}
	var once sync.Once
	e.hooks.on("Enqueue", func(context.Context) error {
		once.Do(func() { e.srv.DropResponseNext(1) })
		return nil
	})
	res := mustHandle(t, f, msg("b", th), StatusQueued)
	if res.QueueDepth != 1 || e.srv.Stats().Faults[upstashtest.FaultDrop] != 1 {
		t.Errorf("result %+v, %d drops", res, e.srv.Stats().Faults[upstashtest.FaultDrop])
	}
	if v, _ := e.srv.Do("GET", "chat-sdk:cache:dedupe:slack:b"); v == nil {
		t.Fatal("dedupe marker cleared for a queued message")
	}
	mustHandle(t, f, msg("b", th), StatusDuplicate) // the platform's retry
	if err := e.state.ReleaseLock(ctx, other); err != nil {
		t.Fatal(err)
	}
	if _, err := f.Drain(ctx, th); err != nil {
		t.Fatal(err)
	}
	if n := e.rec.count("b"); n != 1 {
		t.Errorf("b handed over %d times, want 1", n)
	}
	e.assertClean()
}

// A dequeue whose reply is lost: sent again under its operation id, it
// returns the recorded entry, so nothing is lost and the drain hands over
// both messages.
func TestLostReplyDequeue(t *testing.T) {
	e := newEnv(t)
	ctx := bg(t)
	f := e.flow(WithStrategy(Queue))
	other, err := e.state.AcquireLock(ctx, th, 30*time.Second)
	if err != nil || other == nil {
		t.Fatal(err)
	}
	mustHandle(t, f, msg("b", th), StatusQueued)
	mustHandle(t, f, msg("c", th), StatusQueued)
	if err := e.state.ReleaseLock(ctx, other); err != nil {
		t.Fatal(err)
	}
	warmScripts(t, e)
	var once sync.Once
	e.hooks.on("Dequeue", func(context.Context) error {
		once.Do(func() { e.srv.DropResponseNext(1) })
		return nil
	})
	res, err := f.Drain(ctx, th)
	if err != nil || !reflect.DeepEqual(res.Delivered, []string{"b", "c"}) {
		t.Fatalf("drain: %+v, %v", res, err)
	}
	if e.rec.count("b") != 1 || e.logs.containing("may be lost") != 0 || e.srv.Stats().Faults[upstashtest.FaultDrop] != 1 {
		t.Errorf("b handled %d times; log:\n%s", e.rec.count("b"), e.logs.dump())
	}
	e.assertClean()
}

// Dequeue failures that did not take anything (503): the holder tries
// again and nothing is lost.
func TestDequeueFailuresRetried(t *testing.T) {
	e := newEnv(t)
	ctx := bg(t)
	f := e.flow(WithStrategy(Queue))
	started, open := e.rec.gate("a")
	_, waitA := handleAsync(ctx, f, msg("a", th))
	waitClosed(t, started, "a's turn")
	mustHandle(t, f, msg("b", th), StatusQueued)
	var once sync.Once
	e.hooks.on("Dequeue", func(context.Context) error {
		once.Do(func() { e.srv.FailNext(maxDequeueFailures-1, 503) })
		return nil
	})
	open()
	res, err := waitA()
	if err != nil || len(res.Delivered) != 2 {
		t.Fatalf("holder: %+v, %v", res, err)
	}
	e.assertClean()
}

// warmScripts runs the enqueue and dequeue scripts once, so that the next
// ones run by EVALSHA in a single request (a fault planned for "the next
// request" then hits the script itself, not a NOSCRIPT answer).
func warmScripts(t *testing.T, e *env) {
	t.Helper()
	ctx := bg(t)
	entry := upstash.QueueEntry{Message: mustJSON(t, msg("warm", "warm")), EnqueuedAt: time.Now(), ExpiresAt: time.Now().Add(time.Minute)}
	if _, err := e.state.Enqueue(ctx, "warm", entry, 1); err != nil {
		t.Fatal(err)
	}
	if _, err := e.state.Dequeue(ctx, "warm"); err != nil {
		t.Fatal(err)
	}
}
