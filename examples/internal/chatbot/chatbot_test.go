package chatbot

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"

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
