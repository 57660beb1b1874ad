// Tests of the Vercel function. They live outside api/, because Vercel
// builds every .go file under api/ as a function.
package vercel_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chatstate/upstash"
	"github.com/chatstate/upstash/chatflow"
	"github.com/chatstate/upstash/examples/internal/chatbot"
	handler "github.com/chatstate/upstash/examples/vercel/api"
	"github.com/chatstate/upstash/internal/testtool"
	"github.com/chatstate/upstash/upstashtest"
)

// envChild marks a re-executed test binary that must keep the environment
// its parent gave it.
const envChild = "CHATBOT_VERCEL_TEST_CHILD"

// shared is the server behind handler.Handler, which reads the environment
// once per process. Tests that use it need ids of their own (uniq).
var shared *upstashtest.Server

func TestMain(m *testing.M) {
	if os.Getenv(envChild) != "" {
		os.Exit(m.Run())
	}
	srv, err := upstashtest.Start()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	shared = srv
	os.Unsetenv(upstash.EnvVercelURL)
	os.Unsetenv(upstash.EnvVercelToken)
	os.Setenv(upstash.EnvURL, srv.URL)
	os.Setenv(upstash.EnvToken, srv.Token)
	code := m.Run()
	srv.Close()
	os.Exit(code)
}

// exported is the function Vercel calls, configured from the environment.
var exported = http.HandlerFunc(handler.Handler)

var seq atomic.Int64

// uniq makes an id unique in this process, so that tests on the shared
// server can run again (-count) without being deduped by the earlier run.
func uniq(s string) string { return fmt.Sprintf("%s-%d", s, seq.Add(1)) }

func webhook(thread, id, text string) chatbot.Webhook {
	return chatbot.Webhook{Platform: "slack", MessageID: id, ThreadID: thread, User: "U1", Text: text}
}

// post sends w as Vercel does: a request context without a deadline.
func post(h http.Handler, w chatbot.Webhook) *httptest.ResponseRecorder {
	return postCtx(context.Background(), h, w)
}

// postRoomy posts w with a request deadline of a minute, which the flow
// uses instead of its budget: for tests about the lock and the queue, not
// time, so that a burst on a machine many times slower than usual fits.
func postRoomy(h http.Handler, w chatbot.Webhook) *httptest.ResponseRecorder {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	return postCtx(ctx, h, w)
}

func postCtx(ctx context.Context, h http.Handler, w chatbot.Webhook) *httptest.ResponseRecorder {
	body, _ := json.Marshal(w)
	req := httptest.NewRequest(http.MethodPost, "/api/webhook", strings.NewReader(string(body))).WithContext(ctx)
	req.Header.Set("Content-Type", "application/json")
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec
}

// answer is the JSON body of a response (chatbot.Respond).
type answer struct {
	Status     string   `json:"status"`
	MessageID  string   `json:"messageId"`
	Handled    []string `json:"handled"`
	Left       int      `json:"left"`
	QueueDepth int      `json:"queueDepth"`
	Error      string   `json:"error"`
	Detail     string   `json:"detail"`
}

func decode(t *testing.T, rec *httptest.ResponseRecorder) answer {
	t.Helper()
	var a answer
	if err := json.Unmarshal(rec.Body.Bytes(), &a); err != nil {
		t.Fatalf("body %q: %v", rec.Body.String(), err)
	}
	return a
}

// wantAnswer fails unless rec is code with the status word status.
func wantAnswer(t *testing.T, what string, rec *httptest.ResponseRecorder, code int, status string) answer {
	t.Helper()
	a := decode(t, rec)
	if rec.Code != code || a.Status != status {
		t.Fatalf("%s: %d %s, want %d %q", what, rec.Code, strings.TrimSpace(rec.Body.String()), code, status)
	}
	return a
}

