package chatbot

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chatstate/upstash"
	"github.com/chatstate/upstash/chatflow"
	"github.com/chatstate/upstash/upstashtest"
)

func TestParseWebhook(t *testing.T) {
	ok := `{"platform":"slack","messageId":"m1","threadId":"slack:C1:t1","user":"U1","text":"@Bot hi","extra":1}`
	w, err := ParseWebhook([]byte(ok))
	if err != nil {
		t.Fatal(err)
	}
	if w.MessageID != "m1" || w.User != "U1" || !w.Mentions("@bot") || w.Mentions("") {
		t.Errorf("got %+v", w)
	}
	for _, bad := range []string{
		``, `[]`, `{"platform":"slack"}`, `{"platform":" ","messageId":"m","threadId":"t"}`,
		`{"platform":"slack","messageId":"m","threadId":"t"}{}`,
		`{"platform":"slack","messageId":"` + strings.Repeat("x", maxIDBytes+1) + `","threadId":"t"}`,
		`{"platform":"slack","messageId":"m","threadId":"t","text":"` + strings.Repeat("x", maxTextBytes+1) + `"}`,
		`{"platform":"slack","messageId":"m","threadId":"t","text":"` + strings.Repeat(" ", MaxBodyBytes) + `"}`,
	} {
		if _, err := ParseWebhook([]byte(bad)); !errors.Is(err, ErrBadWebhook) {
			t.Errorf("%.60q: err %v, want ErrBadWebhook", bad, err)
		}
	}
}

// TestMessageEncoding: Webhook.Message encodes as the Chat SDK's
// serialized message and reads back through chatflow.Message's
// UnmarshalJSON, the webhook intact in Raw.
func TestMessageEncoding(t *testing.T) {
	w := Webhook{Platform: "slack", MessageID: "m1", ThreadID: "slack:C1:t1", User: "U1", Text: "a <b> & c"}
	now := time.Date(2026, 1, 2, 3, 4, 5, 678_900_000, time.FixedZone("X", 3600))
	data, err := json.Marshal(w.Message(now))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(data, []byte(`{"_type":"chat:Message","id":"m1","threadId":"slack:C1:t1"`)) ||
		!bytes.Contains(data, []byte(`"dateSent":"2026-01-02T02:04:05.678Z"`)) {
		t.Errorf("encoded: %s", data)
	}
	var m chatflow.Message
	if err := json.Unmarshal(data, &m); err != nil {
		t.Fatal(err)
	}
	if m.ID != "m1" || m.ThreadID != w.ThreadID || m.Text != w.Text || m.Author.UserID != "U1" || m.Author.FullName != "U1" ||
		!m.Metadata.DateSent.Equal(now.Truncate(time.Millisecond)) || !sameJSON(m.Formatted, chatflow.FormattedText(w.Text)) {
		t.Errorf("read back: %+v", m)
	}
	if got := webhookOf(&m); got != w {
		t.Errorf("webhook from Raw: %+v, want %+v", got, w)
	}
	// A message queued by a TypeScript bot carries its platform's payload.
	m.Raw = json.RawMessage(`{"type":"message","ts":"1.2"}`)
	if got := webhookOf(&m); got != w {
		t.Errorf("webhook from the fields: %+v, want %+v", got, w)
	}
}

// sameJSON reports whether a and b are the same JSON value (json.Marshal
// escapes <, > and & again around a MarshalJSON result).
func sameJSON(a, b []byte) bool {
	var x, y any
	return json.Unmarshal(a, &x) == nil && json.Unmarshal(b, &y) == nil && fmt.Sprint(x) == fmt.Sprint(y)
}

func TestRespond(t *testing.T) {
	w := Webhook{Platform: "slack", MessageID: "m1", ThreadID: "slack:C1:t1"}
	for _, tc := range []struct {
		res  chatflow.Result
		err  error
		want int
		text string
	}{
		{chatflow.Result{Status: chatflow.StatusHandled, Delivered: []string{"m1", "m2"}}, nil, 200, `{"status":"handled","messageId":"m1","threadId":"slack:C1:t1","handled":["m1","m2"]}`},
		{chatflow.Result{Status: chatflow.StatusHandled, Delivered: []string{"m1"}, Left: 3}, nil, 200, `"left":3`},
		{chatflow.Result{Status: chatflow.StatusQueued, QueueDepth: 2}, nil, 202, `{"status":"queued","messageId":"m1","threadId":"slack:C1:t1","queueDepth":2}`},
		{chatflow.Result{Status: chatflow.StatusDuplicate}, nil, 200, `"duplicate"`},
		{chatflow.Result{Status: chatflow.StatusDropped}, fmt.Errorf("x: %w", chatflow.ErrLocked), 200, `"dropped"`},
		{chatflow.Result{}, fmt.Errorf("dedupe: %w", &upstash.Error{Command: "EVALSHA", Index: -1, Status: 401}), 401, "unauthorized"},
		{chatflow.Result{}, fmt.Errorf("dedupe: %w", &upstash.Error{Command: "SET", Index: -1, Status: 200, Code: "NOPERM", Message: "NOPERM no write"}), 403, upstash.EnvVercelReadOnlyToken},
		{chatflow.Result{}, fmt.Errorf("x: %w", chatflow.ErrNoTime), 503, "deadline"},
		{chatflow.Result{}, fmt.Errorf("x: %w", upstash.ErrConfig), 500, "not configured"},
		{chatflow.Result{Status: chatflow.StatusHandled}, errors.New("model timed out"), 500, "the bot failed"},
		{chatflow.Result{}, fmt.Errorf("x: %w", upstash.ErrOutcomeUnknown), 502, "may or may not"},
		{chatflow.Result{}, errors.New("connection refused"), 502, "state store failed"},
		{chatflow.Result{}, fmt.Errorf("%w: missing threadId", ErrBadWebhook), http.StatusBadRequest, "threadId"},
	} {
		code, body := Respond(w, tc.res, tc.err)
		if code != tc.want || !strings.Contains(string(body), tc.text) || !json.Valid(body) {
			t.Errorf("Respond(%+v, %v): %d %s, want %d containing %q", tc.res, tc.err, code, body, tc.want, tc.text)
		}
	}
}

