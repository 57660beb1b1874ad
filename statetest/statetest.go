// Package statetest is a conformance suite for implementations of
// upstash.StateAdapter, the Chat SDK's state contract, with the semantics
// this module documents on upstash.State (which differ from state-redis on
// purpose in a few places: Dequeue skips expired entries, non-positive lock
// TTLs and negative list options are refused, values that are not valid
// JSON are refused).
//
// Run exercises only the StateAdapter interface, so it runs unchanged
// against the embedded test server, a real Redis behind it, or a real
// Upstash database. The TTLs it watches expire are real and last a second
// or more: the suite sleeps past them rather than mocking time, which an
// adapter over a remote server cannot do. Every wait is measured from the
// moment the request had certainly reached the server. A check that a
// value is still there before its TTL only means something if the backend
// answered well within the TTL: when it did not, the scenario is run again
// with a TTL twice as long (up to 8 s), and the test fails if no TTL was
// long enough, so a loaded machine or a distant database slows the suite
// down but never skips a check. Every subtest uses fresh, unique thread ids
// and keys, so one adapter may be shared by all of them (and by parallel
// runs), and subtests run in parallel.
//
// RunFaults runs the same suite while an upstashtest.Server injects faults
// into a share of the requests, and expects the same results: an adapter
// whose every operation is safe to send again (as upstash.State's are)
// passes it, given a client that retries enough.
//
// RunFused and RunFusedFaults do the same for the fused operations of an
// upstash.FusedAdapter (Admit and Finish).
package statetest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"math"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chatstate/upstash"
	"github.com/chatstate/upstash/upstashtest"
)

// Timings. shortTTL is the TTL of values that the suite watches expire,
// long enough for a few requests before it to hold on a slow machine;
// settle is the extra time it waits past a TTL before checking that the
// value is gone.
const (
	shortTTL = time.Second
	settle   = 250 * time.Millisecond
	longTTL  = time.Minute
)

// Run runs the conformance suite against the adapters newAdapter returns.
// newAdapter is called once per subtest, with that subtest's t; it may
// return the same adapter every time.
func Run(t *testing.T, newAdapter func(t *testing.T) upstash.StateAdapter) {
	t.Helper()
	run(t, newAdapter)
}

// FaultRate is the share of requests RunFaults makes fail.
const FaultRate = 0.15

// RunFaults runs the suite of Run while srv, the server the adapters talk
// to, injects a fault into FaultRate of the requests (chosen at random
// from srv's seed, among all of upstashtest's kinds: a 503, a reset before
// the command runs, the reply dropped after it ran, a latency spike), and
// expects exactly the same results. The adapters' clients must retry
// enough for every request to get through: with 15% faults, 10 retries
// leave about one failed call in 10^10 (upstash.RetryPolicy{MaxRetries: 10,
// MinBackoff: time.Millisecond, MaxBackoff: 20 * time.Millisecond}, say).
// Use a server of its own: the faults hit every request srv serves, and
// RunFaults turns them off when it returns. It fails if no fault was
// injected.
func RunFaults(t *testing.T, srv *upstashtest.Server, newAdapter func(t *testing.T) upstash.StateAdapter) {
	t.Helper()
	before := faultCount(srv.Stats())
	srv.SetFaultRate(FaultRate)
	defer srv.ClearFaults()
	run(t, newAdapter)
	st := srv.Stats()
	n := faultCount(st) - before
	t.Logf("%d faults injected (%v) in %d requests", n, st.Faults, st.TotalRequests)
	if n == 0 {
		t.Error("no fault was injected: the adapters do not talk to srv")
	}
}

func faultCount(st upstashtest.Stats) int64 {
	var n int64
	for _, v := range st.Faults {
		n += v
	}
	return n
}

func run(t *testing.T, newAdapter func(t *testing.T) upstash.StateAdapter) {
	t.Helper()
	groups := []struct {
		name  string
		tests []test
	}{
		{"Connection", connectionTests},
		{"Subscriptions", subscriptionTests},
		{"Locks", lockTests},
		{"Cache", cacheTests},
		{"Lists", listTests},
		{"Queues", queueTests},
		{"InvalidInput", invalidInputTests},
	}
	for _, g := range groups {
		g := g
		t.Run(g.name, func(t *testing.T) {
			for _, tc := range g.tests {
				tc := tc
				t.Run(tc.name, func(t *testing.T) {
					t.Parallel()
					tc.fn(t, newAdapter(t))
				})
			}
		})
	}
}

type test struct {
	name string
	fn   func(t *testing.T, s upstash.StateAdapter)
}

// ---- helpers ----

// ctxFor returns a context that ends with the test (or after 30 s).
func ctxFor(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// uid returns an id unique to this run, containing name and characters
// that keys must tolerate (a colon, a space, non-ASCII).
func uid(t *testing.T, name string) string {
	t.Helper()
	var b [6]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatal(err)
	}
	return "statetest:" + name + ":" + hex.EncodeToString(b[:])
}

func noErr(t *testing.T, err error, what string) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: unexpected error: %v", what, err)
	}
}

func wantErrIs(t *testing.T, err, target error, what string) {
	t.Helper()
	if !errors.Is(err, target) {
		t.Fatalf("%s: error = %v, want one matching %v", what, err, target)
	}
}

