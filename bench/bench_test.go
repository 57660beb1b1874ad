package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chatstate/upstash/bench/internal/flow"
	"github.com/chatstate/upstash/internal/testtool"
)

// TestHarnessEndToEnd runs the harness with tiny numbers, as `go run
// ./bench` would (building bench/driver, spawning the drivers against
// upstashtest on redis-server), and checks what it counted, never how fast.
func TestHarnessEndToEnd(t *testing.T) {
	testtool.RequireRedisServer(t)
	root, err := moduleRoot()
	if err != nil {
		t.Fatal(err)
	}
	const n, callers, threads = 24, 4, 2
	o := &options{
		reps: 1, n: n, callers: []int{callers}, latencies: []time.Duration{0}, threads: threads,
		clients:  []string{clientGoCalls, clientGoFused, clientGoChatflow, clientNode},
		coldRuns: 1, skip: map[string]bool{"size": true, "gobench": true},
		root: root, runTimeout: 5 * time.Minute, noInstall: true,
	}
	rep := &report{Machine: machineInfo(root)}
	if err := run(o, rep, t.Logf); err != nil {
		t.Fatal(err)
	}
	nodeRan := rep.NodeUnavailable == ""
	if !nodeRan {
		t.Logf("node not measured: %s", rep.NodeUnavailable)
	}

	if len(rep.Throughput) != 4 {
		t.Fatalf("%d throughput records, want one per client: %+v", len(rep.Throughput), rep.Throughput)
	}
	for _, r := range rep.Throughput {
		if r.Callers != callers || r.LatencyMS != 0 || r.Threads != threads {
			t.Errorf("%s: callers %d, latency %d, threads %d", r.Client, r.Callers, r.LatencyMS, r.Threads)
		}
		measured := r.Client != clientNode || nodeRan
		if r.Available != measured {
			t.Errorf("%s: available %v, want %v (reason %q)", r.Client, r.Available, measured, r.Reason)
			continue
		}
		if !measured {
			if r.Reason == "" || r.WebhooksPerS != nil || r.RequestsPerWebhook != nil {
				t.Errorf("%s: unavailable without a reason, or with numbers: %+v", r.Client, r)
			}
			continue
		}
		if r.Runs != 1 || r.Errors != 0 {
			t.Errorf("%s: %d runs, %d errors (%s)", r.Client, r.Runs, r.Errors, r.FirstError)
		}
		if r.Handled+r.Queued+r.Duplicates != n || r.Duplicates != flow.Duplicates(n) {
			t.Errorf("%s: handled %d + queued %d + duplicates %d, want %d with %d duplicates",
				r.Client, r.Handled, r.Queued, r.Duplicates, n, flow.Duplicates(n))
		}
		if r.Drained+r.Stranded > r.Queued {
			t.Errorf("%s: drained %d + stranded %d > queued %d", r.Client, r.Drained, r.Stranded, r.Queued)
		}
		if r.LocksLeft != 0 {
			t.Errorf("%s: %d locks left after the run", r.Client, r.LocksLeft)
		}
		// Finish releases only over an empty queue: nothing is stranded on
		// the fused path (go-calls can strand a message, as the
		// TypeScript core can).
		if (r.Client == clientGoFused || r.Client == clientGoChatflow) && r.Stranded != 0 {
			t.Errorf("%s: %d messages stranded in a queue", r.Client, r.Stranded)
		}
		if r.Client != clientGoChatflow {
			if r.CallsPerRequest != nil || r.HandedTwice != nil {
				t.Errorf("%s: calls by outcome or messages handed twice counted: %+v", r.Client, r)
			}
			continue
		}
		// go-chatflow: every message handed to the handler once, and the
		// state calls by outcome attributed (1 Admit per queued or
		// duplicate webhook; a handled one at least Admit and Finish, which
		// carry the handler's read and write).
		if r.HandedTwice == nil || *r.HandedTwice != 0 {
			t.Errorf("go-chatflow: messages handed twice: %v", r.HandedTwice)
		}
		if r.CallsPerHandled == nil || r.CallsPerQueued == nil || r.CallsPerDuplicate == nil || r.CallsPerMessage == nil ||
			r.CallsPerRequest == nil || *r.CallsPerRequest < 1 {
			t.Errorf("go-chatflow: state calls by outcome missing: %+v", r)
		} else if *r.CallsPerHandled < 2 || *r.CallsPerQueued != 1 || *r.CallsPerDuplicate != 1 {
			t.Errorf("go-chatflow: state calls per handled %v, queued %v, duplicate %v; want at least 2, 1, 1",
				*r.CallsPerHandled, *r.CallsPerQueued, *r.CallsPerDuplicate)
		}
		if r.RequestsPerWebhook == nil || *r.RequestsPerWebhook <= 0 || r.NewConnections == nil ||
			r.OpsPerWebhook == nil || *r.OpsPerWebhook < 1 || r.WebhooksPerS == nil || *r.WebhooksPerS <= 0 {
			t.Errorf("%s: missing counts: %+v", r.Client, r)
		}
	}
	// With the fused operations: at most 2 requests per handled webhook and
	// 1 per queued or duplicate one (issue 11), over a whole run too.
	if fused := rep.Throughput[1]; fused.Client != clientGoFused || fused.RequestsPerWebhook == nil ||
		*fused.RequestsPerWebhook > 2 {
		t.Errorf("go-fused record %+v: want at most 2 requests per webhook", fused)
	}

	if len(rep.Profiles) != 4 {
		t.Fatalf("%d profiles, want 4", len(rep.Profiles))
	}
	for _, p := range rep.Profiles {
		if !p.Available {
			continue
		}
		// The physical limits: at least 2 requests for a handled webhook, 1
		// for a duplicate or a queued one.
		if *p.Handled < 2 || *p.Duplicate < 1 || *p.Queued < 1 || *p.Drained < 1 {
			t.Errorf("%s profile: %+v", p.Client, p)
		}
		// go-fused reaches them; go-calls is one request per step;
		// go-chatflow reaches them too: chatflow's Admit and Finish (2 per
		// handled webhook under Queue, 1 per queued or duplicate one), its
		// handler's thread state read answered from Admit's and its write
		// carried by Finish (WithDeferredWrites); a drained message is the
		// Finish that releases after its turn (the holder's Finish handed
		// it over).
		want := map[string][4]float64{clientGoFused: {2, 1, 1, 1}, clientGoCalls: {8, 1, 5, 4}, clientGoChatflow: {2, 1, 1, 1}}[p.Client]
		if got := [4]float64{*p.Handled, *p.Duplicate, *p.Queued, *p.Drained}; p.Client != clientNode && got != want {
			t.Errorf("%s profile: handled, duplicate, queued, drained requests %v, want %v", p.Client, got, want)
		}
		if hr := p.HandlerRequests; (p.Client == clientGoChatflow) != (hr != nil) ||
			(hr != nil && (*hr != 0 || *p.Handled-*hr != 2)) {
			t.Errorf("%s profile: handler's requests %s in %v handled; want 0 of 2 for go-chatflow, none elsewhere", p.Client, fmtPtr(hr, "%.0f"), *p.Handled)
		}
	}
	for i, c := range []string{clientGoCalls, clientGoFused, clientGoChatflow} {
		if rep.Profiles[i].Client != c || !rep.Profiles[i].Available {
			t.Errorf("profile %d %+v: want %s measured", i, rep.Profiles[i], c)
		}
	}
	if want := map[bool]int{true: 2, false: 1}[nodeRan]; len(rep.ColdStarts) != want {
		t.Errorf("%d cold start records, want %d", len(rep.ColdStarts), want)
	}
	for _, c := range rep.ColdStarts {
		if c.Runs != 1 || c.WallMS <= 0 || c.PeakRSSMB <= 0 {
			t.Errorf("cold start %+v", c)
		}
	}

	// -json: one object per line, each throughput line with every field.
	var out bytes.Buffer
	if err := rep.writeJSON(&out); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != len(rep.records()) {
		t.Errorf("%d JSON lines for %d records", len(lines), len(rep.records()))
	}
	throughput := 0
	for _, line := range lines {
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("line %q: %v", line, err)
		}
		if m["kind"] != "throughput" {
			continue
		}
		throughput++
		for _, f := range []string{"client", "callers", "latency_ms", "webhooks_per_s", "p50_ms", "p99_ms", "requests_per_webhook", "new_connections"} {
			if _, ok := m[f]; !ok {
				t.Errorf("throughput line without %q: %s", f, line)
			}
		}
	}
	if throughput != 4 {
		t.Errorf("%d throughput lines, want 4", throughput)
	}
	var text bytes.Buffer
	rep.writeText(&text)
	for _, want := range []string{"go-calls", "go-fused", "go-chatflow", "Cold start", "State calls per webhook by outcome"} {
		if !strings.Contains(text.String(), want) {
			t.Errorf("text report lacks %q:\n%s", want, text.String())
		}
	}

	// -report reads the JSON back into the same tables.
	saved := filepath.Join(t.TempDir(), "results.jsonl")
	if err := os.WriteFile(saved, out.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	back, err := readReport(saved)
	if err != nil {
		t.Fatal(err)
	}
	rep.NodeUnavailable = "" // not part of the JSON; the records carry the reason
	text.Reset()
	rep.writeText(&text)
	var again bytes.Buffer
	back.writeText(&again)
	if again.String() != text.String() {
		t.Errorf("-report prints\n%s\nwant\n%s", again.String(), text.String())
	}
	var md bytes.Buffer
	back.writeMarkdown(&md)
	for _, want := range []string{"| 0 ms | 4 | go-calls | ", "| 0 ms | 4 | go-fused | ", "| 0 ms | 4 | go-chatflow | ",
		"| go-chatflow | 2 | 1 | 1 | 1 | 2 + 0 |", "| go | "} {
		if !strings.Contains(md.String(), want) {
			t.Errorf("Markdown lacks %q:\n%s", want, md.String())
		}
	}
}

