package upstash_test

// Generic helpers of the root package's client tests. The state tests' own
// helpers (testCtx, must, raw...) live in state_test.go.

import (
	"context"
	"errors"
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
