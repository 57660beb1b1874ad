package statetest

import (
	"encoding/json"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/chatstate/upstash"
	"github.com/chatstate/upstash/upstashtest"
)

// RunFused runs the conformance suite of the fused operations (Admit and
// Finish, upstash.FusedAdapter) against the adapters newAdapter returns,
// with the semantics documented on upstash.State.Admit and Finish. Like
// Run, it observes the adapter only through its methods, uses fresh ids
// in every subtest, and runs subtests in parallel; nothing in it waits for
// a TTL.
func RunFused(t *testing.T, newAdapter func(t *testing.T) upstash.FusedAdapter) {
	t.Helper()
	// The group returns once its parallel subtests have: RunFusedFaults
	// keeps the faults on until then.
	t.Run("Fused", func(t *testing.T) {
		for _, tc := range fusedTests {
			tc := tc
			t.Run(tc.name, func(t *testing.T) {
				t.Parallel()
				tc.fn(t, newAdapter(t))
			})
		}
	})
}

// RunFusedFaults runs the suite of RunFused while srv injects faults into
// FaultRate of the requests, as RunFaults does, and expects the same
// results.
func RunFusedFaults(t *testing.T, srv *upstashtest.Server, newAdapter func(t *testing.T) upstash.FusedAdapter) {
	t.Helper()
	before := faultCount(srv.Stats())
	srv.SetFaultRate(FaultRate)
	defer srv.ClearFaults()
	RunFused(t, newAdapter)
	st := srv.Stats()
	n := faultCount(st) - before
	t.Logf("%d faults injected (%v) in %d requests", n, st.Faults, st.TotalRequests)
	if n == 0 {
		t.Error("no fault was injected: the adapters do not talk to srv")
	}
}

type fusedTest struct {
	name string
	fn   func(t *testing.T, s upstash.FusedAdapter)
}

var fusedTests = []fusedTest{
	{"AdmitTakesLock", testAdmitTakesLock},
	{"AdmitDuplicate", testAdmitDuplicate},
	{"AdmitQueuesWhenBusy", testAdmitQueuesWhenBusy},
	{"AdmitQueueCap", testAdmitQueueCap},
	{"AdmitTakeOver", testAdmitTakeOver},
	{"AdmitWithoutLock", testAdmitWithoutLock},
	{"FinishReleases", testFinishReleases},
	{"FinishHandsOverNext", testFinishHandsOverNext},
	{"FinishLockNotHeld", testFinishLockNotHeld},
	{"FinishStrandsNothing928", testFinishStrandsNothing928},
	{"FinishTakesSeveral", testFinishTakesSeveral},
	{"ConcurrentWebhooks", func(t *testing.T, s upstash.FusedAdapter) { testConcurrentWebhooks(t, s, 0) }},
	{"ConcurrentWebhooksTakeSeveral", func(t *testing.T, s upstash.FusedAdapter) { testConcurrentWebhooks(t, s, 4) }},
	{"FusedInvalidInput", testFusedInvalidInput},
	{"AdmitOperationIDRepeat", testAdmitOperationIDRepeat},
	{"FinishOperationIDRepeat", testFinishOperationIDRepeat},
}

func admitOK(t *testing.T, s upstash.FusedAdapter, req upstash.AdmitRequest) upstash.AdmitResult {
	t.Helper()
	res, err := s.Admit(ctxFor(t), req)
	noErr(t, err, "Admit")
	return res
}

func finishOK(t *testing.T, s upstash.FusedAdapter, req upstash.FinishRequest) upstash.FinishResult {
	t.Helper()
	res, err := s.Finish(ctxFor(t), req)
	noErr(t, err, "Finish")
	return res
}

// webhook is the Admit of message msg on thread: dedupe, subscription,
// lock or queue, and a read of the thread's state.
func webhook(t *testing.T, thread, msg string) upstash.AdmitRequest {
	t.Helper()
	e := entry(t, msg, longTTL)
	return upstash.AdmitRequest{
		DedupeKey:         thread + ":dedupe:" + msg,
		DedupeTTL:         longTTL,
		CheckSubscription: thread,
		ThreadID:          thread,
		LockTTL:           longTTL,
		Entry:             &e,
		MaxQueue:          10,
		Read:              []string{thread + ":state"},
	}
}

