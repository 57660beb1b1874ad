package upstash

import (
	"context"
	"strings"
	"time"
)

// Command is one Redis command and its arguments, ready to send alone (Run),
// in a pipeline or in a transaction. Build it with Cmd or Script.Cmd.
//
// Arguments may be strings, []byte, integers, floats or bools (sent as "1" or
// "0"). Strings and byte slices must be valid UTF-8: a JSON request cannot
// carry other bytes unchanged, so the client refuses them before sending.
type Command struct {
	args       []any
	script     *Script // set for EVALSHA commands built by Script.Cmd
	idempotent bool    // marked safe to repeat by the caller
}

// Cmd builds a command from its name and arguments: Cmd("SET", "k", "v").
func Cmd(name string, args ...any) Command {
	all := make([]any, 0, len(args)+1)
	all = append(all, name)
	return Command{args: append(all, args...)}
}

// Idempotent marks the command as safe to send again after an attempt that
// may have applied it (a lost reply, a 5xx): the client then retries it, and
// lets net/http replay it on a dead pooled connection. Only mark a command
// whose repeat cannot change anything, even after other clients' writes in
// between: a plain SET or DEL is not one (a late repeat would overwrite or
// delete a newer value). Reads (GET, PTTL, EVAL_RO…) are safe without it.
func (c Command) Idempotent() Command {
	c.idempotent = true
	return c
}

// Name returns the command's name in upper case.
func (c Command) Name() string {
	if len(c.args) == 0 {
		return ""
	}
	if s, ok := c.args[0].(string); ok {
		return strings.ToUpper(s)
	}
	return ""
}

// ---- typed helpers for common commands ----

// Ping checks that the server answers and the token is accepted. Calling it
// once during a Lambda's init phase moves the TLS handshake out of the first
// invocation.
func (c *Client) Ping(ctx context.Context) error {
	_, err := c.Run(ctx, Cmd("PING"))
	return err
}

// Get returns the value stored at key, or ErrNil if there is none.
func (c *Client) Get(ctx context.Context, key string) ([]byte, error) {
	v, err := c.Run(ctx, Cmd("GET", key))
	if err != nil {
		return nil, err
	}
	b, err := v.Bytes()
	return b, withLabel("GET", err)
}

// Set stores value at key. A ttl of zero means no expiry (and clears any
// expiry the key had); a negative ttl is refused. The TTL is sent in
// milliseconds. It is not repeated after a lost reply (a late repeat could
// overwrite another client's newer value): if the outcome cannot be known
// the error matches ErrOutcomeUnknown.
func (c *Client) Set(ctx context.Context, key string, value any, ttl time.Duration) error {
	cmd, err := setCommand(key, value, ttl, false)
	if err != nil {
		return err
	}
	_, err = c.Run(ctx, cmd)
	return err
}

// SetNX stores value at key only if the key does not exist, and reports
// whether it did. It is not repeated after a lost reply: if the outcome
// cannot be known the error matches ErrOutcomeUnknown.
func (c *Client) SetNX(ctx context.Context, key string, value any, ttl time.Duration) (bool, error) {
	cmd, err := setCommand(key, value, ttl, true)
	if err != nil {
		return false, err
	}
	v, err := c.Run(ctx, cmd)
	if err != nil {
		return false, err
	}
	ok, err := v.Bool()
	return ok, unreadableReply(withLabel("SET", err), false, "SET")
}

func setCommand(key string, value any, ttl time.Duration, nx bool) (Command, error) {
	if ttl < 0 {
		return Command{}, callErrorf("SET", "%w: negative TTL %v", ErrInvalidArgument, ttl)
	}
	args := []any{key, value}
	if ttl > 0 {
		args = append(args, "PX", durationMillis(ttl))
	}
	if nx {
		args = append(args, "NX")
	}
	return Cmd("SET", args...), nil
}

// durationMillis converts d to whole milliseconds, rounding a positive
// sub-millisecond remainder up so that a TTL is never shortened to zero.
func durationMillis(d time.Duration) int64 {
	ms := d.Milliseconds()
	if d > 0 && time.Duration(ms)*time.Millisecond < d {
		ms++
	}
	return ms
}

// Del deletes keys and returns how many existed. It is not repeated after a
// lost reply (a late repeat could delete a value another client stored in
// between): if the outcome cannot be known the error matches
// ErrOutcomeUnknown.
func (c *Client) Del(ctx context.Context, keys ...string) (int64, error) {
	args := make([]any, len(keys))
	for i, k := range keys {
		args[i] = k
	}
	v, err := c.Run(ctx, Cmd("DEL", args...))
	if err != nil {
		return 0, err
	}
	n, err := v.Int64()
	return n, unreadableReply(withLabel("DEL", err), false, "DEL")
}

// Incr increments the integer at key and returns the new value. It is not
// repeated after a lost reply.
func (c *Client) Incr(ctx context.Context, key string) (int64, error) {
	v, err := c.Run(ctx, Cmd("INCR", key))
	if err != nil {
		return 0, err
	}
	n, err := v.Int64()
	return n, unreadableReply(withLabel("INCR", err), false, "INCR")
}

// PTTL returns the remaining time to live of key. It returns -1ms for a key
// without expiry and -2ms for a missing key, as Redis does.
func (c *Client) PTTL(ctx context.Context, key string) (time.Duration, error) {
	v, err := c.Run(ctx, Cmd("PTTL", key))
	if err != nil {
		return 0, err
	}
	n, err := v.Int64()
	return time.Duration(n) * time.Millisecond, withLabel("PTTL", err)
}
