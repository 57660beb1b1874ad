package upstash_test

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/chatstate/upstash"
)

func TestStateLayoutQueue(t *testing.T) {
	env := newStateEnv(t)
	ctx, c, s := ctxT(t), env.client, env.state
	enq := time.UnixMilli(time.Now().UnixMilli())
	e := upstash.QueueEntry{Message: json.RawMessage(`{"text":"hi"}`), EnqueuedAt: enq, ExpiresAt: enq.Add(90 * time.Second)}
	n, err := s.Enqueue(ctx, "T1", e, 10)
	must(t, err)
	if n != 1 {
		t.Fatalf("Enqueue = %d", n)
	}
	want := `{"message":{"text":"hi"},"enqueuedAt":` + itoa(enq.UnixMilli()) + `,"expiresAt":` + itoa(enq.UnixMilli()+90000) + `}`
	if got := rawString(t, c, "LINDEX", "chat-sdk:queue:T1", 0); got != want {
		t.Errorf("LINDEX chat-sdk:queue:T1 0 =\n%s\nwant\n%s", got, want)
	}
	// The list TTL is max(entry's remaining time, 60 s).
	wantTTLBetween(t, c, "chat-sdk:queue:T1", 88*time.Second, 90*time.Second)
	short, err := upstash.NewQueueEntry("x", 5*time.Second)
	must(t, err)
	_, err = s.Enqueue(ctx, "T2", short, 0)
	must(t, err)
	wantTTLBetween(t, c, "chat-sdk:queue:T2", 59*time.Second, 60*time.Second)

	// An entry written by TypeScript is dequeued.
	now := time.Now().UnixMilli()
	mustDo(t, c, "RPUSH", "chat-sdk:queue:T3",
		`{"message":{"id":"old"},"enqueuedAt":1,"expiresAt":2}`,
		`{"message":{"id":"m1","raw":{"a":[1,2]}},"enqueuedAt":`+itoa(now)+`,"expiresAt":`+itoa(now+90000)+`}`)
	got, err := s.Dequeue(ctx, "T3")
	must(t, err)
	if got == nil || string(got.Message) != `{"id":"m1","raw":{"a":[1,2]}}` || got.ExpiresAt.UnixMilli() != now+90000 {
		t.Fatalf("Dequeue of TypeScript entries = %+v", got)
	}
	if n := rawInt(t, c, "LLEN", "chat-sdk:queue:T3"); n != 0 {
		t.Errorf("LLEN after dequeuing = %d, want 0 (the expired entry is discarded)", n)
	}

	// Entries the script cannot read from their tail are decoded in full:
	// another key order, whitespace. A message nested deeper than cjson
	// decodes is read from the tail.
	deep := strings.Repeat("[", 1000) + strings.Repeat("]", 1000)
	exp := itoa(now + 90000)
	for name, entry := range map[string]string{
		"expiresAt first": `{"expiresAt":` + exp + `,"message":"a","enqueuedAt":1}`,
		"spaces":          `{ "message" : "b" , "enqueuedAt" : 1 , "expiresAt" : ` + exp + ` }`,
		"deep message":    `{"message":` + deep + `,"enqueuedAt":1,"expiresAt":` + exp + `}`,
		"float expiresAt": `{"message":"c","enqueuedAt":1,"expiresAt":` + exp + `.5}`,
	} {
		mustDo(t, c, "RPUSH", "chat-sdk:queue:T4", `{"message":"stale","enqueuedAt":1,"expiresAt":2}`, entry)
		got, err := s.Dequeue(ctx, "T4")
		if err != nil || got == nil || got.ExpiresAt.UnixMilli() != now+90000 {
			t.Errorf("Dequeue of an entry with %s = %+v, %v", name, got, err)
		}
		if n := rawInt(t, c, "LLEN", "chat-sdk:queue:T4"); n != 0 {
			t.Errorf("%s: LLEN after Dequeue = %d, want 0", name, n)
		}
	}
}

func TestStateCorruptQueueEntries(t *testing.T) {
	env := newStateEnv(t)
	ctx, c, s := ctxT(t), env.client, env.state
	var ce *upstash.CorruptValueError
	// A corrupt queue entry is moved to the dead-letter list, not lost, and
	// does not block the queue: the next Dequeue returns the next entry.
	// The last case has a readable expiresAt at its end but is not JSON, so
	// the script pops it and Go moves it.
	for _, bad := range []string{`not json`, `{"message":1}`, `{"message":1,"expiresAt":"soon"}`, `[1,2]`, `"str"`, `{"message":,"expiresAt":99999999999999}`} {
		mustDo(t, c, "DEL", "chat-sdk:queue:bad", "chat-sdk:queue-corrupt:bad")
		mustDo(t, c, "RPUSH", "chat-sdk:queue:bad", bad, `{"message":2,"enqueuedAt":1,"expiresAt":99999999999999}`)
		e, err := s.Dequeue(ctx, "bad")
		if !errors.As(err, &ce) || e != nil || ce.Key != "chat-sdk:queue:bad" || string(ce.Raw) != bad {
			t.Errorf("Dequeue with head %s = %v, %v (%+v); want a *CorruptValueError", bad, e, err, ce)
			continue
		}
		if !strings.Contains(err.Error(), "chat-sdk:queue-corrupt:bad") {
			t.Errorf("Dequeue error %q does not name the dead-letter list", err)
		}
		dead := rawStrings(t, c, "LRANGE", "chat-sdk:queue-corrupt:bad", "0", "-1")
		if len(dead) != 1 || dead[0] != bad {
			t.Errorf("dead-letter list after Dequeue of %s = %q, want exactly the corrupt entry", bad, dead)
		}
		if ttl := rawInt(t, c, "PTTL", "chat-sdk:queue-corrupt:bad"); ttl <= 0 || ttl > 7*24*3600*1000 {
			t.Errorf("dead-letter list PTTL = %d ms, want (0, 7 days]", ttl)
		}
		next, err := s.Dequeue(ctx, "bad")
		if err != nil || next == nil || string(next.Message) != "2" {
			t.Errorf("Dequeue after the corrupt entry %s = %+v, %v; want the next entry", bad, next, err)
		}
	}
}

