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

// startServer starts a local Upstash-compatible server for the examples; in
// production the URL and token come from the environment (ConfigFromEnv).
func startServer() *upstashtest.Server {
	srv, err := upstashtest.Start()
	if err != nil {
		log.Fatal(err)
	}
	return srv
}

func Example() {
	srv := startServer()
	defer srv.Close()

	// Build the client once, outside the handler, and reuse it.
	client, err := upstash.New(upstash.Config{URL: srv.URL, Token: srv.Token})
	if err != nil {
		log.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()

	if _, err := client.Do(ctx, "SET", "greeting", "hello\x00world", "PX", 60000); err != nil {
		log.Fatal(err)
	}
	v, err := client.Do(ctx, "GET", "greeting")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(v) // Value prints like redis-cli

	n, err := client.Incr(ctx, "visits")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("visits:", n)

	_, err = client.Get(ctx, "missing")
	fmt.Println(errors.Is(err, upstash.ErrNil))

	_, err = client.Do(ctx, "INCR", "greeting")
	var e *upstash.Error
	if errors.As(err, &e) {
		fmt.Println(e.Command, e.Code)
	}
	// Output:
	// "hello\x00world"
	// visits: 1
	// true
	// INCR ERR
}

func ExampleClient_Pipeline() {
	srv := startServer()
	defer srv.Close()
	client, err := upstash.New(upstash.Config{URL: srv.URL, Token: srv.Token})
	if err != nil {
		log.Fatal(err)
	}

	// One request; not atomic, and a failing command does not stop the others.
	results, err := client.Pipeline(context.Background(),
		upstash.Cmd("RPUSH", "queue", "a", "b", "c"),
		upstash.Cmd("LRANGE", "queue", 0, -1),
		upstash.Cmd("INCR", "queue"),
		upstash.Cmd("LLEN", "queue"),
	)
	if err != nil {
		log.Fatal(err) // the request as a whole failed
	}
	for i, r := range results {
		if r.Err != nil {
			fmt.Println(i, "error:", r.Err.(*upstash.Error).Code)
			continue
		}
		fmt.Println(i, r.Value)
	}
	// Output:
	// 0 (integer) 3
	// 1 ["a", "b", "c"]
	// 2 error: WRONGTYPE
	// 3 (integer) 3
}

func ExampleClient_Transaction() {
	srv := startServer()
	defer srv.Close()
	client, err := upstash.New(upstash.Config{URL: srv.URL, Token: srv.Token})
	if err != nil {
		log.Fatal(err)
	}
	ctx := context.Background()

	results, err := client.Transaction(ctx,
		upstash.Cmd("SET", "balance", 100),
		upstash.Cmd("DECRBY", "balance", 30),
	)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(results[1].Value)

	// A command refused while queueing discards the whole transaction.
	_, err = client.Transaction(ctx, upstash.Cmd("DECRBY", "balance", 30), upstash.Cmd("LPUSH", "only-a-key"))
	fmt.Println(errors.Is(err, upstash.ErrTransactionDiscarded))
	b, _ := client.Get(ctx, "balance")
	fmt.Println(string(b))
	// Output:
	// (integer) 70
	// true
	// 70
}

// A script is sent by its SHA-1 and re-sent in full when the server does not
// have it cached, which on Upstash can happen at any time.
var compareAndDelete = upstash.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0`).Idempotent() // running it twice changes nothing more: safe to retry

func ExampleScript_Run() {
	srv := startServer()
	defer srv.Close()
	client, err := upstash.New(upstash.Config{URL: srv.URL, Token: srv.Token})
	if err != nil {
		log.Fatal(err)
	}
	ctx := context.Background()

	if err := client.Set(ctx, "lock:thread-1", "token-a", time.Minute); err != nil {
		log.Fatal(err)
	}
	for _, token := range []string{"token-b", "token-a"} {
		v, err := compareAndDelete.Run(ctx, client, []string{"lock:thread-1"}, token)
		if err != nil {
			log.Fatal(err)
		}
		deleted, _ := v.Int64()
		fmt.Println(token, "deleted:", deleted)
	}
	// Output:
	// token-b deleted: 0
	// token-a deleted: 1
}

func ExampleConfigFromEnv() {
	// In a function: cfg, err := upstash.ConfigFromEnv(). EnvMap stands in
	// for the environment here, with the names the Vercel integration sets.
	cfg, err := upstash.ConfigFromEnv(upstash.EnvMap(map[string]string{
		"KV_REST_API_URL":   "https://eu1-example-12345.upstash.io/",
		"KV_REST_API_TOKEN": "AX-example-token\n", // a pasted newline is trimmed
	}))
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(cfg) // the token is never printed

	_, err = upstash.ConfigFromEnv(upstash.EnvMap(map[string]string{
		"UPSTASH_REDIS_REST_URL": "rediss://default:secret@eu1-example-12345.upstash.io:6379",
	}))
	fmt.Println(errors.Is(err, upstash.ErrConfig))
	fmt.Println(err)
	// Output:
	// upstash.Config{URL: "https://eu1-example-12345.upstash.io", Token: set}
	// true
	// upstash: invalid configuration: no REST token: set UPSTASH_REDIS_REST_TOKEN or KV_REST_API_TOKEN
	// UPSTASH_REDIS_REST_URL is a Redis TCP URL (rediss://); the REST URL starts with https://
}