func messageOf(t *testing.T, e *upstash.QueueEntry) string {
	t.Helper()
	if e == nil {
		return "<nil>"
	}
	var m string
	if err := json.Unmarshal(e.Message, &m); err != nil {
		t.Fatalf("entry message %q is not a JSON string: %v", e.Message, err)
	}
	return m
}

func testAdmitTakesLock(t *testing.T, s upstash.FusedAdapter) {
	thread := uid(t, "admit")
	ctx := ctxFor(t)
	noErr(t, s.Set(ctx, thread+":state", map[string]int{"n": 1}, longTTL), "Set")
	res := admitOK(t, s, webhook(t, thread, "m1"))
	if res.Duplicate || res.Busy || res.Queued || res.Subscribed || res.Lock == nil {
		t.Fatalf("Admit on a free thread = %+v, want the lock", res)
	}
	if res.Lock.ThreadID != thread || res.Lock.Token == "" {
		t.Errorf("lock = %+v", *res.Lock)
	}
	if len(res.Values) != 1 || !jsonEqual(t, res.Values[0], []byte(`{"n":1}`)) {
		t.Errorf("Values = %q, want the thread's state", res.Values)
	}
	wantBusy(t, s, thread)
	if got := get(t, s, thread+":dedupe:m1"); got == nil || !jsonEqual(t, got, []byte("true")) {
		t.Errorf("dedupe marker = %s, want true", got)
	}
	if d := depth(t, s, thread); d != 0 {
		t.Errorf("QueueDepth = %d: the holder's own message must not be queued", d)
	}
	// The lock is an ordinary one.
	ok, err := s.ExtendLock(ctx, res.Lock, longTTL)
	if err != nil || !ok {
		t.Errorf("ExtendLock of Admit's lock = %v, %v", ok, err)
	}
	noErr(t, s.ReleaseLock(ctx, res.Lock), "ReleaseLock")

	noErr(t, s.Subscribe(ctx, thread), "Subscribe")
	res = admitOK(t, s, webhook(t, thread, "m2"))
	if !res.Subscribed || res.Lock == nil {
		t.Errorf("Admit on a subscribed thread = %+v", res)
	}
	missing := admitOK(t, s, upstash.AdmitRequest{ThreadID: uid(t, "other"), LockTTL: longTTL, Read: []string{uid(t, "missing")}})
	if len(missing.Values) != 1 || missing.Values[0] != nil {
		t.Errorf("Values of a missing key = %q, want [nil]", missing.Values)
	}
}

func testAdmitDuplicate(t *testing.T, s upstash.FusedAdapter) {
	thread := uid(t, "dup")
	ctx := ctxFor(t)
	first := admitOK(t, s, webhook(t, thread, "m1"))
	if first.Lock == nil {
		t.Fatal("first Admit took no lock")
	}
	noErr(t, s.ReleaseLock(ctx, first.Lock), "ReleaseLock")
	res := admitOK(t, s, webhook(t, thread, "m1"))
	if !res.Duplicate || res.Lock != nil || res.Busy || res.Queued || res.Values != nil {
		t.Errorf("Admit of a duplicate = %+v, want Duplicate only", res)
	}
	if busy(t, s, thread) {
		t.Error("a duplicate took the lock")
	}
	holder := acquire(t, s, thread+"-busy", longTTL)
	req := webhook(t, thread+"-busy", "m1")
	req.DedupeKey = thread + ":dedupe:m1"
	if res = admitOK(t, s, req); !res.Duplicate || res.Queued {
		t.Errorf("Admit of a duplicate on a busy thread = %+v", res)
	}
	if d := depth(t, s, holder.ThreadID); d != 0 {
		t.Errorf("a duplicate was queued: depth %d", d)
	}
}

