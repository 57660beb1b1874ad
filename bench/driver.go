package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"strings"
	"time"

	"github.com/chatstate/upstash/internal/testtool"
)

// Client names, as in the JSON output.
const (
	clientGoCalls    = "go-calls"
	clientGoFused    = "go-fused"
	clientGoChatflow = "go-chatflow"
	clientNode       = "node"
)

// launcher builds the command of a driver process (bench/driver or
// bench/node/driver.mjs) for a mode and its argument.
type launcher struct {
	goDriver string // built bench/driver binary
	node     string // node executable; empty when Node is unavailable
	nodeDir  string // bench/node
	url      string
	token    string
}

func (l *launcher) command(client, mode, arg string) (*exec.Cmd, error) {
	var cmd *exec.Cmd
	switch client {
	case clientGoCalls, clientGoFused, clientGoChatflow, "go":
		cmd = exec.Command(l.goDriver, mode, arg)
	case clientNode:
		if l.node == "" {
			return nil, errors.New("node is unavailable")
		}
		cmd = exec.Command(l.node, "driver.mjs", mode, arg)
		cmd.Dir = l.nodeDir
	default:
		return nil, fmt.Errorf("unknown client %q", client)
	}
	cmd.Env = append(testtool.EnvironWithout("UPSTASH_REDIS_REST_", "KV_REST_API_"),
		"UPSTASH_REDIS_REST_URL="+l.url, "UPSTASH_REDIS_REST_TOKEN="+l.token)
	return cmd, nil
}

// driver is a running driver process in serve mode.
type driver struct {
	client string
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	lines  chan string
	stderr *testtool.SyncBuffer
	waited bool
}

// hello is the first line a driver prints in serve mode.
type hello struct {
	Event     string `json:"event"`
	Client    string `json:"client"`
	Available bool   `json:"available"`
	Reason    string `json:"reason"`
}

// errUnavailable carries the reason a client cannot run.
type errUnavailable struct{ reason string }

func (e *errUnavailable) Error() string { return e.reason }

// spawn starts a driver in serve mode and reads its hello line. A client
// that reports itself unavailable gives an *errUnavailable.
func (l *launcher) spawn(client string) (*driver, error) {
	cmd, err := l.command(client, "serve", client)
	if err != nil {
		return nil, err
	}
	d := &driver{client: client, cmd: cmd, lines: make(chan string, 4), stderr: &testtool.SyncBuffer{}}
	cmd.Stderr = d.stderr
	if d.stdin, err = cmd.StdinPipe(); err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s driver: %w", client, err)
	}
	go func() {
		defer close(d.lines)
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 64*1024), 64*1024*1024)
		for sc.Scan() {
			d.lines <- sc.Text()
		}
	}()
	var h hello
	if err := d.read(time.Minute, &h); err != nil {
		d.close()
		return nil, err
	}
	if !h.Available {
		d.close()
		return nil, &errUnavailable{reason: h.Reason}
	}
	return d, nil
}

// read waits for the next line and decodes it into v; a line holding
// {"error": …} becomes an error.
func (d *driver) read(timeout time.Duration, v any) error {
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case line, ok := <-d.lines:
		if !ok {
			_ = d.wait()
			return fmt.Errorf("%s driver exited: %s", d.client, d.stderrText())
		}
		var e struct {
			Error string `json:"error"`
		}
		if json.Unmarshal([]byte(line), &e) == nil && e.Error != "" {
			return fmt.Errorf("%s driver: %s", d.client, e.Error)
		}
		if err := json.Unmarshal([]byte(line), v); err != nil {
			return fmt.Errorf("%s driver printed %q: %w", d.client, line, err)
		}
		return nil
	case <-t.C:
		return fmt.Errorf("%s driver did not answer within %v; stderr: %s", d.client, timeout, d.stderrText())
	}
}

// call sends one command line and decodes the answer into v.
func (d *driver) call(timeout time.Duration, v any, format string, args ...any) error {
	if _, err := fmt.Fprintf(d.stdin, format+"\n", args...); err != nil {
		return fmt.Errorf("%s driver: %w (stderr: %s)", d.client, err, d.stderrText())
	}
	return d.read(timeout, v)
}

// wait reaps the process, killing it if it has not exited 10 s after its
// stdin was closed.
func (d *driver) wait() error {
	if d.waited {
		return nil
	}
	d.waited = true
	done := make(chan error, 1)
	go func() { done <- d.cmd.Wait() }()
	select {
	case err := <-done:
		return err
	case <-time.After(10 * time.Second):
		_ = d.cmd.Process.Kill()
		return <-done
	}
}

// close ends the driver (EOF on stdin) and returns its peak RSS in bytes,
// read just before.
func (d *driver) close() int64 {
	var rss int64
	if !d.waited && d.cmd.Process != nil {
		rss = peakRSS(d.cmd.Process.Pid)
	}
	_ = d.stdin.Close()
	_ = d.wait()
	return rss
}

// stderrText is what the driver wrote to stderr, trimmed for an error text.
func (d *driver) stderrText() string { return strings.TrimSpace(d.stderr.String()) }
