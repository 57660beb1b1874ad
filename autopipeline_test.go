package upstash_test

// Auto-pipelining. The tests that need a batch of a known shape hold the
// client's four in-flight slots with PINGs stopped at a gateTransport,
// queue the calls (upstash.OnAutoQueue says when they are queued), and
// then let the requests go one by one: every count below is exact, and no
// test depends on timing.

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chatstate/upstash"
	"github.com/chatstate/upstash/upstashtest"
)

// inFlight is the client's cap on requests of Run calls in flight.
const inFlight = 4

// autoRig is a client whose requests pass a gate on their way to rt.
type autoRig struct {
	srv    *upstashtest.Server // nil with a transport of the test's own
	gate   *gateTransport
	c      *upstash.Client
	queued chan int
	total  int // calls queued by queue
	pings  sync.WaitGroup
	slots  []*heldRequest
}

// newAutoRig returns a rig on an upstashtest server.
func newAutoRig(t *testing.T, opts ...upstash.Option) *autoRig {
	t.Helper()
	srv := upstashtest.NewServer(t)
	tr := http.DefaultTransport.(*http.Transport).Clone()
	t.Cleanup(tr.CloseIdleConnections)
	r := newAutoRigOn(t, srv.URL, srv.Token, tr, opts...)
	r.srv = srv
	return r
}

// newAutoRigOn returns a rig whose requests go through rt.
func newAutoRigOn(t *testing.T, url, token string, rt http.RoundTripper, opts ...upstash.Option) *autoRig {
	t.Helper()
	g := newGate(rt)
	all := append([]upstash.Option{upstash.WithTransport(g), upstash.WithRetry(fastRetry)}, opts...)
	c, err := upstash.New(upstash.Config{URL: url, Token: token}, all...)
	if err != nil {
		t.Fatal(err)
	}
	r := &autoRig{gate: g, c: c, queued: make(chan int, 1<<14)}
	upstash.OnAutoQueue(c, func(n int) { r.queued <- n })
	t.Cleanup(func() { // nothing stays held if the test fails early
		g.Open()
		r.pings.Wait()
	})
	return r
}

// holdSlots starts PINGs that take every in-flight slot and stops them at
// the gate.
func (r *autoRig) holdSlots(t *testing.T) {
	t.Helper()
	for i := 0; i < inFlight; i++ {
		r.pings.Add(1)
		go func() {
			defer r.pings.Done()
			if err := r.c.Ping(context.Background()); err != nil {
				t.Errorf("PING holding a slot: %v", err)
			}
		}()
	}
	for i := 0; i < inFlight; i++ {
		h := r.gate.next(t)
		if h.Path != "/" {
			t.Fatalf("a PING holding a slot went to %q", h.Path)
		}
		r.slots = append(r.slots, h)
	}
}

// freeSlot lets one held PING go on, so that its slot frees.
func (r *autoRig) freeSlot() {
	r.slots[0].Release()
	r.slots = r.slots[1:]
}

// freeSlots lets every held PING go on and waits for them to return.
func (r *autoRig) freeSlots() {
	for len(r.slots) > 0 {
		r.freeSlot()
	}
	r.pings.Wait()
}

// waitQueued waits until n calls are queued.
func (r *autoRig) waitQueued(t *testing.T, n int) {
	t.Helper()
	for {
		if q := <-r.queued; q >= n {
			return
		}
	}
}

// outcome is what one call returned.
type outcome struct {
	v   upstash.Value
	err error
}

// goCall runs fn on a goroutine and returns the channel its outcome arrives on.
func goCall(fn func() (upstash.Value, error)) <-chan outcome {
	ch := make(chan outcome, 1)
	go func() {
		v, err := fn()
		ch <- outcome{v, err}
	}()
	return ch
}