func testAdmitQueuesWhenBusy(t *testing.T, s upstash.FusedAdapter) {
	thread := uid(t, "busy")
	holder := acquire(t, s, thread, longTTL)
	req := webhook(t, thread, "m1")
	req.Append = []upstash.ListAppend{{Key: thread + ":history", Value: "m1", Options: upstash.ListOptions{MaxLength: 100}}}
	res := admitOK(t, s, req)
	if !res.Busy || !res.Queued || res.Lock != nil || res.QueueDepth != 1 || res.Values != nil {
		t.Fatalf("Admit on a busy thread = %+v, want queued at depth 1", res)
	}
	if dup := admitOK(t, s, req); !dup.Duplicate {
		t.Errorf("second delivery = %+v, want a duplicate", dup)
	}
	if got := listStrings(t, getList(t, s, thread+":history")); fmt.Sprint(got) != "[m1]" {
		t.Errorf("history = %v, want [m1]: appended for a queued message, not for its duplicate", got)
	}
	got := dequeue(t, s, thread)
	if got == nil || !jsonEqual(t, got.Message, req.Entry.Message) ||
		got.ExpiresAt.UnixMilli() != req.Entry.ExpiresAt.UnixMilli() || got.EnqueuedAt.UnixMilli() != req.Entry.EnqueuedAt.UnixMilli() {
		t.Errorf("Dequeue = %+v, want the queued entry %+v", got, req.Entry)
	}
	req = webhook(t, thread, "m2")
	req.Entry = nil
	if res = admitOK(t, s, req); !res.Busy || res.Queued || res.QueueDepth != 0 {
		t.Errorf("Admit without an entry on a busy thread = %+v, want busy, nothing queued", res)
	}
	ok, err := s.ExtendLock(ctxFor(t), holder, longTTL)
	if err != nil || !ok {
		t.Errorf("the holder's lock was disturbed: ExtendLock = %v, %v", ok, err)
	}
}

func testAdmitQueueCap(t *testing.T, s upstash.FusedAdapter) {
	thread := uid(t, "cap")
	acquire(t, s, thread, longTTL)
	for i, msg := range []string{"a", "b", "c"} {
		req := webhook(t, thread, msg)
		req.MaxQueue = 2
		res := admitOK(t, s, req)
		if want := min(i+1, 2); !res.Queued || res.QueueDepth != want {
			t.Errorf("Admit %s with MaxQueue 2 = %+v, want queued at depth %d", msg, res, want)
		}
	}
	req := webhook(t, thread, "d")
	req.MaxQueue, req.DropNewest = 2, true
	if res := admitOK(t, s, req); !res.Busy || res.Queued || res.QueueDepth != 2 {
		t.Errorf("Admit with DropNewest on a full queue = %+v, want busy, not queued, depth 2", res)
	}
	var got []string
	for e := dequeue(t, s, thread); e != nil; e = dequeue(t, s, thread) {
		got = append(got, messageOf(t, e))
	}
	if fmt.Sprint(got) != "[b c]" {
		t.Errorf("queue = %v, want [b c] (the oldest dropped, then the newest)", got)
	}
}

func testAdmitTakeOver(t *testing.T, s upstash.FusedAdapter) {
	thread := uid(t, "force")
	ctx := ctxFor(t)
	old := acquire(t, s, thread, longTTL)
	req := webhook(t, thread, "m1")
	req.TakeOver = true
	res := admitOK(t, s, req)
	if res.Lock == nil || !res.TookOver || res.Busy || res.Queued {
		t.Fatalf("Admit with TakeOver on a busy lock = %+v", res)
	}
	if ok, err := s.ExtendLock(ctx, old, longTTL); err != nil || ok {
		t.Errorf("the old holder's ExtendLock = %v, %v; want false", ok, err)
	}
	noErr(t, s.ReleaseLock(ctx, res.Lock), "ReleaseLock")
	req = webhook(t, thread, "m2")
	req.TakeOver = true
	if res = admitOK(t, s, req); res.Lock == nil || res.TookOver {
		t.Errorf("Admit with TakeOver on a free lock = %+v, want the lock, nothing taken over", res)
	}
}

