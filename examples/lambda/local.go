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
	"github.com/chatstate/upstash/examples/internal/chatbot"
	"github.com/chatstate/upstash/upstashtest"
)

// invokeTimeout is the function timeout the runner simulates: each
// invocation's context gets this deadline, as Lambda gives it.
const invokeTimeout = 10 * time.Second

func runLocalMain() int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if _, err := runLocal(ctx, os.Stdout, environMap()); err != nil {
		fmt.Fprintf(os.Stderr, "FAILED: %v\n", err)
		return 1
	}
	return 0
}

func environMap() map[string]string {
	m := make(map[string]string)
	for _, kv := range os.Environ() {
		if k, v, ok := strings.Cut(kv, "="); ok {
			m[k] = v
		}
	}
	return m
}

// The sample conversation: three Slack threads.
const (
	threadEng    = "slack:C-eng:t1"
	threadOps    = "slack:C-ops:t2"
	threadRandom = "slack:C-random:t3"
)

type delivery struct {
	id    string // request id, as Lambda's AwsRequestID
	hook  chatbot.Webhook
	retry bool // the platform redelivering a message it already sent
}

func msg(id, thread, user, text string) chatbot.Webhook {
	return chatbot.Webhook{Platform: "slack", MessageID: id, ThreadID: thread, User: user, Text: text}
}

// expected: per thread, the messages the bot must handle (subscribed
// thread) and the ones it must only record (not subscribed, no mention).
var (
	expectHandled = map[string][]string{threadEng: {"m1", "m4", "m5", "m6", "m7", "m8"}, threadOps: {"m2", "m9"}}
	expectIgnored = map[string][]string{threadRandom: {"m3"}}
	threads       = []string{threadEng, threadOps, threadRandom}
)

// report is what the burst did; runLocal returns it with a nil error only
// if every check passed.
type report struct {
	Backend     string // "embedded", "redis-server" or "upstash"
	Sent        int
	Distinct    int
	Retries     int
	Events      map[chatbot.EventKind]int
	Statuses    map[int]int // HTTP status → responses
	MaxInFlight int         // most handlers running at once on one thread
	Problems    []string
}

// run holds the state of one burst.
type run struct {
	out     io.Writer
	handler lambda.Handler

	mu       sync.Mutex
	events   []chatbot.Event
	inFlight map[string]int // thread → handlers running
	maxIn    int
	calls    map[string]int // message id → OnMessage calls
	statuses map[int]int

	slowID     string        // the message whose handler waits for the burst
	slowReq    string        // the request that delivers it
	slowLocked chan struct{} // closed when slowReq has taken its thread's lock
	slowSeen   bool          // slowLocked is closed
	gate       chan struct{} // closed when the burst is over
}

func (r *run) printf(format string, args ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	fmt.Fprintf(r.out, format, args...)
}

func (r *run) onEvent(e chatbot.Event) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events = append(r.events, e)
	fmt.Fprintln(r.out, strings.TrimRight(e.String(), " "))
	if e.Kind == chatbot.EventLocked && e.RequestID == r.slowReq && !r.slowSeen {
		r.slowSeen = true
		close(r.slowLocked)
	}
}

// onMessage is the bot's "work" for a message: a short pause, as if it
// called a model. The slow message instead waits until the burst is over
// (or its invocation runs out of time). It also checks the lock's promise:
// never two handlers on one thread at the same time.
func (r *run) onMessage(ctx context.Context, m chatbot.Message) {
	r.mu.Lock()
	r.inFlight[m.ThreadID]++
	r.maxIn = max(r.maxIn, r.inFlight[m.ThreadID])
	r.calls[m.MessageID]++
	r.mu.Unlock()
	defer func() {
		r.mu.Lock()
		r.inFlight[m.ThreadID]--
		r.mu.Unlock()
	}()
	if m.MessageID == r.slowID {
		select {
		case <-r.gate:
		case <-ctx.Done():
		}
		return
	}
	t := time.NewTimer(20 * time.Millisecond)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}

