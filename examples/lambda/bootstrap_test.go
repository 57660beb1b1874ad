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
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-lambda-go/events"

	"github.com/chatstate/upstash"
	"github.com/chatstate/upstash/internal/testtool"
	"github.com/chatstate/upstash/upstashtest"
)

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
			w.Header().Set("Lambda-Runtime-Deadline-Ms", strconv.FormatInt(time.Now().Add(5*time.Second).UnixMilli(), 10))
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

// buildBootstrap builds the function as the README says (for this
// machine's OS and architecture, so that it runs here).
func buildBootstrap(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("builds a binary")
	}
	goBin := filepath.Join(runtime.GOROOT(), "bin", "go")
	if _, err := os.Stat(goBin); err != nil {
		goBin = "go"
	}
	out := filepath.Join(t.TempDir(), "bootstrap")
	cmd := exec.Command(goBin, "build", "-tags", "lambda.norpc", "-trimpath", "-ldflags=-s -w", "-o", out, ".")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, b)
	}
	return out
}

// TestBootstrapUnderRuntimeAPI runs the Lambda build of the function (the
// real main, lambda.Start and all) against a fake Runtime API: the client
// is built once in the init phase and serves several invocations.
func TestBootstrapUnderRuntimeAPI(t *testing.T) {
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
	defer func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		t.Logf("function stdout:\n%s\nstderr:\n%s", stdout.String(), stderr.String())
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
		case <-time.After(15 * time.Second):
			t.Fatal("no response from the function")
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
	// Lines go to stdout (CloudWatch), labelled with the request id.
	waitFor := time.Now().Add(2 * time.Second)
	for !strings.Contains(stdout.String(), "rie-03") && time.Now().Before(waitFor) {
		time.Sleep(10 * time.Millisecond)
	}
	for _, want := range []string{"rie-01   locked", "rie-02   deduped", "rie-03   handled"} {
		if !strings.Contains(stdout.String(), want) {
			t.Errorf("stdout lacks %q", want)
		}
	}
}

// TestBootstrapWithoutConfiguration: on Lambda with no variables set, the
// init phase fails, naming the variables (never values), and exits 1.
func TestBootstrapWithoutConfiguration(t *testing.T) {
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
