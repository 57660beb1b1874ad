package upstash_test

import (
	"bytes"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chatstate/upstash"
	"github.com/chatstate/upstash/upstashtest"
)

// Tests of AdmitRequest.OperationID and FinishRequest.OperationID: a call
// whose every attempt failed (ErrOutcomeUnknown) sent again with the same
// id gets the recorded outcome if the first was applied, or applies now if
// it was not; nothing is applied twice.

// opidRetry gives each call three attempts (net/http may resend one whose
// reply was dropped on top of them).
var opidRetry = upstash.RetryPolicy{MaxRetries: 2, MinBackoff: time.Millisecond, MaxBackoff: 2 * time.Millisecond}

// newOpidEnv is a State on a server of its own with both fused scripts
// loaded, so that a fault hits the call itself and not a script load.
func newOpidEnv(t *testing.T) stateEnv {
	t.Helper()
	srv := upstashtest.NewServer(t)
	c := clientOf(t, srv.URL, srv.Token, upstash.WithRetry(opidRetry))
	s := upstash.NewState(c)
	w := admit(t, s, upstash.AdmitRequest{ThreadID: "warm", LockTTL: time.Minute})
	finish(t, s, upstash.FinishRequest{Lock: w.Lock, LockTTL: time.Minute})
	must(t, srv.FlushAll())
	return stateEnv{srv: srv, client: c, state: s}
}

func newOpID(t *testing.T) string {
	t.Helper()
	id, err := upstash.NewOperationID()
	must(t, err)
	if len(id) != 32 || strings.Trim(id, "0123456789abcdef") != "" {
		t.Fatalf("NewOperationID() = %q, want 32 hex digits", id)
	}
	return id
}

// wantResendable checks an error of a call in doubt: ErrOutcomeUnknown,
// saying to resend with the operation id.
func wantResendable(t *testing.T, err error, id string) {
	t.Helper()
	if !errors.Is(err, upstash.ErrOutcomeUnknown) {
		t.Fatalf("error %v, want ErrOutcomeUnknown", err)
	}
	if !strings.Contains(err.Error(), "OperationID \""+id+"\"") {
		t.Errorf("error %q does not name the operation id %s to resend with", err, id)
	}
}

// opidAdmitReq is holderReq with a history append and the operation id.
func opidAdmitReq(t *testing.T, msg, id string) upstash.AdmitRequest {
	req := holderReq(t, msg)
	req.Append = []upstash.ListAppend{{Key: "msg-history:t", Value: msg}}
	req.OperationID = id
	return req
}

// lostAdmit runs req with every attempt's reply lost (drop: the script
// ran each time) or every attempt refused with a 503 (it never ran), and
// checks the error and the result's operation id.
func lostAdmit(t *testing.T, env stateEnv, req upstash.AdmitRequest, drop bool) upstash.AdmitResult {
	t.Helper()
	env.srv.ResetStats()
	if drop {
		env.srv.DropResponseNext(100)
	} else {
		env.srv.FailNext(100, 503)
	}
	res, err := env.state.Admit(ctxT(t), req)
	env.srv.ClearFaults()
	if st := env.srv.Stats(); st.TotalRequests < 3 || faultCount(st) != st.TotalRequests {
		t.Fatalf("%d requests with %d faults, want every attempt failed: %v", st.TotalRequests, faultCount(st), err)
	}
	wantResendable(t, err, res.OperationID)
	if req.OperationID != "" && res.OperationID != req.OperationID {
		t.Fatalf("result's OperationID %q, want the request's %q", res.OperationID, req.OperationID)
	}
	return res
}