// invoke sends one delivery through the Lambda handler the way the runtime
// does: a Function URL (payload 2.0) event as JSON, a context with the
// function's deadline and the invocation's metadata.
func (r *run) invoke(ctx context.Context, d delivery) {
	body, _ := json.Marshal(d.hook)
	headers := map[string]string{"content-type": "application/json", "user-agent": "Slackbot 1.0 (+https://api.slack.com/robots)"}
	if d.retry {
		headers["x-slack-retry-num"] = "1"
		headers["x-slack-retry-reason"] = "http_timeout"
	}
	now := time.Now()
	ev := events.LambdaFunctionURLRequest{
		Version: "2.0", RawPath: "/", Headers: headers, Body: string(body),
		RequestContext: events.LambdaFunctionURLRequestContext{
			RequestID: d.id, APIID: "local", DomainName: "local.lambda-url.us-east-1.on.aws",
			Time: now.UTC().Format("02/Jan/2006:15:04:05 -0700"), TimeEpoch: now.UnixMilli(),
			HTTP: events.LambdaFunctionURLRequestContextHTTPDescription{Method: "POST", Path: "/", Protocol: "HTTP/1.1", SourceIP: "127.0.0.1"},
		},
	}
	payload, err := json.Marshal(ev)
	if err != nil {
		r.printf("%-8s → cannot encode the event: %v\n", d.id, err)
		return
	}
	ictx, cancel := context.WithTimeout(ctx, invokeTimeout)
	defer cancel()
	ictx = lambdacontext.NewContext(ictx, &lambdacontext.LambdaContext{
		AwsRequestID:       d.id,
		InvokedFunctionArn: "arn:aws:lambda:us-east-1:000000000000:function:chat-bot",
	})
	raw, err := r.handler.Invoke(ictx, payload)
	if err != nil {
		r.record(0)
		r.printf("%-8s → handler error: %v\n", d.id, err)
		return
	}
	var resp events.LambdaFunctionURLResponse
	if err := json.Unmarshal(raw, &resp); err != nil {
		r.record(0)
		r.printf("%-8s → response is not a Function URL response: %v\n", d.id, err)
		return
	}
	r.record(resp.StatusCode)
	r.printf("%-8s → %d %s\n", d.id, resp.StatusCode, describe(resp.Body))
}

func (r *run) record(status int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.statuses[status]++
}

// describe summarises a response body in a few words.
func describe(body string) string {
	var o chatbot.Outcome
	if err := json.Unmarshal([]byte(body), &o); err != nil || o.Status == "" {
		return body
	}
	switch o.Status {
	case chatbot.StatusQueued:
		return fmt.Sprintf("queued %s (depth %d)", o.MessageID, o.Depth)
	case chatbot.StatusDuplicate:
		return "duplicate " + o.MessageID
	}
	s := string(o.Status) + " " + o.MessageID
	var drained []string
	for _, id := range o.Handled {
		if id != o.MessageID {
			drained = append(drained, id)
		}
	}
	if len(drained) > 0 {
		s += ", drained " + strings.Join(drained, " ")
	}
	return s
}

// localBackend picks the database: Upstash when its variables are set, else
// an upstashtest server (embedded miniredis, or a private redis-server when
// UPSTASHTEST_REDIS=redis-server).
func localBackend(out io.Writer, environ map[string]string) (cfg upstash.Config, prefix, backend string, closeFn func(), err error) {
	closeFn = func() {}
	if environ[upstash.EnvURL] != "" || environ[upstash.EnvVercelURL] != "" {
		cfg, err = upstash.ConfigFromEnv(upstash.EnvMap(environ))
		if err != nil {
			return cfg, "", "", closeFn, err
		}
		var b [4]byte
		if _, err := rand.Read(b[:]); err != nil {
			return cfg, "", "", closeFn, err
		}
		prefix = "chat-sdk-example-" + hex.EncodeToString(b[:])
		fmt.Fprintf(out, "using the Upstash database at %s with key prefix %s (keys are deleted at the end)\n", cfg.URL, prefix)
		return cfg, prefix, "upstash", closeFn, nil
	}
	srv, err := upstashtest.Start()
	if err != nil {
		return cfg, "", "", closeFn, fmt.Errorf("starting the embedded server: %w", err)
	}
	backend, note := "embedded", ""
	if !srv.Embedded() {
		backend, note = "redis-server", " (backed by a private redis-server: "+upstashtest.EnvRedis+" is set)"
	}
	fmt.Fprintf(out, "no %s set: using an embedded Upstash-compatible server at %s%s\n", upstash.EnvURL, srv.URL, note)
	return upstash.Config{URL: srv.URL, Token: srv.Token}, "", backend, srv.Close, nil
}

