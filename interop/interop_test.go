// Package interop_test proves that the Go State and the real TypeScript
// @chat-adapter/state-redis share one Redis database: what one side writes,
// the other reads, with byte-identical keys and values.
//
// The test starts a private redis-server. The TypeScript adapter talks to
// it over TCP (testdata/ts/step.mjs, one step per node run); the Go State
// talks to it through the upstashtest REST server. Needs node 20+, `npm ci`
// in testdata/ts and redis-server on PATH; without them the test skips,
// unless CI is set, where it fails.
package interop_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/chatstate/upstash"
)

func TestInterop(t *testing.T) {
	e := setup(t)
	t.Run("Versions", e.testVersions)
	t.Run("TSWritesGoReads", e.testTSWritesGoReads)
	t.Run("GoWritesTSReads", e.testGoWritesTSReads)
	t.Run("ByteLayout", e.testByteLayout)
	t.Run("Locks", e.testLocks)
	t.Run("Queues", e.testQueues)
	t.Run("KeyPrefix", e.testKeyPrefix)
	t.Run("DeliberateDifferences", e.testDeliberateDifferences)
	n := e.nodeRuns.Load()
	t.Logf("%d node runs", n)
	if n >= maxNodeRuns {
		t.Errorf("%d node runs; keep it under %d (batch ops into one step)", n, maxNodeRuns)
	}
}

// ---------------------------------------------------------------- values

// valueCase is one cache value, written by each side.
type valueCase struct {
	name string
	js   string // JSON text that node parses into the value given to state-redis
	goV  any    // the value given to State.Set
	want string // the bytes state-redis stores: JSON.stringify's output
}

type fieldOrder struct {
	Zeta  int    `json:"zeta"`
	Alpha string `json:"alpha"`
	Mid   []int  `json:"mid"`
}

var valueCases = []valueCase{
	{"string", `"hello"`, "hello", `"hello"`},
	{"empty-string", `""`, "", `""`},
	{"html", `"<b>Tom & Jerry</b> 'q'"`, "<b>Tom & Jerry</b> 'q'", `"<b>Tom & Jerry</b> 'q'"`},
	{"unicode", `"héllo wörld 日本語 😀 \ud83d\ude00 \u00e9"`, "héllo wörld 日本語 😀 😀 é", `"héllo wörld 日本語 😀 😀 é"`},
	{
		"controls",
		`"t\tn\nr\rb\bf\fz\u0000e\u001bu\u001fd` + "\x7f" + `q\"s\\/"`,
		"t\tn\nr\rb\bf\fz\x00e\x1bu\x1fd\x7fq\"s\\/",
		`"t\tn\nr\rb\bf\fz\u0000e\u001bu\u001fd` + "\x7f" + `q\"s\\/"`,
	},
	{"line-separators", `"a\u2028b\u2029c"`, "a\u2028b\u2029c", "\"a\u2028b\u2029c\""},
	{"int", `42`, 42, `42`},
	{"float", `1.5`, 1.5, `1.5`},
	{"negative", `-17.25`, -17.25, `-17.25`},
	{"unix-ms", `1700000000123`, int64(1700000000123), `1700000000123`},
	{"float-shortest", `0.30000000000000004`, 0.30000000000000004, `0.30000000000000004`},
	{"large-exponent", `1e21`, 1e21, `1e+21`},
	{"small-exponent", `1e-7`, 1e-7, `1e-7`},
	{"max-safe-integer", `9007199254740991`, int64(9007199254740991), `9007199254740991`},
	{"negative-zero", `-0`, math.Copysign(0, -1), `0`},
	{"true", `true`, true, `true`},
	{"false", `false`, false, `false`},
	{"null", `null`, nil, `null`},
	{"object", `{"a":1,"b":"x"}`, map[string]any{"a": 1, "b": "x"}, `{"a":1,"b":"x"}`},
	{"empty-object", `{}`, map[string]any{}, `{}`},
	{"empty-array", `[]`, []any{}, `[]`},
	{"array", `[1,"two",true,null,2.5]`, []any{1, "two", true, nil, 2.5}, `[1,"two",true,null,2.5]`},
	{
		"nested",
		`{"arr":[1,"two",{"three":3}],"obj":{"deep":{"deeper":[true,null,"ü<>&"]}},"z":""}`,
		map[string]any{
			"arr": []any{1, "two", map[string]any{"three": 3}},
			"obj": map[string]any{"deep": map[string]any{"deeper": []any{true, nil, "ü<>&"}}},
			"z":   "",
		},
		`{"arr":[1,"two",{"three":3}],"obj":{"deep":{"deeper":[true,null,"ü<>&"]}},"z":""}`,
	},
	{"struct-field-order", `{"zeta":1,"alpha":"a","mid":[1,2]}`, fieldOrder{1, "a", []int{1, 2}}, `{"zeta":1,"alpha":"a","mid":[1,2]}`},
	{"raw-message", `{"zeta":{"b":1,"a":2}}`, json.RawMessage(`{"zeta":{"b":1,"a":2}}`), `{"zeta":{"b":1,"a":2}}`},
}

// tsOnlyCases can only be written from JavaScript (a Go string cannot hold
// a lone surrogate); Go must still read them back byte for byte.
var tsOnlyCases = []valueCase{
	{"lone-surrogate", `"x\ud800y"`, nil, `"x\ud800y"`},
}

// ---------------------------------------------------------------- messages and entries

// chatMessageJSON is what chat's Message.toJSON() gives for a message built
// by step.mjs from chatMessageSpec (TSWritesGoReads checks this byte for
// byte).
func chatMessageJSON(id, threadID, text string, dateSent time.Time) string {
	return fmt.Sprintf(`{"_type":"chat:Message","id":%q,"threadId":%q,"text":%q,"formatted":{"type":"root","children":[]},`+
		`"raw":{},"author":{"userId":"U1","userName":"alice","fullName":"Alice","isBot":false,"isMe":false},`+
		`"metadata":{"dateSent":%q,"edited":false},"attachments":[]}`,
		id, threadID, text, dateSent.UTC().Format("2006-01-02T15:04:05.000Z"))
}

func chatMessageSpec(id, threadID, text string, dateSent time.Time) map[string]any {
	return map[string]any{"id": id, "threadId": threadID, "text": text, "dateSent": dateSent.UnixMilli()}
}

// entryArg is a QueueEntry for step.mjs: {message, enqueuedAt, expiresAt}.
func entryArg(msg string, enq, exp int64) map[string]any {
	return map[string]any{"message": json.RawMessage(msg), "enqueuedAt": enq, "expiresAt": exp}
}

func entryJSON(msg string, enq, exp int64) json.RawMessage {
	return json.RawMessage(fmt.Sprintf(`{"message":%s,"enqueuedAt":%d,"expiresAt":%d}`, msg, enq, exp))
}

func goEntry(msg string, enq, exp int64) upstash.QueueEntry {
	return upstash.QueueEntry{Message: json.RawMessage(msg), EnqueuedAt: time.UnixMilli(enq), ExpiresAt: time.UnixMilli(exp)}
}

// checkEntry asserts that a Go-dequeued entry is exactly msg/enq/exp.
func checkEntry(t *testing.T, what string, got *upstash.QueueEntry, msg string, enq, exp int64) {
	t.Helper()
	if got == nil {
		t.Errorf("%s: Dequeue = nil, want the entry with message %s", what, msg)
		return
	}
	if !bytes.Equal(got.Message, []byte(msg)) {
		t.Errorf("%s: message = %s, want %s", what, got.Message, msg)
	}
	if got.EnqueuedAt.UnixMilli() != enq || got.ExpiresAt.UnixMilli() != exp {
		t.Errorf("%s: enqueuedAt, expiresAt = %d, %d ms, want %d, %d", what,
			got.EnqueuedAt.UnixMilli(), got.ExpiresAt.UnixMilli(), enq, exp)
	}
}

func mustDequeue(t *testing.T, st *upstash.State, threadID string) *upstash.QueueEntry {
	t.Helper()
	got, err := st.Dequeue(ctx(t), threadID)
	if err != nil {
		t.Fatalf("Go Dequeue(%q): %v", threadID, err)
	}
	return got
}

func lockArg(l *upstash.Lock) map[string]any {
	return map[string]any{"threadId": l.ThreadID, "token": l.Token, "expiresAt": l.ExpiresAt.UnixMilli()}
}

