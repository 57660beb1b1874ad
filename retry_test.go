package upstash_test

// Tests of the retry decision and loop (retry.go): which failures are
// retried for which commands, backoff, deadlines and cancellation, and real
// connections that break (resets, refused dials, stale pooled connections).

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/chatstate/upstash"
)

// TestRetryRules checks which failures are retried for which commands.
func TestRetryRules(t *testing.T) {
	releaseScript := upstash.NewScript("if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0")
	commands := []struct {
		name string
		safe bool
		run  func(ctx context.Context, c *upstash.Client) error
	}{
		{"GET", true, func(ctx context.Context, c *upstash.Client) error { _, err := c.Do(ctx, "GET", "k"); return err }},
		{"SET Idempotent()", true, func(ctx context.Context, c *upstash.Client) error {
			_, err := c.Run(ctx, upstash.Cmd("SET", "k", "v", "PX", 100).Idempotent())
			return err
		}},
		{"SCRIPT LOAD as []byte", true, func(ctx context.Context, c *upstash.Client) error {
			_, err := c.Do(ctx, "SCRIPT", []byte("load"), "return 1")
			return err
		}},
		{"EVAL_RO", true, func(ctx context.Context, c *upstash.Client) error {
			_, err := c.Do(ctx, "EVAL_RO", "return 1", 0)
			return err
		}},
		{"INCR Idempotent()", true, func(ctx context.Context, c *upstash.Client) error {
			_, err := c.Run(ctx, upstash.Cmd("INCR", "k").Idempotent())
			return err
		}},
		{"idempotent script", true, func(ctx context.Context, c *upstash.Client) error {
			_, err := releaseScript.Idempotent().Run(ctx, c, []string{"k"}, "tok")
			return err
		}},
		{"pipeline of reads", true, func(ctx context.Context, c *upstash.Client) error {
			_, err := c.Pipeline(ctx, upstash.Cmd("GET", "a"), upstash.Cmd("PTTL", "a"))
			return err
		}},
		{"INCR", false, func(ctx context.Context, c *upstash.Client) error { _, err := c.Incr(ctx, "k"); return err }},
		// Plain writes: a late repeat could undo another client's newer write.
		{"SET", false, func(ctx context.Context, c *upstash.Client) error {
			_, err := c.Do(ctx, "SET", "k", "v", "PX", 100)
			return err
		}},
		{"Set", false, func(ctx context.Context, c *upstash.Client) error { return c.Set(ctx, "k", "v", 0) }},
		{"Del", false, func(ctx context.Context, c *upstash.Client) error { _, err := c.Del(ctx, "k"); return err }},
		{"PEXPIRE", false, func(ctx context.Context, c *upstash.Client) error {
			_, err := c.Do(ctx, "PEXPIRE", "k", 100)
			return err
		}},
		{"EXPIRE", false, func(ctx context.Context, c *upstash.Client) error {
			_, err := c.Do(ctx, "EXPIRE", "k", 1)
			return err
		}},
		{"MSET", false, func(ctx context.Context, c *upstash.Client) error {
			_, err := c.Do(ctx, "MSET", "a", "1", "b", "2")
			return err
		}},
		{"SCRIPT FLUSH as []byte", false, func(ctx context.Context, c *upstash.Client) error {
			_, err := c.Do(ctx, "SCRIPT", []byte("FLUSH"))
			return err
		}},
		{"SET NX", false, func(ctx context.Context, c *upstash.Client) error {
			_, err := c.SetNX(ctx, "k", "v", time.Second)
			return err
		}},
		{"SET XX", false, func(ctx context.Context, c *upstash.Client) error {
			_, err := c.Do(ctx, "set", "k", "v", "xx")
			return err
		}},
		{"SET GET", false, func(ctx context.Context, c *upstash.Client) error {
			_, err := c.Do(ctx, "SET", "k", "v", "GET")
			return err
		}},
		{"RPUSH", false, func(ctx context.Context, c *upstash.Client) error { _, err := c.Do(ctx, "RPUSH", "l", "x"); return err }},
		{"PEXPIRE NX", false, func(ctx context.Context, c *upstash.Client) error {
			_, err := c.Do(ctx, "PEXPIRE", "k", 100, "NX")
			return err
		}},
		{"script", false, func(ctx context.Context, c *upstash.Client) error {
			_, err := releaseScript.Run(ctx, c, []string{"k"}, "tok")
			return err
		}},
		{"pipeline with a write", false, func(ctx context.Context, c *upstash.Client) error {
			_, err := c.Pipeline(ctx, upstash.Cmd("GET", "a"), upstash.Cmd("INCR", "a"))
			return err
		}},
		{"transaction", false, func(ctx context.Context, c *upstash.Client) error {
			_, err := c.Transaction(ctx, upstash.Cmd("GET", "a"), upstash.Cmd("INCR", "a"))
			return err
		}},
	}
	success := func(pipeline bool) step {
		if pipeline {
			return pipeOK
		}
		return okStep
	}
	for _, cmd := range commands {
		batch := strings.HasPrefix(cmd.name, "pipeline") || cmd.name == "transaction"
		ok := success(batch)
		t.Run(cmd.name, func(t *testing.T) {
			t.Run("refused before sending: always retried", func(t *testing.T) {
				c, ft := newFaultClient(t, fastRetry, step{fault: refuse}, step{fault: refuse}, ok)
				if err := cmd.run(ctxT(t), c); err != nil {
					t.Fatalf("error %v", err)
				}
				if n := ft.attempts(); n != 3 {
					t.Fatalf("%d attempts, want 3", n)
				}
			})
			t.Run("dial error from an untraced transport: retried", func(t *testing.T) {
				c, ft := newFaultClient(t, fastRetry, step{fault: refuseUntraced}, ok)
				if err := cmd.run(ctxT(t), c); err != nil {
					t.Fatalf("error %v", err)
				}
				if n := ft.attempts(); n != 2 {
					t.Fatalf("%d attempts, want 2", n)
				}
			})
			t.Run("refused every time", func(t *testing.T) {
				c, ft := newFaultClient(t, fastRetry, step{fault: refuse})
				err := cmd.run(ctxT(t), c)
				wantErrIs(t, err, syscall.ECONNREFUSED)
				if errors.Is(err, upstash.ErrOutcomeUnknown) {
					t.Fatalf("a request that never left matches ErrOutcomeUnknown: %v", err)
				}
				if n := ft.attempts(); n != 1+fastRetry.MaxRetries {
					t.Fatalf("%d attempts", n)
				}
			})
			t.Run("reset after writing", func(t *testing.T) {
				c, ft := newFaultClient(t, fastRetry, step{fault: resetAfterWrite}, ok)
				err := cmd.run(ctxT(t), c)
				if cmd.safe {
					if err != nil || ft.attempts() != 2 {
						t.Fatalf("error %v after %d attempts; want success after 2", err, ft.attempts())
					}
					return
				}
				wantErrIs(t, err, upstash.ErrOutcomeUnknown, syscall.ECONNRESET)
				if n := ft.attempts(); n != 1 {
					t.Fatalf("%d attempts, want 1", n)
				}
			})
			t.Run("opaque transport error", func(t *testing.T) {
				// A transport that does not report through httptrace gives no
				// proof that nothing was sent.
				c, ft := newFaultClient(t, fastRetry, step{fault: opaqueError}, ok)
				err := cmd.run(ctxT(t), c)
				if cmd.safe {
					if err != nil || ft.attempts() != 2 {
						t.Fatalf("error %v after %d attempts; want success after 2", err, ft.attempts())
					}
					return
				}
				wantErrIs(t, err, upstash.ErrOutcomeUnknown)
				if n := ft.attempts(); n != 1 {
					t.Fatalf("%d attempts, want 1", n)
				}
			})
			for _, fail := range []step{html503, json500, {status: 502, body: ""}, {status: 429, body: `{"error":"ERR too many requests"}`}} {
				t.Run(fmt.Sprintf("HTTP %d", fail.status), func(t *testing.T) {
					c, ft := newFaultClient(t, fastRetry, fail, fail, ok)
					err := cmd.run(ctxT(t), c)
					if cmd.safe {
						if err != nil || ft.attempts() != 3 {
							t.Fatalf("error %v after %d attempts; want success after 3", err, ft.attempts())
						}
						return
					}
					if n := ft.attempts(); n != 1 {
						t.Fatalf("%d attempts, want 1", n)
					}
					if fail.status == 429 {
						// A 429 is a refusal: nothing ran.
						if errors.Is(err, upstash.ErrOutcomeUnknown) {
							t.Fatalf("429 matches ErrOutcomeUnknown: %v", err)
						}
						if e := asError(t, err); e.Status != 429 {
							t.Fatalf("error %+v", *e)
						}
						return
					}
					wantErrIs(t, err, upstash.ErrOutcomeUnknown)
				})
			}
			for _, code := range []int{400, 401, 403, 404, 405, 413, 501} {
				t.Run(fmt.Sprintf("HTTP %d never retried", code), func(t *testing.T) {
					c, ft := newFaultClient(t, fastRetry, status4x(code), ok)
					err := cmd.run(ctxT(t), c)
					if err == nil {
						t.Fatal("no error")
					}
					if n := ft.attempts(); n != 1 {
						t.Fatalf("%d attempts, want 1", n)
					}
					if code < 500 && errors.Is(err, upstash.ErrOutcomeUnknown) {
						t.Fatalf("a refusal matches ErrOutcomeUnknown: %v", err)
					}
					if code == 401 {
						wantErrIs(t, err, upstash.ErrUnauthorized)
					}
				})
			}
		})
	}
}