func history(t *testing.T, srv *upstashtest.Server, thread string) map[string]int {
	t.Helper()
	seen, err := chatbot.HistoryCounts(context.Background(), state(t, srv), thread)
	if err != nil {
		t.Fatal(err)
	}
	return seen
}

func state(t *testing.T, srv *upstashtest.Server) *upstash.State {
	t.Helper()
	c, err := upstash.New(upstash.Config{URL: srv.URL, Token: srv.Token})
	if err != nil {
		t.Fatal(err)
	}
	return upstash.NewState(c)
}

// llen is the length of a list key (0 when it does not exist).
func llen(t *testing.T, srv *upstashtest.Server, key string) int64 {
	t.Helper()
	n, err := srv.Do("LLEN", key)
	if err != nil {
		t.Fatal(err)
	}
	return n.(int64)
}

func exists(t *testing.T, srv *upstashtest.Server, key string) bool {
	t.Helper()
	n, err := srv.Do("EXISTS", key)
	if err != nil {
		t.Fatal(err)
	}
	return n.(int64) == 1
}

// wantNothingLeft fails if thread's lock or queue is still there.
func wantNothingLeft(t *testing.T, srv *upstashtest.Server, thread string) {
	t.Helper()
	if exists(t, srv, "chat-sdk:lock:"+thread) {
		t.Error("lock left behind")
	}
	if n := llen(t, srv, "chat-sdk:queue:"+thread); n != 0 {
		t.Errorf("%d queue entries left behind", n)
	}
}

// testLog is an io.Writer into t.Log, for the flow's logger.
type testLog struct{ t *testing.T }