// jsonEqual reports whether two JSON texts decode to equal values.
func jsonEqual(t *testing.T, got, want []byte) bool {
	t.Helper()
	var g, w any
	if err := json.Unmarshal(got, &g); err != nil {
		t.Fatalf("stored JSON %q does not decode: %v", got, err)
	}
	if err := json.Unmarshal(want, &w); err != nil {
		t.Fatalf("want JSON %q does not decode: %v", want, err)
	}
	return reflect.DeepEqual(g, w)
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// decisive runs scenario with a TTL of shortTTL, then twice, four and
// eight times that, until it reports (true) that the backend answered fast
// enough for every check it makes to mean something; scenario fails the
// test itself on a wrong result, and uses fresh ids on each run. If even
// the longest TTL was too short, the test fails: a check that was never
// made does not pass.
func decisive(t *testing.T, scenario func(ttl time.Duration) bool) {
	t.Helper()
	for ttl := shortTTL; ttl <= 8*shortTTL; ttl *= 2 {
		if scenario(ttl) {
			return
		}
		t.Logf("the backend was too slow for the checks with a %v TTL; trying %v", ttl, 2*ttl)
	}
	t.Fatalf("the backend was too slow for the checks even with a %v TTL", 8*shortTTL)
}

// inTime reports whether a check that ended at done, about a value whose
// TTL started after start, ran while the value certainly still lived, with
// settle to spare.
func inTime(start, done time.Time, ttl time.Duration) bool {
	return done.Sub(start) < ttl-settle
}

// busy reports whether AcquireLock(id) finds the lock held.
func busy(t *testing.T, s upstash.StateAdapter, id string) bool {
	t.Helper()
	lock, err := s.AcquireLock(ctxFor(t), id, longTTL)
	noErr(t, err, "AcquireLock")
	return lock == nil
}

func acquire(t *testing.T, s upstash.StateAdapter, id string, ttl time.Duration) *upstash.Lock {
	t.Helper()
	lock, err := s.AcquireLock(ctxFor(t), id, ttl)
	noErr(t, err, "AcquireLock")
	if lock == nil {
		t.Fatalf("AcquireLock(%q): got nil, want a lock", id)
	}
	return lock
}

func wantBusy(t *testing.T, s upstash.StateAdapter, id string) {
	t.Helper()
	lock, err := s.AcquireLock(ctxFor(t), id, longTTL)
	noErr(t, err, "AcquireLock")
	if lock != nil {
		t.Fatalf("AcquireLock(%q) = %+v, want nil: the lock should be held", id, *lock)
	}
}

func entry(t *testing.T, msg any, ttl time.Duration) upstash.QueueEntry {
	t.Helper()
	e, err := upstash.NewQueueEntry(msg, ttl)
	noErr(t, err, "NewQueueEntry")
	return e
}

func get(t *testing.T, s upstash.StateAdapter, key string) json.RawMessage {
	t.Helper()
	v, err := s.Get(ctxFor(t), key)
	noErr(t, err, "Get")
	return v
}

func getList(t *testing.T, s upstash.StateAdapter, key string) []json.RawMessage {
	t.Helper()
	v, err := s.GetList(ctxFor(t), key)
	noErr(t, err, "GetList")
	if v == nil {
		t.Fatalf("GetList(%q) = nil, want a non-nil slice", key)
	}
	return v
}

func listStrings(t *testing.T, items []json.RawMessage) []string {
	t.Helper()
	out := make([]string, len(items))
	for i, it := range items {
		if err := json.Unmarshal(it, &out[i]); err != nil {
			t.Fatalf("item %d %q is not a JSON string: %v", i, it, err)
		}
	}
	return out
}

func depth(t *testing.T, s upstash.StateAdapter, id string) int {
	t.Helper()
	n, err := s.QueueDepth(ctxFor(t), id)
	noErr(t, err, "QueueDepth")
	return n
}

func dequeue(t *testing.T, s upstash.StateAdapter, id string) *upstash.QueueEntry {
	t.Helper()
	e, err := s.Dequeue(ctxFor(t), id)
	noErr(t, err, "Dequeue")
	return e
}

// parallel runs fn(i) for i in [0, n) on n goroutines released at once.
func parallel(n int, fn func(i int)) {
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			<-start
			fn(i)
		}(i)
	}
	close(start)
	wg.Wait()
}

// ---- connection ----

var connectionTests = []test{
	{"ConnectDisconnect", func(t *testing.T, s upstash.StateAdapter) {
		ctx := ctxFor(t)
		noErr(t, s.Connect(ctx), "Connect")
		noErr(t, s.Connect(ctx), "second Connect")
		noErr(t, s.Disconnect(ctx), "Disconnect")
		// The adapter stays usable after Disconnect and a new Connect.
		noErr(t, s.Connect(ctx), "Connect after Disconnect")
		id := uid(t, "conn")
		noErr(t, s.Subscribe(ctx, id), "Subscribe")
		ok, err := s.IsSubscribed(ctx, id)
		noErr(t, err, "IsSubscribed")
		if !ok {
			t.Fatal("IsSubscribed = false after Subscribe")
		}
	}},
}

// ---- subscriptions ----

var subscriptionTests = []test{
	{"SubscribeUnsubscribe", func(t *testing.T, s upstash.StateAdapter) {
		ctx := ctxFor(t)
		id, other := uid(t, "sub"), uid(t, "sub-other")
		check := func(id string, want bool) {
			t.Helper()
			got, err := s.IsSubscribed(ctx, id)
			noErr(t, err, "IsSubscribed")
			if got != want {
				t.Fatalf("IsSubscribed(%q) = %v, want %v", id, got, want)
			}
		}
		check(id, false)
		noErr(t, s.Subscribe(ctx, id), "Subscribe")
		check(id, true)
		check(other, false)
		noErr(t, s.Subscribe(ctx, id), "Subscribe again")
		check(id, true)
		noErr(t, s.Unsubscribe(ctx, id), "Unsubscribe")
		check(id, false)
		noErr(t, s.Unsubscribe(ctx, id), "Unsubscribe again")
		check(id, false)
	}},
	{"OddThreadIDs", func(t *testing.T, s upstash.StateAdapter) {
		ctx := ctxFor(t)
		base := uid(t, "odd")
		ids := []string{
			base + " with spaces",
			base + ":slack:C123:1712345678.000100",
			base + ":ünïcødé 🧵",
			base + `:"quoted"\backslash`,
			base + ":*?[glob]",
		}
		for _, id := range ids {
			noErr(t, s.Subscribe(ctx, id), "Subscribe")
		}
		for _, id := range ids {
			ok, err := s.IsSubscribed(ctx, id)
			noErr(t, err, "IsSubscribed")
			if !ok {
				t.Errorf("IsSubscribed(%q) = false after Subscribe", id)
			}
		}
		ok, err := s.IsSubscribed(ctx, base)
		noErr(t, err, "IsSubscribed")
		if ok {
			t.Errorf("IsSubscribed(%q) = true; only longer ids were subscribed", base)
		}
	}},
	{"ConcurrentSubscribers", func(t *testing.T, s upstash.StateAdapter) {
		ctx := ctxFor(t)
		base := uid(t, "subconc")
		parallel(20, func(i int) {
			if err := s.Subscribe(ctx, base+":"+string(rune('a'+i))); err != nil {
				t.Errorf("Subscribe %d: %v", i, err)
			}
		})
		for i := 0; i < 20; i++ {
			ok, err := s.IsSubscribed(ctx, base+":"+string(rune('a'+i)))
			noErr(t, err, "IsSubscribed")
			if !ok {
				t.Errorf("thread %d not subscribed", i)
			}
		}
	}},
}

// ---- locks ----

