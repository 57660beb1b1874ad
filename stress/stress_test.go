// Package stress_test runs the state layer under seeded faults: lock
// cycles on contended threads, queues with several producers and
// consumers, and dedupe with two racing deliveries of every message, all
// at once, against upstashtest servers that fail a share of the
// requests. A checker records what every worker did and asserts that the
// locks excluded each other and were fenced, that no busy answer came for
// a free lock, that no lock was stranded, that no queue entry or dedupe
// message was lost or handled twice, and that hardly any call ended in
// doubt. See README.md.
package stress_test

import (
	"context"
	"fmt"
	"os"
	"runtime/debug"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chatstate/upstash"
	"github.com/chatstate/upstash/internal/testtool"
	"github.com/chatstate/upstash/upstashtest"
)

// Environment variables that change a run. Without them, TestStress runs
// one round with the default seed and fault rate.
const (
	// envSoak, a duration (STRESS_SOAK=5m), repeats rounds with seeds
	// seed, seed+1, … until that much time has passed.
	envSoak = "STRESS_SOAK"
	// envSeed sets the first round's seed (default defaultSeed).
	envSeed = "STRESS_SEED"
	// envFaults sets the share of requests that get a fault (default
	// defaultFaultRate; the worst case was 0.6).
	envFaults = "STRESS_FAULTS"
	// envReport names a file the summary lines are appended to, besides
	// the test log.
	envReport = "STRESS_REPORT"
)

const (
	defaultSeed      = 1
	defaultFaultRate = 0.2
	// maxUnknownShare is the share of calls that may end in
	// ErrOutcomeUnknown (and, separately, in any other error).
	maxUnknownShare = 0.005
)

type settings struct {
	seed      int64
	faultRate float64
	soak      time.Duration
	report    string
}

func settingsFromEnv(t *testing.T) settings {
	s := settings{seed: defaultSeed, faultRate: defaultFaultRate, report: os.Getenv(envReport)}
	if v := os.Getenv(envSeed); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			t.Fatalf("%s=%q: %v", envSeed, v, err)
		}
		s.seed = n
	}
	if v := os.Getenv(envFaults); v != "" {
		f, err := strconv.ParseFloat(v, 64)
		if err != nil || f < 0 || f > 1 {
			t.Fatalf("%s=%q: want a share between 0 and 1", envFaults, v)
		}
		s.faultRate = f
	}
	if v := os.Getenv(envSoak); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			t.Fatalf("%s=%q: want a positive duration such as 5m", envSoak, v)
		}
		s.soak = d
	}
	return s
}

// TestStress runs one round of the workload (or, with STRESS_SOAK, rounds
// for that long) and checks it. The figures are logged one line per
// metric: go test -v ./stress shows them, and a failure prints them.
func TestStress(t *testing.T) {
	if os.Getenv(upstashtest.EnvRedis) == "redis-server" {
		testtool.RequireRedisServer(t)
	}
	cfg := settingsFromEnv(t)
	// The round is CPU-bound under -race, and a sixth of that was the
	// garbage collector's: collect less often while it runs.
	defer debug.SetGCPercent(debug.SetGCPercent(400))
	if cfg.soak == 0 {
		res := runRound(t, cfg, cfg.seed)
		res.judge(t, cfg)
		return
	}
	start := time.Now()
	var total result
	for i := int64(0); i == 0 || time.Since(start) < cfg.soak; i++ {
		seed := cfg.seed + i
		t.Run(fmt.Sprintf("seed=%d", seed), func(t *testing.T) {
			res := runRound(t, cfg, seed)
			res.judge(t, cfg)
			total.add(res)
		})
		if t.Failed() {
			break
		}
	}
	total.seed = cfg.seed
	total.elapsed = time.Since(start)
	logLines(t, cfg, append([]string{fmt.Sprintf("soak: %d rounds in %s, seeds %d to %d; totals:", total.rounds, total.elapsed.Round(time.Second), cfg.seed, cfg.seed+int64(total.rounds)-1)}, total.lines(cfg)[1:]...))
}

