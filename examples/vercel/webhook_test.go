// Tests of the Vercel function. They live outside api/, because Vercel
// would try to build every .go file under api/ (tests included) as a
// function.
package vercel_test

import (
	"context"
	"encoding/json"
	"fmt"
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
	"github.com/chatstate/upstash/examples/internal/chatbot"
	handler "github.com/chatstate/upstash/examples/vercel/api"
	"github.com/chatstate/upstash/upstashtest"
)

// envChild marks a re-executed test binary that must keep the environment
// its parent gave it.
const envChild = "CHATBOT_VERCEL_TEST_CHILD"

// shared is the server behind handler.Handler, which reads the environment
// once per process. Tests that use it need message ids of their own: the
// dedupe key is per platform and message id, not per thread.
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
	for _, k := range []string{upstash.EnvVercelURL, upstash.EnvVercelToken} {
		os.Unsetenv(k)
	}
	os.Setenv(upstash.EnvURL, srv.URL)
	os.Setenv(upstash.EnvToken, srv.Token)
	code := m.Run()
	srv.Close()
	os.Exit(code)
}

func post(h http.Handler, w chatbot.Webhook) *httptest.ResponseRecorder {
	return postCtx(context.Background(), h, w)
}

// postRoomy posts w with a request deadline of a minute, which the handler
// uses instead of its budget: for tests about something other than time, so
// that a burst on a machine many times slower than usual still fits.
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

func webhook(thread, id, text string) chatbot.Webhook {
	return chatbot.Webhook{Platform: "slack", MessageID: id, ThreadID: thread, User: "U1", Text: text}
}

func outcome(t *testing.T, rec *httptest.ResponseRecorder) chatbot.Outcome {
	t.Helper()
	var o chatbot.Outcome
	if err := json.Unmarshal(rec.Body.Bytes(), &o); err != nil {
		t.Fatalf("body %q: %v", rec.Body.String(), err)
	}
	return o
}

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

var exported = http.HandlerFunc(handler.Handler)

var seq atomic.Int64

// uniq makes an id unique in this process, so that tests on the shared
// server can run again (-count) without being deduped by the earlier run.
func uniq(s string) string { return fmt.Sprintf("%s-%d", s, seq.Add(1)) }

func TestHandlerDuplicateProcessedOnce(t *testing.T) {
	t.Parallel()
	thread, id := uniq("slack:C2:dup"), uniq("dup-m1")
	w := webhook(thread, id, "@bot hello")
	first, second := post(exported, w), post(exported, w)
	if first.Code != 200 || outcome(t, first).Status != chatbot.StatusHandled {
		t.Fatalf("first: %d %s", first.Code, first.Body)
	}
	if second.Code != 200 || outcome(t, second).Status != chatbot.StatusDuplicate {
		t.Fatalf("retry: %d %s", second.Code, second.Body)
	}
	if h := history(t, shared, thread); h[id] != 1 || len(h) != 1 {
		t.Errorf("history %v, want m1 once", h)
	}
	if exists(t, shared, "chat-sdk:lock:"+thread) {
		t.Error("lock key left behind")
	}
}

// TestHandlerConcurrentNoneLost goes through the exported Handler:
// every message ends up in the history exactly once and the lock is gone.
func TestHandlerConcurrentNoneLost(t *testing.T) {
	t.Parallel()
	const n = chatbot.DefaultMaxQueue
	thread, prefix := uniq("slack:C2:burst"), uniq("burst")+"-m"
	if rec := postRoomy(exported, webhook(thread, prefix+"0", "@bot start")); rec.Code != 200 {
		t.Fatalf("mention: %d %s", rec.Code, rec.Body)
	}
	var wg sync.WaitGroup
	codes := make([]int, n)
	for i := 1; i <= n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			codes[i-1] = postRoomy(exported, webhook(thread, fmt.Sprintf("%s%d", prefix, i), "message")).Code
		}(i)
	}
	wg.Wait()
	for i, c := range codes {
		if c != 200 && c != 202 {
			t.Errorf("m%d: status %d", i+1, c)
		}
	}
	h := history(t, shared, thread)
	for i := 0; i <= n; i++ {
		if id := fmt.Sprintf("%s%d", prefix, i); h[id] != 1 {
			t.Errorf("%s: %d times in history, want 1", id, h[id])
		}
	}
	if exists(t, shared, "chat-sdk:lock:"+thread) || exists(t, shared, "chat-sdk:queue:"+thread) {
		t.Error("lock or queue left behind")
	}
}

