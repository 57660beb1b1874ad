package interop_test

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chatstate/upstash/internal/testtool"

	"github.com/gomodule/redigo/redis"

	"github.com/chatstate/upstash"
	"github.com/chatstate/upstash/upstashtest"
)

// tsDir holds step.mjs and the pinned npm packages (package-lock.json).
const tsDir = "testdata/ts"

const (
	// stepTimeout bounds one `node step.mjs` run (0.2-0.5 s when healthy).
	stepTimeout = 60 * time.Second
	// opTimeout bounds the Go side of one subtest.
	opTimeout = 2 * time.Minute
	// maxNodeRuns keeps the suite fast on small CI machines.
	maxNodeRuns = 60

	npmFix  = "npm ci --prefix interop/testdata/ts"
	nodeFix = "install Node.js 20 or later (e.g. apt-get install -y nodejs npm), then: " + npmFix
)

// env is one redis-server shared by the TypeScript adapter (over TCP) and
// the Go State (over the upstashtest REST server).
type env struct {
	node      string
	dir       string // absolute tsDir
	redisAddr string // 127.0.0.1:PORT
	pool      *redis.Pool
	srv       *upstashtest.Server
	client    *upstash.Client
	nodeRuns  atomic.Int64
}

func setup(t *testing.T) *env {
	t.Helper()
	dir, err := filepath.Abs(tsDir)
	if err != nil {
		t.Fatal(err)
	}
	e := &env{dir: dir, node: testtool.RequireNode(t, nodeFix)}
	if _, err := os.Stat(filepath.Join(dir, "node_modules", "@chat-adapter", "state-redis", "package.json")); err != nil {
		testtool.SkipOrFail(t, "the TypeScript adapter is not installed (%s/node_modules/@chat-adapter/state-redis is missing); fix: %s", tsDir, npmFix)
	}
	testtool.RequireRedisServer(t)
	// One private redis-server, started and stopped by upstashtest: the Go
	// side reaches it through the REST server, the TypeScript side over TCP.
	e.srv = upstashtest.NewServer(t, upstashtest.WithRedisServer())
	e.redisAddr = e.srv.RedisAddr()
	e.pool = &redis.Pool{
		MaxIdle: 2,
		Dial: func() (redis.Conn, error) {
			return redis.Dial("tcp", e.redisAddr,
				redis.DialConnectTimeout(5*time.Second),
				redis.DialReadTimeout(10*time.Second),
				redis.DialWriteTimeout(10*time.Second))
		},
	}
	t.Cleanup(func() { e.pool.Close() })

	e.client, err = upstash.New(upstash.Config{URL: e.srv.URL, Token: e.srv.Token})
	if err != nil {
		t.Fatalf("upstash.New: %v", err)
	}
	if err := e.state().Connect(ctx(t)); err != nil {
		t.Fatalf("Go State.Connect through %s: %v", e.srv.URL, err)
	}
	return e
}

// state returns a Go State over the shared Redis.
func (e *env) state(opts ...upstash.StateOption) *upstash.State {
	return upstash.NewState(e.client, opts...)
}

// ---------------------------------------------------------------- raw Redis

// do runs one command on the shared redis-server, bypassing both adapters.
func (e *env) do(t *testing.T, cmd string, args ...any) any {
	t.Helper()
	c := e.pool.Get()
	defer c.Close()
	v, err := c.Do(cmd, args...)
	if err != nil {
		t.Fatalf("redis %s %v: %v", cmd, args, err)
	}
	return v
}

// rawGet returns the bytes stored at key; ok is false when it is missing.
func (e *env) rawGet(t *testing.T, key string) (string, bool) {
	t.Helper()
	v := e.do(t, "GET", key)
	if v == nil {
		return "", false
	}
	s, err := redis.String(v, nil)
	if err != nil {
		t.Fatalf("redis GET %q: %v", key, err)
	}
	return s, true
}

func (e *env) mustRawGet(t *testing.T, key string) string {
	t.Helper()
	s, ok := e.rawGet(t, key)
	if !ok {
		t.Fatalf("redis GET %q: key is missing", key)
	}
	return s
}