var lockTests = []test{
	{"AcquireReturnsLock", func(t *testing.T, s upstash.StateAdapter) {
		id := uid(t, "lock")
		before := time.Now()
		lock := acquire(t, s, id, longTTL)
		after := time.Now()
		if lock.ThreadID != id {
			t.Errorf("ThreadID = %q, want %q", lock.ThreadID, id)
		}
		if lock.Token == "" {
			t.Error("Token is empty")
		}
		// ExpiresAt is whole milliseconds of (time before the request + ttl).
		lo, hi := before.Add(longTTL).Add(-time.Millisecond), after.Add(longTTL)
		if lock.ExpiresAt.Before(lo) || lock.ExpiresAt.After(hi) {
			t.Errorf("ExpiresAt = %v, want within [%v, %v]", lock.ExpiresAt, lo, hi)
		}
		other := acquire(t, s, uid(t, "lock-other"), longTTL)
		if other.Token == lock.Token {
			t.Errorf("two locks share the token %q", lock.Token)
		}
	}},
	{"SecondAcquireFails", func(t *testing.T, s upstash.StateAdapter) {
		id := uid(t, "lock")
		acquire(t, s, id, longTTL)
		wantBusy(t, s, id)
		acquire(t, s, id+"-2", longTTL) // a different thread is independent
	}},
	{"ReleaseThenAcquire", func(t *testing.T, s upstash.StateAdapter) {
		ctx := ctxFor(t)
		id := uid(t, "lock")
		lock := acquire(t, s, id, longTTL)
		noErr(t, s.ReleaseLock(ctx, lock), "ReleaseLock")
		noErr(t, s.ReleaseLock(ctx, lock), "ReleaseLock twice")
		again := acquire(t, s, id, longTTL)
		if again.Token == lock.Token {
			t.Error("re-acquired lock reuses the old token")
		}
	}},
	{"StaleReleaseKeepsNewHolder", func(t *testing.T, s upstash.StateAdapter) {
		ctx := ctxFor(t)
		id := uid(t, "lock")
		old := acquire(t, s, id, longTTL)
		noErr(t, s.ForceReleaseLock(ctx, id), "ForceReleaseLock")
		holder := acquire(t, s, id, longTTL)
		noErr(t, s.ReleaseLock(ctx, old), "ReleaseLock with a stale token")
		wantBusy(t, s, id)
		ok, err := s.ExtendLock(ctx, old, longTTL)
		noErr(t, err, "ExtendLock with a stale token")
		if ok {
			t.Error("ExtendLock with a stale token = true")
		}
		ok, err = s.ExtendLock(ctx, holder, longTTL)
		noErr(t, err, "ExtendLock by the holder")
		if !ok {
			t.Error("ExtendLock by the holder = false after a stale release")
		}
	}},
	{"ForeignTokenRelease", func(t *testing.T, s upstash.StateAdapter) {
		ctx := ctxFor(t)
		id := uid(t, "lock")
		lock := acquire(t, s, id, longTTL)
		forged := &upstash.Lock{ThreadID: id, Token: lock.Token + "x", ExpiresAt: lock.ExpiresAt}
		noErr(t, s.ReleaseLock(ctx, forged), "ReleaseLock with a foreign token")
		wantBusy(t, s, id)
		missing := &upstash.Lock{ThreadID: uid(t, "lock-missing"), Token: "nobody"}
		noErr(t, s.ReleaseLock(ctx, missing), "ReleaseLock of a missing lock")
	}},
	{"Extend", func(t *testing.T, s upstash.StateAdapter) {
		ctx := ctxFor(t)
		decisive(t, func(ttl time.Duration) bool {
			id := uid(t, "lock")
			start := time.Now()
			lock := acquire(t, s, id, ttl)
			first := lock.ExpiresAt
			before := time.Now()
			ok, err := s.ExtendLock(ctx, lock, longTTL)
			noErr(t, err, "ExtendLock")
			if !ok {
				if inTime(start, time.Now(), ttl) {
					t.Fatal("ExtendLock = false for the holder")
				}
				return false // the lock may have expired before the extend
			}
			if !lock.ExpiresAt.After(first) || lock.ExpiresAt.Before(before.Add(longTTL).Add(-time.Millisecond)) {
				t.Errorf("ExpiresAt after extend = %v, want about %v", lock.ExpiresAt, before.Add(longTTL))
			}
			time.Sleep(ttl + settle) // past the original TTL
			wantBusy(t, s, id)
			return true
		})
	}},
	{"ExtendKeepsShortLockAlive", func(t *testing.T, s upstash.StateAdapter) {
		ctx := ctxFor(t)
		decisive(t, func(shortest time.Duration) bool {
			ttl := 2 * shortest
			id := uid(t, "lock")
			last := time.Now() // the lock lasts until at least last + ttl
			lock := acquire(t, s, id, ttl)
			for i := 0; i < 4; i++ { // 4 × ttl/3: longer than ttl in all
				time.Sleep(ttl / 3)
				next := time.Now()
				ok, err := s.ExtendLock(ctx, lock, ttl)
				noErr(t, err, "ExtendLock")
				if !inTime(last, time.Now(), ttl) {
					return false // the extend may have come after the lapse
				}
				if !ok {
					t.Fatalf("extend %d = false: the lock lapsed while being extended", i)
				}
				last = next
			}
			held := busy(t, s, id)
			if !inTime(last, time.Now(), ttl) {
				return false
			}
			if !held {
				t.Fatal("the lock lapsed although it was extended in time")
			}
			return true
		})
	}},
	{"Expiry", func(t *testing.T, s upstash.StateAdapter) {
		ctx := ctxFor(t)
		decisive(t, func(ttl time.Duration) bool {
			id := uid(t, "lock")
			start := time.Now()
			lock := acquire(t, s, id, ttl)
			acquired := time.Now() // the lock expires by acquired + ttl
			held := busy(t, s, id)
			if !inTime(start, time.Now(), ttl) {
				return false // the check may have come after the expiry
			}
			if !held {
				t.Fatal("the lock was free before its TTL")
			}
			time.Sleep(time.Until(acquired.Add(ttl + settle)))
			ok, err := s.ExtendLock(ctx, lock, longTTL)
			noErr(t, err, "ExtendLock after expiry")
			if ok {
				t.Error("ExtendLock revived an expired lock")
			}
			next := acquire(t, s, id, longTTL)
			noErr(t, s.ReleaseLock(ctx, lock), "ReleaseLock of the expired lock")
			wantBusy(t, s, id)
			noErr(t, s.ReleaseLock(ctx, next), "ReleaseLock")
			return true
		})
	}},
	{"ForceRelease", func(t *testing.T, s upstash.StateAdapter) {
		ctx := ctxFor(t)
		id := uid(t, "lock")
		acquire(t, s, id, longTTL)
		noErr(t, s.ForceReleaseLock(ctx, id), "ForceReleaseLock")
		acquire(t, s, id, longTTL)
		noErr(t, s.ForceReleaseLock(ctx, uid(t, "lock-missing")), "ForceReleaseLock of a missing lock")
	}},
	{"ConcurrentAcquire", func(t *testing.T, s upstash.StateAdapter) {
		ctx := ctxFor(t)
		id := uid(t, "lock")
		var mu sync.Mutex
		var winners []*upstash.Lock
		parallel(20, func(i int) {
			lock, err := s.AcquireLock(ctx, id, longTTL)
			if err != nil {
				t.Errorf("AcquireLock %d: %v", i, err)
				return
			}
			if lock != nil {
				mu.Lock()
				winners = append(winners, lock)
				mu.Unlock()
			}
		})
		if len(winners) != 1 {
			t.Fatalf("%d goroutines won the lock, want exactly 1", len(winners))
		}
		noErr(t, s.ReleaseLock(ctx, winners[0]), "ReleaseLock")
		acquire(t, s, id, longTTL)
	}},
	{"ConcurrentExtendAndRelease", func(t *testing.T, s upstash.StateAdapter) {
		ctx := ctxFor(t)
		id := uid(t, "lock")
		lock := acquire(t, s, id, longTTL)
		parallel(10, func(i int) {
			l := *lock // each goroutine extends its own copy
			if _, err := s.ExtendLock(ctx, &l, longTTL); err != nil {
				t.Errorf("ExtendLock %d: %v", i, err)
			}
		})
		noErr(t, s.ReleaseLock(ctx, lock), "ReleaseLock")
		acquire(t, s, id, longTTL)
	}},
}