// runRound starts the round's servers with its seed and faults, runs every
// worker at once, and gathers the figures.
//
// Each workload has a server of its own (a database of its own): the
// workloads share no keys anyway, the fault figures come per workload, and
// on the embedded backend each request pays for an expiry pass over every
// key of its database (see README.md), which the lock workload, the
// longest, then does not pay for the queues' and dedupe's keys.
func runRound(t *testing.T, cfg settings, seed int64) result {
	locks, queues, dedupe := newServer(t, seed), newServer(t, seed), newServer(t, seed)
	backend := "redis-server"
	if locks.Embedded() {
		backend = "miniredis (embedded)"
	}
	t.Logf("seed %d, fault rate %g, backend %s", seed, cfg.faultRate, backend)
	r := newRound(t, seed, locks, queues, dedupe)
	servers := []*server{locks, queues, dedupe}
	defer func() {
		for _, srv := range servers {
			srv.Close()
		}
	}()

	ctx, cancel := context.WithTimeout(context.Background(), roundTimeout)
	defer cancel()
	r.cancel = cancel
	for _, srv := range servers {
		srv.SetFaultRate(cfg.faultRate)
	}
	start := time.Now()

	stopMonitor := make(chan struct{})
	var monitorDone sync.WaitGroup
	monitorDone.Add(1)
	go func() {
		defer monitorDone.Done()
		r.monitor(ctx, stopMonitor)
	}()

	// Each workload runs in a group of goroutines; the time each group
	// took goes to the summary.
	var all sync.WaitGroup
	var timesMu sync.Mutex
	took := map[string]time.Duration{}
	group := func(name string, n int, fn func(i int)) <-chan struct{} {
		var g sync.WaitGroup
		for i := 0; i < n; i++ {
			g.Add(1)
			go func(i int) {
				defer g.Done()
				fn(i)
			}(i)
		}
		done := make(chan struct{})
		all.Add(1)
		go func() {
			defer all.Done()
			g.Wait()
			timesMu.Lock()
			took[name] = time.Since(start)
			timesMu.Unlock()
			close(done)
		}()
		return done
	}
	lockStates := r.newStates(locks, lockWorkers)
	group("locks", lockWorkers, func(w int) { r.lockWorker(ctx, lockStates[w], w, lockCycles/lockWorkers) })
	producerStates := r.newStates(queues, producers)
	producersDone := group("producers", producers, func(p int) { r.producer(ctx, producerStates[p], p, entries/producers) })
	consumerStates := r.newStates(queues, consumers)
	group("consumers", consumers, func(c int) { r.consumer(ctx, consumerStates[c], c, producersDone) })
	dedupeStates := r.newStates(dedupe, 2*dedupePairs)
	group("dedupe", dedupePairs, func(p int) {
		r.dedupePair(ctx, [2]*upstash.State{dedupeStates[2*p], dedupeStates[2*p+1]}, p, messages/dedupePairs)
	})
	all.Wait()
	close(stopMonitor)
	monitorDone.Wait()
	elapsed := time.Since(start)
	for _, srv := range servers {
		srv.ClearFaults()
	}
	switch {
	case r.stopped != "":
		t.Errorf("the round was stopped early, after %s: the figures cover what was done (calls cut short by the stop add errors of their own)", r.stopped)
	case ctx.Err() != nil:
		t.Errorf("the round did not finish within %s: the figures cover what was done", roundTimeout)
	}
	res := r.gather(t, backend, elapsed)
	res.took = took
	return res
}

// result is the figures of one round (or the sum of a soak's rounds).
type result struct {
	seed    int64
	backend string
	elapsed time.Duration
	took    map[string]time.Duration // time each workload took, in one round
	rounds  int

	requests, faults                  int64
	faultsByKind                      map[upstashtest.Fault]int64
	faultsPer                         []string // faults and requests of each workload's server
	sections, plain, withLock, wait   int64
	refreshes, busyAnswers            int64
	overlaps, fenceDisorder           int
	serverFenceDisorder, fencesMissed int
	falseBusy                         int
	leftAtEnd, strandedSeen           int
	transientUnknown, monitorSamples  int64
	lostWhileHeld                     int
	enqueueCalls, enqueuedOK          int64
	enqueueUnknown                    int64
	consumed, lost, duplicated, alien int
	processedZero, processedTwice     int
	dedupeKeysMissing                 int
	calls, unknown, otherErrs         int
	callsByOp                         map[string]int

	samples []string // descriptions of the first failures of each kind
}