func TestParseFlags(t *testing.T) {
	var stderr bytes.Buffer
	o, err := parseFlags([]string{"-quick", "-latency", "5,20", "-skip", "gobench"}, &stderr)
	if err != nil {
		t.Fatal(err)
	}
	if len(o.callers) != 1 || o.callers[0] != 64 || o.reps != 3 || o.n != 384 || len(o.latencies) != 2 ||
		o.latencies[1] != 20*time.Millisecond || !o.skip["gobench"] || len(o.clients) != 4 {
		t.Errorf("quick options: %+v", o)
	}
	if got := o.threadsFor(64); got != 16 {
		t.Errorf("threadsFor(64) = %d", got)
	}
	if got := o.webhooksFor(1); got != 40 {
		t.Errorf("webhooksFor(1) = %d", got)
	}
	for _, bad := range [][]string{{"-clients", "go,python"}, {"-skip", "everything"}, {"-callers", "x"}, {"extra"}} {
		if _, err := parseFlags(bad, &stderr); err == nil {
			t.Errorf("parseFlags(%q) accepted", bad)
		}
	}
}

func TestParseBench(t *testing.T) {
	out := `goos: linux
BenchmarkMemory/Do-2         	   10000	     22399 ns/op	    5526 B/op	      60 allocs/op
BenchmarkMemoryGet1MB-2      	     100	  12974130 ns/op	  80.82 MB/s	 4148927 B/op	      65 allocs/op
BenchmarkPlain               	 1000000	      1.5 ns/op
BenchmarkAutoPipeline/latency=5ms/callers=64/auto=true-2 	     100	   1612826 ns/op	         3.000 new-conns	         0.2500 requests/op	  324495 B/op	    3621 allocs/op
PASS
`
	recs := parseBench(strings.NewReader(out))
	if len(recs) != 4 {
		t.Fatalf("%d records: %+v", len(recs), recs)
	}
	if r := recs[0]; r.Name != "BenchmarkMemory/Do" || r.NsPerOp != 22399 || *r.BytesPerOp != 5526 || *r.AllocsPerOp != 60 {
		t.Errorf("record 0: %+v", r)
	}
	if r := recs[3]; r.Name != "BenchmarkAutoPipeline/latency=5ms/callers=64/auto=true" || *r.AllocsPerOp != 3621 ||
		r.Metrics["new-conns"] != 3 || r.Metrics["requests/op"] != 0.25 || r.otherMetrics() != "3 new-conns, 0.25 requests/op" {
		t.Errorf("record 3: %+v", r)
	}
	if r := recs[1]; r.MBPerS == nil || *r.MBPerS != 80.82 || *r.AllocsPerOp != 65 {
		t.Errorf("record 1: %+v", r)
	}
	if r := recs[2]; r.NsPerOp != 1.5 || r.BytesPerOp != nil || r.AllocsPerOp != nil {
		t.Errorf("record 2: %+v", r)
	}
}