// ---- cache ----

type sample struct {
	Name  string            `json:"name"`
	Count int               `json:"count"`
	Tags  []string          `json:"tags,omitempty"`
	Meta  map[string]string `json:"meta,omitempty"`
	Skip  string            `json:"-"`
}

var cacheTests = []test{
	{"GetMissing", func(t *testing.T, s upstash.StateAdapter) {
		if v := get(t, s, uid(t, "missing")); v != nil {
			t.Fatalf("Get of a missing key = %q, want nil", v)
		}
	}},
	{"SetGetValues", func(t *testing.T, s upstash.StateAdapter) {
		ctx := ctxFor(t)
		cases := []struct {
			name  string
			value any
			want  string
		}{
			{"string", "abc", `"abc"`},
			{"empty string", "", `""`},
			{"true", true, `true`},
			{"false", false, `false`},
			{"int", 42, `42`},
			{"negative float", -1.5, `-1.5`},
			{"big int", int64(1) << 53, `9007199254740992`},
			{"null", nil, `null`},
			{"empty object", map[string]any{}, `{}`},
			{"empty array", []int{}, `[]`},
			{"map", map[string]any{"a": 1, "b": []any{"x", nil}}, `{"a":1,"b":["x",null]}`},
			{"struct", sample{Name: "n", Count: 3, Tags: []string{"t"}, Skip: "not stored"}, `{"name":"n","count":3,"tags":["t"]}`},
			{"unicode", "héllo 🌍 \u2028 \x00", `"héllo 🌍 \u2028 \u0000"`},
			{"html", "<a href=\"x\">&</a>", `"<a href=\"x\">&</a>"`},
			{"raw message", json.RawMessage(`{"pre":"encoded"}`), `{"pre":"encoded"}`},
			{"pointer", &sample{Name: "p"}, `{"name":"p","count":0}`},
		}
		for _, c := range cases {
			key := uid(t, "val")
			noErr(t, s.Set(ctx, key, c.value, 0), "Set "+c.name)
			got := get(t, s, key)
			if got == nil {
				t.Errorf("%s: Get = nil after Set", c.name)
				continue
			}
			if !jsonEqual(t, got, []byte(c.want)) {
				t.Errorf("%s: Get = %s, want %s", c.name, got, c.want)
			}
		}
	}},
	{"StoredNullIsNotMissing", func(t *testing.T, s upstash.StateAdapter) {
		key := uid(t, "null")
		noErr(t, s.Set(ctxFor(t), key, nil, 0), "Set")
		got := get(t, s, key)
		if string(got) != "null" {
			t.Fatalf("Get = %q (nil: %v), want the JSON text null", got, got == nil)
		}
		v, found, err := upstash.GetJSON[*sample](ctxFor(t), s, key)
		noErr(t, err, "GetJSON")
		if !found || v != nil {
			t.Fatalf("GetJSON = %v, %v; want nil, true", v, found)
		}
	}},
	{"GetJSON", func(t *testing.T, s upstash.StateAdapter) {
		ctx := ctxFor(t)
		key := uid(t, "typed")
		want := sample{Name: "x", Count: 7, Meta: map[string]string{"k": "v"}}
		noErr(t, s.Set(ctx, key, want, 0), "Set")
		got, found, err := upstash.GetJSON[sample](ctx, s, key)
		noErr(t, err, "GetJSON")
		if !found || !reflect.DeepEqual(got, want) {
			t.Fatalf("GetJSON = %+v, %v; want %+v, true", got, found, want)
		}
		_, found, err = upstash.GetJSON[sample](ctx, s, uid(t, "typed-missing"))
		if err != nil || found {
			t.Fatalf("GetJSON of a missing key: found %v, err %v; want false, nil", found, err)
		}
		_, _, err = upstash.GetJSON[int](ctx, s, key)
		if err == nil {
			t.Fatal("GetJSON[int] of an object: no error")
		}
		bs := []byte{0, 1, 2, 0xff}
		noErr(t, s.Set(ctx, key, bs, 0), "Set []byte")
		gotBytes, _, err := upstash.GetJSON[[]byte](ctx, s, key)
		noErr(t, err, "GetJSON[[]byte]")
		if !reflect.DeepEqual(gotBytes, bs) {
			t.Fatalf("[]byte round trip = %v, want %v", gotBytes, bs)
		}
	}},
	{"Overwrite", func(t *testing.T, s upstash.StateAdapter) {
		ctx := ctxFor(t)
		key := uid(t, "over")
		noErr(t, s.Set(ctx, key, "one", 0), "Set")
		noErr(t, s.Set(ctx, key, map[string]int{"two": 2}, 0), "Set again")
		if got := get(t, s, key); !jsonEqual(t, got, []byte(`{"two":2}`)) {
			t.Fatalf("Get = %s after overwrite", got)
		}
	}},
	{"SetTTLExpires", func(t *testing.T, s upstash.StateAdapter) {
		decisive(t, func(ttl time.Duration) bool {
			key := uid(t, "ttl")
			start := time.Now()
			noErr(t, s.Set(ctxFor(t), key, "soon gone", ttl), "Set")
			set := time.Now() // the value expires by set + ttl
			got := get(t, s, key)
			if !inTime(start, time.Now(), ttl) {
				return false
			}
			if got == nil {
				t.Fatal("Get = nil right after Set with a TTL")
			}
			time.Sleep(time.Until(set.Add(ttl + settle)))
			if got := get(t, s, key); got != nil {
				t.Fatalf("Get = %s after the TTL passed, want nil", got)
			}
			return true
		})
	}},
	{"SetWithoutTTLClearsTTL", func(t *testing.T, s upstash.StateAdapter) {
		ctx := ctxFor(t)
		key := uid(t, "ttl-clear")
		noErr(t, s.Set(ctx, key, 1, shortTTL), "Set with TTL")
		noErr(t, s.Set(ctx, key, 2, 0), "Set without TTL")
		time.Sleep(shortTTL + settle)
		if got := get(t, s, key); string(got) != "2" {
			t.Fatalf("Get = %q, want 2: a Set with ttl 0 must clear the earlier TTL", got)
		}
	}},
	{"SetIfNotExists", func(t *testing.T, s upstash.StateAdapter) {
		ctx := ctxFor(t)
		key := uid(t, "nx")
		ok, err := s.SetIfNotExists(ctx, key, "first", 0)
		noErr(t, err, "SetIfNotExists")
		if !ok {
			t.Fatal("SetIfNotExists on a fresh key = false")
		}
		ok, err = s.SetIfNotExists(ctx, key, "second", 0)
		noErr(t, err, "SetIfNotExists again")
		if ok {
			t.Fatal("SetIfNotExists on an existing key = true")
		}
		if got := get(t, s, key); string(got) != `"first"` {
			t.Fatalf("Get = %s, want \"first\": SetIfNotExists overwrote", got)
		}
		noErr(t, s.Delete(ctx, key), "Delete")
		ok, err = s.SetIfNotExists(ctx, key, "third", longTTL)
		noErr(t, err, "SetIfNotExists after Delete")
		if !ok {
			t.Fatal("SetIfNotExists after Delete = false")
		}
	}},
	{"SetIfNotExistsAfterExpiry", func(t *testing.T, s upstash.StateAdapter) {
		ctx := ctxFor(t)
		decisive(t, func(ttl time.Duration) bool {
			key := uid(t, "nx-ttl")
			start := time.Now()
			ok, err := s.SetIfNotExists(ctx, key, true, ttl)
			noErr(t, err, "SetIfNotExists")
			set := time.Now() // the key expires by set + ttl
			if !ok {
				t.Fatal("SetIfNotExists on a fresh key = false")
			}
			ok, err = s.SetIfNotExists(ctx, key, true, ttl)
			noErr(t, err, "SetIfNotExists again")
			if !inTime(start, time.Now(), ttl) {
				return false
			}
			if ok {
				t.Fatal("SetIfNotExists before expiry = true")
			}
			time.Sleep(time.Until(set.Add(ttl + settle)))
			ok, err = s.SetIfNotExists(ctx, key, true, ttl)
			noErr(t, err, "SetIfNotExists after expiry")
			if !ok {
				t.Fatal("SetIfNotExists after the TTL passed = false, want true")
			}
			return true
		})
	}},
	{"ConcurrentSetIfNotExists", func(t *testing.T, s upstash.StateAdapter) {
		ctx := ctxFor(t)
		key := uid(t, "nx-conc")
		var mu sync.Mutex
		var winners []int
		parallel(20, func(i int) {
			ok, err := s.SetIfNotExists(ctx, key, i, longTTL)
			if err != nil {
				t.Errorf("SetIfNotExists %d: %v", i, err)
				return
			}
			if ok {
				mu.Lock()
				winners = append(winners, i)
				mu.Unlock()
			}
		})
		if len(winners) != 1 {
			t.Fatalf("%d callers wrote, want exactly 1", len(winners))
		}
		if got := get(t, s, key); string(got) != string(mustJSON(t, winners[0])) {
			t.Fatalf("stored %s, want the winner's %d", got, winners[0])
		}
	}},
	{"Delete", func(t *testing.T, s upstash.StateAdapter) {
		ctx := ctxFor(t)
		key := uid(t, "del")
		noErr(t, s.Set(ctx, key, "x", 0), "Set")
		noErr(t, s.Delete(ctx, key), "Delete")
		if got := get(t, s, key); got != nil {
			t.Fatalf("Get after Delete = %s", got)
		}
		noErr(t, s.Delete(ctx, key), "Delete of a missing key")
	}},
	{"OddKeys", func(t *testing.T, s upstash.StateAdapter) {
		ctx := ctxFor(t)
		base := uid(t, "odd")
		keys := []string{base + " a b", base + ":dedupe:slack:1712.0001", base + ":日本語", base + ":*"}
		for i, k := range keys {
			noErr(t, s.Set(ctx, k, i, 0), "Set")
		}
		for i, k := range keys {
			if got := get(t, s, k); string(got) != string(mustJSON(t, i)) {
				t.Errorf("Get(%q) = %s, want %d", k, got, i)
			}
		}
	}},
	{"CacheAndListsAreSeparate", func(t *testing.T, s upstash.StateAdapter) {
		ctx := ctxFor(t)
		key := uid(t, "ns")
		noErr(t, s.Set(ctx, key, "cache", 0), "Set")
		if items := getList(t, s, key); len(items) != 0 {
			t.Fatalf("GetList of a cache key = %s, want []", items)
		}
		noErr(t, s.AppendToList(ctx, key, "list", upstash.ListOptions{}), "AppendToList")
		if got := get(t, s, key); string(got) != `"cache"` {
			t.Fatalf("Get after AppendToList of the same key = %s", got)
		}
		if items := listStrings(t, getList(t, s, key)); !reflect.DeepEqual(items, []string{"list"}) {
			t.Fatalf("GetList = %q", items)
		}
	}},
	{"LargeValue", func(t *testing.T, s upstash.StateAdapter) {
		ctx := ctxFor(t)
		key := uid(t, "big")
		big := strings.Repeat("0123456789abcdef", 1<<16) // 1 MiB
		noErr(t, s.Set(ctx, key, big, longTTL), "Set of 1 MiB")
		var got string
		if err := json.Unmarshal(get(t, s, key), &got); err != nil || got != big {
			t.Fatalf("1 MiB value did not round-trip (err %v, %d bytes back)", err, len(got))
		}
	}},
}

