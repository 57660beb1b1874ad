package upstash_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/chatstate/upstash"
)

// Tests of FinishRequest.Release: a holder out of time releases the lock
// and leaves the queue for the next holder, with its writes applied.

func TestFinishReleaseLeavesQueue(t *testing.T) {
	env := newStateEnv(t)
	c, s := env.client, env.state
	warmFinish(t, s)
	// A live entry, an expired one and one the script cannot read: a
	// release pops, discards and moves none of them.
	queued := []string{entryJSON("a", farFuture), entryJSON("old", 1), `{"message":1}`, entryJSON("b", farFuture)}
	mustDo(t, c, append([]any{"RPUSH", "chat-sdk:queue:t"}, toAny(queued)...)...)
	lock := mustAcquire(t, s, "t", time.Minute)
	id, err := upstash.NewOperationID()
	must(t, err)
	req := upstash.FinishRequest{
		Lock:        lock,
		Release:     true,
		Set:         []upstash.CacheWrite{{Key: "thread-state:t", Value: "done"}},
		Append:      []upstash.ListAppend{{Key: "msg-history:t", Value: "reply"}},
		OperationID: id,
	}
	env.srv.ResetStats()
	res := finish(t, s, req)
	if n := env.srv.Stats().TotalRequests; n != 1 {
		t.Errorf("a release took %d requests, want 1", n)
	}
	if res.Next != nil || res.More != nil || res.Expired != 0 || res.DeadLettered != 0 || res.OperationID != id {
		t.Errorf("Finish with Release = %+v, want nothing popped", res)
	}
	if exists(t, c, "chat-sdk:lock:t") {
		t.Error("the lock was not released")
	}
	if got := queueItems(t, c, "t"); strings.Join(got, "\n") != strings.Join(queued, "\n") {
		t.Errorf("queue = %q, want it untouched: %q", got, queued)
	}
	if exists(t, c, "chat-sdk:queue-corrupt:t") {
		t.Error("a release moved an entry to the dead-letter list")
	}
	if got := rawString(t, c, "GET", "chat-sdk:cache:thread-state:t"); got != `"done"` {
		t.Errorf("thread state = %s, want the write applied", got)
	}
	if got := rawStrings(t, c, "LRANGE", "chat-sdk:list:msg-history:t", 0, -1); len(got) != 1 || got[0] != `"reply"` {
		t.Errorf("history = %q, want the append applied", got)
	}

	// The same operation again, after the state moved on (another holder
	// took the lock and wrote): the recorded release, nothing applied
	// twice, the other holder's lock and writes left alone.
	other := mustAcquire(t, s, "t", time.Minute)
	mustDo(t, c, "SET", "chat-sdk:cache:thread-state:t", `"other"`)
	again := finish(t, s, req)
	if again.Next != nil || again.More != nil || again.Expired != 0 || again.DeadLettered != 0 || again.OperationID != id {
		t.Errorf("repeat = %+v, want the recorded release", again)
	}
	if got := rawString(t, c, "GET", "chat-sdk:lock:t"); got != other.Token {
		t.Error("the repeat touched another holder's lock")
	}
	if got := rawString(t, c, "GET", "chat-sdk:cache:thread-state:t"); got != `"other"` {
		t.Errorf("thread state = %s after the repeat, want it not written again", got)
	}
	if got := rawStrings(t, c, "LRANGE", "chat-sdk:list:msg-history:t", 0, -1); len(got) != 1 {
		t.Errorf("history = %q after the repeat, want one append", got)
	}
	if got := queueItems(t, c, "t"); len(got) != len(queued) {
		t.Errorf("queue = %q after the repeat, want it untouched", got)
	}

	// The next holder gets the entries, in their order.
	next := finish(t, s, upstash.FinishRequest{Lock: other, LockTTL: time.Minute, Take: 10})
	if got := handedOver(next); strings.Join(got, " ") != `"a" "b"` || next.Expired != 1 || next.DeadLettered != 1 {
		t.Errorf("next holder's Finish handed over %q (expired %d, dead %d), want \"a\" \"b\" (1, 1)", got, next.Expired, next.DeadLettered)
	}
}

func TestFinishReleaseLockLost(t *testing.T) {
	env := newStateEnv(t)
	c, s := env.client, env.state
	mustDo(t, c, "RPUSH", "chat-sdk:queue:t", entryJSON("waiting", farFuture))
	lock := mustAcquire(t, s, "t", time.Minute)
	must(t, s.ForceReleaseLock(ctxT(t), "t"))
	other := mustAcquire(t, s, "t", time.Minute)
	_, err := s.Finish(ctxT(t), upstash.FinishRequest{
		Lock: lock, Release: true,
		Set:    []upstash.CacheWrite{{Key: "state", Value: "stale"}},
		Append: []upstash.ListAppend{{Key: "h", Value: "stale"}},
	})
	if !errors.Is(err, upstash.ErrLockNotHeld) {
		t.Errorf("Finish with Release of a lost lock = %v, want ErrLockNotHeld", err)
	}
	if exists(t, c, "chat-sdk:cache:state") || exists(t, c, "chat-sdk:list:h") {
		t.Error("Finish with Release wrote under a lock it does not hold")
	}
	if got := rawString(t, c, "GET", "chat-sdk:lock:t"); got != other.Token {
		t.Error("Finish with Release touched another holder's lock")
	}
	if items := queueItems(t, c, "t"); len(items) != 1 {
		t.Errorf("queue = %q, want the entry untouched", items)
	}
}

func TestFinishReleaseArguments(t *testing.T) {
	env := newStateEnv(t)
	c, s := env.client, env.state
	l := mustAcquire(t, s, "t", time.Minute)
	env.srv.ResetStats()
	_, err := s.Finish(ctxT(t), upstash.FinishRequest{Lock: l, LockTTL: time.Minute, Release: true, Take: 2})
	if !errors.Is(err, upstash.ErrInvalidArgument) || !strings.HasPrefix(err.Error(), "upstash: Finish: ") {
		t.Errorf("Release with Take 2 = %v, want ErrInvalidArgument named after Finish", err)
	}
	if n := env.srv.Stats().TotalRequests; n != 0 {
		t.Errorf("%d requests sent for invalid arguments, want 0", n)
	}
	// Take 1 and no LockTTL are fine with Release.
	mustDo(t, c, "RPUSH", "chat-sdk:queue:t", entryJSON("a", farFuture))
	if res := finish(t, s, upstash.FinishRequest{Lock: l, Release: true, Take: 1}); res.Next != nil {
		t.Errorf("Release with Take 1 = %+v, want nothing popped", res)
	}
	if exists(t, c, "chat-sdk:lock:t") || len(queueItems(t, c, "t")) != 1 {
		t.Error("Release with Take 1: want the lock released and the entry queued")
	}
}
