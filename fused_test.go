package upstash_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chatstate/upstash"
	"github.com/chatstate/upstash/statetest"
	"github.com/chatstate/upstash/upstashtest"
)

// Tests of the fused operations Admit and Finish (fused.go, admit.lua,
// finish.lua): every outcome, the bytes they write compared with the
// single operations', the stranded-message race (vercel/chat#928), and
// their operation ids under faults.

// ---- helpers ----

// farFuture is an expiresAt no test reaches.
const farFuture = 99999999999999

// scriptTTLEarly is how much earlier than on Redis a TTL set inside a
// script can run out on upstashtest's embedded backend (its package doc:
// the clock may lag the wall clock by up to 5 ms when the request's own
// commands do not read or set a TTL, as EVALSHA's do not).
const scriptTTLEarly = 5 * time.Millisecond

// entryJSON is a queue entry as Go and JSON.stringify write it.
func entryJSON(msg string, expiresAt int64) string {
	return `{"message":` + strconv.Quote(msg) + `,"enqueuedAt":1,"expiresAt":` + itoa(expiresAt) + `}`
}

// liveEntry is a queue entry with the message msg that expires in an hour.
func liveEntry(t *testing.T, msg string) *upstash.QueueEntry {
	t.Helper()
	e := mustEntry(t, msg)
	return &e
}

func admit(t *testing.T, s *upstash.State, req upstash.AdmitRequest) upstash.AdmitResult {
	t.Helper()
	res, err := s.Admit(ctxT(t), req)
	must(t, err)
	return res
}

func finish(t *testing.T, s *upstash.State, req upstash.FinishRequest) upstash.FinishResult {
	t.Helper()
	res, err := s.Finish(ctxT(t), req)
	must(t, err)
	return res
}

// holderReq is the Admit of message id on thread "t": dedupe, subscription
// check, lock (or queue the message) and a read of the thread's state.
func holderReq(t *testing.T, id string) upstash.AdmitRequest {
	return upstash.AdmitRequest{
		DedupeKey:         "dedupe:slack:" + id,
		DedupeTTL:         10 * time.Minute,
		CheckSubscription: "t",
		ThreadID:          "t",
		LockTTL:           30 * time.Second,
		Entry:             liveEntry(t, id),
		MaxQueue:          10,
		Read:              []string{"thread-state:t"},
	}
}

func queueItems(t *testing.T, c *upstash.Client, id string) []string {
	t.Helper()
	return rawStrings(t, c, "LRANGE", "chat-sdk:queue:"+id, 0, -1)
}

func exists(t *testing.T, c *upstash.Client, key string) bool {
	t.Helper()
	return rawInt(t, c, "EXISTS", key) == 1
}

// ---- conformance ----

func TestFusedConformance(t *testing.T) {
	env := newStateEnv(t)
	statetest.RunFused(t, func(*testing.T) upstash.FusedAdapter { return env.state })
}

func TestFusedConformanceUpstash(t *testing.T) {
	url, token := os.Getenv(upstash.EnvURL), os.Getenv(upstash.EnvToken)
	if url == "" || token == "" {
		t.Skipf("set %s and %s to run the fused suite against a real Upstash database", upstash.EnvURL, upstash.EnvToken)
	}
	c, err := upstash.New(upstash.Config{URL: url, Token: token})
	must(t, err)
	prefix := "statetest-" + randomHex(t, 6)
	t.Logf("key prefix %s", prefix)
	t.Cleanup(func() { deleteByPrefix(t, c, prefix) })
	s := upstash.NewState(c, upstash.WithKeyPrefix(prefix))
	statetest.RunFused(t, func(*testing.T) upstash.FusedAdapter { return s })
}

// TestFusedConformanceFaults runs the fused suite with 15% of the requests
// failing (503, reset, reply dropped, latency) on a server of its own.
func TestFusedConformanceFaults(t *testing.T) {
	srv := upstashtest.NewServer(t, upstashtest.WithSeed(12))
	c := clientOf(t, srv.URL, srv.Token, upstash.WithRetry(upstash.RetryPolicy{MaxRetries: 10, MinBackoff: time.Millisecond, MaxBackoff: 20 * time.Millisecond}))
	s := upstash.NewState(c)
	statetest.RunFusedFaults(t, srv, func(*testing.T) upstash.FusedAdapter { return s })
}

// ---- Admit ----

func TestAdmitAcquires(t *testing.T) {
	env := newStateEnv(t)
	c, s := env.client, env.state
	mustDo(t, c, "SET", "chat-sdk:cache:thread-state:t", `{"count":2}`)
	mustDo(t, c, "SET", "chat-sdk:cache:null", `null`)
	mustDo(t, c, "RPUSH", "chat-sdk:queue:t", entryJSON("waiting", farFuture))
	req := holderReq(t, "m1")
	req.Read = []string{"thread-state:t", "missing", "null"}
	res := admit(t, s, req)
	if res.Duplicate || res.Busy || res.Queued || res.Subscribed || res.TookOver || res.InDoubtLock != nil || res.ReadErr != nil {
		t.Errorf("Admit of a new message on a free thread = %+v", res)
	}
	if res.Lock == nil {
		t.Fatal("Admit took no lock")
	}
	l := res.Lock
	if l.ThreadID != "t" || !regexp.MustCompile(`^go_[0-9a-f]{32}$`).MatchString(l.Token) || l.Fence <= 0 {
		t.Errorf("lock = %+v", l)
	}
	if got := rawString(t, c, "GET", "chat-sdk:lock:t"); got != l.Token {
		t.Errorf("lock key holds %q, want the token", got)
	}
	if got := rawString(t, c, "GET", "chat-sdk:fence:t"); got != itoa(l.Fence) {
		t.Errorf("fence key holds %s, want %d", got, l.Fence)
	}
	wantTTLBetween(t, c, "chat-sdk:lock:t", 29*time.Second, 30*time.Second)
	wantTTLBetween(t, c, "chat-sdk:fence:t", 29*time.Second, 30*time.Second)
	if left := pttl(t, c, "chat-sdk:lock:t"); l.ExpiresAt.After(time.Now().Add(left).Add(time.Millisecond + scriptTTLEarly)) {
		t.Errorf("ExpiresAt %v is after the server's expiry", l.ExpiresAt)
	}
	if res.QueueDepth != 1 {
		t.Errorf("QueueDepth = %d, want 1 (the entry already waiting)", res.QueueDepth)
	}
	if len(res.Values) != 3 || string(res.Values[0]) != `{"count":2}` || res.Values[1] != nil || string(res.Values[2]) != "null" {
		t.Errorf("Values = %q, want the state, nil for a missing key, null for a stored null", res.Values)
	}
	if got := rawString(t, c, "GET", "chat-sdk:cache:dedupe:slack:m1"); got != "true" {
		t.Errorf("dedupe marker = %s, want true", got)
	}
	wantTTLBetween(t, c, "chat-sdk:cache:dedupe:slack:m1", 9*time.Minute, 10*time.Minute)
	if items := queueItems(t, c, "t"); len(items) != 1 {
		t.Errorf("queue = %q: the holder's message must not be queued", items)
	}
	// The lock is an ordinary lock: other operations see it.
	if isHeld(t, s, "t") != true {
		t.Error("AcquireLock finds the lock free")
	}
	ok, err := s.ExtendLock(ctxT(t), l, time.Minute)
	if err != nil || !ok {
		t.Errorf("ExtendLock of Admit's lock = %v, %v", ok, err)
	}
	must(t, s.Unlock(ctxT(t), l))

	// A missing key last in Read (a Lua table ending in false).
	res1 := admit(t, s, upstash.AdmitRequest{ThreadID: "u", LockTTL: time.Minute, Read: []string{"thread-state:t", "missing"}})
	if len(res1.Values) != 2 || res1.Values[0] == nil || res1.Values[1] != nil {
		t.Errorf("Values = %q, want the state and nil", res1.Values)
	}

	// Subscribed, and a fence larger than the last one.
	mustDo(t, c, "SADD", "chat-sdk:subscriptions", "t")
	res2 := admit(t, s, holderReq(t, "m2"))
	if !res2.Subscribed || res2.Lock == nil || res2.Lock.Fence <= l.Fence {
		t.Errorf("second Admit = %+v (lock %+v), want subscribed and a larger fence", res2, res2.Lock)
	}
}