func TestRetriesGiveUpAfterMaxRetries(t *testing.T) {
	c, ft := newFaultClient(t, upstash.RetryPolicy{MaxRetries: 2, MinBackoff: time.Millisecond, MaxBackoff: time.Millisecond}, html503)
	_, err := c.Do(ctxT(t), "GET", "k")
	wantErrIs(t, err, upstash.ErrProtocol)
	if !strings.Contains(err.Error(), "503") {
		t.Errorf("error %q does not give the last status", err)
	}
	if n := ft.attempts(); n != 3 {
		t.Fatalf("%d attempts, want 3", n)
	}
	c, ft = newFaultClient(t, upstash.NoRetry, step{fault: refuse}, okStep)
	if _, err := c.Do(ctxT(t), "GET", "k"); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("NoRetry: %v", err)
	}
	if n := ft.attempts(); n != 1 {
		t.Fatalf("NoRetry: %d attempts", n)
	}
}

func TestRetryBackoff(t *testing.T) {
	policy := upstash.RetryPolicy{MaxRetries: 4, MinBackoff: 20 * time.Millisecond, MaxBackoff: 50 * time.Millisecond}
	logs := &logRecorder{}
	ft := &faultTransport{steps: []step{html503}}
	c, err := upstash.New(upstash.Config{URL: mockURL, Token: secretToken}, upstash.WithTransport(ft),
		upstash.WithRetry(policy), upstash.WithLogger(slog.New(logs)))
	if err != nil {
		t.Fatal(err)
	}
	_, _ = c.Do(ctxT(t), "GET", "k")
	if len(ft.starts) != 5 {
		t.Fatalf("%d attempts", len(ft.starts))
	}
	waits := logs.retryWaits()
	if len(waits) != 4 {
		t.Fatalf("%d retries logged, want 4", len(waits))
	}
	// Waits are jittered to between half and all of 20, 40, 50, 50 ms, and
	// each retry starts no sooner than its wait after the attempt before.
	for i, full := range []time.Duration{20, 40, 50, 50} {
		full *= time.Millisecond
		if w := waits[i]; w < full/2 || w > full {
			t.Errorf("wait %d was %v, want between %v and %v", i+1, w, full/2, full)
		}
		if gap := ft.starts[i+1].Sub(ft.starts[i]); gap < waits[i] {
			t.Errorf("attempt %d started %v after attempt %d, before its wait of %v", i+2, gap, i+1, waits[i])
		}
	}
}