func (l testLog) Write(p []byte) (int, error) {
	l.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// newHandler builds what handler.Handler serves (handler.NewHandler),
// with a bot the test watches, a token of the test's choice and a budget.
func newHandler(t *testing.T, srv *upstashtest.Server, token string, bot *chatbot.Bot, budget time.Duration) http.Handler {
	t.Helper()
	logger := slog.New(slog.NewTextHandler(testLog{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	h, err := handler.NewHandler(upstash.Config{URL: srv.URL, Token: token}, bot, budget, logger)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// testBudget is the production budget: MaxDuration minus the margin.
const testBudget = handler.MaxDuration - 1500*time.Millisecond

func TestHandlerDuplicateProcessedOnce(t *testing.T) {
	t.Parallel()
	thread, id := uniq("slack:C2:dup"), uniq("dup-m1")
	w := webhook(thread, id, "@bot hello")
	wantAnswer(t, "first", post(exported, w), 200, "handled")
	wantAnswer(t, "retry", post(exported, w), 200, "duplicate")
	if h := history(t, shared, thread); h[id] != 1 || len(h) != 1 {
		t.Errorf("history %v, want %s once", h, id)
	}
	wantNothingLeft(t, shared, thread)
}

// TestHandlerConcurrentNoneLost goes through the exported Handler: every
// message of a burst ends up in the history exactly once, and neither
// lock nor queue is left.
func TestHandlerConcurrentNoneLost(t *testing.T) {
	t.Parallel()
	const n = chatflow.DefaultMaxQueueSize
	thread, prefix := uniq("slack:C2:burst"), uniq("burst")+"-m"
	wantAnswer(t, "mention", postRoomy(exported, webhook(thread, prefix+"0", "@bot start")), 200, "handled")
	var wg sync.WaitGroup
	for i := 1; i <= n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			if rec := postRoomy(exported, webhook(thread, fmt.Sprintf("%s%d", prefix, i), "message")); rec.Code != 200 && rec.Code != 202 {
				t.Errorf("m%d: %d %s", i, rec.Code, rec.Body)
			}
		}(i)
	}
	wg.Wait()
	h := history(t, shared, thread)
	for i := 0; i <= n; i++ {
		if id := fmt.Sprintf("%s%d", prefix, i); h[id] != 1 {
			t.Errorf("%s: %d times in history, want 1", id, h[id])
		}
	}
	wantNothingLeft(t, shared, thread)
}

// TestConcurrentWebhooksOneAtATime: a burst on one thread, counted by the
// bot's OnMessage hook (never two at once, each message once, the thread
// state counting all of them) and at the server (history, lock, queue).
func TestConcurrentWebhooksOneAtATime(t *testing.T) {
	t.Parallel()
	srv := upstashtest.NewServer(t)
	var inFlight, maxInFlight atomic.Int64
	var mu sync.Mutex
	calls := map[string]int{}
	bot := &chatbot.Bot{OnMessage: func(ctx context.Context, h chatbot.Handled) {
		n := inFlight.Add(1)
		defer inFlight.Add(-1)
		for old := maxInFlight.Load(); n > old && !maxInFlight.CompareAndSwap(old, n); old = maxInFlight.Load() {
		}
		mu.Lock()
		calls[h.MessageID]++
		mu.Unlock()
	}}
	h := newHandler(t, srv, srv.Token, bot, testBudget)
	const thread, n = "slack:C3:burst", chatflow.DefaultMaxQueueSize
	wantAnswer(t, "mention", postRoomy(h, webhook(thread, "m0", "@bot start")), 200, "handled")
	var wg sync.WaitGroup
	for i := 1; i <= n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			if rec := postRoomy(h, webhook(thread, fmt.Sprintf("m%d", i), "message")); rec.Code != 200 && rec.Code != 202 {
				t.Errorf("m%d: %d %s", i, rec.Code, rec.Body)
			}
		}(i)
	}
	wg.Wait()
	if m := maxInFlight.Load(); m != 1 {
		t.Errorf("%d handlers ran at once on one thread, want 1", m)
	}
	hist := history(t, srv, thread)
	for i := 0; i <= n; i++ {
		id := fmt.Sprintf("m%d", i)
		if hist[id] != 1 || calls[id] != 1 {
			t.Errorf("%s: %d in history, bot logic ran %d times; want 1 and 1", id, hist[id], calls[id])
		}
	}
	var ts chatbot.ThreadState
	raw, err := state(t, srv).Get(context.Background(), chatflow.ThreadStateKey(thread))
	if err != nil || json.Unmarshal(raw, &ts) != nil || ts.Handled != n+1 {
		t.Errorf("thread state %s (%v), want handled %d", raw, err, n+1)
	}
	wantNothingLeft(t, srv, thread)
}

// TestBudgetWithoutDeadline: Vercel's r.Context() has no deadline, so the
// flow's budget is what ends a slow turn. The bot holds m1 until m2 has
// been queued behind it, then until its context ends: the budget cuts the
// turn, the lock is released, m2 stays queued, and the next webhook's
// holder drains it.
func TestBudgetWithoutDeadline(t *testing.T) {
	t.Parallel()
	srv := upstashtest.NewServer(t)
	const thread, budget = "slack:C3:budget", 4 * time.Second
	started, queued := make(chan struct{}), make(chan struct{})
	var (
		mu          sync.Mutex
		deadline    time.Time
		hasDeadline bool
		cause       error
		drained     = map[string]bool{}
	)
	bot := &chatbot.Bot{OnMessage: func(ctx context.Context, h chatbot.Handled) {
		if h.MessageID == "m1" {
			close(started)
			<-queued
			<-ctx.Done()
			mu.Lock()
			deadline, hasDeadline = ctx.Deadline()
			cause = ctx.Err()
			mu.Unlock()
			return
		}
		mu.Lock()
		drained[h.MessageID] = h.Drained
		mu.Unlock()
	}}
	h := newHandler(t, srv, srv.Token, bot, budget)
	start := time.Now()
	first := make(chan *httptest.ResponseRecorder, 1)
	go func() { first <- post(h, webhook(thread, "m1", "@bot slow")) }()
	var rec *httptest.ResponseRecorder
	select {
	case <-started: // m1's turn holds the lock; its hook waits for m2
	case rec = <-first:
		t.Fatalf("m1 answered %d %s before its turn reached the bot", rec.Code, rec.Body)
	}
	second := post(h, webhook(thread, "m2", "queued behind m1"))
	close(queued)
	wantAnswer(t, "m2", second, 202, "queued")
	rec = <-first
	end := time.Now()
	mu.Lock()
	if !hasDeadline || !errors.Is(cause, context.DeadlineExceeded) {
		t.Errorf("the slow turn's context: deadline set %v, ended with %v; want the budget's deadline", hasDeadline, cause)
	}
	if hasDeadline && (deadline.Before(start.Add(budget-chatflow.ReleaseReserve-chatflow.LockMargin)) || deadline.After(end.Add(budget))) {
		t.Errorf("work deadline %v after the request, want about the %v budget", deadline.Sub(start), budget)
	}
	mu.Unlock()
	t.Logf("m1: %d %s", rec.Code, strings.TrimSpace(rec.Body.String()))
	if a := decode(t, rec); a.Left != 1 {
		t.Errorf("m1's answer says %d left queued, want 1 (m2)", a.Left)
	}
	if exists(t, srv, "chat-sdk:lock:"+thread) {
		t.Error("lock still held after the budget ran out")
	}
	if n := llen(t, srv, "chat-sdk:queue:"+thread); n != 1 {
		t.Errorf("%d queue entries after the budget ran out, want 1 (m2)", n)
	}
	a := wantAnswer(t, "m3", post(h, webhook(thread, "m3", "next")), 200, "handled")
	mu.Lock()
	defer mu.Unlock()
	if d, ok := drained["m2"]; !ok || !d {
		t.Errorf("m2 handed to the bot: %v, drained: %v; want handled by m3's holder from the queue (answer %+v)", ok, d, a)
	}
	wantNothingLeft(t, srv, thread)
}

// TestClientGoneStillReleases: when the request's context is cancelled
// mid-turn (a client that hangs up under `vercel dev`), the lock is still
// released.
func TestClientGoneStillReleases(t *testing.T) {
	t.Parallel()
	srv := upstashtest.NewServer(t)
	const thread = "slack:C3:gone"
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	bot := &chatbot.Bot{OnMessage: func(context.Context, chatbot.Handled) { cancel() }}
	h := newHandler(t, srv, srv.Token, bot, testBudget)
	rec := postCtx(ctx, h, webhook(thread, "m1", "@bot hi"))
	t.Logf("%d %s", rec.Code, strings.TrimSpace(rec.Body.String()))
	if ctx.Err() == nil {
		t.Fatal("the bot never ran")
	}
	wantNothingLeft(t, srv, thread)
	wantAnswer(t, "next", post(h, webhook(thread, "m2", "after")), 200, "handled")
}

func TestWrongTokenIsAClearError(t *testing.T) {
	t.Parallel()
	srv := upstashtest.NewServer(t)
	const bad = "wrong-token-5e8d2c1b"
	rec := post(newHandler(t, srv, bad, &chatbot.Bot{}, testBudget), webhook("slack:C3:auth", "m1", "@bot hi"))
	checkUnauthorized(t, rec.Code, rec.Body.String(), bad, srv.Token)
}

func checkUnauthorized(t *testing.T, code int, body string, tokens ...string) {
	t.Helper()
	if code != 401 {
		t.Errorf("status %d, want 401", code)
	}
	if !strings.Contains(strings.ToLower(body), "unauthorized") {
		t.Errorf("body %s does not say unauthorized", body)
	}
	for _, tok := range tokens {
		if tok != "" && strings.Contains(body, tok) {
			t.Errorf("body %s contains a token", body)
		}
	}
}

// TestRequestsPerWebhook counts the HTTP requests the server receives per
// webhook: a handled one is Admit and Finish (the bot's reads answered
// from Admit's, its state write carried by Finish: WithDeferredWrites),
// plus Subscribe for a first mention; a duplicate or a queued one is one
// request (Admit).
func TestRequestsPerWebhook(t *testing.T) {
	t.Parallel()
	srv := upstashtest.NewServer(t)
	var queuedCost int64
	var h http.Handler
	bot := &chatbot.Bot{OnMessage: func(ctx context.Context, m chatbot.Handled) {
		if !strings.HasPrefix(m.MessageID, "hold") {
			return
		}
		// The holder waits here: the only request now is the queued one.
		before := srv.Stats().TotalRequests
		wantAnswer(t, "behind "+m.MessageID, postRoomy(h, webhook(m.ThreadID, "behind-"+m.MessageID, "queued")), 202, "queued")
		queuedCost = srv.Stats().TotalRequests - before
	}}
	h = newHandler(t, srv, srv.Token, bot, testBudget)
	cost := func(w chatbot.Webhook, code int, status string) int64 {
		t.Helper()
		before := srv.Stats().TotalRequests
		wantAnswer(t, w.MessageID, postRoomy(h, w), code, status)
		return srv.Stats().TotalRequests - before
	}
	// Warm up: each script costs one more request the first time the
	// server sees it (NOSCRIPT, then EVAL).
	cost(webhook("slack:C5:warm", "w1", "@bot warm up"), 200, "handled")
	cost(webhook("slack:C5:warm", "hold-w2", "one queued behind"), 200, "handled")

	const thread = "slack:C5:count"
	mention := cost(webhook(thread, "m1", "@bot hi"), 200, "handled")
	dup := cost(webhook(thread, "m1", "@bot hi"), 200, "duplicate")
	handled := cost(webhook(thread, "m2", "hello"), 200, "handled")
	ignored := cost(webhook("slack:C5:quiet", "q1", "no mention"), 200, "handled")
	// The holder's count includes the queued webhook's, sent meanwhile.
	drain := cost(webhook(thread, "hold-m3", "hold the lock"), 200, "handled") - queuedCost - handled
	t.Logf("requests: first mention %d, handled %d, ignored %d, duplicate %d, queued %d, one more drained %d",
		mention, handled, ignored, dup, queuedCost, drain)
	// Handled: Admit, Finish (and Subscribe on the first mention).
	// Ignored: Admit, Finish. A drained message: the Finish that handed
	// it over (the holder's reads and write served as above, and the
	// batch's turn reads what the holder's turn left in the same lock
	// hold; its write rides on the Finish that releases).
	if mention != 3 || handled != 2 || ignored != 2 || dup != 1 || queuedCost != 1 || drain != 1 {
		t.Errorf("requests: first mention %d (want 3), handled %d (want 2), ignored %d (want 2), duplicate %d (want 1), queued %d (want 1), one more drained %d (want 1)",
			mention, handled, ignored, dup, queuedCost, drain)
	}
	wantNothingLeft(t, srv, thread)
}

// TestHandlerEnvironment runs the exported Handler in child processes,
// since it reads the environment once per process: with Vercel's KV_*
// names and the right or a wrong token, and with nothing set.
func TestHandlerEnvironment(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		env  []string
		want func(t *testing.T, code int, body string)
	}{
		{"kv-wrong-token", []string{upstash.EnvVercelURL + "=" + shared.URL, upstash.EnvVercelToken + "=wrong-kv-token-77aa"},
			func(t *testing.T, code int, body string) {
				checkUnauthorized(t, code, body, "wrong-kv-token-77aa", shared.Token)
				if !strings.Contains(body, upstash.EnvVercelToken) {
					t.Errorf("body %s does not name %s, where the token came from", body, upstash.EnvVercelToken)
				}
			}},
		{"kv-right-token", []string{upstash.EnvVercelURL + "=" + shared.URL, upstash.EnvVercelToken + "=" + shared.Token},
			func(t *testing.T, code int, body string) {
				if code != 200 || strings.Contains(body, shared.Token) {
					t.Errorf("got %d %s, want 200", code, body)
				}
			}},
		{"nothing-set", nil, func(t *testing.T, code int, body string) {
			for _, name := range []string{upstash.EnvURL, upstash.EnvVercelURL, upstash.EnvToken, upstash.EnvVercelToken} {
				if code != 500 || !strings.Contains(body, name) {
					t.Errorf("got %d %s, want 500 naming %s", code, body, name)
				}
			}
		}},
	} {
		tc := tc
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			cmd := exec.Command(os.Args[0], "-test.run=^TestChildHandler$", "-test.v")
			cmd.Env = append(testtool.EnvironWithout("UPSTASH_REDIS_REST_", "KV_"), append(tc.env, envChild+"=1")...)
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("child: %v\n%s", err, out)
			}
			var code int
			var body string
			for _, line := range strings.Split(string(out), "\n") {
				if rest, ok := strings.CutPrefix(strings.TrimSpace(line), "RESULT "); ok {
					if _, err := fmt.Sscanf(rest, "%d", &code); err == nil {
						_, body, _ = strings.Cut(rest, " ")
					}
				}
			}
			if code == 0 {
				t.Fatalf("no result from the child:\n%s", out)
			}
			tc.want(t, code, body)
		})
	}
}

