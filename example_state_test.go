package upstash_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"time"

	"github.com/chatstate/upstash"
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

// Deduplicate webhook deliveries: only the first delivery of a message id
// claims the key, for as long as the platform may retry it.
func ExampleState_SetIfNotExists() {
	state, done := newExampleState()
	defer done()
	ctx := context.Background()

	for _, delivery := range []string{"first delivery", "retry"} {
		first, err := state.SetIfNotExists(ctx, "dedupe:slack:Ev123", true, 10*time.Minute)
		if err != nil {
			// ErrOutcomeUnknown included: rather process twice than drop.
			first = true
		}
		fmt.Printf("%s: process=%v\n", delivery, first)
	}
	// Output:
	// first delivery: process=true
	// retry: process=false
}

// Serialize handlers per thread: one invocation holds the lock, a
// concurrent one sees nil and backs off (or enqueues its message).
func ExampleState_AcquireLock() {
	state, done := newExampleState()
	defer done()
	ctx := context.Background()

	lock, err := state.AcquireLock(ctx, "slack:C123:1712345678.000100", 30*time.Second)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("first invocation holds the lock:", lock != nil)

	other, err := state.AcquireLock(ctx, "slack:C123:1712345678.000100", 30*time.Second)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("second invocation holds the lock:", other != nil)

	// Keep the lock for as long as the handler runs, then release it.
	lost, stop := state.KeepLockAlive(ctx, lock, 30*time.Second)
	select {
	case <-lost:
		fmt.Println("lock lost")
	default: // the handler's work
	}
	stop()
	if err := state.ReleaseLock(ctx, lock); err != nil {
		log.Fatal(err)
	}

	again, err := state.AcquireLock(ctx, "slack:C123:1712345678.000100", 30*time.Second)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("after release, a new invocation holds the lock:", again != nil)
	// Output:
	// first invocation holds the lock: true
	// second invocation holds the lock: false
	// after release, a new invocation holds the lock: true
}

// Hold a thread's lock for exactly as long as a handler runs: WithLock
// extends it while the handler works, cancels the handler's context a
// safety margin before the lock could lapse if it cannot keep it, and
// releases it afterwards. A second invocation finds it busy.
func ExampleState_WithLock() {
	state, done := newExampleState()
	defer done()
	ctx := context.Background()

	err := state.WithLock(ctx, "slack:C123:1.2", 30*time.Second, func(ctx context.Context, lock *upstash.HeldLock) error {
		// Check ctx before each write that needs the lock; pass
		// lock.Fence() to stores that can refuse a stale holder.
		fmt.Println("handler runs, fence issued:", lock.Fence() > 0)

		err := state.WithLock(ctx, "slack:C123:1.2", 30*time.Second, func(context.Context, *upstash.HeldLock) error {
			return nil
		})
		fmt.Println("a concurrent invocation is busy:", errors.Is(err, upstash.ErrLockBusy))
		return ctx.Err()
	})
	if err != nil {
		log.Fatal(err)
	}
	lock, err := state.AcquireLock(ctx, "slack:C123:1.2", 30*time.Second)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("released afterwards:", lock != nil)
	// Output:
	// handler runs, fence issued: true
	// a concurrent invocation is busy: true
	// released afterwards: true
}

// Queue messages that arrive while the thread is busy; the lock holder
// drains them. Dequeue skips entries that went stale.
func ExampleState_Enqueue() {
	state, done := newExampleState()
	defer done()
	ctx := context.Background()

	for _, text := range []string{"hello", "are you there?"} {
		entry, err := upstash.NewQueueEntry(map[string]string{"text": text}, 90*time.Second)
		if err != nil {
			log.Fatal(err)
		}
		depth, err := state.Enqueue(ctx, "slack:C123:1.2", entry, 10)
		if err != nil {
			log.Fatal(err)
		}
		fmt.Println("queued, depth", depth)
	}
	for {
		entry, err := state.Dequeue(ctx, "slack:C123:1.2")
		if err != nil {
			log.Fatal(err)
		}
		if entry == nil {
			break
		}
		fmt.Println("dequeued", string(entry.Message))
	}
	// Output:
	// queued, depth 1
	// queued, depth 2
	// dequeued {"text":"hello"}
	// dequeued {"text":"are you there?"}
}