// TestDeadlineBoundsRetries: the deadline bounds the retries. The bounds on
// elapsed time only catch a call that ignores its deadline: each has a
// margin of at least 30 times what the call takes on an idle machine.
func TestDeadlineBoundsRetries(t *testing.T) {
	t.Run("no attempt starts after the deadline", func(t *testing.T) {
		// The deadline passes as an event, during the fifth attempt: that
		// attempt fails with it and no sixth one starts. (Against a clock,
		// the check before an attempt and the transport's first step can
		// fall on either side of the deadline on a loaded machine.)
		ctx := newEventDeadline()
		ft := &faultTransport{steps: []step{html503}, before: func(n int) {
			if n == 5 {
				ctx.expire()
			}
		}}
		c, err := upstash.New(upstash.Config{URL: mockURL, Token: secretToken}, upstash.WithTransport(ft),
			upstash.WithRetry(upstash.RetryPolicy{MaxRetries: 1 << 20}))
		if err != nil {
			t.Fatal(err)
		}
		_, err = c.Do(ctx, "GET", "k")
		wantErrIs(t, err, context.DeadlineExceeded)
		if n := ft.attempts(); n != 5 {
			t.Fatalf("%d attempts, want 5: none after the deadline", n)
		}
	})
	t.Run("the budget bounds the attempts", func(t *testing.T) {
		policy := upstash.RetryPolicy{MaxRetries: 1 << 20, MinBackoff: 10 * time.Millisecond, MaxBackoff: 10 * time.Millisecond}
		c, ft := newFaultClient(t, policy, html503)
		const budget = time.Second
		ctx, cancel := context.WithTimeout(context.Background(), budget)
		defer cancel()
		start := time.Now()
		_, err := c.Do(ctx, "GET", "k")
		wantErrIs(t, err, context.DeadlineExceeded)
		if el := time.Since(start); el > 30*time.Second {
			t.Fatalf("took %v", el)
		}
		// At least one retry, and no more than the backoff (at least 5 ms
		// each) leaves room for.
		if n := ft.attempts(); n < 2 || n > 1+int(budget/(5*time.Millisecond)) {
			t.Fatalf("%d attempts", n)
		}
	})
	t.Run("a backoff that would end past the deadline is not waited", func(t *testing.T) {
		policy := upstash.RetryPolicy{MaxRetries: 3, MinBackoff: 10 * time.Minute, MaxBackoff: 10 * time.Minute}
		c, ft := newFaultClient(t, policy, html503)
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		start := time.Now()
		_, err := c.Do(ctx, "GET", "k")
		wantErrIs(t, err, context.DeadlineExceeded, upstash.ErrProtocol)
		if el := time.Since(start); el > 30*time.Second {
			t.Fatalf("returned after %v; it should give up at once, not wait for the deadline", el)
		}
		if n := ft.attempts(); n != 1 {
			t.Fatalf("%d attempts", n)
		}
	})
	t.Run("WithTimeout bounds calls without a deadline", func(t *testing.T) {
		ft := &faultTransport{steps: []step{html503}}
		c, err := upstash.New(upstash.Config{URL: mockURL, Token: "t"}, upstash.WithTransport(ft),
			upstash.WithTimeout(100*time.Millisecond),
			upstash.WithRetry(upstash.RetryPolicy{MaxRetries: 1 << 20, MinBackoff: 10 * time.Millisecond, MaxBackoff: 10 * time.Millisecond}))
		if err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		_, err = c.Do(context.Background(), "GET", "k")
		wantErrIs(t, err, context.DeadlineExceeded)
		if el := time.Since(start); el > 30*time.Second {
			t.Fatalf("took %v", el)
		}
	})
	t.Run("already expired", func(t *testing.T) {
		c, ft := newFaultClient(t, fastRetry, okStep)
		ctx, cancel := context.WithDeadline(context.Background(), time.Now().Add(-time.Second))
		defer cancel()
		_, err := c.Do(ctx, "INCR", "k")
		wantErrIs(t, err, context.DeadlineExceeded)
		if errors.Is(err, upstash.ErrOutcomeUnknown) {
			t.Fatalf("a request never sent matches ErrOutcomeUnknown: %v", err)
		}
		if n := len(ft.bodies); n != 0 {
			t.Fatalf("%d requests went out", n)
		}
	})
}