func TestAdmitDuplicate(t *testing.T) {
	env := newStateEnv(t)
	c, s := env.client, env.state
	mustDo(t, c, "SADD", "chat-sdk:subscriptions", "t")
	first := admit(t, s, holderReq(t, "m1"))
	if first.Lock == nil {
		t.Fatal("first Admit took no lock")
	}
	must(t, s.ReleaseLock(ctxT(t), first.Lock))
	res := admit(t, s, holderReq(t, "m1"))
	if !res.Duplicate || res.Lock != nil || res.Busy || res.Queued || res.Subscribed || res.Values != nil || res.QueueDepth != 0 {
		t.Errorf("Admit of a duplicate = %+v, want Duplicate and nothing else", res)
	}
	if exists(t, c, "chat-sdk:lock:t") {
		t.Error("a duplicate took the lock")
	}
	// Busy lock: a duplicate is not queued either.
	holder := mustAcquire(t, s, "t", time.Minute)
	res = admit(t, s, holderReq(t, "m1"))
	if !res.Duplicate || res.Busy || res.Queued {
		t.Errorf("Admit of a duplicate on a busy thread = %+v", res)
	}
	if n := rawInt(t, c, "LLEN", "chat-sdk:queue:t"); n != 0 {
		t.Errorf("a duplicate was queued: LLEN = %d", n)
	}
	if got := rawString(t, c, "GET", "chat-sdk:lock:t"); got != holder.Token {
		t.Error("a duplicate touched the holder's lock")
	}
	// A dedupe marker written by TypeScript counts.
	mustDo(t, c, "SET", "chat-sdk:cache:dedupe:slack:ts", "true", "PX", 600000)
	if res := admit(t, s, holderReq(t, "ts")); !res.Duplicate {
		t.Errorf("Admit after a TypeScript dedupe marker = %+v", res)
	}
}

func TestAdmitBusy(t *testing.T) {
	env := newStateEnv(t)
	c, s := env.client, env.state
	holder := mustAcquire(t, s, "t", time.Minute)
	mustDo(t, c, "SET", "chat-sdk:cache:thread-state:t", `{"count":2}`)

	req := holderReq(t, "m1")
	res := admit(t, s, req)
	if !res.Busy || !res.Queued || res.Lock != nil || res.Duplicate || res.QueueDepth != 1 || res.Values != nil {
		t.Errorf("Admit on a busy thread = %+v, want busy, queued at depth 1, nothing read", res)
	}
	want, err := req.Entry.MarshalJSON()
	must(t, err)
	if items := queueItems(t, c, "t"); len(items) != 1 || items[0] != string(want) {
		t.Errorf("queue = %q, want [%s]", items, want)
	}
	wantTTLBetween(t, c, "chat-sdk:queue:t", 59*time.Minute, time.Hour)
	if got := rawString(t, c, "GET", "chat-sdk:lock:t"); got != holder.Token {
		t.Error("the holder's lock changed")
	}

	// Busy without an entry (drop strategy): nothing queued.
	req = holderReq(t, "m2")
	req.Entry = nil
	res = admit(t, s, req)
	if !res.Busy || res.Queued || res.QueueDepth != 1 {
		t.Errorf("Admit without an entry on a busy thread = %+v", res)
	}

	// The cap: drop-oldest trims like Enqueue; drop-newest leaves the
	// entry out.
	for i, id := range []string{"m3", "m4"} {
		req = holderReq(t, id)
		req.MaxQueue = 2
		res = admit(t, s, req)
		if !res.Queued || res.QueueDepth != 2 {
			t.Errorf("Admit %d with MaxQueue 2 = %+v, want queued at depth 2", i, res)
		}
	}
	items := queueItems(t, c, "t")
	if len(items) != 2 || !strings.Contains(items[0], `"m3"`) || !strings.Contains(items[1], `"m4"`) {
		t.Errorf("queue after drop-oldest = %q, want m3, m4", items)
	}
	req = holderReq(t, "m5")
	req.MaxQueue, req.DropNewest = 2, true
	res = admit(t, s, req)
	if !res.Busy || res.Queued || res.QueueDepth != 2 {
		t.Errorf("Admit with DropNewest on a full queue = %+v, want busy, not queued, depth 2", res)
	}
	if got := queueItems(t, c, "t"); strings.Join(got, "") != strings.Join(items, "") {
		t.Errorf("queue after drop-newest = %q, want it unchanged", got)
	}
	req = holderReq(t, "m6")
	req.MaxQueue, req.DropNewest = 3, true
	if res = admit(t, s, req); !res.Queued || res.QueueDepth != 3 {
		t.Errorf("Admit with DropNewest below the cap = %+v, want queued at depth 3", res)
	}
	// The dedupe marker of a dropped message is kept, as in the Chat SDK.
	if !exists(t, c, "chat-sdk:cache:dedupe:slack:m5") {
		t.Error("the dropped message's dedupe marker is gone")
	}

	// The history append happens for a queued message, not for a
	// duplicate.
	req = holderReq(t, "m8")
	req.Append = []upstash.ListAppend{{Key: "msg-history:t", Value: "m8", Options: upstash.ListOptions{MaxLength: 100, TTL: time.Hour}}}
	if res = admit(t, s, req); !res.Queued {
		t.Errorf("Admit with an append = %+v, want queued", res)
	}
	if res = admit(t, s, req); !res.Duplicate {
		t.Errorf("second Admit with an append = %+v, want a duplicate", res)
	}
	if got := rawStrings(t, c, "LRANGE", "chat-sdk:list:msg-history:t", 0, -1); len(got) != 1 || got[0] != `"m8"` {
		t.Errorf("history = %q, want the queued message once", got)
	}
	wantTTLBetween(t, c, "chat-sdk:list:msg-history:t", 59*time.Minute, time.Hour)

	// A lock held by TypeScript is busy too.
	mustDo(t, c, "SET", "chat-sdk:lock:ts", "redis_1_abc", "PX", 30000)
	req = holderReq(t, "m7")
	req.ThreadID = "ts"
	if res = admit(t, s, req); !res.Busy || !res.Queued {
		t.Errorf("Admit on a TypeScript-held lock = %+v", res)
	}
}

func TestAdmitTakeOver(t *testing.T) {
	env := newStateEnv(t)
	c, s := env.client, env.state
	old := mustAcquire(t, s, "t", time.Minute)
	req := holderReq(t, "m1")
	req.TakeOver = true
	res := admit(t, s, req)
	if res.Lock == nil || !res.TookOver || res.Busy || res.Queued {
		t.Fatalf("Admit with TakeOver on a busy lock = %+v", res)
	}
	if res.Lock.Fence <= old.Fence {
		t.Errorf("fence %d after a take-over, want more than %d", res.Lock.Fence, old.Fence)
	}
	if got := rawString(t, c, "GET", "chat-sdk:lock:t"); got != res.Lock.Token {
		t.Error("the lock does not hold the new token")
	}
	if err := s.Unlock(ctxT(t), old); !errors.Is(err, upstash.ErrLockNotHeld) {
		t.Errorf("the old holder's Unlock = %v, want ErrLockNotHeld", err)
	}
	must(t, s.Unlock(ctxT(t), res.Lock))
	// On a free lock, TakeOver takes it without taking anything over.
	req = holderReq(t, "m2")
	req.TakeOver = true
	if res = admit(t, s, req); res.Lock == nil || res.TookOver {
		t.Errorf("Admit with TakeOver on a free lock = %+v", res)
	}
}

func TestAdmitWithoutLock(t *testing.T) {
	env := newStateEnv(t)
	c, s := env.client, env.state
	mustDo(t, c, "SADD", "chat-sdk:subscriptions", "t")
	mustDo(t, c, "SET", "chat-sdk:cache:thread-state:t", `{"a":1}`)
	holder := mustAcquire(t, s, "t", time.Minute) // irrelevant without a lock
	req := upstash.AdmitRequest{DedupeKey: "d1", CheckSubscription: "t", Read: []string{"thread-state:t"}}
	res := admit(t, s, req)
	if res.Duplicate || !res.Subscribed || res.Lock != nil || res.Busy || len(res.Values) != 1 || string(res.Values[0]) != `{"a":1}` {
		t.Errorf("Admit without a lock = %+v", res)
	}
	if pttl(t, c, "chat-sdk:cache:d1") != -time.Millisecond {
		t.Error("a dedupe TTL of 0 must store the marker without expiry")
	}
	if res = admit(t, s, req); !res.Duplicate {
		t.Errorf("second Admit = %+v, want a duplicate", res)
	}
	if got := rawString(t, c, "GET", "chat-sdk:lock:t"); got != holder.Token {
		t.Error("an Admit without a lock touched the lock")
	}
	// Without dedupe: reads only, every time.
	res = admit(t, s, upstash.AdmitRequest{Read: []string{"thread-state:t"}})
	if res.Duplicate || len(res.Values) != 1 {
		t.Errorf("Admit with reads only = %+v", res)
	}
	// A value of the caller's own as the marker.
	admit(t, s, upstash.AdmitRequest{DedupeKey: "d2", DedupeValue: map[string]string{"kind": "mention"}, DedupeTTL: time.Minute})
	if got := rawString(t, c, "GET", "chat-sdk:cache:d2"); got != `{"kind":"mention"}` {
		t.Errorf("dedupe value = %s", got)
	}
}