// newHandler builds what handler.Handler serves, with a bot the test can
// watch: chatbot.NewHTTPHandler over a bot built by chatbot.FromConfig.
func newHandler(t *testing.T, srv *upstashtest.Server, token string, setup func(*chatbot.Bot)) http.Handler {
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
	if setup != nil {
		setup(bot)
	}
	return chatbot.NewHTTPHandler(bot, 8500*time.Millisecond)
}

func TestConcurrentWebhooksOneAtATime(t *testing.T) {
	t.Parallel()
	srv := upstashtest.NewServer(t)
	var inFlight, maxInFlight atomic.Int64
	var mu sync.Mutex
	calls := map[string]int{}
	h := newHandler(t, srv, srv.Token, func(b *chatbot.Bot) {
		b.OnMessage = func(ctx context.Context, m chatbot.Message) {
			n := inFlight.Add(1)
			defer inFlight.Add(-1)
			for old := maxInFlight.Load(); n > old && !maxInFlight.CompareAndSwap(old, n); old = maxInFlight.Load() {
			}
			mu.Lock()
			calls[m.MessageID]++
			mu.Unlock()
			time.Sleep(5 * time.Millisecond)
		}
	})
	const thread, n = "slack:C3:burst", chatbot.DefaultMaxQueue
	postRoomy(h, webhook(thread, "m0", "@bot start"))
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
	if exists(t, srv, "chat-sdk:lock:"+thread) {
		t.Error("lock key left behind")
	}
}

// TestBudgetWithoutDeadline: on Vercel r.Context() has no deadline; the
// handler bounds the work itself (8.5 s budget, 1 s of it kept to release),
// and the lock's TTL follows the budget (8.5 s + 1 s skew). The bounds come
// from clock readings around the request, so a slow machine cannot fail it.
func TestBudgetWithoutDeadline(t *testing.T) {
	t.Parallel()
	srv := upstashtest.NewServer(t)
	const thread = "slack:C3:budget"
	var workDeadline, measured time.Time
	var hasDeadline bool
	var pttl int64
	h := newHandler(t, srv, srv.Token, func(b *chatbot.Bot) {
		b.OnMessage = func(ctx context.Context, m chatbot.Message) {
			workDeadline, hasDeadline = ctx.Deadline()
			v, err := srv.Do("PTTL", "chat-sdk:lock:"+thread)
			measured = time.Now()
			if err != nil {
				t.Error(err)
				return
			}
			pttl = v.(int64)
		}
	})
	start := time.Now()
	if rec := post(h, webhook(thread, "m1", "@bot hi")); rec.Code != 200 || measured.IsZero() {
		t.Fatalf("%d %s", rec.Code, rec.Body)
	}
	// The budget starts when the handler reads the clock, in [start, measured].
	const work = 7500 * time.Millisecond // budget − release reserve
	if !hasDeadline || workDeadline.Before(start.Add(work)) || workDeadline.After(measured.Add(work)) {
		t.Errorf("work deadline %v after the request (set: %v), want 8.5 s budget − 1 s release reserve", workDeadline.Sub(start), hasDeadline)
	}
	// With no deadline the TTL is exact: 9.5 s; PTTL counts down from it.
	if elapsed := measured.Sub(start).Milliseconds(); pttl > 9500 || pttl < 9500-elapsed-1 {
		t.Errorf("lock PTTL %d ms, want in [%d, 9500] (8.5 s budget + 1 s skew)", pttl, 9500-elapsed-1)
	}
}