func testAdmitWithoutLock(t *testing.T, s upstash.FusedAdapter) {
	thread := uid(t, "nolock")
	ctx := ctxFor(t)
	noErr(t, s.Set(ctx, thread+":state", "v", longTTL), "Set")
	noErr(t, s.Subscribe(ctx, thread), "Subscribe")
	req := upstash.AdmitRequest{DedupeKey: thread + ":dedupe", DedupeTTL: longTTL, CheckSubscription: thread, Read: []string{thread + ":state"}}
	res := admitOK(t, s, req)
	if res.Duplicate || !res.Subscribed || res.Lock != nil || res.Busy || len(res.Values) != 1 || !jsonEqual(t, res.Values[0], []byte(`"v"`)) {
		t.Errorf("Admit without a lock = %+v", res)
	}
	if busy(t, s, thread) {
		t.Error("Admit without a ThreadID took a lock")
	}
	if res = admitOK(t, s, req); !res.Duplicate {
		t.Errorf("second Admit = %+v, want a duplicate", res)
	}
}

func testFinishReleases(t *testing.T, s upstash.FusedAdapter) {
	thread := uid(t, "release")
	ctx := ctxFor(t)
	lock := acquire(t, s, thread, longTTL)
	noErr(t, s.AppendToList(ctx, thread+":history", "a", upstash.ListOptions{}), "AppendToList")
	res := finishOK(t, s, upstash.FinishRequest{
		Lock: lock, LockTTL: longTTL,
		Set:    []upstash.CacheWrite{{Key: thread + ":state", Value: map[string]int{"n": 2}, TTL: longTTL}},
		Append: []upstash.ListAppend{{Key: thread + ":history", Value: "b", Options: upstash.ListOptions{MaxLength: 5, TTL: longTTL}}},
	})
	if res.Next != nil || res.Expired != 0 || res.DeadLettered != 0 {
		t.Errorf("Finish with an empty queue = %+v", res)
	}
	if busy(t, s, thread) {
		t.Error("the lock was not released")
	}
	if got := get(t, s, thread+":state"); got == nil || !jsonEqual(t, got, []byte(`{"n":2}`)) {
		t.Errorf("state = %s", got)
	}
	if got := listStrings(t, getList(t, s, thread+":history")); fmt.Sprint(got) != "[a b]" {
		t.Errorf("history = %v, want [a b]", got)
	}
}

func testFinishHandsOverNext(t *testing.T, s upstash.FusedAdapter) {
	thread := uid(t, "next")
	ctx := ctxFor(t)
	lock := acquire(t, s, thread, longTTL)
	stale := upstash.QueueEntry{Message: json.RawMessage(`"stale"`), EnqueuedAt: time.Now().Add(-time.Hour), ExpiresAt: time.Now().Add(-time.Minute)}
	for _, e := range []upstash.QueueEntry{stale, entry(t, "b", longTTL), entry(t, "c", longTTL)} {
		_, err := s.Enqueue(ctx, thread, e, 0)
		noErr(t, err, "Enqueue")
	}
	res := finishOK(t, s, upstash.FinishRequest{Lock: lock, LockTTL: longTTL, Set: []upstash.CacheWrite{{Key: thread + ":state", Value: 1}}})
	if messageOf(t, res.Next) != "b" || res.Expired != 1 {
		t.Fatalf("Finish = %+v, want the next live entry b and one expired", res)
	}
	wantBusy(t, s, thread)
	if got := get(t, s, thread+":state"); got == nil || string(got) != "1" {
		t.Errorf("state = %s, want the write applied", got)
	}
	if ok, err := s.ExtendLock(ctx, lock, longTTL); err != nil || !ok {
		t.Errorf("the lock kept for the next entry: ExtendLock = %v, %v", ok, err)
	}
	if res = finishOK(t, s, upstash.FinishRequest{Lock: lock, LockTTL: longTTL}); messageOf(t, res.Next) != "c" {
		t.Fatalf("second Finish = %+v, want c", res)
	}
	if res = finishOK(t, s, upstash.FinishRequest{Lock: lock, LockTTL: longTTL}); res.Next != nil {
		t.Fatalf("third Finish = %+v, want released", res)
	}
	if busy(t, s, thread) || depth(t, s, thread) != 0 {
		t.Error("the lock or the queue is left")
	}
}