func TestAdmitCorruptRead(t *testing.T) {
	env := newStateEnv(t)
	c, s := env.client, env.state
	mustDo(t, c, "SET", "chat-sdk:cache:bad", "not json")
	mustDo(t, c, "SET", "chat-sdk:cache:good", "1")
	res, err := s.Admit(ctxT(t), upstash.AdmitRequest{ThreadID: "t", LockTTL: time.Minute, Read: []string{"bad", "good"}})
	must(t, err)
	var ce *upstash.CorruptValueError
	if !errors.As(res.ReadErr, &ce) || ce.Key != "chat-sdk:cache:bad" || string(ce.Raw) != "not json" {
		t.Errorf("ReadErr = %v, want a *CorruptValueError for the bad key", res.ReadErr)
	}
	if res.Lock == nil || res.Values[0] != nil || string(res.Values[1]) != "1" {
		t.Errorf("Admit with a corrupt value = %+v, want the lock and the good value", res)
	}
}

func TestAdmitInvalidArguments(t *testing.T) {
	env := newStateEnv(t)
	s := env.state
	bad := upstash.QueueEntry{Message: json.RawMessage(`{`), ExpiresAt: time.Now().Add(time.Minute)}
	cases := map[string]upstash.AdmitRequest{
		"no LockTTL":            {ThreadID: "t"},
		"negative LockTTL":      {ThreadID: "t", LockTTL: -time.Second},
		"negative DedupeTTL":    {DedupeKey: "d", DedupeTTL: -time.Second},
		"unencodable value":     {DedupeKey: "d", DedupeValue: make(chan int)},
		"entry without thread":  {Entry: liveEntry(t, "m")},
		"takeover no thread":    {TakeOver: true},
		"bad entry":             {ThreadID: "t", LockTTL: time.Minute, Entry: &bad},
		"entry without expiry":  {ThreadID: "t", LockTTL: time.Minute, Entry: &upstash.QueueEntry{Message: json.RawMessage(`1`)}},
		"negative MaxQueue":     {ThreadID: "t", LockTTL: time.Minute, Entry: liveEntry(t, "m"), MaxQueue: -1},
		"empty read key":        {Read: []string{""}},
		"empty append key":      {Append: []upstash.ListAppend{{Value: 1}}},
		"negative append TTL":   {Append: []upstash.ListAppend{{Key: "l", Value: 1, Options: upstash.ListOptions{TTL: -1}}}},
		"invalid UTF-8 key":     {DedupeKey: "d\xff"},
		"invalid UTF-8 message": {ThreadID: "t", LockTTL: time.Minute, Entry: &upstash.QueueEntry{Message: json.RawMessage("\"\xff\""), ExpiresAt: time.Now().Add(time.Minute)}},
	}
	env.srv.ResetStats()
	for name, req := range cases {
		_, err := s.Admit(ctxT(t), req)
		if !errors.Is(err, upstash.ErrInvalidArgument) {
			t.Errorf("%s: %v, want ErrInvalidArgument", name, err)
			continue
		}
		if !strings.HasPrefix(err.Error(), "upstash: Admit: ") || strings.Count(err.Error(), "upstash:") != 1 {
			t.Errorf("%s: error %q does not name Admit once", name, err)
		}
	}
	if n := env.srv.Stats().TotalRequests; n != 0 {
		t.Errorf("%d requests sent for invalid arguments, want 0", n)
	}
}

// TestAdmitLockTTLWithinDeadline: WithLockTTLWithinDeadline bounds Admit's
// and Finish's lock TTL as it bounds AcquireLock's and ExtendLock's.
func TestAdmitLockTTLWithinDeadline(t *testing.T) {
	env := newStateEnv(t, upstash.WithLockTTLWithinDeadline(time.Second))
	c, s := env.client, env.state
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	res, err := s.Admit(ctx, upstash.AdmitRequest{ThreadID: "t", LockTTL: time.Hour})
	must(t, err)
	if res.Lock == nil {
		t.Fatal("no lock")
	}
	wantTTLBetween(t, c, "chat-sdk:lock:t", time.Second, 21*time.Second)
	mustDo(t, c, "RPUSH", "chat-sdk:queue:t", entryJSON("next", farFuture))
	fr, err := s.Finish(ctx, upstash.FinishRequest{Lock: res.Lock, LockTTL: time.Hour})
	must(t, err)
	if fr.Next == nil {
		t.Fatal("Finish did not hand over the entry")
	}
	wantTTLBetween(t, c, "chat-sdk:lock:t", time.Second, 21*time.Second)
}

// ---- Finish ----

func TestFinishReleases(t *testing.T) {
	env := newStateEnv(t)
	c, s := env.client, env.state
	lock := mustAcquire(t, s, "t", time.Minute)
	mustDo(t, c, "RPUSH", "chat-sdk:list:msg-history:t", `"a"`, `"b"`)
	res := finish(t, s, upstash.FinishRequest{
		Lock:    lock,
		LockTTL: 30 * time.Second,
		Set: []upstash.CacheWrite{
			{Key: "thread-state:t", Value: map[string]int{"count": 3}, TTL: 30 * 24 * time.Hour},
			{Key: "forever", Value: "x"},
		},
		Append: []upstash.ListAppend{
			{Key: "msg-history:t", Value: "c", Options: upstash.ListOptions{MaxLength: 2, TTL: 7 * 24 * time.Hour}},
			{Key: "plain", Value: 1},
		},
	})
	if res.Next != nil || res.Expired != 0 || res.DeadLettered != 0 {
		t.Errorf("Finish with an empty queue = %+v", res)
	}
	if exists(t, c, "chat-sdk:lock:t") {
		t.Error("the lock was not released")
	}
	if got := rawString(t, c, "GET", "chat-sdk:cache:thread-state:t"); got != `{"count":3}` {
		t.Errorf("thread state = %s", got)
	}
	wantTTLBetween(t, c, "chat-sdk:cache:thread-state:t", 30*24*time.Hour-time.Minute, 30*24*time.Hour)
	if pttl(t, c, "chat-sdk:cache:forever") != -time.Millisecond {
		t.Error("a write with TTL 0 has a TTL")
	}
	if got := rawStrings(t, c, "LRANGE", "chat-sdk:list:msg-history:t", 0, -1); strings.Join(got, " ") != `"b" "c"` {
		t.Errorf("history = %q, want the newest two", got)
	}
	wantTTLBetween(t, c, "chat-sdk:list:msg-history:t", 7*24*time.Hour-time.Minute, 7*24*time.Hour)
	if got := rawStrings(t, c, "LRANGE", "chat-sdk:list:plain", 0, -1); len(got) != 1 || got[0] != "1" || pttl(t, c, "chat-sdk:list:plain") != -time.Millisecond {
		t.Errorf("plain list = %q", got)
	}
	// A Lock from TypeScript's JSON works too.
	mustDo(t, c, "SET", "chat-sdk:lock:ts", "redis_1_abc", "PX", 30000)
	var tsLock upstash.Lock
	must(t, json.Unmarshal([]byte(`{"threadId":"ts","token":"redis_1_abc","expiresAt":1}`), &tsLock))
	if res := finish(t, s, upstash.FinishRequest{Lock: &tsLock, LockTTL: time.Minute}); res.Next != nil {
		t.Errorf("Finish of a TypeScript lock = %+v", res)
	}
	if exists(t, c, "chat-sdk:lock:ts") {
		t.Error("the TypeScript lock was not released")
	}
}