// TestChildHandler is the child side of TestHandlerEnvironment.
func TestChildHandler(t *testing.T) {
	if os.Getenv(envChild) == "" {
		t.Skip("run by TestHandlerEnvironment")
	}
	rec := post(exported, webhook("slack:C4:child", fmt.Sprintf("m-%d", time.Now().UnixNano()), "@bot hi"))
	fmt.Printf("RESULT %d %s\n", rec.Code, strings.TrimSpace(rec.Body.String()))
}

func TestBadRequests(t *testing.T) {
	t.Parallel()
	tooLarge := `{"platform":"slack","messageId":"x","threadId":"t","text":"` + strings.Repeat("a", chatbot.MaxBodyBytes) + `"}`
	for _, tc := range []struct {
		name, method, body string
		want               int
	}{
		{"GET", http.MethodGet, "", 405},
		{"not JSON", http.MethodPost, "{not json", 400},
		{"no ids", http.MethodPost, `{"platform":"slack","text":"no ids"}`, 400},
		{"trailing data", http.MethodPost, `{"platform":"slack","messageId":"x","threadId":"t"} trailing`, 400},
		{"too large", http.MethodPost, tooLarge, 413},
	} {
		req := httptest.NewRequest(tc.method, "/api/webhook", strings.NewReader(tc.body))
		rec := httptest.NewRecorder()
		exported.ServeHTTP(rec, req)
		if rec.Code != tc.want || rec.Header().Get("Content-Type") != "application/json" {
			t.Errorf("%s: %d %s (%s), want %d, JSON", tc.name, rec.Code, rec.Body, rec.Header().Get("Content-Type"), tc.want)
		}
	}
}

// TestVercelJSONMatchesMaxDuration keeps vercel.json and the handler's
// budget in step.
func TestVercelJSONMatchesMaxDuration(t *testing.T) {
	t.Parallel()
	data, err := os.ReadFile("vercel.json")
	if err != nil {
		t.Fatal(err)
	}
	var cfg struct {
		Functions map[string]struct {
			MaxDuration float64 `json:"maxDuration"`
		} `json:"functions"`
	}
	if err := json.Unmarshal(data, &cfg); err != nil {
		t.Fatal(err)
	}
	fn, ok := cfg.Functions["api/*.go"]
	if !ok {
		t.Fatal(`vercel.json has no functions["api/*.go"]`)
	}
	if got := time.Duration(fn.MaxDuration * float64(time.Second)); got != handler.MaxDuration {
		t.Errorf("vercel.json maxDuration %v, handler.MaxDuration %v", got, handler.MaxDuration)
	}
}