// gather reads what the server holds and judges the checker's records.
func (r *round) gather(t *testing.T, backend string, elapsed time.Duration) result {
	t.Helper()
	res := result{seed: r.seed, backend: backend, elapsed: elapsed, rounds: 1, faultsByKind: map[upstashtest.Fault]int64{}}
	for _, w := range []struct {
		name string
		srv  *server
	}{{"locks", r.locks}, {"queues", r.queues}, {"dedupe", r.dedupe}} {
		st := w.srv.Stats()
		var faults int64
		for k, v := range st.Faults {
			res.faultsByKind[k] += v
			faults += v
		}
		res.requests += st.TotalRequests
		res.faults += faults
		res.faultsPer = append(res.faultsPer, fmt.Sprintf("%s %d of %d", w.name, faults, st.TotalRequests))
	}

	// Locks.
	c := r.chk
	res.sections = int64(len(c.sections))
	res.plain, res.withLock, res.wait = r.plainCycles.Load(), r.withLockCycles.Load(), r.waitCycles.Load()
	res.refreshes = r.refreshes.Load()
	res.busyAnswers = int64(len(c.busy))
	var s []string
	res.overlaps, s = countOverlaps(c.sections)
	res.samples = append(res.samples, s...)
	res.fenceDisorder, s = countFenceDisorder(c.sections)
	res.samples = append(res.samples, s...)
	res.falseBusy, s = countFalseBusy(c.busy, c.holdsList())
	res.samples = append(res.samples, s...)
	perThread := map[string]int{}
	for _, sec := range c.sections {
		perThread[sec.key]++
	}
	for i := 0; i < lockThreads; i++ {
		thread := threadID(i)
		fences := r.int64List(r.locks, fenceListKey(thread))
		if d := countDisorder(fences); d > 0 {
			res.serverFenceDisorder += d
			res.samples = append(res.samples, fmt.Sprintf("thread %q: the fences written on the server are out of order: %v", thread, fences))
		}
		if len(fences) != perThread[thread] {
			res.fencesMissed += abs(len(fences) - perThread[thread])
			res.samples = append(res.samples, fmt.Sprintf("thread %q: %d fences written on the server for %d critical sections", thread, len(fences), perThread[thread]))
		}
	}
	left := r.strings(r.locks, "KEYS", prefix+":lock:*")
	res.leftAtEnd = len(left)
	for _, k := range left {
		res.samples = append(res.samples, fmt.Sprintf("lock key %q still exists at the end", k))
	}
	r.strandedSeen.Range(func(k, _ any) bool {
		res.strandedSeen++
		return true
	})
	res.transientUnknown, res.monitorSamples = r.transientUnknown.Load(), r.monitorSamples.Load()
	res.lostWhileHeld = c.lostWhileHeld
	res.samples = append(res.samples, c.lostSamples...)

	// Queues: what the consumers recorded on the server, against what the
	// producers enqueued; and the queues must be empty.
	consumed := countTimes(r.strings(r.queues, "LRANGE", consumedKey, 0, -1))
	for id, n := range consumed {
		res.consumed += n
		_, ours := r.enqueued[id]
		switch {
		case !ours:
			res.alien++
			res.samples = append(res.samples, fmt.Sprintf("consumed %q, which no producer enqueued", id))
		case n > 1:
			res.duplicated += n - 1
			res.samples = append(res.samples, fmt.Sprintf("queue entry %q consumed %d times", id, n))
		}
	}
	for id, ok := range r.enqueued {
		if ok {
			res.enqueuedOK++
			if consumed[id] == 0 {
				res.lost++
				if res.lost <= 3 {
					res.samples = append(res.samples, fmt.Sprintf("queue entry %q enqueued and never consumed", id))
				}
			}
		}
	}
	res.enqueueUnknown = r.enqueueUnknown.Load()
	res.enqueueCalls = int64(len(r.enqueued))
	for q := 0; q < queueThreads; q++ {
		if n := r.int64(r.queues.db.do("LLEN", prefix+":queue:"+queueThreadID(q))); n != 0 {
			res.lost += int(n)
			res.samples = append(res.samples, fmt.Sprintf("queue %q still holds %d entries at the end", queueThreadID(q), n))
		}
	}

	// Dedupe: how often each message was processed, and whether its key
	// was written.
	processed := countTimes(r.strings(r.dedupe, "LRANGE", processedKey, 0, -1))
	keys := make([]any, 0, messages)
	for p := 0; p < dedupePairs; p++ {
		for i := 0; i < messages/dedupePairs; i++ {
			msg := fmt.Sprintf("m%d-%d", p, i)
			keys = append(keys, prefix+":cache:"+dedupeKey(msg))
			switch n := processed[msg]; {
			case n == 0:
				res.processedZero++
				if res.processedZero <= 3 {
					res.samples = append(res.samples, fmt.Sprintf("message %q was processed by neither delivery", msg))
				}
			case n > 1:
				res.processedTwice++
				if res.processedTwice <= 3 {
					res.samples = append(res.samples, fmt.Sprintf("message %q was processed %d times", msg, n))
				}
			}
		}
	}
	res.dedupeKeysMissing = len(keys) - int(r.int64(r.dedupe.db.do("EXISTS", keys...)))

	res.calls, res.unknown, res.otherErrs = c.calls, c.unknown, c.otherErrs
	res.callsByOp = c.callsByOp
	res.samples = append(res.samples, c.errSamples...)
	return res
}

