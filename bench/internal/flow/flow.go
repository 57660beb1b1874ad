// Package flow is the benchmark's workload: the Chat SDK webhook flow over
// an upstash.State, and the deterministic list of webhooks a run handles.
// bench/node/flow.mjs does exactly the same steps with @upstash/redis;
// keep the two in step (bench/README.md describes the flow once).
package flow

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/chatstate/upstash"
)

// The Chat SDK core's constants (chat-state-semantics.md §2.1).
const (
	DedupeTTL      = 10 * time.Minute
	LockTTL        = 30 * time.Second
	QueueEntryTTL  = 90 * time.Second
	MaxQueue       = 10
	ThreadStateTTL = 30 * 24 * time.Hour
	HistoryMax     = 100
	HistoryTTL     = 7 * 24 * time.Hour
)

// DupEvery makes every DupEvery-th webhook (index i with i%DupEvery ==
// DupEvery-1) a second delivery of webhook i-DupBack: a platform retry.
const (
	DupEvery = 10
	DupBack  = 5
)

// Webhook is one delivery: a message in a thread.
type Webhook struct {
	Seq       int    // index of the message's first delivery
	MessageID string // "m<seq>"
	ThreadID  string // "bench:T<k>"
}

// ThreadName returns the id of thread k.
func ThreadName(k int) string { return "bench:T" + strconv.Itoa(k) }

// Workload returns the n webhooks of a run over the given number of
// threads: webhook i is message "m<i>" of thread i % threads, except that
// every DupEvery-th delivers message i-DupBack again. The same n and threads
// give the same list in Go and in bench/node/flow.mjs.
func Workload(n, threads int) []Webhook {
	threads = max(threads, 1)
	out := make([]Webhook, n)
	for i := range out {
		if i%DupEvery == DupEvery-1 {
			out[i] = out[i-DupBack]
			continue
		}
		out[i] = Webhook{Seq: i, MessageID: "m" + strconv.Itoa(i), ThreadID: ThreadName(i % threads)}
	}
	return out
}

// Duplicates returns how many webhooks of Workload(n, _) are second
// deliveries.
func Duplicates(n int) int { return n / DupEvery }

// Author is Message.author.
type Author struct {
	UserID   string `json:"userId"`
	UserName string `json:"userName"`
	FullName string `json:"fullName"`
	IsBot    bool   `json:"isBot"`
	IsMe     bool   `json:"isMe"`
	IsSystem bool   `json:"isSystem"`
}

// Metadata is Message.metadata.
type Metadata struct {
	DateSent string `json:"dateSent"`
	Edited   bool   `json:"edited"`
}

// Message has the shape of the Chat SDK's Message.toJSON(), fields in the
// same order as the Node driver writes them, so both store the same bytes.
type Message struct {
	Type        string          `json:"_type"`
	ID          string          `json:"id"`
	ThreadID    string          `json:"threadId"`
	Text        string          `json:"text"`
	Formatted   json.RawMessage `json:"formatted"`
	Raw         json.RawMessage `json:"raw"`
	Author      Author          `json:"author"`
	Metadata    Metadata        `json:"metadata"`
	Attachments []struct{}      `json:"attachments"`
	IsMention   bool            `json:"isMention"`
}

// NewMessage returns the message a webhook carries (about 600 bytes of
// JSON, Raw holding the platform payload).
func NewMessage(w Webhook) Message {
	text := "message " + w.MessageID + " in " + w.ThreadID + ": " + strings.Repeat("lorem ipsum ", 6)
	return Message{
		Type:      "chat:Message",
		ID:        w.MessageID,
		ThreadID:  w.ThreadID,
		Text:      text,
		Formatted: json.RawMessage(`{"type":"root","children":[{"type":"paragraph","children":[{"type":"text","value":` + strconv.Quote(text) + `}]}]}`),
		Raw:       json.RawMessage(`{"type":"message","channel":` + strconv.Quote(w.ThreadID) + `,"user":"U0BENCH","ts":"1700000000.` + strconv.Itoa(100000+w.Seq) + `"}`),
		Author:    Author{UserID: "U0BENCH", UserName: "bench", FullName: "Bench User"},
		Metadata:  Metadata{DateSent: "2026-01-01T00:00:00.000Z"},
		// A non-nil empty slice encodes as [], like the Node side.
		Attachments: []struct{}{},
	}
}

// ThreadState is the thread's state, read and written whole.
type ThreadState struct {
	Count      int    `json:"count"`
	Last       string `json:"last"`
	Subscribed bool   `json:"subscribed"`
}

// Status says what became of one webhook.
type Status string