func (e *env) pttl(t *testing.T, key string) int64 {
	t.Helper()
	n, err := redis.Int64(e.do(t, "PTTL", key), nil)
	if err != nil {
		t.Fatalf("redis PTTL %q: %v", key, err)
	}
	return n
}

func (e *env) typeOf(t *testing.T, key string) string {
	t.Helper()
	s, err := redis.String(e.do(t, "TYPE", key), nil)
	if err != nil {
		t.Fatalf("redis TYPE %q: %v", key, err)
	}
	return s
}

func (e *env) lrange(t *testing.T, key string) []string {
	t.Helper()
	s, err := redis.Strings(e.do(t, "LRANGE", key, 0, -1), nil)
	if err != nil {
		t.Fatalf("redis LRANGE %q: %v", key, err)
	}
	return s
}

func (e *env) exists(t *testing.T, key string) bool {
	t.Helper()
	n, err := redis.Int64(e.do(t, "EXISTS", key), nil)
	if err != nil {
		t.Fatalf("redis EXISTS %q: %v", key, err)
	}
	return n == 1
}

func (e *env) keys(t *testing.T, pattern string) []string {
	t.Helper()
	s, err := redis.Strings(e.do(t, "KEYS", pattern), nil)
	if err != nil {
		t.Fatalf("redis KEYS %q: %v", pattern, err)
	}
	sort.Strings(s)
	return s
}

// ownNamespaces are the key kinds only this library writes, next to
// state-redis's layout: {p}:op:{id}, the record of one state operation, and
// {p}:fence:{threadID}, a lock's fencing counter. No TypeScript adapter
// reads or writes them, so comparisons of the two layouts leave them out.
var ownNamespaces = []string{"op:", "fence:"}

// isOwnKey reports whether key ({p}:{kind}:…) is in one of ownNamespaces.
func isOwnKey(key string) bool {
	_, rest, ok := strings.Cut(key, ":")
	if !ok {
		return false
	}
	for _, ns := range ownNamespaces {
		if strings.HasPrefix(rest, ns) {
			return true
		}
	}
	return false
}

// sharedKeys is keys(pattern) without the library's own namespaces. Each
// of those must carry a TTL, so that they never pile up in a database
// shared with TypeScript bots.
func (e *env) sharedKeys(t *testing.T, pattern string) []string {
	t.Helper()
	var shared []string
	for _, key := range e.keys(t, pattern) {
		if !isOwnKey(key) {
			shared = append(shared, key)
			continue
		}
		if ms := e.pttl(t, key); ms <= 0 {
			t.Errorf("%s has no TTL (PTTL %d): the library's own keys must expire", key, ms)
		}
	}
	return shared
}

// checkPTTL asserts that key's remaining TTL is in (want-slack, want] ms.
func (e *env) checkPTTL(t *testing.T, key string, want, slack int64) {
	t.Helper()
	got := e.pttl(t, key)
	if got > want || got <= want-slack {
		t.Errorf("PTTL %q = %d ms, want in (%d, %d]", key, got, want-slack, want)
	}
}

// checkNoTTL asserts that key exists and has no TTL.
func (e *env) checkNoTTL(t *testing.T, key string) {
	t.Helper()
	if got := e.pttl(t, key); got != -1 {
		t.Errorf("PTTL %q = %d, want -1 (exists, no TTL)", key, got)
	}
}

// ---------------------------------------------------------------- node steps

// op is one StateAdapter call for step.mjs (see its header).
type op map[string]any

// opResult is step.mjs's report of one op.
type opResult struct {
	Op    string          `json:"op"`
	Label string          `json:"label"`
	OK    bool            `json:"ok"`
	Value json.RawMessage `json:"value"`
	Error string          `json:"error"`
	Equal *bool           `json:"equal"`
	Got   string          `json:"got"` // util.inspect of a value that missed its expect
}

func (r opResult) String() string {
	s := r.Op
	if r.Label != "" {
		s += " [" + r.Label + "]"
	}
	if !r.OK {
		return s + ": error " + strconv.Quote(r.Error)
	}
	if r.Got != "" {
		return s + " = " + string(r.Value) + " (in JavaScript: " + r.Got + ")"
	}
	return s + " = " + string(r.Value)
}

