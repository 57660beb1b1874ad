package upstash_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chatstate/upstash"
	"github.com/chatstate/upstash/upstashtest"
)

// Tests of FinishRequest.Take: Finish handing over several queued entries
// at once (finish.lua's length-prefixed reply and record, the follow-up
// that dead-letters entries Go cannot decode).

// handedOver is the messages of Next and More, in order.
func handedOver(res upstash.FinishResult) []string {
	var got []string
	if res.Next != nil {
		got = append(got, string(res.Next.Message))
	}
	for _, e := range res.More {
		got = append(got, string(e.Message))
	}
	return got
}

// warmFinish loads finish.lua, so that later requests are counted without
// a NOSCRIPT round.
func warmFinish(t *testing.T, s *upstash.State) {
	t.Helper()
	w := mustAcquire(t, s, "warm", time.Minute)
	finish(t, s, upstash.FinishRequest{Lock: w, LockTTL: time.Minute})
}

func TestFinishTakeOneUnchanged(t *testing.T) {
	env := newStateEnv(t)
	c, s := env.client, env.state
	lock := mustAcquire(t, s, "t", time.Minute)
	mustDo(t, c, "RPUSH", "chat-sdk:queue:t", entryJSON("a", farFuture), entryJSON("b", farFuture), entryJSON("c", farFuture))
	for i, take := range []int{0, 1} {
		res := finish(t, s, upstash.FinishRequest{Lock: lock, LockTTL: time.Minute, Take: take})
		want := strconv.Quote(string(rune('a' + i)))
		if got := handedOver(res); len(got) != 1 || got[0] != want || res.More != nil {
			t.Errorf("Take %d: handed over %q (More %v), want only %s", take, got, res.More, want)
		}
		if n := rawInt(t, c, "LLEN", "chat-sdk:queue:t"); n != int64(2-i) {
			t.Errorf("Take %d: %d entries left, want %d: one popped", take, n, 2-i)
		}
	}
}