// Outcomes of Handle.
const (
	Handled   Status = "handled"
	Queued    Status = "queued"
	Duplicate Status = "duplicate"
)

// Outcome is the result of one Handle.
type Outcome struct {
	Status  Status `json:"status"`
	Drained int    `json:"drained"` // queued messages this webhook's holder handled
	// Calls counts the state calls this webhook made, its drain and the
	// handler's calls included, and HandlerCalls the handler's; only
	// Chatflow counts them (0 elsewhere).
	Calls        int `json:"calls,omitempty"`
	HandlerCalls int `json:"handler_calls,omitempty"`
}

// Handler handles webhooks. Calls (this file) and the fused configuration
// (fused.go) implement it.
type Handler interface {
	// Warmup opens the connection and loads every script the flow uses,
	// on thread "bench:warmup", so that a measured run starts warm.
	Warmup(ctx context.Context) error
	// Handle runs the flow for one webhook.
	Handle(ctx context.Context, w Webhook) (Outcome, error)
	// Ops returns how many state operations were called so far.
	Ops() int64
}

// Calls is the flow call by call through upstash.State: one State method
// per step, as the Chat SDK core calls its adapter.
type Calls struct {
	State *upstash.State
	ops   atomic.Int64
}

// NewCalls returns the call-by-call flow over st.
func NewCalls(st *upstash.State) *Calls { return &Calls{State: st} }

// Ops implements Handler.
func (f *Calls) Ops() int64 { return f.ops.Load() }

func dedupeKey(w Webhook) string      { return "dedupe:bench:" + w.MessageID }
func threadStateKey(id string) string { return "thread-state:" + id }
func historyKey(id string) string     { return "msg-history:" + id }

// Warmup implements Handler.
func (f *Calls) Warmup(ctx context.Context) error {
	w := Webhook{Seq: -1, MessageID: "warmup", ThreadID: "bench:warmup"}
	if _, err := f.Handle(ctx, w); err != nil {
		return err
	}
	entry, err := upstash.NewQueueEntry(NewMessage(w), QueueEntryTTL)
	if err != nil {
		return err
	}
	f.ops.Add(2)
	if _, err := f.State.Enqueue(ctx, w.ThreadID, entry, MaxQueue); err != nil {
		return err
	}
	_, err = f.State.Dequeue(ctx, w.ThreadID)
	return err
}

// Handle implements Handler: dedupe (SET NX), subscription check
// (SISMEMBER), lock (SET NX PX); when the lock is busy, queue depth (LLEN)
// and enqueue (script), else handle the message (thread state GET and SET,
// history append), drain the queue (dequeue script until empty, handling
// each message the same way) and release (script).
func (f *Calls) Handle(ctx context.Context, w Webhook) (out Outcome, err error) {
	st := f.State
	f.ops.Add(1)
	first, err := st.SetIfNotExists(ctx, dedupeKey(w), true, DedupeTTL)
	if err != nil {
		return out, fmt.Errorf("dedupe: %w", err)
	}
	if !first {
		return Outcome{Status: Duplicate}, nil
	}
	f.ops.Add(2)
	subscribed, err := st.IsSubscribed(ctx, w.ThreadID)
	if err != nil {
		return out, fmt.Errorf("subscription: %w", err)
	}
	lock, err := st.AcquireLock(ctx, w.ThreadID, LockTTL)
	if err != nil {
		return out, fmt.Errorf("lock: %w", err)
	}
	msg := NewMessage(w)
	if lock == nil {
		f.ops.Add(2)
		if _, err := st.QueueDepth(ctx, w.ThreadID); err != nil {
			return out, fmt.Errorf("queue depth: %w", err)
		}
		entry, err := upstash.NewQueueEntry(msg, QueueEntryTTL)
		if err != nil {
			return out, err
		}
		if _, err := st.Enqueue(ctx, w.ThreadID, entry, MaxQueue); err != nil {
			return out, fmt.Errorf("enqueue: %w", err)
		}
		return Outcome{Status: Queued}, nil
	}
	defer func() {
		f.ops.Add(1)
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		if rerr := st.ReleaseLock(rctx, lock); rerr != nil && err == nil {
			err = fmt.Errorf("release: %w", rerr)
		}
	}()
	out.Status = Handled
	if err := f.process(ctx, msg, subscribed); err != nil {
		return out, err
	}
	for {
		f.ops.Add(1)
		e, err := st.Dequeue(ctx, w.ThreadID)
		if err != nil {
			return out, fmt.Errorf("dequeue: %w", err)
		}
		if e == nil {
			return out, nil
		}
		var queued Message
		if err := json.Unmarshal(e.Message, &queued); err != nil {
			return out, fmt.Errorf("queued message: %w", err)
		}
		if err := f.process(ctx, queued, subscribed); err != nil {
			return out, err
		}
		out.Drained++
	}
}