// queue starts one call per command, each queued before the next starts
// (so they queue in order), and returns their outcome channels. ctxs, if
// not nil, gives each call its context.
func (r *autoRig) queue(t *testing.T, cmds []upstash.Command, ctxs []context.Context) []<-chan outcome {
	t.Helper()
	outs := make([]<-chan outcome, len(cmds))
	for i, cmd := range cmds {
		ctx := context.Background()
		if ctxs != nil {
			ctx = ctxs[i]
		}
		cmd := cmd
		outs[i] = goCall(func() (upstash.Value, error) { return r.c.Run(ctx, cmd) })
		r.total++
		r.waitQueued(t, r.total)
	}
	return outs
}

// dueInOrder returns n cancellable contexts whose deadlines are minutes
// apart, the last one latest: queued in that order, the last call leads
// the batch.
func dueInOrder(t *testing.T, n int) ([]context.Context, []context.CancelFunc) {
	t.Helper()
	ctxs := make([]context.Context, n)
	cancels := make([]context.CancelFunc, n)
	now := time.Now()
	for i := range ctxs {
		ctxs[i], cancels[i] = context.WithDeadline(context.Background(), now.Add(time.Duration(i+1)*time.Minute))
		t.Cleanup(cancels[i])
	}
	return ctxs, cancels
}

func cmdsOf(n int, name, keyFormat string) []upstash.Command {
	cmds := make([]upstash.Command, n)
	for i := range cmds {
		cmds[i] = upstash.Cmd(name, fmt.Sprintf(keyFormat, i))
	}
	return cmds
}

// TestAutoPipelineLoneCaller: a caller alone sends each command at once,
// in a request of its own, to the single-command endpoint.
func TestAutoPipelineLoneCaller(t *testing.T) {
	srv := upstashtest.NewServer(t)
	c, err := upstash.New(upstash.Config{URL: srv.URL, Token: srv.Token})
	if err != nil {
		t.Fatal(err)
	}
	ctx := ctxT(t)
	for i := 0; i < 5; i++ {
		if n, err := c.Incr(ctx, "lone"); err != nil || n != int64(i+1) {
			t.Fatalf("INCR %d: %d, %v", i, n, err)
		}
	}
	st := srv.Stats()
	if st.Requests["/"] != 5 || st.Requests["/pipeline"] != 0 || st.TotalRequests != 5 {
		t.Errorf("requests %v, want 5 to / and none to /pipeline", st.Requests)
	}
}

