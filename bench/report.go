package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"os/exec"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/chatstate/upstash/bench/internal/flow"
)

// report collects every measurement of one harness run.
type report struct {
	Machine         machineRecord
	NodeUnavailable string
	Throughput      []throughputRecord
	Profiles        []profileRecord
	ColdStarts      []coldRecord
	Sizes           []sizeRecord
	GoBench         []benchRecord
	GoBenchError    string
}

// machineRecord describes where the numbers were measured.
type machineRecord struct {
	Kind         string `json:"kind"` // "machine"
	CPUs         int    `json:"cpus"`
	CPUModel     string `json:"cpu_model"`
	OS           string `json:"os"`
	GoVersion    string `json:"go_version"`
	NodeVersion  string `json:"node_version"`
	RedisVersion string `json:"redis_version"`
	// /proc/loadavg's 1-minute figure when the run started and ended: other
	// work on the machine competes with the clients.
	LoadStart float64 `json:"load_start"`
	LoadEnd   float64 `json:"load_end"`
}

// loadAverage returns the 1-minute load average, or 0 when unknown.
func loadAverage() float64 {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return 0
	}
	v, _ := strconv.ParseFloat(f[0], 64)
	return v
}

// throughputRecord is one configuration of the throughput runs. Metrics
// are null for an unavailable configuration.
type throughputRecord struct {
	Kind           string `json:"kind"` // "throughput"
	Client         string `json:"client"`
	Callers        int    `json:"callers"`
	LatencyMS      int64  `json:"latency_ms"`
	Available      bool   `json:"available"`
	Reason         string `json:"reason,omitempty"`
	Threads        int    `json:"threads"`
	WebhooksPerRun int    `json:"webhooks_per_run"`
	Runs           int    `json:"runs"`
	// Median over runs.
	WebhooksPerS *float64 `json:"webhooks_per_s"`
	// Over every webhook of every run.
	P50MS *float64 `json:"p50_ms"`
	P99MS *float64 `json:"p99_ms"`
	// HTTP requests the server received, over the webhooks.
	RequestsPerWebhook *float64 `json:"requests_per_webhook"`
	// Accepted TCP connections during a run after the warm-up: the most in
	// any run.
	NewConnections *int64 `json:"new_connections"`
	// The driver's CPU time (user+system) over webhooks and state
	// operations, its state operations per webhook, and (Go) its heap
	// allocations per state operation, network included.
	CPUMSPerWebhook *float64 `json:"cpu_ms_per_webhook"`
	CPUUSPerOp      *float64 `json:"cpu_us_per_op"`
	OpsPerWebhook   *float64 `json:"ops_per_webhook"`
	AllocsPerOp     *float64 `json:"allocs_per_op,omitempty"`
	PeakRSSMB       *float64 `json:"peak_rss_mb"`
	// Median over runs of this client's webhooks per second over Node's in
	// the same repetition.
	VsNode *float64 `json:"vs_node,omitempty"`
	// Totals over the runs.
	Handled    int    `json:"handled"`
	Drained    int    `json:"drained"`
	Queued     int    `json:"queued"`
	Duplicates int    `json:"duplicates"`
	Stranded   int    `json:"stranded"`
	LocksLeft  int    `json:"locks_left"`
	Errors     int    `json:"errors"`
	FirstError string `json:"first_error,omitempty"`
	// go-chatflow only: its state calls per webhook by outcome over the
	// runs, counted by the driver (a handled webhook's drain included; each
	// call is one HTTP request when alone, fewer when auto-pipelining
	// merges concurrent ones), and the messages its handler got more than
	// once.
	CallsPerHandled   *float64 `json:"calls_per_handled,omitempty"`
	CallsPerQueued    *float64 `json:"calls_per_queued,omitempty"`
	CallsPerDuplicate *float64 `json:"calls_per_duplicate,omitempty"`
	// The handled webhooks' calls over the messages they handed to the
	// handler (their own and the drained ones).
	CallsPerMessage *float64 `json:"calls_per_message_handled,omitempty"`
	// Every webhook's calls over the HTTP requests the server received:
	// how many calls auto-pipelining put in one request, on average.
	CallsPerRequest *float64 `json:"calls_per_request,omitempty"`
	HandedTwice     *int     `json:"handed_twice,omitempty"`
}