func testFinishLockNotHeld(t *testing.T, s upstash.FusedAdapter) {
	thread := uid(t, "notheld")
	ctx := ctxFor(t)
	lock := acquire(t, s, thread, longTTL)
	noErr(t, s.ForceReleaseLock(ctx, thread), "ForceReleaseLock")
	other := acquire(t, s, thread, longTTL)
	_, err := s.Enqueue(ctx, thread, entry(t, "waiting", longTTL), 0)
	noErr(t, err, "Enqueue")
	_, err = s.Finish(ctx, upstash.FinishRequest{Lock: lock, LockTTL: longTTL,
		Set:    []upstash.CacheWrite{{Key: thread + ":state", Value: "stale"}},
		Append: []upstash.ListAppend{{Key: thread + ":history", Value: "stale"}}})
	wantErrIs(t, err, upstash.ErrLockNotHeld, "Finish of a lock taken over")
	if got := get(t, s, thread+":state"); got != nil {
		t.Errorf("Finish wrote %s under a lock it does not hold", got)
	}
	if got := getList(t, s, thread+":history"); len(got) != 0 {
		t.Errorf("Finish appended %q under a lock it does not hold", got)
	}
	if d := depth(t, s, thread); d != 1 {
		t.Errorf("depth = %d, want the entry left for the holder", d)
	}
	if ok, err := s.ExtendLock(ctx, other, longTTL); err != nil || !ok {
		t.Errorf("the other holder's lock was touched: ExtendLock = %v, %v", ok, err)
	}
}

// testFinishStrandsNothing928 replays vercel/chat#928: a message queued
// after the holder's last look at the queue is handed over by its Finish.
func testFinishStrandsNothing928(t *testing.T, s upstash.FusedAdapter) {
	thread := uid(t, "928")
	a := admitOK(t, s, webhook(t, thread, "a"))
	if a.Lock == nil {
		t.Fatal("A took no lock")
	}
	if e := dequeue(t, s, thread); e != nil {
		t.Fatalf("A's last look found %+v", e)
	}
	if b := admitOK(t, s, webhook(t, thread, "b")); !b.Queued {
		t.Fatalf("B = %+v, want queued", b)
	}
	res := finishOK(t, s, upstash.FinishRequest{Lock: a.Lock, LockTTL: longTTL})
	if messageOf(t, res.Next) != "b" {
		t.Fatalf("A's Finish = %+v: B's message would be stranded", res)
	}
	wantBusy(t, s, thread)
	if res = finishOK(t, s, upstash.FinishRequest{Lock: a.Lock, LockTTL: longTTL}); res.Next != nil {
		t.Fatalf("A's second Finish = %+v", res)
	}
	if c := admitOK(t, s, webhook(t, thread, "c")); c.Lock == nil {
		t.Errorf("C after the release = %+v, want the lock", c)
	}
}

