package upstashtest_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/chatstate/upstash/internal/testtool"
	"github.com/chatstate/upstash/upstashtest"
)

func TestFastForward(t *testing.T) {
	s := upstashtest.NewServer(t, upstashtest.WithEmbedded())
	if !s.Embedded() {
		t.Fatal("Embedded() = false with WithEmbedded")
	}
	expect(t, cmd(t, s, "SET", "k", "v", "PX", 60000), 200, `{"result":"OK"}`)
	expect(t, cmd(t, s, "SET", "keep", "v"), 200, `{"result":"OK"}`)
	if err := s.FastForward(59 * time.Second); err != nil {
		t.Fatal(err)
	}
	expect(t, cmd(t, s, "GET", "k"), 200, `{"result":"v"}`)
	if err := s.FastForward(time.Second); err != nil {
		t.Fatal(err)
	}
	expect(t, cmd(t, s, "GET", "k"), 200, `{"result":null}`)
	expect(t, cmd(t, s, "GET", "keep"), 200, `{"result":"v"}`)
}

func TestFastForwardNeedsEmbedded(t *testing.T) {
	testtool.RequireRedisServer(t)
	s := upstashtest.NewServer(t, upstashtest.WithRedisServer())
	if s.Embedded() {
		t.Fatal("Embedded() = true with WithRedisServer")
	}
	if err := s.FastForward(time.Second); err == nil {
		t.Error("FastForward on a real Redis: want an error")
	}
}

func TestRealTimeExpiry(t *testing.T) {
	eachBackend(t, func(t *testing.T, s *upstashtest.Server) {
		// A key set with PX 1000 is there until its TTL runs out (checked
		// only while that is certain) and gone once it has, without
		// FastForward. The SET ran before its reply came back, so the key
		// has expired 1 s after that, whatever the machine's load.
		const ttl = time.Second
		start := time.Now()
		expect(t, cmd(t, s, "SET", "k", "v", "PX", ttl.Milliseconds()), 200, `{"result":"OK"}`)
		setDone := time.Now()
		got := cmd(t, s, "GET", "k")
		if time.Since(start) < ttl {
			expect(t, got, 200, `{"result":"v"}`)
		}
		time.Sleep(time.Until(setDone.Add(ttl + 100*time.Millisecond)))
		expect(t, cmd(t, s, "GET", "k"), 200, `{"result":null}`)

		// TTL reads like Redis: PTTL rounded to seconds, not truncated.
		// PTTL and TTL go in one request, which the embedded backend runs
		// at one clock reading and Redis within a few milliseconds (hence
		// the second candidate, 50 ms earlier). On the embedded backend
		// FastForward makes the remaining time end in .75 s, where
		// truncation would give one second less.
		expect(t, cmd(t, s, "SET", "t", "v", "EX", 100), 200, `{"result":"OK"}`)
		if s.Embedded() {
			if err := s.FastForward(250 * time.Millisecond); err != nil {
				t.Fatal(err)
			}
		}
		pipe := send(t, s, req{path: "/pipeline", body: `[["PTTL","t"],["TTL","t"],["TTL","nokey"],["PERSIST","t"],["TTL","t"]]`})
		var rows []struct {
			Result int64 `json:"result"`
		}
		if err := json.Unmarshal([]byte(pipe.body), &rows); err != nil || len(rows) != 5 {
			t.Fatalf("pipeline reply %s: %v", pipe.body, err)
		}
		pttl, ttlSec := rows[0].Result, rows[1].Result
		if pttl <= 0 || pttl > 100000 {
			t.Fatalf("PTTL = %d, want (0, 100000]", pttl)
		}
		if ttlSec != (pttl+500)/1000 && ttlSec != (pttl-50+500)/1000 {
			t.Errorf("TTL = %d with PTTL = %d: want it rounded, %d", ttlSec, pttl, (pttl+500)/1000)
		}
		if rows[2].Result != -2 || rows[3].Result != 1 || rows[4].Result != -1 {
			t.Errorf("TTL of a missing key, PERSIST, TTL without expiry: %s, want -2, 1, -1", pipe.body)
		}
	})
}