// ---- lists ----

var listTests = []test{
	{"MissingIsEmpty", func(t *testing.T, s upstash.StateAdapter) {
		if items := getList(t, s, uid(t, "list-missing")); len(items) != 0 {
			t.Fatalf("GetList of a missing key = %s", items)
		}
	}},
	{"AppendInOrder", func(t *testing.T, s upstash.StateAdapter) {
		ctx := ctxFor(t)
		key := uid(t, "list")
		values := []any{"a", map[string]int{"b": 2}, nil, true, 3.5}
		for _, v := range values {
			noErr(t, s.AppendToList(ctx, key, v, upstash.ListOptions{}), "AppendToList")
		}
		items := getList(t, s, key)
		if len(items) != len(values) {
			t.Fatalf("GetList = %d items, want %d", len(items), len(values))
		}
		for i, v := range values {
			if !jsonEqual(t, items[i], mustJSON(t, v)) {
				t.Errorf("item %d = %s, want %s", i, items[i], mustJSON(t, v))
			}
		}
	}},
	{"MaxLengthKeepsNewest", func(t *testing.T, s upstash.StateAdapter) {
		ctx := ctxFor(t)
		key := uid(t, "list")
		for _, v := range []string{"1", "2", "3", "4", "5"} {
			noErr(t, s.AppendToList(ctx, key, v, upstash.ListOptions{MaxLength: 3}), "AppendToList")
		}
		if got := listStrings(t, getList(t, s, key)); !reflect.DeepEqual(got, []string{"3", "4", "5"}) {
			t.Fatalf("GetList = %q, want [3 4 5]", got)
		}
		// maxLength 1 wipes the history but the new item (the SDK's tombstone).
		noErr(t, s.AppendToList(ctx, key, "tomb", upstash.ListOptions{MaxLength: 1}), "AppendToList")
		if got := listStrings(t, getList(t, s, key)); !reflect.DeepEqual(got, []string{"tomb"}) {
			t.Fatalf("GetList = %q, want [tomb]", got)
		}
		// MaxLength 0 does not trim.
		noErr(t, s.AppendToList(ctx, key, "more", upstash.ListOptions{}), "AppendToList")
		if got := listStrings(t, getList(t, s, key)); !reflect.DeepEqual(got, []string{"tomb", "more"}) {
			t.Fatalf("GetList = %q, want [tomb more]", got)
		}
	}},
	{"TTLExpires", func(t *testing.T, s upstash.StateAdapter) {
		ctx := ctxFor(t)
		decisive(t, func(shortest time.Duration) bool {
			ttl := 2 * shortest
			key := uid(t, "list-ttl")
			start := time.Now()
			noErr(t, s.AppendToList(ctx, key, "x", upstash.ListOptions{TTL: ttl}), "AppendToList")
			firstDone := time.Now() // the TTL runs out by firstDone + ttl
			// TTL 0 keeps the list's TTL.
			noErr(t, s.AppendToList(ctx, key, "y", upstash.ListOptions{}), "AppendToList")
			n := len(getList(t, s, key))
			if !inTime(start, time.Now(), ttl) {
				return false // the second append may have made a new list
			}
			if n != 2 {
				t.Fatalf("GetList has %d items before the TTL, want 2", n)
			}
			time.Sleep(time.Until(firstDone.Add(ttl + settle)))
			if items := getList(t, s, key); len(items) != 0 {
				t.Fatalf("GetList after the TTL = %s, want [] (an append without TTL must keep the list's TTL)", items)
			}
			return true
		})
	}},
	{"TTLRefreshedOnAppend", func(t *testing.T, s upstash.StateAdapter) {
		ctx := ctxFor(t)
		decisive(t, func(shortest time.Duration) bool {
			ttl := 2 * shortest
			key := uid(t, "list-refresh")
			t0 := time.Now() // the first TTL runs out after t0 + ttl
			noErr(t, s.AppendToList(ctx, key, "a", upstash.ListOptions{TTL: ttl}), "AppendToList")
			firstDone := time.Now() // … and by firstDone + ttl
			time.Sleep(ttl / 2)
			second := time.Now() // the refreshed TTL runs out after second + ttl
			noErr(t, s.AppendToList(ctx, key, "b", upstash.ListOptions{TTL: ttl}), "AppendToList")
			secondDone := time.Now() // … and by secondDone + ttl
			if !inTime(t0, secondDone, ttl) {
				return false // the first TTL may have run out before the second append
			}
			time.Sleep(time.Until(firstDone.Add(ttl + settle))) // past the first TTL
			n := len(getList(t, s, key))
			if !inTime(second, time.Now(), ttl) {
				return false
			}
			if n != 2 {
				t.Fatalf("GetList has %d items after the first TTL, want 2: the append must refresh the TTL", n)
			}
			time.Sleep(time.Until(secondDone.Add(ttl + settle)))
			if items := getList(t, s, key); len(items) != 0 {
				t.Fatalf("GetList after the refreshed TTL = %s, want []", items)
			}
			return true
		})
	}},
	{"ConcurrentAppend", func(t *testing.T, s upstash.StateAdapter) {
		ctx := ctxFor(t)
		key := uid(t, "list-conc")
		parallel(20, func(i int) {
			if err := s.AppendToList(ctx, key, i, upstash.ListOptions{TTL: longTTL}); err != nil {
				t.Errorf("AppendToList %d: %v", i, err)
			}
		})
		items := getList(t, s, key)
		seen := map[string]bool{}
		for _, it := range items {
			seen[string(it)] = true
		}
		if len(items) != 20 || len(seen) != 20 {
			t.Fatalf("GetList = %d items (%d distinct), want 20", len(items), len(seen))
		}
	}},
}

