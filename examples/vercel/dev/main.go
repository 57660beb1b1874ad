// Command dev serves the Vercel function api/webhook.go on
// http://127.0.0.1:3000/api/webhook, as `vercel dev` would, but in one
// long-lived process and without the Vercel CLI:
//
//	go run ./examples/vercel/dev
//
// It uses Upstash when UPSTASH_REDIS_REST_URL/_TOKEN (or KV_REST_API_URL/
// _TOKEN) are set, and otherwise starts an embedded Upstash-compatible
// server. (Neither this nor `vercel dev` reproduces the freeze between
// invocations of a deployed function.)
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/chatstate/upstash"
	handler "github.com/chatstate/upstash/examples/vercel/api"
	"github.com/chatstate/upstash/upstashtest"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:3000", "listen address")
	flag.Parse()
	if err := run(*addr); err != nil {
		fmt.Fprintln(os.Stderr, "dev:", err)
		os.Exit(1)
	}
}

func run(addr string) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	if os.Getenv(upstash.EnvURL) == "" && os.Getenv(upstash.EnvVercelURL) == "" {
		srv, err := upstashtest.Start()
		if err != nil {
			return fmt.Errorf("starting the embedded server: %w", err)
		}
		defer srv.Close()
		// Set before the first request: the handler reads the environment
		// once, when it is first called.
		os.Setenv(upstash.EnvURL, srv.URL)
		os.Setenv(upstash.EnvToken, srv.Token)
		fmt.Printf("no %s set: using an embedded Upstash-compatible server at %s\n", upstash.EnvURL, srv.URL)
	}

	mux := http.NewServeMux()
	mux.HandleFunc("/api/webhook", handler.Handler)
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	url := "http://" + ln.Addr().String() + "/api/webhook"
	fmt.Printf("serving api/webhook.go at %s (Ctrl-C to stop); try:\n", url)
	fmt.Printf("  curl -i %s -H 'content-type: application/json' \\\n", url)
	fmt.Println(`    -d '{"platform":"slack","messageId":"m1","threadId":"slack:C1:t1","user":"U1","text":"@bot hello"}'`)

	server := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- server.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	shutdown, cancel := context.WithTimeout(context.Background(), handler.MaxDuration)
	defer cancel()
	if err := server.Shutdown(shutdown); err != nil {
		return err
	}
	if err := <-errc; !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