// Read a typed value back with GetJSON.
func ExampleGetJSON() {
	state, done := newExampleState()
	defer done()
	ctx := context.Background()

	type threadState struct {
		Mode  string `json:"mode"`
		Turns int    `json:"turns"`
	}
	if err := state.Set(ctx, "thread-state:T1", threadState{Mode: "agent", Turns: 3}, 30*24*time.Hour); err != nil {
		log.Fatal(err)
	}
	st, found, err := upstash.GetJSON[threadState](ctx, state, "thread-state:T1")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("%v %+v\n", found, st)
	_, found, _ = upstash.GetJSON[threadState](ctx, state, "thread-state:missing")
	fmt.Println(found)
	// Output:
	// true {Mode:agent Turns:3}
	// false
}

// A webhook in two requests: Admit (dedupe, subscription, lock or queue,
// thread state read) before the bot's work, Finish (thread state write,
// history append, release or take the next queued message) after it. A
// message that arrives while the thread is busy is queued by its own
// Admit and handed to the holder by Finish, never stranded.
func ExampleState_Admit() {
	state, done := newExampleState()
	defer done()
	ctx := context.Background()

	admit := func(id string) upstash.AdmitResult {
		entry, err := upstash.NewQueueEntry(map[string]string{"id": id}, 90*time.Second)
		if err != nil {
			log.Fatal(err)
		}
		res, err := state.Admit(ctx, upstash.AdmitRequest{
			DedupeKey:         "dedupe:slack:" + id,
			DedupeTTL:         10 * time.Minute,
			CheckSubscription: "slack:C1:1.2",
			ThreadID:          "slack:C1:1.2",
			LockTTL:           30 * time.Second,
			Entry:             &entry,
			MaxQueue:          10,
			Read:              []string{"thread-state:slack:C1:1.2"},
		})
		if err != nil {
			log.Fatal(err)
		}
		return res
	}

	a := admit("m1")
	fmt.Printf("m1: lock=%v state found=%v\n", a.Lock != nil, a.Values[0] != nil)
	b := admit("m2") // arrives while m1 is handled
	fmt.Printf("m2: busy=%v queued=%v depth=%d\n", b.Busy, b.Queued, b.QueueDepth)
	fmt.Printf("m1 again: duplicate=%v\n", admit("m1").Duplicate)

	// The holder's turns: each Finish writes the turn's state and history,
	// then hands over the next queued message or releases the lock.
	for turn := 1; ; turn++ {
		res, err := state.Finish(ctx, upstash.FinishRequest{
			Lock:    a.Lock,
			LockTTL: 30 * time.Second,
			Set:     []upstash.CacheWrite{{Key: "thread-state:slack:C1:1.2", Value: map[string]int{"turns": turn}, TTL: 30 * 24 * time.Hour}},
			Append:  []upstash.ListAppend{{Key: "msg-history:slack:C1:1.2", Value: turn, Options: upstash.ListOptions{MaxLength: 100, TTL: 7 * 24 * time.Hour}}},
		})
		if err != nil {
			log.Fatal(err)
		}
		if res.Next == nil {
			fmt.Println("released")
			break
		}
		fmt.Printf("next: %s\n", res.Next.Message)
	}
	state2, err := state.Get(ctx, "thread-state:slack:C1:1.2")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("state: %s\n", state2)
	// Output:
	// m1: lock=true state found=false
	// m2: busy=true queued=true depth=1
	// m1 again: duplicate=true
	// next: {"id":"m2"}
	// released
	// state: {"turns":2}
}
