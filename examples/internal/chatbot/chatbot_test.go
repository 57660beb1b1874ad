package chatbot

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/chatstate/upstash"
)

func TestParseWebhook(t *testing.T) {
	ok := `{"platform":"slack","messageId":"m1","threadId":"slack:C1:t1","user":"U1","text":"@Bot hi","extra":1}`
	w, err := ParseWebhook([]byte(ok))
	if err != nil {
		t.Fatal(err)
	}
	if w.MessageID != "m1" || !w.Mentions("@bot") || w.Mentions("") {
		t.Errorf("got %+v", w)
	}
	for _, bad := range []string{
		``, `[]`, `{"platform":"slack"}`, `{"platform":" ","messageId":"m","threadId":"t"}`,
		`{"platform":"slack","messageId":"m","threadId":"t"}{}`,
		`{"platform":"slack","messageId":"` + strings.Repeat("x", maxIDBytes+1) + `","threadId":"t"}`,
	} {
		if _, err := ParseWebhook([]byte(bad)); !errors.Is(err, ErrBadWebhook) {
			t.Errorf("%.60q: err %v, want ErrBadWebhook", bad, err)
		}
	}
}

func TestRespond(t *testing.T) {
	for _, tc := range []struct {
		err  error
		out  Outcome
		want int
		text string
	}{
		{nil, Outcome{Status: StatusHandled}, 200, `"handled"`},
		{nil, Outcome{Status: StatusQueued, Depth: 2}, 202, `"queueDepth":2`},
		{nil, Outcome{Status: StatusDuplicate}, 200, `"duplicate"`},
		{fmt.Errorf("dedupe: %w", upstash.ErrUnauthorized), Outcome{}, 502, "unauthorized"},
		{fmt.Errorf("x: %w", upstash.ErrConfig), Outcome{}, 500, "not configured"},
		{fmt.Errorf("x: %w", ErrNoTime), Outcome{}, 503, "deadline"},
		{fmt.Errorf("x: %w", context.DeadlineExceeded), Outcome{}, 504, "budget"},
		{fmt.Errorf("x: %w", upstash.ErrOutcomeUnknown), Outcome{}, 502, "may or may not"},
		{fmt.Errorf("%w: missing threadId", ErrBadWebhook), Outcome{}, http.StatusBadRequest, "threadId"},
		{fmt.Errorf("dedupe: %w", &upstash.Error{Command: "SET", Index: -1, Status: 200, Code: "NOPERM", Message: "NOPERM no write"}), Outcome{}, 502, "KV_REST_API_READ_ONLY_TOKEN"},
	} {
		code, body := Respond(tc.out, tc.err)
		if code != tc.want || !strings.Contains(string(body), tc.text) {
			t.Errorf("Respond(%v): %d %s, want %d containing %q", tc.err, code, body, tc.want, tc.text)
		}
	}
}

func TestPlanFromDeadline(t *testing.T) {
	b := New(nil)
	// The plan reads the time once, as now; deadlines are set relative to it,
	// so every figure is exact whatever the machine's speed.
	now := time.Now()
	for _, tc := range []struct {
		left        time.Duration // 0: no deadline
		wantTTL     time.Duration
		wantReserve time.Duration
	}{
		{0, 26 * time.Second, time.Second},                                    // DefaultBudget 25 s + 1 s skew
		{10 * time.Second, 11 * time.Second, time.Second},                     // a 10 s Lambda
		{15 * time.Minute, 30 * time.Second, time.Second},                     // capped at the Chat SDK's 30 s
		{2 * time.Second, 3 * time.Second, 500 * time.Millisecond},            // a quarter of the time left
		{1950 * time.Millisecond, 3 * time.Second, 487500 * time.Microsecond}, // TTL rounded up to 100 ms
	} {
		ctx := context.Background()
		wantHard := now.Add(b.Budget)
		if tc.left > 0 {
			var cancel context.CancelFunc
			wantHard = now.Add(tc.left)
			ctx, cancel = context.WithDeadline(ctx, wantHard)
			defer cancel()
		}
		p, err := b.newPlan(ctx, now)
		if err != nil {
			t.Fatal(err)
		}
		if p.ttl != tc.wantTTL {
			t.Errorf("%v left: ttl %v, want %v", tc.left, p.ttl, tc.wantTTL)
		}
		work, ok := p.work.Deadline()
		if !p.hard.Equal(wantHard) || !ok || p.hard.Sub(work) != tc.wantReserve {
			t.Errorf("%v left: deadline %v, work until %v (%v): want %v and a release reserve of %v",
				tc.left, p.hard, work, ok, wantHard, tc.wantReserve)
		}
		p.cancel()
	}
	for _, left := range []time.Duration{200 * time.Millisecond, 0, -time.Second} {
		ctx, cancel := context.WithDeadline(context.Background(), now.Add(left))
		if _, err := b.newPlan(ctx, now); !errors.Is(err, ErrNoTime) {
			t.Errorf("%v left: err %v, want ErrNoTime", left, err)
		}
		cancel()
	}
	// Just enough: a quarter held back, minWork (250 ms) left to work.
	ctx, cancel := context.WithDeadline(context.Background(), now.Add(334*time.Millisecond))
	defer cancel()
	if _, err := b.newPlan(ctx, now); err != nil {
		t.Errorf("334 ms left: %v, want a plan", err)
	}
}