func TestFinishTakeSeveral(t *testing.T) {
	const noExpiry = `{"message":1}` // unreadable by the script
	// Entries whose bytes hold what a separator would: colons, digits,
	// newlines, a length-like prefix, non-ASCII text.
	tricky := `{"message":"3:x:\n10:é","enqueuedAt":1,"expiresAt":` + itoa(farFuture) + `}`
	tsEntry := `{"message":{"id":"ts","raw":{"a":[1,2]}},"enqueuedAt":1,"expiresAt":` + itoa(farFuture) + `}`
	cases := []struct {
		name         string
		queue        func(now int64) []string
		take         int
		want         []string // the messages handed over, in order
		expired      int
		dead         []string // the dead-letter list afterwards
		left         int      // entries left queued
		kept         bool     // the lock kept (else released)
		releasedNext bool     // a second Finish with the same Take releases
	}{
		{
			name: "fewer live than Take",
			queue: func(now int64) []string {
				return []string{entryJSON("old", now-1), entryJSON("a", farFuture), noExpiry, tricky}
			},
			take: 5, want: []string{`"a"`, `"3:x:\n10:é"`}, expired: 1, dead: []string{noExpiry}, kept: true, releasedNext: true,
		},
		{
			name: "as many live as Take",
			queue: func(now int64) []string {
				return []string{entryJSON("a", farFuture), entryJSON("old", now-90000), tsEntry, entryJSON("c", now)}
			},
			take: 3, want: []string{`"a"`, `{"id":"ts","raw":{"a":[1,2]}}`, `"c"`}, expired: 1, kept: true, releasedNext: true,
		},
		{
			name: "more live than Take",
			queue: func(now int64) []string {
				return []string{entryJSON("a", farFuture), entryJSON("b", farFuture), entryJSON("old", now-1), entryJSON("c", farFuture), entryJSON("d", farFuture), entryJSON("e", farFuture)}
			},
			take: 3, want: []string{`"a"`, `"b"`, `"c"`}, expired: 1, left: 2, kept: true,
		},
		{
			name: "expired entries after the last one taken stay",
			queue: func(now int64) []string {
				return []string{entryJSON("a", farFuture), entryJSON("b", farFuture), entryJSON("old", now-1)}
			},
			take: 2, want: []string{`"a"`, `"b"`}, left: 1, kept: true,
		},
		{
			name: "only expired and unreadable",
			queue: func(now int64) []string {
				return []string{entryJSON("old", now-1), noExpiry, entryJSON("old2", now-5)}
			},
			take: 4, expired: 2, dead: []string{noExpiry},
		},
		{
			name:  "empty queue",
			queue: func(int64) []string { return nil },
			take:  4,
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			env := newStateEnv(t)
			clk := upstash.NewManualClock()
			upstash.SetClock(env.state, clk)
			c, s := env.client, env.state
			lock := mustAcquire(t, s, "t", 10*time.Second)
			if q := tc.queue(clk.Now().UnixMilli()); len(q) > 0 {
				mustDo(t, c, append([]any{"RPUSH", "chat-sdk:queue:t"}, toAny(q)...)...)
			}
			before := lock.ExpiresAt
			res := finish(t, s, upstash.FinishRequest{Lock: lock, LockTTL: 2 * time.Minute, Take: tc.take,
				Append: []upstash.ListAppend{{Key: "h", Value: 1}}})
			if got := handedOver(res); fmt.Sprintf("%q", got) != fmt.Sprintf("%q", tc.want) {
				t.Errorf("handed over %q, want %q", got, tc.want)
			}
			if len(tc.want) <= 1 && res.More != nil {
				t.Errorf("More = %v, want nil", res.More)
			}
			if res.Expired != tc.expired || res.DeadLettered != len(tc.dead) || res.DeadLetterErr != nil {
				t.Errorf("Expired %d, DeadLettered %d (%v); want %d, %d", res.Expired, res.DeadLettered, res.DeadLetterErr, tc.expired, len(tc.dead))
			}
			if got := rawStrings(t, c, "LRANGE", "chat-sdk:queue-corrupt:t", 0, -1); fmt.Sprint(got) != fmt.Sprint(tc.dead) {
				t.Errorf("dead-letter list = %q, want %q", got, tc.dead)
			}
			if n := rawInt(t, c, "LLEN", "chat-sdk:queue:t"); n != int64(tc.left) {
				t.Errorf("%d entries left queued, want %d", n, tc.left)
			}
			if n := rawInt(t, c, "LLEN", "chat-sdk:list:h"); n != 1 {
				t.Errorf("the append ran %d times, want once", n)
			}
			if !tc.kept {
				if exists(t, c, "chat-sdk:lock:t") {
					t.Error("the lock was kept with nothing handed over")
				}
				return
			}
			if got := rawString(t, c, "GET", "chat-sdk:lock:t"); got != lock.Token {
				t.Fatalf("lock holds %q, want the holder's token", got)
			}
			wantTTLBetween(t, c, "chat-sdk:lock:t", 119*time.Second, 2*time.Minute)
			wantTTLBetween(t, c, "chat-sdk:fence:t", 119*time.Second, 2*time.Minute)
			if !lock.ExpiresAt.After(before) {
				t.Errorf("Lock.ExpiresAt %v not moved on from %v", lock.ExpiresAt, before)
			}
			if tc.releasedNext {
				res = finish(t, s, upstash.FinishRequest{Lock: lock, LockTTL: 2 * time.Minute, Take: tc.take})
				if res.Next != nil || res.More != nil || exists(t, c, "chat-sdk:lock:t") {
					t.Errorf("second Finish = %+v, lock left %v; want released", res, exists(t, c, "chat-sdk:lock:t"))
				}
			}
		})
	}
}

func toAny(ss []string) []any {
	out := make([]any, len(ss))
	for i, s := range ss {
		out[i] = s
	}
	return out
}