func TestCancellation(t *testing.T) {
	t.Run("during backoff", func(t *testing.T) {
		// The context is canceled as the client logs its retry, just before
		// it waits 10 minutes: the wait must end at once.
		ctx, cancel := context.WithTimeout(context.Background(), time.Hour)
		defer cancel()
		logs := &logRecorder{onRecord: func(r slog.Record) {
			if r.Message == "upstash: retrying" {
				cancel()
			}
		}}
		ft := &faultTransport{steps: []step{html503}}
		c, err := upstash.New(upstash.Config{URL: mockURL, Token: secretToken}, upstash.WithTransport(ft),
			upstash.WithRetry(upstash.RetryPolicy{MaxRetries: 5, MinBackoff: 10 * time.Minute, MaxBackoff: 10 * time.Minute}),
			upstash.WithLogger(slog.New(logs)))
		if err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		_, err = c.Do(ctx, "GET", "k")
		wantErrIs(t, err, context.Canceled)
		if el := time.Since(start); el > 30*time.Second {
			t.Fatalf("cancellation took %v", el)
		}
		if n := ft.attempts(); n != 1 {
			t.Fatalf("%d attempts", n)
		}
		if n := len(logs.retryWaits()); n != 1 {
			t.Fatalf("%d retries logged, want 1", n)
		}
	})
	t.Run("before the call", func(t *testing.T) {
		c, ft := newFaultClient(t, fastRetry, okStep)
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		_, err := c.Do(ctx, "GET", "k")
		wantErrIs(t, err, context.Canceled)
		if n := len(ft.bodies); n != 0 {
			t.Fatalf("%d requests went out", n)
		}
	})
}

