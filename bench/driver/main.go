// Command driver is the Go side of the benchmark, spawned by the harness
// (go run ./bench) like bench/node/driver.mjs, with the same protocol. It
// reads the REST URL and token with upstash.ConfigFromEnv.
//
//	driver coldstart THREAD   take the lock of THREAD, print {"event":"locked"}, exit at EOF on stdin
//	driver serve CLIENT       CLIENT is go-calls, go-fused or go-chatflow; then commands on stdin,
//	                          one JSON line answered per command:
//	  warmup                  open the connection and load the scripts
//	  run N CALLERS THREADS   handle flow.Workload(N, THREADS) with CALLERS callers
//	  handle MSG THREAD SEQ   handle one webhook
//
// serve first prints {"event":"hello","client":…,"available":true}. (The
// protocol lets a driver report itself unavailable with a reason, as the
// Node driver does without its packages.)
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/chatstate/upstash"
	"github.com/chatstate/upstash/bench/internal/flow"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "driver:", err)
		os.Exit(1)
	}
}

// newState builds the client and State from the environment, with the
// client's options for the configuration: go-calls turns auto-pipelining
// off, so that it is call by call as its name says; go-fused, go-chatflow
// and the cold start keep the defaults (auto-pipelining on).
func newState(client string) (*upstash.State, error) {
	cfg, err := upstash.ConfigFromEnv()
	if err != nil {
		return nil, err
	}
	var opts []upstash.Option
	if client == "go-calls" {
		opts = append(opts, upstash.WithAutoPipelining(false))
	}
	c, err := upstash.New(cfg, opts...)
	if err != nil {
		return nil, err
	}
	return upstash.NewState(c), nil
}

func run(args []string) error {
	if len(args) < 2 {
		return errors.New("usage: driver coldstart THREAD | driver serve go-calls|go-fused|go-chatflow")
	}
	switch args[0] {
	case "coldstart":
		return coldStart(args[1])
	case "serve":
		return serve(args[1])
	}
	return fmt.Errorf("unknown mode %q", args[0])
}

// coldStart is what a fresh function invocation does first: read the
// configuration, build the client, take a lock. It then waits for EOF on
// stdin.
func coldStart(thread string) error {
	st, err := newState("go")
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	lock, err := st.AcquireLock(ctx, thread, flow.LockTTL)
	if err != nil {
		return err
	}
	if lock == nil {
		return fmt.Errorf("lock of %s is busy", thread)
	}
	if _, err := fmt.Println(`{"event":"locked"}`); err != nil {
		return err
	}
	// Stay until stdin closes, so the harness can read the peak RSS.
	_, err = io.Copy(io.Discard, os.Stdin)
	return err
}

type hello struct {
	Event     string `json:"event"`
	Client    string `json:"client"`
	Available bool   `json:"available"`
	Reason    string `json:"reason,omitempty"`
}

// runReply is flow.Result plus the process's own costs during the run.
type runReply struct {
	flow.Result
	CPUUserMS float64 `json:"cpu_user_ms"`
	CPUSysMS  float64 `json:"cpu_sys_ms"`
	Allocs    uint64  `json:"allocs"`
}

func serve(client string) error {
	st, err := newState(client)
	if err != nil {
		return err
	}
	var h flow.Handler
	switch client {
	case "go-calls":
		h = flow.NewCalls(st)
	case "go-fused":
		h = flow.NewFused(st)
	case "go-chatflow":
		if h, err = flow.NewChatflow(st); err != nil {
			return err
		}
	default:
		return fmt.Errorf("unknown client %q", client)
	}
	out := json.NewEncoder(os.Stdout)
	if err := out.Encode(hello{Event: "hello", Client: client, Available: true}); err != nil {
		return err
	}
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		f := strings.Fields(in.Text())
		if len(f) == 0 {
			continue
		}
		reply, err := command(h, f)
		if err != nil {
			reply = map[string]string{"error": err.Error()}
		}
		if err := out.Encode(reply); err != nil {
			return err
		}
	}
	return in.Err()
}

func atoi(s string) int {
	n, err := strconv.Atoi(s)
	if err != nil {
		return -1
	}
	return n
}

func command(h flow.Handler, f []string) (any, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	switch {
	case f[0] == "warmup" && len(f) == 1:
		if err := h.Warmup(ctx); err != nil {
			return nil, err
		}
		return map[string]bool{"ok": true}, nil
	case f[0] == "run" && len(f) == 4:
		n, callers, threads := atoi(f[1]), atoi(f[2]), atoi(f[3])
		if n < 0 || callers < 1 || threads < 1 {
			return nil, fmt.Errorf("bad run arguments %q", f[1:])
		}
		webhooks := flow.Workload(n, threads)
		var ms0, ms1 runtime.MemStats
		runtime.ReadMemStats(&ms0)
		u0, s0 := cpuTime()
		res := flow.Run(ctx, h, webhooks, callers)
		u1, s1 := cpuTime()
		runtime.ReadMemStats(&ms1)
		return runReply{Result: res, CPUUserMS: u1 - u0, CPUSysMS: s1 - s0, Allocs: ms1.Mallocs - ms0.Mallocs}, nil
	case f[0] == "handle" && len(f) == 4:
		return h.Handle(ctx, flow.Webhook{MessageID: f[1], ThreadID: f[2], Seq: atoi(f[3])})
	}
	return nil, fmt.Errorf("unknown command %q", strings.Join(f, " "))
}
