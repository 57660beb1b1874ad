package upstash

// Auto-pipelining: commands that concurrent callers send through one
// Client travel together in one /pipeline request.
//
// There is no background goroutine: the callers' own goroutines do the
// work (leader and followers), and nothing runs once every call has
// returned. A call that finds fewer than maxInFlight requests of Run calls
// in flight takes a slot and sends its command alone at once, with its
// own context, exactly as without auto-pipelining. Otherwise it queues and
// waits. Whenever a request ends and frees a slot, one queued call is
// promoted to lead: it takes its queue's calls (up to maxAutoBatch
// commands and Limits.MaxRequestBytes) and sends them as one batch, while
// the others wait for their result. Commands safe to repeat and the
// others queue apart and never share a batch, so a batch is retried
// exactly when each of its commands could be retried alone.
//
// Contexts: a batch's request runs on its leader's context detached from
// cancellation (context.WithoutCancel), bounded by the leader's deadline,
// and cancelled once every caller of the batch has given up. The leader
// is the queued call with the latest deadline (a call without one counts
// as due when the client's timeout would end it), and a batch takes no
// call due after its leader, so no call's request is cut short by another
// caller's deadline, and a leader is never held past its own. A follower
// returns as soon as its context ends: a queued call leaves the queue
// unsent (the context's error), a call whose batch was sent gets the
// context's error, matching ErrOutcomeUnknown too if its command is not
// safe to repeat. The one exception is a leader whose context is
// cancelled (not by its deadline) while its request is in flight: it
// returns when the request ends, or is cancelled because every other
// caller of the batch has given up.

import (
	"context"
	"net/http"
	"sync"
	"time"
)

const (
	// maxInFlight bounds the requests of Run calls (alone or batched) a
	// client has in flight at once; more callers than that queue. It
	// stays below the default transport's MaxIdleConnsPerHost, so a
	// burst reuses pooled connections instead of dialling new ones.
	maxInFlight = 4
	// maxAutoBatch bounds the commands of one auto-pipelined request
	// (the official JavaScript client's bound too).
	maxAutoBatch = 1000
	// autoLabel names an auto-pipelined batch in log lines.
	autoLabel = "PIPELINE (auto)"
)

// autoPipelinable reports whether cmd may share a request with other
// callers' commands. A blocking command (BLPOP, XREAD BLOCK, WAIT…) would
// hold up every command queued behind it in the batch, so it goes alone.
func autoPipelinable(cmd Command) bool {
	return !blockingCommands[cmd.Name()]
}

// blockingCommands may block the server's connection until a timeout.
var blockingCommands = map[string]bool{
	"BLPOP": true, "BRPOP": true, "BLMOVE": true, "BRPOPLPUSH": true, "BLMPOP": true,
	"BZPOPMIN": true, "BZPOPMAX": true, "BZMPOP": true, "XREAD": true, "XREADGROUP": true,
	"WAIT": true, "WAITAOF": true,
}

// autoPipeliner holds one client's queued calls and counts its requests in
// flight.
type autoPipeliner struct {
	mu sync.Mutex
	// inFlight counts requests of Run calls being sent (alone or as a
	// batch) and calls promoted to lead that have not taken their batch.
	inFlight int
	// queues holds the waiting calls: [0] commands not safe to repeat,
	// [1] commands safe to repeat.
	queues [2]autoQueue
	seq    uint64 // numbers the calls, oldest first
	// onQueue, when set (by tests), is called with the number of queued
	// calls each time a call queues.
	onQueue func(queued int)
}

type autoQueue struct {
	calls    []*autoCall
	promoted int // calls of this queue promoted to lead, batch not taken yet
}

// The states of a queued call.
const (
	callQueued   = iota
	callPromoted // to lead a batch: its goroutine will take one
	callSent     // in a batch on its way
	callDone     // v and err are set
)

// autoCall is one queued Run call. Its fields after cmd are guarded by
// the pipeliner's mutex.
type autoCall struct {
	cmd  Command
	name string
	body []byte // the command encoded alone
	safe bool
	seq  uint64
	// due is when the call's context (or, without a deadline, the
	// client's timeout) ends it; the zero time is never.
	due  time.Time
	wake chan struct{} // signalled (never closed) on promotion and completion

	state int
	batch *autoBatch
	gone  bool // the caller has returned
	v     Value
	err   error
}

// autoBatch is a batch's request, cancelled when all its callers are gone.
type autoBatch struct {
	live   int
	cancel context.CancelFunc
}