// TestThawStalePooledConnection reproduces the first request after a Lambda
// thaw: the pooled keep-alive connection was dropped by the server while the
// function was frozen, the client writes its request on it and reads a
// reset. For commands safe to repeat that must not surface as an error.
func TestThawStalePooledConnection(t *testing.T) {
	t.Run("net/http replays a safe command by itself (retries off)", func(t *testing.T) {
		// With retries off only net/http's own replay can save the call: it
		// relies on the empty Idempotency-Key and on GetBody.
		s := newNetServer(t)
		c := netClient(t, s, upstash.NoRetry, nil)
		ctx := ctxT(t)
		if err := c.Set(ctx, "k", "v", 0); err != nil {
			t.Fatal(err)
		}
		if n := s.staleIdle(); n != 1 {
			t.Fatalf("%d connections, want the one pooled", n)
		}
		b, err := c.Get(ctx, "k")
		if err != nil {
			t.Fatalf("GET on a stale pooled connection: %v", err)
		}
		if string(b) != "v" {
			t.Fatalf("got %q", b)
		}
		handled, cmds := s.stats()
		if handled != 2 || cmds["GET"] != 1 {
			t.Fatalf("server handled %d requests (%v); want SET and one GET", handled, cmds)
		}
		if n := s.staleKills.Load(); n != 1 {
			t.Fatalf("%d requests were written on the stale connection, want 1 (the GET, then replayed)", n)
		}
		// And an Idempotent() command.
		s.staleIdle()
		if _, err := c.Run(ctx, upstash.Cmd("INCR", "n").Idempotent()); err != nil {
			t.Fatalf("Idempotent INCR on a stale pooled connection: %v", err)
		}
		if got := s.value("n"); got != "1" {
			t.Fatalf("counter %q", got)
		}
		if n := s.staleKills.Load(); n != 2 {
			t.Fatalf("%d requests were written on stale connections, want 2", n)
		}
	})
	t.Run("a command not safe to repeat is not replayed", func(t *testing.T) {
		s := newNetServer(t)
		c := netClient(t, s, fastRetry, nil)
		ctx := ctxT(t)
		if err := c.Ping(ctx); err != nil {
			t.Fatal(err)
		}
		s.staleIdle()
		_, err := c.Incr(ctx, "n")
		// The INCR was written on the pooled connection (Ping's body was
		// read to its end, which net/http answers only once the connection
		// is back in the pool), and the server reset it on arrival.
		if n := s.staleKills.Load(); n != 1 {
			t.Fatalf("%d requests were written on the stale connection, want the INCR", n)
		}
		// This server dropped the request unread, but the client cannot know
		// that: the request was written.
		wantErrIs(t, err, upstash.ErrOutcomeUnknown)
		if _, cmds := s.stats(); cmds["INCR"] != 0 {
			t.Fatalf("INCR ran %d times", cmds["INCR"])
		}
		// The next call uses a fresh connection.
		if n, err := c.Incr(ctx, "n"); err != nil || n != 1 {
			t.Fatalf("INCR after: %d %v", n, err)
		}
	})
	t.Run("default retry policy", func(t *testing.T) {
		s := newNetServer(t)
		c := netClient(t, s, upstash.DefaultRetryPolicy, nil)
		ctx := ctxT(t)
		if err := c.Set(ctx, "k", "v", 0); err != nil {
			t.Fatal(err)
		}
		for i := 0; i < 3; i++ {
			s.staleIdle()
			if _, err := c.Get(ctx, "k"); err != nil {
				t.Fatalf("GET %d: %v", i, err)
			}
		}
		if handled, _ := s.stats(); handled != 4 {
			t.Fatalf("server handled %d requests, want 4", handled)
		}
		if n := s.staleKills.Load(); n != 3 {
			t.Fatalf("%d GETs were written on a stale connection, want 3", n)
		}
	})
	t.Run("server closed its idle connections", func(t *testing.T) {
		// The literal form: the server closes the idle connection (the client
		// may or may not have seen the FIN when it sends the next request).
		for i := 0; i < 20; i++ {
			s := newNetServer(t)
			c := netClient(t, s, upstash.NoRetry, nil)
			ctx := ctxT(t)
			if err := c.Set(ctx, "k", "v", 0); err != nil {
				t.Fatal(err)
			}
			s.CloseClientConnections()
			if _, err := c.Get(ctx, "k"); err != nil {
				t.Fatalf("round %d: GET after the server closed the idle connection: %v", i, err)
			}
			if handled, _ := s.stats(); handled != 2 {
				t.Fatalf("server handled %d requests", handled)
			}
		}
	})
}

