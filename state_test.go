package upstash_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"math"
	"net/http"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/chatstate/upstash"
	"github.com/chatstate/upstash/statetest"
	"github.com/chatstate/upstash/upstashtest"
)

// ---- helpers ----

type stateEnv struct {
	srv    *upstashtest.Server
	client *upstash.Client
	state  *upstash.State
}

// newStateEnv starts a test server (the backend UPSTASHTEST_REDIS picks)
// and a State over it.
func newStateEnv(t *testing.T, opts ...upstash.StateOption) stateEnv {
	t.Helper()
	srv := upstashtest.NewServer(t)
	c, err := upstash.New(upstash.Config{URL: srv.URL, Token: srv.Token})
	if err != nil {
		t.Fatal(err)
	}
	return stateEnv{srv: srv, client: c, state: upstash.NewState(c, opts...)}
}

func testCtx(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// raw runs a command through the client, bypassing the State.
func raw(t *testing.T, c *upstash.Client, name string, args ...any) upstash.Value {
	t.Helper()
	v, err := c.Do(testCtx(t), name, args...)
	if err != nil {
		t.Fatalf("%s %v: %v", name, args, err)
	}
	return v
}

func rawString(t *testing.T, c *upstash.Client, name string, args ...any) string {
	t.Helper()
	b, err := raw(t, c, name, args...).Bytes()
	if err != nil {
		t.Fatalf("%s %v: %v", name, args, err)
	}
	return string(b)
}

func rawInt(t *testing.T, c *upstash.Client, name string, args ...any) int64 {
	t.Helper()
	n, err := raw(t, c, name, args...).Int64()
	if err != nil {
		t.Fatalf("%s %v: %v", name, args, err)
	}
	return n
}

func rawStrings(t *testing.T, c *upstash.Client, name string, args ...any) []string {
	t.Helper()
	ss, err := raw(t, c, name, args...).Strings()
	if err != nil {
		t.Fatalf("%s %v: %v", name, args, err)
	}
	return ss
}

func pttl(t *testing.T, c *upstash.Client, key string) time.Duration {
	t.Helper()
	return time.Duration(rawInt(t, c, "PTTL", key)) * time.Millisecond
}

func wantTTLBetween(t *testing.T, c *upstash.Client, key string, lo, hi time.Duration) {
	t.Helper()
	if got := pttl(t, c, key); got < lo || got > hi {
		t.Errorf("PTTL %s = %v, want within [%v, %v]", key, got, lo, hi)
	}
}

func randomHex(t *testing.T, n int) string {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// ---- conformance ----

func TestStateConformance(t *testing.T) {
	env := newStateEnv(t)
	statetest.Run(t, func(*testing.T) upstash.StateAdapter { return env.state })
}

func TestStateConformanceUpstash(t *testing.T) {
	url, token := os.Getenv(upstash.EnvURL), os.Getenv(upstash.EnvToken)
	if url == "" || token == "" {
		t.Skipf("set %s and %s to run the conformance suite against a real Upstash database", upstash.EnvURL, upstash.EnvToken)
	}
	c, err := upstash.New(upstash.Config{URL: url, Token: token})
	must(t, err)
	prefix := "statetest-" + randomHex(t, 6)
	t.Logf("key prefix %s", prefix)
	t.Cleanup(func() { deleteByPrefix(t, c, prefix) })
	s := upstash.NewState(c, upstash.WithKeyPrefix(prefix))
	statetest.Run(t, func(*testing.T) upstash.StateAdapter { return s })
}

// deleteByPrefix removes the keys a run left behind.
func deleteByPrefix(t *testing.T, c *upstash.Client, prefix string) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cursor := "0"
	for {
		v, err := c.Do(ctx, "SCAN", cursor, "MATCH", prefix+":*", "COUNT", 500)
		if err != nil {
			t.Logf("cleanup: %v", err)
			return
		}
		parts, err := v.Array()
		if err != nil || len(parts) != 2 {
			t.Logf("cleanup: SCAN replied %v", v)
			return
		}
		cursor, _ = parts[0].Text()
		keys, _ := parts[1].Strings()
		for _, k := range keys {
			if _, err := c.Del(ctx, k); err != nil {
				t.Logf("cleanup: %v", err)
				return
			}
		}
		if cursor == "0" {
			return
		}
	}
}

// ---- byte layout (what @chat-adapter/state-redis reads and writes) ----

func TestStateLayoutCache(t *testing.T) {
	env := newStateEnv(t)
	ctx, c, s := testCtx(t), env.client, env.state
	cases := []struct {
		key   string
		value any
		want  string
	}{
		{"k", map[string]int{"a": 1}, `{"a":1}`},
		{"str", "abc", `"abc"`},
		{"dedupe:slack:1", true, `true`},
		{"num", 1.5e21, `1.5e+21`},
		{"html", "<b>&</b>", `"<b>&</b>"`},
		{"raw", json.RawMessage(`{"b": [1, 2]}`), `{"b": [1, 2]}`},
		{"bytes", []byte("hi"), `"aGk="`},
		{"null", nil, `null`},
		{"line separators", "a\u2028b\u2029c", "\"a\u2028b\u2029c\""}, // raw, as JSON.stringify
		{"backslash u2028 text", `a\u2028`, `"a\\u2028"`},
		{"negative zero", math.Copysign(0, -1), `0`},
		{"quoted -0 and separators", "say \"-0\"\u2028\\", "\"say \\\"-0\\\"\u2028\\\\\""},
		{"key -0", map[string]int{"-0": -0}, `{"-0":0}`},
		{"negative zero inside", map[string]any{"z": []float64{math.Copysign(0, -1), -0.5}}, `{"z":[0,-0.5]}`},
		{"struct", struct {
			A string `json:"a"`
			B int    `json:"b,omitempty"`
		}{A: "x"}, `{"a":"x"}`},
	}
	for _, tc := range cases {
		must(t, s.Set(ctx, tc.key, tc.value, 0))
		if got := rawString(t, c, "GET", "chat-sdk:cache:"+tc.key); got != tc.want {
			t.Errorf("GET chat-sdk:cache:%s = %s, want %s", tc.key, got, tc.want)
		}
		if got := pttl(t, c, "chat-sdk:cache:"+tc.key); got != -time.Millisecond {
			t.Errorf("PTTL after Set with ttl 0 = %v, want -1ms (no expiry)", got)
		}
	}

	must(t, s.Set(ctx, "ttl", "v", 5*time.Second))
	wantTTLBetween(t, c, "chat-sdk:cache:ttl", 4*time.Second, 5*time.Second)
	must(t, s.Set(ctx, "ttl", "v", 0))
	if got := pttl(t, c, "chat-sdk:cache:ttl"); got != -time.Millisecond {
		t.Errorf("PTTL after a Set without TTL = %v, want -1ms: the TTL must be cleared", got)
	}
	ok, err := s.SetIfNotExists(ctx, "nx", map[string]bool{"seen": true}, 10*time.Minute)
	must(t, err)
	if !ok {
		t.Fatal("SetIfNotExists = false")
	}
	if got := rawString(t, c, "GET", "chat-sdk:cache:nx"); got != `{"seen":true}` {
		t.Errorf("GET chat-sdk:cache:nx = %s", got)
	}
	wantTTLBetween(t, c, "chat-sdk:cache:nx", 9*time.Minute, 10*time.Minute)

	// A value written by TypeScript (JSON.stringify) is read back as is.
	raw(t, c, "SET", "chat-sdk:cache:fromts", `{"url":"https://x/y?a=1&b=2","n":1.25}`)
	got, err := s.Get(ctx, "fromts")
	must(t, err)
	if string(got) != `{"url":"https://x/y?a=1&b=2","n":1.25}` {
		t.Errorf("Get of a TypeScript value = %s", got)
	}
	must(t, s.Delete(ctx, "fromts"))
	if n := rawInt(t, c, "EXISTS", "chat-sdk:cache:fromts"); n != 0 {
		t.Errorf("EXISTS after Delete = %d", n)
	}
}

func TestStateLayoutLock(t *testing.T) {
	env := newStateEnv(t)
	ctx, c, s := testCtx(t), env.client, env.state
	lock, err := s.AcquireLock(ctx, "slack:C1:1.2", 30*time.Second)
	must(t, err)
	if lock == nil {
		t.Fatal("AcquireLock = nil")
	}
	if !regexp.MustCompile(`^go_[0-9a-f]{32}$`).MatchString(lock.Token) {
		t.Errorf("token %q is not go_ + 32 hex digits", lock.Token)
	}
	key := "chat-sdk:lock:slack:C1:1.2"
	if got := rawString(t, c, "GET", key); got != lock.Token {
		t.Errorf("GET %s = %q, want the token %q", key, got, lock.Token)
	}
	wantTTLBetween(t, c, key, 29*time.Second, 30*time.Second)
	// ExpiresAt is never later than the server's expiry.
	if serverExpiry := time.Now().Add(pttl(t, c, key)); lock.ExpiresAt.After(serverExpiry.Add(5 * time.Millisecond)) {
		t.Errorf("ExpiresAt %v is after the server's expiry %v", lock.ExpiresAt, serverExpiry)
	}

	ok, err := s.ExtendLock(ctx, lock, 2*time.Minute)
	must(t, err)
	if !ok {
		t.Fatal("ExtendLock = false")
	}
	wantTTLBetween(t, c, key, 119*time.Second, 2*time.Minute)
	ok, err = s.ExtendLock(ctx, lock, 10*time.Second) // sets, does not add
	must(t, err)
	if !ok {
		t.Fatal("ExtendLock = false")
	}
	wantTTLBetween(t, c, key, 9*time.Second, 10*time.Second)

	// A lock taken by TypeScript is respected, and its JSON decodes.
	raw(t, c, "SET", "chat-sdk:lock:ts", "redis_1712345678901_abc123", "PX", 30000)
	if l, err := s.AcquireLock(ctx, "ts", time.Minute); err != nil || l != nil {
		t.Fatalf("AcquireLock of a TypeScript-held lock = %v, %v", l, err)
	}
	var tsLock upstash.Lock
	must(t, json.Unmarshal([]byte(`{"threadId":"ts","token":"redis_1712345678901_abc123","expiresAt":1712345708901}`), &tsLock))
	must(t, s.ReleaseLock(ctx, &tsLock))
	if n := rawInt(t, c, "EXISTS", "chat-sdk:lock:ts"); n != 0 {
		t.Errorf("the TypeScript lock survived ReleaseLock with its own token")
	}

	must(t, s.ForceReleaseLock(ctx, "slack:C1:1.2"))
	if n := rawInt(t, c, "EXISTS", key); n != 0 {
		t.Errorf("EXISTS %s after ForceReleaseLock = %d", key, n)
	}
}

func TestStateLayoutSubscriptions(t *testing.T) {
	env := newStateEnv(t)
	ctx, c, s := testCtx(t), env.client, env.state
	must(t, s.Subscribe(ctx, "slack:C1:1.2"))
	if got := rawString(t, c, "TYPE", "chat-sdk:subscriptions"); got != "set" {
		t.Errorf("TYPE chat-sdk:subscriptions = %s, want set", got)
	}
	if n := rawInt(t, c, "SISMEMBER", "chat-sdk:subscriptions", "slack:C1:1.2"); n != 1 {
		t.Errorf("SISMEMBER = %d, want 1", n)
	}
	if got := pttl(t, c, "chat-sdk:subscriptions"); got != -time.Millisecond {
		t.Errorf("PTTL of the subscriptions set = %v, want none", got)
	}
	raw(t, c, "SADD", "chat-sdk:subscriptions", "from-ts")
	if ok, err := s.IsSubscribed(ctx, "from-ts"); err != nil || !ok {
		t.Errorf("IsSubscribed of a TypeScript subscription = %v, %v", ok, err)
	}
	must(t, s.Unsubscribe(ctx, "slack:C1:1.2"))
	if n := rawInt(t, c, "SISMEMBER", "chat-sdk:subscriptions", "slack:C1:1.2"); n != 0 {
		t.Errorf("SISMEMBER after Unsubscribe = %d", n)
	}
}

func TestStateLayoutList(t *testing.T) {
	env := newStateEnv(t)
	ctx, c, s := testCtx(t), env.client, env.state
	for i := 0; i < 4; i++ {
		must(t, s.AppendToList(ctx, "msg-history:T1", map[string]int{"i": i}, upstash.ListOptions{MaxLength: 3, TTL: 7 * 24 * time.Hour}))
	}
	items, err := raw(t, c, "LRANGE", "chat-sdk:list:msg-history:T1", 0, -1).Strings()
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

	raw(t, c, "RPUSH", "chat-sdk:list:fromts", `{"role":"user"}`, `"text"`)
	got, err := s.GetList(ctx, "fromts")
	must(t, err)
	if len(got) != 2 || string(got[0]) != `{"role":"user"}` || string(got[1]) != `"text"` {
		t.Errorf("GetList of a TypeScript list = %s", got)
	}
}

func TestStateLayoutQueue(t *testing.T) {
	env := newStateEnv(t)
	ctx, c, s := testCtx(t), env.client, env.state
	enq := time.UnixMilli(time.Now().UnixMilli())
	e := upstash.QueueEntry{Message: json.RawMessage(`{"text":"hi"}`), EnqueuedAt: enq, ExpiresAt: enq.Add(90 * time.Second)}
	n, err := s.Enqueue(ctx, "T1", e, 10)
	must(t, err)
	if n != 1 {
		t.Fatalf("Enqueue = %d", n)
	}
	want := `{"message":{"text":"hi"},"enqueuedAt":` + itoa(enq.UnixMilli()) + `,"expiresAt":` + itoa(enq.UnixMilli()+90000) + `}`
	if got := rawString(t, c, "LINDEX", "chat-sdk:queue:T1", 0); got != want {
		t.Errorf("LINDEX chat-sdk:queue:T1 0 =\n%s\nwant\n%s", got, want)
	}
	// The list TTL is max(entry's remaining time, 60 s).
	wantTTLBetween(t, c, "chat-sdk:queue:T1", 88*time.Second, 90*time.Second)
	short, err := upstash.NewQueueEntry("x", 5*time.Second)
	must(t, err)
	_, err = s.Enqueue(ctx, "T2", short, 0)
	must(t, err)
	wantTTLBetween(t, c, "chat-sdk:queue:T2", 59*time.Second, 60*time.Second)

	// An entry written by TypeScript is dequeued.
	now := time.Now().UnixMilli()
	raw(t, c, "RPUSH", "chat-sdk:queue:T3",
		`{"message":{"id":"old"},"enqueuedAt":1,"expiresAt":2}`,
		`{"message":{"id":"m1","raw":{"a":[1,2]}},"enqueuedAt":`+itoa(now)+`,"expiresAt":`+itoa(now+90000)+`}`)
	got, err := s.Dequeue(ctx, "T3")
	must(t, err)
	if got == nil || string(got.Message) != `{"id":"m1","raw":{"a":[1,2]}}` || got.ExpiresAt.UnixMilli() != now+90000 {
		t.Fatalf("Dequeue of TypeScript entries = %+v", got)
	}
	if n := rawInt(t, c, "LLEN", "chat-sdk:queue:T3"); n != 0 {
		t.Errorf("LLEN after dequeuing = %d, want 0 (the expired entry is discarded)", n)
	}

	// Entries the script cannot read from their tail are decoded in full:
	// another key order, whitespace. A message nested deeper than cjson
	// decodes is read from the tail.
	deep := strings.Repeat("[", 1000) + strings.Repeat("]", 1000)
	exp := itoa(now + 90000)
	for name, entry := range map[string]string{
		"expiresAt first": `{"expiresAt":` + exp + `,"message":"a","enqueuedAt":1}`,
		"spaces":          `{ "message" : "b" , "enqueuedAt" : 1 , "expiresAt" : ` + exp + ` }`,
		"deep message":    `{"message":` + deep + `,"enqueuedAt":1,"expiresAt":` + exp + `}`,
		"float expiresAt": `{"message":"c","enqueuedAt":1,"expiresAt":` + exp + `.5}`,
	} {
		raw(t, c, "RPUSH", "chat-sdk:queue:T4", `{"message":"stale","enqueuedAt":1,"expiresAt":2}`, entry)
		got, err := s.Dequeue(ctx, "T4")
		if err != nil || got == nil || got.ExpiresAt.UnixMilli() != now+90000 {
			t.Errorf("Dequeue of an entry with %s = %+v, %v", name, got, err)
		}
		if n := rawInt(t, c, "LLEN", "chat-sdk:queue:T4"); n != 0 {
			t.Errorf("%s: LLEN after Dequeue = %d, want 0", name, n)
		}
	}
}

func TestStateKeyPrefix(t *testing.T) {
	env := newStateEnv(t, upstash.WithKeyPrefix("myapp"))
	ctx, c, s := testCtx(t), env.client, env.state
	must(t, s.Set(ctx, "k", 1, 0))
	must(t, s.Subscribe(ctx, "t"))
	must(t, s.AppendToList(ctx, "l", 1, upstash.ListOptions{}))
	e, err := upstash.NewQueueEntry(1, time.Minute)
	must(t, err)
	_, err = s.Enqueue(ctx, "q", e, 0)
	must(t, err)
	lock, err := s.AcquireLock(ctx, "t", time.Minute)
	must(t, err)
	for _, key := range []string{"myapp:cache:k", "myapp:subscriptions", "myapp:list:l", "myapp:queue:q", "myapp:lock:t"} {
		if n := rawInt(t, c, "EXISTS", key); n != 1 {
			t.Errorf("EXISTS %s = %d, want 1", key, n)
		}
	}
	keys, err := raw(t, c, "KEYS", "chat-sdk:*").Strings()
	must(t, err)
	if len(keys) != 0 {
		t.Errorf("keys under the default prefix: %q", keys)
	}
	if rawString(t, c, "GET", "myapp:lock:t") != lock.Token {
		t.Error("lock token not under the custom prefix")
	}

	// "" means the default, as in state-redis.
	def := upstash.NewState(c, upstash.WithKeyPrefix(""))
	must(t, def.Set(ctx, "k", 2, 0))
	if got := rawString(t, c, "GET", "chat-sdk:cache:k"); got != "2" {
		t.Errorf("GET chat-sdk:cache:k = %s", got)
	}
	if def.Client() != c {
		t.Error("Client() is not the client given to NewState")
	}
}

// ---- corrupt data ----

func TestStateCorruptValues(t *testing.T) {
	env := newStateEnv(t)
	ctx, c, s := testCtx(t), env.client, env.state

	raw(t, c, "SET", "chat-sdk:cache:bad", "not json")
	v, err := s.Get(ctx, "bad")
	var ce *upstash.CorruptValueError
	if !errors.As(err, &ce) || !errors.Is(err, upstash.ErrCorruptValue) || v != nil {
		t.Fatalf("Get of a non-JSON value = %q, %v; want a *CorruptValueError", v, err)
	}
	if ce.Key != "chat-sdk:cache:bad" || ce.Index != -1 || string(ce.Raw) != "not json" {
		t.Errorf("CorruptValueError = %+v", ce)
	}
	if !strings.Contains(err.Error(), "chat-sdk:cache:bad") {
		t.Errorf("error text %q does not name the key", err)
	}
	if got := rawString(t, c, "GET", "chat-sdk:cache:bad"); got != "not json" {
		t.Errorf("the corrupt value was changed to %q", got)
	}
	_, _, err = upstash.GetJSON[string](ctx, s, "bad")
	if !errors.Is(err, upstash.ErrCorruptValue) {
		t.Errorf("GetJSON of a corrupt value: %v", err)
	}

	// The REST client refuses to send invalid UTF-8, so seed it directly.
	if _, err := env.srv.Do("SET", "chat-sdk:cache:binary", "\"\xff\""); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Get(ctx, "binary"); !errors.Is(err, upstash.ErrCorruptValue) {
		t.Errorf("Get of invalid UTF-8: %v", err)
	}

	raw(t, c, "RPUSH", "chat-sdk:list:bad", `"ok"`, `{broken`, `"ok2"`)
	_, err = s.GetList(ctx, "bad")
	if !errors.As(err, &ce) || ce.Index != 1 || ce.Key != "chat-sdk:list:bad" || string(ce.Raw) != `{broken` {
		t.Fatalf("GetList with a corrupt item: %v (%+v)", err, ce)
	}
	if n := rawInt(t, c, "LLEN", "chat-sdk:list:bad"); n != 3 {
		t.Errorf("LLEN after a corrupt GetList = %d, want 3", n)
	}

	// A corrupt queue entry is moved to the dead-letter list, not lost, and
	// does not block the queue: the next Dequeue returns the next entry.
	// The last case has a readable expiresAt at its end but is not JSON, so
	// the script pops it and Go moves it.
	for _, bad := range []string{`not json`, `{"message":1}`, `{"message":1,"expiresAt":"soon"}`, `[1,2]`, `"str"`, `{"message":,"expiresAt":99999999999999}`} {
		raw(t, c, "DEL", "chat-sdk:queue:bad", "chat-sdk:queue-corrupt:bad")
		raw(t, c, "RPUSH", "chat-sdk:queue:bad", bad, `{"message":2,"enqueuedAt":1,"expiresAt":99999999999999}`)
		e, err := s.Dequeue(ctx, "bad")
		if !errors.As(err, &ce) || e != nil || ce.Key != "chat-sdk:queue:bad" || string(ce.Raw) != bad {
			t.Errorf("Dequeue with head %s = %v, %v (%+v); want a *CorruptValueError", bad, e, err, ce)
			continue
		}
		if !strings.Contains(err.Error(), "chat-sdk:queue-corrupt:bad") {
			t.Errorf("Dequeue error %q does not name the dead-letter list", err)
		}
		dead := rawStrings(t, c, "LRANGE", "chat-sdk:queue-corrupt:bad", "0", "-1")
		if len(dead) != 1 || dead[0] != bad {
			t.Errorf("dead-letter list after Dequeue of %s = %q, want exactly the corrupt entry", bad, dead)
		}
		if ttl := rawInt(t, c, "PTTL", "chat-sdk:queue-corrupt:bad"); ttl <= 0 || ttl > 7*24*3600*1000 {
			t.Errorf("dead-letter list PTTL = %d ms, want (0, 7 days]", ttl)
		}
		next, err := s.Dequeue(ctx, "bad")
		if err != nil || next == nil || string(next.Message) != "2" {
			t.Errorf("Dequeue after the corrupt entry %s = %+v, %v; want the next entry", bad, next, err)
		}
	}
}

// ---- encoding and bad input ----

func TestStateLargeValues(t *testing.T) {
	env := newStateEnv(t)
	ctx, s := testCtx(t), env.state
	big := strings.Repeat("x", 11<<20)
	env.srv.ResetStats()
	err := s.Set(ctx, "big", big, 0)
	if !errors.Is(err, upstash.ErrRequestTooLarge) {
		t.Fatalf("Set of 11 MB: %v, want ErrRequestTooLarge", err)
	}
	err = s.AppendToList(ctx, "big", big, upstash.ListOptions{})
	if !errors.Is(err, upstash.ErrRequestTooLarge) {
		t.Fatalf("AppendToList of 11 MB: %v, want ErrRequestTooLarge", err)
	}
	if n := env.srv.Stats().TotalRequests; n != 0 {
		t.Errorf("%d requests were sent for values over the limit, want 0", n)
	}
}

func TestStateInvalidUTF8Key(t *testing.T) {
	env := newStateEnv(t)
	ctx, s := testCtx(t), env.state
	if err := s.Set(ctx, "k\xff", 1, 0); !errors.Is(err, upstash.ErrInvalidArgument) {
		t.Errorf("Set with an invalid UTF-8 key: %v", err)
	}
	if err := s.Subscribe(ctx, "t\xff"); !errors.Is(err, upstash.ErrInvalidArgument) {
		t.Errorf("Subscribe with an invalid UTF-8 id: %v", err)
	}
}

func TestStateMarshalErrorsNameTheKey(t *testing.T) {
	env := newStateEnv(t)
	ctx, s := testCtx(t), env.state
	env.srv.ResetStats()
	type inner struct{ Text string }
	type outer struct {
		Items []inner
		M     map[string]*inner
	}
	cases := map[string]any{
		"nan":     math.NaN(),
		"chan":    struct{ C chan int }{make(chan int)},
		"nested":  outer{M: map[string]*inner{"a": {Text: "bad\x80"}}},
		"deep":    outer{Items: []inner{{"ok"}, {"\xff"}}},
		"mapkey":  map[string]string{"\xc0": "v"},
		"iface":   []any{map[string]any{"x": "\xe2\x82"}},
		"pointer": &inner{Text: "\xff"},
	}
	for key, v := range cases {
		err := s.Set(ctx, key, v, 0)
		if !errors.Is(err, upstash.ErrInvalidArgument) || !strings.Contains(err.Error(), `"`+key+`"`) {
			t.Errorf("Set(%s): %v; want ErrInvalidArgument naming the key", key, err)
		}
	}
	if n := env.srv.Stats().TotalRequests; n != 0 {
		t.Errorf("%d requests were sent for unencodable values", n)
	}
	// A json.Marshaler's output with an escaped U+FFFD is not a false alarm.
	must(t, s.Set(ctx, "escaped", json.RawMessage(`"\ufffd"`), 0))
	must(t, s.Set(ctx, "escaped2", struct{ R json.RawMessage }{json.RawMessage(`"\ufffd"`)}, 0))
	must(t, s.Set(ctx, "literal", `\ufffd`, 0)) // six ASCII characters
	if got := rawString(t, env.client, "GET", "chat-sdk:cache:literal"); got != `"\\ufffd"` {
		t.Errorf("GET literal = %s", got)
	}
}

// ---- requests per operation and lost replies ----

// TestStateOneRequestPerOperation checks that each operation costs exactly
// one HTTP request once the scripts are cached on the server.
func TestStateOneRequestPerOperation(t *testing.T) {
	env := newStateEnv(t)
	ctx, s := testCtx(t), env.state
	e, err := upstash.NewQueueEntry("m", time.Minute)
	must(t, err)
	lock, err := s.AcquireLock(ctx, "warm", time.Minute)
	must(t, err)
	ops := []struct {
		name string
		fn   func() error
	}{
		{"Connect", func() error { return s.Connect(ctx) }},
		{"Subscribe", func() error { return s.Subscribe(ctx, "t") }},
		{"Unsubscribe", func() error { return s.Unsubscribe(ctx, "t") }},
		{"IsSubscribed", func() error { _, err := s.IsSubscribed(ctx, "t"); return err }},
		{"AcquireLock", func() error { _, err := s.AcquireLock(ctx, "t", time.Minute); return err }},
		{"ExtendLock", func() error { _, err := s.ExtendLock(ctx, lock, time.Minute); return err }},
		{"ReleaseLock", func() error { return s.ReleaseLock(ctx, lock) }},
		{"ForceReleaseLock", func() error { return s.ForceReleaseLock(ctx, "t") }},
		{"Set", func() error { return s.Set(ctx, "k", 1, time.Minute) }},
		{"SetIfNotExists", func() error { _, err := s.SetIfNotExists(ctx, "k2", 1, time.Minute); return err }},
		{"Get", func() error { _, err := s.Get(ctx, "k"); return err }},
		{"Delete", func() error { return s.Delete(ctx, "k") }},
		{"AppendToList", func() error { return s.AppendToList(ctx, "l", 1, upstash.ListOptions{MaxLength: 5, TTL: time.Minute}) }},
		{"GetList", func() error { _, err := s.GetList(ctx, "l"); return err }},
		{"Enqueue", func() error { _, err := s.Enqueue(ctx, "q", e, 5); return err }},
		{"Dequeue", func() error { _, err := s.Dequeue(ctx, "q"); return err }},
		{"QueueDepth", func() error { _, err := s.QueueDepth(ctx, "q"); return err }},
	}
	for _, op := range ops { // warm up: load every script
		must(t, op.fn())
	}
	for _, op := range ops {
		env.srv.ResetStats()
		must(t, op.fn())
		if n := env.srv.Stats().TotalRequests; n != 1 {
			t.Errorf("%s sent %d requests, want 1", op.name, n)
		}
	}
}

func TestStateScriptCacheFlushed(t *testing.T) {
	env := newStateEnv(t)
	ctx, s := testCtx(t), env.state
	e, err := upstash.NewQueueEntry("m", time.Minute)
	must(t, err)
	_, err = s.Enqueue(ctx, "q", e, 0)
	must(t, err)
	raw(t, env.client, "SCRIPT", "FLUSH")
	got, err := s.Dequeue(ctx, "q")
	must(t, err)
	if got == nil || string(got.Message) != `"m"` {
		t.Fatalf("Dequeue after SCRIPT FLUSH = %+v", got)
	}
}

func TestAcquireLockLostReply(t *testing.T) {
	env := newStateEnv(t)
	ctx, s := testCtx(t), env.state
	// The SET NX runs but its reply is lost: the GET that follows finds our
	// token, so the lock is ours.
	env.srv.DropResponseNext(1)
	lock, err := s.AcquireLock(ctx, "t", time.Minute)
	must(t, err)
	if lock == nil {
		t.Fatal("AcquireLock after a lost reply = nil; the SET had landed")
	}
	if got := rawString(t, env.client, "GET", "chat-sdk:lock:t"); got != lock.Token {
		t.Errorf("lock holds %q, want our token %q", got, lock.Token)
	}
	// Someone else holds it and our reply is lost: not acquired.
	env.srv.DropResponseNext(1)
	other, err := s.AcquireLock(ctx, "t", time.Minute)
	if err != nil || other != nil {
		t.Fatalf("AcquireLock of a held lock after a lost reply = %v, %v; want nil, nil", other, err)
	}
	if got := rawString(t, env.client, "GET", "chat-sdk:lock:t"); got != lock.Token {
		t.Errorf("after a failed acquire with a lost reply the lock holds %q, want the holder's %q", got, lock.Token)
	}
	// The reply is lost and the read-back fails as well: the outcome is unknown.
	env.srv.DropResponseNext(1)
	env.srv.FailNext(10, http.StatusServiceUnavailable)
	_, err = s.AcquireLock(ctx, "u", time.Minute)
	if !errors.Is(err, upstash.ErrOutcomeUnknown) {
		t.Fatalf("AcquireLock with the reply and the read-back lost: %v, want ErrOutcomeUnknown", err)
	}
	env.srv.ClearFaults()
}

func TestStateLostRepliesAreNotRetried(t *testing.T) {
	env := newStateEnv(t)
	ctx, c, s := testCtx(t), env.client, env.state
	e, err := upstash.NewQueueEntry("m", time.Minute)
	must(t, err)
	must(t, s.AppendToList(ctx, "l", 0, upstash.ListOptions{})) // load the scripts
	_, err = s.Enqueue(ctx, "q", e, 0)
	must(t, err)

	env.srv.DropResponseNext(1)
	err = s.AppendToList(ctx, "l", 1, upstash.ListOptions{})
	if !errors.Is(err, upstash.ErrOutcomeUnknown) {
		t.Errorf("AppendToList with a lost reply: %v, want ErrOutcomeUnknown", err)
	}
	if n := rawInt(t, c, "LLEN", "chat-sdk:list:l"); n != 2 {
		t.Errorf("LLEN = %d, want 2: the append must run exactly once", n)
	}
	env.srv.DropResponseNext(1)
	_, err = s.Enqueue(ctx, "q", e, 0)
	if !errors.Is(err, upstash.ErrOutcomeUnknown) {
		t.Errorf("Enqueue with a lost reply: %v, want ErrOutcomeUnknown", err)
	}
	if n := rawInt(t, c, "LLEN", "chat-sdk:queue:q"); n != 2 {
		t.Errorf("queue LLEN = %d, want 2", n)
	}
	env.srv.DropResponseNext(1)
	_, err = s.SetIfNotExists(ctx, "nx", true, time.Minute)
	if !errors.Is(err, upstash.ErrOutcomeUnknown) {
		t.Errorf("SetIfNotExists with a lost reply: %v, want ErrOutcomeUnknown", err)
	}
	// Idempotent operations are retried and succeed.
	for name, fn := range map[string]func() error{
		"Set":       func() error { return s.Set(ctx, "k", 1, 0) },
		"Subscribe": func() error { return s.Subscribe(ctx, "t") },
		"Delete":    func() error { return s.Delete(ctx, "k") },
		"Release":   func() error { return s.ReleaseLock(ctx, &upstash.Lock{ThreadID: "x", Token: "y"}) },
	} {
		env.srv.DropResponseNext(1)
		if err := fn(); err != nil {
			t.Errorf("%s with one lost reply: %v, want a successful retry", name, err)
		}
	}
}

// ---- JSON forms ----

func TestLockJSON(t *testing.T) {
	l := upstash.Lock{ThreadID: "slack:C1:1.2", Token: "go_00ff", ExpiresAt: time.UnixMilli(1712345678901)}
	b, err := json.Marshal(l)
	must(t, err)
	if want := `{"threadId":"slack:C1:1.2","token":"go_00ff","expiresAt":1712345678901}`; string(b) != want {
		t.Errorf("json.Marshal(Lock) = %s, want %s", b, want)
	}
	var back upstash.Lock
	must(t, json.Unmarshal(b, &back))
	if back.ThreadID != l.ThreadID || back.Token != l.Token || !back.ExpiresAt.Equal(l.ExpiresAt) {
		t.Errorf("round trip = %+v, want %+v", back, l)
	}
	// Sub-millisecond precision is dropped, never rounded up.
	b, err = json.Marshal(upstash.Lock{ThreadID: "t", Token: "x", ExpiresAt: time.UnixMilli(5).Add(999 * time.Microsecond)})
	must(t, err)
	if want := `{"threadId":"t","token":"x","expiresAt":5}`; string(b) != want {
		t.Errorf("json.Marshal = %s, want %s", b, want)
	}
	// MarshalJSON itself does not escape HTML, as JSON.stringify; a
	// surrounding json.Marshal does (its choice), which decodes the same.
	b, err = (&upstash.Lock{ThreadID: "<&>", Token: "t"}).MarshalJSON()
	must(t, err)
	if want := `{"threadId":"<&>","token":"t","expiresAt":0}`; string(b) != want {
		t.Errorf("MarshalJSON = %s, want %s", b, want)
	}
	b, err = json.Marshal(map[string]*upstash.Lock{"l": {ThreadID: "<&>", Token: "t"}})
	must(t, err)
	if want := `{"l":{"threadId":"\u003c\u0026\u003e","token":"t","expiresAt":0}}`; string(b) != want {
		t.Errorf("json.Marshal = %s, want %s", b, want)
	}
	for _, bad := range []string{`{"expiresAt":"x"}`, `{"expiresAt":1e400}`, `[]`, `{"token":5}`} {
		if err := json.Unmarshal([]byte(bad), &back); err == nil {
			t.Errorf("Unmarshal(%s) succeeded", bad)
		}
	}
	must(t, json.Unmarshal([]byte(`{"threadId":"a","token":"b","expiresAt":1712345678901.7}`), &back))
	if back.ExpiresAt.UnixMilli() != 1712345678901 {
		t.Errorf("fractional ms decoded as %d", back.ExpiresAt.UnixMilli())
	}
	must(t, json.Unmarshal([]byte(`{"threadId":"a","token":"b","expiresAt":null}`), &back))
	if !back.ExpiresAt.IsZero() {
		t.Errorf("null expiresAt decoded as %v", back.ExpiresAt)
	}
}

func TestQueueEntryJSON(t *testing.T) {
	e := upstash.QueueEntry{Message: json.RawMessage(`{"id":"m1","text":"a<b"}`), EnqueuedAt: time.UnixMilli(1712345678901), ExpiresAt: time.UnixMilli(1712345768901)}
	b, err := e.MarshalJSON()
	must(t, err)
	if want := `{"message":{"id":"m1","text":"a<b"},"enqueuedAt":1712345678901,"expiresAt":1712345768901}`; string(b) != want {
		t.Errorf("QueueEntry.MarshalJSON =\n%s\nwant\n%s", b, want)
	}
	var back upstash.QueueEntry
	must(t, json.Unmarshal(b, &back))
	if string(back.Message) != string(e.Message) || !back.EnqueuedAt.Equal(e.EnqueuedAt) || !back.ExpiresAt.Equal(e.ExpiresAt) {
		t.Errorf("round trip = %+v, want %+v", back, e)
	}
	b, err = json.Marshal(upstash.QueueEntry{})
	must(t, err)
	if want := `{"message":null,"enqueuedAt":0,"expiresAt":0}`; string(b) != want {
		t.Errorf("json.Marshal(QueueEntry{}) = %s, want %s", b, want)
	}
	if err := json.Unmarshal([]byte(`{"message":1,"expiresAt":"later"}`), &back); err == nil {
		t.Error("a string expiresAt decoded without error")
	}

	before := time.Now()
	ne, err := upstash.NewQueueEntry(map[string]string{"text": "hi"}, 90*time.Second)
	must(t, err)
	if string(ne.Message) != `{"text":"hi"}` {
		t.Errorf("NewQueueEntry message = %s", ne.Message)
	}
	if ne.EnqueuedAt.Before(before.Add(-time.Millisecond)) || ne.EnqueuedAt.After(time.Now()) || ne.ExpiresAt.Sub(ne.EnqueuedAt) != 90*time.Second {
		t.Errorf("NewQueueEntry times = %v, %v", ne.EnqueuedAt, ne.ExpiresAt)
	}
	for _, ttl := range []time.Duration{0, -time.Second} {
		if _, err := upstash.NewQueueEntry("x", ttl); !errors.Is(err, upstash.ErrInvalidArgument) {
			t.Errorf("NewQueueEntry with ttl %v: %v", ttl, err)
		}
	}
}

func TestCorruptValueError(t *testing.T) {
	inner := errors.New("boom")
	e := &upstash.CorruptValueError{Key: "chat-sdk:list:x", Index: 3, Raw: []byte("{"), Err: inner}
	var err error = e
	if !errors.Is(err, upstash.ErrCorruptValue) || !errors.Is(err, inner) {
		t.Error("CorruptValueError does not match ErrCorruptValue and its cause")
	}
	if got := e.Error(); !strings.Contains(got, `"chat-sdk:list:x" item 3`) || !strings.Contains(got, "boom") {
		t.Errorf("Error() = %q", got)
	}
	if errors.Is(err, upstash.ErrInvalidArgument) {
		t.Error("CorruptValueError matches ErrInvalidArgument")
	}
}

func itoa(n int64) string {
	b, _ := json.Marshal(n)
	return string(b)
}
