package upstash_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"math"
	"os"
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

// newStateEnv is newServer (a test server on the backend UPSTASHTEST_REDIS
// picks, and a client with fast retries) with a State over the client.
func newStateEnv(t *testing.T, opts ...upstash.StateOption) stateEnv {
	t.Helper()
	srv, c := newServer(t)
	return stateEnv{srv: srv, client: c, state: upstash.NewState(c, opts...)}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// rawString, rawInt and rawStrings run a command through the client,
// bypassing the State, and decode its reply.
func rawString(t *testing.T, c *upstash.Client, name string, args ...any) string {
	t.Helper()
	b, err := mustDo(t, c, append([]any{name}, args...)...).Bytes()
	if err != nil {
		t.Fatalf("%s %v: %v", name, args, err)
	}
	return string(b)
}

func rawInt(t *testing.T, c *upstash.Client, name string, args ...any) int64 {
	t.Helper()
	n, err := mustDo(t, c, append([]any{name}, args...)...).Int64()
	if err != nil {
		t.Fatalf("%s %v: %v", name, args, err)
	}
	return n
}

func rawStrings(t *testing.T, c *upstash.Client, name string, args ...any) []string {
	t.Helper()
	ss, err := mustDo(t, c, append([]any{name}, args...)...).Strings()
	if err != nil {
		t.Fatalf("%s %v: %v", name, args, err)
	}
	return ss
}

func pttl(t *testing.T, c *upstash.Client, key string) time.Duration {
	t.Helper()
	return time.Duration(rawInt(t, c, "PTTL", key)) * time.Millisecond
}

// wantTTLBetween checks that key's PTTL lies within [lo, hi]. The TTL keeps
// running between the write and this read, which on a busy machine (CI
// shares two cores) can take far longer than the callers' tight bounds
// assume, so lo is lowered by a slack of a quarter of lo, at least one
// second and at most ten. The upper bound stays exact: a TTL never grows.
func wantTTLBetween(t *testing.T, c *upstash.Client, key string, lo, hi time.Duration) {
	t.Helper()
	slack := min(max(lo/4, time.Second), 10*time.Second)
	low := max(lo-slack, time.Millisecond)
	if lo <= time.Millisecond {
		low = lo
	}
	if got := pttl(t, c, key); got < low || got > hi {
		t.Errorf("PTTL %s = %v, want within [%v, %v] (lower bound %v less a slack of %v for a slow machine)", key, got, low, hi, lo, slack)
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

// TestStateConformanceFaults runs the suite with 15% of the requests
// failing (503, reset, reply dropped, latency) on a server of its own.
func TestStateConformanceFaults(t *testing.T) {
	srv := upstashtest.NewServer(t, upstashtest.WithSeed(10))
	c := clientOf(t, srv.URL, srv.Token, upstash.WithRetry(upstash.RetryPolicy{MaxRetries: 10, MinBackoff: time.Millisecond, MaxBackoff: 20 * time.Millisecond}))
	s := upstash.NewState(c)
	statetest.RunFaults(t, srv, func(*testing.T) upstash.StateAdapter { return s })
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

// TestStateLayoutCache checks the cache's keys and TTLs; the bytes of each
// kind of value are checked by TestJSONStringifyEncoding.
func TestStateLayoutCache(t *testing.T) {
	env := newStateEnv(t)
	ctx, c, s := ctxT(t), env.client, env.state
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
	mustDo(t, c, "SET", "chat-sdk:cache:fromts", `{"url":"https://x/y?a=1&b=2","n":1.25}`)
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

func TestStateLayoutSubscriptions(t *testing.T) {
	env := newStateEnv(t)
	ctx, c, s := ctxT(t), env.client, env.state
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
	mustDo(t, c, "SADD", "chat-sdk:subscriptions", "from-ts")
	if ok, err := s.IsSubscribed(ctx, "from-ts"); err != nil || !ok {
		t.Errorf("IsSubscribed of a TypeScript subscription = %v, %v", ok, err)
	}
	must(t, s.Unsubscribe(ctx, "slack:C1:1.2"))
	if n := rawInt(t, c, "SISMEMBER", "chat-sdk:subscriptions", "slack:C1:1.2"); n != 0 {
		t.Errorf("SISMEMBER after Unsubscribe = %d", n)
	}
}

func TestStateKeyPrefix(t *testing.T) {
	env := newStateEnv(t, upstash.WithKeyPrefix("myapp"))
	ctx, c, s := ctxT(t), env.client, env.state
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
	keys, err := mustDo(t, c, "KEYS", "chat-sdk:*").Strings()
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
	ctx, c, s := ctxT(t), env.client, env.state

	mustDo(t, c, "SET", "chat-sdk:cache:bad", "not json")
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

}

// ---- encoding and bad input ----

func TestStateLargeValues(t *testing.T) {
	env := newStateEnv(t)
	ctx, s := ctxT(t), env.state
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
	ctx, s := ctxT(t), env.state
	if err := s.Set(ctx, "k\xff", 1, 0); !errors.Is(err, upstash.ErrInvalidArgument) {
		t.Errorf("Set with an invalid UTF-8 key: %v", err)
	}
	if err := s.Subscribe(ctx, "t\xff"); !errors.Is(err, upstash.ErrInvalidArgument) {
		t.Errorf("Subscribe with an invalid UTF-8 id: %v", err)
	}
}

// ---- requests per operation and lost replies ----

// TestStateOneRequestPerOperation checks that each operation costs exactly
// one HTTP request once the scripts are cached on the server.
func TestStateOneRequestPerOperation(t *testing.T) {
	env := newStateEnv(t)
	ctx, s := ctxT(t), env.state
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
		{"Refresh", func() error { _ = s.Refresh(ctx, lock, time.Minute); return nil }},
		{"ReleaseLock", func() error { return s.ReleaseLock(ctx, lock) }},
		{"Unlock", func() error { _ = s.Unlock(ctx, lock); return nil }},
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

// ---- error texts ----

// errOf returns the error of a two-result call.
func errOf[T any](_ T, err error) error { return err }

// TestStateErrorsNameTheMethod checks that an error from a State method
// names the method the caller called, carries the "upstash: " prefix once,
// and still matches its sentinel or type.
func TestStateErrorsNameTheMethod(t *testing.T) {
	env := newStateEnv(t)
	ctx, c, s := ctxT(t), env.client, env.state
	mustDo(t, c, "SET", "chat-sdk:queue:str", "a string, not a list")
	mustDo(t, c, "SET", "chat-sdk:cache:bad", "not json")
	entry, err := upstash.NewQueueEntry("m", time.Minute)
	must(t, err)
	wrongType := func(err error) bool { // the server's error, as an *upstash.Error
		var e *upstash.Error
		return errors.As(err, &e) && strings.Contains(e.Message, "WRONGTYPE")
	}
	is := func(target error) func(error) bool {
		return func(err error) bool { return errors.Is(err, target) }
	}
	cases := []struct {
		method string
		err    error
		match  func(error) bool
	}{
		{"Subscribe", s.Subscribe(ctx, ""), is(upstash.ErrInvalidArgument)},
		{"IsSubscribed", errOf(s.IsSubscribed(ctx, "")), is(upstash.ErrInvalidArgument)},
		{"Set", s.Set(ctx, "k", 1, -time.Second), is(upstash.ErrInvalidArgument)},
		{"SetIfNotExists", errOf(s.SetIfNotExists(ctx, "k", math.NaN(), 0)), is(upstash.ErrInvalidArgument)},
		{"Get", errOf(s.Get(ctx, "bad")), is(upstash.ErrCorruptValue)},
		{"AcquireLock", errOf(s.AcquireLock(ctx, "t", 0)), is(upstash.ErrInvalidArgument)},
		{"ReleaseLock", s.ReleaseLock(ctx, nil), is(upstash.ErrInvalidArgument)},
		{"ExtendLock", errOf(s.ExtendLock(ctx, &upstash.Lock{ThreadID: "t"}, time.Second)), is(upstash.ErrInvalidArgument)},
		{"AppendToList", s.AppendToList(ctx, "l", 1, upstash.ListOptions{MaxLength: -1}), is(upstash.ErrInvalidArgument)},
		{"GetList", errOf(s.GetList(ctx, "")), is(upstash.ErrInvalidArgument)},
		{"Enqueue", errOf(s.Enqueue(ctx, "str", entry, 0)), wrongType},
		{"Dequeue", errOf(s.Dequeue(ctx, "str")), wrongType},
		{"QueueDepth", errOf(s.QueueDepth(ctx, "str")), wrongType},
		{"NewQueueEntry", errOf(upstash.NewQueueEntry("m", 0)), is(upstash.ErrInvalidArgument)},
	}
	for _, tc := range cases {
		if tc.err == nil {
			t.Errorf("%s: no error", tc.method)
			continue
		}
		text := tc.err.Error()
		if !strings.HasPrefix(text, "upstash: "+tc.method+": ") {
			t.Errorf("%s: error %q does not start with %q", tc.method, text, "upstash: "+tc.method+": ")
		}
		if n := strings.Count(text, "upstash:"); n != 1 {
			t.Errorf("%s: error %q has the prefix %d times, want once", tc.method, text, n)
		}
		if !tc.match(tc.err) {
			t.Errorf("%s: error %q no longer matches its sentinel or type", tc.method, text)
		}
	}

	var ce *upstash.CorruptValueError
	if err := errOf(s.Get(ctx, "bad")); !errors.As(err, &ce) || ce.Key != "chat-sdk:cache:bad" {
		t.Errorf("Get of a corrupt value: errors.As gives %+v from %v", ce, err)
	}
	if _, found, err := upstash.GetJSON[int](ctx, s, "missing"); err != nil || found {
		t.Errorf("GetJSON of a missing key: found %v, err %v", found, err)
	}
	must(t, s.Set(ctx, "obj", map[string]int{"a": 1}, 0))
	_, _, err = upstash.GetJSON[int](ctx, s, "obj")
	if text := err.Error(); !strings.HasPrefix(text, `upstash: GetJSON: decode "obj"`) || strings.Count(text, "upstash:") != 1 {
		t.Errorf("GetJSON of a value that does not fit: %q", text)
	}
	var syntax *json.UnmarshalTypeError
	if !errors.As(err, &syntax) {
		t.Errorf("GetJSON's error %v does not unwrap to encoding/json's", err)
	}
	// Every reply lost: the outcome is unknown, and the text says where.
	must(t, s.AppendToList(ctx, "l", 1, upstash.ListOptions{})) // load the script
	env.srv.DropResponseNext(20)
	err = s.AppendToList(ctx, "l", 2, upstash.ListOptions{})
	env.srv.ClearFaults()
	if !errors.Is(err, upstash.ErrOutcomeUnknown) || !strings.HasPrefix(err.Error(), "upstash: AppendToList: ") || strings.Count(err.Error(), "upstash:") != 1 {
		t.Errorf("AppendToList with every reply lost: %v", err)
	}
	// A refused token.
	bad, err := upstash.New(upstash.Config{URL: env.srv.URL, Token: "wrong"})
	must(t, err)
	err = upstash.NewState(bad).Connect(ctx)
	if !errors.Is(err, upstash.ErrUnauthorized) || !strings.HasPrefix(err.Error(), "upstash: Connect: ") || strings.Count(err.Error(), "upstash:") != 1 {
		t.Errorf("Connect with a refused token: %v", err)
	}
	if strings.Contains(err.Error(), "wrong") {
		t.Errorf("Connect's error %q shows the token", err)
	}
}