// TestResetAfterWrite: the server ran the command and the connection broke
// before the reply.
func TestResetAfterWrite(t *testing.T) {
	tests := []struct {
		name    string
		run     func(ctx context.Context, c *upstash.Client) error
		retried bool
		key     string
		want    string // the key's value afterwards
	}{
		{"GET", func(ctx context.Context, c *upstash.Client) error { _, err := c.Get(ctx, "g"); return err }, true, "", ""},
		{"SET", func(ctx context.Context, c *upstash.Client) error { return c.Set(ctx, "s", "v", 0) }, false, "s", "v"},
		{"INCR Idempotent()", func(ctx context.Context, c *upstash.Client) error {
			_, err := c.Run(ctx, upstash.Cmd("INCR", "i").Idempotent())
			return err
		}, true, "i", "2"},
		{"INCR", func(ctx context.Context, c *upstash.Client) error { _, err := c.Incr(ctx, "n"); return err }, false, "n", "1"},
		{"SET NX", func(ctx context.Context, c *upstash.Client) error {
			_, err := c.SetNX(ctx, "nx", "v", time.Second)
			return err
		}, false, "nx", "v"},
	}
	for _, tc := range tests {
		for _, warm := range []bool{false, true} {
			name := tc.name + map[bool]string{false: " on a fresh connection", true: " on a pooled connection"}[warm]
			t.Run(name, func(t *testing.T) {
				s := newNetServer(t)
				c := netClient(t, s, fastRetry, nil)
				ctx := ctxT(t)
				if warm {
					if err := c.Ping(ctx); err != nil {
						t.Fatal(err)
					}
				}
				before, _ := s.stats()
				s.setReset(1)
				err := tc.run(ctx, c)
				handled, _ := s.stats()
				handled -= before
				if tc.retried {
					if err != nil && !errors.Is(err, upstash.ErrNil) {
						t.Fatalf("error %v", err)
					}
					if handled != 2 {
						t.Fatalf("server handled %d requests, want 2", handled)
					}
				} else {
					wantErrIs(t, err, upstash.ErrOutcomeUnknown)
					var op *net.OpError
					if !errors.Is(err, syscall.ECONNRESET) && !errors.Is(err, io.EOF) && !errors.As(err, &op) {
						t.Errorf("error %q does not match the underlying network error", err)
					}
					if handled != 1 {
						t.Fatalf("server handled %d requests, want 1", handled)
					}
					for _, leak := range []string{secretToken, "\"v\""} {
						if strings.Contains(err.Error(), leak) {
							t.Errorf("error %q contains %q", err, leak)
						}
					}
				}
				if tc.key != "" {
					if got := s.value(tc.key); got != tc.want {
						t.Fatalf("%s = %q, want %q", tc.key, got, tc.want)
					}
				}
			})
		}
	}
}

