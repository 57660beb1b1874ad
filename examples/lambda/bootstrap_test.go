package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-lambda-go/events"

	"github.com/chatstate/upstash"
	"github.com/chatstate/upstash/internal/testtool"
	"github.com/chatstate/upstash/upstashtest"
)

// responseGuard only catches a hung function: an invocation takes
// milliseconds.
const responseGuard = time.Minute

// fakeRuntimeAPI is the part of the Lambda Runtime API
// (https://docs.aws.amazon.com/lambda/latest/dg/runtimes-api.html) that
// aws-lambda-go uses: GET next, POST response or error.
type fakeRuntimeAPI struct {
	events    chan []byte
	responses chan string // "<request id> <status> <body>"
	seq       atomic.Int64
}

func (f *fakeRuntimeAPI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	const base = "/2018-06-01/runtime/"
	switch {
	case r.Method == http.MethodGet && r.URL.Path == base+"invocation/next":
		select {
		case ev := <-f.events:
			w.Header().Set("Lambda-Runtime-Aws-Request-Id", fmt.Sprintf("rie-%02d", f.seq.Add(1)))
			w.Header().Set("Lambda-Runtime-Deadline-Ms", strconv.FormatInt(time.Now().Add(10*time.Second).UnixMilli(), 10))
			w.Header().Set("Lambda-Runtime-Invoked-Function-Arn", "arn:aws:lambda:us-east-1:000000000000:function:chat-bot")
			_, _ = w.Write(ev)
		case <-r.Context().Done():
		}
	case r.Method == http.MethodPost && strings.HasPrefix(r.URL.Path, base+"invocation/"):
		body, _ := io.ReadAll(r.Body)
		rest := strings.TrimPrefix(r.URL.Path, base+"invocation/")
		id, kind, _ := strings.Cut(rest, "/")
		f.responses <- id + " " + kind + " " + string(body)
		w.WriteHeader(http.StatusAccepted)
	case r.Method == http.MethodPost && r.URL.Path == base+"init/error":
		body, _ := io.ReadAll(r.Body)
		f.responses <- "init error " + string(body)
		w.WriteHeader(http.StatusAccepted)
	default:
		http.NotFound(w, r)
	}
}

// bootstrap is the Lambda build of the function, made once per test binary
// by the first test that needs it.
var bootstrap struct {
	once sync.Once
	dir  string
	path string
	err  error
}

func TestMain(m *testing.M) {
	code := m.Run()
	if bootstrap.dir != "" {
		os.RemoveAll(bootstrap.dir)
	}
	os.Exit(code)
}

// buildBootstrap builds the function as the README's build line does
// (-tags lambda.norpc: the code Lambda runs, without the local runner;
// -ldflags='-s -w'), for this machine, so that it runs here.
//
// The line's -trimpath and CGO_ENABLED=0 change file paths and the DNS
// resolver, not what the function does. They are left out because each
// puts the packages in a build configuration nothing else in the suite
// uses (-trimpath all of them, CGO_ENABLED=0 net and everything above it),
// so the build would miss the cache that `go vet` and the other builds
// fill: measured, about 60 s of compiling on a busy 2-core machine instead
// of 3 s. -ldflags only changes the link, which runs every time anyway
// (and is faster without the symbol table and DWARF).
func buildBootstrap(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("builds a binary")
	}
	bootstrap.once.Do(func() {
		goBin := filepath.Join(runtime.GOROOT(), "bin", "go")
		if _, err := os.Stat(goBin); err != nil {
			goBin = "go"
		}
		if bootstrap.dir, bootstrap.err = os.MkdirTemp("", "lambda-bootstrap-"); bootstrap.err != nil {
			return
		}
		bootstrap.path = filepath.Join(bootstrap.dir, "bootstrap")
		cmd := exec.Command(goBin, "build", "-tags", "lambda.norpc", "-ldflags=-s -w", "-o", bootstrap.path, ".")
		if out, err := cmd.CombinedOutput(); err != nil {
			bootstrap.err = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if bootstrap.err != nil {
		t.Fatal(bootstrap.err)
	}
	return bootstrap.path
}

// TestBootstrapUnderRuntimeAPI runs the Lambda build of the function (the
// real main, lambda.Start and all) against a fake Runtime API: the client
// is built once in the init phase and serves several invocations.
func TestBootstrapUnderRuntimeAPI(t *testing.T) {
	t.Parallel()
	bin := buildBootstrap(t)
	srv := upstashtest.NewServer(t)
	api := &fakeRuntimeAPI{events: make(chan []byte, 4), responses: make(chan string, 4)}
	rt := httptest.NewServer(api)
	defer rt.Close()

	var stdout, stderr testtool.SyncBuffer
	cmd := exec.Command(bin)
	cmd.Env = []string{
		"AWS_LAMBDA_RUNTIME_API=" + strings.TrimPrefix(rt.URL, "http://"),
		"AWS_LAMBDA_FUNCTION_NAME=chat-bot", "AWS_REGION=us-east-1",
		upstash.EnvVercelURL + "=" + srv.URL, upstash.EnvVercelToken + "=" + srv.Token,
	}
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := false
	defer func() {
		if !exited {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
		if t.Failed() {
			t.Logf("function stdout:\n%s\nstderr:\n%s", stdout.String(), stderr.String())
		}
	}()

	send := func(id, text string) (string, events.LambdaFunctionURLResponse) {
		body := fmt.Sprintf(`{"platform":"slack","messageId":%q,"threadId":"slack:C9:rie","user":"U1","text":%q}`, id, text)
		ev, _ := json.Marshal(events.LambdaFunctionURLRequest{Version: "2.0", Body: body,
			RequestContext: events.LambdaFunctionURLRequestContext{HTTP: events.LambdaFunctionURLRequestContextHTTPDescription{Method: "POST"}}})
		api.events <- ev
		select {
		case got := <-api.responses:
			reqID, rest, _ := strings.Cut(got, " ")
			kind, payload, _ := strings.Cut(rest, " ")
			if kind != "response" {
				t.Fatalf("%s: %s %s", reqID, kind, payload)
			}
			var resp events.LambdaFunctionURLResponse
			if err := json.Unmarshal([]byte(payload), &resp); err != nil {
				t.Fatalf("%s: %v: %s", reqID, err, payload)
			}
			return reqID, resp
		case <-time.After(responseGuard):
			t.Fatalf("no response from the function within %v", responseGuard)
		}
		panic("unreachable")
	}
	for _, c := range []struct{ id, text, want string }{
		{"m1", "@bot hi", `"status":"handled"`},
		{"m1", "@bot hi", `"status":"duplicate"`},
		{"m2", "next", `"status":"handled"`},
	} {
		reqID, resp := send(c.id, c.text)
		if resp.StatusCode != 200 || !strings.Contains(resp.Body, c.want) {
			t.Errorf("%s %s: %d %s, want %s", reqID, c.id, resp.StatusCode, resp.Body, c.want)
		}
	}
	// One JSON line per invocation goes to stdout (CloudWatch), with the
	// request id. They were written before each response; once the
	// process has exited and Wait has returned, every byte of them has
	// reached the buffer.
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	exited = true
	got := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(stdout.String()), "\n") {
		var rec struct{ Msg, Request, Result string }
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Errorf("stdout line is not JSON: %q (%v)", line, err)
		}
		if rec.Msg == answered {
			got[rec.Request] = rec.Result
		}
	}
	if want := map[string]string{"rie-01": "handled", "rie-02": "duplicate", "rie-03": "handled"}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("logged invocations %v, want %v", got, want)
	}
}

