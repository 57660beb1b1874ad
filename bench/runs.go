package main

import (
	"bufio"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/chatstate/upstash/internal/testtool"
)

// runReply is what a driver answers to "run": flow.Result plus the
// driver's own CPU time (and, for Go, its allocations) during the run.
type runReply struct {
	Webhooks    int     `json:"webhooks"`
	Seconds     float64 `json:"seconds"`
	Handled     int     `json:"handled"`
	Drained     int     `json:"drained"`
	Queued      int     `json:"queued"`
	Duplicates  int     `json:"duplicates"`
	Errors      int     `json:"errors"`
	FirstError  string  `json:"first_error"`
	Ops         int64   `json:"ops"`
	LatenciesUS []int64 `json:"latencies_us"`
	CPUUserMS   float64 `json:"cpu_user_ms"`
	CPUSysMS    float64 `json:"cpu_sys_ms"`
	Allocs      uint64  `json:"allocs"`
	// go-chatflow only: state calls by outcome, messages handed twice.
	Calls       map[string]int64 `json:"calls_by_outcome"`
	HandedTwice *int             `json:"handed_twice"`
}

// sample is one measured run of one configuration.
type sample struct {
	rep      int
	res      runReply
	seen     counters // what the server saw during the run
	stranded int      // entries left in the queues after the run
	locked   int      // locks still held after the run
	rss      int64    // the driver's peak RSS, bytes
}

func (s sample) perSecond() float64 {
	if s.res.Seconds <= 0 {
		return 0
	}
	return float64(s.res.Webhooks) / s.res.Seconds
}

// config identifies a throughput configuration.
type config struct {
	client  string
	latency time.Duration
	callers int
}

// runThroughput runs every configuration o.reps times, interleaved: each
// repetition runs every client once per latency and caller count, the
// clients' order alternating between repetitions.
func runThroughput(o *options, srv *benchServer, l *launcher, rep *report, log logf) error {
	unavailable := map[string]string{}
	if l.node == "" {
		unavailable[clientNode] = rep.NodeUnavailable
	}
	samples := map[config][]sample{}
	for r := 0; r < o.reps; r++ {
		for _, lat := range o.latencies {
			for _, c := range o.callers {
				order := append([]string(nil), o.clients...)
				if r%2 == 1 {
					for i, j := 0, len(order)-1; i < j; i, j = i+1, j-1 {
						order[i], order[j] = order[j], order[i]
					}
				}
				for _, client := range order {
					if _, ok := unavailable[client]; ok {
						continue
					}
					s, err := throughputRun(o, srv, l, client, lat, c)
					var ue *errUnavailable
					if errors.As(err, &ue) {
						unavailable[client] = ue.reason
						log("%s: unavailable: %s", client, ue.reason)
						continue
					}
					if err != nil {
						return fmt.Errorf("%s, %v latency, %d callers: %w", client, lat, c, err)
					}
					s.rep = r
					cfg := config{client, lat, c}
					samples[cfg] = append(samples[cfg], s)
					log("run %d/%d %-11s latency %-4v callers %-3d %7.1f webhooks/s, %.2f requests/webhook, %d new connections",
						r+1, o.reps, client, lat, c, s.perSecond(), float64(s.seen.requests)/float64(max(s.res.Webhooks, 1)), s.seen.conns)
				}
			}
		}
	}
	for _, lat := range o.latencies {
		for _, c := range o.callers {
			node := samples[config{clientNode, lat, c}]
			for _, client := range o.clients {
				cfg := config{client, lat, c}
				t := throughputRecord{Kind: "throughput", Client: client, Callers: c, LatencyMS: lat.Milliseconds(),
					Threads: o.threadsFor(c), WebhooksPerRun: o.webhooksFor(c)}
				if reason, ok := unavailable[client]; ok && len(samples[cfg]) == 0 {
					t.Reason = reason
				} else {
					t.fill(samples[cfg], node)
				}
				rep.Throughput = append(rep.Throughput, t)
			}
		}
	}
	return nil
}

