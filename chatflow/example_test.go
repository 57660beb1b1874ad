package chatflow_test

import (
	"context"
	"fmt"
	"log"
	"strings"
	"time"

	"github.com/chatstate/upstash"
	"github.com/chatstate/upstash/chatflow"
	"github.com/chatstate/upstash/upstashtest"
)

// newExampleState starts an in-process Upstash-compatible server; in
// production, build the client from upstash.ConfigFromEnv instead.
func newExampleState() (*upstash.State, func()) {
	srv, err := upstashtest.Start()
	if err != nil {
		log.Fatal(err)
	}
	client, err := upstash.New(upstash.Config{URL: srv.URL, Token: srv.Token})
	if err != nil {
		log.Fatal(err)
	}
	return upstash.NewState(client), srv.Close
}

func exampleMessage(id, text string) *chatflow.Message {
	return &chatflow.Message{
		ID:        id,
		ThreadID:  "slack:C123:1700000000.000100",
		Text:      text,
		Formatted: chatflow.FormattedText(text),
		Author:    chatflow.Author{UserID: "U1", UserName: "ada", FullName: "Ada Lovelace"},
		Metadata:  chatflow.Metadata{DateSent: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)},
	}
}

// A webhook handler: the message is handled once, its platform retry is a
// duplicate.
func Example() {
	state, done := newExampleState()
	defer done()

	flow, err := chatflow.New(state, func(ctx context.Context, turn *chatflow.Turn) error {
		fmt.Printf("handling %q\n", turn.Message.Text)
		return turn.Thread.SetState(ctx, map[string]string{"last": turn.Message.ID})
	},
		chatflow.WithStrategy(chatflow.Queue),
		chatflow.WithBudget(25*time.Second), // Vercel: the context has no deadline
	)
	if err != nil {
		log.Fatal(err)
	}
	ctx := context.Background()
	m := exampleMessage("1700000000.000100", "hello")
	for _, delivery := range []string{"webhook", "platform retry"} {
		res, err := flow.Handle(ctx, "slack", m)
		if err != nil {
			log.Fatal(err) // answer 5xx: the platform retries, and the retry is processed
		}
		fmt.Printf("%s: %s\n", delivery, res.Status)
	}
	st, _ := flow.Thread(m.ThreadID).State(ctx)
	fmt.Println("thread state:", string(st))
	// Output:
	// handling "hello"
	// webhook: handled
	// platform retry: duplicate
	// thread state: {"last":"1700000000.000100"}
}

// While another invocation holds the thread, messages wait in its queue;
// the holder (here Drain, standing in for it) hands over the latest one
// with the others as skipped.
func ExampleFlow_Drain() {
	state, done := newExampleState()
	defer done()
	flow, err := chatflow.New(state, func(ctx context.Context, turn *chatflow.Turn) error {
		var skipped []string
		for _, m := range turn.Skipped {
			skipped = append(skipped, m.Text)
		}
		fmt.Printf("turn: %q, skipped [%s]\n", turn.Message.Text, strings.Join(skipped, " "))
		return nil
	}, chatflow.WithStrategy(chatflow.Queue))
	if err != nil {
		log.Fatal(err)
	}
	ctx := context.Background()
	thread := "slack:C123:1700000000.000100"

	other, err := state.AcquireLock(ctx, flow.LockKey(thread), 30*time.Second) // another invocation
	if err != nil {
		log.Fatal(err)
	}
	for i, text := range []string{"one", "two", "three"} {
		res, err := flow.Handle(ctx, "slack", exampleMessage(fmt.Sprint(i), text))
		if err != nil {
			log.Fatal(err)
		}
		fmt.Printf("%s: %s (depth %d)\n", text, res.Status, res.QueueDepth)
	}
	if err := state.ReleaseLock(ctx, other); err != nil { // it ends without draining (say it was killed)
		log.Fatal(err)
	}
	res, err := flow.Drain(ctx, flow.LockKey(thread))
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("delivered:", res.Delivered)
	// Output:
	// one: queued (depth 1)
	// two: queued (depth 2)
	// three: queued (depth 3)
	// turn: "three", skipped [one two]
	// delivered: [0 1 2]
}
