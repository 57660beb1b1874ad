// Command quickstart handles one chat message the way a webhook handler
// does: it drops a platform's retry of a message it has already seen, takes
// the thread's lock, and counts the thread's messages in the cache.
//
//	UPSTASH_REDIS_REST_URL=https://<db>.upstash.io UPSTASH_REDIS_REST_TOKEN=<token> \
//	  go run ./examples/quickstart [thread-id message-id]
package main

import (
	"context"
	"fmt"
	"log"
	"os"
	"time"

	"github.com/chatstate/upstash"
)

func main() {
	// Once per process (on Lambda: during init, outside the handler).
	cfg, err := upstash.ConfigFromEnv() // UPSTASH_REDIS_REST_URL/_TOKEN, else Vercel's KV_REST_API_URL/_TOKEN
	if err != nil {
		log.Fatal(err)
	}
	client, err := upstash.New(cfg) // no I/O; safe for concurrent use
	if err != nil {
		log.Fatal(err)
	}
	state := upstash.NewState(client)

	// Per message. In a bot, the ids come from the webhook and the context
	// from the request (on Lambda it carries the invocation's deadline).
	threadID, msgID := "slack:C1:t1", "m1"
	if len(os.Args) == 3 {
		threadID, msgID = os.Args[1], os.Args[2]
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := handle(ctx, state, threadID, msgID); err != nil {
		log.Fatal(err)
	}
}

func handle(ctx context.Context, state *upstash.State, threadID, msgID string) error {
	// Platforms redeliver webhooks: only the first delivery sets the marker.
	first, err := state.SetIfNotExists(ctx, "dedupe:"+msgID, true, 10*time.Minute)
	if err != nil {
		return err
	}
	if !first {
		fmt.Println("duplicate", msgID)
		return nil
	}

	// One handler per thread at a time. A nil lock means another invocation
	// holds the thread (the Chat SDK would queue the message: state.Enqueue).
	lock, err := state.AcquireLock(ctx, threadID, 30*time.Second)
	if err != nil {
		return err
	}
	if lock == nil {
		fmt.Println("busy", threadID)
		return nil
	}
	defer func() {
		// WithoutCancel: release even when the handler's context has ended.
		if err := state.ReleaseLock(context.WithoutCancel(ctx), lock); err != nil {
			log.Printf("release: %v (the lock expires with its TTL)", err)
		}
	}()

	// The cache holds JSON values, here a counter kept for a day.
	key := "messages:" + threadID
	n, _, err := upstash.GetJSON[int](ctx, state, key)
	if err != nil {
		return err
	}
	n++
	if err := state.Set(ctx, key, n, 24*time.Hour); err != nil {
		return err
	}
	fmt.Printf("handled %s: message %d of %s\n", msgID, n, threadID)
	return nil
}