// newFlow runs bot in a Queue flow with history, as the examples do.
func newFlow(t *testing.T, bot *Bot) (*chatflow.Flow, *upstash.State) {
	t.Helper()
	srv := upstashtest.NewServer(t)
	client, err := upstash.New(upstash.Config{URL: srv.URL, Token: srv.Token})
	if err != nil {
		t.Fatal(err)
	}
	state := upstash.NewState(client)
	flow, err := chatflow.New(state, bot.Handle, chatflow.WithStrategy(chatflow.Queue), chatflow.WithHistory(chatflow.HistoryOptions{}))
	if err != nil {
		t.Fatal(err)
	}
	return flow, state
}

// TestBotHandle runs the bot behind a real Flow: a thread is subscribed by
// a mention and its messages counted; another thread's messages are only
// recorded; a message a TypeScript bot queued while the lock was held is
// drained and handled from its fields.
func TestBotHandle(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var mu sync.Mutex
	var seen []Handled
	holding, release := make(chan struct{}), make(chan struct{})
	bot := &Bot{OnMessage: func(ctx context.Context, h Handled) {
		mu.Lock()
		seen = append(seen, h)
		mu.Unlock()
		if h.MessageID == "m4" {
			close(holding)
			<-release
		}
	}}
	flow, state := newFlow(t, bot)
	const a, b = "slack:C1:a", "slack:C2:b"
	handle := func(thread, id, text string) chatflow.Result {
		t.Helper()
		m := Webhook{Platform: "slack", MessageID: id, ThreadID: thread, User: "U1", Text: text}.Message(time.Now())
		res, err := flow.Handle(WithMessage(ctx, m), "slack", m)
		if err != nil {
			t.Fatalf("%s: %v", id, err)
		}
		return res
	}
	handle(a, "m1", "hello")     // ignored: not subscribed
	handle(a, "m2", "@Bot hi")   // subscribes
	handle(a, "m3", "more")      // counted
	handle(b, "b1", "unrelated") // ignored thread

	// m4 holds the lock while a TypeScript bot queues a message.
	done := make(chan chatflow.Result, 1)
	go func() { done <- handle(a, "m4", "slow") }()
	<-holding
	ts := chatflow.Message{ID: "ts1", ThreadID: a, Text: "from TypeScript", Raw: json.RawMessage(`{"type":"message","ts":"1.5"}`),
		Author: chatflow.Author{UserID: "U9", UserName: "nine"}, Metadata: chatflow.Metadata{DateSent: time.Now()}}
	data, err := json.Marshal(ts)
	if err != nil {
		t.Fatal(err)
	}
	entry, err := upstash.NewQueueEntry(json.RawMessage(data), time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := state.Enqueue(ctx, a, entry, 10); err != nil {
		t.Fatal(err)
	}
	close(release)
	if res := <-done; len(res.Delivered) != 2 || res.Delivered[1] != "ts1" {
		t.Fatalf("m4's call delivered %v, want m4 and ts1", res.Delivered)
	}

	mu.Lock()
	defer mu.Unlock()
	type row struct {
		id                           string
		count                        int
		drained, subscribed, ignored bool
	}
	want := []row{{"m1", 0, false, false, true}, {"m2", 1, false, true, false}, {"m3", 2, false, false, false},
		{"b1", 0, false, false, true}, {"m4", 3, false, false, false}, {"ts1", 4, true, false, false}}
	if len(seen) != len(want) {
		t.Fatalf("OnMessage saw %d messages, want %d: %+v", len(seen), len(want), seen)
	}
	for i, h := range seen {
		got := row{h.MessageID, h.State.Handled, h.Drained, h.Subscribed, h.Ignored}
		if got != want[i] {
			t.Errorf("message %d: %+v, want %+v", i, got, want[i])
		}
	}
	if h := seen[5]; h.Platform != "slack" || h.User != "U9" || h.Text != "from TypeScript" || h.State.LastUser != "U9" {
		t.Errorf("the TypeScript message: %+v", h)
	}
	raw, err := flow.Thread(a).State(ctx)
	var st ThreadState
	if err != nil || json.Unmarshal(raw, &st) != nil || st.Handled != 4 || st.LastMessageID != "ts1" {
		t.Errorf("thread state %s (%v), want 4 handled, last ts1", raw, err)
	}
	if raw, err := flow.Thread(b).State(ctx); err != nil || raw != nil {
		t.Errorf("ignored thread's state %s (%v), want none", raw, err)
	}
	counts, err := HistoryCounts(ctx, state, a)
	if err != nil {
		t.Fatal(err)
	}
	// The TypeScript message was queued directly, not admitted through the flow.
	if len(counts) != 4 || counts["m1"] != 1 || counts["m2"] != 1 || counts["m3"] != 1 || counts["m4"] != 1 {
		t.Errorf("history of %s: %v, want m1-m4 once", a, counts)
	}
}
