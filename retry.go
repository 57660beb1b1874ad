package upstash

// Which requests may be sent again, and the loop that does it. Everything
// that decides whether a failed request is repeated lives in this file:
// which commands are safe to repeat, what a failed attempt proves about
// whether the request reached the server, and the retry policy.

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"strings"
	"time"
)

// RetryPolicy controls retries of failed requests. A request is only retried
// when it provably never reached the server (DNS, connect or TLS failures) or
// when every command in it is safe to repeat: a read, or a command or script
// marked Idempotent(). 5xx and 429 replies are retried only in the second
// case; 3xx and 4xx replies never. The context's deadline bounds all
// attempts: no retry starts if its backoff would end past the deadline, or
// less than 5 ms before it. The zero RetryPolicy is NoRetry.
type RetryPolicy struct {
	// MaxRetries is the number of retries after the first attempt; 0 disables
	// retries.
	MaxRetries int
	// MinBackoff is the wait before the first retry; each later wait doubles,
	// up to MaxBackoff. Waits are jittered to between half and all of that.
	// Zero means retry at once.
	MinBackoff, MaxBackoff time.Duration
}

// DefaultRetryPolicy is the policy of a Client built without WithRetry: four
// retries with waits of about 50, 100, 200 and 400 ms (at most 750 ms in all).
var DefaultRetryPolicy = RetryPolicy{MaxRetries: 4, MinBackoff: 50 * time.Millisecond, MaxBackoff: time.Second}

// NoRetry disables retries.
var NoRetry = RetryPolicy{}

// validate refuses a policy the loop cannot follow.
func (p RetryPolicy) validate() error {
	if p.MaxRetries < 0 || p.MinBackoff < 0 || p.MaxBackoff < p.MinBackoff {
		return fmt.Errorf("%w: retry policy needs MaxRetries >= 0 and 0 <= MinBackoff <= MaxBackoff", ErrConfig)
	}
	return nil
}

// safeToRepeat reports whether the command may be sent again after an
// attempt that may have applied it: a read, a command or script marked
// Idempotent(), or SCRIPT LOAD/EXISTS. A write is not, even one that would
// store the same thing twice (a plain SET, DEL, PEXPIRE): the repeat can
// land after another client's newer write and undo it.
func (c Command) safeToRepeat() bool {
	if c.idempotent {
		return true
	}
	if c.script != nil {
		return c.script.idempotent
	}
	name := c.Name()
	if readOnlyCommands[name] {
		return true
	}
	if name == "SCRIPT" && len(c.args) >= 2 {
		// The subcommand counts however it was passed ([]byte too).
		switch sub, _ := argText(c.args[1]); strings.ToUpper(sub) {
		case "LOAD", "EXISTS":
			return true
		}
	}
	return false
}

// argText returns a string or []byte argument as a string.
func argText(a any) (string, bool) {
	switch t := a.(type) {
	case string:
		return t, true
	case []byte:
		return string(t), true
	}
	return "", false
}

// readOnlyCommands lists commands that change nothing, so a retry is safe.
var readOnlyCommands = map[string]bool{
	"GET": true, "MGET": true, "GETRANGE": true, "STRLEN": true, "EXISTS": true,
	"TTL": true, "PTTL": true, "EXPIRETIME": true, "PEXPIRETIME": true, "TYPE": true,
	"LRANGE": true, "LLEN": true, "LINDEX": true, "LPOS": true,
	"SISMEMBER": true, "SMISMEMBER": true, "SMEMBERS": true, "SCARD": true,
	"HGET": true, "HMGET": true, "HGETALL": true, "HLEN": true, "HEXISTS": true,
	"HKEYS": true, "HVALS": true, "HSTRLEN": true,
	"ZSCORE": true, "ZMSCORE": true, "ZRANGE": true, "ZCARD": true, "ZRANK": true,
	"ZREVRANK": true, "ZCOUNT": true, "ZRANGEBYSCORE": true, "ZREVRANGE": true,
	"XRANGE": true, "XREVRANGE": true, "XLEN": true,
	"BITCOUNT": true, "GETBIT": true, "PING": true, "ECHO": true, "TIME": true,
	"DBSIZE": true, "KEYS": true, "SCAN": true, "SSCAN": true, "HSCAN": true,
	"ZSCAN": true, "EVAL_RO": true, "EVALSHA_RO": true,
}

// allSafeToRepeat reports whether every command of a batch is safe to repeat.
func allSafeToRepeat(cmds []Command) bool {
	for _, cmd := range cmds {
		if !cmd.safeToRepeat() {
			return false
		}
	}
	return true
}

// send posts body to path, retrying as the policy and idempotency allow, and
// returns the body of a 2xx response. Non-2xx responses become errors.
// idempotent says that every command in body is safe to repeat. label
// names the call in errors; "" (an auto-pipelined batch, whose callers
// each put their own command's name on its errors) leaves them unnamed.
func (c *Client) send(ctx context.Context, path string, body []byte, idempotent bool, label string) ([]byte, error) {
	return c.sendLimited(ctx, path, body, idempotent, label, c.settings.limits.MaxResponseBytes)
}