// ---- queues ----

var queueTests = []test{
	{"EmptyQueue", func(t *testing.T, s upstash.StateAdapter) {
		id := uid(t, "queue")
		if e := dequeue(t, s, id); e != nil {
			t.Fatalf("Dequeue of an empty queue = %+v", *e)
		}
		if n := depth(t, s, id); n != 0 {
			t.Fatalf("QueueDepth = %d", n)
		}
	}},
	{"FIFO", func(t *testing.T, s upstash.StateAdapter) {
		ctx := ctxFor(t)
		id := uid(t, "queue")
		var sent []upstash.QueueEntry
		for i := 1; i <= 3; i++ {
			e := entry(t, map[string]any{"text": "m", "n": i}, longTTL)
			sent = append(sent, e)
			n, err := s.Enqueue(ctx, id, e, 0)
			noErr(t, err, "Enqueue")
			if n != i {
				t.Fatalf("Enqueue %d returned depth %d", i, n)
			}
		}
		if n := depth(t, s, id); n != 3 {
			t.Fatalf("QueueDepth = %d, want 3", n)
		}
		for i, want := range sent {
			got := dequeue(t, s, id)
			if got == nil {
				t.Fatalf("Dequeue %d = nil", i)
			}
			if !jsonEqual(t, got.Message, want.Message) {
				t.Errorf("entry %d message = %s, want %s", i, got.Message, want.Message)
			}
			if got.EnqueuedAt.UnixMilli() != want.EnqueuedAt.UnixMilli() || got.ExpiresAt.UnixMilli() != want.ExpiresAt.UnixMilli() {
				t.Errorf("entry %d times = %v/%v, want %v/%v (to the ms)", i, got.EnqueuedAt, got.ExpiresAt, want.EnqueuedAt, want.ExpiresAt)
			}
		}
		if e := dequeue(t, s, id); e != nil {
			t.Fatalf("Dequeue after draining = %+v", *e)
		}
		if n := depth(t, s, id); n != 0 {
			t.Fatalf("QueueDepth after draining = %d", n)
		}
	}},
	{"MaxSizeKeepsNewest", func(t *testing.T, s upstash.StateAdapter) {
		ctx := ctxFor(t)
		id := uid(t, "queue")
		for i := 1; i <= 5; i++ {
			n, err := s.Enqueue(ctx, id, entry(t, i, longTTL), 3)
			noErr(t, err, "Enqueue")
			if want := min(i, 3); n != want {
				t.Fatalf("Enqueue %d returned depth %d, want %d", i, n, want)
			}
		}
		for _, want := range []string{"3", "4", "5"} {
			e := dequeue(t, s, id)
			if e == nil || string(e.Message) != want {
				t.Fatalf("Dequeue = %+v, want message %s", e, want)
			}
		}
	}},
	{"ExpiredEntriesSkipped", func(t *testing.T, s upstash.StateAdapter) {
		ctx := ctxFor(t)
		id := uid(t, "queue")
		for _, e := range []upstash.QueueEntry{entry(t, "old1", shortTTL), entry(t, "old2", shortTTL), entry(t, "live", longTTL), entry(t, "old3", shortTTL)} {
			_, err := s.Enqueue(ctx, id, e, 0)
			noErr(t, err, "Enqueue")
		}
		time.Sleep(shortTTL + settle)
		if n := depth(t, s, id); n != 4 {
			t.Fatalf("QueueDepth = %d, want 4: expired entries still count until dequeued", n)
		}
		e := dequeue(t, s, id)
		if e == nil || string(e.Message) != `"live"` {
			t.Fatalf("Dequeue = %+v, want the live entry", e)
		}
		if n := depth(t, s, id); n != 1 {
			t.Fatalf("QueueDepth = %d, want 1 (the expired entry behind the live one)", n)
		}
		if e := dequeue(t, s, id); e != nil {
			t.Fatalf("Dequeue = %+v, want nil: only an expired entry was left", *e)
		}
		if n := depth(t, s, id); n != 0 {
			t.Fatalf("QueueDepth = %d, want 0", n)
		}
	}},
	{"QueueOutlivesEntryTTL", func(t *testing.T, s upstash.StateAdapter) {
		// The queue's own TTL has a 60 s floor, so a short-lived entry
		// leaves a queue that is still there (with the entry counted) later.
		ctx := ctxFor(t)
		id := uid(t, "queue")
		_, err := s.Enqueue(ctx, id, entry(t, "x", shortTTL), 0)
		noErr(t, err, "Enqueue")
		time.Sleep(shortTTL + settle)
		if n := depth(t, s, id); n != 1 {
			t.Fatalf("QueueDepth = %d, want 1", n)
		}
	}},
	{"ConcurrentEnqueue", func(t *testing.T, s upstash.StateAdapter) {
		ctx := ctxFor(t)
		id := uid(t, "queue")
		var mu sync.Mutex
		depths := map[int]bool{}
		entries := make([]upstash.QueueEntry, 20)
		for i := range entries {
			entries[i] = entry(t, i, longTTL)
		}
		parallel(20, func(i int) {
			n, err := s.Enqueue(ctx, id, entries[i], 0)
			if err != nil {
				t.Errorf("Enqueue %d: %v", i, err)
				return
			}
			mu.Lock()
			depths[n] = true
			mu.Unlock()
		})
		if n := depth(t, s, id); n != 20 {
			t.Fatalf("QueueDepth = %d, want 20", n)
		}
		for i := 1; i <= 20; i++ {
			if !depths[i] {
				t.Errorf("no Enqueue returned depth %d; each depth 1..20 should be seen once", i)
			}
		}
		// 20 concurrent dequeues hand out each entry exactly once.
		var got []string
		parallel(20, func(i int) {
			e, err := s.Dequeue(ctx, id)
			if err != nil || e == nil {
				t.Errorf("Dequeue %d = %v, %v", i, e, err)
				return
			}
			mu.Lock()
			got = append(got, string(e.Message))
			mu.Unlock()
		})
		seen := map[string]bool{}
		for _, m := range got {
			seen[m] = true
		}
		if len(got) != 20 || len(seen) != 20 {
			t.Fatalf("20 dequeues gave %d entries, %d distinct", len(got), len(seen))
		}
	}},
	{"ConcurrentEnqueueMaxSize", func(t *testing.T, s upstash.StateAdapter) {
		ctx := ctxFor(t)
		id := uid(t, "queue")
		entries := make([]upstash.QueueEntry, 20)
		for i := range entries {
			entries[i] = entry(t, i, longTTL)
		}
		parallel(20, func(i int) {
			n, err := s.Enqueue(ctx, id, entries[i], 5)
			if err != nil {
				t.Errorf("Enqueue %d: %v", i, err)
				return
			}
			if n < 1 || n > 5 {
				t.Errorf("Enqueue %d returned depth %d, want 1..5", i, n)
			}
		})
		if n := depth(t, s, id); n != 5 {
			t.Fatalf("QueueDepth = %d, want 5", n)
		}
	}},
}

