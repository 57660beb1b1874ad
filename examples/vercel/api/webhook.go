// Package handler is a Vercel Go function: POST /api/webhook runs a chat
// webhook through a chatflow.Flow (the Chat SDK core's dedupe, thread
// lock, queue, drain and history) over Upstash Redis, with the bot's own
// logic from examples/internal/chatbot.
//
// Vercel builds every .go file under api/ into its own function and calls
// the exported func(http.ResponseWriter, *http.Request) of the file.
package handler

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"sync"
	"time"

	"github.com/chatstate/upstash"
	"github.com/chatstate/upstash/chatflow"
	"github.com/chatstate/upstash/examples/internal/chatbot"
)

// MaxDuration is this function's maxDuration in vercel.json ("api/*.go").
// Keep the two equal: the flow's budget ends budgetMargin before it.
const MaxDuration = 10 * time.Second

// budgetMargin is left between the end of the flow's budget and Vercel's
// hard stop, for writing the response.
const budgetMargin = 1500 * time.Millisecond

var (
	setupOnce sync.Once
	served    http.Handler
)

// Handler is the function Vercel calls for each request.
func Handler(w http.ResponseWriter, r *http.Request) {
	// Once per process (a cold start), never per request: a warm function
	// keeps the client and its connections between invocations.
	setupOnce.Do(func() {
		// UPSTASH_REDIS_REST_URL/_TOKEN, else the Vercel Marketplace's
		// KV_REST_API_URL/_TOKEN (KV_URL and REDIS_URL are TCP URLs).
		cfg, err := upstash.ConfigFromEnv()
		if err == nil {
			logger := slog.New(slog.NewTextHandler(os.Stdout, nil)) // Vercel's logs
			served, err = NewHandler(cfg, &chatbot.Bot{}, MaxDuration-budgetMargin, logger)
		}
		if err != nil {
			// Every request then answers 500 with the names of the variables
			// to set (the errors never hold their values).
			fmt.Fprintln(os.Stderr, "chat bot: configuration:", err)
			status, body := chatbot.Respond(chatbot.Webhook{}, chatflow.Result{}, err)
			served = http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { writeJSON(w, status, body) })
		}
	})
	served.ServeHTTP(w, r)
}

// NewHandler is what Handler serves: bot's logic in a chatflow.Flow over
// the database of cfg, with the Queue strategy, message history, budget
// for each call and logger. It is exported for the tests (kept outside
// api/, where Vercel would build them as functions); Vercel only calls
// Handler.
func NewHandler(cfg upstash.Config, bot *chatbot.Bot, budget time.Duration, logger *slog.Logger) (http.Handler, error) {
	client, err := upstash.New(cfg)
	if err != nil {
		return nil, err
	}
	flow, err := chatflow.New(upstash.NewState(client), bot.Handle,
		chatflow.WithStrategy(chatflow.Queue),
		chatflow.WithHistory(chatflow.HistoryOptions{}), // 100 messages, 7 days
		chatflow.WithDeferredWrites(),                   // the state write rides on Finish
		// Vercel's r.Context() has no deadline and is never cancelled, yet
		// the function is stopped at maxDuration: the budget is what bounds
		// each call (the lock's TTL, the handler's context, the drain).
		chatflow.WithBudget(budget),
		chatflow.WithLogger(logger))
	if err != nil {
		return nil, err
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost {
			w.Header().Set("Allow", http.MethodPost)
			writeJSON(w, http.StatusMethodNotAllowed, []byte(`{"error":"POST a webhook"}`))
			return
		}
		var hook chatbot.Webhook
		var res chatflow.Result
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, chatbot.MaxBodyBytes))
		if err != nil {
			err = fmt.Errorf("%w: reading the body: %w", chatbot.ErrBadWebhook, err)
		} else if hook, err = chatbot.ParseWebhook(body); err == nil {
			msg := hook.Message(time.Now())
			// WithMessage tells the bot which message is this request's own,
			// so that it can tell the ones it drains from the queue.
			res, err = flow.Handle(chatbot.WithMessage(r.Context(), msg), hook.Platform, msg)
		}
		status, out := chatbot.Respond(hook, res, err)
		if tooLarge := new(http.MaxBytesError); errors.As(err, &tooLarge) {
			status = http.StatusRequestEntityTooLarge
		}
		logger.Info("webhook", "status", status, "outcome", res.Status, "message", hook.MessageID,
			"thread", hook.ThreadID, "delivered", len(res.Delivered), "left", res.Left, "error", err)
		writeJSON(w, status, out)
	}), nil
}

func writeJSON(w http.ResponseWriter, status int, body []byte) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(append(body, '\n'))
}
