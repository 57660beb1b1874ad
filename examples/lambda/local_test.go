//go:build !lambda.norpc

package main

import (
	"bytes"
	"context"
	"os"
	"strings"
	"testing"

	"github.com/chatstate/upstash"
	"github.com/chatstate/upstash/upstashtest"
)

// TestLocalBurst runs `go run ./examples/lambda` in-process: the runner
// checks itself and returns an error on any problem.
func TestLocalBurst(t *testing.T) {
	t.Parallel()
	var out bytes.Buffer
	rep, err := runLocal(context.Background(), &out, map[string]string{})
	t.Log("\n" + out.String())
	if err != nil {
		t.Fatal(err)
	}
	want := "embedded"
	if os.Getenv(upstashtest.EnvRedis) == "redis-server" {
		want = "redis-server"
	}
	if rep.Backend != want {
		t.Errorf("backend %q, want %q", rep.Backend, want)
	}
	if !strings.Contains(out.String(), "no UPSTASH_REDIS_REST_URL set: using an embedded Upstash-compatible server at http://127.0.0.1:") {
		t.Error("the output does not say which server it uses")
	}
	checks := []struct {
		name      string
		got, want int
	}{
		{"200 handled", rep.Results["200 handled"], 5},
		{"202 queued", rep.Results["202 queued"], 4},
		{"200 duplicate", rep.Results["200 duplicate"], 2},
		{"other responses", len(rep.Results), 3},
		{"handled by their own invocation", rep.Bot["handled"], 4},
		{"drained", rep.Bot["drained"], 4},
		{"ignored", rep.Bot["ignored"], 1},
		{"subscribed", rep.Bot["subscribed"], 2},
		{"max in flight", rep.MaxInFlight, 1},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s: %d, want %d", c.name, c.got, c.want)
		}
	}
	if !strings.Contains(out.String(), "\nOK: every message handled exactly once") {
		t.Error("no OK line in the summary")
	}
}

// TestLocalBurstOnADatabase takes the runner's "real Upstash" path (the
// variables set): each run uses a key prefix of its own, so a second run is
// not deduped by the first, and deletes its keys at the end.
func TestLocalBurstOnADatabase(t *testing.T) {
	t.Parallel()
	srv := upstashtest.NewServer(t)
	env := map[string]string{upstash.EnvVercelURL: srv.URL, upstash.EnvVercelToken: srv.Token}
	for run := 1; run <= 2; run++ {
		var out bytes.Buffer
		rep, err := runLocal(context.Background(), &out, env)
		if err != nil {
			t.Fatalf("run %d: %v\n%s", run, err, out.String())
		}
		if rep.Backend != "upstash" || !strings.Contains(out.String(), "with key prefix chat-sdk-example-") {
			t.Fatalf("run %d did not take the database path:\n%s", run, out.String())
		}
		keys, err := srv.Do("KEYS", "*")
		if err != nil {
			t.Fatal(err)
		}
		if left := keys.([]interface{}); len(left) != 0 {
			var names []string
			for _, k := range left {
				names = append(names, string(k.([]byte)))
			}
			t.Errorf("run %d left keys behind: %v", run, names)
		}
	}
}