func TestFinishHandsOverNext(t *testing.T) {
	env := newStateEnv(t)
	c, s := env.client, env.state
	ar := admit(t, s, holderReq(t, "m1"))
	lock := ar.Lock
	if lock == nil {
		t.Fatal("no lock")
	}
	tsEntry := `{"message":{"id":"ts","raw":{"a":[1,2]}},"enqueuedAt":1,"expiresAt":` + itoa(farFuture) + `}`
	mustDo(t, c, "RPUSH", "chat-sdk:queue:t", entryJSON("m2", farFuture), tsEntry)
	before := lock.ExpiresAt
	res := finish(t, s, upstash.FinishRequest{Lock: lock, LockTTL: 2 * time.Minute, Set: []upstash.CacheWrite{{Key: "k", Value: 1}}})
	if res.Next == nil || string(res.Next.Message) != `"m2"` || res.Next.ExpiresAt.UnixMilli() != farFuture {
		t.Fatalf("Finish = %+v, want the next entry m2", res)
	}
	if got := rawString(t, c, "GET", "chat-sdk:lock:t"); got != lock.Token {
		t.Errorf("lock holds %q, want the holder's token", got)
	}
	wantTTLBetween(t, c, "chat-sdk:lock:t", 119*time.Second, 2*time.Minute)
	wantTTLBetween(t, c, "chat-sdk:fence:t", 119*time.Second, 2*time.Minute)
	if !lock.ExpiresAt.After(before) {
		t.Errorf("Lock.ExpiresAt %v not moved on from %v", lock.ExpiresAt, before)
	}
	if left := pttl(t, c, "chat-sdk:lock:t"); lock.ExpiresAt.After(time.Now().Add(left).Add(time.Millisecond + scriptTTLEarly)) {
		t.Errorf("ExpiresAt %v is after the server's expiry", lock.ExpiresAt)
	}
	if got := rawString(t, c, "GET", "chat-sdk:cache:k"); got != "1" {
		t.Errorf("the write before the hand-over = %s", got)
	}
	// The TypeScript entry next, then the release.
	res = finish(t, s, upstash.FinishRequest{Lock: lock, LockTTL: time.Minute})
	if res.Next == nil || string(res.Next.Message) != `{"id":"ts","raw":{"a":[1,2]}}` {
		t.Fatalf("second Finish = %+v, want the TypeScript entry", res)
	}
	res = finish(t, s, upstash.FinishRequest{Lock: lock, LockTTL: time.Minute})
	if res.Next != nil || exists(t, c, "chat-sdk:lock:t") || exists(t, c, "chat-sdk:queue:t") {
		t.Errorf("third Finish = %+v; the lock and queue must be gone", res)
	}
}

func TestFinishDiscardsExpired(t *testing.T) {
	env := newStateEnv(t)
	clk := upstash.NewManualClock()
	upstash.SetClock(env.state, clk)
	c, s := env.client, env.state
	now := clk.Now().UnixMilli()
	lock := mustAcquire(t, s, "t", time.Minute)
	mustDo(t, c, "RPUSH", "chat-sdk:queue:t", entryJSON("old1", now-90000), entryJSON("old2", now-1))
	res := finish(t, s, upstash.FinishRequest{Lock: lock, LockTTL: time.Minute})
	if res.Next != nil || res.Expired != 2 || res.DeadLettered != 0 {
		t.Errorf("Finish with only expired entries = %+v, want released with 2 expired", res)
	}
	if exists(t, c, "chat-sdk:lock:t") || exists(t, c, "chat-sdk:queue:t") {
		t.Error("the lock or the expired entries are still there")
	}
	// An entry expiring this very millisecond is live, as in Dequeue.
	lock = mustAcquire(t, s, "t", time.Minute)
	mustDo(t, c, "RPUSH", "chat-sdk:queue:t", entryJSON("old", now-1), entryJSON("now", now), entryJSON("after", farFuture))
	res = finish(t, s, upstash.FinishRequest{Lock: lock, LockTTL: time.Minute})
	if res.Next == nil || string(res.Next.Message) != `"now"` || res.Expired != 1 {
		t.Errorf("Finish = %+v, want the entry expiring now, one expired", res)
	}
	if items := queueItems(t, c, "t"); len(items) != 1 {
		t.Errorf("queue = %q, want only the later entry", items)
	}
}

func TestFinishCorruptEntries(t *testing.T) {
	env := newStateEnv(t)
	c, s := env.client, env.state
	lock := mustAcquire(t, s, "t", time.Minute)
	// Unreadable by the script (no expiresAt), then readable by the script
	// but not JSON (moved by a follow-up request), then a live entry.
	noExpiry := `{"message":1}`
	badJSON := `{"message":,"expiresAt":` + itoa(farFuture) + `}`
	mustDo(t, c, "RPUSH", "chat-sdk:queue:t", noExpiry, badJSON, entryJSON("live", farFuture))
	env.srv.ResetStats()
	res := finish(t, s, upstash.FinishRequest{Lock: lock, LockTTL: time.Minute, Append: []upstash.ListAppend{{Key: "h", Value: 1}}})
	if res.Next == nil || string(res.Next.Message) != `"live"` || res.DeadLettered != 2 {
		t.Fatalf("Finish over corrupt entries = %+v, want the live entry and 2 dead-lettered", res)
	}
	if n := env.srv.Stats().TotalRequests; n > 2+2 { // a NOSCRIPT each at most
		t.Errorf("%d requests, want the Finish and one follow-up", n)
	}
	dead := rawStrings(t, c, "LRANGE", "chat-sdk:queue-corrupt:t", 0, -1)
	if len(dead) != 2 || dead[0] != noExpiry || dead[1] != badJSON {
		t.Errorf("dead-letter list = %q, want both corrupt entries in order", dead)
	}
	if ttl := pttl(t, c, "chat-sdk:queue-corrupt:t"); ttl <= 0 || ttl > 7*24*time.Hour {
		t.Errorf("dead-letter PTTL = %v", ttl)
	}
	if got := rawStrings(t, c, "LRANGE", "chat-sdk:list:h", 0, -1); len(got) != 1 {
		t.Errorf("the append ran %d times, want once (the follow-up writes nothing)", len(got))
	}
	if got := rawString(t, c, "GET", "chat-sdk:lock:t"); got != lock.Token {
		t.Error("the lock is not held for the live entry")
	}

	// A corrupt entry the client cannot even send back (invalid UTF-8) is
	// moved on the server; the queue then has nothing live: released.
	if _, err := env.srv.Do("RPUSH", "chat-sdk:queue:t", "{\"message\":\"\xff\",\"expiresAt\":"+itoa(farFuture)+"}"); err != nil {
		t.Fatal(err)
	}
	res = finish(t, s, upstash.FinishRequest{Lock: lock, LockTTL: time.Minute})
	if res.Next != nil || res.DeadLettered != 1 {
		t.Errorf("Finish over an invalid UTF-8 entry = %+v, want released, 1 dead-lettered", res)
	}
	if exists(t, c, "chat-sdk:lock:t") {
		t.Error("the lock was not released")
	}
	if n := rawInt(t, c, "LLEN", "chat-sdk:queue-corrupt:t"); n != 3 {
		t.Errorf("dead-letter list has %d entries, want 3", n)
	}
}

// TestFinishLockLostBeforeFollowUp: the lock is lost between Finish's
// request (which applied the writes and popped an entry Go cannot decode)
// and the follow-up that moves that entry: the entry is still moved, and
// the error says the lock was lost.
func TestFinishLockLostBeforeFollowUp(t *testing.T) {
	env := newHookedEnv(t)
	c, s := env.other, env.state
	lock := mustAcquire(t, s, "t", time.Minute)
	w := mustAcquire(t, s, "warm", time.Minute)
	mustDo(t, c, "RPUSH", "chat-sdk:queue:warm", `{"message":,"expiresAt":`+itoa(farFuture)+`}`)
	finish(t, s, upstash.FinishRequest{Lock: w, LockTTL: time.Minute}) // loads the script
	badJSON := `{"message":,"expiresAt":` + itoa(farFuture) + `}`
	mustDo(t, c, "RPUSH", "chat-sdk:queue:t", badJSON, entryJSON("live", farFuture))
	env.hook.arm(func(n int) {
		if n == 2 {
			mustDo(t, c, "DEL", "chat-sdk:lock:t")
		}
	})
	res, err := s.Finish(ctxT(t), upstash.FinishRequest{Lock: lock, LockTTL: time.Minute, Set: []upstash.CacheWrite{{Key: "k", Value: 1}}})
	env.hook.arm(nil)
	if !errors.Is(err, upstash.ErrLockNotHeld) || !strings.Contains(err.Error(), "after the writes") {
		t.Fatalf("Finish = %+v, %v; want ErrLockNotHeld after the writes", res, err)
	}
	if res.DeadLettered != 1 || res.Next != nil {
		t.Errorf("result %+v, want 1 dead-lettered", res)
	}
	if got := rawStrings(t, c, "LRANGE", "chat-sdk:queue-corrupt:t", 0, -1); len(got) != 1 || got[0] != badJSON {
		t.Errorf("dead-letter list = %q", got)
	}
	if got := rawString(t, c, "GET", "chat-sdk:cache:k"); got != "1" {
		t.Errorf("the write = %s, want it applied", got)
	}
	if items := queueItems(t, c, "t"); len(items) != 1 {
		t.Errorf("queue = %q, want the live entry left for the next holder", items)
	}
}