func decodeLock(t *testing.T, raw json.RawMessage) *upstash.Lock {
	t.Helper()
	if string(raw) == "null" {
		t.Fatalf("TS acquireLock returned null, want a lock")
	}
	var l upstash.Lock
	if err := json.Unmarshal(raw, &l); err != nil {
		t.Fatalf("decoding the TS lock %s into upstash.Lock: %v", raw, err)
	}
	return &l
}

var tsTokenRE = regexp.MustCompile(`^redis_[0-9]+_[0-9a-z]{1,13}$`)

// ---------------------------------------------------------------- subtests

// testVersions checks that the packages node loads are the pinned ones.
func (e *env) testVersions(t *testing.T) {
	var pkg struct {
		Dependencies map[string]string `json:"dependencies"`
	}
	raw, err := os.ReadFile(filepath.Join(e.dir, "package.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(raw, &pkg); err != nil {
		t.Fatal(err)
	}
	var v struct {
		Chat       string `json:"chat"`
		StateRedis string `json:"state-redis"`
		Redis      string `json:"redis"`
		Node       string `json:"node"`
	}
	line := e.step(t, "versions", map[string]any{})
	if err := json.Unmarshal(line, &v); err != nil {
		t.Fatalf("decoding %s: %v", line, err)
	}
	got := map[string]string{"chat": v.Chat, "state-redis": v.StateRedis, "redis": v.Redis, "node": v.Node}
	want := map[string]string{"chat": "4.41.1", "@chat-adapter/state-redis": "4.41.1"}
	exact := regexp.MustCompile(`^[0-9]+\.[0-9]+\.[0-9]+$`)
	for name, installed := range map[string]string{"chat": got["chat"], "@chat-adapter/state-redis": got["state-redis"], "redis": got["redis"]} {
		pinned := pkg.Dependencies[name]
		if !exact.MatchString(pinned) {
			t.Errorf("package.json pins %s as %q, want an exact version", name, pinned)
		}
		if installed != pinned {
			t.Errorf("node loads %s %s, package.json pins %s; fix: %s", name, installed, pinned, npmFix)
		}
		if w, ok := want[name]; ok && pinned != w {
			t.Errorf("package.json pins %s %s, the interop target is %s", name, pinned, w)
		}
	}
	if !strings.HasPrefix(got["redis"], "5.") {
		t.Errorf("redis %s: state-redis 4.41.1 needs redis ^5.11", got["redis"])
	}
	t.Logf("chat %s, @chat-adapter/state-redis %s, redis %s, node %s", got["chat"], got["state-redis"], got["redis"], got["node"])
}

// testTSWritesGoReads: everything state-redis writes, the Go State reads.
func (e *env) testTSWritesGoReads(t *testing.T) {
	c := ctx(t)
	st := e.state()
	const thread = "slack:C0TSGO:1700000000.000100"
	now := time.Now().UnixMilli()
	sent := time.UnixMilli(1700000000000)
	const day = 24 * 60 * 60 * 1000

	ops := []op{
		{"op": "subscribe", "threadId": thread},
		{"op": "acquireLock", "threadId": thread, "ttlMs": 30000, "label": "lock"},
	}
	cases := append(append([]valueCase{}, valueCases...), tsOnlyCases...)
	for _, vc := range cases {
		ops = append(ops, op{"op": "set", "key": "tsgo:" + vc.name, "value": json.RawMessage(vc.js), "label": vc.name})
	}
	ops = append(ops,
		op{"op": "set", "key": "tsgo:ttl", "value": map[string]any{"a": 1}, "ttlMs": 600000},
		op{"op": "setIfNotExists", "key": "tsgo:dedupe", "value": true, "ttlMs": 600000, "expect": true},
		op{"op": "setIfNotExists", "key": "tsgo:dedupe", "value": "other", "ttlMs": 600000, "expect": false},
	)
	for i := 1; i <= 5; i++ {
		ops = append(ops, op{"op": "appendToList", "key": "tsgo:history", "value": map[string]any{"n": i},
			"options": map[string]any{"maxLength": 3, "ttlMs": 7 * day}})
	}
	m1 := chatMessageJSON("m1", thread, "hello from TS", sent)
	m2, m3 := `{"text":"second","n":2}`, `"third"`
	ops = append(ops,
		op{"op": "enqueue", "threadId": thread, "maxSize": 10, "expect": 1, "entry": map[string]any{
			"chatMessage": chatMessageSpec("m1", thread, "hello from TS", sent), "enqueuedAt": now, "expiresAt": now + 90000}},
		op{"op": "enqueue", "threadId": thread, "maxSize": 10, "expect": 2, "entry": entryArg(m2, now+1, now+90001)},
		op{"op": "enqueue", "threadId": thread, "maxSize": 10, "expect": 3, "entry": entryArg(m3, now+2, now+90002)},
	)
	rs := e.ts(t, ops...)
	rs.checkAll(t)

	// Subscriptions.
	if ok, err := st.IsSubscribed(c, thread); err != nil || !ok {
		t.Errorf("Go IsSubscribed(%q) = %v, %v; want true (TS subscribed)", thread, ok, err)
	}
	if ok, err := st.IsSubscribed(c, thread+"x"); err != nil || ok {
		t.Errorf("Go IsSubscribed(other) = %v, %v; want false", ok, err)
	}

	// The lock: TS's JSON decodes into upstash.Lock; Go is kept out.
	tl := decodeLock(t, rs.find(t, "lock").Value)
	if tl.ThreadID != thread || !tsTokenRE.MatchString(tl.Token) {
		t.Errorf("TS lock as upstash.Lock = %+v, want thread %q and a redis_<ms>_<base36> token", tl, thread)
	}
	if d := tl.ExpiresAt.UnixMilli() - now; d < 30000 || d > 30000+stepTimeout.Milliseconds() {
		t.Errorf("TS lock expiresAt is now+%d ms, want about now+30000", d)
	}
	if got := e.mustRawGet(t, "chat-sdk:lock:"+thread); got != tl.Token {
		t.Errorf("lock key holds %q, want the TS token %q", got, tl.Token)
	}
	if l, err := st.AcquireLock(c, thread, 30*time.Second); err != nil || l != nil {
		t.Errorf("Go AcquireLock on the TS-held thread = %+v, %v; want nil, nil", l, err)
	}

	// Cache values: Go's Get returns JSON.stringify's bytes.
	for _, vc := range cases {
		got, err := st.Get(c, "tsgo:"+vc.name)
		if err != nil {
			t.Errorf("Go Get(%s) of a TS value: %v", vc.name, err)
			continue
		}
		if string(got) != vc.want {
			t.Errorf("Go Get(%s) = %q, want JSON.stringify's %q", vc.name, got, vc.want)
		}
		if raw := e.mustRawGet(t, "chat-sdk:cache:tsgo:"+vc.name); raw != vc.want {
			t.Errorf("TS stored %s as %q, the test expects %q", vc.name, raw, vc.want)
		}
	}
	if got, err := st.Get(c, "tsgo:ttl"); err != nil || string(got) != `{"a":1}` {
		t.Errorf(`Go Get(tsgo:ttl) = %s, %v; want {"a":1}`, got, err)
	}
	if got, err := st.Get(c, "tsgo:dedupe"); err != nil || string(got) != "true" {
		t.Errorf("Go Get(tsgo:dedupe) = %s, %v; want true", got, err)
	}
	if ok, err := st.SetIfNotExists(c, "tsgo:dedupe", true, time.Minute); err != nil || ok {
		t.Errorf("Go SetIfNotExists on a TS-claimed key = %v, %v; want false", ok, err)
	}
	if got, err := st.Get(c, "tsgo:missing"); err != nil || got != nil {
		t.Errorf("Go Get(missing) = %q, %v; want nil, nil", got, err)
	}

	// The list: trimmed to the newest 3, TTL 7 days.
	items, err := st.GetList(c, "tsgo:history")
	if err != nil {
		t.Fatalf("Go GetList: %v", err)
	}
	if got, want := joinRaw(items), `{"n":3} {"n":4} {"n":5}`; got != want {
		t.Errorf("Go GetList(tsgo:history) = %s, want %s", got, want)
	}
	e.checkPTTL(t, "chat-sdk:list:tsgo:history", 7*day, 30000)

	// The queue: TS's Message.toJSON bytes, then Go drains it in order.
	qkey := "chat-sdk:queue:" + thread
	e.checkPTTL(t, qkey, 90000, 30000)
	raws := e.lrange(t, qkey)
	if len(raws) != 3 {
		t.Fatalf("queue holds %d entries, want 3", len(raws))
	}
	if string(entryJSON(m1, now, now+90000)) != raws[0] {
		t.Errorf("TS stored the chat Message entry as\n%s\nwant (Message.toJSON, as Go builds it)\n%s", raws[0], entryJSON(m1, now, now+90000))
	}
	if n, err := st.QueueDepth(c, thread); err != nil || n != 3 {
		t.Errorf("Go QueueDepth = %d, %v; want 3", n, err)
	}
	checkEntry(t, "entry 1", mustDequeue(t, st, thread), m1, now, now+90000)
	checkEntry(t, "entry 2", mustDequeue(t, st, thread), m2, now+1, now+90001)
	checkEntry(t, "entry 3", mustDequeue(t, st, thread), m3, now+2, now+90002)
	if got := mustDequeue(t, st, thread); got != nil {
		t.Errorf("Go Dequeue of the drained queue = %+v, want nil", got)
	}
	if n, err := st.QueueDepth(c, thread); err != nil || n != 0 {
		t.Errorf("Go QueueDepth after draining = %d, %v; want 0", n, err)
	}
}

// testGoWritesTSReads: everything the Go State writes, state-redis reads.
func (e *env) testGoWritesTSReads(t *testing.T) {
	c := ctx(t)
	st := e.state()
	const thread = "slack:C0GOTS:1700000000.000200"
	now := time.Now().UnixMilli()
	sent := time.UnixMilli(1700000001000)

	if err := st.Subscribe(c, thread); err != nil {
		t.Fatal(err)
	}
	gl, err := st.AcquireLock(c, thread, 30*time.Second)
	if err != nil || gl == nil {
		t.Fatalf("Go AcquireLock = %+v, %v", gl, err)
	}
	for _, vc := range valueCases {
		if err := st.Set(c, "gots:"+vc.name, vc.goV, 0); err != nil {
			t.Errorf("Go Set(%s, %#v): %v", vc.name, vc.goV, err)
		}
	}
	if ok, err := st.SetIfNotExists(c, "gots:dedupe", true, 10*time.Minute); err != nil || !ok {
		t.Errorf("Go SetIfNotExists(new key) = %v, %v; want true", ok, err)
	}
	for i := 1; i <= 5; i++ {
		if err := st.AppendToList(c, "gots:history", map[string]any{"n": i}, upstash.ListOptions{MaxLength: 3, TTL: 7 * 24 * time.Hour}); err != nil {
			t.Fatal(err)
		}
	}
	m1 := chatMessageJSON("g1", thread, "hello from Go", sent)
	m2, m3 := `{"text":"second","n":2}`, `"third"`
	for i, m := range []string{m1, m2, m3} {
		n, err := st.Enqueue(c, thread, goEntry(m, now+int64(i), now+90000+int64(i)), 10)
		if err != nil || n != i+1 {
			t.Errorf("Go Enqueue %d = %d, %v; want %d", i+1, n, err, i+1)
		}
	}

	ops := []op{
		{"op": "isSubscribed", "threadId": thread, "expect": true},
		{"op": "isSubscribed", "threadId": thread + "x", "expect": false},
		{"op": "acquireLock", "threadId": thread, "ttlMs": 30000, "expect": nil, "label": "acquire go-held"},
	}
	for _, vc := range valueCases {
		// TS must read from a Go write exactly what it reads from its own.
		ops = append(ops, op{"op": "get", "key": "gots:" + vc.name, "expect": json.RawMessage(vc.want), "label": vc.name})
	}
	ops = append(ops,
		op{"op": "get", "key": "gots:missing", "expect": nil},
		op{"op": "setIfNotExists", "key": "gots:dedupe", "value": "x", "ttlMs": 60000, "expect": false},
		op{"op": "get", "key": "gots:dedupe", "expect": true},
		op{"op": "getList", "key": "gots:history", "expect": json.RawMessage(`[{"n":3},{"n":4},{"n":5}]`)},
		op{"op": "getList", "key": "gots:missing", "expect": json.RawMessage(`[]`)},
		op{"op": "queueDepth", "threadId": thread, "expect": 3},
		op{"op": "dequeue", "threadId": thread, "revive": true, "label": "revive", "expect": json.RawMessage(fmt.Sprintf(
			`{"entry":%s,"revived":{"isMessage":true,"id":"g1","threadId":%q,"text":"hello from Go","dateSent":%q,"authorUserName":"alice"}}`,
			entryJSON(m1, now, now+90000), thread, sent.UTC().Format("2006-01-02T15:04:05.000Z")))},
		op{"op": "dequeue", "threadId": thread, "expect": entryJSON(m2, now+1, now+90001)},
		op{"op": "dequeue", "threadId": thread, "expect": entryJSON(m3, now+2, now+90002)},
		op{"op": "dequeue", "threadId": thread, "expect": nil},
		op{"op": "queueDepth", "threadId": thread, "expect": 0},
		op{"op": "unsubscribe", "threadId": thread},
		op{"op": "delete", "key": "gots:string"},
	)
	rs := e.ts(t, ops...)
	rs.checkAll(t)

	// What TS changed, Go sees.
	if ok, err := st.IsSubscribed(c, thread); err != nil || ok {
		t.Errorf("Go IsSubscribed after TS unsubscribe = %v, %v; want false", ok, err)
	}
	if got, err := st.Get(c, "gots:string"); err != nil || got != nil {
		t.Errorf("Go Get after TS delete = %q, %v; want nil", got, err)
	}
	if got := e.mustRawGet(t, "chat-sdk:lock:"+thread); got != gl.Token {
		t.Errorf("lock key holds %q after TS tried to acquire, want Go's token %q", got, gl.Token)
	}
	if err := st.ReleaseLock(c, gl); err != nil {
		t.Fatal(err)
	}
}

// testByteLayout: the same operation from each side leaves identical keys,
// types, bytes and TTLs.
func (e *env) testByteLayout(t *testing.T) {
	c := ctx(t)
	st := e.state()
	now := time.Now().UnixMilli()
	// A message as JSON text (json.RawMessage on the Go side), with what
	// encoding/json would escape in a Go string: Go must store it as is.
	msg := `{"_type":"chat:Message","id":"m","text":"layout <&> é ` + "\u2028" + `","raw":{"ts":"1.2"},"n":[1,2.5,null]}`
	enq, exp := now, now+90000

	// k names a key of one side: side is "ts" or "go".
	k := func(side, name string) string { return "layout:" + side + ":" + name }

	var ops []op
	for _, vc := range valueCases {
		ops = append(ops, op{"op": "set", "key": k("ts", vc.name), "value": json.RawMessage(vc.js), "label": vc.name})
	}
	ops = append(ops,
		op{"op": "set", "key": k("ts", "ttl"), "value": map[string]any{"a": 1, "b": "x"}, "ttlMs": 90000},
		op{"op": "set", "key": k("ts", "ttl-cleared"), "value": 1, "ttlMs": 90000},
		op{"op": "set", "key": k("ts", "ttl-cleared"), "value": 2},
		op{"op": "setIfNotExists", "key": k("ts", "nx"), "value": true, "ttlMs": 600000, "expect": true},
		op{"op": "setIfNotExists", "key": k("ts", "nx-nottl"), "value": map[string]any{"v": 1}, "expect": true},
		op{"op": "appendToList", "key": k("ts", "list"), "value": "a", "options": map[string]any{"maxLength": 2, "ttlMs": 60000}},
		op{"op": "appendToList", "key": k("ts", "list"), "value": map[string]any{"n": 1}, "options": map[string]any{"maxLength": 2, "ttlMs": 60000}},
		op{"op": "appendToList", "key": k("ts", "list"), "value": 2.5, "options": map[string]any{"maxLength": 2, "ttlMs": 60000}},
		op{"op": "appendToList", "key": k("ts", "list"), "value": nil}, // no options: trims nothing, keeps the TTL
		op{"op": "appendToList", "key": k("ts", "list-nottl"), "value": "x"},
		op{"op": "enqueue", "threadId": k("ts", "q"), "entry": entryArg(msg, enq, exp), "maxSize": 10, "expect": 1},
		op{"op": "enqueue", "threadId": k("ts", "q-floor"), "entry": entryArg(`"soon"`, now, now+10000), "maxSize": 10, "expect": 1},
		op{"op": "subscribe", "threadId": k("ts", "thread")},
		op{"op": "acquireLock", "threadId": k("ts", "lock"), "ttlMs": 30000, "label": "lock"},
		// Ids are arbitrary platform strings: colons, spaces, any Unicode.
		op{"op": "set", "key": k("ts", uniName), "value": "u"},
		op{"op": "subscribe", "threadId": k("ts", uniName)},
		op{"op": "acquireLock", "threadId": k("ts", uniName), "ttlMs": 30000},
		op{"op": "enqueue", "threadId": k("ts", uniName), "entry": entryArg(`"u"`, enq, exp), "maxSize": 1, "expect": 1},
		op{"op": "appendToList", "key": k("ts", uniName), "value": "u"},
	)
	rs := e.ts(t, ops...)
	rs.checkAll(t)

	for _, vc := range valueCases {
		if err := st.Set(c, k("go", vc.name), vc.goV, 0); err != nil {
			t.Errorf("Go Set(%s): %v", vc.name, err)
		}
	}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(st.Set(c, k("go", "ttl"), map[string]any{"a": 1, "b": "x"}, 90*time.Second))
	must(st.Set(c, k("go", "ttl-cleared"), 1, 90*time.Second))
	must(st.Set(c, k("go", "ttl-cleared"), 2, 0))
	if ok, err := st.SetIfNotExists(c, k("go", "nx"), true, 10*time.Minute); err != nil || !ok {
		t.Errorf("Go SetIfNotExists = %v, %v", ok, err)
	}
	if ok, err := st.SetIfNotExists(c, k("go", "nx-nottl"), map[string]any{"v": 1}, 0); err != nil || !ok {
		t.Errorf("Go SetIfNotExists = %v, %v", ok, err)
	}
	opts := upstash.ListOptions{MaxLength: 2, TTL: time.Minute}
	must(st.AppendToList(c, k("go", "list"), "a", opts))
	must(st.AppendToList(c, k("go", "list"), map[string]any{"n": 1}, opts))
	must(st.AppendToList(c, k("go", "list"), 2.5, opts))
	must(st.AppendToList(c, k("go", "list"), nil, upstash.ListOptions{}))
	must(st.AppendToList(c, k("go", "list-nottl"), "x", upstash.ListOptions{}))
	if n, err := st.Enqueue(c, k("go", "q"), goEntry(msg, enq, exp), 10); err != nil || n != 1 {
		t.Errorf("Go Enqueue = %d, %v", n, err)
	}
	if n, err := st.Enqueue(c, k("go", "q-floor"), goEntry(`"soon"`, now, now+10000), 10); err != nil || n != 1 {
		t.Errorf("Go Enqueue = %d, %v", n, err)
	}
	must(st.Subscribe(c, k("go", "thread")))
	gl, err := st.AcquireLock(c, k("go", "lock"), 30*time.Second)
	if err != nil || gl == nil {
		t.Fatalf("Go AcquireLock = %+v, %v", gl, err)
	}
	must(st.Set(c, k("go", uniName), "u", 0))
	must(st.Subscribe(c, k("go", uniName)))
	if l, err := st.AcquireLock(c, k("go", uniName), 30*time.Second); err != nil || l == nil {
		t.Errorf("Go AcquireLock(%q) = %+v, %v", k("go", uniName), l, err)
	}
	if n, err := st.Enqueue(c, k("go", uniName), goEntry(`"u"`, enq, exp), 1); err != nil || n != 1 {
		t.Errorf("Go Enqueue = %d, %v", n, err)
	}
	must(st.AppendToList(c, k("go", uniName), "u", upstash.ListOptions{}))

	// Same keys on both sides.
	tsKeys := e.sharedKeys(t, "*layout:ts:*")
	goKeys := e.sharedKeys(t, "*layout:go:*")
	mapped := make([]string, len(tsKeys))
	for i, key := range tsKeys {
		mapped[i] = strings.Replace(key, "layout:ts:", "layout:go:", 1)
	}
	sort.Strings(mapped)
	if strings.Join(mapped, "\n") != strings.Join(goKeys, "\n") {
		t.Errorf("key sets differ\nTS (renamed to go): %q\nGo:                 %q", mapped, goKeys)
	}

	// Cache strings: identical bytes, both JSON.stringify's.
	for _, vc := range valueCases {
		tsRaw := e.mustRawGet(t, "chat-sdk:cache:"+k("ts", vc.name))
		goRaw, ok := e.rawGet(t, "chat-sdk:cache:"+k("go", vc.name))
		if !ok {
			continue // Set failed, reported above
		}
		if tsRaw != goRaw {
			t.Errorf("set(%s): stored bytes differ\n  TS (JSON.stringify): %q\n  Go (State.Set):      %q", vc.name, tsRaw, goRaw)
		} else if tsRaw != vc.want {
			t.Errorf("set(%s): both sides stored %q, the test expects %q", vc.name, tsRaw, vc.want)
		}
		e.checkNoTTL(t, "chat-sdk:cache:"+k("ts", vc.name))
		e.checkNoTTL(t, "chat-sdk:cache:"+k("go", vc.name))
	}
	for _, name := range []string{"ttl", "ttl-cleared", "nx", "nx-nottl"} {
		tsRaw, goRaw := e.mustRawGet(t, "chat-sdk:cache:"+k("ts", name)), e.mustRawGet(t, "chat-sdk:cache:"+k("go", name))
		if tsRaw != goRaw {
			t.Errorf("%s: stored bytes differ: TS %q, Go %q", name, tsRaw, goRaw)
		}
	}
	for _, side := range []string{"ts", "go"} {
		e.checkPTTL(t, "chat-sdk:cache:"+k(side, "ttl"), 90000, 30000)
		e.checkNoTTL(t, "chat-sdk:cache:"+k(side, "ttl-cleared"))
		e.checkPTTL(t, "chat-sdk:cache:"+k(side, "nx"), 600000, 30000)
		e.checkNoTTL(t, "chat-sdk:cache:"+k(side, "nx-nottl"))
		e.checkPTTL(t, "chat-sdk:list:"+k(side, "list"), 60000, 30000)
		e.checkNoTTL(t, "chat-sdk:list:"+k(side, "list-nottl"))
		e.checkPTTL(t, "chat-sdk:queue:"+k(side, "q"), 90000, 30000)
		e.checkPTTL(t, "chat-sdk:queue:"+k(side, "q-floor"), 60000, 30000)
		e.checkPTTL(t, "chat-sdk:lock:"+k(side, "lock"), 30000, 30000)
	}

	// Lists and queues: identical items.
	for _, name := range []string{"list", "list-nottl"} {
		tsItems, goItems := e.lrange(t, "chat-sdk:list:"+k("ts", name)), e.lrange(t, "chat-sdk:list:"+k("go", name))
		if fmt.Sprintf("%q", tsItems) != fmt.Sprintf("%q", goItems) {
			t.Errorf("appendToList %s: items differ\n  TS: %q\n  Go: %q", name, tsItems, goItems)
		}
	}
	if got := e.lrange(t, "chat-sdk:list:"+k("ts", "list")); fmt.Sprintf("%q", got) != `["{\"n\":1}" "2.5" "null"]` {
		t.Errorf(`TS list = %q, want [{"n":1} 2.5 null] (trimmed to 2, then one append without options)`, got)
	}
	for _, name := range []string{"q", "q-floor"} {
		tsItems, goItems := e.lrange(t, "chat-sdk:queue:"+k("ts", name)), e.lrange(t, "chat-sdk:queue:"+k("go", name))
		if fmt.Sprintf("%q", tsItems) != fmt.Sprintf("%q", goItems) {
			t.Errorf("enqueue %s: entries differ\n  TS: %q\n  Go: %q", name, tsItems, goItems)
		}
	}
	if got := e.lrange(t, "chat-sdk:queue:"+k("ts", "q")); len(got) != 1 || got[0] != string(entryJSON(msg, enq, exp)) {
		t.Errorf("TS queue = %q, want [%s]", got, entryJSON(msg, enq, exp))
	}

	// Subscriptions: members of one SET.
	for _, side := range []string{"ts", "go"} {
		for _, id := range []string{k(side, "thread"), k(side, uniName)} {
			if n := e.do(t, "SISMEMBER", "chat-sdk:subscriptions", id); n != int64(1) {
				t.Errorf("SISMEMBER chat-sdk:subscriptions %q = %v, want 1", id, n)
			}
		}
	}
	for _, kind := range []string{"cache", "list", "queue"} {
		tsRaw := fmt.Sprintf("%q", e.lrangeOrGet(t, "chat-sdk:"+kind+":"+k("ts", uniName)))
		goRaw := fmt.Sprintf("%q", e.lrangeOrGet(t, "chat-sdk:"+kind+":"+k("go", uniName)))
		if tsRaw != goRaw {
			t.Errorf("%s %q: TS stored %s, Go %s", kind, uniName, tsRaw, goRaw)
		}
	}
	if typ := e.typeOf(t, "chat-sdk:subscriptions"); typ != "set" {
		t.Errorf("TYPE chat-sdk:subscriptions = %s, want set", typ)
	}

	// Locks: a string holding the token; the Lock JSON has the same shape.
	tl := decodeLock(t, rs.find(t, "lock").Value)
	if got := e.mustRawGet(t, "chat-sdk:lock:"+k("ts", "lock")); got != tl.Token || !tsTokenRE.MatchString(got) {
		t.Errorf("TS lock key holds %q, want its token %q", got, tl.Token)
	}
	if got := e.mustRawGet(t, "chat-sdk:lock:"+k("go", "lock")); got != gl.Token || len(got) < 16 {
		t.Errorf("Go lock key holds %q, want its token %q (16+ chars)", got, gl.Token)
	}
	goJSON, err := json.Marshal(gl)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := jsonShape(t, goJSON), jsonShape(t, rs.find(t, "lock").Value); got != want {
		t.Errorf("Lock JSON shapes differ: Go %s (%s), TS %s (%s)", got, goJSON, want, rs.find(t, "lock").Value)
	}
	wantGo := fmt.Sprintf(`{"threadId":%q,"token":%q,"expiresAt":%d}`, gl.ThreadID, gl.Token, gl.ExpiresAt.UnixMilli())
	if string(goJSON) != wantGo {
		t.Errorf("Go Lock JSON = %s, want %s", goJSON, wantGo)
	}
	for _, side := range []string{"ts", "go"} {
		for _, kind := range []string{"cache", "list", "queue", "lock"} {
			for _, key := range e.keys(t, "chat-sdk:"+kind+":layout:"+side+":*") {
				want := map[string]string{"cache": "string", "list": "list", "queue": "list", "lock": "string"}[kind]
				if typ := e.typeOf(t, key); typ != want {
					t.Errorf("TYPE %s = %s, want %s", key, typ, want)
				}
			}
		}
	}
	must(st.ReleaseLock(c, gl))
}

// uniName is a key and thread id with what platform ids may contain.
const uniName = "ключ:😀 x/y#1"

// lrangeOrGet reads a list's items or a string's bytes.
func (e *env) lrangeOrGet(t *testing.T, key string) []string {
	t.Helper()
	if e.typeOf(t, key) == "list" {
		return e.lrange(t, key)
	}
	return []string{e.mustRawGet(t, key)}
}

// jsonShape describes a JSON object's keys in order with their JSON types.
func jsonShape(t *testing.T, raw json.RawMessage) string {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		t.Fatalf("%s is not a JSON object", raw)
	}
	var parts []string
	for dec.More() {
		key, err := dec.Token()
		if err != nil {
			t.Fatal(err)
		}
		var v any
		if err := dec.Decode(&v); err != nil {
			t.Fatal(err)
		}
		typ := fmt.Sprintf("%T", v)
		if n, ok := v.(json.Number); ok {
			if _, err := n.Int64(); err == nil {
				typ = "integer"
			}
		}
		parts = append(parts, fmt.Sprintf("%v:%s", key, typ))
	}
	return "{" + strings.Join(parts, ",") + "}"
}