func TestScoresPrintLikeRedis(t *testing.T) {
	eachBackend(t, func(t *testing.T, s *upstashtest.Server) {
		expect(t, send(t, s, req{body: `["ZADD","z",1700000000000,"a",1.5,"1e+3"]`}), 200, `{"result":2}`)
		expect(t, cmd(t, s, "ZSCORE", "z", "a"), 200, `{"result":"1700000000000"}`)
		expect(t, cmd(t, s, "ZRANGE", "z", 0, -1, "WITHSCORES"), 200, `{"result":["1e+3","1.5","a","1700000000000"]}`)
		expect(t, send(t, s, req{path: "/multi-exec", body: `[["ZMSCORE","z","a","x"],["ZINCRBY","z",0,"a"]]`}), 200,
			`[{"result":["1700000000000",null]},{"result":"1700000000000"}]`)
	})
}

// settleGoroutines waits until at most want goroutines run, and returns the
// count it saw last. The deadline only bounds a leak.
func settleGoroutines(want int) int {
	n := runtime.NumGoroutine()
	for deadline := time.Now().Add(30 * time.Second); n > want && time.Now().Before(deadline); n = runtime.NumGoroutine() {
		time.Sleep(20 * time.Millisecond)
	}
	return n
}

// waitForRequests waits until the server has received n requests in all
// (Stats().TotalRequests counts a request as it arrives, before faults and
// latency). The deadline only bounds a hang.
func waitForRequests(t *testing.T, s *upstashtest.Server, n int64) {
	t.Helper()
	for deadline := time.Now().Add(time.Minute); s.Stats().TotalRequests < n; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the server received %d requests, want %d", s.Stats().TotalRequests, n)
		}
	}
}

func TestCloseLeavesNoGoroutines(t *testing.T) {
	for _, tc := range []struct {
		name string
		opt  upstashtest.Option
	}{{"embedded", upstashtest.WithEmbedded()}, {"redis-server", upstashtest.WithRedisServer()}} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.name == "redis-server" {
				testtool.RequireRedisServer(t)
			}
			time.Sleep(50 * time.Millisecond) // let earlier tests' connections wind down
			before := runtime.NumGoroutine()
			s, err := upstashtest.Start(tc.opt)
			if err != nil {
				t.Fatal(err)
			}
			cmd(t, s, "SET", "k", "v")
			send(t, s, req{path: "/pipeline", body: `[["GET","k"],["INCR","n"]]`})
			send(t, s, req{path: "/multi-exec", body: `[["GET","k"],["INCR","n"]]`})
			s.ResetNext(1)
			_, _ = sendErr(s, req{body: `["PING"]`})
			s.DropResponseNext(1)
			_, _ = sendErr(s, req{body: `["PING"]`})
			// A keep-alive client with an idle connection.
			if r, err := s.Client().Get(s.URL + "/ping?_token=" + s.Token); err == nil {
				r.Body.Close()
			}
			// One request still waiting in SetLatency when Close comes.
			s.SetLatency(time.Hour)
			requests := s.Stats().TotalRequests
			done := make(chan struct{})
			go func() {
				defer close(done)
				_, _ = sendErr(s, req{body: `["PING"]`})
			}()
			waitForRequests(t, s, requests+1) // it is waiting in the server

			closed := make(chan struct{})
			go func() { s.Close(); close(closed) }()
			select {
			case <-closed:
			case <-time.After(time.Minute): // a hang, not a slow machine
				t.Fatal("Close did not return")
			}
			<-done
			s.Close() // idempotent
			if after := settleGoroutines(before); after > before {
				buf := make([]byte, 1<<16)
				t.Errorf("goroutines: %d before, %d after Close\n%s", before, after, buf[:runtime.Stack(buf, true)])
			}
		})
	}
}

func TestCloseStopsRedisServer(t *testing.T) {
	testtool.RequireRedisServer(t)
	s, err := upstashtest.Start(upstashtest.WithRedisServer())
	if err != nil {
		t.Fatal(err)
	}
	addr := s.RedisAddr()
	if c, err := net.Dial("tcp", addr); err != nil {
		t.Fatalf("redis-server not reachable at %s: %v", addr, err)
	} else {
		c.Close()
	}
	s.Close()
	if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		c.Close()
		t.Errorf("redis-server still listening on %s after Close", addr)
	}
	// Requests after Close fail cleanly.
	if _, err := sendErr(s, req{body: `["PING"]`}); err == nil {
		t.Error("a request after Close got a response")
	}
}

