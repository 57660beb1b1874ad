package main

import (
	"bufio"
	"bytes"
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

// Failure guards only: a healthy start or exit takes well under a second.
const (
	startGuard = time.Minute
	exitGuard  = 30 * time.Second
)

// buildBinary compiles the command into a temporary directory, with the
// default flags, so that it reuses what `go vet` and the other builds of
// the suite put in the build cache.
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

// local is one running upstash-local.
type local struct {
	cmd    *exec.Cmd
	banner string      // what it printed on stdout once listening
	rest   chan string // stdout lines after the banner
	exited chan error  // cmd.Wait's result, once stdout is closed
	stderr *testtool.SyncBuffer
}

// startLocal runs bin with args and reads stdout up to its last banner line:
// the read-only token's export when -read-only-token is among args, else
// the token's.
func startLocal(t *testing.T, bin string, args ...string) *local {
	t.Helper()
	l := &local{cmd: exec.Command(bin, args...), rest: make(chan string, 16), exited: make(chan error, 1), stderr: &testtool.SyncBuffer{}}
	l.cmd.Env = testtool.EnvironWithout("UPSTASH_REDIS_REST_", "KV_REST_API_", "UPSTASHTEST_")
	l.cmd.Stderr = l.stderr
	stdout, err := l.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := l.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	last := "export UPSTASH_REDIS_REST_TOKEN="
	if strings.Contains(strings.Join(args, " "), "-read-only-token") {
		last = "export KV_REST_API_READ_ONLY_TOKEN="
	}
	bannerDone := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		var b strings.Builder
		inBanner := true
		for sc.Scan() {
			if inBanner {
				b.WriteString(sc.Text() + "\n")
				if strings.HasPrefix(sc.Text(), last) {
					bannerDone <- b.String()
					inBanner = false
				}
				continue
			}
			l.rest <- sc.Text()
		}
		close(l.rest)
		if inBanner {
			bannerDone <- b.String()
		}
		_, _ = io.Copy(io.Discard, stdout)
		l.exited <- l.cmd.Wait()
	}()
	t.Cleanup(func() {
		_ = l.cmd.Process.Kill()
		if t.Failed() {
			t.Logf("upstash-local %v stderr:\n%s", args, l.stderr.String())
		}
	})
	select {
	case l.banner = <-bannerDone:
	case <-time.After(startGuard):
		t.Fatalf("upstash-local printed no %s line within %v; stderr:\n%s", last, startGuard, l.stderr.String())
	}
	if !strings.Contains(l.banner, last) {
		t.Fatalf("upstash-local exited before printing %s:\nstdout:\n%s\nstderr:\n%s", last, l.banner, l.stderr.String())
	}
	return l
}

// stop sends sig and checks that the process exits 0 and prints nothing
// more on stdout.
func (l *local) stop(t *testing.T, sig os.Signal) {
	t.Helper()
	if err := l.cmd.Process.Signal(sig); err != nil {
		t.Fatal(err)
	}
	var extra []string
	for line := range l.rest {
		extra = append(extra, line)
	}
	select {
	case err := <-l.exited:
		if err != nil {
			t.Errorf("exit after %v: %v, want status 0", sig, err)
		}
	case <-time.After(exitGuard):
		t.Fatalf("upstash-local did not exit within %v of %v", exitGuard, sig)
	}
	if len(extra) > 0 {
		t.Errorf("stdout after the banner: %q (everything but the banner belongs on stderr)", extra)
	}
	if !strings.Contains(l.stderr.String(), "shutting down") {
		t.Errorf("stderr %q lacks the shutdown notice", l.stderr.String())
	}
}

// evalBanner evaluates the banner in sh, as `eval "$(…)"` would, and
// returns the variables it exported; a variable left unset is missing.
func evalBanner(t *testing.T, banner string) map[string]string {
	t.Helper()
	sh, err := exec.LookPath("sh")
	if err != nil {
		t.Skipf("no sh on PATH: %v", err)
	}
	names := []string{"UPSTASH_REDIS_REST_URL", "UPSTASH_REDIS_REST_TOKEN", "KV_REST_API_READ_ONLY_TOKEN"}
	script := `eval "$1" || exit 1; shift; for v in "$@"; do eval "if [ \"\${$v+set}\" = set ]; then printf '%s=%s\0' \"$v\" \"\$$v\"; fi"; done`
	cmd := exec.Command(sh, append([]string{"-c", script, "sh", banner}, names...)...)
	cmd.Env = testtool.EnvironWithout("UPSTASH_REDIS_REST_", "KV_REST_API_")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil || stderr.Len() > 0 {
		t.Fatalf("sh could not eval the banner: %v %s\nbanner:\n%s", err, stderr.String(), banner)
	}
	got := map[string]string{}
	for _, kv := range strings.Split(strings.TrimSuffix(string(out), "\x00"), "\x00") {
		if k, v, ok := strings.Cut(kv, "="); ok {
			got[k] = v
		}
	}
	return got
}

// checkShape asserts that every banner line is a comment or an export and
// returns the comment line.
func checkShape(t *testing.T, banner string) string {
	t.Helper()
	var comments []string
	for _, line := range strings.Split(strings.TrimSuffix(banner, "\n"), "\n") {
		switch {
		case strings.HasPrefix(line, "# "):
			comments = append(comments, line)
		case strings.HasPrefix(line, "export "):
		default:
			t.Errorf("banner line %q is neither a # comment nor an export", line)
		}
	}
	if len(comments) != 1 {
		t.Fatalf("banner has %d comment lines, want 1:\n%s", len(comments), banner)
	}
	return comments[0]
}

