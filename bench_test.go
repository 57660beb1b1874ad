package upstash_test

// Benchmarks: go test -bench . -benchmem -run '^$'
//
// The Memory benchmarks isolate the client's own work (encoding, the retry
// loop, resty, decoding) with a RoundTripper that answers from memory; the
// Server benchmarks add HTTP over loopback and upstashtest for end-to-end
// figures.

import (
	"context"
	"encoding/base64"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chatstate/upstash"
	"github.com/chatstate/upstash/upstashtest"
)

var benchScript = upstash.NewScript("return redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])")

func pipelineOf10() []upstash.Command {
	cmds := make([]upstash.Command, 0, 10)
	for i := 0; i < 5; i++ {
		cmds = append(cmds, upstash.Cmd("SET", "chat-sdk:cache:key", `{"text":"hello world","n":1}`, "PX", 60000))
		cmds = append(cmds, upstash.Cmd("GET", "chat-sdk:cache:key"))
	}
	return cmds
}

func benchCommands(b *testing.B, c *upstash.Client) {
	ctx := context.Background()
	b.Run("Do", func(b *testing.B) {
		b.ReportAllocs()
		for i := 0; i < b.N; i++ {
			v, err := c.Do(ctx, "GET", "chat-sdk:cache:key")
			if err != nil {
				b.Fatal(err)
			}
			_ = v
		}
	})
	b.Run("Pipeline10", func(b *testing.B) {
		b.ReportAllocs()
		cmds := pipelineOf10()
		for i := 0; i < b.N; i++ {
			res, err := c.Pipeline(ctx, cmds...)
			if err != nil || len(res) != 10 {
				b.Fatal(err)
			}
		}
	})
	b.Run("Script", func(b *testing.B) {
		b.ReportAllocs()
		for i := 0; i < b.N; i++ {
			if _, err := benchScript.Run(ctx, c, []string{"chat-sdk:lock:thread"}, "token-0123456789abcdef", 30000); err != nil {
				b.Fatal(err)
			}
		}
	})
}

func BenchmarkMemory(b *testing.B) {
	mt := memoryTransport{
		"":          `{"result":"eyJ0ZXh0IjoiaGVsbG8gd29ybGQiLCJuIjoxfQ=="}`,
		"/pipeline": `[` + strings.Repeat(`{"result":"OK"},{"result":"eyJ0ZXh0IjoiaGVsbG8gd29ybGQiLCJuIjoxfQ=="},`, 4) + `{"result":"OK"},{"result":"eyJ0ZXh0IjoiaGVsbG8gd29ybGQiLCJuIjoxfQ=="}]`,
	}
	c, err := upstash.New(upstash.Config{URL: "https://bench.upstash.io", Token: "AXbenchTOKEN"}, upstash.WithTransport(mt))
	if err != nil {
		b.Fatal(err)
	}
	benchCommands(b, c)
}

// BenchmarkMemoryGet1MB reads a 1 MB value: what it allocates is about the
// peak memory a large reply costs.
func BenchmarkMemoryGet1MB(b *testing.B) {
	value := strings.Repeat("0123456789abcdef", 1<<16)
	mt := memoryTransport{"": `{"result":"` + base64.StdEncoding.EncodeToString([]byte(value)) + `"}`}
	c, err := upstash.New(upstash.Config{URL: "https://bench.upstash.io", Token: "AXbenchTOKEN"}, upstash.WithTransport(mt))
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.SetBytes(int64(len(value)))
	for i := 0; i < b.N; i++ {
		v, err := c.Get(context.Background(), "big")
		if err != nil || len(v) != len(value) {
			b.Fatal(err)
		}
	}
}

func BenchmarkServer(b *testing.B) {
	srv := upstashtest.NewServer(b)
	c, err := upstash.New(upstash.Config{URL: srv.URL, Token: srv.Token})
	if err != nil {
		b.Fatal(err)
	}
	if err := c.Set(context.Background(), "chat-sdk:cache:key", `{"text":"hello world","n":1}`, 0); err != nil {
		b.Fatal(err)
	}
	benchCommands(b, c)
}

