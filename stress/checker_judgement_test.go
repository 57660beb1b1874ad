package stress_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/chatstate/upstash"
)

// These tests show that the checker catches what TestStress must never
// see: each judgement is fed records with a violation and without one.

func TestCheckerOverlaps(t *testing.T) {
	t0 := time.Unix(1000, 0)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	disjoint := []section{
		{key: "a", worker: 1, fence: 1, acquired: at(0), released: at(10)},
		{key: "a", worker: 2, fence: 2, acquired: at(10), released: at(20)},
		{key: "b", worker: 3, fence: 1, acquired: at(5), released: at(15)}, // another key
	}
	if n, s := countOverlaps(disjoint); n != 0 {
		t.Errorf("disjoint sections: %d overlaps %v, want 0", n, s)
	}
	nested := append(append([]section(nil), disjoint...),
		section{key: "a", worker: 4, fence: 3, acquired: at(2), released: at(3)},   // inside the first
		section{key: "a", worker: 5, fence: 4, acquired: at(19), released: at(30)}, // across the second's end
	)
	if n, s := countOverlaps(nested); n != 2 || len(s) != 2 {
		t.Errorf("two intruding sections: %d overlaps %v, want 2", n, s)
	}
	// A long section hides no later intruder behind a short one.
	long := []section{
		{key: "a", fence: 1, acquired: at(0), released: at(100)},
		{key: "a", fence: 2, acquired: at(10), released: at(20)},
		{key: "a", fence: 3, acquired: at(50), released: at(60)},
	}
	if n, _ := countOverlaps(long); n != 2 {
		t.Errorf("two sections inside a long one: %d overlaps, want 2", n)
	}
}

func TestCheckerFences(t *testing.T) {
	t0 := time.Unix(1000, 0)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	ok := []section{
		{key: "a", fence: 5, acquired: at(0)},
		{key: "a", fence: 9, acquired: at(10)},
		{key: "b", fence: 1, acquired: at(5)},
	}
	if n, s := countFenceDisorder(ok); n != 0 {
		t.Errorf("increasing fences: %d out of order %v", n, s)
	}
	bad := append(append([]section(nil), ok...),
		section{key: "a", fence: 9, acquired: at(20)}, // a repeat
		section{key: "a", fence: 3, acquired: at(30)}, // smaller
	)
	if n, _ := countFenceDisorder(bad); n != 2 {
		t.Errorf("a repeated and a smaller fence: %d out of order, want 2", n)
	}
	if n := countDisorder([]int64{1, 2, 2, 5, 4}); n != 2 {
		t.Errorf("countDisorder: %d, want 2", n)
	}
}

func TestCheckerFalseBusy(t *testing.T) {
	t0 := time.Unix(1000, 0)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	busy := []busyAnswer{{key: "a", id: 1, from: at(100), to: at(110)}}
	cases := []struct {
		name  string
		holds []mayHold
		want  int
	}{
		{"no holder at all", nil, 1},
		{"only the call itself", []mayHold{{key: "a", id: 1, from: at(100), to: at(110)}}, 1},
		{"a holder on another key", []mayHold{{key: "b", id: 2, from: at(0), to: at(200)}}, 1},
		{"a holder released before", []mayHold{{key: "a", id: 2, from: at(0), to: at(99)}}, 1},
		{"a holder that came after", []mayHold{{key: "a", id: 2, from: at(111), to: at(200)}}, 1},
		{"a release in flight during the call", []mayHold{{key: "a", id: 2, from: at(0), to: at(100)}}, 0},
		{"an acquire in flight during the call", []mayHold{{key: "a", id: 2, from: at(110), to: at(300)}}, 0},
		{"a holder that may never have released", []mayHold{{key: "a", id: 2, from: at(0), to: at(5), open: true}}, 0},
	}
	for _, tc := range cases {
		if n, _ := countFalseBusy(busy, tc.holds); n != tc.want {
			t.Errorf("%s: %d false busy answers, want %d", tc.name, n, tc.want)
		}
	}
}