func TestFinishLockNotHeld(t *testing.T) {
	env := newStateEnv(t)
	c, s := env.client, env.state
	mustDo(t, c, "RPUSH", "chat-sdk:queue:t", entryJSON("waiting", farFuture))
	req := func(l *upstash.Lock) upstash.FinishRequest {
		return upstash.FinishRequest{
			Lock: l, LockTTL: time.Minute,
			Set:    []upstash.CacheWrite{{Key: "state", Value: "stale"}},
			Append: []upstash.ListAppend{{Key: "h", Value: "stale"}},
		}
	}
	check := func(what string, err error) {
		t.Helper()
		if !errors.Is(err, upstash.ErrLockNotHeld) || !strings.HasPrefix(err.Error(), "upstash: Finish: ") {
			t.Errorf("%s: Finish = %v, want ErrLockNotHeld", what, err)
		}
		if exists(t, c, "chat-sdk:cache:state") || exists(t, c, "chat-sdk:list:h") {
			t.Errorf("%s: Finish wrote under a lock it does not hold", what)
		}
		if items := queueItems(t, c, "t"); len(items) != 1 {
			t.Errorf("%s: queue = %q, want the entry untouched", what, items)
		}
	}
	// Released.
	l := mustAcquire(t, s, "t", time.Minute)
	must(t, s.ReleaseLock(ctxT(t), l))
	_, err := s.Finish(ctxT(t), req(l))
	check("released", err)
	// Taken over by another holder: its lock is left alone.
	l = mustAcquire(t, s, "t", time.Minute)
	must(t, s.ForceReleaseLock(ctxT(t), "t"))
	other := mustAcquire(t, s, "t", time.Minute)
	_, err = s.Finish(ctxT(t), req(l))
	check("taken over", err)
	if got := rawString(t, c, "GET", "chat-sdk:lock:t"); got != other.Token {
		t.Error("Finish touched another holder's lock")
	}
	// Expired.
	must(t, s.ReleaseLock(ctxT(t), other))
	l = mustAcquire(t, s, "t", time.Minute)
	mustDo(t, c, "DEL", "chat-sdk:lock:t") // as the server does when it expires
	_, err = s.Finish(ctxT(t), req(l))
	check("expired", err)
}

func TestFinishInvalidArguments(t *testing.T) {
	env := newStateEnv(t)
	s := env.state
	l := &upstash.Lock{ThreadID: "t", Token: "go_x"}
	cases := map[string]upstash.FinishRequest{
		"nil lock":          {LockTTL: time.Minute},
		"lock without id":   {Lock: &upstash.Lock{Token: "x"}, LockTTL: time.Minute},
		"no LockTTL":        {Lock: l},
		"empty set key":     {Lock: l, LockTTL: time.Minute, Set: []upstash.CacheWrite{{Value: 1}}},
		"negative set TTL":  {Lock: l, LockTTL: time.Minute, Set: []upstash.CacheWrite{{Key: "k", Value: 1, TTL: -1}}},
		"unencodable":       {Lock: l, LockTTL: time.Minute, Set: []upstash.CacheWrite{{Key: "k", Value: func() {}}}},
		"empty list key":    {Lock: l, LockTTL: time.Minute, Append: []upstash.ListAppend{{Value: 1}}},
		"negative MaxLen":   {Lock: l, LockTTL: time.Minute, Append: []upstash.ListAppend{{Key: "l", Value: 1, Options: upstash.ListOptions{MaxLength: -1}}}},
		"negative list TTL": {Lock: l, LockTTL: time.Minute, Append: []upstash.ListAppend{{Key: "l", Value: 1, Options: upstash.ListOptions{TTL: -1}}}},
		"negative Take":     {Lock: l, LockTTL: time.Minute, Take: -1},
	}
	env.srv.ResetStats()
	for name, req := range cases {
		if _, err := s.Finish(ctxT(t), req); !errors.Is(err, upstash.ErrInvalidArgument) || !strings.HasPrefix(err.Error(), "upstash: Finish: ") {
			t.Errorf("%s: %v, want ErrInvalidArgument named after Finish", name, err)
		}
	}
	if n := env.srv.Stats().TotalRequests; n != 0 {
		t.Errorf("%d requests sent for invalid arguments, want 0", n)
	}
}

// ---- what TypeScript sees: the same bytes as the single operations ----

// TestFusedWritesSameBytes writes the same values through Admit and Finish
// and through SetIfNotExists, Enqueue, Set and AppendToList, on parallel
// keys, and compares the raw keys: type, bytes and TTL.
func TestFusedWritesSameBytes(t *testing.T) {
	env := newStateEnv(t)
	ctx, c, s := ctxT(t), env.client, env.state
	clk := upstash.NewManualClock()
	upstash.SetClock(s, clk)
	value := map[string]any{"html": "<b>&</b>", "sep": "\u2028", "neg": -0.0, "n": 1.5, "nested": []any{"é", nil, true}}
	raw := json.RawMessage(` { "a" : [1, 2] , "s" : "\u2029" } `)
	msg := json.RawMessage(`{"_type":"chat:Message","id":"m1","text":"a<b"}`)
	entry := upstash.QueueEntry{Message: msg, EnqueuedAt: clk.Now(), ExpiresAt: clk.Now().Add(90 * time.Second)}

	// The single operations, on keys suffixed "-s".
	mustAcquire(t, s, "busy-s", time.Minute)
	_, err := s.SetIfNotExists(ctx, "dedupe-s", true, 10*time.Minute)
	must(t, err)
	_, err = s.SetIfNotExists(ctx, "dedupe2-s", value, 10*time.Minute)
	must(t, err)
	_, err = s.Enqueue(ctx, "busy-s", entry, 10)
	must(t, err)
	must(t, s.Set(ctx, "state-s", value, time.Hour))
	must(t, s.Set(ctx, "raw-s", raw, 0))
	must(t, s.AppendToList(ctx, "hist-s", value, upstash.ListOptions{MaxLength: 100, TTL: time.Hour}))
	must(t, s.AppendToList(ctx, "hist-s", raw, upstash.ListOptions{}))

	// The fused operations, on keys suffixed "-f".
	mustAcquire(t, s, "busy-f", time.Minute)
	ar := admit(t, s, upstash.AdmitRequest{DedupeKey: "dedupe-f", DedupeTTL: 10 * time.Minute, ThreadID: "busy-f", LockTTL: time.Minute, Entry: &entry, MaxQueue: 10})
	if !ar.Queued {
		t.Fatalf("Admit = %+v, want queued", ar)
	}
	admit(t, s, upstash.AdmitRequest{DedupeKey: "dedupe2-f", DedupeValue: value, DedupeTTL: 10 * time.Minute,
		Append: []upstash.ListAppend{{Key: "hist0-f", Value: value, Options: upstash.ListOptions{MaxLength: 100, TTL: time.Hour}}}})
	must(t, s.AppendToList(ctx, "hist0-s", value, upstash.ListOptions{MaxLength: 100, TTL: time.Hour}))
	lock := mustAcquire(t, s, "free-f", time.Minute)
	finish(t, s, upstash.FinishRequest{
		Lock: lock, LockTTL: time.Minute,
		Set: []upstash.CacheWrite{{Key: "state-f", Value: value, TTL: time.Hour}, {Key: "raw-f", Value: raw}},
		Append: []upstash.ListAppend{
			{Key: "hist-f", Value: value, Options: upstash.ListOptions{MaxLength: 100, TTL: time.Hour}},
			{Key: "hist-f", Value: raw},
		},
	})

	for _, pair := range []struct{ kind, key string }{
		{"string", "chat-sdk:cache:dedupe"},
		{"string", "chat-sdk:cache:dedupe2"},
		{"list", "chat-sdk:queue:busy"},
		{"string", "chat-sdk:cache:state"},
		{"string", "chat-sdk:cache:raw"},
		{"list", "chat-sdk:list:hist"},
		{"list", "chat-sdk:list:hist0"},
	} {
		single, fused := pair.key+"-s", pair.key+"-f"
		for _, k := range []string{single, fused} {
			if got := rawString(t, c, "TYPE", k); got != pair.kind {
				t.Errorf("TYPE %s = %s, want %s", k, got, pair.kind)
			}
		}
		var a, b []string
		if pair.kind == "list" {
			a, b = rawStrings(t, c, "LRANGE", single, 0, -1), rawStrings(t, c, "LRANGE", fused, 0, -1)
		} else {
			a, b = []string{rawString(t, c, "GET", single)}, []string{rawString(t, c, "GET", fused)}
		}
		if strings.Join(a, "\n") != strings.Join(b, "\n") {
			t.Errorf("%s: single operations wrote\n%q\nthe fused ones\n%q", pair.key, a, b)
		}
		ta, tb := pttl(t, c, single), pttl(t, c, fused)
		if (ta < 0) != (tb < 0) || ta-tb > 5*time.Second || tb-ta > 5*time.Second {
			t.Errorf("%s: PTTL %v after the single operations, %v after the fused ones", pair.key, ta, tb)
		}
	}
}

