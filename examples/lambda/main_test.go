package main

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"log/slog"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-lambda-go/events"
	"github.com/aws/aws-lambda-go/lambda"
	"github.com/aws/aws-lambda-go/lambdacontext"

	"github.com/chatstate/upstash"
	"github.com/chatstate/upstash/chatflow"
	"github.com/chatstate/upstash/examples/internal/chatbot"
	"github.com/chatstate/upstash/internal/testtool"
	"github.com/chatstate/upstash/upstashtest"
)

// newTestApp builds the app the way main does, against srv with token,
// around bot; the log lines go to the test's log when it fails.
func newTestApp(t *testing.T, srv *upstashtest.Server, token string, bot *chatbot.Bot) *app {
	t.Helper()
	client, err := upstash.New(upstash.Config{URL: srv.URL, Token: token})
	if err != nil {
		t.Fatal(err)
	}
	return newTestAppOn(t, upstash.NewState(client), bot)
}

// newTestAppOn is newTestApp over the given state.
func newTestAppOn(t *testing.T, state upstash.StateAdapter, bot *chatbot.Bot) *app {
	t.Helper()
	var logs testtool.SyncBuffer
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("log lines:\n%s", logs.String())
		}
	})
	a, err := newApp(state, bot, slog.New(slog.NewTextHandler(&logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	return a
}

var reqSeq atomic.Int64

// roomy is the invocation deadline of tests about something other than
// time: a burst on a machine many times slower than usual still fits.
const roomy = time.Minute

// invoke calls the handler as the Lambda runtime does: a Function URL
// event, a context with the invocation's deadline and metadata.
func invoke(t *testing.T, a *app, hook chatbot.Webhook, timeout time.Duration) events.LambdaFunctionURLResponse {
	t.Helper()
	return invokeUntil(t, a, hook, time.Now().Add(timeout))
}

// invokeUntil is invoke with the invocation's deadline given.
func invokeUntil(t *testing.T, a *app, hook chatbot.Webhook, deadline time.Time) events.LambdaFunctionURLResponse {
	t.Helper()
	body, err := json.Marshal(hook)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithDeadline(context.Background(), deadline)
	defer cancel()
	id := fmt.Sprintf("test-%d", reqSeq.Add(1))
	ctx = lambdacontext.NewContext(ctx, &lambdacontext.LambdaContext{AwsRequestID: id})
	resp, err := a.handle(ctx, events.LambdaFunctionURLRequest{
		Version: "2.0", RawPath: "/", Body: string(body),
		Headers:        map[string]string{"content-type": "application/json"},
		RequestContext: events.LambdaFunctionURLRequestContext{RequestID: id, HTTP: events.LambdaFunctionURLRequestContextHTTPDescription{Method: "POST", Path: "/"}},
	})
	if err != nil {
		t.Fatalf("handler returned an error instead of a response: %v", err)
	}
	return resp
}

// answer is the body of a 200 or 202 response.
type answer struct {
	Status     string   `json:"status"`
	Handled    []string `json:"handled"`
	Left       int      `json:"left"`
	QueueDepth int      `json:"queueDepth"`
}

func parse(t *testing.T, resp events.LambdaFunctionURLResponse) answer {
	t.Helper()
	var a answer
	if err := json.Unmarshal([]byte(resp.Body), &a); err != nil {
		t.Fatalf("body %q: %v", resp.Body, err)
	}
	return a
}

func hookFor(thread, id, text string) chatbot.Webhook {
	return chatbot.Webhook{Platform: "slack", MessageID: id, ThreadID: thread, User: "U1", Text: text}
}

// history returns how many times each message id is in the thread's history.
func history(t *testing.T, srv *upstashtest.Server, thread string) map[string]int {
	t.Helper()
	c, err := upstash.New(upstash.Config{URL: srv.URL, Token: srv.Token})
	if err != nil {
		t.Fatal(err)
	}
	seen, err := chatbot.HistoryCounts(context.Background(), upstash.NewState(c), thread)
	if err != nil {
		t.Fatal(err)
	}
	return seen
}

func exists(t *testing.T, srv *upstashtest.Server, key string) bool {
	t.Helper()
	n, err := srv.Do("EXISTS", key)
	if err != nil {
		t.Fatal(err)
	}
	return n.(int64) == 1
}

// counter counts the bot's calls per message and the most handlers
// running at once.
type counter struct {
	mu            sync.Mutex
	calls         map[string]int
	inFlight, max int
	work          func(ctx context.Context, h chatbot.Handled) // optional
}

func (c *counter) onMessage(ctx context.Context, h chatbot.Handled) {
	c.mu.Lock()
	if c.calls == nil {
		c.calls = map[string]int{}
	}
	c.calls[h.MessageID]++
	c.inFlight++
	c.max = max(c.max, c.inFlight)
	c.mu.Unlock()
	if c.work != nil {
		c.work(ctx, h)
	}
	c.mu.Lock()
	c.inFlight--
	c.mu.Unlock()
}

func (c *counter) get(id string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.calls[id]
}

func TestDuplicateWebhookProcessedOnce(t *testing.T) {
	t.Parallel()
	srv := upstashtest.NewServer(t)
	var c counter
	a := newTestApp(t, srv, srv.Token, &chatbot.Bot{OnMessage: c.onMessage})
	w := hookFor("slack:C1:dup", "m1", "@bot hello")
	first := invoke(t, a, w, 10*time.Second)
	second := invoke(t, a, w, 10*time.Second)
	if first.StatusCode != 200 || parse(t, first).Status != "handled" {
		t.Fatalf("first delivery: %d %s", first.StatusCode, first.Body)
	}
	if second.StatusCode != 200 || parse(t, second).Status != "duplicate" {
		t.Fatalf("retry: %d %s", second.StatusCode, second.Body)
	}
	if n := c.get("m1"); n != 1 {
		t.Errorf("bot logic ran %d times, want 1", n)
	}
	if h := history(t, srv, w.ThreadID); h["m1"] != 1 || len(h) != 1 {
		t.Errorf("history = %v, want m1 once", h)
	}
	if exists(t, srv, "chat-sdk:lock:"+w.ThreadID) {
		t.Error("lock key left behind")
	}
}

// TestConcurrentWebhooksOneAtATime sends webhooks on one thread at once:
// the bot's logic never runs twice at the same time on the thread, and
// every message is handled exactly once, by its own invocation or by the
// lock holder's drain (counted in the bot, not from the responses).
func TestConcurrentWebhooksOneAtATime(t *testing.T) {
	t.Parallel()
	srv := upstashtest.NewServer(t)
	c := counter{work: func(context.Context, chatbot.Handled) {
		time.Sleep(5 * time.Millisecond) // widen the window for an overlap
	}}
	a := newTestApp(t, srv, srv.Token, &chatbot.Bot{OnMessage: c.onMessage})
	// n = the queue's size: with one of them holding the lock, the queue
	// never overflows (past it the oldest entry is dropped, as in the Chat
	// SDK).
	const thread, n = "slack:C1:burst", chatflow.DefaultMaxQueueSize
	if r := invoke(t, a, hookFor(thread, "m0", "@bot start"), roomy); r.StatusCode != 200 {
		t.Fatalf("mention: %d %s", r.StatusCode, r.Body)
	}
	var wg sync.WaitGroup
	statuses := make([]int, n)
	for i := 1; i <= n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			statuses[i-1] = invoke(t, a, hookFor(thread, fmt.Sprintf("m%d", i), "message"), roomy).StatusCode
		}(i)
	}
	wg.Wait()
	for i, s := range statuses {
		if s != 200 && s != 202 {
			t.Errorf("m%d: status %d", i+1, s)
		}
	}
	if c.max != 1 {
		t.Errorf("at most %d handlers ran at once on the thread, want 1", c.max)
	}
	h := history(t, srv, thread)
	for i := 0; i <= n; i++ {
		id := fmt.Sprintf("m%d", i)
		if h[id] != 1 || c.get(id) != 1 {
			t.Errorf("%s: %d times in history, bot logic ran %d times; want 1 and 1", id, h[id], c.get(id))
		}
	}
	if len(h) != n+1 {
		t.Errorf("history has %d distinct messages, want %d", len(h), n+1)
	}
	if exists(t, srv, "chat-sdk:lock:"+thread) || exists(t, srv, "chat-sdk:queue:"+thread) {
		t.Error("lock or queue left behind")
	}
}

