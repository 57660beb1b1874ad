package chatflow

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/chatstate/upstash/internal/testtool"
)

// tsDir holds the Node scripts and the pinned npm packages
// (package-lock.json: chat and @chat-adapter/state-redis 4.41.1).
const tsDir = "testdata/ts"

const (
	npmFix  = "npm ci --prefix chatflow/testdata/ts"
	nodeFix = "install Node.js 20 or later (e.g. apt-get install -y nodejs npm), then: " + npmFix
)

// requireTS returns node's path and the absolute tsDir, or skips (fails in
// CI) when node or the npm packages are missing.
func requireTS(t *testing.T) (node, dir string) {
	t.Helper()
	node = testtool.RequireNode(t, nodeFix)
	dir, err := filepath.Abs(tsDir)
	if err != nil {
		t.Fatal(err)
	}
	for _, pkg := range []string{"chat", "@chat-adapter/state-redis"} {
		if _, err := os.Stat(filepath.Join(dir, "node_modules", pkg, "package.json")); err != nil {
			testtool.SkipOrFail(t, "%s is not installed in %s/node_modules; fix: %s", pkg, tsDir, npmFix)
		}
	}
	return node, dir
}

// runNode runs `node script args...` in dir with stdin and returns stdout;
// it fails the test on a non-zero exit, showing stderr.
func runNode(t *testing.T, node, dir string, stdin []byte, script string, args ...string) []byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, append([]string{script}, args...)...)
	cmd.Dir = dir
	cmd.Env = testtool.EnvironWithout("UPSTASH_", "KV_", "REDIS_URL")
	cmd.Stdin = bytes.NewReader(stdin)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("node %s %v: %v\nstderr:\n%s", script, args, err, stderr.String())
	}
	return stdout.Bytes()
}

// jsStringify encodes v as JSON.stringify would: no escaping of <, > and
// &, and U+2028/U+2029 written as themselves (encoding/json always escapes
// them).
func jsStringify(t *testing.T, v any) []byte {
	t.Helper()
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		t.Fatalf("encode: %v", err)
	}
	return unescapeLineSeparators(bytes.TrimSuffix(buf.Bytes(), []byte("\n")))
}

// unescapeLineSeparators replaces the escapes \u2028 and \u2029 (preceded
// by an even number of backslashes, so they are escapes) by the characters.
func unescapeLineSeparators(b []byte) []byte {
	var out []byte
	for i := 0; i < len(b); i++ {
		if b[i] == '\\' && i+5 < len(b) && b[i+1] == 'u' && string(b[i+2:i+5]) == "202" && (b[i+5] == '8' || b[i+5] == '9') {
			if b[i+5] == '8' {
				out = append(out, "\u2028"...)
			} else {
				out = append(out, "\u2029"...)
			}
			i += 5
			continue
		}
		if b[i] == '\\' && i+1 < len(b) {
			out = append(out, b[i], b[i+1])
			i++
			continue
		}
		out = append(out, b[i])
	}
	return out
}