// TestCheckerRecords follows the records of a few calls through the
// checker: a lock released in time justifies no later busy answer, one
// whose release failed justifies every later one.
func TestCheckerRecords(t *testing.T) {
	c := newChecker()
	// A clock that moves a millisecond at each reading, so that no two
	// records share a time.
	var ticks int
	c.now = func() time.Time {
		ticks++
		return time.Unix(1000, 0).Add(time.Duration(ticks) * time.Millisecond)
	}
	id1, _ := c.startAcquire("a")
	c.acquired(id1, "tok1")
	c.releaseDone(id1, c.now(), true)
	id2, _ := c.startAcquire("a")
	if !c.acquiresBefore("a", c.now()) {
		t.Error("an acquire in flight is not reported")
	}
	c.acquireBusy(id2, c.now())
	if c.acquiresBefore("a", c.now()) {
		t.Error("an acquire that returned is still reported in flight")
	}
	if n, _ := countFalseBusy(c.busy, c.holdsList()); n != 1 {
		t.Errorf("a busy answer after the only holder released: %d false, want 1", n)
	}
	id3, _ := c.startAcquire("a")
	c.acquireFailed(id3, c.now(), true) // outcome unknown: may hold for ever
	id4, _ := c.startAcquire("a")
	c.acquireBusy(id4, c.now())
	if n, _ := countFalseBusy(c.busy, c.holdsList()); n != 1 {
		t.Errorf("a busy answer after an acquire of unknown outcome: %d false in all, want still 1", n)
	}
	if !c.isKnown("tok1") || c.isKnown("tok2") {
		t.Error("known tokens are not recorded")
	}
	c.call("Enqueue", nil)
	c.call("Enqueue", errors.Join(upstash.ErrOutcomeUnknown))
	c.call("Dequeue", errors.New("boom"))
	if c.calls != 3 || c.unknown != 1 || c.otherErrs != 1 || c.callsByOp["Enqueue"] != 2 {
		t.Errorf("calls %d, unknown %d, other errors %d, by op %v", c.calls, c.unknown, c.otherErrs, c.callsByOp)
	}
}

// TestCheckerOnServer breaks the rules on a real server, by writing to
// the backing Redis behind the library's back, and expects the checker
// to see it: a lock deleted while held gives an overlap and a lost lock,
// and a token nobody knows in a lock key is a stranded lock.
func TestCheckerOnServer(t *testing.T) {
	srv := newServer(t, 1)
	r := newRound(t, 1, srv, srv, srv)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	st := r.newStates(srv, 2)
	rng := r.rng(9, 0)

	// Worker 0 takes the lock; it is deleted behind its back; worker 1
	// takes it while worker 0 still works.
	thread := threadID(0)
	id0, _ := r.chk.startAcquire(thread)
	var clock replyClock
	l0, err := st[0].AcquireLock(clock.trace(ctx), thread, lockTTL)
	if err != nil || l0 == nil {
		t.Fatalf("AcquireLock: %v, %v", l0, err)
	}
	a0 := clock.lastReply(time.Now())
	r.chk.acquired(id0, l0.Token)
	if _, err := srv.db.do("DEL", lockKey(thread)); err != nil {
		t.Fatal(err)
	}
	if !r.plainCycle(ctx, st[1], rng, 1, thread, false) {
		t.Fatal("worker 1 did not get the deleted lock")
	}
	rel0 := time.Now()
	if err := st[0].Unlock(ctx, l0); !errors.Is(err, upstash.ErrLockNotHeld) {
		t.Fatalf("Unlock of the deleted lock: %v, want ErrLockNotHeld", err)
	}
	r.chk.releaseDone(id0, time.Now(), true)
	r.chk.addSection(section{key: thread, worker: 0, token: l0.Token, fence: l0.Fence, acquired: a0, released: rel0})
	if n, _ := countOverlaps(r.chk.sections); n != 1 {
		t.Errorf("%d overlaps, want 1", n)
	}
	// A busy answer while worker 0 still thought it held the lock is
	// justified: the checker cannot tell that the key was gone.
	if n, _ := countFalseBusy(r.chk.busy, r.chk.holdsList()); n != 0 {
		t.Errorf("%d false busy answers, want 0", n)
	}

	// A token nobody knows, in another thread's lock key.
	if _, err := srv.db.do("SET", lockKey(threadID(1)), "go_nobodyknowsthistoken"); err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		r.monitor(ctx, stop)
	}()
	for r.monitorSamples.Load() < 3 && ctx.Err() == nil {
		time.Sleep(monitorEvery)
	}
	close(stop)
	<-done
	n := 0
	r.strandedSeen.Range(func(k, _ any) bool {
		n++
		if k != "go_nobodyknowsthistoken" {
			t.Errorf("stranded token %q, want the one written", k)
		}
		return true
	})
	if n != 1 {
		t.Errorf("%d stranded tokens, want 1", n)
	}
}
