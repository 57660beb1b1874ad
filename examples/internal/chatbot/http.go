package chatbot

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/chatstate/upstash"
)

// FromEnv builds the client, the state and a Bot from the environment:
// UPSTASH_REDIS_REST_URL and UPSTASH_REDIS_REST_TOKEN, else Vercel's
// KV_REST_API_URL and KV_REST_API_TOKEN. It does no network I/O. Call it
// once per process, outside the handler.
func FromEnv(opts ...upstash.EnvOption) (*Bot, error) {
	cfg, err := upstash.ConfigFromEnv(opts...)
	if err != nil {
		return nil, err
	}
	return FromConfig(cfg)
}

// FromConfig is FromEnv for an explicit configuration.
func FromConfig(cfg upstash.Config, opts ...upstash.Option) (*Bot, error) {
	client, err := upstash.New(cfg, opts...)
	if err != nil {
		return nil, err
	}
	return New(upstash.NewState(client)), nil
}

// response is the JSON body of an error answer.
type errorBody struct {
	Error  string `json:"error"`
	Detail string `json:"detail,omitempty"`
}

// Respond turns Handle's result into an HTTP status and a JSON body:
// 200 handled, ignored or duplicate; 202 queued; 400 a bad webhook; 500 no
// configuration; 502 the state store failed or refused the token; 503 too
// close to the deadline or cancelled; 504 the budget ran out. Error texts never contain the token (the client
// never puts it in an error).
func Respond(out Outcome, err error) (int, []byte) {
	if err == nil {
		status := http.StatusOK
		if out.Status == StatusQueued {
			status = http.StatusAccepted
		}
		return status, mustJSON(out)
	}
	status, msg := http.StatusBadGateway, "the state store failed"
	switch {
	case errors.Is(err, ErrBadWebhook):
		status, msg = http.StatusBadRequest, "bad webhook"
	case errors.Is(err, upstash.ErrConfig):
		status, msg = http.StatusInternalServerError, "the state store is not configured"
	case isNoPerm(err):
		msg = "the REST token may not write (NOPERM): use the full-access token (" +
			upstash.EnvToken + " or " + upstash.EnvVercelToken + "), not " + upstash.EnvVercelReadOnlyToken
	case errors.Is(err, upstash.ErrUnauthorized):
		msg = "the state store refused the REST token (HTTP 401 unauthorized): check " +
			upstash.EnvToken + " or " + upstash.EnvVercelToken
	case errors.Is(err, ErrNoTime):
		status, msg = http.StatusServiceUnavailable, "too close to the function's deadline"
	case errors.Is(err, context.DeadlineExceeded):
		status, msg = http.StatusGatewayTimeout, "the time budget ran out"
	case errors.Is(err, context.Canceled):
		status, msg = http.StatusServiceUnavailable, "the request was cancelled before the work finished"
	case errors.Is(err, upstash.ErrOutcomeUnknown):
		msg = "the state store did not answer; the last write may or may not have been applied"
	}
	return status, mustJSON(errorBody{Error: msg, Detail: err.Error()})
}

func isNoPerm(err error) bool {
	var e *upstash.Error
	return errors.As(err, &e) && e.Code == "NOPERM"
}

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		return []byte(`{"error":"encoding the response failed"}`)
	}
	return b
}

// NewHTTPHandler serves webhooks with bot over net/http (Vercel, or any
// server). Requests whose context has no deadline, as on Vercel where
// r.Context() never ends, get budget; set it a little below the function's
// maxDuration.
func NewHTTPHandler(bot *Bot, budget time.Duration) http.Handler {
	return &httpHandler{bot: bot, budget: budget}
}

// ErrorHandler answers every request with err, for a process whose
// configuration is broken: each request then says why instead of crashing.
func ErrorHandler(err error) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		status, body := Respond(Outcome{}, err)
		writeJSON(w, status, body)
	})
}

type httpHandler struct {
	bot    *Bot
	budget time.Duration
}

func (h *httpHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		writeJSON(w, http.StatusMethodNotAllowed, mustJSON(errorBody{Error: "POST a webhook"}))
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxBodyBytes))
	if err != nil {
		writeJSON(w, http.StatusBadRequest, mustJSON(errorBody{Error: "bad webhook", Detail: fmt.Sprintf("reading the body: %v", err)}))
		return
	}
	hook, err := ParseWebhook(body)
	if err != nil {
		status, b := Respond(Outcome{}, err)
		writeJSON(w, status, b)
		return
	}
	ctx := r.Context()
	if _, ok := ctx.Deadline(); !ok && h.budget > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, h.budget)
		defer cancel()
	}
	if id := r.Header.Get("X-Vercel-Id"); id != "" {
		ctx = WithRequestID(ctx, id)
	}
	status, b := Respond(h.bot.Handle(ctx, hook))
	writeJSON(w, status, b)
}

func writeJSON(w http.ResponseWriter, status int, body []byte) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(append(body, '\n'))
}
