package main

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
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
	"github.com/chatstate/upstash/upstashtest"
)

// newTestApp builds the app the way main does, against srv, with token.
func newTestApp(t *testing.T, srv *upstashtest.Server, token string) *app {
	t.Helper()
	bot, err := chatbot.FromConfig(upstash.Config{URL: srv.URL, Token: token})
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	bot.OnEvent = func(e chatbot.Event) {
		mu.Lock()
		defer mu.Unlock()
		t.Log(e)
	}
	return &app{bot: bot}
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

func outcome(t *testing.T, resp events.LambdaFunctionURLResponse) chatbot.Outcome {
	t.Helper()
	var o chatbot.Outcome
	if err := json.Unmarshal([]byte(resp.Body), &o); err != nil {
		t.Fatalf("body %q: %v", resp.Body, err)
	}
	return o
}

func hookFor(thread, id, text string) chatbot.Webhook {
	return chatbot.Webhook{Platform: "slack", MessageID: id, ThreadID: thread, User: "U1", Text: text}
}

// history returns how many times each message id is in the thread's history.
func history(t *testing.T, srv *upstashtest.Server, thread string) map[string]int {
	t.Helper()
	seen, err := chatbot.HistoryCounts(context.Background(), upstash.NewState(mustClient(t, srv)), thread)
	if err != nil {
		t.Fatal(err)
	}
	return seen
}

func mustClient(t *testing.T, srv *upstashtest.Server) *upstash.Client {
	t.Helper()
	c, err := upstash.New(upstash.Config{URL: srv.URL, Token: srv.Token})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func exists(t *testing.T, srv *upstashtest.Server, key string) bool {
	t.Helper()
	n, err := srv.Do("EXISTS", key)
	if err != nil {
		t.Fatal(err)
	}
	return n.(int64) == 1
}

func TestDuplicateWebhookProcessedOnce(t *testing.T) {
	t.Parallel()
	srv := upstashtest.NewServer(t)
	a := newTestApp(t, srv, srv.Token)
	var calls atomic.Int64
	a.bot.OnMessage = func(context.Context, chatbot.Message) { calls.Add(1) }

	w := hookFor("slack:C1:dup", "m1", "@bot hello")
	first := invoke(t, a, w, 10*time.Second)
	second := invoke(t, a, w, 10*time.Second)
	if first.StatusCode != 200 || outcome(t, first).Status != chatbot.StatusHandled {
		t.Fatalf("first delivery: %d %s", first.StatusCode, first.Body)
	}
	if second.StatusCode != 200 || outcome(t, second).Status != chatbot.StatusDuplicate {
		t.Fatalf("retry: %d %s", second.StatusCode, second.Body)
	}
	if n := calls.Load(); n != 1 {
		t.Errorf("bot logic ran %d times, want 1", n)
	}
	if h := history(t, srv, w.ThreadID); h["m1"] != 1 || len(h) != 1 {
		t.Errorf("history = %v, want m1 once", h)
	}
	if exists(t, srv, "chat-sdk:lock:"+w.ThreadID) {
		t.Error("lock key left behind")
	}
}

// TestConcurrentWebhooksOneAtATime sends N webhooks on one thread at once:
// the bot's logic must never run twice at the same time on the thread, and
// every message must be handled exactly once, by its own invocation or by
// the lock holder's drain.
func TestConcurrentWebhooksOneAtATime(t *testing.T) {
	t.Parallel()
	srv := upstashtest.NewServer(t)
	a := newTestApp(t, srv, srv.Token)
	var inFlight, maxInFlight atomic.Int64
	var mu sync.Mutex
	calls := map[string]int{}
	a.bot.OnMessage = func(ctx context.Context, m chatbot.Message) {
		n := inFlight.Add(1)
		defer inFlight.Add(-1)
		for {
			old := maxInFlight.Load()
			if n <= old || maxInFlight.CompareAndSwap(old, n) {
				break
			}
		}
		mu.Lock()
		calls[m.MessageID]++
		mu.Unlock()
		time.Sleep(5 * time.Millisecond) // widen the window for an overlap
	}

	// n = MaxQueue: with one of them holding the lock, the queue never
	// overflows (past MaxQueue the oldest entry is dropped, as in the Chat
	// SDK; TestQueueOverflowDropsOldest shows that).
	const thread, n = "slack:C1:burst", chatbot.DefaultMaxQueue
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
	if m := maxInFlight.Load(); m != 1 {
		t.Errorf("at most %d handlers ran at once on the thread, want 1", m)
	}
	h := history(t, srv, thread)
	for i := 0; i <= n; i++ {
		id := fmt.Sprintf("m%d", i)
		if h[id] != 1 || calls[id] != 1 {
			t.Errorf("%s: %d times in history, bot logic ran %d times; want 1 and 1", id, h[id], calls[id])
		}
	}
	if len(h) != n+1 {
		t.Errorf("history has %d distinct messages, want %d", len(h), n+1)
	}
	if exists(t, srv, "chat-sdk:lock:"+thread) {
		t.Error("lock key left behind")
	}
	if exists(t, srv, "chat-sdk:queue:"+thread) {
		t.Error("queue not drained")
	}
}

// TestLockTTLFollowsDeadline: with 3 s left, the lock lives 3 s + 1 s of
// skew instead of the Chat SDK's 30 s, and the work stops a quarter of the
// time left before the deadline, to leave time for the release. The bounds
// come from clock readings around the call, so a slow machine widens them
// instead of failing the test.
func TestLockTTLFollowsDeadline(t *testing.T) {
	t.Parallel()
	srv := upstashtest.NewServer(t)
	a := newTestApp(t, srv, srv.Token)
	const thread = "slack:C1:ttl"
	var pttl int64
	var workDeadline, measured time.Time
	a.bot.OnMessage = func(ctx context.Context, m chatbot.Message) {
		var ok bool
		if workDeadline, ok = ctx.Deadline(); !ok {
			t.Error("the bot's context has no deadline")
		}
		v, err := srv.Do("PTTL", "chat-sdk:lock:"+thread)
		measured = time.Now()
		if err != nil {
			t.Error(err)
			return
		}
		pttl = v.(int64)
	}
	start := time.Now()
	deadline := start.Add(3 * time.Second)
	r := invokeUntil(t, a, hookFor(thread, "m1", "@bot hi"), deadline)
	if r.StatusCode != 200 || measured.IsZero() {
		t.Fatalf("%d %s", r.StatusCode, r.Body)
	}
	// The bot read the clock (now) somewhere in [start, measured]; it took
	// TTL = time left + 1 s, rounded up to 100 ms, and stops working
	// min(1 s, time left / 4) before the deadline.
	maxLeft, minLeft := deadline.Sub(start), deadline.Sub(measured)
	ms := func(d time.Duration) int64 { return d.Milliseconds() }
	// PTTL counts down from TTL from the moment Redis set it (≥ start).
	if lo, hi := ms(minLeft+time.Second)-1, ms(maxLeft+time.Second+100*time.Millisecond); pttl < lo || pttl > hi {
		t.Errorf("lock PTTL %d ms, want in [%d, %d] (time left + 1 s)", pttl, lo, hi)
	}
	reserve := deadline.Sub(workDeadline)
	if lo, hi := min(time.Second, minLeft/4), min(time.Second, maxLeft/4); reserve < lo || reserve > hi {
		t.Errorf("work stops %v before the deadline, want in [%v, %v] (a quarter of the time left)", reserve, lo, hi)
	}
	if !workDeadline.After(measured) {
		t.Errorf("the bot's work deadline %v had passed when it ran (%v)", workDeadline, measured)
	}
}

func TestTooCloseToDeadlineWritesNothing(t *testing.T) {
	t.Parallel()
	srv := upstashtest.NewServer(t)
	a := newTestApp(t, srv, srv.Token)
	w := hookFor("slack:C1:late", "m1", "@bot hi")
	r := invoke(t, a, w, 200*time.Millisecond)
	if r.StatusCode != 503 || !strings.Contains(r.Body, "deadline") {
		t.Fatalf("got %d %s, want 503 naming the deadline", r.StatusCode, r.Body)
	}
	if exists(t, srv, "chat-sdk:cache:"+chatbot.DedupeKey(w)) {
		t.Error("dedupe marker written although the message was refused: the platform's retry would be dropped")
	}
}

func TestWrongTokenIsAClearError(t *testing.T) {
	t.Parallel()
	srv := upstashtest.NewServer(t)
	const bad = "wrong-token-3c1f0e9a7b"
	a := newTestApp(t, srv, bad)
	r := invoke(t, a, hookFor("slack:C1:auth", "m1", "@bot hi"), 5*time.Second)
	if r.StatusCode != 502 {
		t.Errorf("status %d, want 502", r.StatusCode)
	}
	if !strings.Contains(strings.ToLower(r.Body), "unauthorized") {
		t.Errorf("body %s does not say unauthorized", r.Body)
	}
	if strings.Contains(r.Body, bad) || strings.Contains(r.Body, srv.Token) {
		t.Errorf("body %s contains a token", r.Body)
	}
}

// TestLockLostWhileDraining: the lock is force-released while the holder
// works with two messages queued; Finish finds the lock gone, and the
// holder takes it again and drains them: nothing is lost.
func TestLockLostWhileDraining(t *testing.T) {
	t.Parallel()
	srv := upstashtest.NewServer(t)
	a := newTestApp(t, srv, srv.Token)
	const thread = "slack:C1:lost"
	state := upstash.NewState(mustClient(t, srv))
	holding, queued := make(chan struct{}), make(chan struct{})
	var kinds []chatbot.EventKind
	var mu sync.Mutex
	a.bot.OnEvent = func(e chatbot.Event) {
		t.Log(e)
		mu.Lock()
		kinds = append(kinds, e.Kind)
		mu.Unlock()
	}
	a.bot.OnMessage = func(ctx context.Context, m chatbot.Message) {
		if m.MessageID != "m1" {
			return
		}
		close(holding) // m1's invocation holds the lock while it runs this
		<-queued
		if err := state.ForceReleaseLock(ctx, thread); err != nil {
			t.Error(err)
		}
	}
	// On an early failure, let m1's bot logic go on, so that nothing is left
	// blocked behind the test.
	var unblock sync.Once
	defer unblock.Do(func() { close(queued) })
	done := make(chan events.LambdaFunctionURLResponse, 1)
	// With 30 s left the lock's TTL is 30 s, so KeepLockAlive's first
	// heartbeat comes after 10 s: the holder, not the heartbeat, is the one
	// to find the lock gone, at its extend before m2.
	go func() { done <- invoke(t, a, hookFor(thread, "m1", "@bot hi"), 30*time.Second) }()
	select {
	case <-holding:
	case r := <-done:
		t.Fatalf("m1 returned before its bot logic ran: %d %s", r.StatusCode, r.Body)
	}
	for _, id := range []string{"m2", "m3"} {
		if r := invoke(t, a, hookFor(thread, id, "more"), 10*time.Second); r.StatusCode != 202 {
			t.Fatalf("%s: %d %s, want 202", id, r.StatusCode, r.Body)
		}
	}
	unblock.Do(func() { close(queued) })
	r := <-done
	if o := outcome(t, r); r.StatusCode != 200 || len(o.Handled) != 3 {
		t.Fatalf("holder: %d %s, want m1, m2 and m3 handled", r.StatusCode, r.Body)
	}
	h := history(t, srv, thread)
	for _, id := range []string{"m1", "m2", "m3"} {
		if h[id] != 1 {
			t.Errorf("%s %d times in history, want 1", id, h[id])
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if !containsKind(kinds, chatbot.EventLockLost) {
		t.Errorf("events %v: want lock-lost", kinds)
	}
}

func containsKind(ks []chatbot.EventKind, k chatbot.EventKind) bool {
	for _, x := range ks {
		if x == k {
			return true
		}
	}
	return false
}

// TestHTTPAPIv2Payload: an API Gateway HTTP API (payload 2.0) event, with a
// base64 body, decodes into the Function URL request type the handler takes.
func TestHTTPAPIv2Payload(t *testing.T) {
	t.Parallel()
	srv := upstashtest.NewServer(t)
	a := newTestApp(t, srv, srv.Token)
	body, _ := json.Marshal(hookFor("slack:C1:apigw", "m1", "@bot hi"))
	ev := events.APIGatewayV2HTTPRequest{
		Version: "2.0", RouteKey: "POST /webhook", RawPath: "/webhook",
		Headers:         map[string]string{"content-type": "application/json"},
		Body:            base64.StdEncoding.EncodeToString(body),
		IsBase64Encoded: true,
		RequestContext: events.APIGatewayV2HTTPRequestContext{
			RequestID: "apigw-1",
			HTTP:      events.APIGatewayV2HTTPRequestContextHTTPDescription{Method: "POST", Path: "/webhook"},
		},
	}
	payload, err := json.Marshal(ev)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	raw, err := lambda.NewHandler(a.handle).Invoke(ctx, payload)
	if err != nil {
		t.Fatal(err)
	}
	var resp events.APIGatewayV2HTTPResponse
	if err := json.Unmarshal(raw, &resp); err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 200 || !strings.Contains(resp.Body, `"handled"`) {
		t.Fatalf("got %d %s", resp.StatusCode, resp.Body)
	}

	// And the errors a caller can make.
	for _, tc := range []struct {
		method, body string
		want         int
	}{
		{"GET", "", 405},
		{"POST", "{not json", 400},
		{"POST", `{"platform":"slack","text":"no ids"}`, 400},
	} {
		r, err := a.handle(ctx, events.LambdaFunctionURLRequest{Body: tc.body, RequestContext: events.LambdaFunctionURLRequestContext{
			HTTP: events.LambdaFunctionURLRequestContextHTTPDescription{Method: tc.method}}})
		if err != nil || r.StatusCode != tc.want {
			t.Errorf("%s %q: %d %s (%v), want %d", tc.method, tc.body, r.StatusCode, r.Body, err, tc.want)
		}
	}
}

// TestNoGoroutineOutlivesTheInvocation: when the handler returns, neither
// the lock heartbeat nor anything of the bot is still running (Lambda
// freezes the process right after). Not parallel: it reads every
// goroutine's stack, and the parallel tests only start after it.
func TestNoGoroutineOutlivesTheInvocation(t *testing.T) {
	srv := upstashtest.NewServer(t)
	a := newTestApp(t, srv, srv.Token)
	a.bot.OnMessage = func(context.Context, chatbot.Message) { time.Sleep(20 * time.Millisecond) }
	for i := 0; i < 3; i++ {
		if r := invoke(t, a, hookFor("slack:C1:leak", fmt.Sprintf("m%d", i), "@bot hi"), 10*time.Second); r.StatusCode != 200 {
			t.Fatalf("m%d: %d %s", i, r.StatusCode, r.Body)
		}
		buf := make([]byte, 1<<20)
		stacks := string(buf[:runtime.Stack(buf, true)])
		for _, fn := range []string{"upstash.(*State).heartbeat", "upstash.(*State).KeepLockAlive", "chatflow.(*call)", "examples/internal/chatbot."} {
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
	a := newTestApp(t, srv, srv.Token)
	const thread = "slack:C1:late-drain"
	// An invocation with 6 s left works until 5 s (1 s release reserve) and
	// takes no queued message with less than chatflow.MinDrainTime (0.5 s)
	// of that left. The holder's own message runs into that window,
	// whatever the speed of the machine; the holder must then stop.
	var drained atomic.Int64
	a.bot.OnMessage = func(ctx context.Context, m chatbot.Message) {
		if m.Drained {
			drained.Add(1)
			return
		}
		if m.MessageID == "m0" {
			work, _ := ctx.Deadline()
			time.Sleep(time.Until(work.Add(-chatflow.MinDrainTime / 2)))
		}
	}
	// Another process holds the thread while four messages queue up.
	state := upstash.NewState(mustClient(t, srv))
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
	deadline := time.Now().Add(6 * time.Second)
	r := invokeUntil(t, a, hookFor(thread, "m0", "@bot hi"), deadline)
	if late := time.Since(deadline); late > 0 {
		t.Errorf("the holder returned %v after its deadline", late)
	}
	o := outcome(t, r)
	if r.StatusCode != 200 || o.Left != 4 || len(o.Handled) != 1 || drained.Load() != 0 {
		t.Fatalf("holder: %d %s (drained %d), want 200 with its own message handled and the four queued ones left", r.StatusCode, r.Body, drained.Load())
	}
	if exists(t, srv, "chat-sdk:lock:"+thread) {
		t.Fatal("the holder did not release")
	}
	// The next message on the thread takes the lock and drains the rest.
	if r := invoke(t, a, hookFor(thread, "m5", "later"), 10*time.Second); r.StatusCode != 200 {
		t.Fatalf("m5: %d %s", r.StatusCode, r.Body)
	}
	h := history(t, srv, thread)
	for i := 0; i <= 5; i++ {
		if id := fmt.Sprintf("m%d", i); h[id] != 1 {
			t.Errorf("%s: %d times in history, want 1", id, h[id])
		}
	}
}

// TestQueueOverflowDropsOldest: while the holder is busy, more messages
// arrive than the queue holds; the oldest queued ones are dropped (the Chat
// SDK's drop-oldest), and the bot says so.
func TestQueueOverflowDropsOldest(t *testing.T) {
	t.Parallel()
	srv := upstashtest.NewServer(t)
	a := newTestApp(t, srv, srv.Token)
	a.bot.MaxQueue = 3
	const thread = "slack:C1:full"
	release := make(chan struct{})
	a.bot.OnEvent = func(e chatbot.Event) { t.Log(e) }
	holding := make(chan struct{})
	var mu sync.Mutex
	calls := map[string]int{}
	a.bot.OnMessage = func(ctx context.Context, m chatbot.Message) {
		mu.Lock()
		calls[m.MessageID]++
		mu.Unlock()
		if m.MessageID == "m0" {
			close(holding)
			<-release
		}
	}
	var unblock sync.Once
	defer unblock.Do(func() { close(release) })
	done := make(chan events.LambdaFunctionURLResponse, 1)
	go func() { done <- invoke(t, a, hookFor(thread, "m0", "@bot hi"), roomy) }()
	select {
	case <-holding: // m0's invocation holds the lock
	case r := <-done:
		t.Fatalf("m0 returned before its bot logic ran: %d %s", r.StatusCode, r.Body)
	}
	for i := 1; i <= 5; i++ {
		r := invoke(t, a, hookFor(thread, fmt.Sprintf("m%d", i), "more"), 10*time.Second)
		if o := outcome(t, r); r.StatusCode != 202 || o.Depth != min(i, 3) {
			t.Fatalf("m%d: %d %s, want 202 with depth %d", i, r.StatusCode, r.Body, min(i, 3))
		}
	}
	unblock.Do(func() { close(release) })
	<-done
	mu.Lock()
	defer mu.Unlock()
	h := history(t, srv, thread)
	for id, want := range map[string]int{"m0": 1, "m1": 0, "m2": 0, "m3": 1, "m4": 1, "m5": 1} {
		if calls[id] != want {
			t.Errorf("%s: handled %d times, want %d", id, calls[id], want)
		}
		// The Chat SDK appends every admitted message to the history,
		// dropped ones included.
		if h[id] != 1 {
			t.Errorf("%s: %d times in history, want 1", id, h[id])
		}
	}
	if exists(t, srv, "chat-sdk:lock:"+thread) || exists(t, srv, "chat-sdk:queue:"+thread) {
		t.Error("lock or queue left")
	}
}