// strings runs a command on srv's backing Redis that replies with an
// array of bulk strings.
func (r *round) strings(srv *server, cmd string, args ...any) []string {
	v, err := srv.db.do(cmd, args...)
	if err != nil {
		r.t.Fatalf("%s on the server: %v", cmd, err)
	}
	items, _ := v.([]any)
	out := make([]string, 0, len(items))
	for _, it := range items {
		b, ok := it.([]byte)
		if !ok {
			r.t.Fatalf("%s on the server replied %T in its array", cmd, it)
		}
		out = append(out, string(b))
	}
	return out
}

// int64List reads a list of decimal integers from srv's backing Redis.
func (r *round) int64List(srv *server, key string) []int64 {
	var out []int64
	for _, s := range r.strings(srv, "LRANGE", key, 0, -1) {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			r.t.Fatalf("list %q holds %q", key, s)
		}
		out = append(out, n)
	}
	return out
}

// int64 reads an integer reply of the backing Redis.
func (r *round) int64(v any, err error) int64 {
	if err != nil {
		r.t.Fatalf("on the server: %v", err)
	}
	n, ok := v.(int64)
	if !ok {
		r.t.Fatalf("the server replied %T, want an integer", v)
	}
	return n
}

func abs(n int) int {
	if n < 0 {
		return -n
	}
	return n
}

// add sums o into res, for a soak's totals.
func (res *result) add(o result) {
	if res.faultsByKind == nil {
		res.faultsByKind = map[upstashtest.Fault]int64{}
	}
	res.rounds += o.rounds
	res.backend = o.backend
	res.requests += o.requests
	res.faults += o.faults
	for k, v := range o.faultsByKind {
		res.faultsByKind[k] += v
	}
	res.sections += o.sections
	res.plain += o.plain
	res.withLock += o.withLock
	res.wait += o.wait
	res.refreshes += o.refreshes
	res.busyAnswers += o.busyAnswers
	res.overlaps += o.overlaps
	res.fenceDisorder += o.fenceDisorder
	res.serverFenceDisorder += o.serverFenceDisorder
	res.fencesMissed += o.fencesMissed
	res.falseBusy += o.falseBusy
	res.leftAtEnd += o.leftAtEnd
	res.strandedSeen += o.strandedSeen
	res.transientUnknown += o.transientUnknown
	res.monitorSamples += o.monitorSamples
	res.lostWhileHeld += o.lostWhileHeld
	res.enqueueCalls += o.enqueueCalls
	res.enqueuedOK += o.enqueuedOK
	res.enqueueUnknown += o.enqueueUnknown
	res.consumed += o.consumed
	res.lost += o.lost
	res.duplicated += o.duplicated
	res.alien += o.alien
	res.processedZero += o.processedZero
	res.processedTwice += o.processedTwice
	res.dedupeKeysMissing += o.dedupeKeysMissing
	res.calls += o.calls
	res.unknown += o.unknown
	res.otherErrs += o.otherErrs
	if res.callsByOp == nil {
		res.callsByOp = map[string]int{}
	}
	for k, v := range o.callsByOp {
		res.callsByOp[k] += v
	}
}

