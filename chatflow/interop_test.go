package chatflow

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"os/exec"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/chatstate/upstash/internal/testtool"
	"github.com/chatstate/upstash/upstashtest"
)

// tsBot is the real Chat SDK core (testdata/ts/bot.mjs) running over
// @chat-adapter/state-redis on the redis-server the Go side reaches
// through upstashtest.
type tsBot struct {
	t      *testing.T
	stdin  io.WriteCloser
	stderr *testtool.SyncBuffer
	mu     sync.Mutex
	events []tsEvent
	more   chan struct{} // closed and replaced when an event arrives
	exited chan struct{}
}

type tsEvent struct {
	Event    string            `json:"event"`
	ID       string            `json:"id"`
	ThreadID string            `json:"threadId"`
	Text     string            `json:"text"`
	Author   string            `json:"author"`
	DateSent string            `json:"dateSent"`
	IsDate   bool              `json:"isDate"`
	Raw      json.RawMessage   `json:"raw"`
	Skipped  []string          `json:"skipped"`
	Error    string            `json:"error"`
	Key      string            `json:"key"`
	Value    json.RawMessage   `json:"value"`
	Messages []tsHistoryRecord `json:"messages"`
}

type tsHistoryRecord struct {
	ID     string          `json:"id"`
	Text   string          `json:"text"`
	IsDate bool            `json:"isDate"`
	Raw    json.RawMessage `json:"raw"`
}

// interopEnv starts a private redis-server (through upstashtest) and the
// TypeScript bot on it with the given concurrency strategy.
func interopEnv(t *testing.T, concurrency string) (*env, *tsBot) {
	t.Helper()
	node, dir := requireTS(t)
	testtool.RequireRedisServer(t)
	e := newEnv(t, upstashtest.WithRedisServer())
	ctx, cancel := context.WithCancel(context.Background())
	cfg, _ := json.Marshal(map[string]string{"concurrency": concurrency})
	cmd := exec.CommandContext(ctx, node, "bot.mjs", string(cfg))
	cmd.Dir = dir
	cmd.Env = append(testtool.EnvironWithout("UPSTASH_", "KV_", "REDIS_URL"), "REDIS_URL=redis://"+e.srv.RedisAddr())
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	b := &tsBot{t: t, stdin: stdin, stderr: &testtool.SyncBuffer{}, more: make(chan struct{}), exited: make(chan struct{})}
	cmd.Stderr = b.stderr
	if err := cmd.Start(); err != nil {
		cancel()
		t.Fatalf("start node bot.mjs: %v", err)
	}
	go func() {
		defer close(b.exited)
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			var ev tsEvent
			if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
				ev = tsEvent{Event: "garbage", Error: sc.Text()}
			}
			b.mu.Lock()
			b.events = append(b.events, ev)
			close(b.more)
			b.more = make(chan struct{})
			b.mu.Unlock()
		}
		_ = cmd.Wait()
	}()
	t.Cleanup(func() {
		b.send(map[string]any{"cmd": "exit"})
		select {
		case <-b.exited:
		case <-time.After(10 * time.Second):
		}
		cancel()
		<-b.exited
		if t.Failed() {
			t.Logf("bot.mjs stderr:\n%s", b.stderr.String())
		}
	})
	b.wait("ready", "")
	return e, b
}

func (b *tsBot) send(cmd map[string]any) {
	data, _ := json.Marshal(cmd)
	_, _ = b.stdin.Write(append(data, '\n'))
}

// wait returns the first event of kind for id (any id when id is "").
func (b *tsBot) wait(kind, id string) tsEvent {
	b.t.Helper()
	return b.waitFrom(kind, id, 0)
}

// mark is the number of events received so far, for waitFrom.
func (b *tsBot) mark() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.events)
}