// TestFusedKeysAndFlags: the scripts declare allow-key-locking (the test
// server refuses any key a script touches without naming it in KEYS, so
// every other test checks the KEYS too), and the keys they leave are
// state-redis's and this library's op and fence keys, the latter two with
// a TTL.
func TestFusedKeysAndFlags(t *testing.T) {
	for _, name := range []string{"admit.lua", "finish.lua"} {
		src, err := os.ReadFile(name)
		must(t, err)
		if !strings.HasPrefix(string(src), "#!lua flags=allow-key-locking\n") {
			t.Errorf("%s does not start with #!lua flags=allow-key-locking", name)
		}
	}
	env := newStateEnv(t)
	c, s := env.client, env.state
	mustDo(t, c, "RPUSH", "chat-sdk:queue:t", `oops`)
	ar := admit(t, s, holderReq(t, "m1"))
	admit(t, s, holderReq(t, "m2"))
	finish(t, s, upstash.FinishRequest{Lock: ar.Lock, LockTTL: time.Minute,
		Set: []upstash.CacheWrite{{Key: "thread-state:t", Value: 1}}, Append: []upstash.ListAppend{{Key: "msg-history:t", Value: 1}}})
	keys := rawStrings(t, c, "KEYS", "*")
	sort.Strings(keys)
	allowed := regexp.MustCompile(`^chat-sdk:(subscriptions|lock:t|queue:t|queue-corrupt:t|cache:(dedupe:slack:m[12]|thread-state:t)|list:msg-history:t|op:[0-9a-f]{32}|fence:t)$`)
	for _, k := range keys {
		if !allowed.MatchString(k) {
			t.Errorf("unexpected key %q", k)
		}
		if strings.HasPrefix(k, "chat-sdk:op:") || strings.HasPrefix(k, "chat-sdk:fence:") {
			if pttl(t, c, k) <= 0 {
				t.Errorf("%s has no TTL", k)
			}
		}
	}
}

// ---- requests per webhook ----

// TestFusedOneRequestEach: with the scripts cached, a handled webhook
// costs two requests (Admit, Finish), a queued or duplicate one a single
// request.
func TestFusedOneRequestEach(t *testing.T) {
	env := newStateEnv(t)
	s := env.state
	warm := admit(t, s, holderReq(t, "warm"))
	finish(t, s, upstash.FinishRequest{Lock: warm.Lock, LockTTL: time.Minute})
	count := func(what string, want int64, fn func()) {
		t.Helper()
		env.srv.ResetStats()
		fn()
		if n := env.srv.Stats().TotalRequests; n != want {
			t.Errorf("%s: %d requests, want %d", what, n, want)
		}
	}
	var lock *upstash.Lock
	count("Admit, handled", 1, func() { lock = admit(t, s, holderReq(t, "m1")).Lock })
	count("Admit, queued", 1, func() {
		if !admit(t, s, holderReq(t, "m2")).Queued {
			t.Error("not queued")
		}
	})
	count("Admit, duplicate", 1, func() {
		if !admit(t, s, holderReq(t, "m2")).Duplicate {
			t.Error("not a duplicate")
		}
	})
	count("Finish, next", 1, func() {
		if finish(t, s, upstash.FinishRequest{Lock: lock, LockTTL: time.Minute, Set: []upstash.CacheWrite{{Key: "thread-state:t", Value: 1}}}).Next == nil {
			t.Error("no next entry")
		}
	})
	count("Finish, released", 1, func() {
		if finish(t, s, upstash.FinishRequest{Lock: lock, LockTTL: time.Minute}).Next != nil {
			t.Error("an entry left")
		}
	})
}

// ---- vercel/chat#928: no message is stranded ----

// TestFinishNeverStrands928 replays the race of vercel/chat#928 step by
// step: the holder has done its work and looked at the queue; another
// webhook finds the lock busy and queues its message; then the holder
// finishes. With Finish the message is handed over, and the lock is kept
// for it; only the Finish that sees the queue empty releases.
func TestFinishNeverStrands928(t *testing.T) {
	env := newStateEnv(t)
	c, s := env.client, env.state
	a := admit(t, s, holderReq(t, "a"))
	if a.Lock == nil {
		t.Fatal("A took no lock")
	}
	// A's handler runs; its look at the queue finds nothing.
	if e, err := s.Dequeue(ctxT(t), "t"); err != nil || e != nil {
		t.Fatalf("Dequeue = %v, %v", e, err)
	}
	// B arrives between A's last look and A's release.
	b := admit(t, s, holderReq(t, "b"))
	if !b.Queued || b.QueueDepth != 1 {
		t.Fatalf("B = %+v, want queued", b)
	}
	fr := finish(t, s, upstash.FinishRequest{Lock: a.Lock, LockTTL: time.Minute})
	if fr.Next == nil || string(fr.Next.Message) != `"b"` {
		t.Fatalf("A's Finish = %+v: B's message would be stranded", fr)
	}
	if !exists(t, c, "chat-sdk:lock:t") {
		t.Fatal("A released the lock with B's message in hand")
	}
	// The other order: A finishes first (released), then C finds the lock
	// free and takes it itself.
	if fr = finish(t, s, upstash.FinishRequest{Lock: a.Lock, LockTTL: time.Minute}); fr.Next != nil {
		t.Fatalf("A's second Finish = %+v", fr)
	}
	if cr := admit(t, s, holderReq(t, "c")); cr.Lock == nil {
		t.Fatalf("C = %+v, want the lock", cr)
	}
}

// TestFusedConcurrentNothingStranded runs many webhooks on one thread at
// once, each Admit then, for the holder, Finish until released. Every
// message is handled exactly once, and at the end the lock is free and the
// queue empty: no message was stranded.
func TestFusedConcurrentNothingStranded(t *testing.T) {
	env := newStateEnv(t)
	c, s := env.client, env.state
	const callers, perCaller = 8, 12
	var (
		mu      sync.Mutex
		handled = map[string]int{}
		holders int
		active  int // handle calls running: only a lock holder makes one
		overlap bool
	)
	handle := func(id string) {
		mu.Lock()
		handled[id]++
		active++
		overlap = overlap || active > 1
		mu.Unlock()
		time.Sleep(time.Millisecond) // the bot's work, with the lock held
		mu.Lock()
		active--
		mu.Unlock()
	}
	var wg sync.WaitGroup
	errs := make(chan error, callers)
	for g := 0; g < callers; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			ctx := context.Background()
			for i := 0; i < perCaller; i++ {
				id := fmt.Sprintf("m%d-%d", g, i)
				e, err := upstash.NewQueueEntry(id, time.Hour)
				if err != nil {
					errs <- err
					return
				}
				res, err := s.Admit(ctx, upstash.AdmitRequest{DedupeKey: "dedupe:" + id, DedupeTTL: time.Minute, ThreadID: "t", LockTTL: time.Minute, Entry: &e})
				if err != nil {
					errs <- err
					return
				}
				if res.Lock == nil {
					continue // queued: the holder hands it over
				}
				mu.Lock()
				holders++
				mu.Unlock()
				handle(id)
				for {
					fr, err := s.Finish(ctx, upstash.FinishRequest{Lock: res.Lock, LockTTL: time.Minute})
					if err != nil {
						errs <- err
						return
					}
					if fr.Next == nil {
						break
					}
					var m string
					if err := json.Unmarshal(fr.Next.Message, &m); err != nil {
						errs <- err
						return
					}
					handle(m)
				}
			}
		}(g)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if overlap {
		t.Error("two holders ran at once")
	}
	for g := 0; g < callers; g++ {
		for i := 0; i < perCaller; i++ {
			if id := fmt.Sprintf("m%d-%d", g, i); handled[id] != 1 {
				t.Errorf("message %s handled %d times, want once", id, handled[id])
			}
		}
	}
	if exists(t, c, "chat-sdk:lock:t") || exists(t, c, "chat-sdk:queue:t") {
		t.Errorf("left behind: lock %v, %d queued entries", exists(t, c, "chat-sdk:lock:t"), len(queueItems(t, c, "t")))
	}
	t.Logf("%d messages, %d holders", callers*perCaller, holders)
}

