package flow

import (
	"bytes"
	"context"
	"encoding/json"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/chatstate/upstash"
	"github.com/chatstate/upstash/internal/testtool"
	"github.com/chatstate/upstash/upstashtest"
)

func TestWorkload(t *testing.T) {
	const n, threads = 45, 4
	w := Workload(n, threads)
	if len(w) != n {
		t.Fatalf("len = %d, want %d", len(w), n)
	}
	dups := 0
	seen := map[string]Webhook{}
	for i, x := range w {
		if prev, ok := seen[x.MessageID]; ok {
			dups++
			if prev != x || i%DupEvery != DupEvery-1 {
				t.Errorf("webhook %d = %+v repeats %+v at an unexpected index", i, x, prev)
			}
			continue
		}
		seen[x.MessageID] = x
		if want := (Webhook{Seq: i, MessageID: "m" + strconv.Itoa(i), ThreadID: ThreadName(i % threads)}); x != want {
			t.Errorf("webhook %d = %+v, want %+v", i, x, want)
		}
	}
	if dups != Duplicates(n) || dups != 4 {
		t.Errorf("%d duplicates, Duplicates(%d) = %d, want 4", dups, n, Duplicates(n))
	}
}

func TestPercentile(t *testing.T) {
	v := []int64{50, 10, 40, 20, 30}
	for _, c := range []struct {
		p    float64
		want int64
	}{{50, 30}, {99, 50}, {100, 50}, {1, 10}, {20, 10}, {21, 20}} {
		if got := Percentile(v, c.p); got != c.want {
			t.Errorf("Percentile(%v, %v) = %d, want %d", v, c.p, got, c.want)
		}
	}
	if v[0] != 50 {
		t.Errorf("Percentile reordered its input: %v", v)
	}
	if got := Percentile(nil, 50); got != 0 {
		t.Errorf("Percentile(nil) = %d", got)
	}
}

func newState(t *testing.T, opts ...upstash.Option) (*upstash.State, *upstashtest.Server) {
	t.Helper()
	srv := upstashtest.NewServer(t)
	c, err := upstash.New(upstash.Config{URL: srv.URL, Token: srv.Token}, opts...)
	if err != nil {
		t.Fatal(err)
	}
	return upstash.NewState(c), srv
}

func intReply(t *testing.T, srv *upstashtest.Server, cmd string, args ...any) int {
	t.Helper()
	v, err := srv.Do(cmd, args...)
	if err != nil {
		t.Fatal(err)
	}
	n, ok := v.(int64)
	if !ok {
		t.Fatalf("%s %v replied %T %v", cmd, args, v, v)
	}
	return int(n)
}

// TestRunAccountsForEveryWebhook runs the flow with contention and checks
// that every webhook is handled, queued or a duplicate, and that what was
// handled or drained left exactly one trace in the thread state and the
// history.
func TestRunAccountsForEveryWebhook(t *testing.T) {
	for _, name := range []string{"calls", "fused", "chatflow"} {
		t.Run(name, func(t *testing.T) { testRunAccountsForEveryWebhook(t, name) })
	}
}

// handler returns the flow called name over st.
func handler(t *testing.T, name string, st *upstash.State) Handler {
	t.Helper()
	switch name {
	case "fused":
		return NewFused(st)
	case "chatflow":
		h, err := NewChatflow(st)
		if err != nil {
			t.Fatal(err)
		}
		return h
	}
	return NewCalls(st)
}