// waitFrom returns the first event of kind for id (any id when id is "")
// among the events received after the first from.
func (b *tsBot) waitFrom(kind, id string, from int) tsEvent {
	b.t.Helper()
	deadline := time.NewTimer(waitLimit)
	defer deadline.Stop()
	for {
		b.mu.Lock()
		for _, ev := range b.events[from:] {
			if ev.Event == "fatal" || ev.Event == "garbage" || (ev.Event == "error" && ev.ID == id) {
				b.mu.Unlock()
				b.t.Fatalf("bot.mjs: %s %s %s\nstderr:\n%s", ev.Event, ev.ID, ev.Error, b.stderr.String())
			}
			if ev.Event == kind && (id == "" || ev.ID == id) {
				b.mu.Unlock()
				return ev
			}
		}
		more := b.more
		b.mu.Unlock()
		select {
		case <-more:
		case <-b.exited:
			b.t.Fatalf("bot.mjs exited while waiting for %s %s; stderr:\n%s", kind, id, b.stderr.String())
		case <-deadline.C:
			b.t.Fatalf("no %s event for %q from bot.mjs within %v; stderr:\n%s", kind, id, waitLimit, b.stderr.String())
		}
	}
}

// turns lists the ids of the TypeScript handler's turns so far.
func (b *tsBot) turns() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	var ids []string
	for _, ev := range b.events {
		if ev.Event == "turn" {
			ids = append(ids, ev.ID)
		}
	}
	return ids
}

func (b *tsBot) message(id, thread string, hold bool) {
	b.send(map[string]any{"cmd": "message", "id": id, "threadId": thread, "text": "ts says " + id,
		"userName": "grace", "dateSent": "2026-05-06T07:08:09.123Z", "hold": hold})
}

// history asks the TypeScript core's ThreadHistoryCache for a thread.
func (b *tsBot) history(thread string) []tsHistoryRecord {
	b.t.Helper()
	from := b.mark()
	b.send(map[string]any{"cmd": "history", "threadId": thread})
	return b.waitFrom("history", "", from).Messages
}

// get asks the TypeScript state adapter for a cache key.
func (b *tsBot) get(key string) json.RawMessage {
	b.t.Helper()
	from := b.mark()
	b.send(map[string]any{"cmd": "get", "key": key})
	return b.waitFrom("value", "", from).Value
}

func historyIDs(t *testing.T, e *env, f *Flow, thread string) []string {
	t.Helper()
	hist, err := f.Thread(thread).History(bg(t), 0)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, m := range hist {
		ids = append(ids, m.ID)
	}
	return ids
}

// The TypeScript core holds the thread; Go queues two messages; the
// TypeScript core drains them (the latest with the other as skipped),
// reading what Go wrote as real chat Messages.
func TestInteropGoQueuesTypeScriptDrains(t *testing.T) {
	e, bot := interopEnv(t, "queue")
	thread := "test:C1:1.0"
	f := e.realFlow(WithStrategy(Queue), WithHistory(HistoryOptions{}))
	bot.message("t1", thread, true)
	bot.wait("turn", "t1")

	for _, id := range []string{"g1", "g2"} {
		m := msg(id, thread)
		m.Metadata.DateSent = time.Date(2026, 5, 6, 7, 8, 9, 987_000_000, time.UTC)
		mustHandle(t, f, m, StatusQueued)
	}
	bot.send(map[string]any{"cmd": "release", "id": "t1"})
	turn := bot.wait("turn", "g2")
	bot.wait("processed", "t1")
	if !reflect.DeepEqual(turn.Skipped, []string{"g1"}) || turn.Text != "text of g2" || turn.Author != "ada" ||
		turn.DateSent != "2026-05-06T07:08:09.987Z" || !turn.IsDate || string(turn.Raw) != `{"id":"g2"}` || turn.ThreadID != thread {
		t.Errorf("TypeScript saw Go's message as %+v", turn)
	}
	if n := e.rec.count("g1") + e.rec.count("g2"); n != 0 {
		t.Errorf("the Go handler ran %d times for messages the TypeScript holder drained", n)
	}
	// Dedupe is shared: a message TypeScript took is a duplicate for Go.
	if res, err := f.Handle(bg(t), "test", msg("t1", thread)); err != nil || res.Status != StatusDuplicate {
		t.Errorf("t1 through Go after TypeScript took it: %+v, %v", res, err)
	}
	checkSharedHistoryAndState(t, e, f, bot, thread, []string{"t1", "g1", "g2"}, []string{"ts_t1", "ts_g2"})
	e.assertClean()
}

