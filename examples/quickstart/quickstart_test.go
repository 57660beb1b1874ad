package main

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chatstate/upstash"
	"github.com/chatstate/upstash/internal/testtool"
	"github.com/chatstate/upstash/upstashtest"
)

// TestReadmeQuickStartIsThisProgram: the README's quick start is main.go,
// byte for byte, so the code a reader copies is the code that compiles and
// that TestQuickStartRuns runs.
func TestReadmeQuickStartIsThisProgram(t *testing.T) {
	t.Parallel()
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	main, err := os.ReadFile("main.go")
	if err != nil {
		t.Fatal(err)
	}
	_, section, ok := strings.Cut(string(readme), "\n## Quick start\n")
	if !ok {
		t.Fatal("README.md has no \"## Quick start\" section")
	}
	section, _, _ = strings.Cut(section, "\n## ")
	_, block, ok := strings.Cut(section, "\n```go\n")
	if !ok {
		t.Fatal("README.md's quick start has no ```go block")
	}
	block, _, ok = strings.Cut(block, "\n```\n")
	if !ok {
		t.Fatal("README.md's quick start block is not closed")
	}
	if block+"\n" != string(main) {
		t.Errorf("README.md's quick start differs from examples/quickstart/main.go; copy main.go into the block.\n%s", firstDiff(block+"\n", string(main)))
	}
}

// firstDiff describes the first line where a and b differ.
func firstDiff(a, b string) string {
	al, bl := strings.Split(a, "\n"), strings.Split(b, "\n")
	for i := 0; i < len(al) || i < len(bl); i++ {
		var x, y string
		if i < len(al) {
			x = al[i]
		}
		if i < len(bl) {
			y = bl[i]
		}
		if x != y || i >= len(al) || i >= len(bl) {
			return "line " + strconv.Itoa(i+1) + ":\n  README:  " + x + "\n  main.go: " + y
		}
	}
	return ""
}

// TestQuickStartRuns builds the program and runs it as a reader would, with
// the two variables pointing at an upstashtest server.
func TestQuickStartRuns(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("builds a binary")
	}
	goBin := filepath.Join(runtime.GOROOT(), "bin", "go")
	if _, err := os.Stat(goBin); err != nil {
		goBin = "go"
	}
	bin := filepath.Join(t.TempDir(), "quickstart")
	if out, err := exec.Command(goBin, "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	srv := upstashtest.NewServer(t)
	clean := testtool.EnvironWithout("UPSTASH_REDIS_REST_", "KV_REST_API_")
	configured := append(clean[:len(clean):len(clean)], upstash.EnvURL+"="+srv.URL, upstash.EnvToken+"="+srv.Token)

	run := func(env []string, args ...string) (stdout, stderr string, code int) {
		t.Helper()
		cmd := exec.Command(bin, args...)
		cmd.Env = env
		var o, e bytes.Buffer
		cmd.Stdout, cmd.Stderr = &o, &e
		err := cmd.Run()
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		return o.String(), e.String(), code
	}
	expect := func(env []string, want string, args ...string) {
		t.Helper()
		out, errOut, code := run(env, args...)
		if code != 0 || out != want || strings.Contains(out+errOut, srv.Token) {
			t.Errorf("quickstart %q: exit %d, stdout %q, stderr %q; want exit 0 and %q", args, code, out, errOut, want)
		}
	}

	// Not configured: exit 1, naming the variables, never a value.
	if out, errOut, code := run(clean); code != 1 || out != "" || !strings.Contains(errOut, upstash.EnvURL) || !strings.Contains(errOut, upstash.EnvVercelURL) {
		t.Errorf("without configuration: exit %d, stdout %q, stderr %q; want exit 1 naming %s and %s", code, out, errOut, upstash.EnvURL, upstash.EnvVercelURL)
	}

	const thread = "slack:C1:t1"
	expect(configured, "handled m1: message 1 of "+thread+"\n")
	expect(configured, "duplicate m1\n")
	expect(configured, "handled m2: message 2 of "+thread+"\n", thread, "m2")
	if n, err := srv.Do("EXISTS", "chat-sdk:lock:"+thread); err != nil || n.(int64) != 0 {
		t.Errorf("the lock is still there after the program returned: %v %v", n, err)
	}

	// Another holder has the thread: the program says so and leaves that
	// holder's lock alone.
	client, err := upstash.New(upstash.Config{URL: srv.URL, Token: srv.Token})
	if err != nil {
		t.Fatal(err)
	}
	state := upstash.NewState(client)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	other, err := state.AcquireLock(ctx, thread, time.Minute)
	if err != nil || other == nil {
		t.Fatalf("taking the lock: %v %v", other, err)
	}
	expect(configured, "busy "+thread+"\n", thread, "m3")
	if held, err := state.ExtendLock(ctx, other, time.Minute); err != nil || !held {
		t.Errorf("the other holder's lock: still held %v (%v), want true", held, err)
	}
	if n, found, err := upstash.GetJSON[int](ctx, state, "messages:"+thread); err != nil || !found || n != 2 {
		t.Errorf("messages counter = %d, %v, %v; want 2", n, found, err)
	}
}