// callsPer prints calls per webhook of an outcome, "n/a" when the runs had
// no webhook with that outcome (older result files hold 0 there).
func (t throughputRecord) callsPer(v *float64, webhooks int) string {
	if webhooks == 0 {
		return "n/a"
	}
	return fmtPtr(v, "%.2f")
}

// dropped is the queued messages neither drained nor left in a queue: the
// ones the 10-entry queue cap pushed out.
func (t throughputRecord) dropped() int { return t.Queued - t.Drained - t.Stranded }

func ptr[T any](v T) *T { return &v }

func round(v float64, digits int) float64 {
	p := math.Pow(10, float64(digits))
	return math.Round(v*p) / p
}

// fill computes the metrics from the samples of one configuration and
// Node's samples of the same latency and callers.
func (t *throughputRecord) fill(s, node []sample) {
	if len(s) == 0 {
		return
	}
	t.Available = true
	t.Runs = len(s)
	var (
		wps, ratios                    []float64
		latUS                          []int64
		webhooks, ops, requests, conns int64
		cpu, allocs, rss               float64
		calls                          = map[string]int64{}
		counted                        bool
	)
	for _, x := range s {
		wps = append(wps, x.perSecond())
		latUS = append(latUS, x.res.LatenciesUS...)
		webhooks += int64(x.res.Webhooks)
		ops += x.res.Ops
		requests += x.seen.requests
		conns = max(conns, x.seen.conns)
		cpu += x.res.CPUUserMS + x.res.CPUSysMS
		allocs += float64(x.res.Allocs)
		rss = max(rss, float64(x.rss)/(1<<20))
		t.Handled += x.res.Handled
		t.Drained += x.res.Drained
		t.Queued += x.res.Queued
		t.Duplicates += x.res.Duplicates
		t.Stranded += x.stranded
		t.LocksLeft += x.locked
		t.Errors += x.res.Errors
		for k, v := range x.res.Calls {
			calls[k] += v
			counted = true
		}
		if x.res.HandedTwice != nil {
			if t.HandedTwice == nil {
				t.HandedTwice = new(int)
			}
			*t.HandedTwice += *x.res.HandedTwice
		}
		if t.FirstError == "" {
			t.FirstError = x.res.FirstError
		}
		for _, n := range node {
			if n.rep == x.rep && n.perSecond() > 0 {
				ratios = append(ratios, x.perSecond()/n.perSecond())
			}
		}
	}
	w := float64(max(webhooks, 1))
	t.WebhooksPerS = ptr(round(median(wps), 1))
	t.P50MS = ptr(round(float64(flow.Percentile(latUS, 50))/1000, 1))
	t.P99MS = ptr(round(float64(flow.Percentile(latUS, 99))/1000, 1))
	t.RequestsPerWebhook = ptr(round(float64(requests)/w, 2))
	t.NewConnections = ptr(conns)
	t.CPUMSPerWebhook = ptr(round(cpu/w, 3))
	t.OpsPerWebhook = ptr(round(float64(ops)/w, 2))
	if ops > 0 {
		t.CPUUSPerOp = ptr(round(cpu*1000/float64(ops), 1))
		if allocs > 0 {
			t.AllocsPerOp = ptr(round(allocs/float64(ops), 1))
		}
	}
	t.PeakRSSMB = ptr(round(rss, 1))
	if t.Client != clientNode && len(ratios) > 0 {
		t.VsNode = ptr(round(median(ratios), 2))
	}
	if counted {
		per := func(status string, n int) *float64 {
			if n == 0 {
				return nil // no such webhook in the runs
			}
			return ptr(round(float64(calls[status])/float64(n), 2))
		}
		t.CallsPerHandled = per(string(flow.Handled), t.Handled)
		t.CallsPerQueued = per(string(flow.Queued), t.Queued)
		t.CallsPerDuplicate = per(string(flow.Duplicate), t.Duplicates)
		t.CallsPerMessage = per(string(flow.Handled), t.Handled+t.Drained)
		total := int64(0)
		for _, v := range calls {
			total += v
		}
		t.CallsPerRequest = ptr(round(float64(total)/float64(max(requests, 1)), 2))
	}
}