// Go holds the thread; the TypeScript core queues two messages; Go drains
// them, decoding what TypeScript's Message.toJSON wrote.
func TestInteropTypeScriptQueuesGoDrains(t *testing.T) {
	e, bot := interopEnv(t, "queue")
	thread := "test:C1:2.0"
	var turns []*Turn
	e.rec.also = func(ctx context.Context, turn *Turn) {
		turns = append(turns, turn)
		_ = turn.Thread.SetState(ctx, map[string]bool{"go_" + turn.Message.ID: true})
	}
	f := e.realFlow(WithStrategy(Queue), WithHistory(HistoryOptions{}))
	started, open := e.rec.gate("g1")
	_, waitG := handleAsync(bg(t), f, msg("g1", thread))
	waitClosed(t, started, "g1's turn")
	bot.message("t1", thread, false)
	bot.wait("processed", "t1")
	bot.message("t2", thread, false)
	bot.wait("processed", "t2")
	open()
	res, err := waitG()
	if err != nil || !reflect.DeepEqual(res.Delivered, []string{"g1", "t1", "t2"}) {
		t.Fatalf("Go holder: %+v, %v", res, err)
	}
	if len(turns) != 2 || len(turns[1].Skipped) != 1 || turns[1].Skipped[0].ID != "t1" {
		t.Fatalf("turns %+v", turns)
	}
	got := turns[1].Message
	if got.ID != "t2" || got.Text != "ts says t2" || got.Author.UserName != "grace" || got.Author.UserID != "U-grace" ||
		!got.Metadata.DateSent.Equal(time.Date(2026, 5, 6, 7, 8, 9, 123_000_000, time.UTC)) ||
		string(got.Raw) != `{"source":"ts","id":"t2"}` || len(got.Formatted) == 0 || got.Attachments == nil {
		t.Errorf("Go decoded TypeScript's message as %+v", got)
	}
	if ids := bot.turns(); len(ids) > 0 {
		t.Errorf("the TypeScript handler ran for %v although Go held the thread", ids)
	}
	checkSharedHistoryAndState(t, e, f, bot, thread, []string{"g1", "t1", "t2"}, []string{"go_g1", "go_t2"})
	e.assertClean()
}

// checkSharedHistoryAndState reads the thread's history from both sides
// (appended by both) and the thread state (merged by both).
func checkSharedHistoryAndState(t *testing.T, e *env, f *Flow, bot *tsBot, thread string, wantHist, wantStateKeys []string) {
	t.Helper()
	if got := historyIDs(t, e, f, thread); !reflect.DeepEqual(got, wantHist) {
		t.Errorf("Go reads history %v, want %v", got, wantHist)
	}
	tsHist := bot.history(thread)
	var tsIDs []string
	for _, h := range tsHist {
		tsIDs = append(tsIDs, h.ID)
		if !h.IsDate || string(h.Raw) != "null" {
			t.Errorf("TypeScript reads history item %s as %+v", h.ID, h)
		}
	}
	if !reflect.DeepEqual(tsIDs, wantHist) {
		t.Errorf("TypeScript reads history %v, want %v", tsIDs, wantHist)
	}
	// The channel's history too (the adapter's channel id is the first two parts).
	if got := historyIDs(t, e, f, "test:C1"); len(got) < len(wantHist) {
		t.Errorf("channel history %v", got)
	}
	raw, err := f.Thread(thread).State(bg(t))
	if err != nil {
		t.Fatal(err)
	}
	var st map[string]bool
	if err := json.Unmarshal(raw, &st); err != nil {
		t.Fatalf("thread state %s: %v", raw, err)
	}
	for _, k := range wantStateKeys {
		if !st[k] {
			t.Errorf("thread state %s lacks %s", raw, k)
		}
	}
	tsRaw := bot.get(ThreadStateKey(thread))
	var tsState map[string]bool
	if err := json.Unmarshal(tsRaw, &tsState); err != nil || !reflect.DeepEqual(tsState, st) {
		t.Errorf("TypeScript reads thread state %s, Go %s (%v)", tsRaw, raw, err)
	}
}