// joinPrefixed joins parts with ", " after sep, or returns "" for none.
func joinPrefixed(sep string, parts []string) string {
	if len(parts) == 0 {
		return ""
	}
	return sep + strings.Join(parts, ", ")
}

// tookText tells how long each workload of a round took.
func (res result) tookText() string {
	if len(res.took) == 0 {
		return ""
	}
	var parts []string
	for _, name := range []string{"locks", "producers", "consumers", "dedupe"} {
		parts = append(parts, fmt.Sprintf("%s %s", name, res.took[name].Round(100*time.Millisecond)))
	}
	return " (" + strings.Join(parts, ", ") + ")"
}

// callsText lists the calls by operation, in a fixed order.
func (res result) callsText() string {
	ops := make([]string, 0, len(res.callsByOp))
	for op := range res.callsByOp {
		ops = append(ops, op)
	}
	sort.Strings(ops)
	parts := make([]string, len(ops))
	for i, op := range ops {
		parts[i] = fmt.Sprintf("%s %d", op, res.callsByOp[op])
	}
	return strings.Join(parts, ", ")
}

func pct(n, of int64) float64 {
	if of == 0 {
		return 0
	}
	return 100 * float64(n) / float64(of)
}

// lines is the summary, one line per metric.
func (res result) lines(cfg settings) []string {
	fk := res.faultsByKind
	return []string{
		fmt.Sprintf("seed %d, backend %s, %d lock workers + %d producers + %d consumers + %d dedupe workers, each with its own client; %s%s",
			res.seed, res.backend, lockWorkers, producers, consumers, 2*dedupePairs, res.elapsed.Round(time.Millisecond), res.tookText()),
		fmt.Sprintf("faults: %d of %d requests (%.1f%%, rate %g%s): 503 %d, reset before running %d, reply dropped after running %d, latency spike %d",
			res.faults, res.requests, pct(res.faults, res.requests), cfg.faultRate, joinPrefixed("; ", res.faultsPer),
			fk[upstashtest.FaultStatus], fk[upstashtest.FaultReset], fk[upstashtest.FaultDrop], fk[upstashtest.FaultLatency]),
		fmt.Sprintf("lock cycles: %d on %d threads (AcquireLock+Unlock %d, WithLock %d, AcquireLockWait+Unlock %d), %d refreshes inside, %d busy answers",
			res.sections, lockThreads, res.plain, res.withLock, res.wait, res.refreshes, res.busyAnswers),
		fmt.Sprintf("overlaps: %d", res.overlaps),
		fmt.Sprintf("fencing tokens not strictly increasing: %d (per thread in acquisition order; in the order written on the server %d, missing or extra there %d)",
			res.fenceDisorder, res.serverFenceDisorder, res.fencesMissed),
		fmt.Sprintf("busy answers for a free lock: %d (of %d busy answers)", res.falseBusy, res.busyAnswers),
		fmt.Sprintf("stranded locks: %d (lock keys left at the end %d; unknown tokens still held after their acquire returned %d; %d unknown tokens gone by then, %d samples)",
			res.leftAtEnd+res.strandedSeen, res.leftAtEnd, res.strandedSeen, res.transientUnknown, res.monitorSamples),
		fmt.Sprintf("locks lost while held: %d", res.lostWhileHeld),
		fmt.Sprintf("queue entries: lost %d, duplicated %d (%d enqueued by %d producers on %d queues, %d with outcome unknown; %d consumed by %d consumers; %d not ours)",
			res.lost, res.duplicated, res.enqueuedOK, producers, queueThreads, res.enqueueUnknown, res.consumed, consumers, res.alien),
		fmt.Sprintf("dedupe messages: processed zero times %d, twice %d (%d messages, 2 racing deliveries each; dedupe keys missing %d)",
			res.processedZero, res.processedTwice, messages*res.rounds, res.dedupeKeysMissing),
		fmt.Sprintf("outcome unknown: %d of %d calls (%.3f%%, limit %.1f%%); other errors %d (%.3f%%); calls: %s",
			res.unknown, res.calls, pct(int64(res.unknown), int64(res.calls)), 100*maxUnknownShare, res.otherErrs, pct(int64(res.otherErrs), int64(res.calls)), res.callsText()),
	}
}