// ---- operation ids: retries apply once ----

// fusedCase is one fused call whose first attempt fails.
type fusedCase struct {
	name  string
	setup func(t *testing.T, env stateEnv) *upstash.Lock
	run   func(ctx context.Context, s *upstash.State, l *upstash.Lock) (string, error)
	want  string
	check func(t *testing.T, env stateEnv)
}

func fusedCases() []fusedCase {
	admitText := func(res upstash.AdmitResult, err error) (string, error) {
		if err != nil {
			return "", err
		}
		return fmt.Sprintf("dup=%v sub=%v lock=%v busy=%v queued=%v depth=%d values=%q",
			res.Duplicate, res.Subscribed, res.Lock != nil, res.Busy, res.Queued, res.QueueDepth, res.Values), nil
	}
	finishText := func(res upstash.FinishResult, err error) (string, error) {
		if err != nil {
			return "", err
		}
		next := "nil"
		if res.Next != nil {
			next = string(res.Next.Message)
		}
		more := ""
		for _, e := range res.More {
			more += " more=" + string(e.Message)
		}
		return fmt.Sprintf("next=%s%s expired=%d dead=%d", next, more, res.Expired, res.DeadLettered), nil
	}
	req := upstash.AdmitRequest{
		DedupeKey: "dedupe:m", DedupeTTL: time.Hour, CheckSubscription: "t", ThreadID: "t", LockTTL: time.Hour,
		Entry:    &upstash.QueueEntry{Message: json.RawMessage(`"m"`), EnqueuedAt: time.UnixMilli(1), ExpiresAt: time.UnixMilli(farFuture)},
		MaxQueue: 10, Read: []string{"state"},
		Append: []upstash.ListAppend{{Key: "h", Value: "x", Options: upstash.ListOptions{MaxLength: 2}}},
	}
	seed := func(t *testing.T, env stateEnv) {
		mustDo(t, env.client, "RPUSH", "chat-sdk:list:h", `"a"`)
		mustDo(t, env.client, "SADD", "chat-sdk:subscriptions", "t")
		mustDo(t, env.client, "SET", "chat-sdk:cache:state", `{"n":1}`)
	}
	hold := func(t *testing.T, env stateEnv) *upstash.Lock {
		mustDo(t, env.client, "SET", "chat-sdk:lock:t", fixedLock.Token, "PX", 3600000)
		l := fixedLock
		return &l
	}
	finishReq := func(l *upstash.Lock) upstash.FinishRequest {
		return upstash.FinishRequest{Lock: l, LockTTL: time.Hour,
			Set:    []upstash.CacheWrite{{Key: "state", Value: map[string]int{"n": 2}}},
			Append: []upstash.ListAppend{{Key: "h", Value: "x", Options: upstash.ListOptions{MaxLength: 2}}}}
	}
	historyOnce := func(t *testing.T, env stateEnv) {
		// Appended once: a, x (twice would give x, x).
		if got := rawStrings(t, env.client, "LRANGE", "chat-sdk:list:h", 0, -1); strings.Join(got, " ") != `"a" "x"` {
			t.Errorf("history = %q, want [\"a\" \"x\"]", got)
		}
	}
	return []fusedCase{
		{
			name:  "Admit acquires",
			setup: func(t *testing.T, env stateEnv) *upstash.Lock { seed(t, env); return nil },
			run: func(ctx context.Context, s *upstash.State, _ *upstash.Lock) (string, error) {
				return admitText(s.Admit(ctx, req))
			},
			want: `dup=false sub=true lock=true busy=false queued=false depth=0 values=["{\"n\":1}"]`,
			check: func(t *testing.T, env stateEnv) {
				historyOnce(t, env)
				if !strings.HasPrefix(rawString(t, env.client, "GET", "chat-sdk:lock:t"), "go_") {
					t.Error("no lock")
				}
			},
		},
		{
			name: "Admit queues",
			setup: func(t *testing.T, env stateEnv) *upstash.Lock {
				seed(t, env)
				hold(t, env)
				mustDo(t, env.client, "RPUSH", "chat-sdk:queue:t", entryJSON("a", farFuture))
				return nil
			},
			run: func(ctx context.Context, s *upstash.State, _ *upstash.Lock) (string, error) {
				return admitText(s.Admit(ctx, req))
			},
			want: `dup=false sub=true lock=false busy=true queued=true depth=2 values=[]`,
			check: func(t *testing.T, env stateEnv) {
				historyOnce(t, env)
				if n := rawInt(t, env.client, "LLEN", "chat-sdk:queue:t"); n != 2 {
					t.Errorf("LLEN = %d, want 2: queued once", n)
				}
			},
		},
		{
			name: "Admit duplicate",
			setup: func(t *testing.T, env stateEnv) *upstash.Lock {
				mustDo(t, env.client, "SET", "chat-sdk:cache:dedupe:m", "true")
				return nil
			},
			run: func(ctx context.Context, s *upstash.State, _ *upstash.Lock) (string, error) {
				return admitText(s.Admit(ctx, req))
			},
			want: `dup=true sub=false lock=false busy=false queued=false depth=0 values=[]`,
			check: func(t *testing.T, env stateEnv) {
				if exists(t, env.client, "chat-sdk:lock:t") || exists(t, env.client, "chat-sdk:list:h") {
					t.Error("a duplicate took the lock or appended")
				}
			},
		},
		{
			name: "Finish releases",
			setup: func(t *testing.T, env stateEnv) *upstash.Lock {
				mustDo(t, env.client, "RPUSH", "chat-sdk:list:h", `"a"`)
				return hold(t, env)
			},
			run: func(ctx context.Context, s *upstash.State, l *upstash.Lock) (string, error) {
				return finishText(s.Finish(ctx, finishReq(l)))
			},
			want: "next=nil expired=0 dead=0", // not ErrLockNotHeld: the first run released it
			check: func(t *testing.T, env stateEnv) {
				historyOnce(t, env)
				if exists(t, env.client, "chat-sdk:lock:t") {
					t.Error("not released")
				}
			},
		},
		{
			name: "Finish hands over",
			setup: func(t *testing.T, env stateEnv) *upstash.Lock {
				mustDo(t, env.client, "RPUSH", "chat-sdk:list:h", `"a"`)
				mustDo(t, env.client, "RPUSH", "chat-sdk:queue:t", entryJSON("old", 1), entryJSON("b", farFuture), entryJSON("c", farFuture))
				return hold(t, env)
			},
			run: func(ctx context.Context, s *upstash.State, l *upstash.Lock) (string, error) {
				return finishText(s.Finish(ctx, finishReq(l)))
			},
			want: `next="b" expired=1 dead=0`, // the popped entry is handed over by the retry
			check: func(t *testing.T, env stateEnv) {
				historyOnce(t, env)
				if items := queueItems(t, env.client, "t"); len(items) != 1 || !strings.Contains(items[0], `"c"`) {
					t.Errorf("queue = %q, want only c: popped once", items)
				}
				if got := rawString(t, env.client, "GET", "chat-sdk:lock:t"); got != fixedLock.Token {
					t.Error("the lock is not kept")
				}
			},
		},
		{
			name: "Finish takes several",
			setup: func(t *testing.T, env stateEnv) *upstash.Lock {
				mustDo(t, env.client, "RPUSH", "chat-sdk:list:h", `"a"`)
				mustDo(t, env.client, "RPUSH", "chat-sdk:queue:t", entryJSON("old", 1), entryJSON("b", farFuture), `{"message":1}`,
					entryJSON("c", farFuture), entryJSON("d", farFuture), entryJSON("e", farFuture))
				return hold(t, env)
			},
			run: func(ctx context.Context, s *upstash.State, l *upstash.Lock) (string, error) {
				req := finishReq(l)
				req.Take = 3
				return finishText(s.Finish(ctx, req))
			},
			want: `next="b" more="c" more="d" expired=1 dead=1`, // every popped entry is handed over by the retry
			check: func(t *testing.T, env stateEnv) {
				historyOnce(t, env)
				if items := queueItems(t, env.client, "t"); len(items) != 1 || !strings.Contains(items[0], `"e"`) {
					t.Errorf("queue = %q, want only e: popped once", items)
				}
				if dead := rawStrings(t, env.client, "LRANGE", "chat-sdk:queue-corrupt:t", 0, -1); len(dead) != 1 {
					t.Errorf("dead-letter list = %q, want the unreadable entry once", dead)
				}
				if got := rawString(t, env.client, "GET", "chat-sdk:lock:t"); got != fixedLock.Token {
					t.Error("the lock is not kept")
				}
			},
		},
	}
}

