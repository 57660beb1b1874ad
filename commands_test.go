package upstash_test

// Tests of the typed helpers (commands.go).

import (
	"errors"
	"fmt"
	"math"
	"testing"
	"time"

	"github.com/chatstate/upstash"
)

func TestTypedHelpers(t *testing.T) {
	c, mt, rec := newMock(t)
	on(mt, "", rec.sequence(
		canned{status: 200, body: `{"result":"PONG"}`},
		canned{status: 200, body: `{"result":"OK"}`},
		canned{status: 200, body: `{"result":"dg=="}`},
		canned{status: 200, body: `{"result":null}`},
		canned{status: 200, body: `{"result":"OK"}`},
		canned{status: 200, body: `{"result":null}`},
		canned{status: 200, body: `{"result":7}`},
		canned{status: 200, body: `{"result":2}`},
		canned{status: 200, body: `{"result":1500}`},
		canned{status: 200, body: `{"result":"OK"}`},
		canned{status: 200, body: `{"result":"OK"}`},
	))
	ctx := ctxT(t)
	if err := c.Ping(ctx); err != nil {
		t.Fatal(err)
	}
	if err := c.Set(ctx, "k", "v", 1500*time.Microsecond); err != nil {
		t.Fatal(err)
	}
	if b, err := c.Get(ctx, "k"); err != nil || string(b) != "v" {
		t.Fatalf("Get: %q %v", b, err)
	}
	if _, err := c.Get(ctx, "missing"); !errors.Is(err, upstash.ErrNil) {
		t.Fatalf("Get missing: %v", err)
	}
	if ok, err := c.SetNX(ctx, "k", "v", time.Minute); !ok || err != nil {
		t.Fatalf("SetNX: %v %v", ok, err)
	}
	if ok, err := c.SetNX(ctx, "k", "v", 0); ok || err != nil {
		t.Fatalf("SetNX on existing key: %v %v", ok, err)
	}
	if n, err := c.Incr(ctx, "n"); n != 7 || err != nil {
		t.Fatalf("Incr: %d %v", n, err)
	}
	if n, err := c.Del(ctx, "a", "b"); n != 2 || err != nil {
		t.Fatalf("Del: %d %v", n, err)
	}
	if d, err := c.PTTL(ctx, "k"); d != 1500*time.Millisecond || err != nil {
		t.Fatalf("PTTL: %v %v", d, err)
	}
	if err := c.Set(ctx, "k", 12, 0); err != nil {
		t.Fatal(err)
	}
	// The longest Duration is about 9.2e12 ms, far inside Redis's range
	// (an absolute expiry in ms up to 2^63-1): sent exactly, rounded up.
	if err := c.Set(ctx, "k", "v", time.Duration(math.MaxInt64)); err != nil {
		t.Fatal(err)
	}
	want := [][]string{
		{"PING"},
		{"SET", "k", "v", "PX", "2"},
		{"GET", "k"},
		{"GET", "missing"},
		{"SET", "k", "v", "PX", "60000", "NX"},
		{"SET", "k", "v", "NX"},
		{"INCR", "n"},
		{"DEL", "a", "b"},
		{"PTTL", "k"},
		{"SET", "k", "12"},
		{"SET", "k", "v", "PX", "9223372036855"},
	}
	calls := rec.all()
	for i := range want {
		if got := calls[i].bodyArgs(t); fmt.Sprint(got) != fmt.Sprint(want[i]) {
			t.Errorf("request %d = %q, want %q", i+1, got, want[i])
		}
	}
}