func testRunAccountsForEveryWebhook(t *testing.T, name string) {
	st, srv := newState(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	h := handler(t, name, st)
	if err := h.Warmup(ctx); err != nil {
		t.Fatal(err)
	}
	const n, callers, threads = 60, 6, 3
	res := Run(ctx, h, Workload(n, threads), callers)
	if res.Errors != 0 {
		t.Fatalf("%d errors, first: %s", res.Errors, res.FirstError)
	}
	if res.Handled+res.Queued+res.Duplicates != n || res.Duplicates != Duplicates(n) {
		t.Fatalf("handled %d + queued %d + duplicates %d, want %d with %d duplicates", res.Handled, res.Queued, res.Duplicates, n, Duplicates(n))
	}
	if len(res.LatenciesUS) != n || res.Webhooks != n || res.Seconds <= 0 {
		t.Errorf("%d latencies, %d webhooks, %v s", len(res.LatenciesUS), res.Webhooks, res.Seconds)
	}
	// Per webhook at least the dedupe; a handled one also a release.
	if res.Ops < int64(n+res.Handled) {
		t.Errorf("%d state operations for %d webhooks, %d handled", res.Ops, n, res.Handled)
	}
	counted, history, left := 0, 0, 0
	for k := 0; k < threads; k++ {
		id := ThreadName(k)
		raw, err := st.Get(ctx, threadStateKey(id))
		if err != nil || raw == nil {
			t.Fatalf("thread state of %s: %s, %v", id, raw, err)
		}
		var ts ThreadState
		if err := json.Unmarshal(raw, &ts); err != nil {
			t.Fatal(err)
		}
		counted += ts.Count
		items, err := st.GetList(ctx, historyKey(id))
		if err != nil {
			t.Fatal(err)
		}
		history += len(items)
		left += intReply(t, srv, "LLEN", "chat-sdk:queue:"+id)
		if n := intReply(t, srv, "EXISTS", "chat-sdk:lock:"+id); n != 0 {
			t.Errorf("lock of %s still held after the run", id)
		}
	}
	// chatflow appends every admitted message to the history, queued ones
	// too (before the lock, as the Chat SDK core does); the others append
	// what they handle.
	wantHistory := counted
	if name == "chatflow" {
		wantHistory = res.Handled + res.Queued
		if res.HandedTwice == nil || *res.HandedTwice != 0 {
			t.Errorf("messages handed over twice: %v", res.HandedTwice)
		}
		for _, st := range []Status{Handled, Queued, Duplicate} {
			if res.Calls[st] == 0 {
				t.Errorf("no state calls counted for %s webhooks: %v", st, res.Calls)
			}
		}
		// Every duplicate is one Admit.
		if res.Calls[Duplicate] != int64(res.Duplicates) {
			t.Errorf("%d calls for %d duplicates", res.Calls[Duplicate], res.Duplicates)
		}
	} else if res.HandedTwice != nil || res.Calls != nil {
		t.Errorf("%s counts calls %v or messages handed twice %v", name, res.Calls, res.HandedTwice)
	}
	if counted != res.Handled+res.Drained || history != wantHistory {
		t.Errorf("thread states count %d, history holds %d; want handled %d + drained %d, and %d", counted, history, res.Handled, res.Drained, wantHistory)
	}
	// Entries beyond MaxQueue are trimmed; none is drained twice.
	if res.Drained+left > res.Queued {
		t.Errorf("drained %d + left %d > queued %d", res.Drained, left, res.Queued)
	}
}

// TestHandleOutcomes walks one thread through the four outcomes the
// harness's profile measures, with each flow, and counts the HTTP requests
// of each step: the fused flow's are issue 11's limits (2 per handled
// webhook, 1 per duplicate, queued or drained message).
func TestHandleOutcomes(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts []upstash.Option
		// requests of: handled, duplicate, queued, handled draining one
		want [4]int64
	}{
		{"calls", []upstash.Option{upstash.WithAutoPipelining(false)}, [4]int64{8, 1, 5, 12}},
		{"fused", nil, [4]int64{2, 1, 1, 3}},
		// chatflow's Admit and Finish: the handler's thread state read is
		// answered from Admit's and its write rides on Finish
		// (WithDeferredWrites); the drain is the holder's Finish handing
		// the queue over, and one more releasing after its turn.
		{"chatflow", nil, [4]int64{2, 1, 1, 3}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st, srv := newState(t, tc.opts...)
			ctx := context.Background()
			h := handler(t, tc.name, st)
			if err := h.Warmup(ctx); err != nil {
				t.Fatal(err)
			}
			w1 := Webhook{Seq: 1, MessageID: "p1", ThreadID: "bench:P"}
			step := 0
			check := func(w Webhook, want Outcome) {
				t.Helper()
				before := srv.Stats().TotalRequests
				got, err := h.Handle(ctx, w)
				if tc.name == "chatflow" {
					// Alone, each state call is one request; the handler
					// makes none of its own.
					want.Calls = int(tc.want[step])
				}
				if err != nil || got != want {
					t.Fatalf("Handle(%+v) = %+v, %v; want %+v", w, got, err, want)
				}
				if n := srv.Stats().TotalRequests - before; n != tc.want[step] {
					t.Errorf("Handle(%+v) (%s): %d HTTP requests, want %d", w, want.Status, n, tc.want[step])
				}
				step++
			}
			check(w1, Outcome{Status: Handled})
			check(w1, Outcome{Status: Duplicate})
			if _, err := srv.Do("SET", "chat-sdk:lock:bench:P", "elsewhere", "PX", 60000); err != nil {
				t.Fatal(err)
			}
			check(Webhook{Seq: 2, MessageID: "p2", ThreadID: "bench:P"}, Outcome{Status: Queued})
			if _, err := srv.Do("DEL", "chat-sdk:lock:bench:P"); err != nil {
				t.Fatal(err)
			}
			check(Webhook{Seq: 3, MessageID: "p3", ThreadID: "bench:P"}, Outcome{Status: Handled, Drained: 1})
			items, err := st.GetList(ctx, historyKey("bench:P"))
			if err != nil || len(items) != 3 {
				t.Fatalf("history: %d items, %v; want 3", len(items), err)
			}
			// chatflow appends in its Admit, so in arrival order.
			lastID := map[bool]string{true: "p3", false: "p2"}[tc.name == "chatflow"]
			var last Message
			if err := json.Unmarshal(items[2], &last); err != nil || last.ID != lastID || string(last.Raw) != "null" {
				t.Errorf("last history item %s (%v): want message %s with raw null", items[2], err, lastID)
			}
			if tc.name == "chatflow" && !bytes.Equal(items[2], historyJSON(t, Webhook{Seq: 3, MessageID: "p3", ThreadID: "bench:P"})) {
				t.Errorf("chatflow's history item %s differs from the other flows' message JSON", items[2])
			}
			raw, err := st.Get(ctx, threadStateKey("bench:P"))
			var ts ThreadState
			if err != nil || json.Unmarshal(raw, &ts) != nil || ts.Count != 3 || ts.Last != "p2" {
				t.Errorf("thread state %s (%v): want count 3, last p2", raw, err)
			}
			if n := intReply(t, srv, "EXISTS", "chat-sdk:lock:bench:P"); n != 0 {
				t.Error("lock still held")
			}
			if n := h.Ops(); n != 8+1+5+12+wantWarmupOps(tc.name) {
				t.Errorf("%d state operations counted, want the same as call by call", n)
			}
		})
	}
}

