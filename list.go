package upstash

import (
	"context"
	_ "embed"
	"encoding/json"
	"fmt"
	"strconv"
	"time"
)

// ListOptions tunes AppendToList. The zero value appends without trimming
// and leaves the list's TTL as it is.
type ListOptions struct {
	// MaxLength keeps only the newest MaxLength items after the append; 0
	// (the zero value) means no trimming. Negative values and values above
	// MaxListLength are refused.
	MaxLength int
	// TTL sets the whole list to expire TTL after this append; 0 (the zero
	// value) keeps the list's current TTL, possibly none. Negative values
	// are refused.
	TTL time.Duration
}

// MaxListLength is the largest ListOptions.MaxLength and Enqueue maxSize
// accepted: 2^53 − 1, the largest integer JavaScript (the TypeScript
// adapters) and a Lua script's numbers hold exactly. Larger values are
// refused with ErrInvalidArgument before anything is sent.
const MaxListLength = 1<<53 - 1

// checkLength refuses a negative or too large MaxLength or maxSize.
func checkLength(what, id string, n int) error {
	if n < 0 || int64(n) > MaxListLength {
		return fmt.Errorf("%w: %q: %s %d is outside [0, 2^53-1]", ErrInvalidArgument, id, what, n)
	}
	return nil
}

//go:embed append.lua
var appendSource string

var appendScript = NewScript(appendSource).Idempotent()

// AppendToList appends value's JSON (encoded as in Set) to {p}:list:{key}
// in one script: RPUSH; LTRIM to the newest opts.MaxLength items when it is
// positive; PEXPIRE opts.TTL when it is positive (otherwise the list keeps
// its TTL, possibly none). A negative TTL, or a MaxLength that is negative
// or above MaxListLength, is refused with ErrInvalidArgument (state-redis
// ignores a negative MaxLength, while the memory and pg adapters wipe the
// list). The script carries an operation id (see State): a retry after a
// lost reply never appends the item twice.
func (s *State) AppendToList(ctx context.Context, key string, value any, opts ListOptions) error {
	return opError("AppendToList", s.appendToList(ctx, key, value, opts))
}

func (s *State) appendToList(ctx context.Context, key string, value any, opts ListOptions) error {
	if err := checkID("key", key); err != nil {
		return err
	}
	if err := checkLength("MaxLength", key, opts.MaxLength); err != nil {
		return err
	}
	if opts.TTL < 0 {
		return fmt.Errorf("%w: key %q: negative TTL %v", ErrInvalidArgument, key, opts.TTL)
	}
	data, err := encodeJSON(strconv.Quote(key), value)
	if err != nil {
		return err
	}
	_, err = s.runOp(ctx, appendScript, []string{s.listKey(key)}, string(data), strconv.Itoa(opts.MaxLength), msArg(opts.TTL))
	return err
}

// GetList runs LRANGE {p}:list:{key} 0 -1 and returns the items oldest
// first; a missing key gives an empty, non-nil slice. An item that is not
// valid JSON gives a *CorruptValueError with its index; nothing is deleted.
func (s *State) GetList(ctx context.Context, key string) ([]json.RawMessage, error) {
	items, err := s.getList(ctx, key)
	return items, opError("GetList", err)
}

func (s *State) getList(ctx context.Context, key string) ([]json.RawMessage, error) {
	if err := checkID("key", key); err != nil {
		return nil, err
	}
	rkey := s.listKey(key)
	v, err := s.c.Run(ctx, Cmd("LRANGE", rkey, 0, -1))
	if err != nil {
		return nil, err
	}
	items, err := v.Array()
	if err != nil {
		return nil, wrapf(err, "LRANGE %q", rkey)
	}
	out := make([]json.RawMessage, len(items))
	for i, it := range items {
		b, err := it.Bytes()
		if err != nil {
			return nil, wrapf(err, "LRANGE %q item %d", rkey, i)
		}
		if out[i], err = checkStored(rkey, i, b); err != nil {
			return nil, err
		}
	}
	return out, nil
}