// TestDeadlineReachesChatflow: the invocation's deadline is the flow's
// budget. With 3 s left the lock lives at most 3 s + 1 s of skew instead
// of the core's 30 s, and the bot's context ends before the deadline,
// leaving time to release. (chatflow's tests pin the exact rules.)
func TestDeadlineReachesChatflow(t *testing.T) {
	t.Parallel()
	srv := upstashtest.NewServer(t)
	const thread = "slack:C1:ttl"
	var pttl int64
	var work time.Time
	var hasDeadline bool
	a := newTestApp(t, srv, srv.Token, &chatbot.Bot{OnMessage: func(ctx context.Context, _ chatbot.Handled) {
		work, hasDeadline = ctx.Deadline()
		v, err := srv.Do("PTTL", "chat-sdk:lock:"+thread)
		if err != nil {
			t.Error(err)
			return
		}
		pttl = v.(int64)
	}})
	deadline := time.Now().Add(3 * time.Second)
	r := invokeUntil(t, a, hookFor(thread, "m1", "@bot hi"), deadline)
	if r.StatusCode != 200 || !hasDeadline {
		t.Fatalf("%d %s (the bot's context has a deadline: %v)", r.StatusCode, r.Body, hasDeadline)
	}
	if pttl <= 0 || pttl > 4_000 {
		t.Errorf("lock PTTL %d ms, want at most 4000 (3 s left + 1 s)", pttl)
	}
	if !work.Before(deadline) || work.Before(deadline.Add(-chatflow.ReleaseReserve)) {
		t.Errorf("the bot's work ends %v before the deadline, want in (0, %v]", deadline.Sub(work), chatflow.ReleaseReserve)
	}
}