// judge logs the summary and fails the test on any violation.
func (res result) judge(t *testing.T, cfg settings) {
	t.Helper()
	logLines(t, cfg, res.lines(cfg))
	for _, s := range res.samples {
		t.Log("  " + s)
	}
	check := func(ok bool, format string, args ...any) {
		t.Helper()
		if !ok {
			t.Errorf(format, args...)
		}
	}
	check(res.sections >= lockCycles, "%d lock cycles, want at least %d", res.sections, lockCycles)
	check(res.overlaps == 0, "%d overlapping critical sections", res.overlaps)
	check(res.fenceDisorder == 0 && res.serverFenceDisorder == 0 && res.fencesMissed == 0,
		"fencing tokens out of order: %d by acquisition, %d on the server, %d missing or extra", res.fenceDisorder, res.serverFenceDisorder, res.fencesMissed)
	check(res.falseBusy == 0, "%d busy answers for a free lock", res.falseBusy)
	check(res.leftAtEnd == 0 && res.strandedSeen == 0, "stranded locks: %d left at the end, %d under unknown tokens during the run", res.leftAtEnd, res.strandedSeen)
	check(res.lostWhileHeld == 0, "%d locks lost while held", res.lostWhileHeld)
	check(res.enqueueCalls == entries*int64(res.rounds), "%d entries enqueued, want %d", res.enqueueCalls, entries*res.rounds)
	check(res.lost == 0 && res.duplicated == 0 && res.alien == 0, "queue entries lost %d, duplicated %d, not ours %d", res.lost, res.duplicated, res.alien)
	check(res.processedZero == 0 && res.processedTwice == 0, "dedupe messages processed zero times %d, twice %d", res.processedZero, res.processedTwice)
	check(res.dedupeKeysMissing == 0, "%d dedupe keys missing on the server", res.dedupeKeysMissing)
	check(float64(res.unknown) <= maxUnknownShare*float64(res.calls), "%d of %d calls ended in ErrOutcomeUnknown, over %.1f%%", res.unknown, res.calls, 100*maxUnknownShare)
	check(float64(res.otherErrs) <= maxUnknownShare*float64(res.calls), "%d of %d calls failed, over %.1f%%", res.otherErrs, res.calls, 100*maxUnknownShare)
	if cfg.faultRate > 0 {
		for _, k := range []upstashtest.Fault{upstashtest.FaultStatus, upstashtest.FaultReset, upstashtest.FaultDrop, upstashtest.FaultLatency} {
			check(res.faultsByKind[k] > 0, "no %s fault was injected", k)
		}
		// The draw is random: allow a fifth below the rate before calling
		// the faults missing.
		check(pct(res.faults, res.requests) >= 80*cfg.faultRate, "faults hit %.1f%% of requests, want about %g%%", pct(res.faults, res.requests), 100*cfg.faultRate)
	}
}

// logLines logs lines to the test log and, with STRESS_REPORT, appends them
// to that file.
func logLines(t *testing.T, cfg settings, lines []string) {
	t.Helper()
	for _, l := range lines {
		t.Log(l)
	}
	if cfg.report == "" {
		return
	}
	f, err := os.OpenFile(cfg.report, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		t.Errorf("%s: %v", envReport, err)
		return
	}
	defer f.Close()
	if _, err := f.WriteString(strings.Join(lines, "\n") + "\n"); err != nil {
		t.Errorf("%s: %v", envReport, err)
	}
}