func joinRaw(items []json.RawMessage) string {
	s := make([]string, len(items))
	for i, it := range items {
		s[i] = string(it)
	}
	return strings.Join(s, " ")
}

// testLocks: a lock held by either side keeps the other out; only its
// owner's token releases or extends it; force-release works from both.
func (e *env) testLocks(t *testing.T) {
	c := ctx(t)
	st := e.state()
	const tsHeld, goHeld, goForced = "locks:ts-held", "locks:go-held", "locks:go-forced"
	key := func(id string) string { return "chat-sdk:lock:" + id }

	// 1. TS takes tsHeld and, as its owner, extends it.
	rs := e.ts(t,
		op{"op": "acquireLock", "threadId": tsHeld, "ttlMs": 30000, "save": "a", "label": "acquire"},
		op{"op": "extendLock", "lock": "$a", "ttlMs": 45000, "expect": true, "label": "owner extend"},
	)
	rs.checkAll(t)
	tsA := decodeLock(t, rs.find(t, "acquire").Value)
	if got := e.mustRawGet(t, key(tsHeld)); got != tsA.Token {
		t.Fatalf("lock %s holds %q, want the TS token %q", tsHeld, got, tsA.Token)
	}
	e.checkPTTL(t, key(tsHeld), 45000, 14000) // extended past its 30 s

	// Go is kept out, and another token neither releases nor extends it.
	if l, err := st.AcquireLock(c, tsHeld, 30*time.Second); err != nil || l != nil {
		t.Errorf("Go AcquireLock on a TS-held lock = %+v, %v; want nil, nil", l, err)
	}
	forged := &upstash.Lock{ThreadID: tsHeld, Token: "redis_0_forged", ExpiresAt: tsA.ExpiresAt}
	if err := st.ReleaseLock(c, forged); err != nil {
		t.Errorf("Go ReleaseLock(foreign token): %v", err)
	}
	if got, _ := e.rawGet(t, key(tsHeld)); got != tsA.Token {
		t.Errorf("after Go ReleaseLock with another token, lock holds %q, want the TS token", got)
	}
	if ok, err := st.ExtendLock(c, forged, 120*time.Second); err != nil || ok {
		t.Errorf("Go ExtendLock(foreign token) = %v, %v; want false", ok, err)
	}
	e.checkPTTL(t, key(tsHeld), 45000, 14000) // not extended to 120 s
	// The Lock JSON is shared: Go, given TS's lock, extends it.
	if ok, err := st.ExtendLock(c, tsA, 50*time.Second); err != nil || !ok {
		t.Errorf("Go ExtendLock(TS's lock from its JSON) = %v, %v; want true", ok, err)
	}
	e.checkPTTL(t, key(tsHeld), 50000, 14000)

	// Go holds goHeld (and extends it as its owner) and goForced.
	gl, err := st.AcquireLock(c, goHeld, 30*time.Second)
	if err != nil || gl == nil {
		t.Fatalf("Go AcquireLock = %+v, %v", gl, err)
	}
	if ok, err := st.ExtendLock(c, gl, 40*time.Second); err != nil || !ok {
		t.Errorf("Go owner ExtendLock = %v, %v; want true", ok, err)
	}
	e.checkPTTL(t, key(goHeld), 40000, 14000)
	gf, err := st.AcquireLock(c, goForced, 30*time.Second)
	if err != nil || gf == nil {
		t.Fatalf("Go AcquireLock = %+v, %v", gf, err)
	}

	// 2. TS is kept out of goHeld: a forged token and its own token (for
	// another lock) neither release nor extend it. TS force-releases
	// goForced and takes it.
	forgedTS := map[string]any{"threadId": goHeld, "token": "redis_0_forged", "expiresAt": gl.ExpiresAt.UnixMilli()}
	ownTS := map[string]any{"threadId": goHeld, "token": tsA.Token, "expiresAt": tsA.ExpiresAt.UnixMilli()}
	rs = e.ts(t,
		op{"op": "acquireLock", "threadId": goHeld, "ttlMs": 30000, "expect": nil, "label": "acquire go-held"},
		op{"op": "releaseLock", "lock": forgedTS, "label": "release forged"},
		op{"op": "releaseLock", "lock": ownTS, "label": "release with own token"},
		op{"op": "extendLock", "lock": forgedTS, "ttlMs": 120000, "expect": false, "label": "extend forged"},
		op{"op": "extendLock", "lock": ownTS, "ttlMs": 120000, "expect": false, "label": "extend with own token"},
		op{"op": "acquireLock", "threadId": goForced, "ttlMs": 30000, "expect": nil, "label": "acquire go-forced"},
		op{"op": "forceReleaseLock", "threadId": goForced},
		op{"op": "acquireLock", "threadId": goForced, "ttlMs": 30000, "label": "acquire after force"},
	)
	rs.checkAll(t)
	if got := e.mustRawGet(t, key(goHeld)); got != gl.Token {
		t.Errorf("after TS release/extend attempts, %s holds %q, want Go's token %q", goHeld, got, gl.Token)
	}
	e.checkPTTL(t, key(goHeld), 40000, 20000) // not extended to 120 s
	tsB := decodeLock(t, rs.find(t, "acquire after force").Value)
	if got := e.mustRawGet(t, key(goForced)); got != tsB.Token {
		t.Errorf("after TS force-release and acquire, %s holds %q, want the TS token %q", goForced, got, tsB.Token)
	}
	// Go's lock on goForced is stale: release is a no-op, extend false.
	if err := st.ReleaseLock(c, gf); err != nil {
		t.Errorf("Go ReleaseLock(stale): %v", err)
	}
	if got, _ := e.rawGet(t, key(goForced)); got != tsB.Token {
		t.Errorf("Go's stale ReleaseLock removed TS's lock: %s holds %q", goForced, got)
	}
	if ok, err := st.ExtendLock(c, gf, time.Minute); err != nil || ok {
		t.Errorf("Go ExtendLock(stale) = %v, %v; want false", ok, err)
	}
	// Go force-releases TS's lock and takes it.
	if err := st.ForceReleaseLock(c, tsHeld); err != nil {
		t.Fatal(err)
	}
	if e.exists(t, key(tsHeld)) {
		t.Errorf("Go ForceReleaseLock left %s in place", key(tsHeld))
	}
	g2, err := st.AcquireLock(c, tsHeld, 30*time.Second)
	if err != nil || g2 == nil {
		t.Fatalf("Go AcquireLock after force-release = %+v, %v", g2, err)
	}
	glJSON, err := json.Marshal(gl)
	if err != nil {
		t.Fatal(err)
	}

	// 3. TS's stale lock on tsHeld neither releases nor extends Go's; TS
	// extends Go's goHeld from its JSON and releases its own goForced.
	rs = e.ts(t,
		op{"op": "releaseLock", "lock": lockArg(tsA), "label": "stale release"},
		op{"op": "extendLock", "lock": lockArg(tsA), "ttlMs": 60000, "expect": false, "label": "stale extend"},
		op{"op": "acquireLock", "threadId": tsHeld, "ttlMs": 30000, "expect": nil, "label": "acquire go-held"},
		op{"op": "extendLock", "lock": json.RawMessage(glJSON), "ttlMs": 55000, "expect": true, "label": "extend Go's lock from its JSON"},
		op{"op": "releaseLock", "lock": lockArg(tsB), "label": "owner release"},
		op{"op": "forceReleaseLock", "threadId": "locks:never-held", "label": "force-release missing"},
	)
	rs.checkAll(t)
	if got := e.mustRawGet(t, key(tsHeld)); got != g2.Token {
		t.Errorf("after TS's stale release, %s holds %q, want Go's token %q", tsHeld, got, g2.Token)
	}
	e.checkPTTL(t, key(tsHeld), 30000, 20000) // not extended to 60 s
	e.checkPTTL(t, key(goHeld), 55000, 20000) // TS extended Go's lock
	if e.exists(t, key(goForced)) {
		t.Errorf("TS owner releaseLock left %s in place", key(goForced))
	}
	// Owners release on the Go side.
	for _, l := range []*upstash.Lock{gl, g2} {
		if err := st.ReleaseLock(c, l); err != nil {
			t.Fatal(err)
		}
		if e.exists(t, key(l.ThreadID)) {
			t.Errorf("Go owner ReleaseLock left %s in place", key(l.ThreadID))
		}
	}
}