// ---- invalid input ----

type badValue struct {
	Name string `json:"name"`
	Bad  string `json:"bad"`
}

var invalidInputTests = []test{
	{"EmptyIDs", func(t *testing.T, s upstash.StateAdapter) {
		ctx := ctxFor(t)
		e := entry(t, "x", longTTL)
		calls := map[string]func() error{
			"Subscribe":        func() error { return s.Subscribe(ctx, "") },
			"Unsubscribe":      func() error { return s.Unsubscribe(ctx, "") },
			"IsSubscribed":     func() error { _, err := s.IsSubscribed(ctx, ""); return err },
			"AcquireLock":      func() error { _, err := s.AcquireLock(ctx, "", longTTL); return err },
			"ForceReleaseLock": func() error { return s.ForceReleaseLock(ctx, "") },
			"Get":              func() error { _, err := s.Get(ctx, ""); return err },
			"Set":              func() error { return s.Set(ctx, "", 1, 0) },
			"SetIfNotExists":   func() error { _, err := s.SetIfNotExists(ctx, "", 1, 0); return err },
			"Delete":           func() error { return s.Delete(ctx, "") },
			"AppendToList":     func() error { return s.AppendToList(ctx, "", 1, upstash.ListOptions{}) },
			"GetList":          func() error { _, err := s.GetList(ctx, ""); return err },
			"Enqueue":          func() error { _, err := s.Enqueue(ctx, "", e, 0); return err },
			"Dequeue":          func() error { _, err := s.Dequeue(ctx, ""); return err },
			"QueueDepth":       func() error { _, err := s.QueueDepth(ctx, ""); return err },
		}
		for name, call := range calls {
			if err := call(); !errors.Is(err, upstash.ErrInvalidArgument) {
				t.Errorf("%s with an empty id: error = %v, want ErrInvalidArgument", name, err)
			}
		}
	}},
	{"BadLocks", func(t *testing.T, s upstash.StateAdapter) {
		ctx := ctxFor(t)
		id := uid(t, "badlock")
		for name, lock := range map[string]*upstash.Lock{
			"nil":          nil,
			"empty token":  {ThreadID: id},
			"empty thread": {Token: "t"},
		} {
			wantErrIs(t, s.ReleaseLock(ctx, lock), upstash.ErrInvalidArgument, "ReleaseLock("+name+")")
			_, err := s.ExtendLock(ctx, lock, longTTL)
			wantErrIs(t, err, upstash.ErrInvalidArgument, "ExtendLock("+name+")")
		}
	}},
	{"NonPositiveLockTTL", func(t *testing.T, s upstash.StateAdapter) {
		ctx := ctxFor(t)
		id := uid(t, "lockttl")
		for _, ttl := range []time.Duration{0, -time.Second} {
			lock, err := s.AcquireLock(ctx, id, ttl)
			wantErrIs(t, err, upstash.ErrInvalidArgument, "AcquireLock with ttl "+ttl.String())
			if lock != nil {
				t.Fatalf("AcquireLock with ttl %v returned a lock", ttl)
			}
		}
		lock := acquire(t, s, id, longTTL)
		for _, ttl := range []time.Duration{0, -time.Second} {
			ok, err := s.ExtendLock(ctx, lock, ttl)
			wantErrIs(t, err, upstash.ErrInvalidArgument, "ExtendLock with ttl "+ttl.String())
			if ok {
				t.Fatalf("ExtendLock with ttl %v = true", ttl)
			}
		}
		wantBusy(t, s, id) // the refused extend did not delete the lock
	}},
	{"NegativeTTLsAndSizes", func(t *testing.T, s upstash.StateAdapter) {
		ctx := ctxFor(t)
		key := uid(t, "neg")
		wantErrIs(t, s.Set(ctx, key, 1, -time.Second), upstash.ErrInvalidArgument, "Set with a negative TTL")
		_, err := s.SetIfNotExists(ctx, key, 1, -time.Second)
		wantErrIs(t, err, upstash.ErrInvalidArgument, "SetIfNotExists with a negative TTL")
		wantErrIs(t, s.AppendToList(ctx, key, 1, upstash.ListOptions{MaxLength: -1}), upstash.ErrInvalidArgument, "AppendToList with MaxLength -1")
		wantErrIs(t, s.AppendToList(ctx, key, 1, upstash.ListOptions{TTL: -time.Second}), upstash.ErrInvalidArgument, "AppendToList with a negative TTL")
		_, err = s.Enqueue(ctx, key, entry(t, 1, longTTL), -1)
		wantErrIs(t, err, upstash.ErrInvalidArgument, "Enqueue with maxSize -1")
		if got := get(t, s, key); got != nil {
			t.Errorf("a refused Set stored %s", got)
		}
		if items := getList(t, s, key); len(items) != 0 {
			t.Errorf("a refused AppendToList stored %s", items)
		}
		if n := depth(t, s, key); n != 0 {
			t.Errorf("a refused Enqueue left depth %d", n)
		}
	}},
	{"BadEntries", func(t *testing.T, s upstash.StateAdapter) {
		ctx := ctxFor(t)
		id := uid(t, "badentry")
		good := entry(t, "x", longTTL)
		for name, e := range map[string]upstash.QueueEntry{
			"empty message":   {ExpiresAt: good.ExpiresAt},
			"invalid message": {Message: json.RawMessage(`{nope`), ExpiresAt: good.ExpiresAt},
			"no ExpiresAt":    {Message: good.Message},
		} {
			_, err := s.Enqueue(ctx, id, e, 0)
			wantErrIs(t, err, upstash.ErrInvalidArgument, "Enqueue("+name+")")
		}
		if n := depth(t, s, id); n != 0 {
			t.Errorf("refused entries left depth %d", n)
		}
	}},
	{"UnencodableValues", func(t *testing.T, s upstash.StateAdapter) {
		ctx := ctxFor(t)
		key := uid(t, "unenc")
		noErr(t, s.Set(ctx, key, "before", 0), "Set")
		values := map[string]any{
			"NaN":                      math.NaN(),
			"+Inf":                     math.Inf(1),
			"-Inf in a map":            map[string]float64{"x": math.Inf(-1)},
			"channel":                  make(chan int),
			"func":                     func() {},
			"invalid UTF-8":            "bad \xff byte",
			"invalid UTF-8 in struct":  badValue{Name: "ok", Bad: "\xc3\x28"},
			"invalid UTF-8 in slice":   []any{"fine", []string{"\xed\xa0\x80"}},
			"invalid UTF-8 map key":    map[string]int{"k\xfe": 1},
			"invalid json.RawMessage":  json.RawMessage(`{"a":`),
			"invalid UTF-8 RawMessage": json.RawMessage("\"\xff\""),
		}
		for name, v := range values {
			wantErrIs(t, s.Set(ctx, key, v, 0), upstash.ErrInvalidArgument, "Set("+name+")")
			_, err := s.SetIfNotExists(ctx, key+name, v, 0)
			wantErrIs(t, err, upstash.ErrInvalidArgument, "SetIfNotExists("+name+")")
			wantErrIs(t, s.AppendToList(ctx, key, v, upstash.ListOptions{}), upstash.ErrInvalidArgument, "AppendToList("+name+")")
			_, err = upstash.NewQueueEntry(v, longTTL)
			wantErrIs(t, err, upstash.ErrInvalidArgument, "NewQueueEntry("+name+")")
		}
		if got := get(t, s, key); string(got) != `"before"` {
			t.Errorf("refused Sets changed the value to %s", got)
		}
		if items := getList(t, s, key); len(items) != 0 {
			t.Errorf("refused appends stored %s", items)
		}
		// A real U+FFFD is valid UTF-8 and is stored as it is.
		noErr(t, s.Set(ctx, key, "ok \uFFFD", 0), "Set of U+FFFD")
		var back string
		if err := json.Unmarshal(get(t, s, key), &back); err != nil || back != "ok \uFFFD" {
			t.Errorf("U+FFFD round trip = %q, %v", back, err)
		}
	}},
}