// signal wakes the call's goroutine; a pending signal is enough.
func (a *autoCall) signal() {
	select {
	case a.wake <- struct{}{}:
	default:
	}
}

// run sends cmd for one caller: at once and alone when a slot is free,
// otherwise queued into the next batch.
func (p *autoPipeliner) run(ctx context.Context, c *Client, cmd Command) (Value, error) {
	name := cmd.Name()
	body, err := c.encodeOne(cmd, name)
	if err != nil {
		return Value{}, err
	}
	if err := ctxDone(ctx); err != nil {
		return Value{}, callErrorf(name, "%w", err) // nothing is sent
	}
	p.mu.Lock()
	if p.inFlight < maxInFlight {
		p.inFlight++
		p.mu.Unlock()
		defer p.release()
		return c.runAlone(ctx, cmd, body)
	}
	call := &autoCall{cmd: cmd, name: name, body: body, safe: cmd.safeToRepeat(), wake: make(chan struct{}, 1)}
	if dl, ok := ctx.Deadline(); ok {
		call.due = dl
	} else if c.settings.timeout > 0 {
		// The client's timeout ends the wait as it would end a request.
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.settings.timeout)
		defer cancel()
		call.due, _ = ctx.Deadline()
	}
	p.seq++
	call.seq = p.seq
	q := &p.queues[queueOf(call.safe)]
	q.calls = append(q.calls, call)
	hook, queued := p.onQueue, len(p.queues[0].calls)+len(p.queues[1].calls)
	p.mu.Unlock()
	if hook != nil {
		hook(queued)
	}
	return p.wait(ctx, c, call)
}

// queueOf is the queue of a command: 1 if it is safe to repeat, else 0.
func queueOf(safe bool) int {
	if safe {
		return 1
	}
	return 0
}

// release frees a slot when a request ends, and promotes queued calls.
func (p *autoPipeliner) release() {
	p.mu.Lock()
	p.inFlight--
	p.dispatch()
	p.mu.Unlock()
}

// dispatch promotes queued calls to lead while slots are free: in each
// queue, the call due last (so that its batch can take every call queued
// before it), the queue with the oldest waiting call first. A queue whose
// promoted calls will take all its calls gets no other. p.mu is held.
func (p *autoPipeliner) dispatch() {
	for p.inFlight < maxInFlight {
		var best *autoQueue
		var oldest uint64
		for i := range p.queues {
			q := &p.queues[i]
			waiting := len(q.calls) - q.promoted
			if waiting == 0 || q.promoted > 0 && waiting <= q.promoted*maxAutoBatch {
				continue
			}
			for _, a := range q.calls {
				if a.state == callQueued {
					if best == nil || a.seq < oldest {
						best, oldest = q, a.seq
					}
					break
				}
			}
		}
		if best == nil {
			return
		}
		var lead *autoCall
		for _, a := range best.calls {
			if a.state == callQueued && (lead == nil || dueAfter(a.due, lead.due)) {
				lead = a
			}
		}
		lead.state = callPromoted
		best.promoted++
		p.inFlight++
		lead.signal()
	}
}

// dueAfter reports whether a call due at a ends later than one due at b
// (the zero time being never).
func dueAfter(a, b time.Time) bool {
	if b.IsZero() {
		return false
	}
	return a.IsZero() || a.After(b)
}

// wait waits for the call's result, leads a batch when promoted, and
// returns early when ctx ends.
func (p *autoPipeliner) wait(ctx context.Context, c *Client, call *autoCall) (Value, error) {
	for {
		select {
		case <-call.wake:
		case <-ctx.Done():
			return p.abandon(ctx, call)
		}
		p.mu.Lock()
		switch call.state {
		case callDone:
			p.mu.Unlock()
			return call.v, call.err
		case callPromoted:
			batch, bctx := p.take(ctx, call, c.settings.limits.MaxRequestBytes)
			p.mu.Unlock()
			if len(batch) == 1 {
				// Nothing else to send: the call goes alone, on its
				// own context, as it would with a free slot.
				v, err := c.runAlone(ctx, call.cmd, call.body)
				p.finish(batch, call)
				return v, err
			}
			p.lead(ctx, bctx, c, call, batch)
			return call.v, call.err
		}
		// Its promotion was taken over by another leader's batch.
		p.mu.Unlock()
	}
}