// testFinishTakesSeveral: with Take n, Finish pops up to n live entries
// at once (expired ones discarded on the way, not counted), the oldest in
// Next and the others in More, keeps the lock for them, and leaves the
// rest queued; Take 0 and 1 pop one.
func testFinishTakesSeveral(t *testing.T, s upstash.FusedAdapter) {
	thread := uid(t, "take")
	ctx := ctxFor(t)
	lock := acquire(t, s, thread, longTTL)
	stale := upstash.QueueEntry{Message: json.RawMessage(`"stale"`), EnqueuedAt: time.Now().Add(-time.Hour), ExpiresAt: time.Now().Add(-time.Minute)}
	for _, e := range []upstash.QueueEntry{entry(t, "a", longTTL), stale, entry(t, "b", longTTL), entry(t, "c", longTTL),
		entry(t, "d", longTTL), entry(t, "e", longTTL), entry(t, "f", longTTL)} {
		_, err := s.Enqueue(ctx, thread, e, 0)
		noErr(t, err, "Enqueue")
	}
	handed := func(res upstash.FinishResult) string {
		got := []string{messageOf(t, res.Next)}
		for i := range res.More {
			got = append(got, messageOf(t, &res.More[i]))
		}
		return fmt.Sprint(got)
	}
	res := finishOK(t, s, upstash.FinishRequest{Lock: lock, LockTTL: longTTL, Take: 3, Set: []upstash.CacheWrite{{Key: thread + ":state", Value: 1}}})
	if got := handed(res); got != "[a b c]" || res.Expired != 1 {
		t.Fatalf("Finish with Take 3 handed over %s (%+v), want [a b c] and one expired", got, res)
	}
	wantBusy(t, s, thread)
	if d := depth(t, s, thread); d != 3 {
		t.Errorf("QueueDepth = %d, want 3 left", d)
	}
	if got := get(t, s, thread+":state"); got == nil || string(got) != "1" {
		t.Errorf("state = %s, want the write applied", got)
	}
	if ok, err := s.ExtendLock(ctx, lock, longTTL); err != nil || !ok {
		t.Errorf("the lock kept for the entries: ExtendLock = %v, %v", ok, err)
	}
	for _, take := range []int{0, 1} {
		res = finishOK(t, s, upstash.FinishRequest{Lock: lock, LockTTL: longTTL, Take: take})
		if res.Next == nil || len(res.More) != 0 {
			t.Fatalf("Finish with Take %d = %+v, want one entry", take, res)
		}
	}
	res = finishOK(t, s, upstash.FinishRequest{Lock: lock, LockTTL: longTTL, Take: 5})
	if got := handed(res); got != "[f]" || res.More != nil {
		t.Fatalf("Finish with Take 5 and one entry left handed over %s (More %v), want [f]", got, res.More)
	}
	wantBusy(t, s, thread)
	if res = finishOK(t, s, upstash.FinishRequest{Lock: lock, LockTTL: longTTL, Take: 5}); res.Next != nil || res.More != nil {
		t.Fatalf("Finish over an empty queue = %+v, want released", res)
	}
	if busy(t, s, thread) || depth(t, s, thread) != 0 {
		t.Error("the lock or the queue is left")
	}
}

// testConcurrentWebhooks runs webhooks on one thread from several
// goroutines at once, holders finishing with Take take: every message is
// handled once, never by two holders at a time, and nothing is left
// locked or queued.
func testConcurrentWebhooks(t *testing.T, s upstash.FusedAdapter, take int) {
	thread := uid(t, "concurrent")
	const callers, each = 6, 5
	var (
		mu      sync.Mutex
		handled = map[string]int{}
		active  int
		overlap bool
		failed  error
	)
	handle := func(m string) {
		mu.Lock()
		handled[m]++
		active++
		overlap = overlap || active > 1
		mu.Unlock()
		time.Sleep(time.Millisecond)
		mu.Lock()
		active--
		mu.Unlock()
	}
	fail := func(err error) {
		mu.Lock()
		defer mu.Unlock()
		if failed == nil {
			failed = err
		}
	}
	ctx := ctxFor(t)
	parallel(callers, func(g int) {
		for i := 0; i < each; i++ {
			msg := fmt.Sprintf("m%d-%d", g, i)
			e, err := upstash.NewQueueEntry(msg, longTTL)
			if err != nil {
				fail(err)
				return
			}
			res, err := s.Admit(ctx, upstash.AdmitRequest{DedupeKey: thread + ":" + msg, DedupeTTL: longTTL, ThreadID: thread, LockTTL: longTTL, Entry: &e})
			if err != nil {
				fail(err)
				return
			}
			if res.Lock == nil {
				if !res.Queued {
					fail(fmt.Errorf("%s: Admit = %+v, want the lock or queued", msg, res))
				}
				continue
			}
			handle(msg)
			for {
				fr, err := s.Finish(ctx, upstash.FinishRequest{Lock: res.Lock, LockTTL: longTTL, Take: take})
				if err != nil {
					fail(err)
					return
				}
				if fr.Next == nil {
					break
				}
				if take <= 1 && len(fr.More) > 0 {
					fail(fmt.Errorf("Finish with Take %d handed over %d entries", take, 1+len(fr.More)))
					return
				}
				for _, e := range append([]upstash.QueueEntry{*fr.Next}, fr.More...) {
					var m string
					if err := json.Unmarshal(e.Message, &m); err != nil {
						fail(err)
						return
					}
					handle(m)
				}
			}
		}
	})
	if failed != nil {
		t.Fatal(failed)
	}
	if overlap {
		t.Error("two holders handled messages at once")
	}
	for g := 0; g < callers; g++ {
		for i := 0; i < each; i++ {
			if m := fmt.Sprintf("m%d-%d", g, i); handled[m] != 1 {
				t.Errorf("%s handled %d times, want once", m, handled[m])
			}
		}
	}
	if busy(t, s, thread) || depth(t, s, thread) != 0 {
		t.Error("the lock or queued messages are left")
	}
}