// step runs `node step.mjs <name> <args>` with REDIS_URL pointing at the
// shared redis-server and returns its one JSON line.
func (e *env) step(t *testing.T, name string, args any) json.RawMessage {
	t.Helper()
	argJSON, err := json.Marshal(args)
	if err != nil {
		t.Fatalf("encoding step args: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), stepTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, e.node, "step.mjs", name, string(argJSON))
	cmd.Dir = e.dir
	cmd.Env = append(testtool.EnvironWithout("REDIS_URL=", "NODE_OPTIONS="), "REDIS_URL=redis://"+e.redisAddr)
	cmd.WaitDelay = 5 * time.Second
	var stdout, stderr testtool.SyncBuffer
	cmd.Stdout = &stdout
	cmd.Stderr = &stderr
	e.nodeRuns.Add(1)
	start := time.Now()
	runErr := cmd.Run()
	elapsed := time.Since(start)
	if ctx.Err() != nil {
		t.Fatalf("node step.mjs %s did not finish within %v\nstdout:\n%s\nstderr:\n%s", name, stepTimeout, stdout.String(), stderr.String())
	}
	lines := strings.Split(strings.TrimRight(stdout.String(), "\n"), "\n")
	if runErr != nil || len(lines) != 1 || !json.Valid([]byte(lines[0])) {
		t.Fatalf("node step.mjs %s: %v (want exit 0 and exactly one JSON line on stdout)\nargs: %s\nstdout:\n%s\nstderr:\n%s",
			name, runErr, argJSON, stdout.String(), stderr.String())
	}
	var head struct {
		OK    bool   `json:"ok"`
		Error string `json:"error"`
	}
	if err := json.Unmarshal([]byte(lines[0]), &head); err != nil || !head.OK {
		t.Fatalf("node step.mjs %s failed: %s (%v)\nstderr:\n%s", name, head.Error, err, stderr.String())
	}
	if testing.Verbose() {
		t.Logf("node step.mjs %s: %v", name, elapsed.Round(time.Millisecond))
	}
	if s := strings.TrimSpace(stderr.String()); s != "" {
		t.Logf("node step.mjs %s stderr:\n%s", name, s)
	}
	return json.RawMessage(lines[0])
}

// ts runs the ops in one `node step.mjs ops` and returns their results.
func (e *env) ts(t *testing.T, ops ...op) tsResults {
	t.Helper()
	line := e.step(t, "ops", map[string]any{"ops": ops})
	var out struct {
		Results []opResult `json:"results"`
	}
	if err := json.Unmarshal(line, &out); err != nil {
		t.Fatalf("decoding step.mjs output: %v\n%s", err, line)
	}
	if len(out.Results) != len(ops) {
		t.Fatalf("step.mjs returned %d results for %d ops:\n%s", len(out.Results), len(ops), line)
	}
	return tsResults(out.Results)
}

type tsResults []opResult

// ok returns result i's value, failing the test if the op threw.
func (rs tsResults) ok(t *testing.T, i int) json.RawMessage {
	t.Helper()
	if !rs[i].OK {
		t.Fatalf("TS op %d %v", i, rs[i])
	}
	return rs[i].Value
}

// checkAll asserts that every op succeeded and every op with an expect
// matched it.
func (rs tsResults) checkAll(t *testing.T) {
	t.Helper()
	for i, r := range rs {
		switch {
		case !r.OK:
			t.Errorf("TS op %d %v", i, r)
		case r.Equal != nil && !*r.Equal:
			t.Errorf("TS op %d %v: not deep-equal to the expected value", i, r)
		}
	}
}

// find returns the result labelled label.
func (rs tsResults) find(t *testing.T, label string) opResult {
	t.Helper()
	for _, r := range rs {
		if r.Label == label {
			return r
		}
	}
	t.Fatalf("no TS result labelled %q", label)
	return opResult{}
}

// ---------------------------------------------------------------- tools

// ctx returns a context for the Go side of a subtest.
func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), opTimeout)
	t.Cleanup(cancel)
	return c
}

// mustJSON encodes v for step.mjs arguments.
func mustJSON(t *testing.T, v any) json.RawMessage {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