// profileRecord counts the HTTP requests of single webhooks in one
// invocation, without contention. Null when unavailable.
type profileRecord struct {
	Kind      string   `json:"kind"` // "profile"
	Client    string   `json:"client"`
	Available bool     `json:"available"`
	Reason    string   `json:"reason,omitempty"`
	Handled   *float64 `json:"handled"`   // a handled webhook, empty queue
	Duplicate *float64 `json:"duplicate"` // a second delivery
	Queued    *float64 `json:"queued"`    // the lock held elsewhere
	Drained   *float64 `json:"drained"`   // one queued message taken by the holder
	// The handler's own requests within Handled (go-chatflow: the bot's
	// work, the rest being chatflow's); null for the other clients.
	HandlerRequests *float64 `json:"handler_requests,omitempty"`
}

// flowOwn is the requests of a handled webhook without the bot handler's
// own, "n/a" where the client has no separate handler.
func (p profileRecord) flowOwn() string {
	if p.HandlerRequests == nil {
		return "n/a"
	}
	return fmt.Sprintf("%.0f + %.0f", *p.Handled-*p.HandlerRequests, *p.HandlerRequests)
}

// coldRecord is the cold start of one client: process start to first lock
// acquired.
type coldRecord struct {
	Kind      string  `json:"kind"` // "coldstart"
	Client    string  `json:"client"`
	Runs      int     `json:"runs"`
	WallMS    float64 `json:"wall_ms"` // median
	WallMSMin float64 `json:"wall_ms_min"`
	WallMSMax float64 `json:"wall_ms_max"`
	PeakRSSMB float64 `json:"peak_rss_mb"` // median of VmHWM while the lock is held
}

// sizeRecord is the size of a build artifact.
type sizeRecord struct {
	Kind       string `json:"kind"` // "size"
	Name       string `json:"name"`
	Command    string `json:"command"`
	Source     string `json:"source"`
	Bytes      int64  `json:"bytes"`
	Compressed int64  `json:"compressed_bytes"`
	Packing    string `json:"compressed_as"`
	Error      string `json:"error,omitempty"`
}

// benchRecord is one line of go test -bench -benchmem.
type benchRecord struct {
	Kind        string   `json:"kind"` // "gobench"
	Name        string   `json:"name"`
	NsPerOp     float64  `json:"ns_per_op"`
	BytesPerOp  *int64   `json:"bytes_per_op"`
	AllocsPerOp *int64   `json:"allocs_per_op"`
	MBPerS      *float64 `json:"mb_per_s,omitempty"`
	// Metrics holds the benchmark's own metrics (b.ReportMetric), by unit:
	// "requests/op" and "new-conns" in BenchmarkAutoPipeline.
	Metrics map[string]float64 `json:"metrics,omitempty"`
}

// otherMetrics prints b.Metrics as "1.23 unit, …" in unit order, or "".
func (b benchRecord) otherMetrics() string {
	units := make([]string, 0, len(b.Metrics))
	for u := range b.Metrics {
		units = append(units, u)
	}
	sort.Strings(units)
	parts := make([]string, len(units))
	for i, u := range units {
		parts[i] = strconv.FormatFloat(b.Metrics[u], 'f', -1, 64) + " " + u
	}
	return strings.Join(parts, ", ")
}

type errorRecord struct {
	Kind  string `json:"kind"` // "error"
	Part  string `json:"part"`
	Error string `json:"error"`
}