// TestFinishTakeUndecodable: entries the script takes as live but Go
// cannot decode, among decodable ones: each is moved to the dead-letter
// list once, by one follow-up request, and the decodable ones are handed
// over with the lock kept.
func TestFinishTakeUndecodable(t *testing.T) {
	badJSON := func(n int) string {
		return `{"message":,"n":` + itoa(int64(n)) + `,"expiresAt":` + itoa(farFuture) + `}`
	}
	invalidUTF8 := "{\"message\":\"\xff\",\"expiresAt\":" + itoa(farFuture) + "}"
	const noExpiry = `{"message":1}`

	t.Run("among decodable ones", func(t *testing.T) {
		env := newStateEnv(t)
		c, s := env.client, env.state
		warmFinish(t, s)
		lock := mustAcquire(t, s, "t", time.Minute)
		mustDo(t, c, "RPUSH", "chat-sdk:queue:t", badJSON(1), entryJSON("a", farFuture), noExpiry)
		if _, err := env.srv.Do("RPUSH", "chat-sdk:queue:t", invalidUTF8); err != nil {
			t.Fatal(err)
		}
		mustDo(t, c, "RPUSH", "chat-sdk:queue:t", entryJSON("b", farFuture), badJSON(2), entryJSON("c", farFuture))
		env.srv.ResetStats()
		res := finish(t, s, upstash.FinishRequest{Lock: lock, LockTTL: time.Minute, Take: 5, Append: []upstash.ListAppend{{Key: "h", Value: 1}}})
		if got := handedOver(res); strings.Join(got, " ") != `"a" "b"` || res.DeadLettered != 4 || res.DeadLetterErr != nil {
			t.Fatalf("Finish = %q, %d dead-lettered (%v); want a b, 4 dead-lettered", got, res.DeadLettered, res.DeadLetterErr)
		}
		if n := env.srv.Stats().TotalRequests; n != 2 {
			t.Errorf("%d requests, want the Finish and one follow-up", n)
		}
		// The script's own first, then the follow-up's in queue order.
		dead := rawStrings(t, c, "LRANGE", "chat-sdk:queue-corrupt:t", 0, -1)
		if want := []string{noExpiry, badJSON(1), invalidUTF8, badJSON(2)}; fmt.Sprintf("%q", dead) != fmt.Sprintf("%q", want) {
			t.Errorf("dead-letter list = %q, want %q", dead, want)
		}
		if items := queueItems(t, c, "t"); len(items) != 1 || items[0] != entryJSON("c", farFuture) {
			t.Errorf("queue = %q, want only c", items)
		}
		if got := rawString(t, c, "GET", "chat-sdk:lock:t"); got != lock.Token {
			t.Error("the lock is not kept for the entries handed over")
		}
		if n := rawInt(t, c, "LLEN", "chat-sdk:list:h"); n != 1 {
			t.Errorf("the append ran %d times, want once", n)
		}
	})

	t.Run("all undecodable: the follow-up goes on", func(t *testing.T) {
		env := newStateEnv(t)
		c, s := env.client, env.state
		warmFinish(t, s)
		lock := mustAcquire(t, s, "t", time.Minute)
		mustDo(t, c, "RPUSH", "chat-sdk:queue:t", badJSON(1), badJSON(2), entryJSON("a", farFuture), badJSON(3), entryJSON("b", farFuture), entryJSON("c", farFuture))
		env.srv.ResetStats()
		res := finish(t, s, upstash.FinishRequest{Lock: lock, LockTTL: time.Minute, Take: 2, Append: []upstash.ListAppend{{Key: "h", Value: 1}}})
		// Request 1 pops bad1 and bad2; the follow-up moves them and pops
		// a and bad3; a second follow-up moves bad3 only.
		if got := handedOver(res); strings.Join(got, " ") != `"a"` || res.DeadLettered != 3 || res.DeadLetterErr != nil {
			t.Fatalf("Finish = %q, %d dead-lettered (%v); want a, 3 dead-lettered", got, res.DeadLettered, res.DeadLetterErr)
		}
		if n := env.srv.Stats().TotalRequests; n != 3 {
			t.Errorf("%d requests, want the Finish and two follow-ups", n)
		}
		dead := rawStrings(t, c, "LRANGE", "chat-sdk:queue-corrupt:t", 0, -1)
		if want := []string{badJSON(1), badJSON(2), badJSON(3)}; fmt.Sprintf("%q", dead) != fmt.Sprintf("%q", want) {
			t.Errorf("dead-letter list = %q, want %q", dead, want)
		}
		if n := rawInt(t, c, "LLEN", "chat-sdk:queue:t"); n != 2 {
			t.Errorf("%d entries left queued, want b and c", n)
		}
		if n := rawInt(t, c, "LLEN", "chat-sdk:list:h"); n != 1 {
			t.Errorf("the append ran %d times, want once (follow-ups write nothing)", n)
		}
		res = finish(t, s, upstash.FinishRequest{Lock: lock, LockTTL: time.Minute, Take: 2})
		if got := handedOver(res); strings.Join(got, " ") != `"b" "c"` {
			t.Errorf("next Finish handed over %q, want b c", got)
		}
	})

	t.Run("all undecodable, then released", func(t *testing.T) {
		env := newStateEnv(t)
		c, s := env.client, env.state
		lock := mustAcquire(t, s, "t", time.Minute)
		mustDo(t, c, "RPUSH", "chat-sdk:queue:t", badJSON(1), badJSON(2))
		res := finish(t, s, upstash.FinishRequest{Lock: lock, LockTTL: time.Minute, Take: 3})
		if res.Next != nil || res.More != nil || res.DeadLettered != 2 {
			t.Errorf("Finish = %+v, want released, 2 dead-lettered", res)
		}
		if exists(t, c, "chat-sdk:lock:t") || exists(t, c, "chat-sdk:queue:t") {
			t.Error("the lock or the queue is left")
		}
		if n := rawInt(t, c, "LLEN", "chat-sdk:queue-corrupt:t"); n != 2 {
			t.Errorf("dead-letter list has %d entries, want 2", n)
		}
	})

	// The follow-up's reply is lost (once, or on every attempt), or it is
	// refused on every attempt: the entries are moved once or, if it never
	// ran, stay in the record; the decodable entries are handed over.
	for _, fc := range []struct {
		name      string
		inject    func(srv *upstashtest.Server)
		moved     bool // the bad entries end up in the dead-letter list
		reportErr bool // DeadLetterErr set
	}{
		{"reply lost once", func(srv *upstashtest.Server) { srv.DropResponseNext(1) }, true, false},
		{"reset once", func(srv *upstashtest.Server) { srv.ResetNext(1) }, true, false},
		{"every reply lost", func(srv *upstashtest.Server) { srv.DropResponseNext(1000) }, true, true},
		{"every attempt refused", func(srv *upstashtest.Server) { srv.FailNext(1000, 503) }, false, true},
	} {
		t.Run("follow-up "+fc.name, func(t *testing.T) {
			env := newHookedEnv(t)
			c, s := env.other, env.state
			warmFinish(t, s)
			lock := mustAcquire(t, s, "t", time.Minute)
			mustDo(t, c, "RPUSH", "chat-sdk:queue:t", entryJSON("a", farFuture), badJSON(1), entryJSON("b", farFuture), badJSON(2), entryJSON("c", farFuture))
			env.hook.arm(func(n int) {
				if n == 2 {
					fc.inject(env.srv)
				}
			})
			res, err := s.Finish(ctxT(t), upstash.FinishRequest{Lock: lock, LockTTL: time.Minute, Take: 4})
			env.hook.arm(nil)
			env.srv.ClearFaults()
			if err != nil {
				t.Fatalf("Finish: %v, want the entries handed over", err)
			}
			if got := handedOver(res); strings.Join(got, " ") != `"a" "b"` {
				t.Errorf("handed over %q, want a b", got)
			}
			if fc.reportErr {
				if !errors.Is(res.DeadLetterErr, upstash.ErrOutcomeUnknown) || !strings.HasPrefix(res.DeadLetterErr.Error(), "upstash: Finish: ") || res.DeadLettered != 0 {
					t.Errorf("DeadLetterErr %v, DeadLettered %d; want ErrOutcomeUnknown, 0", res.DeadLetterErr, res.DeadLettered)
				}
			} else if res.DeadLetterErr != nil || res.DeadLettered != 2 {
				t.Errorf("DeadLetterErr %v, DeadLettered %d; want nil, 2", res.DeadLetterErr, res.DeadLettered)
			}
			dead := rawStrings(t, c, "LRANGE", "chat-sdk:queue-corrupt:t", 0, -1)
			want := []string{}
			if fc.moved {
				want = []string{badJSON(1), badJSON(2)} // once each, whatever the retries
			}
			if fmt.Sprintf("%q", dead) != fmt.Sprintf("%q", want) {
				t.Errorf("dead-letter list = %q, want %q", dead, want)
			}
			if items := queueItems(t, c, "t"); len(items) != 1 {
				t.Errorf("queue = %q, want only c", items)
			}
			if got := rawString(t, c, "GET", "chat-sdk:lock:t"); got != lock.Token {
				t.Error("the lock is not kept")
			}
		})
	}

	t.Run("lock lost before the follow-up that goes on", func(t *testing.T) {
		env := newHookedEnv(t)
		c, s := env.other, env.state
		warmFinish(t, s)
		lock := mustAcquire(t, s, "t", time.Minute)
		mustDo(t, c, "RPUSH", "chat-sdk:queue:t", badJSON(1), badJSON(2), entryJSON("a", farFuture))
		env.hook.arm(func(n int) {
			if n == 2 {
				mustDo(t, c, "DEL", "chat-sdk:lock:t")
			}
		})
		res, err := s.Finish(ctxT(t), upstash.FinishRequest{Lock: lock, LockTTL: time.Minute, Take: 2})
		env.hook.arm(nil)
		if !errors.Is(err, upstash.ErrLockNotHeld) || res.DeadLettered != 2 || res.Next != nil {
			t.Errorf("Finish = %+v, %v; want ErrLockNotHeld with 2 dead-lettered", res, err)
		}
		if n := rawInt(t, c, "LLEN", "chat-sdk:queue-corrupt:t"); n != 2 {
			t.Errorf("dead-letter list has %d entries, want 2", n)
		}
		if items := queueItems(t, c, "t"); len(items) != 1 {
			t.Errorf("queue = %q, want a left for the next holder", items)
		}
	})
}