func TestHandlerMounted(t *testing.T) {
	s := upstashtest.NewServer(t, upstashtest.WithEmbedded())
	outer := httptest.NewServer(http.StripPrefix("/redis", s.Handler()))
	defer outer.Close()
	r, err := http.NewRequest("POST", outer.URL+"/redis/pipeline", strings.NewReader(`[["SET","m","1"],["GET","m"]]`))
	if err != nil {
		t.Fatal(err)
	}
	r.Header.Set("Authorization", "Bearer "+s.Token)
	res, err := outer.Client().Do(r)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	_, _ = buf.ReadFrom(res.Body)
	res.Body.Close()
	if res.StatusCode != 200 || !jsonEqual(buf.String(), `[{"result":"OK"},{"result":"1"}]`) {
		t.Errorf("mounted handler: %d %s", res.StatusCode, buf.String())
	}
	if s.Stats().Requests["/pipeline"] != 1 {
		t.Errorf("mounted requests are not counted: %v", s.Stats().Requests)
	}
	// Faults work through the mount too.
	s.ResetNext(1)
	r, _ = http.NewRequest("POST", outer.URL+"/redis/", strings.NewReader(`["PING"]`))
	r.Header.Set("Authorization", "Bearer "+s.Token)
	if res, err := outer.Client().Do(r); err == nil {
		res.Body.Close()
		t.Error("reset through a mounted handler got a response")
	}
}

func TestBackendSelection(t *testing.T) {
	t.Run("env redis-server", func(t *testing.T) {
		testtool.RequireRedisServer(t)
		t.Setenv(upstashtest.EnvRedis, "redis-server")
		if s := upstashtest.NewServer(t); s.Embedded() {
			t.Error("UPSTASHTEST_REDIS=redis-server gave the embedded backend")
		}
		if s := upstashtest.NewServer(t, upstashtest.WithEmbedded()); !s.Embedded() {
			t.Error("WithEmbedded did not win over the env")
		}
	})
	t.Run("env address", func(t *testing.T) {
		base := upstashtest.NewServer(t, upstashtest.WithEmbedded())
		t.Setenv(upstashtest.EnvRedis, "redis://"+base.RedisAddr())
		s := upstashtest.NewServer(t)
		if s.Embedded() || s.RedisAddr() != base.RedisAddr() {
			t.Fatalf("env address: embedded=%v addr=%s", s.Embedded(), s.RedisAddr())
		}
		cmd(t, s, "SET", "shared", "yes")
		if get(t, base, "shared") != "yes" {
			t.Error("the env-selected Redis is not the one given")
		}
	})
	t.Run("default is embedded", func(t *testing.T) {
		t.Setenv(upstashtest.EnvRedis, "")
		if s := upstashtest.NewServer(t); !s.Embedded() {
			t.Error("default backend is not embedded")
		}
	})
	t.Run("WithRedisAddr and database", func(t *testing.T) {
		base := upstashtest.NewServer(t, upstashtest.WithEmbedded())
		db0 := upstashtest.NewServer(t, upstashtest.WithRedisAddr(base.RedisAddr()))
		db2 := upstashtest.NewServer(t, upstashtest.WithRedisAddr("redis://"+base.RedisAddr()+"/2"))
		cmd(t, db2, "SET", "k", "in db 2")
		expect(t, cmd(t, db0, "GET", "k"), 200, `{"result":null}`)
		expect(t, cmd(t, db2, "GET", "k"), 200, `{"result":"in db 2"}`)
		if err := db2.FastForward(time.Second); err == nil {
			t.Error("FastForward through WithRedisAddr: want an error")
		}
	})
	t.Run("unreachable Redis is an error, not a fallback", func(t *testing.T) {
		addr := closedAddr(t)
		s, err := upstashtest.Start(upstashtest.WithRedisAddr(addr))
		if err == nil {
			s.Close()
			t.Fatal("Start with an unreachable Redis succeeded")
		}
		if !strings.Contains(err.Error(), "unreachable") {
			t.Errorf("error %q does not say unreachable", err)
		}
		ft := &fatalRecorder{TB: t}
		if s := upstashtest.NewServer(ft, upstashtest.WithRedisAddr(addr)); s != nil || ft.msg == "" {
			t.Errorf("NewServer with an unreachable Redis: server %v, Fatal %q", s, ft.msg)
		}
	})
	t.Run("missing redis-server is an error", func(t *testing.T) {
		t.Setenv("PATH", t.TempDir())
		_, err := upstashtest.Start(upstashtest.WithRedisServer())
		if err == nil || !strings.Contains(err.Error(), "redis-server is not on PATH") || !strings.Contains(err.Error(), "apt-get install -y redis-server") {
			t.Errorf("error %v", err)
		}
		t.Setenv(upstashtest.EnvRedis, "redis-server")
		if _, err := upstashtest.Start(); err == nil || !strings.Contains(err.Error(), `UPSTASHTEST_REDIS="redis-server"`) {
			t.Errorf("UPSTASHTEST_REDIS=redis-server without the binary: %v, want an error naming the variable", err)
		}
	})
	t.Run("bad address", func(t *testing.T) {
		if _, err := upstashtest.Start(upstashtest.WithRedisAddr("http://x:1")); err == nil {
			t.Error("an http:// Redis address was accepted")
		}
	})
}