// readReport reads the JSON lines of a -json run back.
func readReport(path string) (*report, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	rep := &report{}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64*1024), 16*1024*1024)
	for n := 1; sc.Scan(); n++ {
		line := bytes.TrimSpace(sc.Bytes())
		if len(line) == 0 {
			continue
		}
		var k struct{ Kind, Part, Error string }
		if err := json.Unmarshal(line, &k); err != nil {
			return nil, fmt.Errorf("%s:%d: %w", path, n, err)
		}
		var target any
		switch k.Kind {
		case "machine":
			target = &rep.Machine
		case "throughput":
			target = appendZero(&rep.Throughput)
		case "profile":
			target = appendZero(&rep.Profiles)
		case "coldstart":
			target = appendZero(&rep.ColdStarts)
		case "size":
			target = appendZero(&rep.Sizes)
		case "gobench":
			target = appendZero(&rep.GoBench)
		case "error":
			if k.Part == "gobench" {
				rep.GoBenchError = k.Error
			}
			continue
		default:
			return nil, fmt.Errorf("%s:%d: unknown kind %q", path, n, k.Kind)
		}
		if err := json.Unmarshal(line, target); err != nil {
			return nil, fmt.Errorf("%s:%d: %w", path, n, err)
		}
	}
	return rep, sc.Err()
}

// records returns every record in output order.
func (r *report) records() []any {
	out := []any{r.Machine}
	for _, t := range r.Throughput {
		out = append(out, t)
	}
	for _, p := range r.Profiles {
		out = append(out, p)
	}
	for _, c := range r.ColdStarts {
		out = append(out, c)
	}
	for _, s := range r.Sizes {
		out = append(out, s)
	}
	for _, b := range r.GoBench {
		out = append(out, b)
	}
	if r.GoBenchError != "" {
		out = append(out, errorRecord{Kind: "error", Part: "gobench", Error: r.GoBenchError})
	}
	return out
}

// fmtInt prints *v, or "n/a" for nil.
func fmtInt(v *int) string {
	if v == nil {
		return "n/a"
	}
	return strconv.Itoa(*v)
}

// hasCalls reports whether a throughput record has state calls by outcome.
func (r *report) hasCalls() bool {
	for _, t := range r.Throughput {
		if t.CallsPerRequest != nil {
			return true
		}
	}
	return false
}

func fmtPtr(v *float64, format string) string {
	if v == nil {
		return "n/a"
	}
	return fmt.Sprintf(format, *v)
}