// abandon ends a call whose context ended before its result arrived.
func (p *autoPipeliner) abandon(ctx context.Context, call *autoCall) (Value, error) {
	ctxErr := ctx.Err()
	p.mu.Lock()
	defer p.mu.Unlock()
	switch call.state {
	case callDone:
		return call.v, call.err
	case callSent:
		call.gone = true
		if call.batch.live--; call.batch.live == 0 {
			call.batch.cancel()
		}
		if call.safe {
			return Value{}, callErrorf(call.name, "%w", ctxErr)
		}
		return Value{}, callErrorf(call.name, "%w: %w", ErrOutcomeUnknown, ctxErr)
	}
	q := &p.queues[queueOf(call.safe)]
	for i, a := range q.calls {
		if a == call {
			copy(q.calls[i:], q.calls[i+1:])
			q.calls[len(q.calls)-1] = nil
			q.calls = q.calls[:len(q.calls)-1]
			break
		}
	}
	if call.state == callPromoted {
		q.promoted--
		p.inFlight--
		p.dispatch()
	}
	call.state = callDone
	return Value{}, callErrorf(call.name, "%w", ctxErr) // nothing was sent
}

// take makes the promoted call lead the batch of its queue's calls that
// fit (up to maxAutoBatch commands and maxBytes, none due after the
// leader), removes them from the queue and returns them, the leader
// first, with the batch's context when there is more than the leader.
// p.mu is held.
func (p *autoPipeliner) take(ctx context.Context, lead *autoCall, maxBytes int) ([]*autoCall, context.Context) {
	q := &p.queues[queueOf(lead.safe)]
	q.promoted--
	batch := []*autoCall{lead}
	size := len(lead.body) + 2
	kept := q.calls[:0]
	for _, a := range q.calls {
		switch {
		case a == lead:
			continue
		case len(batch) < maxAutoBatch && !dueAfter(a.due, lead.due) && (maxBytes <= 0 || size+1+len(a.body) <= maxBytes):
			if a.state == callPromoted {
				// Its promotion is taken over: its slot is free again.
				q.promoted--
				p.inFlight--
			}
			batch = append(batch, a)
			size += 1 + len(a.body)
		default:
			kept = append(kept, a)
		}
	}
	clear(q.calls[len(kept):])
	q.calls = kept
	lead.state = callSent
	if len(batch) == 1 {
		p.dispatch()
		return batch, nil
	}

	bctx := context.WithoutCancel(ctx)
	var cancel context.CancelFunc
	if lead.due.IsZero() {
		bctx, cancel = context.WithCancel(bctx)
	} else {
		bctx, cancel = context.WithDeadline(bctx, lead.due)
	}
	b := &autoBatch{live: len(batch), cancel: cancel}
	for _, a := range batch {
		a.state = callSent
		a.batch = b
	}
	p.dispatch()
	return batch, bctx
}

// lead sends the batch on bctx (ctx is the leader's own), hands each
// caller its result and frees the slot.
func (p *autoPipeliner) lead(ctx, bctx context.Context, c *Client, leader *autoCall, batch []*autoCall) {
	// The leader's own context ending counts as the leader giving up,
	// although its goroutine stays with the request.
	left := make(chan struct{})
	stop := context.AfterFunc(ctx, func() {
		defer close(left)
		p.mu.Lock()
		defer p.mu.Unlock()
		leader.gone = true
		if leader.batch.live--; leader.batch.live == 0 {
			leader.batch.cancel()
		}
	})
	c.sendBatch(bctx, batch)
	if !stop() {
		<-left // nothing of the call outlives it
	}
	p.finish(batch, leader)
}

// finish marks the batch's calls done, wakes their callers (except the
// leader, whose goroutine is here) and frees the batch's slot.
func (p *autoPipeliner) finish(batch []*autoCall, leader *autoCall) {
	p.mu.Lock()
	for _, a := range batch {
		a.state = callDone
		if a != leader && !a.gone {
			a.signal()
		}
	}
	if b := batch[0].batch; b != nil {
		b.cancel()
	}
	p.inFlight--
	p.dispatch()
	p.mu.Unlock()
}