// runLocal replays a burst of webhooks through the Lambda handler, prints
// what happened line by line, checks that every message was handled exactly
// once and never two at a time on one thread, and prints a summary.
func runLocal(ctx context.Context, out io.Writer, environ map[string]string) (*report, error) {
	cfg, prefix, backend, closeBackend, err := localBackend(out, environ)
	if err != nil {
		return nil, err
	}
	defer closeBackend()
	client, err := upstash.New(cfg)
	if err != nil {
		return nil, err
	}
	var opts []upstash.StateOption
	if prefix != "" {
		opts = append(opts, upstash.WithKeyPrefix(prefix))
	}
	state := upstash.NewState(client, opts...)
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	err = state.Connect(cctx)
	cancel()
	if err != nil {
		return nil, fmt.Errorf("connecting: %w", err)
	}

	bot := chatbot.New(state)
	r := &run{
		out: out, inFlight: map[string]int{}, calls: map[string]int{}, statuses: map[int]int{},
		slowID: "m4", slowReq: "req-05", slowLocked: make(chan struct{}), gate: make(chan struct{}),
	}
	bot.OnEvent, bot.OnMessage = r.onEvent, r.onMessage
	// The very function main passes to lambda.Start, behind the runtime's
	// JSON decoding and encoding.
	r.handler = lambda.NewHandler((&app{bot: bot}).handle)

	if prefix != "" {
		defer cleanup(client, prefix)
	}

	d := func(id string, hook chatbot.Webhook, retry bool) delivery { return delivery{id, hook, retry} }
	m1 := msg("m1", threadEng, "U-ana", "@bot can you summarise this thread?")
	m6 := msg("m6", threadEng, "U-ana", "and the error rate since 09:00")
	fmt.Fprintf(out, "function timeout %v per invocation; lock TTL = min(30s, time left + 1s)\n", invokeTimeout)

	fmt.Fprintln(out, "\nstep 1: one webhook at a time; Slack retries m1; nobody mentions the bot on the random thread")
	for _, dv := range []delivery{
		d("req-01", m1, false),
		d("req-02", m1, true),
		d("req-03", msg("m2", threadOps, "U-bo", "@bot what is the deploy status?"), false),
		d("req-04", msg("m3", threadRandom, "U-cy", "lunch anyone?"), false),
	} {
		r.invoke(ctx, dv)
	}

	fmt.Fprintln(out, "\nstep 2: m4 takes the eng thread's lock and the bot is slow to answer; meanwhile m5-m8 arrive at once,")
	fmt.Fprintln(out, "        m9 arrives on the ops thread, and Slack retries m6")
	slowDone := make(chan struct{})
	go func() {
		defer close(slowDone)
		r.invoke(ctx, d(r.slowReq, msg(r.slowID, threadEng, "U-ana", "here are the logs"), false))
	}()
	// The burst starts once m4's invocation holds the lock (an event, not a
	// pause: on a slow machine it simply comes later).
	select {
	case <-r.slowLocked:
	case <-slowDone:
		return nil, fmt.Errorf("%s returned without taking the lock", r.slowReq)
	case <-ctx.Done():
		close(r.gate)
		<-slowDone
		return nil, ctx.Err()
	}
	var burst sync.WaitGroup
	for _, dv := range []delivery{
		d("req-06", msg("m5", threadEng, "U-ana", "the first error is at 09:12"), false),
		d("req-07", m6, false),
		d("req-08", msg("m7", threadEng, "U-dee", "same here"), false),
		d("req-09", msg("m8", threadEng, "U-ana", "any idea?"), false),
		d("req-10", msg("m9", threadOps, "U-bo", "@bot and on staging?"), false),
	} {
		burst.Add(1)
		go func(dv delivery) {
			defer burst.Done()
			r.invoke(ctx, dv)
		}(dv)
	}
	burst.Wait()
	r.invoke(ctx, d("req-11", m6, true))
	close(r.gate) // the slow handler may finish now
	<-slowDone

	rep := &report{Backend: backend, Sent: 11, Distinct: 9, Retries: 2}
	verify(ctx, r, state, rep)
	printSummary(out, r, rep)
	if len(rep.Problems) > 0 {
		return rep, errors.New(strings.Join(rep.Problems, "; "))
	}
	return rep, nil
}

