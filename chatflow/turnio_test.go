package chatflow

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chatstate/upstash"
)

// turnScript is a handler running a function per message id (the turn's
// latest), each turn gated: started is closed when the turn begins, and
// the turn waits for open.
type turnScript struct {
	mu    sync.Mutex
	steps map[string]func(ctx context.Context, t *Turn) error
	gates map[string]chan struct{}
	start map[string]chan struct{}
	turns []string
}

func newTurnScript() *turnScript {
	return &turnScript{steps: map[string]func(context.Context, *Turn) error{}, gates: map[string]chan struct{}{}, start: map[string]chan struct{}{}}
}

// gate makes id's turn wait for open once it started.
func (s *turnScript) gate(id string) (started <-chan struct{}, open func()) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.gates[id], s.start[id] = make(chan struct{}), make(chan struct{})
	return s.start[id], func() { close(s.gates[id]) }
}

func (s *turnScript) handle(ctx context.Context, t *Turn) error {
	s.mu.Lock()
	id := t.Message.ID
	s.turns = append(s.turns, id)
	step, g, st := s.steps[id], s.gates[id], s.start[id]
	s.mu.Unlock()
	if st != nil {
		close(st)
		select {
		case <-g:
		case <-time.After(waitLimit):
			return errors.New("gate never opened")
		}
	}
	if step != nil {
		return step(ctx, t)
	}
	return nil
}

// scriptFlow builds a Flow over e's adapter running s.
func scriptFlow(t *testing.T, e *env, s *turnScript, opts ...Option) *Flow {
	t.Helper()
	all := append([]Option{withClock(e.clock), WithLogger(slog.New(e.logs))}, opts...)
	f, err := New(e.adapter(), s.handle, all...)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// botTurn is the examples' bot in miniature: it reads the subscription
// and the state, then merges the message into the state.
func botTurn(ctx context.Context, t *Turn) error {
	if _, err := t.Thread.IsSubscribed(ctx); err != nil {
		return err
	}
	if _, err := t.Thread.State(ctx); err != nil {
		return err
	}
	return t.Thread.SetState(ctx, map[string]string{"last": t.Message.ID})
}

// TestRequestsPerWebhookReadWrite counts the requests of a webhook whose
// handler reads the subscription and the state and writes the state: on
// the fused path with WithDeferredWrites 2 per handled webhook (Admit,
// Finish), 1 per queued or duplicate one, and a drain of N queued
// messages 2 (a Finish handing the batch over with the holder's write,
// one releasing with the batch's); without the option each write is one
// request more; the plain path is logged for comparison.
func TestRequestsPerWebhookReadWrite(t *testing.T) {
	type counts struct{ handled, queued, duplicate, drain int64 }
	cases := []struct {
		name  string
		fused bool
		opts  []Option
		want  *counts
	}{
		{"fused/deferred", true, []Option{WithDeferredWrites()}, &counts{2, 1, 1, 2}},
		{"fused", true, nil, &counts{3, 1, 1, 4}},
		{"plain/deferred", false, []Option{WithDeferredWrites()}, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			e.fused = tc.fused
			s := newTurnScript()
			f := scriptFlow(t, e, s, append([]Option{WithStrategy(Queue)}, tc.opts...)...)
			for _, id := range []string{"warm", "a", "b", "q0", "q1", "q2", "h"} {
				s.steps[id] = botTurn
			}
			requests := func() int64 { return e.srv.Stats().TotalRequests }
			step := func(m *Message, want Status) int64 {
				t.Helper()
				before := requests()
				res, err := f.Handle(bg(t), "slack", m)
				if err != nil || res.Status != want {
					t.Fatalf("%s: %+v, %v; want %s", m.ID, res, err, want)
				}
				return requests() - before
			}
			step(msg("warm", "slack:C0:1.0"), StatusHandled) // scripts loaded
			var got counts
			got.handled = step(msg("a", th), StatusHandled)
			got.duplicate = step(msg("a", th), StatusDuplicate)

			started, open := s.gate("h")
			_, waitH := handleAsync(bg(t), f, msg("h", th))
			waitClosed(t, started, "h's turn")
			got.queued = step(msg("q0", th), StatusQueued)
			step(msg("q1", th), StatusQueued)
			step(msg("q2", th), StatusQueued)
			before := requests()
			open()
			res, err := waitH()
			if err != nil || len(res.Delivered) != 4 || res.Turns != 2 {
				t.Fatalf("holder: %+v, %v", res, err)
			}
			got.drain = requests() - before
			t.Logf("%s: handled %d, queued %d, duplicate %d, drain of 3 after the holder's turn %d", tc.name, got.handled, got.queued, got.duplicate, got.drain)
			if tc.want != nil && got != *tc.want {
				t.Errorf("%+v, want %+v", got, *tc.want)
			}
			raw, err := e.state.Get(bg(t), ThreadStateKey(th))
			if err != nil || string(raw) != `{"last":"q2"}` {
				t.Errorf("state %s, %v; want the batch's latest", raw, err)
			}
			e.assertClean()
		})
	}
}