func testFusedInvalidInput(t *testing.T, s upstash.FusedAdapter) {
	ctx := ctxFor(t)
	thread := uid(t, "invalid")
	for name, req := range map[string]upstash.AdmitRequest{
		"a ThreadID without LockTTL": {ThreadID: thread},
		"a negative DedupeTTL":       {DedupeKey: thread, DedupeTTL: -time.Second},
		"an Entry without ThreadID":  {Entry: &upstash.QueueEntry{Message: json.RawMessage("1"), ExpiresAt: time.Now().Add(time.Minute)}},
		"an empty key in Read":       {Read: []string{""}},
	} {
		_, err := s.Admit(ctx, req)
		wantErrIs(t, err, upstash.ErrInvalidArgument, "Admit with "+name)
	}
	lock := &upstash.Lock{ThreadID: thread, Token: "t"}
	for name, req := range map[string]upstash.FinishRequest{
		"a nil Lock":            {LockTTL: time.Minute},
		"no LockTTL":            {Lock: lock},
		"an empty key in Set":   {Lock: lock, LockTTL: time.Minute, Set: []upstash.CacheWrite{{Value: 1}}},
		"a negative append TTL": {Lock: lock, LockTTL: time.Minute, Append: []upstash.ListAppend{{Key: thread, Value: 1, Options: upstash.ListOptions{TTL: -1}}}},
		"a negative Take":       {Lock: lock, LockTTL: time.Minute, Take: -1},
	} {
		_, err := s.Finish(ctx, req)
		wantErrIs(t, err, upstash.ErrInvalidArgument, "Finish with "+name)
	}
	for _, id := range []string{"short", "0123456789abcdef:x", "0123456789abcdef.1"} {
		_, err := s.Admit(ctx, upstash.AdmitRequest{ThreadID: thread, LockTTL: time.Minute, OperationID: id})
		wantErrIs(t, err, upstash.ErrInvalidArgument, "Admit with OperationID "+id)
		_, err = s.Finish(ctx, upstash.FinishRequest{Lock: lock, LockTTL: time.Minute, OperationID: id})
		wantErrIs(t, err, upstash.ErrInvalidArgument, "Finish with OperationID "+id)
	}
	if busy(t, s, thread) {
		t.Error("an invalid call took a lock")
	}
}

func operationID(t *testing.T) string {
	t.Helper()
	id, err := upstash.NewOperationID()
	noErr(t, err, "NewOperationID")
	return id
}