func TestTooCloseToDeadlineWritesNothing(t *testing.T) {
	t.Parallel()
	srv := upstashtest.NewServer(t)
	var c counter
	a := newTestApp(t, srv, srv.Token, &chatbot.Bot{OnMessage: c.onMessage})
	r := invoke(t, a, hookFor("slack:C1:late", "m1", "@bot hi"), 200*time.Millisecond)
	if r.StatusCode != 503 || !strings.Contains(r.Body, "deadline") {
		t.Fatalf("got %d %s, want 503 naming the deadline", r.StatusCode, r.Body)
	}
	// Nothing written: in particular no dedupe marker, which would make
	// the platform's retry a duplicate.
	if n, err := srv.Do("DBSIZE"); err != nil || n.(int64) != 0 || c.get("m1") != 0 {
		t.Errorf("%v keys (%v) and %d bot calls after a refusal, want none", n, err, c.get("m1"))
	}
}

func TestWrongTokenIsAClearError(t *testing.T) {
	t.Parallel()
	srv := upstashtest.NewServer(t)
	const bad = "wrong-token-3c1f0e9a7b"
	a := newTestApp(t, srv, bad, &chatbot.Bot{})
	r := invoke(t, a, hookFor("slack:C1:auth", "m1", "@bot hi"), 10*time.Second)
	if r.StatusCode != 401 {
		t.Errorf("status %d, want 401", r.StatusCode)
	}
	if !strings.Contains(strings.ToLower(r.Body), "unauthorized") || !strings.Contains(r.Body, upstash.EnvToken) {
		t.Errorf("body %s does not say unauthorized and which variable to check", r.Body)
	}
	if strings.Contains(r.Body, bad) || strings.Contains(r.Body, srv.Token) {
		t.Errorf("body %s contains a token", r.Body)
	}
}

