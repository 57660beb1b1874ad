//go:build js && wasm

// Command edge runs the library where there are no TCP sockets: compiled
// with GOOS=js GOARCH=wasm, Go's net/http sends every request through the
// JavaScript Fetch API of the host (an edge runtime, a browser, Deno, or
// Node.js 18+). It reads UPSTASH_REDIS_REST_URL and
// UPSTASH_REDIS_REST_TOKEN (or KV_REST_API_URL and KV_REST_API_TOKEN),
// takes and releases a thread lock, deduplicates one message delivered
// twice, and prints one "name: value" line per step. It exits 1 after an
// "error: ..." line when a step fails.
//
// Build and run it with Node.js:
//
//	GOOS=js GOARCH=wasm go build -o edge.wasm ./examples/edge
//	bash -c 'exec -a edge-runtime node "$(go env GOROOT)/lib/wasm/wasm_exec_node.js" edge.wasm'
//
// The exec -a matters: Go's net/http does not use fetch when
// process.argv0 starts with "node" (it then expects Go's own network
// stack, which js/wasm does not have), so Node must present another name.
// edge_test.go runs exactly this against an upstashtest server.
package main

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/chatstate/upstash"
)

func main() {
	if err := run(); err != nil {
		fmt.Println("error:", err)
		os.Exit(1)
	}
}

func run() error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	cfg, err := upstash.ConfigFromEnv()
	if err != nil {
		return err
	}
	client, err := upstash.New(cfg)
	if err != nil {
		return err
	}
	state := upstash.NewState(client)

	const thread = "edge-thread"
	lock, err := state.AcquireLock(ctx, thread, 30*time.Second)
	if err != nil {
		return err
	}
	fmt.Println("lock acquired:", lock != nil)
	if lock == nil {
		return fmt.Errorf("thread %q is locked by someone else", thread)
	}
	other, err := state.AcquireLock(ctx, thread, 30*time.Second)
	if err != nil {
		return err
	}
	fmt.Println("second acquire while held:", other != nil)
	if err := state.ReleaseLock(ctx, lock); err != nil {
		return err
	}
	fmt.Println("lock released: true")
	again, err := state.AcquireLock(ctx, thread, 30*time.Second)
	if err != nil {
		return err
	}
	fmt.Println("acquire after release:", again != nil)
	if again != nil {
		if err := state.ReleaseLock(ctx, again); err != nil {
			return err
		}
	}

	const message = "edge-message-1"
	for _, delivery := range []string{"first", "second"} {
		fresh, err := state.SetIfNotExists(ctx, "dedupe:"+message, "seen", time.Minute)
		if err != nil {
			return err
		}
		fmt.Printf("dedupe %s delivery is new: %v\n", delivery, fresh)
	}
	return nil
}