// TestFinishTakeRepliesAnyBytes: the reply carries entries of any length
// and content (length-prefixed), up to several large ones at once.
func TestFinishTakeRepliesAnyBytes(t *testing.T) {
	env := newStateEnv(t)
	c, s := env.client, env.state
	lock := mustAcquire(t, s, "t", time.Minute)
	big := strings.Repeat("x:9:", 64<<10)
	msgs := []string{"", big, "1:", ":", "0:0:0:0:", "n:1:2:3:4:", big + "é"}
	for _, m := range msgs {
		mustDo(t, c, "RPUSH", "chat-sdk:queue:t", entryJSON(m, farFuture))
	}
	res := finish(t, s, upstash.FinishRequest{Lock: lock, LockTTL: time.Minute, Take: len(msgs)})
	got := handedOver(res)
	if len(got) != len(msgs) {
		t.Fatalf("%d entries handed over, want %d", len(got), len(msgs))
	}
	for i, m := range msgs {
		var s string
		if err := json.Unmarshal([]byte(got[i]), &s); err != nil || s != m {
			t.Errorf("entry %d = %.40q, want %.40q", i, got[i], m)
		}
	}
	if exists(t, c, "chat-sdk:queue:t") {
		t.Error("entries left queued")
	}
}

func TestFinishReplyParser(t *testing.T) {
	entries := []string{"", "a", "1:", "::", "n:1:2:3:4:", strings.Repeat("9", 100)}
	r := "n:2:1:" + itoa(int64(len(entries))) + ":"
	for _, e := range entries {
		r += itoa(int64(len(e))) + ":" + e
	}
	kind, expired, dead, got, ok := upstash.ParseFinishReply(r)
	if !ok || kind != 'n' || expired != 2 || dead != 1 || len(got) != len(entries) {
		t.Fatalf("ParseFinishReply = %c %d %d %q %v", kind, expired, dead, got, ok)
	}
	for i, e := range entries {
		if string(got[i]) != e {
			t.Errorf("entry %d = %q, want %q", i, got[i], e)
		}
	}
	for _, good := range []string{"r:0:0:0:", "h:0:3:0:", "d:0:2:0:"} {
		if _, _, _, _, ok := upstash.ParseFinishReply(good); !ok {
			t.Errorf("%q refused", good)
		}
	}
	for _, bad := range []string{
		"", "n", "n:0:0:", "n:0:0:0:", // no entry for kind n
		"r:0:0:1:1:a",                 // entries with kind r
		"n:0:0:1:2:a", "n:0:0:1:1:ab", // length past the end, trailing bytes
		"n:0:0:2:1:a", "n:0:0:1::a", "n:0:0:1:-1:a", "n:0:0:1:x:a",
		"n:0:0:99999999999999999999:1:a", "n:-1:0:1:1:a", "x:0:0:0:", "nn:0:0:0:",
		"n:0:0:1:1:a:",
	} {
		if _, _, _, _, ok := upstash.ParseFinishReply(bad); ok {
			t.Errorf("%q accepted", bad)
		}
	}
}

// TestFinishTakeRequests: a drain of n queued entries costs one Finish
// with Take n (then one that releases), where Take 1 costs n + 1.
func TestFinishTakeRequests(t *testing.T) {
	env := newStateEnv(t)
	c, s := env.client, env.state
	warmFinish(t, s)
	for _, take := range []int{1, 10} {
		lock := mustAcquire(t, s, "t", time.Minute)
		for i := 0; i < 5; i++ {
			mustDo(t, c, "RPUSH", "chat-sdk:queue:t", entryJSON("m"+itoa(int64(i)), farFuture))
		}
		env.srv.ResetStats()
		handed := 0
		for {
			res := finish(t, s, upstash.FinishRequest{Lock: lock, LockTTL: time.Minute, Take: take})
			if res.Next == nil {
				break
			}
			handed += 1 + len(res.More)
		}
		want := int64(6)
		if take > 1 {
			want = 2
		}
		if n := env.srv.Stats().TotalRequests; handed != 5 || n != want {
			t.Errorf("Take %d: %d entries in %d requests, want 5 in %d", take, handed, n, want)
		}
	}
}
