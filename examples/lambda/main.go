// Command lambda is a chat-webhook bot for AWS Lambda (provided.al2023),
// invoked through a Function URL or an API Gateway HTTP API. Both send the
// same version 2.0 payload, so one handler decodes both; this one uses
// events.LambdaFunctionURLRequest.
//
// On Lambda (AWS_LAMBDA_RUNTIME_API is set) main builds the Upstash client
// and the bot once, from UPSTASH_REDIS_REST_URL/_TOKEN (or KV_REST_API_*),
// then calls lambda.Start. Anywhere else, `go run ./examples/lambda` replays
// a burst of webhooks through the same handler and checks the result; see
// local.go and README.md.
package main

import (
	"context"
	"encoding/base64"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"sync"

	"github.com/aws/aws-lambda-go/events"
	"github.com/aws/aws-lambda-go/lambda"
	"github.com/aws/aws-lambda-go/lambdacontext"

	"github.com/chatstate/upstash/examples/internal/chatbot"
)

func main() {
	if os.Getenv("AWS_LAMBDA_RUNTIME_API") == "" {
		os.Exit(runLocalMain())
	}
	// Init phase: once per execution environment, never per invocation.
	bot, err := chatbot.FromEnv()
	if err != nil {
		// Names the variables it looked at, never their values. Lambda
		// reports it as an init error (Runtime.ExitError).
		fmt.Fprintln(os.Stderr, "chat bot: configuration:", err)
		os.Exit(1)
	}
	bot.OnEvent = lineLogger(os.Stdout)
	lambda.Start((&app{bot: bot}).handle)
}

// app adapts Lambda's HTTP events to the bot.
type app struct {
	bot *chatbot.Bot
}

// handle is the function lambda.Start calls, once per invocation. Its
// context carries the invocation's deadline, which the bot uses to size the
// lock's TTL and to release in time.
func (a *app) handle(ctx context.Context, req events.LambdaFunctionURLRequest) (events.LambdaFunctionURLResponse, error) {
	if lc, ok := lambdacontext.FromContext(ctx); ok {
		ctx = chatbot.WithRequestID(ctx, lc.AwsRequestID)
	}
	if m := req.RequestContext.HTTP.Method; m != "" && m != http.MethodPost {
		return response(http.StatusMethodNotAllowed, []byte(`{"error":"POST a webhook"}`)), nil
	}
	body := []byte(req.Body)
	if req.IsBase64Encoded {
		var err error
		if body, err = base64.StdEncoding.DecodeString(req.Body); err != nil {
			return response(http.StatusBadRequest, []byte(`{"error":"bad webhook","detail":"body is not valid base64"}`)), nil
		}
	}
	hook, err := chatbot.ParseWebhook(body)
	if err != nil {
		return response(chatbot.Respond(chatbot.Outcome{}, err)), nil
	}
	out, err := a.bot.Handle(ctx, hook)
	if err != nil {
		// The caller gets a clear status and reason in the body; the log
		// keeps the detail. Errors from the client never contain the token.
		fmt.Fprintf(os.Stderr, "chat bot: %s %s: %v\n", hook.ThreadID, hook.MessageID, err)
	}
	return response(chatbot.Respond(out, err)), nil
}

func response(status int, body []byte) events.LambdaFunctionURLResponse {
	return events.LambdaFunctionURLResponse{
		StatusCode: status,
		Headers:    map[string]string{"Content-Type": "application/json"},
		Body:       string(body),
	}
}

// lineLogger prints events one per line; safe for concurrent use.
func lineLogger(w io.Writer) func(chatbot.Event) {
	var mu sync.Mutex
	return func(e chatbot.Event) {
		line := strings.TrimRight(e.String(), " ") + "\n"
		mu.Lock()
		defer mu.Unlock()
		_, _ = io.WriteString(w, line)
	}
}
