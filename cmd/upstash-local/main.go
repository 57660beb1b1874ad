// Command upstash-local serves the Upstash Redis REST API locally, on an
// embedded Redis (miniredis) or a real one, for development and for
// clients' integration tests.
//
//	go run ./cmd/upstash-local [-addr 127.0.0.1:8079] [-token TOKEN] [-read-only-token TOKEN]
//	                           [-redis redis://127.0.0.1:6379 | -redis-server] [-v]
//
// Once it listens, it prints to stdout one comment line naming the URL and
// the backend, then the variables the Upstash clients read, as shell
// commands (values single-quoted):
//
//	# upstash-local: Upstash REST API at http://127.0.0.1:8079, backed by an embedded Redis (miniredis) at 127.0.0.1:40111
//	export UPSTASH_REDIS_REST_URL='http://127.0.0.1:8079'
//	export UPSTASH_REDIS_REST_TOKEN='dev-token'
//
// (and export KV_REST_API_READ_ONLY_TOKEN=… when -read-only-token is set),
// so that another shell can paste them or eval them. Errors, logs and the
// shutdown notice go to stderr. It serves until SIGINT or SIGTERM, then
// exits 0. Without -token a random token is generated.
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
	"strings"
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
	switch {
	case *redisAddr != "":
		opts = append(opts, upstashtest.WithRedisAddr(*redisAddr))
	case *redisServer:
		opts = append(opts, upstashtest.WithRedisServer())
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

	var backend string
	switch {
	case *redisAddr != "":
		backend = "the Redis at " + srv.RedisAddr()
	case *redisServer:
		backend = "a private redis-server at " + srv.RedisAddr()
	default:
		backend = "an embedded Redis (miniredis) at " + srv.RedisAddr()
	}
	fmt.Fprint(stdout, banner(srv.URL, backend, srv.Token, srv.ReadOnlyToken))
	if f, ok := stdout.(*os.File); ok {
		_ = f.Sync()
	}

	<-ctx.Done()
	fmt.Fprintln(stderr, "upstash-local: shutting down")
	srv.Close()
	return 0
}

// banner is what upstash-local prints once it listens: a comment naming the
// URL and the backend, then one export line per variable, so that the whole
// text can be evaluated by a POSIX shell.
func banner(url, backend, token, roToken string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "# upstash-local: Upstash REST API at %s, backed by %s\n", oneLine(url), oneLine(backend))
	fmt.Fprintf(&b, "export UPSTASH_REDIS_REST_URL=%s\n", shellQuote(url))
	fmt.Fprintf(&b, "export UPSTASH_REDIS_REST_TOKEN=%s\n", shellQuote(token))
	if roToken != "" {
		fmt.Fprintf(&b, "export KV_REST_API_READ_ONLY_TOKEN=%s\n", shellQuote(roToken))
	}
	return b.String()
}

// shellQuote quotes s for a POSIX shell: inside single quotes nothing is
// special except the single quote itself, written as: close the quotes,
// a backslash-escaped quote, reopen the quotes.
func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// oneLine keeps a comment on one line whatever the flags contained.
func oneLine(s string) string {
	return strings.NewReplacer("\n", " ", "\r", " ").Replace(s)
}
