package flow

import (
	"fmt"

	"github.com/chatstate/upstash"
)

// FusedPending says what the go-fused configuration waits for.
const FusedPending = "the fused State operations (Admit, Finish) and the client's auto-pipelining are not in the library yet (issue 11 items 1 and 2)"

// NewFused returns the flow of configuration go-fused: this library with
// auto-pipelining and the fused operations, two requests per handled
// webhook (Admit: dedupe, subscription, lock or enqueue, thread state read;
// Finish: thread state write, history append, release or take the next
// queued message) and one per queued or duplicate webhook.
//
// This is the seam to fill when they land: return a Handler whose Handle
// makes those two calls on st (a client with auto-pipelining on), with the
// same keys, values and TTLs as Calls, and whose Warmup loads both scripts.
// Until then it returns an error matching ErrUnavailable, and the harness
// reports the configuration as unavailable instead of measuring anything.
func NewFused(st *upstash.State) (Handler, error) {
	_ = st
	return nil, fmt.Errorf("%w: %s", ErrUnavailable, FusedPending)
}