// TestTurnReadsFromAdmit checks the prefetch's freshness rules: the
// admission's read answers IsSubscribed and State without a request; the
// turn's own writes through the helpers are seen by its next read and by
// the next turn of the same lock hold; another thread of a channel-scoped
// hold reads live, and a new hold reads afresh.
func TestTurnReadsFromAdmit(t *testing.T) {
	for _, deferred := range []bool{false, true} {
		t.Run(fmt.Sprintf("deferred=%v", deferred), func(t *testing.T) {
			e := newEnv(t)
			e.fused = true
			ctx := bg(t)
			s := newTurnScript()
			opts := []Option{WithStrategy(Queue), WithLockScope(ScopeChannel)}
			if deferred {
				opts = append(opts, WithDeferredWrites())
			}
			f := scriptFlow(t, e, s, opts...)
			other := "slack:C1:1700000000.000200" // same channel as th
			requests := func() int64 { return e.srv.Stats().TotalRequests }
			type seen struct {
				sub      bool
				state    string
				requests int64
			}
			var mu sync.Mutex
			obs := map[string][]seen{}
			look := func(ctx context.Context, t *Turn, id string) error {
				before := requests()
				sub, err := t.Thread.IsSubscribed(ctx)
				if err != nil {
					return err
				}
				st, err := t.Thread.State(ctx)
				if err != nil {
					return err
				}
				mu.Lock()
				obs[id] = append(obs[id], seen{sub, string(st), requests() - before})
				mu.Unlock()
				return nil
			}
			s.steps["a"] = func(ctx context.Context, t *Turn) error {
				if err := look(ctx, t, "a"); err != nil {
					return err
				}
				if err := t.Thread.Subscribe(ctx); err != nil {
					return err
				}
				if err := t.Thread.SetState(ctx, map[string]int{"n": 1}); err != nil {
					return err
				}
				return look(ctx, t, "a")
			}
			s.steps["b"] = func(ctx context.Context, t *Turn) error { return look(ctx, t, "b") }
			s.steps["d"] = func(ctx context.Context, t *Turn) error { return look(ctx, t, "d") }
			s.steps["z"] = func(ctx context.Context, t *Turn) error { return look(ctx, t, "z") }

			warmFused(t, e)
			started, open := s.gate("a")
			_, waitA := handleAsync(ctx, f, msg("a", th))
			waitClosed(t, started, "a's turn")
			mustHandle(t, f, msg("b", th), StatusQueued)
			mustHandle(t, f, msg("d", other), StatusQueued)
			// Written by someone else while a holds the channel's lock (a
			// test's liberty): the other thread reads it live.
			if err := e.state.Set(ctx, ThreadStateKey(other), map[string]int{"o": 1}, time.Minute); err != nil {
				t.Fatal(err)
			}
			open()
			if res, err := waitA(); err != nil || len(res.Delivered) != 3 {
				t.Fatalf("holder: %+v, %v", res, err)
			}
			// A new hold reads afresh: written between holds.
			if err := e.state.Set(ctx, ThreadStateKey(th), map[string]int{"n": 2}, time.Minute); err != nil {
				t.Fatal(err)
			}
			mustHandle(t, f, msg("z", th), StatusHandled)

			want := map[string][]seen{
				"a": {{false, "", 0}, {true, `{"n":1}`, 0}}, // the admission's read, then its own writes
				"b": {{true, `{"n":1}`, 0}},                 // same thread, same hold
				"d": {{false, `{"o":1}`, 2}},                // another thread: live
				"z": {{true, `{"n":2}`, 0}},                 // a new hold: its own admission's read
			}
			mu.Lock()
			defer mu.Unlock()
			for id, w := range want {
				if fmt.Sprint(obs[id]) != fmt.Sprint(w) {
					t.Errorf("%s saw %+v, want %+v", id, obs[id], w)
				}
			}
			e.assertClean()
		})
	}
}