func TestAdmitResendSameOperationID(t *testing.T) {
	t.Run("lock", func(t *testing.T) {
		env := newOpidEnv(t)
		c, s := env.client, env.state
		id := newOpID(t)
		req := opidAdmitReq(t, "m1", id)
		lost := lostAdmit(t, env, req, true)
		if lost.InDoubtLock == nil {
			t.Fatal("no InDoubtLock")
		}
		held := rawString(t, c, "GET", "chat-sdk:lock:t")
		fence := rawInt(t, c, "GET", "chat-sdk:fence:t")
		// Time passes on the lock before the resend.
		mustDo(t, c, "PEXPIRE", "chat-sdk:lock:t", 5000)
		env.srv.ResetStats()
		res := admit(t, s, req)
		if st := env.srv.Stats(); st.TotalRequests != 1 {
			t.Errorf("resend took %d requests, want 1", st.TotalRequests)
		}
		// Without the record the dedupe key would make it a duplicate.
		if res.Duplicate || res.Busy || res.Lock == nil || res.OperationID != id {
			t.Fatalf("resend = %+v, want the recorded lock", res)
		}
		if res.Lock.Token != held || res.Lock.Token != lost.InDoubtLock.Token || res.Lock.Fence != fence {
			t.Errorf("resend's lock %q fence %d, the lock held is %q fence %d (in doubt %q)", res.Lock.Token, res.Lock.Fence, held, fence, lost.InDoubtLock.Token)
		}
		if left := pttl(t, c, "chat-sdk:lock:t"); res.Lock.ExpiresAt.After(time.Now().Add(left).Add(time.Millisecond + scriptTTLEarly)) {
			t.Errorf("resend's ExpiresAt %v is after the server's expiry (%v left)", res.Lock.ExpiresAt, left)
		}
		if got := rawStrings(t, c, "LRANGE", "chat-sdk:list:msg-history:t", 0, -1); len(got) != 1 {
			t.Errorf("history %q, want the message appended once", got)
		}
		if len(res.Values) != 1 {
			// Values is read again on the resend: one (missing) key.
			t.Errorf("resend read %d values, want 1", len(res.Values))
		}
		if got := queueItems(t, c, "t"); len(got) != 0 {
			t.Errorf("queue %q, want nothing queued", got)
		}
		// The lock returned is the one held: Finish releases it.
		fr := finish(t, s, upstash.FinishRequest{Lock: res.Lock, LockTTL: time.Minute})
		if fr.Next != nil || exists(t, c, "chat-sdk:lock:t") {
			t.Errorf("Finish = %+v; the lock must be released", fr)
		}
		// A repeat after the lock was released: the recorded outcome, and
		// a lock that has lapsed (ExpiresAt not in the future).
		res = admit(t, s, req)
		if res.Lock == nil || res.Lock.Token != held || res.Lock.ExpiresAt.After(time.Now()) {
			t.Errorf("repeat after release = %+v, want the recorded lock, lapsed", res.Lock)
		}
		if exists(t, c, "chat-sdk:lock:t") {
			t.Error("a repeat took the lock again")
		}
		// A different id is a new operation: the dedupe key is there.
		req.OperationID = newOpID(t)
		if res := admit(t, s, req); !res.Duplicate {
			t.Errorf("new id = %+v, want a duplicate", res)
		}
	})
	t.Run("taken over", func(t *testing.T) {
		env := newOpidEnv(t)
		c, s := env.client, env.state
		other := mustAcquire(t, s, "t", time.Minute)
		req := opidAdmitReq(t, "m1", newOpID(t))
		req.TakeOver = true
		lostAdmit(t, env, req, true)
		held := rawString(t, c, "GET", "chat-sdk:lock:t")
		res := admit(t, s, req)
		if res.Lock == nil || !res.TookOver || res.Lock.Token != held || held == other.Token {
			t.Errorf("resend = %+v, want the take-over recorded with the lock held %q", res, held)
		}
	})
	t.Run("queued", func(t *testing.T) {
		env := newOpidEnv(t)
		c, s := env.client, env.state
		other := mustAcquire(t, s, "t", time.Minute)
		req := opidAdmitReq(t, "m1", newOpID(t))
		lost := lostAdmit(t, env, req, true)
		if lost.InDoubtLock == nil {
			t.Error("no InDoubtLock")
		}
		res := admit(t, s, req)
		if !res.Busy || !res.Queued || res.Lock != nil || res.QueueDepth != 1 {
			t.Errorf("resend = %+v, want busy and queued once", res)
		}
		if got := queueItems(t, c, "t"); len(got) != 1 {
			t.Errorf("queue %q, want the entry queued once", got)
		}
		if got := rawString(t, c, "GET", "chat-sdk:lock:t"); got != other.Token {
			t.Errorf("lock holds %q, want the other holder's", got)
		}
		if got := rawStrings(t, c, "LRANGE", "chat-sdk:list:msg-history:t", 0, -1); len(got) != 1 {
			t.Errorf("history %q, want the message appended once", got)
		}
	})
	t.Run("duplicate", func(t *testing.T) {
		env := newOpidEnv(t)
		c, s := env.client, env.state
		admit(t, s, opidAdmitReq(t, "m1", ""))
		must(t, s.ForceReleaseLock(ctxT(t), "t"))
		req := opidAdmitReq(t, "m1", newOpID(t))
		lostAdmit(t, env, req, true)
		if res := admit(t, s, req); !res.Duplicate || res.Lock != nil {
			t.Errorf("resend = %+v, want the recorded duplicate", res)
		}
		if exists(t, c, "chat-sdk:lock:t") {
			t.Error("a duplicate took the lock")
		}
	})
	t.Run("never ran", func(t *testing.T) {
		env := newOpidEnv(t)
		c, s := env.client, env.state
		// An id Admit made: the result carries it.
		req := opidAdmitReq(t, "m1", "")
		lost := lostAdmit(t, env, req, false)
		if exists(t, c, "chat-sdk:lock:t") || exists(t, c, "chat-sdk:list:msg-history:t") {
			t.Fatal("a refused Admit applied something")
		}
		req.OperationID = lost.OperationID
		res := admit(t, s, req)
		if res.Lock == nil || res.Lock.Token != rawString(t, c, "GET", "chat-sdk:lock:t") {
			t.Errorf("resend = %+v, want the lock taken now", res)
		}
		if got := rawStrings(t, c, "LRANGE", "chat-sdk:list:msg-history:t", 0, -1); len(got) != 1 {
			t.Errorf("history %q, want the message appended once", got)
		}
		if res.Lock.ExpiresAt.After(time.Now().Add(req.LockTTL)) || !res.Lock.ExpiresAt.After(time.Now()) {
			t.Errorf("ExpiresAt %v, want within LockTTL from now", res.Lock.ExpiresAt)
		}
	})
}