// TestAutoPipelineBatches: the calls queued while every slot is taken go
// out as one batch per kind (safe to repeat or not), never mixed; each
// caller gets its own reply.
func TestAutoPipelineBatches(t *testing.T) {
	r := newAutoRig(t)
	for i := 0; i < 30; i++ {
		if _, err := r.srv.Do("SET", fmt.Sprintf("k%d", i), fmt.Sprintf("v%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	r.holdSlots(t)
	incrs := r.queue(t, cmdsOf(30, "INCR", "n%d"), nil)
	gets := r.queue(t, cmdsOf(30, "GET", "k%d"), nil)

	for _, want := range []string{"INCR", "GET"} {
		r.freeSlot()
		h := r.gate.next(t)
		if h.Path != "/pipeline" {
			t.Fatalf("the %s batch went to %q", want, h.Path)
		}
		cmds := h.commands(t)
		if len(cmds) != 30 {
			t.Errorf("the %s batch has %d commands, want 30", want, len(cmds))
		}
		for _, cmd := range cmds {
			if cmd[0] != want {
				t.Errorf("the %s batch holds %v", want, cmd)
			}
		}
	}
	r.gate.Open()
	r.freeSlots()
	for i, ch := range incrs {
		o := <-ch
		if n, err := o.v.Int64(); o.err != nil || err != nil || n != 1 {
			t.Errorf("INCR n%d: %v, %v", i, o.v, o.err)
		}
	}
	for i, ch := range gets {
		o := <-ch
		if o.err != nil || text(t, o.v) != fmt.Sprintf("v%d", i) {
			t.Errorf("GET k%d: %v, %v", i, o.v, o.err)
		}
	}
	st := r.srv.Stats()
	if st.Requests["/"] != inFlight || st.Requests["/pipeline"] != 2 || st.Commands["INCR"] != 30 || st.Commands["GET"] != 30 {
		t.Errorf("requests %v, commands %v; want %d PINGs alone and 2 batches of 30", st.Requests, st.Commands, inFlight)
	}
}

// TestAutoPipelineConcurrentCallers: 64 goroutines, each with its own
// keys, write and read back in turn through one client over the network;
// every reply is the caller's own.
func TestAutoPipelineConcurrentCallers(t *testing.T) {
	srv := upstashtest.NewServer(t)
	c, err := upstash.New(upstash.Config{URL: srv.URL, Token: srv.Token})
	if err != nil {
		t.Fatal(err)
	}
	ctx := ctxT(t)
	const callers, rounds = 64, 5
	var wg sync.WaitGroup
	for g := 0; g < callers; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			key, counter := fmt.Sprintf("key:%d", g), fmt.Sprintf("counter:%d", g)
			for i := 0; i < rounds; i++ {
				want := fmt.Sprintf("value %d of caller %d", i, g)
				if err := c.Set(ctx, key, want, 0); err != nil {
					t.Errorf("caller %d: SET: %v", g, err)
					return
				}
				got, err := c.Get(ctx, key)
				if err != nil || string(got) != want {
					t.Errorf("caller %d: GET %q, %v; want %q", g, got, err, want)
					return
				}
				if n, err := c.Incr(ctx, counter); err != nil || n != int64(i+1) {
					t.Errorf("caller %d: INCR %d, %v; want %d", g, n, err, i+1)
					return
				}
			}
		}(g)
	}
	wg.Wait()
	st := srv.Stats()
	if st.TotalCommands != callers*rounds*3 {
		t.Errorf("the server ran %d commands, want %d", st.TotalCommands, callers*rounds*3)
	}
	t.Logf("%d commands in %d requests (%d pipelines)", st.TotalCommands, st.TotalRequests, st.Requests["/pipeline"])
}

// TestAutoPipelineErrorIsolation: a command's error reaches its caller
// only, named after its command, as if it had gone alone.
func TestAutoPipelineErrorIsolation(t *testing.T) {
	r := newAutoRig(t)
	if _, err := r.srv.Do("SET", "n3", "not a number"); err != nil {
		t.Fatal(err)
	}
	r.holdSlots(t)
	outs := r.queue(t, cmdsOf(6, "INCR", "n%d"), nil)
	r.gate.Open()
	r.freeSlots()
	for i, ch := range outs {
		o := <-ch
		if i != 3 {
			if n, err := o.v.Int64(); o.err != nil || err != nil || n != 1 {
				t.Errorf("INCR n%d: %v, %v", i, o.v, o.err)
			}
			continue
		}
		e := asError(t, o.err)
		if e.Command != "INCR" || e.Index != -1 || e.Status != 200 || e.Code != "ERR" {
			t.Errorf("INCR n3: %#v", e)
		}
		if !strings.HasPrefix(o.err.Error(), "upstash: INCR: ERR ") {
			t.Errorf("INCR n3: error text %q", o.err)
		}
	}
	if st := r.srv.Stats(); st.Requests["/pipeline"] != 1 {
		t.Errorf("requests %v, want one batch", st.Requests)
	}
}

// TestAutoPipelineFaults: a batch whose request fails is repeated only if
// every command in it is safe to repeat; otherwise each caller's error
// matches ErrOutcomeUnknown, named after its own command. The server's
// counters show how often each command ran.
func TestAutoPipelineFaults(t *testing.T) {
	faults := []struct {
		name   string
		inject func(*upstashtest.Server)
		ran    bool // the failed request's commands ran
	}{
		{"DropResponse", func(s *upstashtest.Server) { s.DropResponseNext(1) }, true},
		{"Reset", func(s *upstashtest.Server) { s.ResetNext(1) }, false},
		{"Fail503", func(s *upstashtest.Server) { s.FailNext(1, http.StatusServiceUnavailable) }, false},
	}
	for _, f := range faults {
		t.Run(f.name+"/NotRepeatable", func(t *testing.T) {
			r := newAutoRig(t)
			r.holdSlots(t)
			outs := r.queue(t, cmdsOf(10, "INCR", "n%d"), nil)
			r.freeSlots()
			h := r.gate.next(t)
			f.inject(r.srv)
			r.gate.Open()
			_ = h
			for i, ch := range outs {
				o := <-ch
				wantErrIs(t, o.err, upstash.ErrOutcomeUnknown)
				if !strings.HasPrefix(fmt.Sprint(o.err), "upstash: INCR: outcome unknown") {
					t.Errorf("INCR n%d: error text %q", i, o.err)
				}
				v, err := r.srv.Do("GET", fmt.Sprintf("n%d", i))
				if b, _ := v.([]byte); f.ran && (err != nil || string(b) != "1") || !f.ran && v != nil {
					t.Errorf("n%d holds %v (%v) after the fault", i, v, err)
				}
			}
			st := r.srv.Stats()
			wantRan := int64(0)
			if f.ran {
				wantRan = 10
			}
			if st.Requests["/pipeline"] != 1 || st.Commands["INCR"] != wantRan {
				t.Errorf("requests %v, INCR ran %d times; want 1 batch, not repeated, INCR ran %d", st.Requests, st.Commands["INCR"], wantRan)
			}
		})
		t.Run(f.name+"/Repeatable", func(t *testing.T) {
			r := newAutoRig(t)
			for i := 0; i < 10; i++ {
				if _, err := r.srv.Do("SET", fmt.Sprintf("k%d", i), fmt.Sprintf("v%d", i)); err != nil {
					t.Fatal(err)
				}
			}
			r.holdSlots(t)
			outs := r.queue(t, cmdsOf(10, "GET", "k%d"), nil)
			r.freeSlots()
			h := r.gate.next(t)
			f.inject(r.srv)
			r.gate.Open()
			_ = h
			for i, ch := range outs {
				o := <-ch
				if o.err != nil || text(t, o.v) != fmt.Sprintf("v%d", i) {
					t.Errorf("GET k%d: %v, %v", i, o.v, o.err)
				}
			}
			st := r.srv.Stats()
			wantRan := int64(10)
			if f.ran {
				wantRan = 20
			}
			if st.Requests["/pipeline"] != 2 || st.Commands["GET"] != wantRan {
				t.Errorf("requests %v, GET ran %d times; want the batch sent twice, GET ran %d", st.Requests, st.Commands["GET"], wantRan)
			}
		})
	}
}

// TestAutoPipelineMixedFaults: commands safe to repeat and the others,
// queued together, go in separate batches; when both replies are lost,
// the first kind is repeated and the second is not.
func TestAutoPipelineMixedFaults(t *testing.T) {
	r := newAutoRig(t)
	for i := 0; i < 10; i++ {
		if _, err := r.srv.Do("SET", fmt.Sprintf("k%d", i), fmt.Sprintf("v%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	r.holdSlots(t)
	var cmds []upstash.Command
	for i := 0; i < 10; i++ {
		cmds = append(cmds, upstash.Cmd("INCR", fmt.Sprintf("n%d", i)), upstash.Cmd("GET", fmt.Sprintf("k%d", i)))
	}
	outs := r.queue(t, cmds, nil)
	var batches []*heldRequest
	for _, want := range []string{"INCR", "GET"} { // the oldest queued call's kind first
		r.freeSlot()
		h := r.gate.next(t)
		for _, cmd := range h.commands(t) {
			if cmd[0] != want {
				t.Fatalf("the %s batch holds %v", want, cmd)
			}
		}
		batches = append(batches, h)
	}
	r.freeSlots()
	// The INCR batch's reply is lost, then the GET batch's.
	r.srv.DropResponseNext(1)
	batches[0].Release()
	for i := 0; i < len(outs); i += 2 {
		wantErrIs(t, (<-outs[i]).err, upstash.ErrOutcomeUnknown)
	}
	r.srv.DropResponseNext(1)
	r.gate.Open()
	for i := 1; i < len(outs); i += 2 {
		if o := <-outs[i]; o.err != nil || text(t, o.v) != fmt.Sprintf("v%d", i/2) {
			t.Errorf("GET k%d: %v, %v", i/2, o.v, o.err)
		}
	}
	st := r.srv.Stats()
	if st.Requests["/pipeline"] != 3 || st.Commands["INCR"] != 10 || st.Commands["GET"] != 20 {
		t.Errorf("requests %v, commands %v; want the GET batch sent twice, the INCR batch once", st.Requests, st.Commands)
	}
}

// TestAutoPipelineErrorAsAlone: a batch's failure reads, for each caller,
// exactly as the same failure of its command sent alone.
func TestAutoPipelineErrorAsAlone(t *testing.T) {
	r := newAutoRig(t, upstash.WithRetry(upstash.NoRetry))
	r.gate.Open()
	r.srv.FailNext(1, http.StatusServiceUnavailable)
	_, alone := r.c.Do(ctxT(t), "INCR", "n0")

	r = newAutoRig(t, upstash.WithRetry(upstash.NoRetry))
	r.holdSlots(t)
	outs := r.queue(t, cmdsOf(3, "INCR", "n%d"), nil)
	r.freeSlots()
	h := r.gate.next(t)
	r.srv.FailNext(1, http.StatusServiceUnavailable)
	h.Release()
	for i, ch := range outs {
		o := <-ch
		if fmt.Sprint(o.err) != fmt.Sprint(alone) {
			t.Errorf("INCR n%d in a batch: %q; alone: %q", i, o.err, alone)
		}
		wantErrIs(t, o.err, upstash.ErrOutcomeUnknown)
		if e := asError(t, o.err); e.Command != "INCR" || e.Status != 503 || e.Index != -1 {
			t.Errorf("INCR n%d: %#v", i, e)
		}
	}
}

// TestAutoPipelineCancelQueued: a call whose context ends while it is
// queued leaves the queue unsent, with the context's error only.
func TestAutoPipelineCancelQueued(t *testing.T) {
	r := newAutoRig(t)
	r.holdSlots(t)
	ctxs, cancels := dueInOrder(t, 5)
	outs := r.queue(t, cmdsOf(5, "INCR", "n%d"), ctxs)
	cancels[2]()
	o := <-outs[2]
	wantErrIs(t, o.err, context.Canceled)
	if errors.Is(o.err, upstash.ErrOutcomeUnknown) || !strings.HasPrefix(o.err.Error(), "upstash: INCR: ") {
		t.Errorf("a queued call cancelled: %q", o.err)
	}
	r.gate.Open()
	r.freeSlots()
	for i, ch := range outs {
		if i == 2 {
			continue
		}
		if o := <-ch; o.err != nil {
			t.Errorf("INCR n%d: %v", i, o.err)
		}
	}
	if v, err := r.srv.Do("GET", "n2"); v != nil || err != nil {
		t.Errorf("the cancelled INCR ran: n2 = %v, %v", v, err)
	}
	if st := r.srv.Stats(); st.Commands["INCR"] != 4 {
		t.Errorf("INCR ran %d times, want 4", st.Commands["INCR"])
	}
}

// TestAutoPipelineCancelSent: a follower whose context ends while its
// batch is in flight returns at once (the request is still held), with
// ErrOutcomeUnknown if its command is not safe to repeat; the batch goes
// on for the others.
func TestAutoPipelineCancelSent(t *testing.T) {
	for _, safe := range []bool{false, true} {
		t.Run(fmt.Sprintf("safe=%v", safe), func(t *testing.T) {
			r := newAutoRig(t)
			r.holdSlots(t)
			ctxs, cancels := dueInOrder(t, 5)
			cmds := cmdsOf(5, "INCR", "n%d")
			if safe {
				for i := range cmds {
					cmds[i] = cmds[i].Idempotent()
				}
			}
			outs := r.queue(t, cmds, ctxs)
			r.freeSlots()
			h := r.gate.next(t)
			cancels[0]() // a follower: call 4 leads

			o := <-outs[0]
			wantErrIs(t, o.err, context.Canceled)
			if errors.Is(o.err, upstash.ErrOutcomeUnknown) == safe {
				t.Errorf("cancelled after sending (safe %v): %q", safe, o.err)
			}
			h.Release()
			for i, ch := range outs[1:] {
				if o := <-ch; o.err != nil {
					t.Errorf("INCR n%d: %v", i+1, o.err)
				}
			}
			if st := r.srv.Stats(); st.Commands["INCR"] != 5 {
				t.Errorf("INCR ran %d times, want 5 (the batch went on)", st.Commands["INCR"])
			}
		})
	}
}

// TestAutoPipelineCancelLeader: the leader's context ending does not end
// its batch's request, which the other callers wait for.
func TestAutoPipelineCancelLeader(t *testing.T) {
	r := newAutoRig(t)
	r.holdSlots(t)
	ctxs, cancels := dueInOrder(t, 5)
	outs := r.queue(t, cmdsOf(5, "INCR", "n%d"), ctxs)
	r.freeSlots()
	h := r.gate.next(t)
	cancels[4]() // the leader: due last
	h.Release()
	for i, ch := range outs {
		o := <-ch
		if i == 4 {
			continue // it may report its reply or its cancellation
		}
		if n, err := o.v.Int64(); o.err != nil || err != nil || n != 1 {
			t.Errorf("INCR n%d: %v, %v", i, o.v, o.err)
		}
	}
	if st := r.srv.Stats(); st.Commands["INCR"] != 5 {
		t.Errorf("INCR ran %d times, want 5", st.Commands["INCR"])
	}
}

// TestAutoPipelineCancelAll: once every caller of a batch has given up, its
// request is cancelled (held at the gate, it would never end otherwise).
func TestAutoPipelineCancelAll(t *testing.T) {
	r := newAutoRig(t)
	r.holdSlots(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	outs := r.queue(t, cmdsOf(3, "INCR", "n%d"), []context.Context{ctx, ctx, ctx})
	r.freeSlots()
	h := r.gate.next(t)
	cancel()
	for i, ch := range outs {
		o := <-ch
		wantErrIs(t, o.err, upstash.ErrOutcomeUnknown, context.Canceled)
		_ = i
	}
	_ = h
	if st := r.srv.Stats(); st.Requests["/pipeline"] != 0 {
		t.Errorf("requests %v: the cancelled batch reached the server", st.Requests)
	}
}

// TestAutoPipelineNoGoroutineLeft: once every call has returned, nothing
// of the client runs, also after a leader's cancellation.
func TestAutoPipelineNoGoroutineLeft(t *testing.T) {
	pt := &pipelineTransport{}
	r := newAutoRigOn(t, mockURL, secretToken, pt)
	r.holdSlots(t)
	ctxs, cancels := dueInOrder(t, 20)
	outs := r.queue(t, cmdsOf(20, "INCR", "n%d"), ctxs)
	r.freeSlots()
	h := r.gate.next(t)
	cancels[19]() // the leader
	h.Release()
	for _, ch := range outs {
		<-ch
	}
	buf := make([]byte, 1<<20)
	stacks := string(buf[:runtime.Stack(buf, true)])
	for _, g := range strings.Split(stacks, "\n\n") {
		if strings.Contains(g, "upstash.(*autoPipeliner)") || strings.Contains(g, "upstash.(*Client)") {
			t.Errorf("a goroutine of the client outlives its calls:\n%s", g)
		}
	}
	if pt.count("/pipeline") != 1 {
		t.Errorf("%d batches, want 1", pt.count("/pipeline"))
	}
}

// TestAutoPipelineScripts: scripts the server had not cached, batched,
// are sent again as EVAL together in one more request.
func TestAutoPipelineScripts(t *testing.T) {
	r := newAutoRig(t)
	script := upstash.NewScript("return ARGV[1] .. '!'")
	r.holdSlots(t)
	cmds := make([]upstash.Command, 5)
	for i := range cmds {
		cmds[i] = script.Cmd(nil, fmt.Sprintf("s%d", i))
	}
	outs := r.queue(t, cmds, nil)
	r.gate.Open()
	r.freeSlots()
	for i, ch := range outs {
		o := <-ch
		if o.err != nil || text(t, o.v) != fmt.Sprintf("s%d!", i) {
			t.Errorf("script %d: %v, %v", i, o.v, o.err)
		}
	}
	if st := r.srv.Stats(); st.Requests["/pipeline"] != 2 || st.Commands["EVAL"] != 5 {
		t.Errorf("requests %v, EVAL ran %d times; want a batch and one EVAL follow-up of 5", st.Requests, st.Commands["EVAL"])
	}
}

// TestAutoPipelineExplicitPipeline: Pipeline calls are never queued nor
// merged, even while every slot is taken.
func TestAutoPipelineExplicitPipeline(t *testing.T) {
	r := newAutoRig(t)
	r.holdSlots(t)
	outs := r.queue(t, cmdsOf(3, "INCR", "n%d"), nil)
	done := make(chan error, 1)
	go func() {
		_, err := r.c.Pipeline(context.Background(), upstash.Cmd("GET", "a"), upstash.Cmd("GET", "b"))
		done <- err
	}()
	h := r.gate.next(t)
	if cmds := h.commands(t); h.Path != "/pipeline" || len(cmds) != 2 || cmds[0][0] != "GET" {
		t.Fatalf("the Pipeline call sent %s to %q", h.Body, h.Path)
	}
	h.Release()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	r.gate.Open()
	r.freeSlots()
	for _, ch := range outs {
		if o := <-ch; o.err != nil {
			t.Error(o.err)
		}
	}
}

// TestAutoPipelineOff: with auto-pipelining off, concurrent calls are
// each their own request, all in flight at once.
func TestAutoPipelineOff(t *testing.T) {
	pt := &pipelineTransport{}
	g := newGate(pt)
	t.Cleanup(g.Open)
	c, err := upstash.New(upstash.Config{URL: mockURL, Token: secretToken}, upstash.WithTransport(g), upstash.WithAutoPipelining(false))
	if err != nil {
		t.Fatal(err)
	}
	var outs []<-chan outcome
	for i := 0; i < 3*inFlight; i++ {
		outs = append(outs, goCall(func() (upstash.Value, error) { return c.Do(context.Background(), "INCR", "n") }))
	}
	for i := 0; i < 3*inFlight; i++ {
		if h := g.next(t); h.Path != "/" {
			t.Errorf("request %d went to %q", i, h.Path)
		}
	}
	g.Open()
	for _, ch := range outs {
		if o := <-ch; o.err != nil {
			t.Error(o.err)
		}
	}
}

// TestAutoPipelineBatchLimits: a batch holds at most 1000 commands, and
// no more than Limits.MaxRequestBytes; a batch of one goes alone.
func TestAutoPipelineBatchLimits(t *testing.T) {
	t.Run("commands", func(t *testing.T) {
		r := newAutoRigOn(t, mockURL, secretToken, &pipelineTransport{})
		r.holdSlots(t)
		outs := r.queue(t, cmdsOf(1005, "INCR", "n%04d"), nil)
		// Each batch stays held until all have arrived: one that
		// returned would free a slot too.
		for _, want := range []int{1000, 5} {
			r.freeSlot()
			h := r.gate.next(t)
			if n := len(h.commands(t)); n != want {
				t.Errorf("a batch of %d commands, want %d", n, want)
			}
		}
		r.gate.Open()
		r.freeSlots()
		for _, ch := range outs {
			if o := <-ch; o.err != nil {
				t.Fatal(o.err)
			}
		}
	})
	t.Run("bytes", func(t *testing.T) {
		one := len(`["INCR","n0"]`)
		limits := upstash.DefaultLimits
		limits.MaxRequestBytes = 2 + 3*one + 2 // three commands, not four
		r := newAutoRigOn(t, mockURL, secretToken, &pipelineTransport{}, upstash.WithLimits(limits))
		r.holdSlots(t)
		outs := r.queue(t, cmdsOf(7, "INCR", "n%d"), nil)
		for _, want := range []string{"/pipeline", "/pipeline", "/"} {
			r.freeSlot()
			h := r.gate.next(t)
			if h.Path != want || len(h.Body) > limits.MaxRequestBytes {
				t.Errorf("%d bytes to %q, want at most %d to %q", len(h.Body), h.Path, limits.MaxRequestBytes, want)
			}
		}
		r.gate.Open()
		r.freeSlots()
		for _, ch := range outs {
			if o := <-ch; o.err != nil {
				t.Fatal(o.err)
			}
		}
	})
	t.Run("reply", func(t *testing.T) {
		// The reply of a batch may take MaxResponseBytes per command:
		// 10 replies of 12 bytes take 131, over the limit of 64.
		limits := upstash.DefaultLimits
		limits.MaxResponseBytes = 64
		r := newAutoRigOn(t, mockURL, secretToken, &pipelineTransport{}, upstash.WithLimits(limits))
		r.holdSlots(t)
		outs := r.queue(t, cmdsOf(10, "INCR", "n%d"), nil)
		r.gate.Open()
		r.freeSlots()
		for _, ch := range outs {
			if o := <-ch; o.err != nil {
				t.Fatal(o.err)
			}
		}
	})
}

// TestAutoPipelineInFlightCap: 64 concurrent callers never have more than
// four requests at the server at once, so a burst needs no more
// connections than that (each connection is back in the pool before its
// slot frees; BenchmarkAutoPipeline reports the connections accepted).
// Without auto-pipelining, dozens are in flight.
func TestAutoPipelineInFlightCap(t *testing.T) {
	for _, auto := range []bool{true, false} {
		t.Run(fmt.Sprintf("auto=%v", auto), func(t *testing.T) {
			srv := upstashtest.NewServer(t)
			var mu sync.Mutex
			serving, peak := 0, 0
			h := srv.Handler()
			url, accepted := countConnections(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				mu.Lock()
				serving++
				peak = max(peak, serving)
				mu.Unlock()
				defer func() {
					mu.Lock()
					serving--
					mu.Unlock()
				}()
				h.ServeHTTP(w, r)
			}))
			c, err := upstash.New(upstash.Config{URL: url, Token: srv.Token}, upstash.WithAutoPipelining(auto))
			if err != nil {
				t.Fatal(err)
			}
			ctx := ctxT(t)
			for burst := 0; burst < 3; burst++ {
				var wg sync.WaitGroup
				for g := 0; g < 64; g++ {
					wg.Add(1)
					go func(g int) {
						defer wg.Done()
						for i := 0; i < 3; i++ {
							if _, err := c.Incr(ctx, fmt.Sprintf("n%d", g)); err != nil {
								t.Error(err)
								return
							}
						}
					}(g)
				}
				wg.Wait()
			}
			mu.Lock()
			defer mu.Unlock()
			t.Logf("3 bursts of 64 callers: at most %d requests at once, %d connections, %d requests", peak, accepted.Load(), srv.Stats().TotalRequests)
			if auto && peak > inFlight {
				t.Errorf("%d requests at once, want at most %d", peak, inFlight)
			}
		})
	}
}

// TestAutoPipelineFollowerTimeout: a queued call without a deadline ends
// at the client's timeout, as a request of its own would, even though its
// batch's leader may wait longer.
func TestAutoPipelineFollowerTimeout(t *testing.T) {
	r := newAutoRig(t, upstash.WithTimeout(3*time.Second))
	r.holdSlots(t)
	leaderCtx, cancel := context.WithTimeout(context.Background(), time.Hour)
	defer cancel()
	outs := r.queue(t, cmdsOf(2, "INCR", "n%d"), []context.Context{context.Background(), leaderCtx})
	r.freeSlots()
	h := r.gate.next(t) // held until the follower has given up
	if n := len(h.commands(t)); n != 2 {
		t.Fatalf("a batch of %d commands, want 2", n)
	}
	o := <-outs[0]
	wantErrIs(t, o.err, context.DeadlineExceeded, upstash.ErrOutcomeUnknown)
	h.Release()
	if o := <-outs[1]; o.err != nil {
		t.Errorf("the leader: %v", o.err)
	}
}