// TestDeferredWrites: with WithDeferredWrites the turn's writes are not in
// the database during the turn but are seen by the turn's own reads, and
// land with Finish; input errors come at once; without a lock
// (Concurrent) or on the 18 operations, writes go out at once.
func TestDeferredWrites(t *testing.T) {
	for _, tc := range []struct {
		name     string
		fused    bool
		strategy Strategy
		deferred bool // expected
	}{
		{"fused/queue", true, Queue, true},
		{"fused/drop", true, Drop, true},
		{"fused/concurrent", true, Concurrent, false},
		{"plain/queue", false, Queue, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			e.fused = tc.fused
			ctx := bg(t)
			s := newTurnScript()
			f := scriptFlow(t, e, s, WithStrategy(tc.strategy), WithDeferredWrites(), WithHistory(HistoryOptions{}))
			var during json.RawMessage
			var history []*Message
			var inputErrs []error
			s.steps["a"] = func(ctx context.Context, turn *Turn) error {
				inputErrs = append(inputErrs,
					turn.Thread.SetState(ctx, 42),
					turn.Thread.ReplaceState(ctx, make(chan int)),
					turn.Thread.AppendHistory(ctx, nil))
				if err := turn.Thread.SetState(ctx, map[string]int{"x": 1}); err != nil {
					return err
				}
				if err := turn.Thread.SetState(ctx, map[string]int{"y": 2}); err != nil {
					return err
				}
				if err := turn.Thread.AppendHistory(ctx, msg("reply", th)); err != nil {
					return err
				}
				var err error
				if during, err = e.state.Get(ctx, ThreadStateKey(th)); err != nil {
					return err
				}
				if history, err = turn.Thread.History(ctx, 0); err != nil {
					return err
				}
				st, err := turn.Thread.State(ctx)
				if err != nil || string(st) != `{"x":1,"y":2}` {
					return fmt.Errorf("own read: %s, %v", st, err)
				}
				return nil
			}
			res, err := f.Handle(ctx, "slack", msg("a", th))
			if err != nil || res.Status != StatusHandled || len(res.Errors) != 0 {
				t.Fatalf("%+v, %v", res, err)
			}
			for i, err := range inputErrs {
				if !errors.Is(err, upstash.ErrInvalidArgument) {
					t.Errorf("input error %d: %v, want ErrInvalidArgument", i, err)
				}
			}
			if got := during != nil; got == tc.deferred {
				t.Errorf("state in the database during the turn: %s (deferred: %v)", during, tc.deferred)
			}
			var ids []string
			for _, m := range history {
				ids = append(ids, m.ID)
			}
			if strings.Join(ids, ",") != "a,reply" {
				t.Errorf("history seen in the turn: %v, want a, reply", ids)
			}
			raw, err := e.state.Get(ctx, ThreadStateKey(th))
			if err != nil || string(raw) != `{"x":1,"y":2}` {
				t.Errorf("state after the turn: %s, %v", raw, err)
			}
			items, err := e.state.GetList(ctx, HistoryKey(th))
			if err != nil || len(items) != 2 || !strings.Contains(string(items[1]), `"reply"`) {
				t.Errorf("history after the turn: %d items, %v", len(items), err)
			}
			e.assertClean()
		})
	}
}

// A turn's deferred writes are fenced: the lock is lost before Finish (it
// is force-released during the turn), so they are not applied, and the
// call reports them in Result.Errors (ErrWritesNotApplied) and at Error
// level.
func TestDeferredWritesFenced(t *testing.T) {
	e := newEnv(t)
	e.fused = true
	ctx := bg(t)
	s := newTurnScript()
	f := scriptFlow(t, e, s, WithStrategy(Queue), WithDeferredWrites(), WithHistory(HistoryOptions{}))
	s.steps["a"] = func(ctx context.Context, turn *Turn) error {
		if err := turn.Thread.SetState(ctx, map[string]int{"x": 1}); err != nil {
			return err
		}
		if err := turn.Thread.AppendHistory(ctx, msg("reply", th)); err != nil {
			return err
		}
		return e.state.ForceReleaseLock(ctx, th) // the lock is lost
	}
	res, err := f.Handle(ctx, "slack", msg("a", th))
	if err != nil || res.Status != StatusHandled {
		t.Fatalf("%+v, %v", res, err)
	}
	if len(res.Errors) != 1 || !errors.Is(res.Errors[0], ErrWritesNotApplied) || !errors.Is(res.Errors[0], upstash.ErrLockNotHeld) {
		t.Fatalf("Result.Errors %v, want one ErrWritesNotApplied", res.Errors)
	}
	if raw, err := e.state.Get(ctx, ThreadStateKey(th)); err != nil || raw != nil {
		t.Errorf("state %s, %v: written after the lock was lost", raw, err)
	}
	if items, err := e.state.GetList(ctx, HistoryKey(th)); err != nil || len(items) != 1 {
		t.Errorf("history: %d items, %v; want the incoming message only", len(items), err)
	}
	if n := e.logs.containing("deferred writes not applied"); n != 1 {
		t.Errorf("%d Error lines for the writes; log:\n%s", n, e.logs.dump())
	}
	e.assertClean()
}

// A Thread kept past its turn (a handler's goroutine still writing) writes
// at once once its hold has ended: nothing waits for a Finish that will
// not come.
func TestDeferredWritesAfterTheHold(t *testing.T) {
	e := newEnv(t)
	e.fused = true
	ctx := bg(t)
	s := newTurnScript()
	f := scriptFlow(t, e, s, WithStrategy(Queue), WithDeferredWrites())
	var kept Thread
	s.steps["a"] = func(ctx context.Context, turn *Turn) error {
		kept = turn.Thread
		return nil
	}
	if res, err := f.Handle(ctx, "slack", msg("a", th)); err != nil || len(res.Errors) != 0 {
		t.Fatalf("%+v, %v", res, err)
	}
	if err := kept.ReplaceState(ctx, map[string]int{"late": 1}); err != nil {
		t.Fatal(err)
	}
	if raw, err := e.state.Get(ctx, ThreadStateKey(th)); err != nil || string(raw) != `{"late":1}` {
		t.Errorf("state %s, %v; want the late write, sent at once", raw, err)
	}
}
