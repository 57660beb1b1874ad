// Command upstash-local serves the Upstash Redis REST API locally, on an
// embedded Redis (miniredis) or a real one, for development and for
// clients' integration tests.
//
//	go run ./cmd/upstash-local -addr 127.0.0.1:8079 -token TOKEN [-read-only-token TOKEN]
//	                           [-redis redis://127.0.0.1:6379 | -redis-server]
//
// It prints the URL and the environment lines the Upstash clients read
// (UPSTASH_REDIS_REST_URL, UPSTASH_REDIS_REST_TOKEN, and
// KV_REST_API_READ_ONLY_TOKEN when a read-only token is set), then serves
// until SIGINT or SIGTERM. Without -token a random token is generated.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/chatstate/upstash/upstashtest"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("upstash-local", flag.ContinueOnError)
	fs.SetOutput(stderr)
	addr := fs.String("addr", "127.0.0.1:8079", "listen address (host:port; port 0 picks a free one)")
	token := fs.String("token", "", "full-access token (default: random, printed at start)")
	roToken := fs.String("read-only-token", "", "read-only token (default: none)")
	redisAddr := fs.String("redis", "", "use an existing Redis: host:port or redis://host:port[/db] (default: embedded)")
	redisServer := fs.Bool("redis-server", false, "start a private redis-server from PATH")
	verbose := fs.Bool("v", false, "log every request to stderr")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "upstash-local: unexpected arguments: %v\n", fs.Args())
		return 2
	}
	if *redisAddr != "" && *redisServer {
		fmt.Fprintln(stderr, "upstash-local: -redis and -redis-server are exclusive")
		return 2
	}

	opts := []upstashtest.Option{
		upstashtest.WithAddr(*addr),
		upstashtest.WithToken(*token),
		upstashtest.WithReadOnlyToken(*roToken),
	}
	backend := "embedded Redis (miniredis)"
	switch {
	case *redisAddr != "":
		opts = append(opts, upstashtest.WithRedisAddr(*redisAddr))
		backend = "Redis at " + *redisAddr
	case *redisServer:
		opts = append(opts, upstashtest.WithRedisServer())
		backend = "private redis-server"
	default:
		opts = append(opts, upstashtest.WithEmbedded())
	}
	level := slog.LevelWarn
	if *verbose {
		level = slog.LevelDebug
	}
	opts = append(opts, upstashtest.WithLogger(slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))))

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	srv, err := upstashtest.Start(opts...)
	if err != nil {
		fmt.Fprintf(stderr, "upstash-local: %v\n", err)
		return 1
	}
	defer srv.Close()

	fmt.Fprintf(stdout, "upstash-local: serving the Upstash REST API on %s (%s, Redis at %s)\n", srv.URL, backend, srv.RedisAddr())
	fmt.Fprintf(stdout, "UPSTASH_REDIS_REST_URL=%s\n", srv.URL)
	fmt.Fprintf(stdout, "UPSTASH_REDIS_REST_TOKEN=%s\n", srv.Token)
	if srv.ReadOnlyToken != "" {
		fmt.Fprintf(stdout, "KV_REST_API_READ_ONLY_TOKEN=%s\n", srv.ReadOnlyToken)
	}
	if f, ok := stdout.(*os.File); ok {
		_ = f.Sync()
	}

	<-ctx.Done()
	fmt.Fprintln(stderr, "upstash-local: shutting down")
	srv.Close()
	return 0
}
