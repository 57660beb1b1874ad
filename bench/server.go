package main

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"os/exec"
	"sync/atomic"
	"time"

	"github.com/chatstate/upstash/bench/internal/flow"
	"github.com/chatstate/upstash/upstashtest"
)

// benchServer is upstashtest on a private redis-server, served through a
// listener that counts accepted TCP connections (upstashtest's Stats counts
// requests and commands, not connections).
type benchServer struct {
	srv      *upstashtest.Server
	URL      string
	Token    string
	accepted atomic.Int64
	http     *http.Server
	done     chan struct{}
}

// errNoRedis is returned when redis-server is not on PATH.
var errNoRedis = errors.New("redis-server is not on PATH; the benchmark runs upstashtest on a real redis-server (install it: apt-get install -y redis-server)")

func startServer() (*benchServer, error) {
	if _, err := exec.LookPath("redis-server"); err != nil {
		return nil, errNoRedis
	}
	srv, err := upstashtest.Start(upstashtest.WithRedisServer())
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		srv.Close()
		return nil, err
	}
	b := &benchServer{srv: srv, Token: srv.Token, done: make(chan struct{})}
	b.URL = "http://" + ln.Addr().String()
	b.http = &http.Server{Handler: srv.Handler(), ReadHeaderTimeout: 30 * time.Second}
	go func() {
		defer close(b.done)
		_ = b.http.Serve(&countingListener{Listener: ln, n: &b.accepted})
	}()
	return b, nil
}

func (b *benchServer) Close() {
	_ = b.http.Close()
	<-b.done
	b.srv.Close()
}

// counters is a snapshot of what the server saw.
type counters struct {
	requests, commands, conns int64
}

func (b *benchServer) counters() counters {
	st := b.srv.Stats()
	return counters{requests: st.TotalRequests, commands: st.TotalCommands, conns: b.accepted.Load()}
}

func (c counters) sub(d counters) counters {
	return counters{requests: c.requests - d.requests, commands: c.commands - d.commands, conns: c.conns - d.conns}
}

// reset empties Redis (keys and the script cache) and sets the latency, so
// every run starts from the same state and loads its scripts itself.
func (b *benchServer) reset(latency time.Duration) error {
	b.srv.ClearFaults()
	if _, err := b.srv.Do("FLUSHALL"); err != nil {
		return fmt.Errorf("FLUSHALL: %w", err)
	}
	if _, err := b.srv.Do("SCRIPT", "FLUSH"); err != nil {
		return fmt.Errorf("SCRIPT FLUSH: %w", err)
	}
	b.srv.SetLatency(latency)
	return nil
}

// subscribe marks the even threads as subscribed, so that SISMEMBER sees
// both answers.
func (b *benchServer) subscribe(threads int) error {
	for k := 0; k < threads; k += 2 {
		if _, err := b.srv.Do("SADD", "chat-sdk:subscriptions", flow.ThreadName(k)); err != nil {
			return err
		}
	}
	return nil
}

// leftover returns how many entries are left in the threads' queues and
// how many of their locks are still held.
func (b *benchServer) leftover(threads int) (queued, locks int, err error) {
	for k := 0; k < threads; k++ {
		v, err := b.srv.Do("LLEN", "chat-sdk:queue:"+flow.ThreadName(k))
		if err != nil {
			return 0, 0, err
		}
		n, _ := v.(int64)
		queued += int(n)
		if v, err = b.srv.Do("EXISTS", "chat-sdk:lock:"+flow.ThreadName(k)); err != nil {
			return 0, 0, err
		}
		n, _ = v.(int64)
		locks += int(n)
	}
	return queued, locks, nil
}

type countingListener struct {
	net.Listener
	n *atomic.Int64
}

func (l *countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.n.Add(1)
	}
	return c, err
}
