package upstash_test

// Generic helpers of the root package's client tests. The state tests' own
// helpers (testCtx, must, raw...) live in state_test.go.

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/chatstate/upstash"
)

const (
	mockURL = "https://eu1-test-db.upstash.io"
	// secretToken is distinctive so that a leak is easy to find in any text.
	secretToken = "AXtokSECRET7f3a9c1e5b2d8Zq"
	// secretArg is an argument value that must never appear in error texts.
	secretArg = "argSECRET-4b1c9e77"
)

// fastRetry retries quickly, so tests of the retry rules take milliseconds.
var fastRetry = upstash.RetryPolicy{MaxRetries: 3, MinBackoff: time.Millisecond, MaxBackoff: 2 * time.Millisecond}

func ctxT(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func wantErrIs(t *testing.T, err error, targets ...error) {
	t.Helper()
	if err == nil {
		t.Fatalf("got no error, want one matching %v", targets)
	}
	for _, target := range targets {
		if !errors.Is(err, target) {
			t.Errorf("error %q (%T) does not match %v", err, err, target)
		}
	}
}

func asError(t *testing.T, err error) *upstash.Error {
	t.Helper()
	var e *upstash.Error
	if !errors.As(err, &e) {
		t.Fatalf("error %q (%T) is not an *upstash.Error", err, err)
	}
	return e
}

func text(t *testing.T, v upstash.Value) string {
	t.Helper()
	s, err := v.Text()
	if err != nil {
		t.Fatalf("Text of %v: %v", v, err)
	}
	return s
}

// ---- statuses and bodies of single commands ----

// logRecorder is a slog.Handler that keeps every record the client logs and
// calls onRecord, if set, for each one as it is logged: tests use it to see
// the waits the retry loop chose and to act at a precise point of a call.
type logRecorder struct {
	mu       sync.Mutex
	records  []slog.Record
	onRecord func(slog.Record)
}

func (h *logRecorder) Enabled(context.Context, slog.Level) bool { return true }
func (h *logRecorder) WithAttrs([]slog.Attr) slog.Handler       { return h }
func (h *logRecorder) WithGroup(string) slog.Handler            { return h }

func (h *logRecorder) Handle(_ context.Context, r slog.Record) error {
	h.mu.Lock()
	h.records = append(h.records, r.Clone())
	on := h.onRecord
	h.mu.Unlock()
	if on != nil {
		on(r)
	}
	return nil
}

// retryWaits returns the wait of each "upstash: retrying" line, in order.
func (h *logRecorder) retryWaits() []time.Duration {
	h.mu.Lock()
	defer h.mu.Unlock()
	var waits []time.Duration
	for _, r := range h.records {
		if r.Message != "upstash: retrying" {
			continue
		}
		r.Attrs(func(a slog.Attr) bool {
			if a.Key == "wait" {
				waits = append(waits, a.Value.Duration())
			}
			return true
		})
	}
	return waits
}

// eventDeadline is a context whose deadline passes when the test calls
// expire, not when a clock says so: Done closes and Err reports
// context.DeadlineExceeded. Deadline reports a time an hour away, so the
// client applies no default timeout and sees room for retries.
type eventDeadline struct {
	context.Context // Background, for Value
	deadline        time.Time
	done            chan struct{}
	once            sync.Once
}

func newEventDeadline() *eventDeadline {
	return &eventDeadline{Context: context.Background(), deadline: time.Now().Add(time.Hour), done: make(chan struct{})}
}

func (c *eventDeadline) Deadline() (time.Time, bool) { return c.deadline, true }
func (c *eventDeadline) Done() <-chan struct{}       { return c.done }

func (c *eventDeadline) Err() error {
	select {
	case <-c.done:
		return context.DeadlineExceeded
	default:
		return nil
	}
}

func (c *eventDeadline) expire() { c.once.Do(func() { close(c.done) }) }