// deepLevels is how deeply the deep queued message nests: real payloads
// never come close, but a queue entry one side can dequeue must not block
// the other side's consumer.
const deepLevels = 1000

// testQueues: a queue filled by one side is drained in order by the other,
// with maxSize trimming; mixed producers keep arrival order.
func (e *env) testQueues(t *testing.T) {
	c := ctx(t)
	st := e.state()
	now := time.Now().UnixMilli()
	seq := func(i int) string { return fmt.Sprintf(`{"seq":%d,"text":"m%d"}`, i, i) }
	enq := func(i int) int64 { return now + int64(i) }
	exp := func(i int) int64 { return now + 90000 + int64(i) }
	deep := strings.Repeat("[", deepLevels) + "1" + strings.Repeat("]", deepLevels)

	// 1. TS fills q:ts2go (5 entries, maxSize 3), q:ts-expired (an expired
	// entry, then a live one) and starts q:mixed.
	var ops []op
	for i, depth := range []int{1, 2, 3, 3, 3} {
		ops = append(ops, op{"op": "enqueue", "threadId": "q:ts2go", "entry": entryArg(seq(i+1), enq(i+1), exp(i+1)), "maxSize": 3, "expect": depth})
	}
	ops = append(ops,
		op{"op": "enqueue", "threadId": "q:ts-expired", "entry": entryArg(`"stale"`, now-91000, now-1000), "maxSize": 10, "expect": 1},
		op{"op": "enqueue", "threadId": "q:ts-expired", "entry": entryArg(`"live"`, now, now+90000), "maxSize": 10, "expect": 2},
		// maxSize 0: no trimming, on both sides.
		op{"op": "enqueue", "threadId": "q:mixed", "entry": entryArg(seq(1), enq(1), exp(1)), "maxSize": 0, "expect": 1},
		op{"op": "enqueue", "threadId": "q:mixed", "entry": entryArg(seq(2), enq(2), exp(2)), "maxSize": 0, "expect": 2},
		op{"op": "enqueue", "threadId": "q:ts-deep", "entry": entryArg(deep, now, now+90000), "maxSize": 10, "expect": 1},
		op{"op": "enqueue", "threadId": "q:ts-deep", "entry": entryArg(`"after"`, now, now+90000), "maxSize": 10, "expect": 2},
	)
	e.ts(t, ops...).checkAll(t)

	// A message nested 1000 deep (JSON.parse and encoding/json take it):
	// what state-redis can dequeue, Go must dequeue too.
	if got, err := st.Dequeue(c, "q:ts-deep"); err != nil {
		t.Errorf("Go Dequeue of a TS entry whose message is nested %d deep: %v (state-redis dequeues it; the queue is now blocked)", deepLevels, err)
		e.do(t, "DEL", "chat-sdk:queue:q:ts-deep")
	} else {
		checkEntry(t, "q:ts-deep deep entry", got, deep, now, now+90000)
		checkEntry(t, "q:ts-deep entry after it", mustDequeue(t, st, "q:ts-deep"), `"after"`, now, now+90000)
	}

	// Go drains q:ts2go: the newest 3, oldest first.
	if n, err := st.QueueDepth(c, "q:ts2go"); err != nil || n != 3 {
		t.Errorf("Go QueueDepth(q:ts2go) = %d, %v; want 3 (maxSize trimmed)", n, err)
	}
	for i := 3; i <= 5; i++ {
		checkEntry(t, fmt.Sprintf("q:ts2go entry %d", i), mustDequeue(t, st, "q:ts2go"), seq(i), enq(i), exp(i))
	}
	if got := mustDequeue(t, st, "q:ts2go"); got != nil {
		t.Errorf("Go Dequeue of drained q:ts2go = %+v, want nil", got)
	}
	// Deliberate difference: Go's Dequeue skips the expired entry TS queued.
	if n, err := st.QueueDepth(c, "q:ts-expired"); err != nil || n != 2 {
		t.Errorf("Go QueueDepth(q:ts-expired) = %d, %v; want 2 (depth counts expired entries)", n, err)
	}
	checkEntry(t, "q:ts-expired (expired entry skipped)", mustDequeue(t, st, "q:ts-expired"), `"live"`, now, now+90000)
	if n, err := st.QueueDepth(c, "q:ts-expired"); err != nil || n != 0 {
		t.Errorf("Go QueueDepth after Dequeue = %d, %v; want 0 (the expired entry was discarded)", n, err)
	}

	// Go fills q:go2ts and q:go-expired, and continues q:mixed.
	for i, depth := range []int{1, 2, 3, 3, 3} {
		if n, err := st.Enqueue(c, "q:go2ts", goEntry(seq(i+1), enq(i+1), exp(i+1)), 3); err != nil || n != depth {
			t.Errorf("Go Enqueue %d = %d, %v; want depth %d", i+1, n, err, depth)
		}
	}
	for i, ent := range []upstash.QueueEntry{goEntry(`"stale"`, now-91000, now-1000), goEntry(`"live"`, now, now+90000)} {
		if n, err := st.Enqueue(c, "q:go-expired", ent, 10); err != nil || n != i+1 {
			t.Errorf("Go Enqueue(q:go-expired) = %d, %v; want %d", n, err, i+1)
		}
	}
	for i := 3; i <= 4; i++ {
		if n, err := st.Enqueue(c, "q:mixed", goEntry(seq(i), enq(i), exp(i)), 0); err != nil || n != i {
			t.Errorf("Go Enqueue(q:mixed) = %d, %v; want %d", n, err, i)
		}
	}

	// 2. TS drains them.
	ops = []op{{"op": "queueDepth", "threadId": "q:go2ts", "expect": 3}}
	for i := 3; i <= 5; i++ {
		ops = append(ops, op{"op": "dequeue", "threadId": "q:go2ts", "expect": entryJSON(seq(i), enq(i), exp(i))})
	}
	ops = append(ops,
		op{"op": "dequeue", "threadId": "q:go2ts", "expect": nil},
		// state-redis hands the expired entry back; the Chat SDK core drops it.
		op{"op": "dequeue", "threadId": "q:go-expired", "expect": entryJSON(`"stale"`, now-91000, now-1000)},
		op{"op": "dequeue", "threadId": "q:go-expired", "expect": entryJSON(`"live"`, now, now+90000)},
		op{"op": "dequeue", "threadId": "q:go-expired", "expect": nil},
		op{"op": "queueDepth", "threadId": "q:mixed", "expect": 4},
	)
	for i := 1; i <= 4; i++ {
		ops = append(ops, op{"op": "dequeue", "threadId": "q:mixed", "expect": entryJSON(seq(i), enq(i), exp(i))})
	}
	ops = append(ops, op{"op": "queueDepth", "threadId": "q:mixed", "expect": 0})
	e.ts(t, ops...).checkAll(t)
	for _, q := range []string{"q:ts2go", "q:ts-expired", "q:go2ts", "q:go-expired", "q:mixed", "q:ts-deep"} {
		if e.exists(t, "chat-sdk:queue:"+q) {
			t.Errorf("drained queue %s still exists", q)
		}
	}
}