// lostFinish runs req with every attempt's reply lost.
func lostFinish(t *testing.T, env stateEnv, req upstash.FinishRequest) {
	t.Helper()
	env.srv.ResetStats()
	env.srv.DropResponseNext(100)
	res, err := env.state.Finish(ctxT(t), req)
	env.srv.ClearFaults()
	if st := env.srv.Stats(); st.TotalRequests < 3 || faultCount(st) != st.TotalRequests {
		t.Fatalf("%d requests with %d faults, want every attempt failed: %v", st.TotalRequests, faultCount(st), err)
	}
	wantResendable(t, err, req.OperationID)
	if res.OperationID != req.OperationID || res.Next != nil {
		t.Fatalf("result %+v, want only the operation id", res)
	}
}

func TestFinishResendSameOperationID(t *testing.T) {
	for _, take := range []int{1, 3} {
		t.Run("take "+itoa(int64(take)), func(t *testing.T) {
			env := newOpidEnv(t)
			c, s := env.client, env.state
			lock := mustAcquire(t, s, "t", time.Minute)
			for _, m := range []string{"m1", "m2", "m3", "m4"} {
				mustDo(t, c, "RPUSH", "chat-sdk:queue:t", entryJSON(m, farFuture))
			}
			req := upstash.FinishRequest{Lock: lock, LockTTL: time.Minute, Take: take, OperationID: newOpID(t),
				Append: []upstash.ListAppend{{Key: "msg-history:t", Value: "reply"}}}
			lostFinish(t, env, req)
			mustDo(t, c, "PEXPIRE", "chat-sdk:lock:t", 5000)
			env.srv.ResetStats()
			res := finish(t, s, req)
			if st := env.srv.Stats(); st.TotalRequests != 1 {
				t.Errorf("resend took %d requests, want 1", st.TotalRequests)
			}
			got := []string{}
			if res.Next != nil {
				got = append(got, string(res.Next.Message))
				for _, e := range res.More {
					got = append(got, string(e.Message))
				}
			}
			want := []string{`"m1"`, `"m2"`, `"m3"`}[:take]
			if strings.Join(got, ",") != strings.Join(want, ",") || res.OperationID != req.OperationID {
				t.Fatalf("resend popped %v (%+v), want %v", got, res, want)
			}
			if q := queueItems(t, c, "t"); len(q) != 4-take {
				t.Errorf("queue holds %d entries, want %d: nothing popped twice", len(q), 4-take)
			}
			if h := rawStrings(t, c, "LRANGE", "chat-sdk:list:msg-history:t", 0, -1); len(h) != 1 {
				t.Errorf("history %q, want the append once", h)
			}
			if left := pttl(t, c, "chat-sdk:lock:t"); lock.ExpiresAt.After(time.Now().Add(left).Add(time.Millisecond + scriptTTLEarly)) {
				t.Errorf("resend's ExpiresAt %v is after the server's expiry (%v left)", lock.ExpiresAt, left)
			}
			// A different id is a new operation: the next entry.
			res = finish(t, s, upstash.FinishRequest{Lock: lock, LockTTL: time.Minute, OperationID: newOpID(t)})
			if res.Next == nil || string(res.Next.Message) != `"m`+itoa(int64(take+1))+`"` {
				t.Errorf("new id = %+v, want the next entry", res.Next)
			}
		})
	}
	t.Run("release", func(t *testing.T) {
		env := newOpidEnv(t)
		c, s := env.client, env.state
		lock := mustAcquire(t, s, "t", time.Minute)
		req := upstash.FinishRequest{Lock: lock, LockTTL: time.Minute, OperationID: newOpID(t)}
		lostFinish(t, env, req)
		if exists(t, c, "chat-sdk:lock:t") {
			t.Fatal("the lost Finish did not release the lock")
		}
		// Another holder takes the lock before the resend: the resend
		// returns the recorded release and leaves that lock alone.
		other := mustAcquire(t, s, "t", time.Minute)
		mustDo(t, c, "RPUSH", "chat-sdk:queue:t", entryJSON("m1", farFuture))
		res := finish(t, s, req)
		if res.Next != nil {
			t.Errorf("resend = %+v, want the recorded release", res)
		}
		if got := rawString(t, c, "GET", "chat-sdk:lock:t"); got != other.Token {
			t.Errorf("lock holds %q, want the other holder's", got)
		}
		if q := queueItems(t, c, "t"); len(q) != 1 {
			t.Errorf("queue %q, want the other holder's entry left", q)
		}
	})
	t.Run("follow-up ran", func(t *testing.T) {
		// Every entry popped first is one Go cannot decode: the follow-up
		// (its id derived from the operation's) moves it and pops again.
		// Its reply is lost: the resend repeats both requests, applying
		// nothing again.
		srv := upstashtest.NewServer(t)
		id := newOpID(t)
		// Every attempt of the follow-up loses its reply.
		followUp := []byte(`chat-sdk:op:` + id + `.1"`)
		var dropping atomic.Bool
		front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			body, _ := io.ReadAll(r.Body)
			if dropping.Load() && bytes.Contains(body, followUp) {
				srv.DropResponseNext(1)
			}
			r.Body = io.NopCloser(bytes.NewReader(body))
			srv.Handler().ServeHTTP(w, r)
		}))
		t.Cleanup(front.Close)
		c := clientOf(t, front.URL, srv.Token, upstash.WithRetry(opidRetry))
		s := upstash.NewState(c)
		lock := mustAcquire(t, s, "t", time.Minute)
		mustDo(t, c, "RPUSH", "chat-sdk:queue:t", `{"message":,"expiresAt":`+itoa(farFuture)+`}`, entryJSON("m1", farFuture), entryJSON("m2", farFuture))
		req := upstash.FinishRequest{Lock: lock, LockTTL: time.Minute, OperationID: id}
		srv.ResetStats()
		dropping.Store(true)
		_, err := s.Finish(ctxT(t), req)
		dropping.Store(false)
		srv.ClearFaults()
		if st := srv.Stats(); st.Faults[upstashtest.FaultDrop] < 3 {
			t.Fatalf("%+v: want every attempt of the follow-up dropped", st)
		}
		wantResendable(t, err, req.OperationID)
		res := finish(t, s, req)
		if res.Next == nil || string(res.Next.Message) != `"m1"` || res.DeadLettered != 1 {
			t.Fatalf("resend = %+v, want m1 with one entry dead-lettered", res)
		}
		if n := rawInt(t, c, "LLEN", "chat-sdk:queue-corrupt:t"); n != 1 {
			t.Errorf("dead-letter list holds %d entries, want 1", n)
		}
		if q := queueItems(t, c, "t"); len(q) != 1 {
			t.Errorf("queue %q, want m2 left", q)
		}
	})
}

