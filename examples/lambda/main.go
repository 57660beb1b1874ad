// Command lambda is a chat-webhook bot for AWS Lambda (provided.al2023),
// invoked through a Function URL or an API Gateway HTTP API; both send the
// version 2.0 payload that events.LambdaFunctionURLRequest decodes.
//
// The Chat SDK's webhook flow (dedupe, one lock per thread, the queue and
// its drain, message history) is a chatflow.Flow, configured once per
// execution environment in main; the bot's own logic is chatbot.Bot. The
// handler only decodes the event and answers. Off Lambda,
// `go run ./examples/lambda` replays a burst of webhooks through the same
// handler and checks the result (local.go).
package main

import (
	"context"
	"encoding/base64"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"time"

	"github.com/aws/aws-lambda-go/events"
	"github.com/aws/aws-lambda-go/lambda"
	"github.com/aws/aws-lambda-go/lambdacontext"

	"github.com/chatstate/upstash"
	"github.com/chatstate/upstash/chatflow"
	"github.com/chatstate/upstash/examples/internal/chatbot"
)

func main() {
	if os.Getenv("AWS_LAMBDA_RUNTIME_API") == "" {
		os.Exit(runLocalMain())
	}
	// Init phase: once per execution environment, never per invocation.
	a, err := setup()
	if err != nil {
		// Names the variables, never their values; Lambda reports the exit
		// as an init error (Runtime.ExitError).
		fmt.Fprintln(os.Stderr, "chat bot: configuration:", err)
		os.Exit(1)
	}
	lambda.Start(a.handle)
}

// setup builds the client from UPSTASH_REDIS_REST_URL/_TOKEN (else
// KV_REST_API_URL/_TOKEN) and the app, logging JSON lines to stdout
// (CloudWatch). It does no network I/O.
func setup() (*app, error) {
	cfg, err := upstash.ConfigFromEnv()
	if err != nil {
		return nil, err
	}
	client, err := upstash.New(cfg)
	if err != nil {
		return nil, err
	}
	return newApp(upstash.NewState(client), &chatbot.Bot{}, slog.New(slog.NewJSONHandler(os.Stdout, nil)))
}

// app is the function: the flow, built once, and its logger.
type app struct {
	flow *chatflow.Flow
	log  *slog.Logger
}

// newApp configures the Chat SDK's flow around bot: the Queue strategy (a
// message arriving while its thread is busy waits for the lock holder,
// which drains the queue before releasing) and message history (100
// messages, 7 days), with the core's other defaults; the bot's thread
// state writes go out with the turn's Finish (a handled webhook is two
// requests, Admit and Finish). No budget: the invocation's deadline
// bounds every call.
func newApp(state upstash.StateAdapter, bot *chatbot.Bot, logger *slog.Logger) (*app, error) {
	flow, err := chatflow.New(state, bot.Handle,
		chatflow.WithStrategy(chatflow.Queue),
		chatflow.WithHistory(chatflow.HistoryOptions{}),
		chatflow.WithDeferredWrites(), // the state write rides on Finish
		chatflow.WithLogger(logger))
	return &app{flow: flow, log: logger}, err
}

// answered is the message of the line logged once per invocation.
const answered = "webhook answered"

// handle is the function lambda.Start calls, once per invocation. Its
// context's deadline (the function timeout) is the flow's time budget: it
// bounds the lock's TTL, ends the bot's work in time to release, and stops
// the drain, leaving the rest queued for the next holder.
func (a *app) handle(ctx context.Context, req events.LambdaFunctionURLRequest) (events.LambdaFunctionURLResponse, error) {
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
	var res chatflow.Result
	if err == nil {
		msg := hook.Message(time.Now())
		res, err = a.flow.Handle(chatbot.WithMessage(ctx, msg), hook.Platform, msg)
	}
	status, out := chatbot.Respond(hook, res, err)
	attrs := []any{"message", hook.MessageID, "thread", hook.ThreadID, "status", status, "result", res.Status, "handled", res.Delivered}
	if lc, ok := lambdacontext.FromContext(ctx); ok {
		attrs = append(attrs, "request", lc.AwsRequestID)
	}
	level := slog.LevelInfo
	if err != nil {
		level, attrs = slog.LevelWarn, append(attrs, "error", err) // the client's errors never hold the token
	}
	a.log.Log(ctx, level, answered, attrs...)
	return response(status, out), nil
}

func response(status int, body []byte) events.LambdaFunctionURLResponse {
	return events.LambdaFunctionURLResponse{StatusCode: status, Body: string(body),
		Headers: map[string]string{"Content-Type": "application/json"}}
}