// testAdmitOperationIDRepeat: an Admit sent again with the same
// OperationID (as after ErrOutcomeUnknown) returns the recorded outcome,
// with the lock actually held, and applies nothing again; a new id is a
// new operation.
func testAdmitOperationIDRepeat(t *testing.T, s upstash.FusedAdapter) {
	thread := uid(t, "opid-admit")
	ctx := ctxFor(t)
	req := webhook(t, thread, "m1")
	req.Append = []upstash.ListAppend{{Key: thread + ":history", Value: "m1"}}
	req.OperationID = operationID(t)
	first := admitOK(t, s, req)
	if first.Lock == nil || first.OperationID != req.OperationID {
		t.Fatalf("Admit = %+v, want the lock and the operation id", first)
	}
	again := admitOK(t, s, req)
	if again.Duplicate || again.Lock == nil || again.Lock.Token != first.Lock.Token || again.Lock.Fence != first.Lock.Fence {
		t.Fatalf("repeat = %+v, want the recorded lock %+v", again, first.Lock)
	}
	if got := listStrings(t, getList(t, s, thread+":history")); fmt.Sprint(got) != "[m1]" {
		t.Errorf("history = %v, want [m1]: appended once", got)
	}
	if n := depth(t, s, thread); n != 0 {
		t.Errorf("queue depth %d, want 0", n)
	}
	// The repeat's lock is the one held.
	if ok, err := s.ExtendLock(ctx, again.Lock, longTTL); err != nil || !ok {
		t.Errorf("ExtendLock of the repeat's lock = %v, %v", ok, err)
	}
	req2 := req
	req2.OperationID = operationID(t)
	if res := admitOK(t, s, req2); !res.Duplicate {
		t.Errorf("a new id = %+v, want a duplicate", res)
	}
	// Busy: queued once.
	q := webhook(t, thread, "m2")
	q.OperationID = operationID(t)
	for i := 0; i < 2; i++ {
		res := admitOK(t, s, q)
		if !res.Busy || !res.Queued || res.Lock != nil || res.QueueDepth != 1 {
			t.Errorf("Admit %d of a busy thread = %+v, want queued once", i+1, res)
		}
	}
	if n := depth(t, s, thread); n != 1 {
		t.Errorf("queue depth %d, want 1", n)
	}
	noErr(t, s.ReleaseLock(ctx, again.Lock), "ReleaseLock")
	// A repeat after the release takes nothing.
	if res := admitOK(t, s, req); res.Lock == nil || res.Lock.Token != first.Lock.Token {
		t.Errorf("repeat after release = %+v, want the recorded lock", res)
	}
	if busy(t, s, thread) {
		t.Error("a repeat took the lock again")
	}
}

// testFinishOperationIDRepeat: a Finish sent again with the same
// OperationID returns the same popped entries, pops nothing more, and
// does not release a lock taken since.
func testFinishOperationIDRepeat(t *testing.T, s upstash.FusedAdapter) {
	thread := uid(t, "opid-finish")
	ctx := ctxFor(t)
	lock := acquire(t, s, thread, longTTL)
	for _, m := range []string{"m1", "m2", "m3"} {
		if _, err := s.Enqueue(ctx, thread, entry(t, m, longTTL), 0); err != nil {
			t.Fatal(err)
		}
	}
	req := upstash.FinishRequest{Lock: lock, LockTTL: longTTL, Take: 2, OperationID: operationID(t),
		Append: []upstash.ListAppend{{Key: thread + ":history", Value: "reply"}}}
	for i := 0; i < 2; i++ {
		res := finishOK(t, s, req)
		if messageOf(t, res.Next) != "m1" || len(res.More) != 1 || messageOf(t, &res.More[0]) != "m2" || res.OperationID != req.OperationID {
			t.Fatalf("Finish %d = %+v, want m1 and m2", i+1, res)
		}
	}
	if n := depth(t, s, thread); n != 1 {
		t.Errorf("queue depth %d, want 1: nothing popped twice", n)
	}
	if got := listStrings(t, getList(t, s, thread+":history")); fmt.Sprint(got) != "[reply]" {
		t.Errorf("history = %v, want [reply]", got)
	}
	res := finishOK(t, s, upstash.FinishRequest{Lock: lock, LockTTL: longTTL, OperationID: operationID(t)})
	if messageOf(t, res.Next) != "m3" {
		t.Fatalf("a new id = %+v, want m3", res)
	}
	rel := upstash.FinishRequest{Lock: lock, LockTTL: longTTL, OperationID: operationID(t)}
	if res := finishOK(t, s, rel); res.Next != nil {
		t.Fatalf("Finish = %+v, want the release", res)
	}
	other := acquire(t, s, thread, longTTL)
	if res := finishOK(t, s, rel); res.Next != nil {
		t.Errorf("repeat of the release = %+v, want the recorded release", res)
	}
	if ok, err := s.ExtendLock(ctx, other, longTTL); err != nil || !ok {
		t.Errorf("the lock taken after the release: ExtendLock = %v, %v; a repeat must not release it", ok, err)
	}
}
