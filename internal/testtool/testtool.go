// Package testtool holds what the module's tests need to find the outside
// tools they drive (redis-server, node) and to run them: one rule for a
// missing tool (skip with the reason and the fix, but fail when CI is set,
// so nothing skips silently in CI), node's version check, and a clean
// environment for child processes.
package testtool

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
)

// RedisFix is the command that installs redis-server on Debian.
const RedisFix = "apt-get update && apt-get install -y redis-server"

// SkipOrFail skips the test with the reason, or fails it when the CI
// environment variable is set: in CI a missing tool must not let a test
// pass silently.
func SkipOrFail(t testing.TB, format string, args ...any) {
	t.Helper()
	msg := fmt.Sprintf(format, args...)
	if os.Getenv("CI") != "" {
		t.Fatalf("%s (CI is set, so this fails instead of skipping)", msg)
	}
	t.Skip(msg)
}

// RequireRedisServer skips (or, in CI, fails) unless redis-server is on PATH.
func RequireRedisServer(t testing.TB) {
	t.Helper()
	if _, err := exec.LookPath("redis-server"); err != nil {
		SkipOrFail(t, "redis-server is not on PATH; fix: %s", RedisFix)
	}
}

// RequireNode returns the path of a node executable of version 20 or later,
// or skips (in CI, fails) with fix as the remedy.
func RequireNode(t testing.TB, fix string) string {
	t.Helper()
	node, err := exec.LookPath("node")
	if err != nil {
		SkipOrFail(t, "node is not on PATH; fix: %s", fix)
	}
	out, err := exec.Command(node, "--version").Output()
	if err != nil {
		SkipOrFail(t, "%s --version failed (%v); fix: %s", node, err, fix)
	}
	version := strings.TrimSpace(string(out))
	major, err := strconv.Atoi(strings.SplitN(strings.TrimPrefix(version, "v"), ".", 2)[0])
	if err != nil || major < 20 {
		SkipOrFail(t, "node %s is too old, 20 or later is needed; fix: %s", version, fix)
	}
	return node
}

// EnvironWithout returns os.Environ() minus the variables that start with
// any of the prefixes, so that a developer's real credentials never reach a
// child process.
func EnvironWithout(prefixes ...string) []string {
	var env []string
next:
	for _, kv := range os.Environ() {
		for _, p := range prefixes {
			if strings.HasPrefix(kv, p) {
				continue next
			}
		}
		env = append(env, kv)
	}
	return env
}

// SyncBuffer is a bytes.Buffer safe for concurrent writers, such as a child
// process's stdout and stderr copiers.
type SyncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *SyncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *SyncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