// TestBootstrapWithoutConfiguration: on Lambda with no variables set, the
// init phase fails, naming the variables (never values), and exits 1.
func TestBootstrapWithoutConfiguration(t *testing.T) {
	t.Parallel()
	bin := buildBootstrap(t)
	cmd := exec.Command(bin)
	cmd.Env = []string{"AWS_LAMBDA_RUNTIME_API=127.0.0.1:9"}
	out, err := cmd.CombinedOutput()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 {
		t.Fatalf("exit: %v, want status 1\n%s", err, out)
	}
	for _, name := range []string{upstash.EnvURL, upstash.EnvVercelURL, upstash.EnvToken, upstash.EnvVercelToken} {
		if !strings.Contains(string(out), name) {
			t.Errorf("output does not name %s:\n%s", name, out)
		}
	}
}

// TestBuildLineOutputsIgnored: the build line of README.md and of this
// example's README builds with -tags lambda.norpc (what buildBootstrap
// tests), and what it writes (bootstrap, function.zip) is ignored by git.
func TestBuildLineOutputsIgnored(t *testing.T) {
	t.Parallel()
	git, err := exec.LookPath("git")
	if err != nil {
		t.Skipf("git is not on PATH: %v", err)
	}
	root, err := exec.Command(git, "rev-parse", "--show-toplevel").Output()
	if err != nil {
		t.Skipf("not in a git work tree: %v", err)
	}
	for _, readme := range []string{"../../README.md", "README.md"} {
		data, err := os.ReadFile(readme)
		if err != nil {
			t.Fatal(err)
		}
		found := false
		for _, line := range strings.Split(string(data), "\n") {
			if !strings.Contains(line, "go build") || !strings.Contains(line, "./examples/lambda") || !strings.Contains(line, "zip ") {
				continue
			}
			found = true
			if !strings.Contains(line, "-tags lambda.norpc") {
				t.Errorf("%s: the build line lacks -tags lambda.norpc: %s", readme, line)
			}
			fields := strings.Fields(line)
			var outputs []string
			for i, f := range fields {
				if (f == "-o" || f == "zip") && i+1 < len(fields) {
					outputs = append(outputs, fields[i+1])
				}
			}
			if len(outputs) != 2 {
				t.Errorf("%s: cannot find -o and zip outputs in: %s", readme, line)
				continue
			}
			for _, o := range outputs {
				cmd := exec.Command(git, "check-ignore", "--no-index", "-q", o)
				cmd.Dir = strings.TrimSpace(string(root))
				if err := cmd.Run(); err != nil {
					t.Errorf("%s: git does not ignore %s, which its build line writes at the repository root (%v)", readme, o, err)
				}
			}
		}
		if !found {
			t.Errorf("%s: no `go build … ./examples/lambda && zip …` line", readme)
		}
	}
}
