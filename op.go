package upstash

import (
	"context"
	"crypto/rand"
	_ "embed"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"
)

// Operation ids: how the state layer makes its writes safe to send again.
//
// Each State operation whose repeat could change anything runs as one
// script that takes a random operation id, made once per call (not per
// attempt, so the client's retries and net/http's own resends carry the
// same id). The script first looks for {p}:op:{opID}: if it is there, the
// operation already ran, and the script returns the recorded outcome
// without applying anything; otherwise it applies the operation and
// records its outcome there, in the same atomic script. Locks use their
// token instead (see acquire.lua). The scripts are therefore marked
// Idempotent, and the client retries them like reads.

// minOpRecordTTL is the least time {p}:op:{opID} is kept: longer than any
// retry window of the client short of a deadline set on purpose (its
// default budget is 10 s), so a late resend still finds the record.
const minOpRecordTTL = 10 * time.Minute

// opRecordTTL is how long the record of an operation called with ctx is
// kept: minOpRecordTTL, or the time left until ctx's deadline plus a minute
// when that is longer.
func opRecordTTL(ctx context.Context) time.Duration {
	ttl := minOpRecordTTL
	if dl, ok := ctx.Deadline(); ok {
		ttl = max(ttl, time.Until(dl)+time.Minute)
	}
	return ttl
}

// NewOperationID returns a new operation id for AdmitRequest.OperationID
// or FinishRequest.OperationID: 32 hex digits from crypto/rand. Make one per
// operation, before its first call, and send the same request again with it
// when that call failed with ErrOutcomeUnknown.
func NewOperationID() (string, error) { return newOpID() }

// Limits of an operation id given by the caller.
const (
	minOperationIDLen = 16
	maxOperationIDLen = 64
)

// checkOperationID refuses an operation id given by the caller that is not
// 16 to 64 ASCII letters, digits, '-' or '_'.
func checkOperationID(id string) error {
	if len(id) < minOperationIDLen || len(id) > maxOperationIDLen {
		return fmt.Errorf("%w: operation id of %d bytes (want %d to %d)", ErrInvalidArgument, len(id), minOperationIDLen, maxOperationIDLen)
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
			return fmt.Errorf("%w: operation id %q: byte %d is not a letter, digit, '-' or '_'", ErrInvalidArgument, truncate(id, 64), i)
		}
	}
	return nil
}

// operationID is id, checked, or a fresh one when id is "".
func operationID(id string) (string, error) {
	if id == "" {
		return newOpID()
	}
	if err := checkOperationID(id); err != nil {
		return "", err
	}
	return id, nil
}

// newOpID returns 16 random bytes in hex.
func newOpID() (string, error) {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("operation id: %w", err)
	}
	return hex.EncodeToString(b[:]), nil
}

// msArg is d in whole milliseconds (a sub-millisecond remainder rounded
// up) as a decimal string: scripts pass it on to Redis untouched, so Lua
// never formats it as a float.
func msArg(d time.Duration) string { return strconv.FormatInt(durationMillis(d), 10) }

// runOp runs script with a fresh operation id: KEYS are {p}:op:{opID}
// followed by keys, ARGV the record's TTL in ms followed by args. The error
// of a call that may have applied the operation matches ErrOutcomeUnknown
// (see inDoubt).
func (s *State) runOp(ctx context.Context, script *Script, keys []string, args ...any) (Value, error) {
	if err := ctx.Err(); err != nil {
		return Value{}, err // nothing is sent
	}
	id, err := newOpID()
	if err != nil {
		return Value{}, err
	}
	return s.runOpID(ctx, id, script, keys, args...)
}

// runOpID is runOp with the operation id id.
func (s *State) runOpID(ctx context.Context, id string, script *Script, keys []string, args ...any) (Value, error) {
	if err := ctx.Err(); err != nil {
		return Value{}, err // nothing is sent
	}
	allKeys := append([]string{s.opKey(id)}, keys...)
	allArgs := append([]any{msArg(opRecordTTL(ctx))}, args...)
	v, err := script.Run(ctx, s.c, allKeys, allArgs...)
	return v, inDoubt(err)
}

// inDoubt returns the error of an operation-id script whose every attempt
// failed, made to match ErrOutcomeUnknown unless it proves that the
// operation was not applied: a refusal before sending (invalid argument,
// request too large, configuration) or an answer of the server that is
// not a 5xx, 408 or 429 (a Redis error such as WRONGTYPE, a 401), which
// comes from a script that stopped before writing anything. Any other
// failure (a lost reply, a reset, a 5xx, a deadline) may follow an earlier
// attempt that ran: the operation then ran once or not at all.
func inDoubt(err error) error {
	if err == nil || errors.Is(err, ErrOutcomeUnknown) {
		return err
	}
	if errors.Is(err, ErrInvalidArgument) || errors.Is(err, ErrRequestTooLarge) || errors.Is(err, ErrConfig) || errors.Is(err, ErrUnauthorized) {
		return err
	}
	var e *Error
	if errors.As(err, &e) && e.Status < 500 && e.Status != http.StatusRequestTimeout && e.Status != http.StatusTooManyRequests {
		return err
	}
	return fmt.Errorf("%w: %w", ErrOutcomeUnknown, unprefixed{err})
}

// opReply returns the string an operation script replied.
func opReply(v Value, what string) (string, error) {
	b, err := v.Bytes()
	if err != nil {
		return "", protocolErrorf("%s script replied %s", what, v)
	}
	return string(b), nil
}

// opFlag reads the '1' or '0' an operation script replied.
func opFlag(v Value, what string) (bool, error) {
	r, err := opReply(v, what)
	if err != nil {
		return false, err
	}
	switch r {
	case "1":
		return true, nil
	case "0":
		return false, nil
	}
	return false, protocolErrorf("%s script replied %q", what, truncate(r, 40))
}

// settled is err, known not to have applied anything after all: it matches
// what err matches (errors.Is, errors.As), except ErrOutcomeUnknown, and
// reads as err without its "upstash: " prefix.
type settled struct{ err error }

func (e settled) Error() string { return withoutPrefix(e.err) }

func (e settled) Is(target error) bool {
	return target != ErrOutcomeUnknown && errors.Is(e.err, target)
}

func (e settled) As(target any) bool { return errors.As(e.err, target) }
