//go:build !js && !wasip1

package main

import (
	"bytes"
	"compress/gzip"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chatstate/upstash/internal/testtool"
	"github.com/chatstate/upstash/upstashtest"
)

// nodeFix is the remedy named when Node.js is missing.
const nodeFix = "apt-get install -y nodejs (Node.js 20 or later)"

// goTool returns the go command and its GOROOT, or skips (fails in CI).
func goTool(t *testing.T) (goBin, goroot string) {
	t.Helper()
	goBin, err := exec.LookPath("go")
	if err != nil {
		testtool.SkipOrFail(t, "the go command is not on PATH: %v", err)
	}
	out, err := exec.Command(goBin, "env", "GOROOT").Output()
	if err != nil {
		t.Fatalf("go env GOROOT: %v", err)
	}
	return goBin, strings.TrimSpace(string(out))
}

// goCross runs the go command for another platform and fails the test with
// its output when it fails.
func goCross(t *testing.T, goBin, goos, goarch string, args ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	c := exec.CommandContext(ctx, goBin, args...)
	c.Env = append(os.Environ(), "GOOS="+goos, "GOARCH="+goarch, "CGO_ENABLED=0")
	if out, err := c.CombinedOutput(); err != nil {
		t.Fatalf("GOOS=%s GOARCH=%s go %s: %v\n%s", goos, goarch, strings.Join(args, " "), err, out)
	}
}

// TestEdgeProgramOverFetch builds this program for js/wasm, runs it with
// Node.js under another argv0 (so that net/http uses fetch), against an
// upstashtest server, and checks what it printed and what reached the
// server.
func TestEdgeProgramOverFetch(t *testing.T) {
	node := testtool.RequireNode(t, nodeFix)
	goBin, goroot := goTool(t)
	wasmExec := filepath.Join(goroot, "lib", "wasm", "wasm_exec_node.js")
	if _, err := os.Stat(wasmExec); err != nil {
		wasmExec = filepath.Join(goroot, "misc", "wasm", "wasm_exec_node.js") // Go before 1.24
	}
	if _, err := os.Stat(wasmExec); err != nil {
		t.Fatalf("wasm_exec_node.js is not in %s (lib/wasm or misc/wasm): %v", goroot, err)
	}

	wasm := filepath.Join(t.TempDir(), "edge.wasm")
	goCross(t, goBin, "js", "wasm", "build", "-o", wasm, ".")
	logWasmSize(t, wasm)

	srv := upstashtest.NewServer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	run := exec.CommandContext(ctx, node, wasmExec, wasm)
	// net/http turns fetch off when process.argv0 starts with "node".
	run.Args[0] = "edge-runtime"
	run.Env = append(testtool.EnvironWithout("UPSTASH_", "KV_"),
		"UPSTASH_REDIS_REST_URL="+srv.URL,
		"UPSTASH_REDIS_REST_TOKEN="+srv.Token,
	)
	var stdout, stderr testtool.SyncBuffer
	run.Stdout, run.Stderr = &stdout, &stderr
	if err := run.Run(); err != nil {
		t.Fatalf("node %s: %v\nstdout:\n%s\nstderr:\n%s", filepath.Base(wasm), err, stdout.String(), stderr.String())
	}
	if strings.Contains(stdout.String()+stderr.String(), srv.Token) {
		t.Error("the program printed the REST token")
	}

	want := strings.Join([]string{
		"lock acquired: true",
		"second acquire while held: false",
		"lock released: true",
		"acquire after release: true",
		"dedupe first delivery is new: true",
		"dedupe second delivery is new: false",
	}, "\n")
	if got := strings.TrimSpace(stdout.String()); got != want {
		t.Errorf("output:\n%s\nwant:\n%s\nstderr:\n%s", got, want, stderr.String())
	}

	// The requests really went through the server: at least one per
	// operation, the dedupe key is there, the lock ({prefix}:lock:{thread},
	// the layout shared with the TypeScript adapters) is gone.
	if st := srv.Stats(); st.TotalRequests < 7 {
		t.Errorf("the server received %d requests, want at least 7 (3 acquires, 2 releases, 2 dedupes)", st.TotalRequests)
	}
	keys, err := srv.Do("KEYS", "*")
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	dedupe := false
	for _, k := range keys.([]interface{}) {
		name := string(k.([]byte))
		names = append(names, name)
		dedupe = dedupe || strings.Contains(name, "edge-message-1")
		if strings.Contains(name, ":lock:") && strings.Contains(name, "edge-thread") {
			t.Errorf("the lock %q is still there after the release", name)
		}
	}
	if !dedupe {
		t.Errorf("keys after the run: %q; want the dedupe key of edge-message-1", names)
	}
}

// logWasmSize logs the size of the .wasm file, raw and gzipped (what an
// edge platform stores and transfers).
func logWasmSize(t *testing.T, path string) {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&buf, gzip.BestCompression)
	if _, err := zw.Write(raw); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	t.Logf("%s: %.1f MB raw, %.1f MB gzipped", filepath.Base(path), float64(len(raw))/1e6, float64(buf.Len())/1e6)
}

// TestRootPackageBuildsForWasm keeps the library building (and vet-clean)
// for js/wasm (edge runtimes, browsers) and wasip1/wasm (WASI hosts).
func TestRootPackageBuildsForWasm(t *testing.T) {
	goBin, _ := goTool(t)
	for _, target := range [][2]string{{"js", "wasm"}, {"wasip1", "wasm"}} {
		t.Run(target[0]+"-"+target[1], func(t *testing.T) {
			goCross(t, goBin, target[0], target[1], "build", "github.com/chatstate/upstash")
			goCross(t, goBin, target[0], target[1], "vet", "github.com/chatstate/upstash")
		})
	}
}