// throughputRun measures one run: a fresh Redis and driver, a warm-up,
// then N webhooks with c callers.
func throughputRun(o *options, srv *benchServer, l *launcher, client string, lat time.Duration, c int) (sample, error) {
	threads := o.threadsFor(c)
	if err := srv.reset(lat); err != nil {
		return sample{}, err
	}
	if err := srv.subscribe(threads); err != nil {
		return sample{}, err
	}
	d, err := l.spawn(client)
	if err != nil {
		return sample{}, err
	}
	defer d.close()
	var ok struct{ OK bool }
	if err := d.call(time.Minute, &ok, "warmup"); err != nil {
		return sample{}, err
	}
	before := srv.counters()
	var res runReply
	if err := d.call(o.runTimeout, &res, "run %d %d %d", o.webhooksFor(c), c, threads); err != nil {
		return sample{}, err
	}
	seen := srv.counters().sub(before)
	left, locked, err := srv.leftover(threads)
	if err != nil {
		return sample{}, err
	}
	return sample{res: res, seen: seen, stranded: left, locked: locked, rss: d.close()}, nil
}

// runProfiles measures, for each client, the requests of single webhooks
// in one invocation with no contention: a handled one, a duplicate, one
// queued behind a lock held elsewhere, and one handled that drains it.
func runProfiles(o *options, srv *benchServer, l *launcher, rep *report, log logf) error {
	for _, client := range o.clients {
		p := profileRecord{Kind: "profile", Client: client}
		if client == clientNode && l.node == "" {
			p.Reason = rep.NodeUnavailable
			rep.Profiles = append(rep.Profiles, p)
			continue
		}
		err := profile(srv, l, client, &p)
		var ue *errUnavailable
		switch {
		case errors.As(err, &ue):
			p.Reason = ue.reason
		case err != nil:
			return fmt.Errorf("profile of %s: %w", client, err)
		default:
			p.Available = true
			log("profile %-11s handled %v, queued %v, duplicate %v, drained %v requests",
				client, *p.Handled, *p.Queued, *p.Duplicate, *p.Drained)
		}
		rep.Profiles = append(rep.Profiles, p)
	}
	return nil
}

func profile(srv *benchServer, l *launcher, client string, p *profileRecord) error {
	if err := srv.reset(0); err != nil {
		return err
	}
	d, err := l.spawn(client)
	if err != nil {
		return err
	}
	defer d.close()
	var ok struct{ OK bool }
	if err := d.call(time.Minute, &ok, "warmup"); err != nil {
		return err
	}
	type outcome struct {
		Status       string `json:"status"`
		Drained      int    `json:"drained"`
		Calls        int    `json:"calls"`
		HandlerCalls int    `json:"handler_calls"`
	}
	var last outcome
	step := func(msg, thread string, seq int, want string, wantDrained int) (float64, error) {
		before := srv.counters()
		var out outcome
		if err := d.call(time.Minute, &out, "handle %s %s %d", msg, thread, seq); err != nil {
			return 0, err
		}
		if out.Status != want || out.Drained != wantDrained {
			return 0, fmt.Errorf("webhook %s: got %+v, want status %s with %d drained", msg, out, want, wantDrained)
		}
		requests := srv.counters().sub(before).requests
		// A driver that counts its state calls (go-chatflow): alone and
		// in sequence, each call is one request.
		if out.Calls != 0 && int64(out.Calls) != requests {
			return 0, fmt.Errorf("webhook %s: %d state calls counted by the driver, %d requests by the server", msg, out.Calls, requests)
		}
		last = out
		return float64(requests), nil
	}
	handled, err := step("p1", "bench:P1", 1, "handled", 0)
	if err != nil {
		return err
	}
	if client == clientGoChatflow {
		p.HandlerRequests = ptr(float64(last.HandlerCalls))
	}
	dup, err := step("p1", "bench:P1", 1, "duplicate", 0)
	if err != nil {
		return err
	}
	// A lock held by another process: the webhook queues.
	if _, err := srv.srv.Do("SET", "chat-sdk:lock:bench:P2", "held-elsewhere", "PX", 60000); err != nil {
		return err
	}
	queued, err := step("p2", "bench:P2", 2, "queued", 0)
	if err != nil {
		return err
	}
	if _, err := srv.srv.Do("DEL", "chat-sdk:lock:bench:P2"); err != nil {
		return err
	}
	both, err := step("p3", "bench:P2", 3, "handled", 1)
	if err != nil {
		return err
	}
	drained := both - handled
	p.Handled, p.Duplicate, p.Queued, p.Drained = &handled, &dup, &queued, &drained
	return nil
}