// testKeyPrefix: the same custom prefix on both sides shares state; a
// different one isolates it; "" means the default on both.
func (e *env) testKeyPrefix(t *testing.T) {
	c := ctx(t)
	now := time.Now().UnixMilli()
	a, b, def := e.state(upstash.WithKeyPrefix("bot-a")), e.state(upstash.WithKeyPrefix("bot-b")), e.state()
	empty := e.state(upstash.WithKeyPrefix(""))

	// 1. TS with prefix bot-a (and "", the default) writes.
	e.ts(t,
		op{"op": "subscribe", "prefix": "bot-a", "threadId": "pfx-thread"},
		op{"op": "set", "prefix": "bot-a", "key": "pfx-key", "value": map[string]any{"from": "ts"}},
		op{"op": "appendToList", "prefix": "bot-a", "key": "pfx-list", "value": "ts"},
		op{"op": "enqueue", "prefix": "bot-a", "threadId": "pfx-thread", "entry": entryArg(`"ts"`, now, now+90000), "maxSize": 10, "expect": 1},
		op{"op": "acquireLock", "prefix": "bot-a", "threadId": "pfx-lock", "ttlMs": 30000},
		op{"op": "set", "prefix": "", "key": "pfx-empty", "value": "ts-empty"},
	).checkAll(t)
	wantKeys := "bot-a:cache:pfx-key bot-a:list:pfx-list bot-a:lock:pfx-lock bot-a:queue:pfx-thread bot-a:subscriptions"
	if got := strings.Join(e.sharedKeys(t, "bot-a:*"), " "); got != wantKeys {
		t.Errorf("TS with keyPrefix bot-a wrote keys %s, want %s", got, wantKeys)
	}
	if got := e.mustRawGet(t, "chat-sdk:cache:pfx-empty"); got != `"ts-empty"` {
		t.Errorf(`TS with keyPrefix "" wrote chat-sdk:cache:pfx-empty = %q`, got)
	}

	// Go with bot-a sees it all; bot-b and the default see none of it.
	if ok, err := a.IsSubscribed(c, "pfx-thread"); err != nil || !ok {
		t.Errorf("bot-a IsSubscribed = %v, %v; want true", ok, err)
	}
	if got, err := a.Get(c, "pfx-key"); err != nil || string(got) != `{"from":"ts"}` {
		t.Errorf(`bot-a Get = %s, %v; want {"from":"ts"}`, got, err)
	}
	if got, err := a.GetList(c, "pfx-list"); err != nil || joinRaw(got) != `"ts"` {
		t.Errorf(`bot-a GetList = %s, %v; want ["ts"]`, joinRaw(got), err)
	}
	if n, err := a.QueueDepth(c, "pfx-thread"); err != nil || n != 1 {
		t.Errorf("bot-a QueueDepth = %d, %v; want 1", n, err)
	}
	if l, err := a.AcquireLock(c, "pfx-lock", 30*time.Second); err != nil || l != nil {
		t.Errorf("bot-a AcquireLock on TS's lock = %+v, %v; want nil", l, err)
	}
	if got, err := empty.Get(c, "pfx-empty"); err != nil || string(got) != `"ts-empty"` {
		t.Errorf(`WithKeyPrefix("") Get = %s, %v; want "ts-empty" (the default prefix)`, got, err)
	}
	for name, st := range map[string]*upstash.State{"bot-b": b, "default": def} {
		if ok, err := st.IsSubscribed(c, "pfx-thread"); err != nil || ok {
			t.Errorf("%s IsSubscribed = %v, %v; want false", name, ok, err)
		}
		if got, err := st.Get(c, "pfx-key"); err != nil || got != nil {
			t.Errorf("%s Get = %s, %v; want nil", name, got, err)
		}
		if got, err := st.GetList(c, "pfx-list"); err != nil || len(got) != 0 {
			t.Errorf("%s GetList = %s, %v; want []", name, joinRaw(got), err)
		}
		if n, err := st.QueueDepth(c, "pfx-thread"); err != nil || n != 0 {
			t.Errorf("%s QueueDepth = %d, %v; want 0", name, n, err)
		}
		l, err := st.AcquireLock(c, "pfx-lock", 30*time.Second)
		if err != nil || l == nil {
			t.Errorf("%s AcquireLock = %+v, %v; want a lock (bot-a's lock is another key)", name, l, err)
		} else if err := st.ReleaseLock(c, l); err != nil {
			t.Error(err)
		}
	}

	// Go with bot-a (and bot-b) writes.
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(a.Subscribe(c, "pfx-go-thread"))
	must(a.Set(c, "pfx-go-key", map[string]any{"from": "go"}, 0))
	must(b.Set(c, "pfx-go-key", map[string]any{"from": "go-b"}, 0))
	must(a.AppendToList(c, "pfx-go-list", "go", upstash.ListOptions{}))
	if _, err := a.Enqueue(c, "pfx-go-thread", goEntry(`"go"`, now, now+90000), 10); err != nil {
		t.Fatal(err)
	}
	if l, err := a.AcquireLock(c, "pfx-go-lock", 30*time.Second); err != nil || l == nil {
		t.Fatalf("bot-a AcquireLock = %+v, %v", l, err)
	}
	must(empty.Set(c, "pfx-go-empty", "go-empty", 0))

	// 2. TS with bot-a sees it; bot-b and the default do not.
	e.ts(t,
		op{"op": "isSubscribed", "prefix": "bot-a", "threadId": "pfx-go-thread", "expect": true},
		op{"op": "get", "prefix": "bot-a", "key": "pfx-go-key", "expect": map[string]any{"from": "go"}},
		op{"op": "getList", "prefix": "bot-a", "key": "pfx-go-list", "expect": []any{"go"}},
		op{"op": "queueDepth", "prefix": "bot-a", "threadId": "pfx-go-thread", "expect": 1},
		op{"op": "acquireLock", "prefix": "bot-a", "threadId": "pfx-go-lock", "ttlMs": 30000, "expect": nil},
		op{"op": "get", "prefix": "bot-b", "key": "pfx-go-key", "expect": map[string]any{"from": "go-b"}},
		op{"op": "isSubscribed", "prefix": "bot-b", "threadId": "pfx-go-thread", "expect": false},
		op{"op": "getList", "prefix": "bot-b", "key": "pfx-go-list", "expect": []any{}},
		op{"op": "queueDepth", "prefix": "bot-b", "threadId": "pfx-go-thread", "expect": 0},
		op{"op": "acquireLock", "prefix": "bot-b", "threadId": "pfx-go-lock", "ttlMs": 30000, "save": "bl", "label": "bot-b lock"},
		op{"op": "releaseLock", "prefix": "bot-b", "lock": "$bl"},
		op{"op": "get", "key": "pfx-go-key", "expect": nil},
		op{"op": "isSubscribed", "threadId": "pfx-go-thread", "expect": false},
		op{"op": "get", "prefix": "", "key": "pfx-go-empty", "expect": "go-empty"},
		op{"op": "get", "key": "pfx-go-empty", "expect": "go-empty"},
	).checkAll(t)
	wantKeys = "bot-a:cache:pfx-go-key bot-a:list:pfx-go-list bot-a:lock:pfx-go-lock bot-a:queue:pfx-go-thread bot-a:subscriptions"
	if got := strings.Join(e.sharedKeys(t, "bot-a:*go*"), " ") + " bot-a:subscriptions"; got != wantKeys {
		t.Errorf("Go WithKeyPrefix(bot-a) wrote keys %s, want %s", got, wantKeys)
	}
	if got := e.mustRawGet(t, "chat-sdk:cache:pfx-go-empty"); got != `"go-empty"` {
		t.Errorf(`Go WithKeyPrefix("") wrote chat-sdk:cache:pfx-go-empty = %q`, got)
	}
}