// process is the bot's work on one message under the lock: read the thread
// state, write it back updated, append the message to the history.
func (f *Calls) process(ctx context.Context, m Message, subscribed bool) error {
	st := f.State
	f.ops.Add(3)
	var ts ThreadState
	raw, err := st.Get(ctx, threadStateKey(m.ThreadID))
	if err != nil {
		return fmt.Errorf("thread state: %w", err)
	}
	if raw != nil {
		if err := json.Unmarshal(raw, &ts); err != nil {
			return fmt.Errorf("thread state: %w", err)
		}
	}
	ts = ThreadState{Count: ts.Count + 1, Last: m.ID, Subscribed: subscribed}
	if err := st.Set(ctx, threadStateKey(m.ThreadID), ts, ThreadStateTTL); err != nil {
		return fmt.Errorf("thread state: %w", err)
	}
	m.Raw = json.RawMessage("null") // history keeps no platform payload
	if err := st.AppendToList(ctx, historyKey(m.ThreadID), m, upstash.ListOptions{MaxLength: HistoryMax, TTL: HistoryTTL}); err != nil {
		return fmt.Errorf("history: %w", err)
	}
	return nil
}

// Result is what one Run measured.
type Result struct {
	Webhooks   int     `json:"webhooks"`
	Seconds    float64 `json:"seconds"`
	Handled    int     `json:"handled"`
	Drained    int     `json:"drained"`
	Queued     int     `json:"queued"`
	Duplicates int     `json:"duplicates"`
	Errors     int     `json:"errors"`
	FirstError string  `json:"first_error,omitempty"`
	Ops        int64   `json:"ops"`
	// Calls sums Outcome.Calls by outcome (handled, queued, duplicate),
	// for the handlers that count them.
	Calls map[Status]int64 `json:"calls_by_outcome,omitempty"`
	// HandedTwice is how many messages the handler got more than once
	// during the run, for the handlers that know (Chatflow).
	HandedTwice *int `json:"handed_twice,omitempty"`
	// LatenciesUS holds each webhook's time in Handle, in microseconds, in
	// completion order.
	LatenciesUS []int64 `json:"latencies_us"`
}

// twiceCounter is a Handler that knows how many messages it handed to its
// bot more than once.
type twiceCounter interface{ HandedTwice() int }

// Run handles webhooks with the given number of concurrent callers, each
// taking the next webhook in order until none is left.
func Run(ctx context.Context, h Handler, webhooks []Webhook, callers int) Result {
	callers = max(callers, 1)
	var (
		next atomic.Int64
		mu   sync.Mutex
		res  = Result{Webhooks: len(webhooks), LatenciesUS: make([]int64, 0, len(webhooks))}
		wg   sync.WaitGroup
	)
	ops0 := h.Ops()
	tc, _ := h.(twiceCounter)
	twice0 := 0
	if tc != nil {
		twice0 = tc.HandedTwice()
	}
	start := time.Now()
	for c := 0; c < callers; c++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= len(webhooks) {
					return
				}
				t0 := time.Now()
				out, err := h.Handle(ctx, webhooks[i])
				d := time.Since(t0)
				mu.Lock()
				res.LatenciesUS = append(res.LatenciesUS, d.Microseconds())
				if err != nil {
					res.Errors++
					if res.FirstError == "" {
						res.FirstError = err.Error()
					}
				}
				switch out.Status {
				case Handled:
					res.Handled++
				case Queued:
					res.Queued++
				case Duplicate:
					res.Duplicates++
				}
				res.Drained += out.Drained
				if out.Calls > 0 {
					if res.Calls == nil {
						res.Calls = map[Status]int64{}
					}
					res.Calls[out.Status] += int64(out.Calls)
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	res.Seconds = time.Since(start).Seconds()
	res.Ops = h.Ops() - ops0
	if tc != nil {
		res.HandedTwice = new(int)
		*res.HandedTwice = tc.HandedTwice() - twice0
	}
	return res
}

// Percentile returns the p-th percentile (0 < p ≤ 100, nearest rank) of
// the values, or 0 for none. It sorts a copy.
func Percentile(values []int64, p float64) int64 {
	if len(values) == 0 {
		return 0
	}
	s := append([]int64(nil), values...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	rank := int(math.Ceil(float64(len(s))*p/100)) - 1
	return s[min(max(rank, 0), len(s)-1)]
}