// runColdStarts starts each client's driver in coldstart mode
// o.coldRuns times, alternating, and measures the time from starting the
// process to the line saying the lock is held, and the peak RSS.
func runColdStarts(o *options, srv *benchServer, l *launcher, rep *report, log logf) error {
	if err := srv.reset(0); err != nil {
		return err
	}
	clients := []string{"go", clientNode}
	if l.node == "" {
		clients = clients[:1]
	}
	wall := map[string][]float64{}
	rss := map[string][]float64{}
	for i := 0; i < o.coldRuns; i++ {
		order := clients
		if i%2 == 1 && len(clients) == 2 {
			order = []string{clients[1], clients[0]}
		}
		for _, client := range order {
			ms, bytes, err := coldStart(l, client, fmt.Sprintf("bench:cold:%s:%d", client, i))
			if err != nil {
				return fmt.Errorf("cold start of %s: %w", client, err)
			}
			wall[client] = append(wall[client], ms)
			rss[client] = append(rss[client], float64(bytes)/(1<<20))
		}
	}
	for _, client := range clients {
		w := wall[client]
		c := coldRecord{Kind: "coldstart", Client: client, Runs: len(w),
			WallMS: median(w), WallMSMin: minOf(w), WallMSMax: maxOf(w), PeakRSSMB: median(rss[client])}
		rep.ColdStarts = append(rep.ColdStarts, c)
		log("cold start %-4s %.1f ms, %.1f MB peak RSS (median of %d)", client, c.WallMS, c.PeakRSSMB, c.Runs)
	}
	return nil
}

func coldStart(l *launcher, client, thread string) (float64, int64, error) {
	cmd, err := l.command(client, "coldstart", thread)
	if err != nil {
		return 0, 0, err
	}
	d := &driver{client: client, cmd: cmd, lines: make(chan string, 4), stderr: &testtool.SyncBuffer{}}
	cmd.Stderr = d.stderr
	if d.stdin, err = cmd.StdinPipe(); err != nil {
		return 0, 0, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return 0, 0, err
	}
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return 0, 0, err
	}
	var elapsed time.Duration
	var rss int64
	sc := bufio.NewScanner(stdout)
	for sc.Scan() {
		if strings.TrimSpace(sc.Text()) == `{"event":"locked"}` {
			elapsed = time.Since(start)
			// The driver waits for EOF on stdin before it exits, so its
			// peak RSS can be read now.
			rss = peakRSS(cmd.Process.Pid)
			break
		}
	}
	_ = d.stdin.Close()
	for sc.Scan() { // drain until exit
	}
	if err := d.wait(); err != nil {
		return 0, 0, fmt.Errorf("%v: %s", err, d.stderrText())
	}
	if elapsed == 0 {
		return 0, 0, fmt.Errorf("no lock acquired: %s", d.stderrText())
	}
	return float64(elapsed.Microseconds()) / 1000, rss, nil
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := append([]float64(nil), v...)
	sort.Float64s(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func minOf(v []float64) float64 {
	m := 0.0
	for i, x := range v {
		if i == 0 || x < m {
			m = x
		}
	}
	return m
}

func maxOf(v []float64) float64 {
	m := 0.0
	for i, x := range v {
		if i == 0 || x > m {
			m = x
		}
	}
	return m
}