// fatalRecorder is a testing.TB whose Fatalf records instead of stopping.
type fatalRecorder struct {
	testing.TB
	msg string
}

func (f *fatalRecorder) Fatalf(format string, args ...interface{}) {
	f.msg = fmt.Sprintf(format, args...)
}

// closedAddr returns a 127.0.0.1 address nobody listens on.
func closedAddr(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

func TestRedisConnectionLoss(t *testing.T) {
	base, err := upstashtest.Start(upstashtest.WithEmbedded())
	if err != nil {
		t.Fatal(err)
	}
	s := upstashtest.NewServer(t, upstashtest.WithRedisAddr(base.RedisAddr()))
	expect(t, cmd(t, s, "PING"), 200, `{"result":"PONG"}`)
	base.Close()
	expectError(t, cmd(t, s, "PING"), 503, "ERR redis connection failed")
	expectError(t, send(t, s, req{path: "/pipeline", body: `[["PING"]]`}), 503, "ERR redis connection failed")
	expectError(t, send(t, s, req{path: "/multi-exec", body: `[["PING"]]`}), 503, "ERR redis connection failed")
}

func TestWithAddr(t *testing.T) {
	addr := closedAddr(t)
	s := upstashtest.NewServer(t, upstashtest.WithEmbedded(), upstashtest.WithAddr(addr))
	if s.URL != "http://"+addr {
		t.Errorf("URL = %s, want http://%s", s.URL, addr)
	}
	expect(t, cmd(t, s, "PING"), 200, `{"result":"PONG"}`)
	if _, err := upstashtest.Start(upstashtest.WithEmbedded(), upstashtest.WithAddr(addr)); err == nil {
		t.Error("a second server on the same address started")
	}
}

func TestFlushAll(t *testing.T) {
	eachBackend(t, func(t *testing.T, s *upstashtest.Server) {
		cmd(t, s, "SET", "a", "1")
		cmd(t, s, "SET", "b", "2")
		if err := s.FlushAll(); err != nil {
			t.Fatal(err)
		}
		expect(t, cmd(t, s, "DBSIZE"), 200, `{"result":0}`)
	})
}

func TestLoggerNeverLogsTokens(t *testing.T) {
	var logs testtool.SyncBuffer
	logger := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	s := upstashtest.NewServer(t, upstashtest.WithEmbedded(), upstashtest.WithLogger(logger),
		upstashtest.WithToken("sekrit-full-token"), upstashtest.WithReadOnlyToken("sekrit-ro-token"))
	send(t, s, req{method: "GET", path: "/set/k/v?_token=sekrit-full-token", token: "-"})
	send(t, s, req{body: `["SET","k","v"]`, token: "sekrit-ro-token"})
	send(t, s, req{body: `["SET","k","v"]`, token: "sekrit-wrong-token"})
	send(t, s, req{path: "/?_token=sekrit-%zz", body: `["PING"]`, token: "-"})
	s.FailNext(1, 500)
	send(t, s, req{body: `["PING"]`})
	s.Close()
	out := logs.String()
	if !strings.Contains(out, "upstashtest: request") {
		t.Fatalf("nothing logged:\n%s", out)
	}
	if strings.Contains(out, "sekrit") {
		t.Errorf("a token reached the log:\n%s", out)
	}
}