func TestOperationIDInvalid(t *testing.T) {
	env := newOpidEnv(t)
	s := env.state
	lock := &upstash.Lock{ThreadID: "t", Token: "go_x", ExpiresAt: time.Now().Add(time.Minute)}
	for _, id := range []string{"short", strings.Repeat("a", 65), "0123456789abcdef:", "0123456789abcdef.1", "0123456789abcdéf", "0123456789 abcdef"} {
		env.srv.ResetStats()
		_, err := s.Admit(ctxT(t), upstash.AdmitRequest{ThreadID: "t", LockTTL: time.Minute, OperationID: id})
		wantErrIs(t, err, upstash.ErrInvalidArgument)
		_, err = s.Finish(ctxT(t), upstash.FinishRequest{Lock: lock, LockTTL: time.Minute, OperationID: id})
		wantErrIs(t, err, upstash.ErrInvalidArgument)
		if n := env.srv.Stats().TotalRequests; n != 0 {
			t.Errorf("id %q: %d requests, want none", id, n)
		}
	}
	for _, id := range []string{strings.Repeat("a", 16), strings.Repeat("Z", 64), "msg-123_ABC-def-xyz"} {
		if _, err := s.Admit(ctxT(t), upstash.AdmitRequest{ThreadID: "ok", LockTTL: time.Minute, OperationID: id}); err != nil {
			t.Errorf("id %q refused: %v", id, err)
		}
	}
}