// writeText prints the report as tables.
func (r *report) writeText(w io.Writer) {
	m := r.Machine
	fmt.Fprintf(w, "Machine: %d CPUs (%s), %s, Go %s, Node %s, redis-server %s; load average %.1f at the start, %.1f at the end\n",
		m.CPUs, m.CPUModel, m.OS, m.GoVersion, m.NodeVersion, m.RedisVersion, m.LoadStart, m.LoadEnd)
	if r.NodeUnavailable != "" {
		fmt.Fprintf(w, "Node: unavailable (%s)\n", r.NodeUnavailable)
	}
	if len(r.Throughput) > 0 {
		fmt.Fprintln(w, "\nWebhook flow, interleaved runs (requests and connections counted by the server; CPU of the client process):")
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintln(tw, "latency\tcallers\tclient\twebhooks/s\tvs node\tp50 ms\tp99 ms\treq/webhook\tnew conns\tCPU µs/op\tallocs/op\truns\t")
		for _, t := range r.Throughput {
			if !t.Available {
				fmt.Fprintf(tw, "%d ms\t%d\t%s\tunavailable\t\t\t\t\t\t\t\t\t\n", t.LatencyMS, t.Callers, t.Client)
				continue
			}
			fmt.Fprintf(tw, "%d ms\t%d\t%s\t%s\t%s\t%s\t%s\t%s\t%d\t%s\t%s\t%d\t\n", t.LatencyMS, t.Callers, t.Client,
				fmtPtr(t.WebhooksPerS, "%.1f"), fmtPtr(t.VsNode, "%.2fx"), fmtPtr(t.P50MS, "%.1f"), fmtPtr(t.P99MS, "%.1f"),
				fmtPtr(t.RequestsPerWebhook, "%.2f"), *t.NewConnections, fmtPtr(t.CPUUSPerOp, "%.1f"), fmtPtr(t.AllocsPerOp, "%.0f"), t.Runs)
		}
		tw.Flush()
		for _, t := range r.Throughput {
			if !t.Available && t.Reason != "" {
				fmt.Fprintf(w, "%s: %s\n", t.Client, t.Reason)
				break
			}
		}
		for _, t := range r.Throughput {
			if t.Errors > 0 {
				fmt.Fprintf(w, "%s at %d ms, %d callers: %d errors, first: %s\n", t.Client, t.LatencyMS, t.Callers, t.Errors, t.FirstError)
			}
		}
		fmt.Fprintln(w, "\nWhat became of the webhooks, totals over the runs (dropped: pushed out by the 10-entry queue cap):")
		tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintln(tw, "latency\tcallers\tclient\thandled\tqueued\tduplicate\tdrained\tdropped\tstranded\tlocks left\thanded twice\terrors\t")
		for _, t := range r.Throughput {
			if t.Available {
				fmt.Fprintf(tw, "%d ms\t%d\t%s\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%s\t%d\t\n", t.LatencyMS, t.Callers, t.Client,
					t.Handled, t.Queued, t.Duplicates, t.Drained, t.dropped(), t.Stranded, t.LocksLeft, fmtInt(t.HandedTwice), t.Errors)
			}
		}
		tw.Flush()
		if r.hasCalls() {
			fmt.Fprintln(w, "\nState calls per webhook by outcome, counted by the driver (a handled webhook's drain included):")
			tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
			fmt.Fprintln(tw, "latency\tcallers\tclient\tper handled\tper message it handed over\tper queued\tper duplicate\tcalls per HTTP request\tHTTP requests per webhook\t")
			for _, t := range r.Throughput {
				if t.CallsPerRequest != nil {
					fmt.Fprintf(tw, "%d ms\t%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t\n", t.LatencyMS, t.Callers, t.Client, t.callsPer(t.CallsPerHandled, t.Handled),
						fmtPtr(t.CallsPerMessage, "%.2f"), t.callsPer(t.CallsPerQueued, t.Queued), t.callsPer(t.CallsPerDuplicate, t.Duplicates),
						fmtPtr(t.CallsPerRequest, "%.2f"), fmtPtr(t.RequestsPerWebhook, "%.2f"))
				}
			}
			tw.Flush()
		}
	}
	if len(r.Profiles) > 0 {
		fmt.Fprintln(w, "\nHTTP requests per webhook, one invocation, no contention:")
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintln(tw, "client\thandled\tqueued\tduplicate\tper drained message\thandled: flow + handler\t")
		for _, p := range r.Profiles {
			if !p.Available {
				fmt.Fprintf(tw, "%s\tunavailable\t\t\t\t\t\n", p.Client)
				continue
			}
			fmt.Fprintf(tw, "%s\t%.0f\t%.0f\t%.0f\t%.0f\t%s\t\n", p.Client, *p.Handled, *p.Queued, *p.Duplicate, *p.Drained, p.flowOwn())
		}
		tw.Flush()
	}
	if len(r.ColdStarts) > 0 {
		fmt.Fprintln(w, "\nCold start, process start to first lock acquired (median):")
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintln(tw, "client\twall ms\tmin\tmax\tpeak RSS MB\truns\t")
		for _, c := range r.ColdStarts {
			fmt.Fprintf(tw, "%s\t%.1f\t%.1f\t%.1f\t%.1f\t%d\t\n", c.Client, c.WallMS, c.WallMSMin, c.WallMSMax, c.PeakRSSMB, c.Runs)
		}
		tw.Flush()
	}
	if len(r.Sizes) > 0 {
		fmt.Fprintln(w, "\nBuild sizes:")
		for _, s := range r.Sizes {
			if s.Error != "" {
				fmt.Fprintf(w, "  %s: failed: %s\n", s.Name, s.Error)
				continue
			}
			fmt.Fprintf(w, "  %s: %.2f MB (%.2f MB %s) from %s\n    %s\n", s.Name, float64(s.Bytes)/(1<<20), float64(s.Compressed)/(1<<20), s.Packing, s.Source, s.Command)
		}
	}
	if len(r.GoBench) > 0 || r.GoBenchError != "" {
		fmt.Fprintln(w, "\ngo test -bench . -benchmem (root package):")
		if r.GoBenchError != "" {
			fmt.Fprintf(w, "  failed: %s\n", r.GoBenchError)
		}
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintln(tw, "benchmark\tns/op\tB/op\tallocs/op\tother\t")
		for _, b := range r.GoBench {
			bs, as := "n/a", "n/a"
			if b.BytesPerOp != nil {
				bs = fmt.Sprint(*b.BytesPerOp)
			}
			if b.AllocsPerOp != nil {
				as = fmt.Sprint(*b.AllocsPerOp)
			}
			fmt.Fprintf(tw, "%s\t%.0f\t%s\t%s\t%s\t\n", b.Name, b.NsPerOp, bs, as, b.otherMetrics())
		}
		tw.Flush()
	}
}