// testDeliberateDifferences asserts where Go decided to differ from
// state-redis, and where both refuse the same input.
func (e *env) testDeliberateDifferences(t *testing.T) {
	c := ctx(t)
	st := e.state()
	now := time.Now().UnixMilli()
	e.do(t, "SET", "chat-sdk:cache:diff:raw", "not json {")
	e.do(t, "RPUSH", "chat-sdk:list:diff:corrupt", `{"ok":1}`, "not json")
	gl, err := st.AcquireLock(c, "diff:go-lock", 30*time.Second)
	if err != nil || gl == nil {
		t.Fatalf("Go AcquireLock = %+v, %v", gl, err)
	}

	rs := e.ts(t,
		op{"op": "set", "key": "", "value": 1, "label": "set empty key"},
		op{"op": "get", "key": "diff:raw", "expect": "not json {", "label": "get non-JSON"},
		op{"op": "getList", "key": "diff:corrupt", "label": "getList corrupt"},
		op{"op": "acquireLock", "threadId": "diff:ts-zero", "ttlMs": 0, "label": "acquire ttl 0"},
		op{"op": "acquireLock", "threadId": "diff:ts-lock", "ttlMs": 30000, "save": "l"},
		op{"op": "extendLock", "lock": "$l", "ttlMs": 0, "expect": true, "label": "extend ttl 0"},
		op{"op": "set", "key": "diff:neg-ttl", "value": 1, "ttlMs": -5, "label": "set negative ttl"},
		op{"op": "appendToList", "key": "diff:neg-list", "value": 1, "options": map[string]any{"maxLength": -1}, "label": "append negative maxLength"},
		op{"op": "appendToList", "key": "diff:neg-list", "value": 2, "options": map[string]any{"maxLength": -1}, "label": "append negative maxLength 2"},
		op{"op": "enqueue", "threadId": "diff:neg-queue", "entry": entryArg(`"a"`, now, now+90000), "maxSize": -1, "expect": 1, "label": "enqueue negative maxSize"},
	)
	// state-redis: get returns the raw string; getList throws; PX 0 is refused.
	for _, label := range []string{"set empty key", "append negative maxLength", "append negative maxLength 2"} {
		if r := rs.find(t, label); !r.OK {
			t.Errorf("TS %v, want success", r)
		}
	}
	if got := e.lrange(t, "chat-sdk:list:diff:neg-list"); len(got) != 2 {
		t.Errorf("state-redis appendToList with maxLength -1 left %q, want 2 items (no trimming)", got)
	}
	for _, label := range []string{"get non-JSON", "extend ttl 0", "enqueue negative maxSize"} {
		if r := rs.find(t, label); !r.OK || r.Equal == nil || !*r.Equal {
			t.Errorf("TS %v, want success equal to the expected value", r)
		}
	}
	for _, label := range []string{"getList corrupt", "acquire ttl 0", "set negative ttl"} {
		if r := rs.find(t, label); r.OK {
			t.Errorf("TS %v, want an error", r)
		}
	}
	// state-redis's extendLock(lock, 0) reports true but deletes the lock.
	if e.exists(t, "chat-sdk:lock:diff:ts-lock") {
		t.Errorf("state-redis extendLock(lock, 0) left the lock in place; the documented behaviour is PEXPIRE 0 deleting it")
	}
	if e.exists(t, "chat-sdk:lock:diff:ts-zero") {
		t.Errorf("state-redis acquireLock(_, 0) created a lock")
	}

	// state-redis accepts an empty key (chat-sdk:cache:); Go refuses it
	// before sending anything.
	if v := e.mustRawGet(t, "chat-sdk:cache:"); v != "1" {
		t.Errorf("state-redis set(\"\", 1) stored %q at chat-sdk:cache:", v)
	}
	if got, err := st.Get(c, ""); !errors.Is(err, upstash.ErrInvalidArgument) {
		t.Errorf("Go Get(\"\") = %q, %v; want ErrInvalidArgument", got, err)
	}
	e.do(t, "DEL", "chat-sdk:cache:")

	// Go: Get of a non-JSON value errors, with the bytes.
	got, err := st.Get(c, "diff:raw")
	var cv *upstash.CorruptValueError
	if !errors.Is(err, upstash.ErrCorruptValue) || !errors.As(err, &cv) || string(cv.Raw) != "not json {" || got != nil {
		t.Errorf("Go Get(non-JSON) = %q, %v; want an ErrCorruptValue carrying the raw bytes", got, err)
	}
	if v := e.mustRawGet(t, "chat-sdk:cache:diff:raw"); v != "not json {" {
		t.Errorf("Go Get changed the corrupt value to %q", v)
	}
	// Go: GetList of a corrupt item errors, like state-redis.
	if items, err := st.GetList(c, "diff:corrupt"); !errors.Is(err, upstash.ErrCorruptValue) {
		t.Errorf("Go GetList(corrupt) = %s, %v; want ErrCorruptValue", joinRaw(items), err)
	}
	// Go: ttl <= 0 is refused for acquire and extend, and the lock is untouched.
	for _, ttl := range []time.Duration{0, -time.Second} {
		if l, err := st.AcquireLock(c, "diff:go-zero", ttl); err == nil || l != nil {
			t.Errorf("Go AcquireLock(ttl %v) = %+v, %v; want an error", ttl, l, err)
		}
		if ok, err := st.ExtendLock(c, gl, ttl); err == nil || ok {
			t.Errorf("Go ExtendLock(ttl %v) = %v, %v; want an error", ttl, ok, err)
		}
	}
	// Go: negative TTL, maxLength and maxSize are refused before sending
	// (state-redis: Redis error, no trim, no trim).
	if err := st.Set(c, "diff:go-neg", 1, -5*time.Millisecond); !errors.Is(err, upstash.ErrInvalidArgument) {
		t.Errorf("Go Set(ttl -5ms) = %v, want ErrInvalidArgument", err)
	}
	if err := st.AppendToList(c, "diff:go-neg", 1, upstash.ListOptions{MaxLength: -1}); !errors.Is(err, upstash.ErrInvalidArgument) {
		t.Errorf("Go AppendToList(MaxLength -1) = %v, want ErrInvalidArgument", err)
	}
	if n, err := st.Enqueue(c, "diff:go-neg", goEntry(`"a"`, now, now+90000), -1); !errors.Is(err, upstash.ErrInvalidArgument) {
		t.Errorf("Go Enqueue(maxSize -1) = %d, %v, want ErrInvalidArgument", n, err)
	}
	if keys := e.keys(t, "*diff:go-neg*"); len(keys) != 0 {
		t.Errorf("refused Go calls wrote %q", keys)
	}
	if e.exists(t, "chat-sdk:lock:diff:go-zero") {
		t.Errorf("Go AcquireLock with ttl <= 0 created a lock")
	}
	if v, _ := e.rawGet(t, "chat-sdk:lock:diff:go-lock"); v != gl.Token {
		t.Errorf("after Go ExtendLock(ttl <= 0), the lock holds %q, want Go's token (untouched)", v)
	}
	e.checkPTTL(t, "chat-sdk:lock:diff:go-lock", 30000, 30000)
	if err := st.ReleaseLock(c, gl); err != nil {
		t.Fatal(err)
	}
}
