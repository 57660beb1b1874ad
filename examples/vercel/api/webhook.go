// Package handler is a Vercel Go function: POST /api/webhook handles a chat
// webhook with the Chat SDK's dedupe, lock and queue flow over Upstash
// Redis (see examples/internal/chatbot).
//
// Vercel builds every .go file under api/ into its own function and calls
// the exported http.HandlerFunc. Its request context has no deadline and is
// never cancelled in production, so the handler bounds its own work with a
// budget derived from MaxDuration.
package handler

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/chatstate/upstash/examples/internal/chatbot"
)

// MaxDuration is this function's maxDuration in vercel.json ("api/*.go").
// Keep the two equal: the handler stops working budgetMargin before it.
const MaxDuration = 10 * time.Second

// budgetMargin is left between the handler's own deadline and Vercel's hard
// stop, for writing the response.
const budgetMargin = 1500 * time.Millisecond

var (
	setupOnce sync.Once
	handler   http.Handler
)

// Handler is the function Vercel calls for each request.
func Handler(w http.ResponseWriter, r *http.Request) {
	// Once per process (a cold start), never per request: the client keeps
	// its connections between invocations of a warm function.
	setupOnce.Do(setup)
	handler.ServeHTTP(w, r)
}

func setup() {
	// UPSTASH_REDIS_REST_URL/_TOKEN, else the Vercel Marketplace's
	// KV_REST_API_URL/_TOKEN. KV_URL and REDIS_URL are TCP URLs and are
	// not used.
	bot, err := chatbot.FromEnv()
	if err != nil {
		// Every request then answers 500 with the names of the variables to
		// set (never their values).
		fmt.Fprintln(os.Stderr, "chat bot: configuration:", err)
		handler = chatbot.ErrorHandler(err)
		return
	}
	var mu sync.Mutex
	bot.OnEvent = func(e chatbot.Event) {
		mu.Lock()
		defer mu.Unlock()
		_, _ = io.WriteString(os.Stdout, strings.TrimRight(e.String(), " ")+"\n")
	}
	handler = chatbot.NewHTTPHandler(bot, MaxDuration-budgetMargin)
}
