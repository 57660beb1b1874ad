package upstash_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/chatstate/upstash"
)

func TestStateLayoutList(t *testing.T) {
	env := newStateEnv(t)
	ctx, c, s := ctxT(t), env.client, env.state
	for i := 0; i < 4; i++ {
		must(t, s.AppendToList(ctx, "msg-history:T1", map[string]int{"i": i}, upstash.ListOptions{MaxLength: 3, TTL: 7 * 24 * time.Hour}))
	}
	items, err := mustDo(t, c, "LRANGE", "chat-sdk:list:msg-history:T1", 0, -1).Strings()
	must(t, err)
	if want := []string{`{"i":1}`, `{"i":2}`, `{"i":3}`}; strings.Join(items, " ") != strings.Join(want, " ") {
		t.Errorf("LRANGE = %q, want %q", items, want)
	}
	wantTTLBetween(t, c, "chat-sdk:list:msg-history:T1", 7*24*time.Hour-time.Minute, 7*24*time.Hour)

	// TTL 0 keeps the TTL the list has.
	must(t, s.AppendToList(ctx, "msg-history:T1", "x", upstash.ListOptions{}))
	wantTTLBetween(t, c, "chat-sdk:list:msg-history:T1", 7*24*time.Hour-time.Minute, 7*24*time.Hour)
	must(t, s.AppendToList(ctx, "nottl", "x", upstash.ListOptions{}))
	if got := pttl(t, c, "chat-sdk:list:nottl"); got != -time.Millisecond {
		t.Errorf("PTTL of a list appended without TTL = %v", got)
	}

	mustDo(t, c, "RPUSH", "chat-sdk:list:fromts", `{"role":"user"}`, `"text"`)
	got, err := s.GetList(ctx, "fromts")
	must(t, err)
	if len(got) != 2 || string(got[0]) != `{"role":"user"}` || string(got[1]) != `"text"` {
		t.Errorf("GetList of a TypeScript list = %s", got)
	}
}

func TestStateCorruptListItem(t *testing.T) {
	env := newStateEnv(t)
	ctx, c, s := ctxT(t), env.client, env.state
	var ce *upstash.CorruptValueError
	mustDo(t, c, "RPUSH", "chat-sdk:list:bad", `"ok"`, `{broken`, `"ok2"`)
	_, err := s.GetList(ctx, "bad")
	if !errors.As(err, &ce) || ce.Index != 1 || ce.Key != "chat-sdk:list:bad" || string(ce.Raw) != `{broken` {
		t.Fatalf("GetList with a corrupt item: %v (%+v)", err, ce)
	}
	if n := rawInt(t, c, "LLEN", "chat-sdk:list:bad"); n != 3 {
		t.Errorf("LLEN after a corrupt GetList = %d, want 3", n)
	}
}
