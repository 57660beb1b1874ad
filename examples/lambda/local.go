//go:build !lambda.norpc

// The local runner: `go run ./examples/lambda` off Lambda. It is left out of
// Lambda builds (-tags lambda.norpc), together with the embedded server it
// imports, so the deployed binary does not carry miniredis.

package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-lambda-go/events"
	"github.com/aws/aws-lambda-go/lambda"
	"github.com/aws/aws-lambda-go/lambdacontext"

	"github.com/chatstate/upstash"
	"github.com/chatstate/upstash/chatflow"
	"github.com/chatstate/upstash/examples/internal/chatbot"
	"github.com/chatstate/upstash/upstashtest"
)

// invokeTimeout is the function timeout the runner simulates: each
// invocation's context gets this deadline, as Lambda gives it.
const invokeTimeout = 10 * time.Second

func runLocalMain() int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	env := map[string]string{}
	for _, kv := range os.Environ() {
		if k, v, ok := strings.Cut(kv, "="); ok {
			env[k] = v
		}
	}
	if _, err := runLocal(ctx, os.Stdout, env); err != nil {
		fmt.Fprintf(os.Stderr, "FAILED: %v\n", err)
		return 1
	}
	return 0
}

// The sample conversation: three Slack threads; the bot is mentioned on
// two of them.
const (
	eng, ops, random = "slack:C-eng:t1", "slack:C-ops:t2", "slack:C-random:t3"
	slowID           = "m4" // its handler waits until the burst is answered
)

// expect is, per thread, the messages the bot counts (subscribed) or only
// records (not subscribed, no mention).
var expect = map[string]struct{ handled, ignored []string }{
	eng: {handled: []string{"m1", "m4", "m5", "m6", "m7", "m8"}}, ops: {handled: []string{"m2", "m9"}}, random: {ignored: []string{"m3"}},
}

func hook(id, thread, user, text string) chatbot.Webhook {
	return chatbot.Webhook{Platform: "slack", MessageID: id, ThreadID: thread, User: user, Text: text}
}

// report is what the burst did; runLocal returns it with a nil error only
// if every check passed.
type report struct {
	Backend     string         // "embedded", "redis-server" or "upstash"
	Results     map[string]int // "200 handled", "202 queued"... → responses
	Bot         map[string]int // "handled", "drained", "ignored", "subscribed" → messages
	MaxInFlight int            // most handlers running at once on one thread
	Problems    []string
}

// run is the state of one burst.
type run struct {
	out      io.Writer
	handler  lambda.Handler
	mu       sync.Mutex
	rep      report
	calls    map[string]int // message id → OnMessage calls
	inFlight map[string]int // thread → handlers running
	slowIn   chan struct{}  // closed when the slow handler runs
	gate     chan struct{}  // closed when the burst is answered
}

// onMessage is the bot's "work": 20 ms, as if it called a model, except
// for the slow message, which waits for the end of the burst. It prints
// what the bot did and checks that no two handlers overlap on a thread.
func (r *run) onMessage(ctx context.Context, h chatbot.Handled) {
	what := map[bool]string{false: "handled", true: "drained"}[h.Drained]
	note := fmt.Sprintf("message #%d of %s", h.State.Handled, h.ThreadID)
	switch {
	case h.Ignored:
		what, note = "ignored", "thread not subscribed, no @bot: history only"
	case h.Subscribed:
		note += ", which it subscribed"
	}
	var req string
	if lc, ok := lambdacontext.FromContext(ctx); ok {
		req = lc.AwsRequestID
	}
	r.mu.Lock()
	fmt.Fprintf(r.out, "%-7s   bot: %s %s (%s)\n", req, what, h.MessageID, note)
	r.rep.Bot[what]++
	if h.Subscribed {
		r.rep.Bot["subscribed"]++
	}
	r.calls[h.MessageID]++
	slow := h.MessageID == slowID && r.calls[h.MessageID] == 1
	r.inFlight[h.ThreadID]++
	r.rep.MaxInFlight = max(r.rep.MaxInFlight, r.inFlight[h.ThreadID])
	r.mu.Unlock()
	defer func() {
		r.mu.Lock()
		r.inFlight[h.ThreadID]--
		r.mu.Unlock()
	}()
	pause := time.NewTimer(20 * time.Millisecond)
	defer pause.Stop()
	if slow {
		close(r.slowIn)
		pause.Stop()
	}
	select {
	case <-pause.C:
	case <-r.gate:
	case <-ctx.Done():
	}
}