// writeMarkdown prints the report as the Markdown tables of BENCHMARKS.md.
func (r *report) writeMarkdown(w io.Writer) {
	m := r.Machine
	fmt.Fprintf(w, "| machine | |\n|---|---|\n| CPUs (nproc) | %d |\n| CPU model | %s |\n| OS | %s |\n| Go | %s |\n| Node | %s |\n| redis-server | %s |\n| load average (1 min) at start / end | %.1f / %.1f |\n",
		m.CPUs, m.CPUModel, m.OS, m.GoVersion, m.NodeVersion, m.RedisVersion, m.LoadStart, m.LoadEnd)
	if len(r.Throughput) > 0 {
		fmt.Fprintln(w, "\n| latency | callers | client | webhooks/s | vs node | p50 ms | p99 ms | requests/webhook | new connections | CPU µs/op | allocs/op | runs |")
		fmt.Fprintln(w, "|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
		for _, t := range r.Throughput {
			if !t.Available {
				fmt.Fprintf(w, "| %d ms | %d | %s | unavailable | | | | | | | | |\n", t.LatencyMS, t.Callers, t.Client)
				continue
			}
			fmt.Fprintf(w, "| %d ms | %d | %s | %s | %s | %s | %s | %s | %d | %s | %s | %d |\n", t.LatencyMS, t.Callers, t.Client,
				fmtPtr(t.WebhooksPerS, "%.1f"), fmtPtr(t.VsNode, "%.2fx"), fmtPtr(t.P50MS, "%.1f"), fmtPtr(t.P99MS, "%.1f"),
				fmtPtr(t.RequestsPerWebhook, "%.2f"), *t.NewConnections, fmtPtr(t.CPUUSPerOp, "%.1f"), fmtPtr(t.AllocsPerOp, "%.0f"), t.Runs)
		}
		fmt.Fprintln(w, "\n| latency | callers | client | handled | queued | duplicate | drained | dropped (queue cap) | stranded | locks left | handed twice | errors |")
		fmt.Fprintln(w, "|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
		for _, t := range r.Throughput {
			if t.Available {
				fmt.Fprintf(w, "| %d ms | %d | %s | %d | %d | %d | %d | %d | %d | %d | %s | %d |\n", t.LatencyMS, t.Callers, t.Client,
					t.Handled, t.Queued, t.Duplicates, t.Drained, t.dropped(), t.Stranded, t.LocksLeft, fmtInt(t.HandedTwice), t.Errors)
			}
		}
		if r.hasCalls() {
			fmt.Fprintln(w, "\n| latency | callers | client | state calls per handled webhook (its drain included) | per message it handed over | per queued | per duplicate | calls per HTTP request | HTTP requests per webhook |")
			fmt.Fprintln(w, "|---:|---:|---|---:|---:|---:|---:|---:|---:|")
			for _, t := range r.Throughput {
				if t.CallsPerRequest != nil {
					fmt.Fprintf(w, "| %d ms | %d | %s | %s | %s | %s | %s | %s | %s |\n", t.LatencyMS, t.Callers, t.Client, t.callsPer(t.CallsPerHandled, t.Handled),
						fmtPtr(t.CallsPerMessage, "%.2f"), t.callsPer(t.CallsPerQueued, t.Queued), t.callsPer(t.CallsPerDuplicate, t.Duplicates),
						fmtPtr(t.CallsPerRequest, "%.2f"), fmtPtr(t.RequestsPerWebhook, "%.2f"))
				}
			}
		}
	}
	if len(r.Profiles) > 0 {
		fmt.Fprintln(w, "\n| client | handled | queued | duplicate | per drained message | handled: flow + bot handler |")
		fmt.Fprintln(w, "|---|---:|---:|---:|---:|---:|")
		for _, p := range r.Profiles {
			if !p.Available {
				fmt.Fprintf(w, "| %s | unavailable | | | | |\n", p.Client)
				continue
			}
			fmt.Fprintf(w, "| %s | %.0f | %.0f | %.0f | %.0f | %s |\n", p.Client, *p.Handled, *p.Queued, *p.Duplicate, *p.Drained, p.flowOwn())
		}
	}
	if len(r.ColdStarts) > 0 {
		fmt.Fprintln(w, "\n| client | wall ms (median) | min | max | peak RSS MB (median) | runs |")
		fmt.Fprintln(w, "|---|---:|---:|---:|---:|---:|")
		for _, c := range r.ColdStarts {
			fmt.Fprintf(w, "| %s | %.1f | %.1f | %.1f | %.1f | %d |\n", c.Client, c.WallMS, c.WallMSMin, c.WallMSMax, c.PeakRSSMB, c.Runs)
		}
	}
	if len(r.Sizes) > 0 {
		fmt.Fprintln(w, "\n| artifact | bytes | compressed | built from | command |")
		fmt.Fprintln(w, "|---|---:|---:|---|---|")
		for _, s := range r.Sizes {
			if s.Error != "" {
				fmt.Fprintf(w, "| %s | failed | | %s | `%s` |\n", s.Name, s.Source, s.Command)
				continue
			}
			fmt.Fprintf(w, "| %s | %d (%.2f MB) | %d (%.2f MB, %s) | %s | `%s` |\n", s.Name, s.Bytes, float64(s.Bytes)/(1<<20),
				s.Compressed, float64(s.Compressed)/(1<<20), s.Packing, s.Source, s.Command)
		}
	}
	if len(r.GoBench) > 0 {
		fmt.Fprintln(w, "\n| benchmark | ns/op | B/op | allocs/op | other |")
		fmt.Fprintln(w, "|---|---:|---:|---:|---|")
		for _, b := range r.GoBench {
			bs, as := "n/a", "n/a"
			if b.BytesPerOp != nil {
				bs = fmt.Sprint(*b.BytesPerOp)
			}
			if b.AllocsPerOp != nil {
				as = fmt.Sprint(*b.AllocsPerOp)
			}
			fmt.Fprintf(w, "| %s | %.0f | %s | %s | %s |\n", b.Name, b.NsPerOp, bs, as, b.otherMetrics())
		}
	}
	if r.GoBenchError != "" {
		fmt.Fprintf(w, "\ngo test -bench failed: %s\n", r.GoBenchError)
	}
}

// machineInfo describes this machine and the tools' versions.
func machineInfo(root string) machineRecord {
	m := machineRecord{Kind: "machine", CPUs: runtime.NumCPU(), OS: runtime.GOOS + "/" + runtime.GOARCH, LoadStart: loadAverage()}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPUModel = strings.TrimSpace(v)
				break
			}
		}
	}
	first := func(name string, args ...string) string {
		cmd := exec.Command(name, args...)
		cmd.Dir = root
		out, err := cmd.Output()
		if err != nil {
			return "unknown"
		}
		return strings.TrimSpace(strings.SplitN(string(out), "\n", 2)[0])
	}
	m.GoVersion = first("go", "env", "GOVERSION")
	m.NodeVersion = first("node", "--version")
	m.RedisVersion = first("redis-server", "--version")
	if f := strings.Fields(m.RedisVersion); len(f) >= 3 {
		m.RedisVersion = strings.TrimPrefix(f[2], "v=")
	}
	return m
}

// appendZero appends a zero element to *s and returns a pointer to it, for
// json.Unmarshal to fill.
func appendZero[T any](s *[]T) *T {
	*s = append(*s, *new(T))
	return &(*s)[len(*s)-1]
}