// wantWarmupOps is the operations each flow's Warmup counts.
func wantWarmupOps(name string) int64 {
	switch name {
	case "fused":
		return 8 // one handled webhook
	case "chatflow":
		return 5 + 12 // one queued webhook, one handled draining it
	}
	return 8 + 2 // one handled webhook, an enqueue and a dequeue
}

// TestNodeFlowMirrorsGo runs bench/node/flow.mjs (which imports no
// package) and compares its workload and message JSON with Go's, byte for
// byte.
func TestNodeFlowMirrorsGo(t *testing.T) {
	node := testtool.RequireNode(t, "install Node.js 20 or later (e.g. apt-get install -y nodejs npm)")
	dir, err := filepath.Abs(filepath.Join("..", "..", "node"))
	if err != nil {
		t.Fatal(err)
	}
	const n, threads = 25, 3
	script := `import { workload, newMessage } from "./flow.mjs";
for (const w of workload(` + strconv.Itoa(n) + `, ` + strconv.Itoa(threads) + `)) {
  console.log(JSON.stringify(w) + "\t" + JSON.stringify(newMessage(w)) + "\t" + JSON.stringify({ ...newMessage(w), raw: null }));
}`
	cmd := exec.Command(node, "--input-type=module", "-e", script)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("node: %v\n%s", err, out)
	}
	lines := bytes.Split(bytes.TrimSpace(out), []byte("\n"))
	want := Workload(n, threads)
	if len(lines) != len(want) {
		t.Fatalf("node printed %d lines, want %d:\n%s", len(lines), len(want), out)
	}
	for i, line := range lines {
		parts := bytes.Split(line, []byte("\t"))
		if len(parts) != 3 {
			t.Fatalf("line %d: %s", i, line)
		}
		var w struct {
			Seq       int    `json:"seq"`
			MessageID string `json:"messageId"`
			ThreadID  string `json:"threadId"`
		}
		if err := json.Unmarshal(parts[0], &w); err != nil {
			t.Fatal(err)
		}
		if got := (Webhook{Seq: w.Seq, MessageID: w.MessageID, ThreadID: w.ThreadID}); got != want[i] {
			t.Errorf("webhook %d: node %+v, go %+v", i, got, want[i])
		}
		m := NewMessage(want[i])
		full, err := json.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		m.Raw = json.RawMessage("null")
		history, err := json.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(parts[1], full) || !bytes.Equal(parts[2], history) {
			t.Errorf("message %d differs:\nnode %s\ngo   %s\nnode %s\ngo   %s", i, parts[1], full, parts[2], history)
		}
	}
}

// historyJSON is the history item NewMessage(w) makes: the message with a
// null raw payload.
func historyJSON(t *testing.T, w Webhook) []byte {
	t.Helper()
	m := NewMessage(w)
	m.Raw = json.RawMessage("null")
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestChatMessageMatchesMessage checks that the chatflow configuration's
// messages are the same JSON as the other configurations' (and Node's).
func TestChatMessageMatchesMessage(t *testing.T) {
	for _, w := range Workload(12, 3) {
		want, err := json.Marshal(NewMessage(w))
		if err != nil {
			t.Fatal(err)
		}
		got, err := json.Marshal(NewChatMessage(w))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("webhook %+v:\nchatflow %s\nflow     %s", w, got, want)
		}
	}
}