func BenchmarkDecodeReply(b *testing.B) {
	body := []byte(`{"result":["eyJ0ZXh0IjoiaGVsbG8gd29ybGQiLCJuIjoxfQ==",null,42,["T0s=","OK"]]}`)
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		if _, err := upstash.DecodeReply(body, true); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkState measures one State operation end to end over
// memoryTransport (no network): the state layer's own work (keys, JSON,
// the operation id), the script command, and the client's encoding,
// request, retry loop and decoding. allocs/op is the "allocations per
// state operation" of issue 11.
func BenchmarkState(b *testing.B) {
	ctx := context.Background()
	b64 := func(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }
	state := func(b *testing.B, result string) *upstash.State {
		b.Helper()
		mt := memoryTransport{"": `{"result":` + result + `}`}
		c, err := upstash.New(upstash.Config{URL: "https://bench.upstash.io", Token: "AXbenchTOKEN"}, upstash.WithTransport(mt))
		if err != nil {
			b.Fatal(err)
		}
		return upstash.NewState(c)
	}
	value := map[string]any{"text": "hello world", "n": 1}
	b.Run("SetIfNotExists", func(b *testing.B) {
		s := state(b, `"`+b64("1")+`"`)
		b.ReportAllocs()
		for i := 0; i < b.N; i++ {
			if ok, err := s.SetIfNotExists(ctx, "dedupe:slack:msg-0123456789", true, 10*time.Minute); err != nil || !ok {
				b.Fatal(ok, err)
			}
		}
	})
	b.Run("Set", func(b *testing.B) {
		s := state(b, `"`+b64("1")+`"`)
		b.ReportAllocs()
		for i := 0; i < b.N; i++ {
			if err := s.Set(ctx, "thread-state:slack:C123:1700000000.000100", value, time.Hour); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("Get", func(b *testing.B) {
		s := state(b, `"`+b64(`{"text":"hello world","n":1}`)+`"`)
		b.ReportAllocs()
		for i := 0; i < b.N; i++ {
			if v, err := s.Get(ctx, "thread-state:slack:C123:1700000000.000100"); err != nil || v == nil {
				b.Fatal(v, err)
			}
		}
	})
	b.Run("IsSubscribed", func(b *testing.B) {
		s := state(b, `1`)
		b.ReportAllocs()
		for i := 0; i < b.N; i++ {
			if ok, err := s.IsSubscribed(ctx, "slack:C123:1700000000.000100"); err != nil || !ok {
				b.Fatal(ok, err)
			}
		}
	})
	b.Run("AcquireLock", func(b *testing.B) {
		s := state(b, `"`+b64("1700000000000000")+`"`)
		b.ReportAllocs()
		for i := 0; i < b.N; i++ {
			if l, err := s.AcquireLock(ctx, "slack:C123:1700000000.000100", 30*time.Second); err != nil || l == nil {
				b.Fatal(l, err)
			}
		}
	})
	b.Run("AppendToList", func(b *testing.B) {
		s := state(b, `"`+b64("1")+`"`)
		b.ReportAllocs()
		for i := 0; i < b.N; i++ {
			if err := s.AppendToList(ctx, "history:slack:C123", value, upstash.ListOptions{MaxLength: 100, TTL: time.Hour}); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkAutoPipeline runs State operations (a Set then a Get of the
// caller's own key, one iteration) from 1 or 64 concurrent callers
// through one client with auto-pipelining on or off, against upstashtest
// with latency injected before each request, over the default transport.
// Besides the time per iteration it reports HTTP requests per iteration
// (the server's counters) and the connections the server accepted while
// the timer ran (after a warm-up burst).
func BenchmarkAutoPipeline(b *testing.B) {
	for _, latency := range []time.Duration{5 * time.Millisecond, 20 * time.Millisecond} {
		for _, callers := range []int{1, 64} {
			for _, auto := range []bool{true, false} {
				name := fmt.Sprintf("latency=%v/callers=%d/auto=%v", latency, callers, auto)
				b.Run(name, func(b *testing.B) { benchAutoPipeline(b, latency, callers, auto) })
			}
		}
	}
}

func benchAutoPipeline(b *testing.B, latency time.Duration, callers int, auto bool) {
	srv := upstashtest.NewServer(b)
	url, accepted := countConnections(b, srv.Handler())
	c, err := upstash.New(upstash.Config{URL: url, Token: srv.Token}, upstash.WithAutoPipelining(auto))
	if err != nil {
		b.Fatal(err)
	}
	s := upstash.NewState(c)
	ctx := context.Background()
	value := map[string]any{"text": "hello world", "n": 1}
	run := func(n int) {
		var next atomic.Int64
		var wg sync.WaitGroup
		for g := 0; g < callers; g++ {
			wg.Add(1)
			go func(g int) {
				defer wg.Done()
				key := fmt.Sprintf("thread-state:%d", g)
				for next.Add(1) <= int64(n) {
					if err := s.Set(ctx, key, value, time.Hour); err != nil {
						b.Error(err)
						return
					}
					if v, err := s.Get(ctx, key); err != nil || v == nil {
						b.Error(v, err)
						return
					}
				}
			}(g)
		}
		wg.Wait()
	}
	srv.SetLatency(latency)
	run(2 * callers) // warm-up: connections and the scripts' cache
	srv.ResetStats()
	conns := accepted.Load()
	b.ResetTimer()
	run(b.N)
	b.StopTimer()
	b.ReportMetric(float64(srv.Stats().TotalRequests)/float64(b.N), "requests/op")
	b.ReportMetric(float64(accepted.Load()-conns), "new-conns")
}