// sendBatch sends the calls' commands in one /pipeline request and sets
// each call's v and err as if its command had been sent alone: its own
// reply or Redis error (Index -1), or the request's error named after its
// command. Scripts answered NOSCRIPT are sent again as EVAL, together, in
// one more request. The calls are all safe to repeat, or none is.
func (c *Client) sendBatch(ctx context.Context, batch []*autoCall) {
	safe := batch[0].safe
	size := 1
	for _, a := range batch {
		size += len(a.body) + 1
	}
	body := make([]byte, 0, size)
	for i, a := range batch {
		if i == 0 {
			body = append(body, '[')
		} else {
			body = append(body, ',')
		}
		body = append(body, a.body...)
	}
	body = append(body, ']')
	c.sendAuto(ctx, batch, body, safe, false)

	var again []*autoCall
	for _, a := range batch {
		if a.cmd.script != nil && isNoScript(a.err) {
			again = append(again, a)
		}
	}
	if len(again) == 0 {
		return
	}
	c.log.DebugContext(ctx, "upstash: scripts not cached, sending EVAL", "command", autoLabel, "scripts", len(again))
	body = append(body[:0], '[')
	for i, a := range again {
		if i > 0 {
			body = append(body, ',')
		}
		var err error
		if body, err = encodeCommand(body, a.cmd.evalForm(), -1, "EVAL"); err != nil {
			// The EVALSHA form of the same arguments was encoded.
			for _, a := range again {
				a.v, a.err = Value{}, err
			}
			return
		}
	}
	body = append(body, ']')
	if max := c.settings.limits.MaxRequestBytes; max > 0 && len(body) > max {
		// Each EVAL fits alone (see Run's follow-up); send them so.
		for _, a := range again {
			a.v, a.err = c.runOne(ctx, a.cmd.evalForm(), nil)
		}
		return
	}
	c.sendAuto(ctx, again, body, safe, true)
}

// sendAuto posts body, the batch's commands (their EVAL forms if eval) as
// a pipeline, and sets each call's v and err.
func (c *Client) sendAuto(ctx context.Context, batch []*autoCall, body []byte, safe, eval bool) {
	name := func(a *autoCall) string {
		if eval {
			return "EVAL"
		}
		return a.name
	}
	limit := c.settings.limits.MaxResponseBytes
	if n := int64(len(batch)); limit > 0 {
		// A reply may take what each command's own reply could, and a
		// comma or bracket each.
		if limit >= (1<<63-1)/n-1 {
			limit = 0
		} else {
			limit = (limit+1)*n + 1
		}
	}
	resp, err := c.sendLimited(ctx, pipelinePath, body, safe, "", limit)
	if err != nil {
		for _, a := range batch {
			a.v, a.err = Value{}, relabel(err, name(a))
		}
		return
	}
	replies, err := parseReplyArray(resp)
	if err != nil || len(replies) != len(batch) {
		what := "body is not a JSON array"
		if err == nil {
			what = "wrong number of replies"
		}
		for _, a := range batch {
			a.v, a.err = Value{}, unreadableReply(callErrorf(name(a), "%w: %s to a pipeline of %d commands", ErrProtocol, what, len(batch)), safe, name(a))
		}
		return
	}
	for i, a := range batch {
		r := &replies[i]
		if r.Error != nil {
			a.v, a.err = Value{}, newError(c.token, name(a), -1, http.StatusOK, *r.Error)
			continue
		}
		// Each value may take what it could alone.
		limit := c.settings.limits.MaxResponseBytes
		v, _, err := r.resultValue(c.settings.base64, limit > 0, limit)
		if err != nil {
			a.v, a.err = Value{}, unreadableReply(withLabel(name(a), err), safe, name(a))
			continue
		}
		a.v, a.err = v, nil
	}
}

// relabel returns err, the error of a request sent without a label (an
// auto-pipelined batch), as the error of the command name: the text and
// the *Error values inside it name the command, as they would had the
// command been sent alone.
func relabel(err error, name string) error {
	switch e := err.(type) {
	case *callError:
		if e.label != "" {
			return e
		}
		errs := make([]error, len(e.errs))
		for i, inner := range e.errs {
			errs[i] = relabelInner(inner, name)
		}
		return &callError{label: name, detail: e.detail, errs: errs}
	case *Error:
		return relabelInner(e, name)
	}
	return withLabel(name, err)
}

// relabelInner names the command in the unlabelled errors within err.
func relabelInner(err error, name string) error {
	switch e := err.(type) {
	case *callError:
		if e.label == "" {
			return relabel(e, name)
		}
	case *Error:
		if e.Command == "" {
			named := *e
			named.Command = name
			return &named
		}
	}
	return err
}

// logLabel is the name of a call in log lines: its label, or autoLabel
// for an auto-pipelined batch.
func logLabel(label string) string {
	if label == "" {
		return autoLabel
	}
	return label
}