// TestClientGoneStillReleases: when the request's context is cancelled
// mid-work (a client that hangs up under `vercel dev`), the lock is still
// released and the dedupe marker cleared, so a retry is processed.
func TestClientGoneStillReleases(t *testing.T) {
	t.Parallel()
	srv := upstashtest.NewServer(t)
	const thread = "slack:C3:gone"
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	h := newHandler(t, srv, srv.Token, func(b *chatbot.Bot) {
		b.OnMessage = func(context.Context, chatbot.Message) { cancel() }
	})
	w := webhook(thread, "m1", "@bot hi")
	body, _ := json.Marshal(w)
	req := httptest.NewRequest(http.MethodPost, "/api/webhook", strings.NewReader(string(body))).WithContext(ctx)
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	if rec.Code < 500 {
		t.Fatalf("status %d %s, want a 5xx", rec.Code, rec.Body)
	}
	if exists(t, srv, "chat-sdk:lock:"+thread) {
		t.Error("lock left behind after the request context was cancelled")
	}
	if exists(t, srv, "chat-sdk:cache:"+chatbot.DedupeKey(w)) {
		t.Error("dedupe marker kept for a message that was not handled: the retry would be dropped")
	}
}

func TestWrongTokenIsAClearError(t *testing.T) {
	t.Parallel()
	srv := upstashtest.NewServer(t)
	const bad = "wrong-token-5e8d2c1b"
	rec := post(newHandler(t, srv, bad, nil), webhook("slack:C3:auth", "m1", "@bot hi"))
	checkUnauthorized(t, rec.Code, rec.Body.String(), bad, srv.Token)
}

func checkUnauthorized(t *testing.T, code int, body string, tokens ...string) {
	t.Helper()
	if code != 502 {
		t.Errorf("status %d, want 502", code)
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

// TestHandlerEnvironment runs the exported Handler in child processes,
// since it reads the environment once per process: with Vercel's KV_*
// names and a wrong token, and with nothing set.
func TestHandlerEnvironment(t *testing.T) {
	t.Parallel()
	if os.Getenv(envChild) != "" {
		t.Skip("child process")
	}
	for _, tc := range []struct {
		name string
		env  []string
		want func(t *testing.T, code int, body string)
	}{
		{"kv-wrong-token", []string{upstash.EnvVercelURL + "=" + shared.URL, upstash.EnvVercelToken + "=wrong-kv-token-77aa"},
			func(t *testing.T, code int, body string) {
				checkUnauthorized(t, code, body, "wrong-kv-token-77aa", shared.Token)
			}},
		{"kv-right-token", []string{upstash.EnvVercelURL + "=" + shared.URL, upstash.EnvVercelToken + "=" + shared.Token},
			func(t *testing.T, code int, body string) {
				if code != 200 || strings.Contains(body, shared.Token) {
					t.Errorf("got %d %s, want 200", code, body)
				}
			}},
		{"nothing-set", nil, func(t *testing.T, code int, body string) {
			if code != 500 || !strings.Contains(body, upstash.EnvURL) || !strings.Contains(body, upstash.EnvVercelURL) {
				t.Errorf("got %d %s, want 500 naming %s and %s", code, body, upstash.EnvURL, upstash.EnvVercelURL)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cmd := exec.Command(os.Args[0], "-test.run=^TestChildHandler$", "-test.v")
			cmd.Env = append(cleanEnv(), append(tc.env, envChild+"=1")...)
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

// cleanEnv is the environment without any Upstash or Vercel KV variable.
func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "UPSTASH_REDIS_REST_") || strings.HasPrefix(kv, "KV_") {
			continue
		}
		env = append(env, kv)
	}
	return env
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
	for _, tc := range []struct {
		method, body string
		want         int
	}{
		{http.MethodGet, "", 405},
		{http.MethodPost, "{not json", 400},
		{http.MethodPost, `{"platform":"slack","text":"no ids"}`, 400},
		{http.MethodPost, `{"platform":"slack","messageId":"x","threadId":"t"} trailing`, 400},
	} {
		req := httptest.NewRequest(tc.method, "/api/webhook", strings.NewReader(tc.body))
		rec := httptest.NewRecorder()
		exported.ServeHTTP(rec, req)
		if rec.Code != tc.want {
			t.Errorf("%s %q: %d %s, want %d", tc.method, tc.body, rec.Code, rec.Body, tc.want)
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