// verify reads the database back and checks the run against what the
// sample conversation must produce.
func verify(ctx context.Context, r *run, state *upstash.State, rep *report) {
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	problem := func(format string, args ...any) { rep.Problems = append(rep.Problems, fmt.Sprintf(format, args...)) }

	r.mu.Lock()
	rep.Events = map[chatbot.EventKind]int{}
	for _, e := range r.events {
		rep.Events[e.Kind]++
	}
	rep.Statuses = map[int]int{}
	for k, v := range r.statuses {
		rep.Statuses[k] = v
	}
	rep.MaxInFlight = r.maxIn
	calls := map[string]int{}
	for k, v := range r.calls {
		calls[k] = v
	}
	r.mu.Unlock()

	if n := rep.Events[chatbot.EventDeduped]; n != rep.Retries {
		problem("%d webhooks deduped, want %d (one per platform retry)", n, rep.Retries)
	}
	if rep.MaxInFlight > 1 {
		problem("%d handlers ran at the same time on one thread", rep.MaxInFlight)
	}
	for status, n := range rep.Statuses {
		if status != 200 && status != 202 {
			problem("%d responses with status %d", n, status)
		}
	}
	for _, th := range threads {
		want := map[string]bool{}
		for _, id := range expectHandled[th] {
			want[id] = true
			if calls[id] != 1 {
				problem("%s handled %d times, want once", id, calls[id])
			}
		}
		for _, id := range expectIgnored[th] {
			want[id] = true
			if calls[id] != 0 {
				problem("%s (not subscribed) reached the bot %d times", id, calls[id])
			}
		}
		seen, err := chatbot.HistoryCounts(ctx, state, th)
		if err != nil {
			problem("reading %s history: %v", th, err)
			continue
		}
		for id := range want {
			if seen[id] != 1 {
				problem("%s appears %d times in %s history, want once", id, seen[id], th)
			}
		}
		for id := range seen {
			if !want[id] {
				problem("unexpected %s in %s history", id, th)
			}
		}
		ts, ok, err := upstash.GetJSON[chatbot.ThreadState](ctx, state, chatbot.ThreadStateKey(th))
		switch {
		case err != nil:
			problem("reading %s state: %v", th, err)
		case ts.Handled != len(expectHandled[th]) || ok != (len(expectHandled[th]) > 0):
			problem("%s state counts %d handled messages, want %d", th, ts.Handled, len(expectHandled[th]))
		}
		if depth, err := state.QueueDepth(ctx, th); err != nil || depth != 0 {
			problem("%s queue: depth %d (%v), want empty", th, depth, err)
		}
		// The lock must be free: take it and give it back.
		lock, err := state.AcquireLock(ctx, th, 5*time.Second)
		switch {
		case err != nil:
			problem("probing %s lock: %v", th, err)
		case lock == nil:
			problem("%s lock is still held after every invocation returned", th)
		default:
			if err := state.ReleaseLock(ctx, lock); err != nil {
				problem("releasing the probe lock on %s: %v", th, err)
			}
		}
	}
}

func printSummary(out io.Writer, r *run, rep *report) {
	ev := rep.Events
	direct := ev[chatbot.EventHandled]
	fmt.Fprintln(out, "\nsummary")
	fmt.Fprintf(out, "  backend      %s\n", rep.Backend)
	fmt.Fprintf(out, "  webhooks     %d sent: %d distinct messages, %d platform retries\n", rep.Sent, rep.Distinct, rep.Retries)
	fmt.Fprintf(out, "  deduped      %d\n", ev[chatbot.EventDeduped])
	fmt.Fprintf(out, "  queued       %d (answered 202 while another invocation held the thread's lock)\n", ev[chatbot.EventQueued])
	fmt.Fprintf(out, "  handled      %d (%d by the invocation that received them, %d drained from the queue by the lock holder)\n",
		direct+ev[chatbot.EventDrained], direct, ev[chatbot.EventDrained])
	fmt.Fprintf(out, "  ignored      %d (thread not subscribed, no @bot mention; kept in history)\n", ev[chatbot.EventIgnored])
	fmt.Fprintf(out, "  locks        %d taken, %d released; at most %d handler at a time per thread\n",
		ev[chatbot.EventLocked], ev[chatbot.EventReleased], rep.MaxInFlight)
	var st []string
	for code, n := range rep.Statuses {
		st = append(st, fmt.Sprintf("%d×%d", n, code))
	}
	sort.Strings(st)
	fmt.Fprintf(out, "  responses    %s\n", strings.Join(st, ", "))
	for _, k := range []chatbot.EventKind{chatbot.EventExpired, chatbot.EventLockLost, chatbot.EventLeft, chatbot.EventRequeued, chatbot.EventUnclaimed, chatbot.EventError} {
		if ev[k] > 0 {
			fmt.Fprintf(out, "  %-12s %d\n", k, ev[k])
		}
	}
	if len(rep.Problems) == 0 {
		fmt.Fprintln(out, "OK: every message handled exactly once, one at a time per thread; no lock or queue left behind")
		return
	}
	fmt.Fprintln(out, "FAILED:")
	for _, p := range rep.Problems {
		fmt.Fprintln(out, "  -", p)
	}
}

// cleanup deletes what the run wrote to a real database: every key under
// the run's own prefix, which holds the state layout's keys and the
// library's own (operation records, fencing counters), so one SCAN over
// "{prefix}:*" finds them all. Raw commands, so that the cleanup itself
// records nothing.
func cleanup(client *upstash.Client, prefix string) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cursor := "0"
	for {
		reply, err := client.Do(ctx, "SCAN", cursor, "MATCH", prefix+":*", "COUNT", 1000)
		if err != nil {
			return
		}
		parts, err := reply.Array()
		if err != nil || len(parts) != 2 {
			return
		}
		keys, err := parts[1].Strings()
		if err != nil {
			return
		}
		if len(keys) > 0 {
			if _, err := client.Del(ctx, keys...); err != nil {
				return
			}
		}
		if cursor, err = parts[0].Text(); err != nil || cursor == "0" {
			return
		}
	}
}