// TestFusedRepeatPaths runs each fused call with its first attempt failing
// in each way (reply dropped after it ran, reset or 503 before it ran), and
// the client's retry: the result of a single application, applied once.
func TestFusedRepeatPaths(t *testing.T) {
	for _, fk := range faultKinds {
		for _, c := range fusedCases() {
			t.Run(fk.name+"/"+c.name, func(t *testing.T) {
				env := newStateEnv(t)
				// Load both scripts, so the fault hits the call itself.
				w := admit(t, env.state, upstash.AdmitRequest{ThreadID: "warm", LockTTL: time.Minute})
				finish(t, env.state, upstash.FinishRequest{Lock: w.Lock, LockTTL: time.Minute})
				must(t, env.srv.FlushAll())
				l := c.setup(t, env)
				env.srv.ResetStats()
				fk.inject(env.srv)
				got, err := c.run(ctxT(t), env.state, l)
				if err != nil {
					t.Fatalf("error %v, want a successful retry", err)
				}
				if got != c.want {
					t.Errorf("result\n%s\nwant\n%s", got, c.want)
				}
				st := env.srv.Stats()
				if st.TotalRequests != 2 || faultCount(st) != 1 {
					t.Errorf("%d requests with %d faults, want one failed attempt and one retry", st.TotalRequests, faultCount(st))
				}
				c.check(t, env)
			})
		}
	}
}

// TestFusedEveryAttemptFails: when no attempt gets through, the error
// matches ErrOutcomeUnknown; Admit hands back the lock it may have taken,
// and Finish with it resolves the doubt.
func TestFusedEveryAttemptFails(t *testing.T) {
	env := newStateEnv(t)
	c, s := env.client, env.state
	w := admit(t, s, upstash.AdmitRequest{ThreadID: "warm", LockTTL: time.Minute})
	finish(t, s, upstash.FinishRequest{Lock: w.Lock, LockTTL: time.Minute})

	env.srv.DropResponseNext(100)
	res, err := s.Admit(ctxT(t), holderReq(t, "m1"))
	env.srv.ClearFaults()
	if !errors.Is(err, upstash.ErrOutcomeUnknown) || !strings.HasPrefix(err.Error(), "upstash: Admit: ") {
		t.Fatalf("Admit with every reply lost: %v, want ErrOutcomeUnknown", err)
	}
	if res.Lock != nil || res.InDoubtLock == nil || res.InDoubtLock.ThreadID != "t" {
		t.Fatalf("result %+v, want only InDoubtLock", res)
	}
	// The first attempt ran: the lock is held under that token.
	if got := rawString(t, c, "GET", "chat-sdk:lock:t"); got != res.InDoubtLock.Token {
		t.Fatalf("lock holds %q, want the in-doubt token", got)
	}
	fr, err := s.Finish(ctxT(t), upstash.FinishRequest{Lock: res.InDoubtLock, LockTTL: time.Minute})
	if err != nil || fr.Next != nil || exists(t, c, "chat-sdk:lock:t") {
		t.Errorf("Finish of the in-doubt lock = %+v, %v; want it released", fr, err)
	}
	// Never sent at all (every attempt refused with a 503): Finish of the
	// in-doubt lock reports it was never held.
	env.srv.FailNext(100, 503)
	res, err = s.Admit(ctxT(t), holderReq(t, "m2"))
	env.srv.ClearFaults()
	if !errors.Is(err, upstash.ErrOutcomeUnknown) || res.InDoubtLock == nil {
		t.Fatalf("Admit with every attempt refused: %+v, %v", res, err)
	}
	if _, err := s.Finish(ctxT(t), upstash.FinishRequest{Lock: res.InDoubtLock, LockTTL: time.Minute}); !errors.Is(err, upstash.ErrLockNotHeld) {
		t.Errorf("Finish of a lock never taken: %v, want ErrLockNotHeld", err)
	}
	// Finish in doubt.
	lock := mustAcquire(t, s, "t", time.Minute)
	env.srv.DropResponseNext(100)
	_, err = s.Finish(ctxT(t), upstash.FinishRequest{Lock: lock, LockTTL: time.Minute})
	env.srv.ClearFaults()
	if !errors.Is(err, upstash.ErrOutcomeUnknown) || !strings.HasPrefix(err.Error(), "upstash: Finish: ") {
		t.Errorf("Finish with every reply lost: %v, want ErrOutcomeUnknown", err)
	}
}

// TestFusedUnderRandomFaults runs the concurrent flow with 15% of the
// requests failing in every way and a client that retries enough: the
// same guarantees as without faults.
func TestFusedUnderRandomFaults(t *testing.T) {
	t.Run("Take 1", func(t *testing.T) { fusedUnderRandomFaults(t, 0) })
	t.Run("Take 3", func(t *testing.T) { fusedUnderRandomFaults(t, 3) })
}

// fusedUnderRandomFaults is TestFusedUnderRandomFaults with the holders'
// Finish popping up to take entries at once.
func fusedUnderRandomFaults(t *testing.T, take int) {
	srv := upstashtest.NewServer(t, upstashtest.WithSeed(11))
	c := clientOf(t, srv.URL, srv.Token, upstash.WithRetry(upstash.RetryPolicy{MaxRetries: 10, MinBackoff: time.Millisecond, MaxBackoff: 20 * time.Millisecond}))
	s := upstash.NewState(c)
	srv.SetFaultRate(0.15, upstashtest.FaultStatus, upstashtest.FaultReset, upstashtest.FaultDrop)
	const n = 40
	handled := map[string]int{}
	var holder *upstash.Lock
	finishes, batches := 0, 0 // successful Finish calls; those that handed over more than one entry
	ctx := ctxT(t)
	// One webhook at a time from several "processes", holders finishing
	// late, so that admits land on a busy lock and finishes hand over.
	for i := 0; i < n; i++ {
		id := "m" + strconv.Itoa(i)
		e, err := upstash.NewQueueEntry(id, time.Hour)
		must(t, err)
		res, err := s.Admit(ctx, upstash.AdmitRequest{DedupeKey: "dedupe:" + id, DedupeTTL: time.Minute, ThreadID: "t", LockTTL: time.Minute, Entry: &e})
		must(t, err)
		// A platform retry of the same message is a duplicate, even now.
		dup, err := s.Admit(ctx, upstash.AdmitRequest{DedupeKey: "dedupe:" + id, DedupeTTL: time.Minute, ThreadID: "t", LockTTL: time.Minute, Entry: &e})
		must(t, err)
		if !dup.Duplicate {
			t.Fatalf("second delivery of %s = %+v, want a duplicate", id, dup)
		}
		switch {
		case res.Lock != nil:
			if holder != nil {
				t.Fatalf("%s took the lock while it was held", id)
			}
			holder = res.Lock
			handled[id]++
		case !res.Queued:
			t.Fatalf("%s = %+v, want the lock or queued", id, res)
		}
		if i%4 == 3 && holder != nil { // the holder finishes, draining
			for {
				fr, err := s.Finish(ctx, upstash.FinishRequest{Lock: holder, LockTTL: time.Minute, Take: take, Append: []upstash.ListAppend{{Key: "h", Value: 1}}})
				must(t, err)
				finishes++
				if fr.Next == nil {
					holder = nil
					break
				}
				if len(fr.More) > 0 {
					batches++
				}
				for _, e := range append([]upstash.QueueEntry{*fr.Next}, fr.More...) {
					var m string
					must(t, json.Unmarshal(e.Message, &m))
					handled[m]++
				}
			}
		}
	}
	srv.ClearFaults()
	if faultCount(srv.Stats()) == 0 {
		t.Fatal("no fault was injected")
	}
	for i := 0; i < n; i++ {
		if id := "m" + strconv.Itoa(i); handled[id] != 1 {
			t.Errorf("%s handled %d times, want once", id, handled[id])
		}
	}
	if holder != nil || rawInt(t, c, "EXISTS", "chat-sdk:lock:t") != 0 || rawInt(t, c, "LLEN", "chat-sdk:queue:t") != 0 {
		t.Errorf("left behind: holder %v, lock or queue", holder)
	}
	// One append per Finish (with Take 1, one Finish per handled
	// message): each applied once whatever failed.
	if got := rawInt(t, c, "LLEN", "chat-sdk:list:h"); got != int64(finishes) || (take <= 1 && got != n) {
		t.Errorf("history has %d items, want %d", got, finishes)
	}
	if take > 1 && batches == 0 {
		t.Error("no Finish handed over more than one entry")
	}
}