// TestRefusedDialIsRetried: a connection that could not be opened carried
// nothing, so even INCR is retried.
func TestRefusedDialIsRetried(t *testing.T) {
	s := newNetServer(t)
	// A port with nothing listening.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := l.Addr().String()
	l.Close()
	var dials atomic.Int32
	var d net.Dialer
	c := netClient(t, s, fastRetry, func(ctx context.Context, network, addr string) (net.Conn, error) {
		if dials.Add(1) <= 2 {
			return d.DialContext(ctx, network, closed)
		}
		return d.DialContext(ctx, network, addr)
	})
	n, err := c.Incr(ctxT(t), "n")
	if err != nil || n != 1 {
		t.Fatalf("INCR: %d %v", n, err)
	}
	if got := dials.Load(); got != 3 {
		t.Fatalf("%d dials, want 3", got)
	}
	if handled, _ := s.stats(); handled != 1 {
		t.Fatalf("server handled %d requests", handled)
	}
	// Refused every time: the error is the dial error, and not ErrOutcomeUnknown.
	dials.Store(-100)
	c2 := netClient(t, s, fastRetry, func(ctx context.Context, network, addr string) (net.Conn, error) {
		return d.DialContext(ctx, network, closed)
	})
	_, err = c2.Incr(ctxT(t), "n")
	wantErrIs(t, err, syscall.ECONNREFUSED)
	if errors.Is(err, upstash.ErrOutcomeUnknown) {
		t.Fatalf("a refused dial matches ErrOutcomeUnknown: %v", err)
	}
}

// TestSlowServerDeadline: the deadline passes while the server is working.
// TestSlowServerDeadline: the deadline passes while the server is working.
// The deadline passes when the server has the request (eventDeadline), so
// the request has certainly been written.
func TestSlowServerDeadline(t *testing.T) {
	release := make(chan struct{})
	arrived := make(chan struct{}, 1)
	var handled atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		handled.Add(1)
		select {
		case arrived <- struct{}{}:
		default:
		}
		select {
		case <-release:
		case <-r.Context().Done():
		}
		_, _ = io.WriteString(w, `{"result":1}`)
	}))
	defer srv.Close()
	defer close(release)
	c, err := upstash.New(upstash.Config{URL: srv.URL, Token: "t"}, upstash.WithRetry(fastRetry))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		cmd       string
		ambiguous bool
	}{{"GET", false}, {"INCR", true}} {
		handled.Store(0)
		ctx := newEventDeadline()
		returned := make(chan struct{})
		go func() {
			select {
			case <-arrived:
				ctx.expire()
			case <-returned:
			}
		}()
		_, err := c.Do(ctx, tc.cmd, "k")
		close(returned)
		wantErrIs(t, err, context.DeadlineExceeded)
		if errors.Is(err, upstash.ErrOutcomeUnknown) != tc.ambiguous {
			t.Errorf("%s: ErrOutcomeUnknown = %v, want %v: %v", tc.cmd, !tc.ambiguous, tc.ambiguous, err)
		}
		if n := handled.Load(); n != 1 {
			t.Errorf("%s: %d requests, want 1 (no retry once the deadline has passed)", tc.cmd, n)
		}
	}
}
