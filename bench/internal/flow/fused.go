package flow

import (
	"context"
	"encoding/json"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/chatstate/upstash"
)

// Fused is the flow of configuration go-fused: the same webhook flow as
// Calls, with the same keys, values and TTLs, in the fused operations of
// upstash.FusedAdapter. A handled webhook is two requests (Admit: dedupe,
// subscription check, lock or enqueue, thread state read; Finish: thread
// state write, history append, then release, or pop the next queued
// message and keep the lock), a queued or duplicate one is one (Admit),
// and each message drained is one more (its Finish).
type Fused struct {
	State upstash.FusedAdapter
	ops   atomic.Int64
}

// NewFused returns the fused flow over st. The client under st should
// have auto-pipelining on (the default) for the configuration to mean
// what its name says.
func NewFused(st upstash.FusedAdapter) *Fused { return &Fused{State: st} }

// Ops implements Handler. So that per-operation figures compare the same
// work across configurations, it counts the state operations the fused
// calls stand for, as Calls counts them (dedupe; subscription and lock;
// queue depth and enqueue; thread state get and set and history append per
// message; a dequeue per message taken from the queue and one finding it
// empty; release), not the two requests.
func (f *Fused) Ops() int64 { return f.ops.Load() }

// Warmup implements Handler: one webhook on thread "bench:warmup" loads
// both scripts and opens the connection.
func (f *Fused) Warmup(ctx context.Context) error {
	_, err := f.Handle(ctx, Webhook{Seq: -1, MessageID: "warmup", ThreadID: "bench:warmup"})
	return err
}

// Handle implements Handler.
func (f *Fused) Handle(ctx context.Context, w Webhook) (out Outcome, err error) {
	msg := NewMessage(w)
	entry, err := upstash.NewQueueEntry(msg, QueueEntryTTL)
	if err != nil {
		return out, err
	}
	a, err := f.State.Admit(ctx, upstash.AdmitRequest{
		DedupeKey:         dedupeKey(w),
		DedupeTTL:         DedupeTTL,
		CheckSubscription: w.ThreadID,
		ThreadID:          w.ThreadID,
		LockTTL:           LockTTL,
		Entry:             &entry,
		MaxQueue:          MaxQueue,
		Read:              []string{threadStateKey(w.ThreadID)},
	})
	if err != nil {
		return out, fmt.Errorf("admit: %w", err)
	}
	f.ops.Add(1)
	switch {
	case a.Duplicate:
		return Outcome{Status: Duplicate}, nil
	case a.Lock == nil:
		f.ops.Add(4)
		return Outcome{Status: Queued}, nil
	}
	f.ops.Add(2)
	lock := a.Lock
	out.Status = Handled
	finished := false
	defer func() {
		if finished {
			return
		}
		// An error between Admit and the last Finish: let the lock go.
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		_ = f.State.ReleaseLock(rctx, lock)
	}()
	var ts ThreadState
	if a.ReadErr != nil {
		return out, fmt.Errorf("thread state: %w", a.ReadErr)
	}
	if raw := a.Values[0]; raw != nil {
		if err := json.Unmarshal(raw, &ts); err != nil {
			return out, fmt.Errorf("thread state: %w", err)
		}
	}
	f.ops.Add(1) // the thread state read
	for {
		// The holder knows the thread state it wrote last: no read between
		// messages.
		ts = ThreadState{Count: ts.Count + 1, Last: msg.ID, Subscribed: a.Subscribed}
		msg.Raw = json.RawMessage("null") // history keeps no platform payload
		res, err := f.State.Finish(ctx, upstash.FinishRequest{
			Lock:    lock,
			LockTTL: LockTTL,
			Set:     []upstash.CacheWrite{{Key: threadStateKey(msg.ThreadID), Value: ts, TTL: ThreadStateTTL}},
			Append:  []upstash.ListAppend{{Key: historyKey(msg.ThreadID), Value: msg, Options: upstash.ListOptions{MaxLength: HistoryMax, TTL: HistoryTTL}}},
		})
		if err != nil {
			return out, fmt.Errorf("finish: %w", err)
		}
		f.ops.Add(3) // set, append, dequeue
		if res.Next == nil {
			finished = true
			f.ops.Add(1) // release
			return out, nil
		}
		f.ops.Add(1) // the next message's thread state read
		msg = Message{}
		if err := json.Unmarshal(res.Next.Message, &msg); err != nil {
			return out, fmt.Errorf("queued message: %w", err)
		}
		out.Drained++
	}
}