// TestHTTPAPIv2Payload: an API Gateway HTTP API (payload 2.0) event, with a
// base64 body, decodes into the Function URL request type the handler takes.
func TestHTTPAPIv2Payload(t *testing.T) {
	t.Parallel()
	srv := upstashtest.NewServer(t)
	a := newTestApp(t, srv, srv.Token, &chatbot.Bot{})
	body, _ := json.Marshal(hookFor("slack:C1:apigw", "m1", "@bot hi"))
	payload, err := json.Marshal(events.APIGatewayV2HTTPRequest{
		Version: "2.0", RouteKey: "POST /webhook", RawPath: "/webhook",
		Headers:         map[string]string{"content-type": "application/json"},
		Body:            base64.StdEncoding.EncodeToString(body),
		IsBase64Encoded: true,
		RequestContext: events.APIGatewayV2HTTPRequestContext{
			RequestID: "apigw-1",
			HTTP:      events.APIGatewayV2HTTPRequestContextHTTPDescription{Method: "POST", Path: "/webhook"},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), roomy)
	defer cancel()
	raw, err := lambda.NewHandler(a.handle).Invoke(ctx, payload)
	if err != nil {
		t.Fatal(err)
	}
	var resp events.APIGatewayV2HTTPResponse
	if err := json.Unmarshal(raw, &resp); err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 200 || !strings.Contains(resp.Body, `"handled"`) || resp.Headers["Content-Type"] != "application/json" {
		t.Fatalf("got %d %v %s", resp.StatusCode, resp.Headers, resp.Body)
	}
	// And the errors a caller can make.
	for _, tc := range []struct {
		method, body string
		b64          bool
		want         int
	}{
		{"GET", "", false, 405},
		{"POST", "{not json", false, 400},
		{"POST", `{"platform":"slack","text":"no ids"}`, false, 400},
		{"POST", "not base64!", true, 400},
	} {
		r, err := a.handle(ctx, events.LambdaFunctionURLRequest{Body: tc.body, IsBase64Encoded: tc.b64, RequestContext: events.LambdaFunctionURLRequestContext{
			HTTP: events.LambdaFunctionURLRequestContextHTTPDescription{Method: tc.method}}})
		if err != nil || r.StatusCode != tc.want || !json.Valid([]byte(r.Body)) {
			t.Errorf("%s %q: %d %s (%v), want %d", tc.method, tc.body, r.StatusCode, r.Body, err, tc.want)
		}
	}
}

// TestNoGoroutineOutlivesTheInvocation: when the handler returns, nothing
// of chatflow (heartbeat, handler) or of the bot is still running: Lambda
// freezes the process right after. Not parallel: it reads every
// goroutine's stack, and the parallel tests only start after it.
func TestNoGoroutineOutlivesTheInvocation(t *testing.T) {
	srv := upstashtest.NewServer(t)
	a := newTestApp(t, srv, srv.Token, &chatbot.Bot{OnMessage: func(context.Context, chatbot.Handled) { time.Sleep(20 * time.Millisecond) }})
	for i := 0; i < 3; i++ {
		if r := invoke(t, a, hookFor("slack:C1:leak", fmt.Sprintf("m%d", i), "@bot hi"), 10*time.Second); r.StatusCode != 200 {
			t.Fatalf("m%d: %d %s", i, r.StatusCode, r.Body)
		}
		buf := make([]byte, 1<<20)
		stacks := string(buf[:runtime.Stack(buf, true)])
		for _, fn := range []string{"github.com/chatstate/upstash/chatflow.", "github.com/chatstate/upstash.(*State)", "examples/internal/chatbot."} {
			if strings.Contains(stacks, fn) {
				t.Fatalf("a goroutine in %s is still running after the handler returned:\n%s", fn, stacks)
			}
		}
	}
}

// TestOutOfTimeLeavesQueueForNextHolder: a holder whose time runs out
// before the queue is empty stops draining in time, releases, says what it
// left, and the next invocation on the thread drains the rest.
func TestOutOfTimeLeavesQueueForNextHolder(t *testing.T) {
	t.Parallel()
	srv := upstashtest.NewServer(t)
	const thread = "slack:C1:late-drain"
	// An invocation with 6 s left works until 5 s (1 s release reserve) and
	// takes no queued message with less than chatflow.MinDrainTime of that
	// left. The holder's own message runs into that window, whatever the
	// speed of the machine; the holder must then stop.
	var drained atomic.Int64
	// Another process holds the thread while four messages queue up.
	c, err := upstash.New(upstash.Config{URL: srv.URL, Token: srv.Token})
	if err != nil {
		t.Fatal(err)
	}
	state := upstash.NewState(c)
	counted := &putBackCounter{FusedAdapter: state}
	a := newTestAppOn(t, counted, &chatbot.Bot{OnMessage: func(ctx context.Context, h chatbot.Handled) {
		switch {
		case h.Drained:
			drained.Add(1)
		case h.MessageID == "m0":
			work, _ := ctx.Deadline()
			time.Sleep(time.Until(work.Add(-chatflow.MinDrainTime / 2)))
		}
	}})
	ctx := context.Background()
	other, err := state.AcquireLock(ctx, thread, time.Minute)
	if err != nil || other == nil {
		t.Fatalf("taking the lock: %v, %v", other, err)
	}
	for _, id := range []string{"m1", "m2", "m3", "m4"} {
		if r := invoke(t, a, hookFor(thread, id, "more"), 10*time.Second); r.StatusCode != 202 {
			t.Fatalf("%s: %d %s", id, r.StatusCode, r.Body)
		}
	}
	if err := state.ReleaseLock(ctx, other); err != nil {
		t.Fatal(err)
	}
	queued := queueBytes(t, srv, thread)
	enqueued := counted.enqueues.Load()
	deadline := time.Now().Add(6 * time.Second)
	r := invokeUntil(t, a, hookFor(thread, "m0", "@bot hi"), deadline)
	// The holder released with its Finish, popping nothing: the entries
	// are where they were, in order and byte for byte, and none was taken
	// off and put back (no Enqueue, no separate ReleaseLock).
	if got := queueBytes(t, srv, thread); strings.Join(got, "\n") != strings.Join(queued, "\n") {
		t.Errorf("queue after the holder = %q, want it untouched: %q", got, queued)
	}
	if n := counted.enqueues.Load() - enqueued; n != 0 || counted.releases.Load() != 0 {
		t.Errorf("the holder sent %d Enqueues and %d ReleaseLocks, want none (no put-back)", n, counted.releases.Load())
	}
	if late := time.Since(deadline); late > 0 {
		t.Errorf("the holder returned %v after its deadline", late)
	}
	if o := parse(t, r); r.StatusCode != 200 || o.Left != 4 || len(o.Handled) != 1 || drained.Load() != 0 {
		t.Fatalf("holder: %d %s (drained %d), want 200 with its own message handled and the four queued ones left", r.StatusCode, r.Body, drained.Load())
	}
	if exists(t, srv, "chat-sdk:lock:"+thread) {
		t.Fatal("the holder did not release")
	}
	// The next message on the thread takes the lock and drains the rest.
	if r := invoke(t, a, hookFor(thread, "m5", "later"), roomy); r.StatusCode != 200 || len(parse(t, r).Handled) != 5 || drained.Load() != 4 {
		t.Fatalf("m5: %d %s (drained %d), want m5 and the four left", r.StatusCode, r.Body, drained.Load())
	}
	h := history(t, srv, thread)
	for i := 0; i <= 5; i++ {
		if id := fmt.Sprintf("m%d", i); h[id] != 1 {
			t.Errorf("%s: %d times in history, want 1", id, h[id])
		}
	}
}

// putBackCounter is a FusedAdapter that counts Enqueue and ReleaseLock
// calls (a put-back of popped entries and the release after it).
type putBackCounter struct {
	upstash.FusedAdapter
	enqueues, releases atomic.Int64
}

func (p *putBackCounter) Enqueue(ctx context.Context, threadID string, e upstash.QueueEntry, maxSize int) (int, error) {
	p.enqueues.Add(1)
	return p.FusedAdapter.Enqueue(ctx, threadID, e, maxSize)
}

func (p *putBackCounter) ReleaseLock(ctx context.Context, l *upstash.Lock) error {
	p.releases.Add(1)
	return p.FusedAdapter.ReleaseLock(ctx, l)
}

// queueBytes returns the raw entries queued for thread, oldest first.
func queueBytes(t *testing.T, srv *upstashtest.Server, thread string) []string {
	t.Helper()
	v, err := srv.Do("LRANGE", "chat-sdk:queue:"+thread, "0", "-1")
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, x := range v.([]interface{}) {
		out = append(out, string(x.([]byte)))
	}
	return out
}

// TestRequestsPerWebhook pins the HTTP requests one webhook costs, scripts
// loaded: chatflow's Admit and Finish for a handled one (the bot's
// IsSubscribed and thread state read answered from Admit's read, its
// state write carried by Finish: WithDeferredWrites), plus Subscribe for
// a first mention; Admit alone for a queued or duplicate one.
func TestRequestsPerWebhook(t *testing.T) {
	t.Parallel()
	srv := upstashtest.NewServer(t)
	a := newTestApp(t, srv, srv.Token, &chatbot.Bot{})
	const thread = "slack:C1:cost"
	requests := func(w chatbot.Webhook, wantStatus int) int64 {
		t.Helper()
		before := srv.Stats().TotalRequests
		if r := invoke(t, a, w, roomy); r.StatusCode != wantStatus {
			t.Fatalf("%s: %d %s, want %d", w.MessageID, r.StatusCode, r.Body, wantStatus)
		}
		return srv.Stats().TotalRequests - before
	}
	requests(hookFor(thread, "m0", "@bot hi"), 200) // subscribes, loads the scripts
	c, err := upstash.New(upstash.Config{URL: srv.URL, Token: srv.Token})
	if err != nil {
		t.Fatal(err)
	}
	other, err := upstash.NewState(c).AcquireLock(context.Background(), thread, time.Minute)
	if err != nil || other == nil {
		t.Fatalf("taking the lock: %v, %v", other, err)
	}
	requests(hookFor(thread, "q0", "queued"), 202) // loads the enqueue path
	got := map[string]int64{
		"queued":    requests(hookFor(thread, "q1", "queued"), 202),
		"duplicate": requests(hookFor(thread, "q1", "queued"), 200),
	}
	if err := upstash.NewState(c).ReleaseLock(context.Background(), other); err != nil {
		t.Fatal(err)
	}
	requests(hookFor(thread, "d0", "drains q0 and q1"), 200)
	got["handled"] = requests(hookFor(thread, "m1", "hello"), 200)
	got["ignored"] = requests(hookFor("slack:C1:other", "m2", "hello"), 200)
	got["mention"] = requests(hookFor("slack:C1:third", "m3", "@bot hi"), 200)
	want := map[string]int64{"queued": 1, "duplicate": 1, "handled": 2, "ignored": 2, "mention": 3}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("requests per webhook %v, want %v", got, want)
	}
}