func TestStateScriptCacheFlushed(t *testing.T) {
	env := newStateEnv(t)
	ctx, s := ctxT(t), env.state
	e, err := upstash.NewQueueEntry("m", time.Minute)
	must(t, err)
	_, err = s.Enqueue(ctx, "q", e, 0)
	must(t, err)
	mustDo(t, env.client, "SCRIPT", "FLUSH")
	got, err := s.Dequeue(ctx, "q")
	must(t, err)
	if got == nil || string(got.Message) != `"m"` {
		t.Fatalf("Dequeue after SCRIPT FLUSH = %+v", got)
	}
}

func TestQueueEntryJSON(t *testing.T) {
	e := upstash.QueueEntry{Message: json.RawMessage(`{"id":"m1","text":"a<b"}`), EnqueuedAt: time.UnixMilli(1712345678901), ExpiresAt: time.UnixMilli(1712345768901)}
	b, err := e.MarshalJSON()
	must(t, err)
	if want := `{"message":{"id":"m1","text":"a<b"},"enqueuedAt":1712345678901,"expiresAt":1712345768901}`; string(b) != want {
		t.Errorf("QueueEntry.MarshalJSON =\n%s\nwant\n%s", b, want)
	}
	var back upstash.QueueEntry
	must(t, json.Unmarshal(b, &back))
	if string(back.Message) != string(e.Message) || !back.EnqueuedAt.Equal(e.EnqueuedAt) || !back.ExpiresAt.Equal(e.ExpiresAt) {
		t.Errorf("round trip = %+v, want %+v", back, e)
	}
	b, err = json.Marshal(upstash.QueueEntry{})
	must(t, err)
	if want := `{"message":null,"enqueuedAt":0,"expiresAt":0}`; string(b) != want {
		t.Errorf("json.Marshal(QueueEntry{}) = %s, want %s", b, want)
	}
	if err := json.Unmarshal([]byte(`{"message":1,"expiresAt":"later"}`), &back); err == nil {
		t.Error("a string expiresAt decoded without error")
	}

	before := time.Now()
	ne, err := upstash.NewQueueEntry(map[string]string{"text": "hi"}, 90*time.Second)
	must(t, err)
	if string(ne.Message) != `{"text":"hi"}` {
		t.Errorf("NewQueueEntry message = %s", ne.Message)
	}
	if ne.EnqueuedAt.Before(before.Add(-time.Millisecond)) || ne.EnqueuedAt.After(time.Now()) || ne.ExpiresAt.Sub(ne.EnqueuedAt) != 90*time.Second {
		t.Errorf("NewQueueEntry times = %v, %v", ne.EnqueuedAt, ne.ExpiresAt)
	}
	for _, ttl := range []time.Duration{0, -time.Second} {
		if _, err := upstash.NewQueueEntry("x", ttl); !errors.Is(err, upstash.ErrInvalidArgument) {
			t.Errorf("NewQueueEntry with ttl %v: %v", ttl, err)
		}
	}
}

func itoa(n int64) string {
	b, _ := json.Marshal(n)
	return string(b)
}

// TestDequeueKeepsEntryExpiringNow: an entry whose expiresAt is this very
// millisecond is live, as in the Chat SDK core (now <= expiresAt); one a
// millisecond older is discarded.
func TestDequeueKeepsEntryExpiringNow(t *testing.T) {
	env := newStateEnv(t)
	clk := upstash.NewManualClock()
	upstash.SetClock(env.state, clk)
	now := clk.Now().UnixMilli()
	mustDo(t, env.client, "RPUSH", "chat-sdk:queue:q",
		`{"message":"stale","enqueuedAt":1,"expiresAt":`+itoa(now-1)+`}`,
		`{"message":"now","enqueuedAt":1,"expiresAt":`+itoa(now)+`}`)
	e, err := env.state.Dequeue(ctxT(t), "q")
	must(t, err)
	if e == nil || string(e.Message) != `"now"` {
		t.Fatalf("Dequeue = %+v, want the entry expiring now", e)
	}
	if n := rawInt(t, env.client, "LLEN", "chat-sdk:queue:q"); n != 0 {
		t.Errorf("LLEN = %d, want 0", n)
	}
}
