package upstash

import (
	"context"
	"crypto/sha1"
	"encoding/hex"
)

// Script is a Lua script that is sent by its SHA-1 (EVALSHA) and re-sent in
// full (EVAL) when the server does not have it cached (NOSCRIPT), which on
// Upstash can happen at any time. A Script is immutable and safe for
// concurrent use; declare scripts once, as package variables.
type Script struct {
	source     string
	sha        string
	shaArg     any // sha, boxed once for every command
	idempotent bool
}

// NewScript returns a script for source. Its SHA-1 is computed locally.
func NewScript(source string) *Script {
	sum := sha1.Sum([]byte(source))
	sha := hex.EncodeToString(sum[:])
	return &Script{source: source, sha: sha, shaArg: sha}
}

// Idempotent returns a copy of the script marked safe to run twice (for
// example a token-checked release), so a request that may have reached the
// server can be retried after a lost reply.
func (s *Script) Idempotent() *Script {
	c := *s
	c.idempotent = true
	return &c
}

// SHA1 returns the script's SHA-1 in lower-case hex, as EVALSHA expects.
func (s *Script) SHA1() string { return s.sha }

// Source returns the script's Lua source.
func (s *Script) Source() string { return s.source }

// Cmd returns the EVALSHA command that runs the script with keys and args.
// Run and Pipeline fall back to EVAL when the server answers NOSCRIPT;
// Transaction sends the full source from the start.
func (s *Script) Cmd(keys []string, args ...any) Command {
	all := make([]any, 0, 3+len(keys)+len(args))
	all = append(all, "EVALSHA", s.shaArg, len(keys))
	for _, k := range keys {
		all = append(all, k)
	}
	return Command{args: append(all, args...), script: s}
}

// Run runs the script on c with keys and args.
func (s *Script) Run(ctx context.Context, c *Client, keys []string, args ...any) (Value, error) {
	return c.Run(ctx, s.Cmd(keys, args...))
}

// evalForm returns cmd with EVALSHA <sha> replaced by EVAL <source>.
func (cmd Command) evalForm() Command {
	args := make([]any, len(cmd.args))
	copy(args, cmd.args)
	args[0], args[1] = "EVAL", cmd.script.source
	cmd.args = args
	return cmd
}