// invoke sends one webhook through the Lambda handler as the runtime does:
// a Function URL event as JSON, a context with the function's deadline and
// the invocation's metadata. It prints and returns the response's status.
func (r *run) invoke(ctx context.Context, reqID string, w chatbot.Webhook) string {
	body, _ := json.Marshal(w)
	payload, _ := json.Marshal(events.LambdaFunctionURLRequest{Version: "2.0", Body: string(body),
		RequestContext: events.LambdaFunctionURLRequestContext{RequestID: reqID,
			HTTP: events.LambdaFunctionURLRequestContextHTTPDescription{Method: "POST", Path: "/"}}})
	ictx, cancel := context.WithTimeout(ctx, invokeTimeout)
	defer cancel()
	raw, err := r.handler.Invoke(lambdacontext.NewContext(ictx, &lambdacontext.LambdaContext{AwsRequestID: reqID}), payload)
	var resp events.LambdaFunctionURLResponse
	var a struct {
		Status     string   `json:"status"`
		Handled    []string `json:"handled"`
		QueueDepth int      `json:"queueDepth"`
	}
	if err == nil && json.Unmarshal(raw, &resp) == nil {
		err = json.Unmarshal([]byte(resp.Body), &a)
	}
	line := fmt.Sprintf("%d %s %s", resp.StatusCode, a.Status, w.MessageID)
	switch {
	case err != nil || a.Status == "":
		line = fmt.Sprintf("%d %s %v", resp.StatusCode, resp.Body, err)
	case a.Status == "queued":
		line += fmt.Sprintf(" (depth %d)", a.QueueDepth)
	case len(a.Handled) > 1:
		line += ", drained " + strings.Join(a.Handled[1:], " ")
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	fmt.Fprintf(r.out, "%-7s → %s\n", reqID, line)
	r.rep.Results[fmt.Sprintf("%d %s", resp.StatusCode, a.Status)]++
	return a.Status
}

// runLocal replays a burst of webhooks through the Lambda handler, prints
// what happens, reads the database back and checks the result.
func runLocal(ctx context.Context, out io.Writer, env map[string]string) (*report, error) {
	state, backend, done, err := localState(out, env)
	if err != nil {
		return nil, err
	}
	defer done()
	r := &run{out: out, rep: report{Backend: backend, Results: map[string]int{}, Bot: map[string]int{}},
		calls: map[string]int{}, inFlight: map[string]int{}, slowIn: make(chan struct{}), gate: make(chan struct{})}
	// chatflow's own lines (queued, lock lost, left for the next holder...),
	// without the time, the INFO level and the lock key (the thread's).
	logger := slog.New(slog.NewTextHandler(lockedWriter{r}, &slog.HandlerOptions{ReplaceAttr: func(_ []string, a slog.Attr) slog.Attr {
		if a.Key == slog.TimeKey || a.Key == "lock" || (a.Key == slog.LevelKey && a.Value.Any() == slog.LevelInfo) {
			return slog.Attr{}
		}
		return a
	}}))
	a, err := newApp(state, &chatbot.Bot{OnMessage: r.onMessage}, logger)
	if err != nil {
		return nil, err
	}
	a.log = slog.New(slog.NewTextHandler(io.Discard, nil)) // invoke prints each response
	r.handler = lambda.NewHandler(a.handle)                // what lambda.Start wraps a.handle in
	fmt.Fprintf(out, "function timeout %v per invocation; chatflow: Queue strategy, history on\n", invokeTimeout)

	fmt.Fprintln(out, "\nstep 1: one webhook at a time; Slack retries m1; nobody mentions the bot on the random thread")
	m1 := hook("m1", eng, "U-ana", "@bot can you summarise this thread?")
	r.invoke(ctx, "req-01", m1)
	retries := []string{r.invoke(ctx, "req-02", m1)}
	r.invoke(ctx, "req-03", hook("m2", ops, "U-bo", "@bot what is the deploy status?"))
	r.invoke(ctx, "req-04", hook("m3", random, "U-cy", "lunch anyone?"))

	fmt.Fprintln(out, "\nstep 2: m4 takes the eng thread's lock and the bot is slow to answer; meanwhile m5-m8 arrive at once,")
	fmt.Fprintln(out, "        m9 arrives on the ops thread, and Slack retries m6")
	slowDone := make(chan struct{})
	go func() {
		defer close(slowDone)
		r.invoke(ctx, "req-05", hook(slowID, eng, "U-ana", "here are the logs"))
	}()
	select { // the burst starts once m4's handler runs: an event, not a pause
	case <-r.slowIn:
	case <-slowDone:
	}
	m6 := hook("m6", eng, "U-ana", "and the error rate since 09:00")
	var burst sync.WaitGroup
	for i, w := range []chatbot.Webhook{hook("m5", eng, "U-ana", "the first error is at 09:12"), m6,
		hook("m7", eng, "U-dee", "same here"), hook("m8", eng, "U-ana", "any idea?"), hook("m9", ops, "U-bo", "@bot and on staging?")} {
		burst.Add(1)
		go func(id string, w chatbot.Webhook) {
			defer burst.Done()
			r.invoke(ctx, id, w)
		}(fmt.Sprintf("req-%02d", 6+i), w)
	}
	burst.Wait()
	retries = append(retries, r.invoke(ctx, "req-11", m6))
	close(r.gate)
	<-slowDone

	r.mu.Lock()
	defer r.mu.Unlock()
	rep := &r.rep
	check(ctx, state, r.calls, rep)
	if strings.Join(retries, " ") != "duplicate duplicate" {
		rep.Problems = append(rep.Problems, fmt.Sprintf("the platform's retries were answered %v, want duplicate", retries))
	}
	if rep.MaxInFlight > 1 {
		rep.Problems = append(rep.Problems, fmt.Sprintf("%d handlers ran at once on one thread", rep.MaxInFlight))
	}
	var res []string
	for k, n := range rep.Results {
		res = append(res, fmt.Sprintf("%d×%s", n, k))
	}
	sort.Strings(res)
	fmt.Fprintf(out, "\nsummary (%s backend)\n  responses  %s\n", backend, strings.Join(res, ", "))
	fmt.Fprintf(out, "  bot        %d handled by their own invocation, %d drained by the lock holder, %d ignored; at most %d at a time per thread\n",
		rep.Bot["handled"], rep.Bot["drained"], rep.Bot["ignored"], rep.MaxInFlight)
	if len(rep.Problems) > 0 {
		fmt.Fprintf(out, "FAILED:\n  - %s\n", strings.Join(rep.Problems, "\n  - "))
		return rep, errors.New(strings.Join(rep.Problems, "; "))
	}
	fmt.Fprintln(out, "OK: every message handled exactly once, one at a time per thread; retries answered duplicate; no lock or queue left")
	return rep, nil
}

// check reads the database back: each message counted once by the bot,
// or only recorded; each admitted message once in its thread's history;
// the thread state's counter; no queue and no lock left.
func check(ctx context.Context, state *upstash.State, calls map[string]int, rep *report) {
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	problem := func(format string, args ...any) { rep.Problems = append(rep.Problems, fmt.Sprintf(format, args...)) }
	for _, th := range []string{eng, ops, random} {
		seen, err := chatbot.HistoryCounts(ctx, state, th)
		if err != nil {
			problem("reading %s history: %v", th, err)
		}
		want := append(append([]string(nil), expect[th].handled...), expect[th].ignored...)
		for _, id := range want {
			if calls[id] != 1 || seen[id] != 1 {
				problem("%s: %d calls of the bot and %d times in the history, want 1 and 1", id, calls[id], seen[id])
			}
		}
		if len(seen) != len(want) {
			problem("%s history holds %d messages, want %d", th, len(seen), len(want))
		}
		var ts chatbot.ThreadState
		if raw, err := state.Get(ctx, chatflow.ThreadStateKey(th)); err != nil || (raw != nil && json.Unmarshal(raw, &ts) != nil) || ts.Handled != len(expect[th].handled) {
			problem("%s state counts %d messages (%v), want %d", th, ts.Handled, err, len(expect[th].handled))
		}
		if depth, err := state.QueueDepth(ctx, th); err != nil || depth != 0 {
			problem("%s queue: depth %d (%v), want empty", th, depth, err)
		}
		// The lock must be free: take it and give it back.
		if lock, err := state.AcquireLock(ctx, th, 5*time.Second); err != nil || lock == nil {
			problem("%s lock still held after every invocation returned (%v)", th, err)
		} else if err := state.ReleaseLock(ctx, lock); err != nil {
			problem("releasing the probe lock on %s: %v", th, err)
		}
	}
}

// localState picks the database: yours when its variables are set, under a
// fresh key prefix deleted at the end; else an upstashtest server (embedded
// miniredis, or a private redis-server when UPSTASHTEST_REDIS=redis-server).
func localState(out io.Writer, env map[string]string) (*upstash.State, string, func(), error) {
	if env[upstash.EnvURL] != "" || env[upstash.EnvVercelURL] != "" {
		cfg, err := upstash.ConfigFromEnv(upstash.EnvMap(env))
		if err != nil {
			return nil, "", nil, err
		}
		client, err := upstash.New(cfg)
		if err != nil {
			return nil, "", nil, err
		}
		var b [4]byte
		_, _ = rand.Read(b[:])
		prefix := "chat-sdk-example-" + hex.EncodeToString(b[:])
		fmt.Fprintf(out, "using the database at %s with key prefix %s (deleted at the end)\n", cfg.URL, prefix)
		return upstash.NewState(client, upstash.WithKeyPrefix(prefix)), "upstash", func() { cleanup(client, prefix) }, nil
	}
	srv, err := upstashtest.Start()
	if err != nil {
		return nil, "", nil, fmt.Errorf("starting the embedded server: %w", err)
	}
	backend, note := "embedded", ""
	if !srv.Embedded() {
		backend, note = "redis-server", " (backed by a private redis-server: "+upstashtest.EnvRedis+" is set)"
	}
	fmt.Fprintf(out, "no %s set: using an embedded Upstash-compatible server at %s%s\n", upstash.EnvURL, srv.URL, note)
	client, err := upstash.New(upstash.Config{URL: srv.URL, Token: srv.Token})
	if err != nil {
		srv.Close()
		return nil, "", nil, err
	}
	return upstash.NewState(client), backend, srv.Close, nil
}

// cleanup deletes every key under the run's prefix (the state's keys and
// the library's own), with raw commands that record nothing.
func cleanup(client *upstash.Client, prefix string) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for cursor := "0"; ; {
		reply, err := client.Do(ctx, "SCAN", cursor, "MATCH", prefix+":*", "COUNT", 1000)
		if err != nil {
			return
		}
		parts, err := reply.Array()
		if err != nil || len(parts) != 2 {
			return
		}
		if keys, err := parts[1].Strings(); err == nil && len(keys) > 0 {
			if _, err := client.Del(ctx, keys...); err != nil {
				return
			}
		}
		if cursor, err = parts[0].Text(); err != nil || cursor == "0" {
			return
		}
	}
}

// lockedWriter writes log lines under the run's lock, between its own.
type lockedWriter struct{ r *run }

func (w lockedWriter) Write(p []byte) (int, error) {
	w.r.mu.Lock()
	defer w.r.mu.Unlock()
	return w.r.out.Write(append([]byte("          "), p...))
}
