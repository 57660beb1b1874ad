package chatbot

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"

	"github.com/chatstate/upstash"
	"github.com/chatstate/upstash/chatflow"
)

// answer is the JSON body of a 200 or 202 answer.
type answer struct {
	Status     chatflow.Status `json:"status"`
	MessageID  string          `json:"messageId"`
	ThreadID   string          `json:"threadId"`
	Handled    []string        `json:"handled,omitempty"`
	Left       int             `json:"left,omitempty"`
	QueueDepth int             `json:"queueDepth,omitempty"`
}

// errorBody is the JSON body of an error answer.
type errorBody struct {
	Error  string `json:"error"`
	Detail string `json:"detail,omitempty"`
}

// Respond maps a Flow.Handle result for w to the HTTP answer both examples
// send:
//
//   - 200 {"status":"handled"|"duplicate"|"dropped"|"ignored","messageId","threadId","handled":[ids],"left":n}
//     ("handled" lists every message the call handed to the bot, drained
//     ones included; "left" counts what it left queued, out of time)
//   - 202 {"status":"queued",...,"queueDepth":n}
//   - 400 a bad webhook (ErrBadWebhook)
//   - 401 the store refused the REST token; 403 the token may not write
//   - 503 too close to the deadline to start (chatflow.ErrNoTime)
//   - 500 the bot's own logic failed, or no configuration
//   - 502 the state store failed
//
// Error bodies are {"error": what to do, "detail": the error}. The detail
// never holds the token: the client's errors never do.
func Respond(w Webhook, res chatflow.Result, err error) (status int, body []byte) {
	if err == nil || (res.Status == chatflow.StatusDropped && errors.Is(err, chatflow.ErrLocked)) {
		a := answer{Status: res.Status, MessageID: w.MessageID, ThreadID: w.ThreadID, Handled: res.Delivered, Left: res.Left}
		status = http.StatusOK
		if res.Status == chatflow.StatusQueued {
			status, a.QueueDepth = http.StatusAccepted, res.QueueDepth
		}
		return status, mustJSON(a)
	}
	status, msg := http.StatusBadGateway, "the state store failed"
	var e *upstash.Error
	switch {
	case errors.Is(err, ErrBadWebhook):
		status, msg = http.StatusBadRequest, "bad webhook"
	case errors.Is(err, upstash.ErrUnauthorized):
		status, msg = http.StatusUnauthorized, "the state store refused the REST token (HTTP 401 unauthorized): check "+
			upstash.EnvToken+" or "+upstash.EnvVercelToken
	case errors.As(err, &e) && e.Code == "NOPERM":
		status, msg = http.StatusForbidden, "the REST token may not write (NOPERM): use the full-access token ("+
			upstash.EnvToken+" or "+upstash.EnvVercelToken+"), not "+upstash.EnvVercelReadOnlyToken
	case errors.Is(err, chatflow.ErrNoTime):
		status, msg = http.StatusServiceUnavailable, "too close to the function's deadline to start: nothing was written, retry"
	case errors.Is(err, upstash.ErrConfig):
		status, msg = http.StatusInternalServerError, "the state store is not configured"
	case res.Status == chatflow.StatusHandled:
		status, msg = http.StatusInternalServerError, "the bot failed while handling the message"
	case errors.Is(err, upstash.ErrOutcomeUnknown):
		msg = "the state store did not answer; the last write may or may not have been applied"
	}
	return status, mustJSON(errorBody{Error: msg, Detail: err.Error()})
}

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		return []byte(`{"error":"encoding the response failed"}`)
	}
	return b
}

// HistoryCounts reads the thread's history ("msg-history:<thread>",
// chatflow's, the Chat SDK's serialized messages) and returns how many
// times each message id appears in it: every message admitted once (not a
// duplicate) appears once, whether it was handled, queued or dropped from
// a full queue.
func HistoryCounts(ctx context.Context, state upstash.StateAdapter, threadID string) (map[string]int, error) {
	key := chatflow.HistoryKey(threadID)
	items, err := state.GetList(ctx, key)
	if err != nil {
		return nil, err
	}
	seen := make(map[string]int, len(items))
	for i, raw := range items {
		var m chatflow.Message
		if err := json.Unmarshal(raw, &m); err != nil {
			return nil, fmt.Errorf("%s item %d: %w", key, i, err)
		}
		seen[m.ID]++
	}
	return seen, nil
}
