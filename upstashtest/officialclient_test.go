package upstashtest_test

import (
	"bytes"
	"context"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chatstate/upstash/internal/testtool"

	"github.com/chatstate/upstash/upstashtest"
)

// officialClientDir holds check.mjs, which runs the official TypeScript
// client @upstash/redis (pinned in package-lock.json) against a server.
const officialClientDir = "testdata/official-client"

// officialClientTimeout bounds one run of check.mjs (about 2 s when healthy).
const officialClientTimeout = 3 * time.Minute

var summaryLine = regexp.MustCompile(`(?m)^(\d+) passed, (\d+) failed$`)

// TestOfficialClient makes the official @upstash/redis client the judge of
// upstashtest: check.mjs exercises the server the way application code does
// (base64 on and off, auto-pipelining, pipelines, multi-exec, scripts,
// read-your-writes, tokens) and asserts every result.
//
// Needs node (20+) and `npm ci` in testdata/official-client; the redis-server
// backend also needs redis-server on PATH. Without them the test skips,
// unless CI is set, where it fails.
func TestOfficialClient(t *testing.T) {
	dir, err := filepath.Abs(officialClientDir)
	if err != nil {
		t.Fatal(err)
	}
	node := testtool.RequireNode(t, "install Node.js 20 or later (e.g. apt-get install -y nodejs npm), then: npm ci --prefix upstashtest/testdata/official-client")
	if _, err := os.Stat(filepath.Join(dir, "node_modules", "@upstash", "redis", "package.json")); err != nil {
		testtool.SkipOrFail(t, "the official client is not installed (%s/node_modules/@upstash/redis is missing); "+
			"fix: npm ci --prefix upstashtest/testdata/official-client", officialClientDir)
	}

	backends := []struct {
		name   string
		option func() upstashtest.Option
		needs  string // executable that must be on PATH
		fix    string
	}{
		{name: "embedded", option: upstashtest.WithEmbedded},
		{
			name:   "redis-server",
			option: upstashtest.WithRedisServer,
			needs:  "redis-server",
			fix:    "apt-get install -y redis-server && service redis-server stop",
		},
	}
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			if b.needs != "" {
				if _, err := exec.LookPath(b.needs); err != nil {
					testtool.SkipOrFail(t, "%s is not on PATH; fix: %s", b.needs, b.fix)
				}
			}
			srv := upstashtest.NewServer(t, b.option())
			passed := runOfficialClient(t, node, dir, srv)
			checkServerSawClient(t, srv, passed)
		})
	}
}

// runOfficialClient runs check.mjs against srv, fails the test with the
// node output unless it exits 0 and reports "N passed, 0 failed" with N > 0,
// and returns N.
func runOfficialClient(t *testing.T, node, dir string, srv *upstashtest.Server) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), officialClientTimeout)
	defer cancel()

	cmd := exec.CommandContext(ctx, node, "check.mjs")
	cmd.Dir = dir
	cmd.Env = append(testtool.EnvironWithout("UPSTASH_REDIS_REST_", "KV_REST_API_", "CHECK_FILTER"),
		"UPSTASH_REDIS_REST_URL="+srv.URL,
		"UPSTASH_REDIS_REST_TOKEN="+srv.Token,
		"UPSTASH_REDIS_REST_READ_ONLY_TOKEN="+srv.ReadOnlyToken,
	)
	cmd.WaitDelay = 5 * time.Second

	var out testtool.SyncBuffer
	var w io.Writer = &out
	if testing.Verbose() {
		w = io.MultiWriter(&out, &lineLogger{t: t})
	}
	cmd.Stdout = w
	cmd.Stderr = w

	start := time.Now()
	runErr := cmd.Run()
	output := out.String()
	if ctx.Err() != nil {
		t.Fatalf("node check.mjs did not finish within %v; output so far:\n%s", officialClientTimeout, output)
	}
	if runErr != nil {
		t.Fatalf("node check.mjs against %s failed (%v); output:\n%s", srv.URL, runErr, output)
	}

	m := summaryLine.FindAllStringSubmatch(output, -1)
	if len(m) != 1 {
		t.Fatalf("node check.mjs printed %d summary lines, want exactly one %q line; output:\n%s",
			len(m), "N passed, N failed", output)
	}
	passed, _ := strconv.Atoi(m[0][1])
	failed, _ := strconv.Atoi(m[0][2])
	if failed != 0 || passed == 0 {
		t.Fatalf("node check.mjs: %s, want N passed, 0 failed with N > 0; output:\n%s", m[0][0], output)
	}
	t.Logf("official client @upstash/redis: %s in %v", m[0][0], time.Since(start).Round(time.Millisecond))
	return passed
}

// checkServerSawClient asserts that the checks went to this server, through
// every endpoint the official client uses.
func checkServerSawClient(t *testing.T, srv *upstashtest.Server, passed int) {
	t.Helper()
	st := srv.Stats()
	for _, path := range []string{"/", "/pipeline", "/multi-exec"} {
		if st.Requests[path] == 0 {
			t.Errorf("server stats: no requests to %s after the official client ran; requests: %v", path, st.Requests)
		}
	}
	if st.TotalCommands < int64(passed) {
		t.Errorf("server stats: %d commands for %d passed checks", st.TotalCommands, passed)
	}
	count := func(name string) (n int64) {
		for k, v := range st.Commands {
			if strings.EqualFold(k, name) {
				n += v
			}
		}
		return n
	}
	for _, name := range []string{"evalsha", "eval", "set", "get"} {
		if count(name) == 0 {
			t.Errorf("server stats: no %s command seen; commands: %v", name, st.Commands)
		}
	}
}

// lineLogger streams whole lines of node output to t.Log (with -v).
type lineLogger struct {
	t       *testing.T
	mu      sync.Mutex
	partial []byte
}

func (l *lineLogger) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.partial = append(l.partial, p...)
	consumed := 0
	for {
		i := bytes.IndexByte(l.partial[consumed:], '\n')
		if i < 0 {
			break
		}
		l.t.Log("node: " + string(l.partial[consumed:consumed+i]))
		consumed += i + 1
	}
	l.partial = append(l.partial[:0], l.partial[consumed:]...)
	return len(p), nil
}
