package main

import (
	"bufio"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/chatstate/upstash/internal/testtool"
)

// buildBinary compiles the command into a temporary directory.
func buildBinary(t *testing.T) string {
	t.Helper()
	goBin, err := exec.LookPath("go")
	if err != nil {
		goBin = filepath.Join(runtime.GOROOT(), "bin", "go")
	}
	bin := filepath.Join(t.TempDir(), "upstash-local")
	out, err := exec.Command(goBin, "build", "-o", bin, ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// startBinary runs bin with args and returns the KEY=VALUE lines it prints
// at start (and the line before them, under "banner").
func startBinary(t *testing.T, bin string, args ...string) (*exec.Cmd, map[string]string, chan error) {
	t.Helper()
	c := exec.Command(bin, args...)
	c.Stderr = os.Stderr
	stdout, err := c.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	waited := make(chan error, 1)
	lines := make(chan string)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
		_, _ = io.Copy(io.Discard, stdout)
		waited <- c.Wait()
	}()
	t.Cleanup(func() {
		_ = c.Process.Kill()
		for range lines {
		}
	})
	got := map[string]string{}
	timeout := time.After(30 * time.Second)
	for got["UPSTASH_REDIS_REST_TOKEN"] == "" {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatalf("upstash-local exited early: %v", <-waited)
			}
			if k, v, found := strings.Cut(l, "="); found && strings.ToUpper(k) == k && !strings.Contains(k, " ") {
				got[k] = v
			} else if got["banner"] == "" {
				got["banner"] = l
			}
		case <-timeout:
			t.Fatal("upstash-local printed no token line within 30 s")
		}
	}
	// The optional read-only line comes right after the token line.
	if len(args) > 0 && strings.Contains(strings.Join(args, " "), "-read-only-token") {
		select {
		case l := <-lines:
			k, v, _ := strings.Cut(l, "=")
			got[k] = v
		case <-timeout:
			t.Fatal("no read-only token line")
		}
	}
	go func() {
		for range lines {
		}
	}()
	return c, got, waited
}

func TestUpstashLocal(t *testing.T) {
	bin := buildBinary(t)

	t.Run("serves, then exits 0 on SIGTERM", func(t *testing.T) {
		c, env, waited := startBinary(t, bin, "-addr", "127.0.0.1:0", "-token", "tok-123", "-read-only-token", "ro-456")
		url := env["UPSTASH_REDIS_REST_URL"]
		if !strings.HasPrefix(url, "http://127.0.0.1:") || strings.HasSuffix(url, "/") {
			t.Fatalf("UPSTASH_REDIS_REST_URL=%q", url)
		}
		if env["UPSTASH_REDIS_REST_TOKEN"] != "tok-123" || env["KV_REST_API_READ_ONLY_TOKEN"] != "ro-456" {
			t.Errorf("printed %v", env)
		}
		if !strings.Contains(env["banner"], url) {
			t.Errorf("banner %q does not show the URL", env["banner"])
		}
		req, _ := http.NewRequest("POST", url, strings.NewReader(`["SET","k","v"]`))
		req.Header.Set("Authorization", "Bearer tok-123")
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if res.StatusCode != 200 || string(body) != `{"result":"OK"}` {
			t.Errorf("SET: %d %s", res.StatusCode, body)
		}
		res, err = http.Get(url + "/set/k/w?_token=ro-456")
		if err != nil {
			t.Fatal(err)
		}
		body, _ = io.ReadAll(res.Body)
		res.Body.Close()
		if res.StatusCode != 400 || !strings.Contains(string(body), "NOPERM") {
			t.Errorf("read-only SET: %d %s", res.StatusCode, body)
		}

		if err := c.Process.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		select {
		case err := <-waited:
			if err != nil {
				t.Errorf("exit after SIGTERM: %v, want status 0", err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("upstash-local did not exit within 10 s of SIGTERM")
		}
	})

	t.Run("random token, no read-only line, SIGINT", func(t *testing.T) {
		c, env, waited := startBinary(t, bin, "-addr", "127.0.0.1:0")
		if len(env["UPSTASH_REDIS_REST_TOKEN"]) < 32 {
			t.Errorf("generated token %q", env["UPSTASH_REDIS_REST_TOKEN"])
		}
		if _, ok := env["KV_REST_API_READ_ONLY_TOKEN"]; ok {
			t.Error("a read-only token line without -read-only-token")
		}
		req, _ := http.NewRequest("POST", env["UPSTASH_REDIS_REST_URL"]+"/pipeline", strings.NewReader(`[["PING"]]`))
		req.Header.Set("Authorization", "Bearer "+env["UPSTASH_REDIS_REST_TOKEN"])
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if res.StatusCode != 200 {
			t.Errorf("pipeline: %d", res.StatusCode)
		}
		_ = c.Process.Signal(os.Interrupt)
		select {
		case err := <-waited:
			if err != nil {
				t.Errorf("exit after SIGINT: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("no exit within 10 s of SIGINT")
		}
	})

	t.Run("redis-server", func(t *testing.T) {
		testtool.RequireRedisServer(t)
		c, env, waited := startBinary(t, bin, "-addr", "127.0.0.1:0", "-token", "t", "-redis-server")
		if !strings.Contains(env["banner"], "redis-server") {
			t.Errorf("banner %q", env["banner"])
		}
		res, err := http.Get(env["UPSTASH_REDIS_REST_URL"] + "/ping?_token=t")
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		_ = c.Process.Signal(syscall.SIGTERM)
		if err := <-waited; err != nil {
			t.Errorf("exit: %v", err)
		}
	})

	t.Run("bad flags", func(t *testing.T) {
		out, err := exec.Command(bin, "-redis", "x:1", "-redis-server").CombinedOutput()
		if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 2 {
			t.Errorf("exclusive flags: %v %s", err, out)
		}
		out, err = exec.Command(bin, "-addr", "127.0.0.1:0", "-redis", "127.0.0.1:1").CombinedOutput()
		if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 || !strings.Contains(string(out), "unreachable") {
			t.Errorf("unreachable Redis: %v %s", err, out)
		}
	})
}