// sendLimited is send with maxResponse bounding the reply instead of
// Limits.MaxResponseBytes.
func (c *Client) sendLimited(ctx context.Context, path string, body []byte, idempotent bool, label string, maxResponse int64) ([]byte, error) {
	if _, ok := ctx.Deadline(); !ok && c.settings.timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.settings.timeout)
		defer cancel()
	}
	policy := c.settings.retry
	backoff := policy.MinBackoff
	var last attemptOutcome
	var lastErr error
	for attempt := 0; ; attempt++ {
		// No attempt starts once the context is done. (net/http would give
		// up before any trace event, which mayHaveSent could not tell from
		// a failure after sending.)
		if ctxErr := ctxDone(ctx); ctxErr != nil {
			if attempt == 0 {
				return nil, callErrorf(label, "%w", ctxErr)
			}
			return nil, finalError(ctxErr, lastErr, last, idempotent, label)
		}
		out := c.attempt(ctx, path, body, idempotent, maxResponse)
		err := out.err
		if err == nil {
			if out.token != "" {
				c.SetSyncToken(out.token)
			}
			if out.status >= 200 && out.status < 300 {
				return out.body, nil
			}
			err = c.statusError(out, label)
		}
		retry := retryable(out, idempotent)
		if ctxErr := ctx.Err(); ctxErr != nil {
			return nil, finalError(ctxErr, err, out, idempotent, label)
		}
		if !retry || attempt >= policy.MaxRetries {
			return nil, finalError(nil, err, out, idempotent, label)
		}
		last, lastErr = out, err
		wait := backoff/2 + rand.N(backoff/2+1)
		if dl, ok := ctx.Deadline(); ok && time.Until(dl) < wait+minAttemptTime {
			return nil, finalError(context.DeadlineExceeded, err, out, idempotent, label)
		}
		c.log.DebugContext(ctx, "upstash: retrying", "command", logLabel(label), "attempt", attempt+1, "wait", wait, "error", err)
		timer := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			timer.Stop()
			return nil, finalError(ctx.Err(), err, out, idempotent, label)
		case <-timer.C:
		}
		backoff = min(backoff*2, policy.MaxBackoff)
	}
}

// minAttemptTime is the least time a retry must have left after its
// backoff. One started at the very end of the budget cannot succeed, and it
// could turn a clean "never sent" into ErrOutcomeUnknown by reaching the
// server just as the deadline cancels it.
const minAttemptTime = 5 * time.Millisecond

// ctxDone is ctx.Err(), except that it reports DeadlineExceeded as soon as
// the deadline has passed: the context's own timer fires a little later, and
// an attempt started in between would start after the deadline.
func ctxDone(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if dl, ok := ctx.Deadline(); ok && !time.Now().Before(dl) {
		return context.DeadlineExceeded
	}
	return nil
}

// retryable reports whether a failed attempt may be repeated.
func retryable(out attemptOutcome, idempotent bool) bool {
	if out.answered {
		return false
	}
	if out.err != nil {
		return !out.wrote || idempotent
	}
	// The server answered. Only server-side failures are worth repeating, and
	// only when repeating cannot apply a command twice.
	return idempotent && (out.status >= 500 && out.status != http.StatusNotImplemented || out.status == http.StatusTooManyRequests)
}

// mayHaveSent reports whether a request that failed with err may have
// reached the server. net/http's transports report through httptrace when
// they get a connection and when they have written the headers. When the
// transport is the client's default one (knownTransport), a failure before
// any trace event (an invalid header, say) sent nothing; any other
// transport is only trusted for errors that come before any connection
// exists: a failed dial or DNS lookup.
func mayHaveSent(err error, knownTransport, traced, wroteHeaders bool) bool {
	if wroteHeaders {
		return true
	}
	if traced || knownTransport {
		return false
	}
	var op *net.OpError
	if errors.As(err, &op) && op.Op == "dial" {
		return false
	}
	var dns *net.DNSError
	return !errors.As(err, &dns)
}

// finalError builds the error of a request that will not be tried again:
// "upstash: LABEL: …", matching ErrOutcomeUnknown when the request is not
// safe to repeat and may have run (see mayHaveRun), and ctxErr when the
// context ended the call.
func finalError(ctxErr, err error, out attemptOutcome, idempotent bool, label string) error {
	ambiguous := !idempotent && out.mayHaveRun()
	switch {
	case ambiguous && ctxErr != nil:
		return callErrorf(label, "%w: %w (last error: %w)", ErrOutcomeUnknown, ctxErr, err)
	case ambiguous:
		return callErrorf(label, "%w: %w", ErrOutcomeUnknown, err)
	case ctxErr != nil && !errors.Is(err, ctxErr):
		return callErrorf(label, "%w (last error: %w)", ctxErr, err)
	}
	return withLabel(label, err)
}

// unreadableReply is the error of a 2xx reply whose body could not be
// decoded (err matches ErrProtocol): the command ran, so for a request not
// safe to repeat, what it did is unknown. Other errors (a Redis error reply,
// which is a clear answer) are returned as they are.
func unreadableReply(err error, idempotent bool, label string) error {
	if err == nil || idempotent || !errors.Is(err, ErrProtocol) {
		return err
	}
	return callErrorf(label, "%w: %w", ErrOutcomeUnknown, err)
}