func post(t *testing.T, url, token, body string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res.StatusCode, string(b)
}

func TestUpstashLocal(t *testing.T) {
	bin := buildBinary(t)

	t.Run("eval-able banner, serves, exits 0 on SIGTERM", func(t *testing.T) {
		t.Parallel()
		// A token a shell would mangle if it were not quoted.
		const token = `it's "$HOME" ` + "`id`" + ` ; \ & $(x)`
		l := startLocal(t, bin, "-addr", "127.0.0.1:0", "-token", token, "-read-only-token", "ro-456")
		comment := checkShape(t, l.banner)
		env := evalBanner(t, l.banner)
		url := env["UPSTASH_REDIS_REST_URL"]
		if !strings.HasPrefix(url, "http://127.0.0.1:") || strings.HasSuffix(url, "/") {
			t.Fatalf("UPSTASH_REDIS_REST_URL=%q", url)
		}
		if env["UPSTASH_REDIS_REST_TOKEN"] != token || env["KV_REST_API_READ_ONLY_TOKEN"] != "ro-456" {
			t.Errorf("eval gave %q", env)
		}
		if !strings.Contains(comment, url) {
			t.Errorf("comment %q does not show the URL", comment)
		}
		if strings.Count(comment, "miniredis") != 1 || strings.Count(comment, "Redis") != 1 {
			t.Errorf("comment %q should name the embedded backend exactly once", comment)
		}
		if code, body := post(t, url, env["UPSTASH_REDIS_REST_TOKEN"], `["SET","k","v"]`); code != 200 || body != `{"result":"OK"}` {
			t.Errorf("SET with the evaluated token: %d %s", code, body)
		}
		if code, body := post(t, url, env["KV_REST_API_READ_ONLY_TOKEN"], `["SET","k","w"]`); code != 400 || !strings.Contains(body, "NOPERM") {
			t.Errorf("read-only SET: %d %s", code, body)
		}
		l.stop(t, syscall.SIGTERM)
	})

	t.Run("random token, no read-only line, SIGINT", func(t *testing.T) {
		t.Parallel()
		l := startLocal(t, bin, "-addr", "127.0.0.1:0")
		checkShape(t, l.banner)
		env := evalBanner(t, l.banner)
		if len(env["UPSTASH_REDIS_REST_TOKEN"]) < 32 {
			t.Errorf("generated token %q", env["UPSTASH_REDIS_REST_TOKEN"])
		}
		if _, ok := env["KV_REST_API_READ_ONLY_TOKEN"]; ok {
			t.Error("a read-only token line without -read-only-token")
		}
		if code, _ := post(t, env["UPSTASH_REDIS_REST_URL"]+"/pipeline", env["UPSTASH_REDIS_REST_TOKEN"], `[["PING"]]`); code != 200 {
			t.Errorf("pipeline: %d", code)
		}
		l.stop(t, os.Interrupt) // also: no read-only line came after the token's
	})

	t.Run("redis-server", func(t *testing.T) {
		testtool.RequireRedisServer(t)
		t.Parallel()
		l := startLocal(t, bin, "-addr", "127.0.0.1:0", "-token", "t", "-redis-server")
		comment := checkShape(t, l.banner)
		if strings.Count(comment, "redis-server") != 1 || strings.Contains(comment, "miniredis") {
			t.Errorf("comment %q should name the private redis-server once", comment)
		}
		env := evalBanner(t, l.banner)
		if code, body := post(t, env["UPSTASH_REDIS_REST_URL"], "t", `["PING"]`); code != 200 || body != `{"result":"PONG"}` {
			t.Errorf("PING: %d %s", code, body)
		}
		l.stop(t, syscall.SIGTERM)
	})

	t.Run("bad flags", func(t *testing.T) {
		t.Parallel()
		for _, tc := range []struct {
			args     []string
			code     int
			inStderr string
		}{
			{[]string{"-redis", "x:1", "-redis-server"}, 2, "exclusive"},
			{[]string{"-addr", "127.0.0.1:0", "-redis", "127.0.0.1:1"}, 1, "unreachable"},
			{[]string{"extra"}, 2, "unexpected arguments"},
		} {
			var stdout, stderr bytes.Buffer
			cmd := exec.Command(bin, tc.args...)
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			err := cmd.Run()
			if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != tc.code || !strings.Contains(stderr.String(), tc.inStderr) {
				t.Errorf("%q: %v, stderr %q; want status %d and %q", tc.args, err, stderr.String(), tc.code, tc.inStderr)
			}
			if stdout.Len() > 0 {
				t.Errorf("%q printed %q on stdout; errors belong on stderr", tc.args, stdout.String())
			}
		}
	})
}

func TestBannerQuoting(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"plain", "'plain'"},
		{"", "''"},
		{"it's", `'it'\''s'`},
		{"$x `y` \\ \"z\"", "'$x `y` \\ \"z\"'"},
	} {
		if got := shellQuote(tc.in); got != tc.want {
			t.Errorf("shellQuote(%q) = %s, want %s", tc.in, got, tc.want)
		}
	}
	b := banner("http://h:1", "x\ny", "a'b", "")
	if strings.Count(b, "\n") != 3 || strings.Contains(b, "KV_REST_API_READ_ONLY_TOKEN") {
		t.Errorf("banner:\n%s", b)
	}
}
