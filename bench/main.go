// Command bench measures the Chat SDK webhook flow on this library against
// the official @upstash/redis client in Node, on one machine, with latency
// injected per HTTP request. See bench/README.md.
//
//	go run ./bench            full run (several minutes)
//	go run ./bench -quick     under 2 minutes on 2 cores (warm build cache)
//	go run ./bench -json      one JSON object per line and configuration
package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// options are the command-line flags.
type options struct {
	quick      bool
	json       bool
	reps       int
	n          int
	callers    []int
	latencies  []time.Duration
	threads    int
	clients    []string
	coldRuns   int
	benchtime  string
	skip       map[string]bool
	root       string // module root
	runTimeout time.Duration
	noInstall  bool   // never run npm ci (tests)
	from       string // print the tables of a saved -json run
	markdown   bool   // print Markdown tables
}

// parts of a run that -skip can leave out.
var allParts = []string{"throughput", "profile", "coldstart", "size", "gobench"}

func main() {
	if err := mainErr(os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func parseFlags(args []string, stderr io.Writer) (*options, error) {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	o := &options{}
	fs.BoolVar(&o.quick, "quick", false, "a short run: 64 callers only, 384 webhooks per run, 5 cold starts (under 2 minutes)")
	fs.BoolVar(&o.json, "json", false, "print one JSON object per line and configuration instead of tables")
	reps := fs.Int("reps", 0, "repetitions of each configuration, interleaved (default 3)")
	n := fs.Int("n", 0, "webhooks per run (default 1000, quick 384); a run with fewer callers gets 16 per caller, at least 40")
	callers := fs.String("callers", "", "concurrent callers, comma-separated (default 1,16,64; quick 64)")
	latency := fs.String("latency", "5,20", "injected latency per HTTP request in ms, comma-separated")
	fs.IntVar(&o.threads, "threads", 0, "chat threads the webhooks are spread over (default callers/4, at least 1)")
	clients := fs.String("clients", "go-calls,go-fused,go-chatflow,node", "configurations to run")
	fs.IntVar(&o.coldRuns, "coldstart-runs", 0, "cold starts per client (default 11, quick 5)")
	fs.StringVar(&o.benchtime, "benchtime", "", "-benchtime for go test -bench (default 1s, quick 200ms)")
	skip := fs.String("skip", "", "parts to leave out, comma-separated: "+strings.Join(allParts, ","))
	fs.DurationVar(&o.runTimeout, "run-timeout", 5*time.Minute, "limit for one measured run")
	fs.StringVar(&o.from, "report", "", "print the tables of a saved -json output file instead of measuring")
	fs.BoolVar(&o.markdown, "markdown", false, "print Markdown tables (as in BENCHMARKS.md)")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	pick := func(v, full, quick int) int {
		switch {
		case v > 0:
			return v
		case o.quick:
			return quick
		}
		return full
	}
	o.reps = pick(*reps, 3, 3)
	o.n = pick(*n, 1000, 384)
	o.coldRuns = pick(o.coldRuns, 11, 5)
	if o.benchtime == "" {
		o.benchtime = map[bool]string{true: "200ms", false: "1s"}[o.quick]
	}
	if *callers == "" {
		*callers = map[bool]string{true: "64", false: "1,16,64"}[o.quick]
	}
	var err error
	if o.callers, err = intList(*callers); err != nil {
		return nil, fmt.Errorf("-callers: %w", err)
	}
	ms, err := intList(*latency)
	if err != nil {
		return nil, fmt.Errorf("-latency: %w", err)
	}
	for _, v := range ms {
		o.latencies = append(o.latencies, time.Duration(v)*time.Millisecond)
	}
	for _, c := range strings.Split(*clients, ",") {
		switch c = strings.TrimSpace(c); c {
		case clientGoCalls, clientGoFused, clientGoChatflow, clientNode:
			o.clients = append(o.clients, c)
		case "":
		default:
			return nil, fmt.Errorf("-clients: unknown client %q", c)
		}
	}
	o.skip = map[string]bool{}
	for _, p := range strings.Split(*skip, ",") {
		if p = strings.TrimSpace(p); p == "" {
			continue
		}
		known := false
		for _, a := range allParts {
			known = known || a == p
		}
		if !known {
			return nil, fmt.Errorf("-skip: unknown part %q", p)
		}
		o.skip[p] = true
	}
	return o, nil
}

func intList(s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		v, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || v < 0 {
			return nil, fmt.Errorf("%q is not a list of non-negative integers", s)
		}
		out = append(out, v)
	}
	return out, nil
}

// webhooksFor returns the webhooks of one run with c callers.
func (o *options) webhooksFor(c int) int {
	return min(o.n, max(40, 16*c))
}

// threadsFor returns the number of chat threads for c callers.
func (o *options) threadsFor(c int) int {
	if o.threads > 0 {
		return o.threads
	}
	return max(1, c/4)
}

// moduleRoot returns the directory of the go.mod the harness runs in.
func moduleRoot() (string, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	gomod := strings.TrimSpace(string(out))
	if gomod == "" || gomod == os.DevNull {
		return "", errors.New("run the benchmark inside the module (go run ./bench from the repository root)")
	}
	return filepath.Dir(gomod), nil
}

// logf reports progress on stderr.
type logf func(format string, args ...any)

func mainErr(args []string, stdout, stderr io.Writer) error {
	o, err := parseFlags(args, stderr)
	if err != nil {
		return err
	}
	if o.from != "" {
		rep, err := readReport(o.from)
		if err != nil {
			return err
		}
		return rep.write(o, stdout)
	}
	if o.root, err = moduleRoot(); err != nil {
		return err
	}
	start := time.Now()
	log := logf(func(format string, args ...any) {
		fmt.Fprintf(stderr, "bench: %5.1fs "+format+"\n", append([]any{time.Since(start).Seconds()}, args...)...)
	})
	rep := &report{}
	rep.Machine = machineInfo(o.root)
	if err := run(o, rep, log); err != nil {
		return err
	}
	rep.Machine.LoadEnd = loadAverage()
	log("done")
	return rep.write(o, stdout)
}

// write prints the report in the format the flags ask for.
func (r *report) write(o *options, w io.Writer) error {
	switch {
	case o.json:
		return r.writeJSON(w)
	case o.markdown:
		r.writeMarkdown(w)
	default:
		r.writeText(w)
	}
	return nil
}

// run executes every part that is not skipped, appending to rep.
func run(o *options, rep *report, log logf) error {
	tmp, err := os.MkdirTemp("", "chatstate-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)

	needServer := !o.skip["throughput"] || !o.skip["profile"] || !o.skip["coldstart"]
	var l *launcher
	var srv *benchServer
	if needServer {
		srv, err = startServer()
		if err != nil {
			return err
		}
		defer srv.Close()
		log("upstashtest on redis-server at %s", srv.URL)
		l = &launcher{url: srv.URL, token: srv.Token, nodeDir: filepath.Join(o.root, "bench", "node")}
		log("building bench/driver")
		l.goDriver = filepath.Join(tmp, "driver")
		if out, err := goCommand(o.root, nil, "build", "-o", l.goDriver, "./bench/driver").CombinedOutput(); err != nil {
			return fmt.Errorf("go build ./bench/driver: %v\n%s", err, out)
		}
		node, reason := findNode(l.nodeDir, !o.noInstall, log)
		if reason != "" {
			log("node configuration unavailable: %s", reason)
			rep.NodeUnavailable = reason
		}
		l.node = node
	}
	if !o.skip["throughput"] {
		if err := runThroughput(o, srv, l, rep, log); err != nil {
			return err
		}
	}
	if !o.skip["profile"] {
		if err := runProfiles(o, srv, l, rep, log); err != nil {
			return err
		}
	}
	if !o.skip["coldstart"] {
		if err := runColdStarts(o, srv, l, rep, log); err != nil {
			return err
		}
	}
	if !o.skip["size"] {
		rep.Sizes = measureSizes(o.root, tmp, log)
	}
	if !o.skip["gobench"] {
		rep.GoBench, rep.GoBenchError = runGoBench(o.root, o.benchtime, log)
	}
	return nil
}

// goCommand returns `go args...` run in dir with extra environment.
func goCommand(dir string, env []string, args ...string) *exec.Cmd {
	cmd := exec.Command("go", args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	return cmd
}

// findNode returns node (20 or later) when bench/node's packages are
// installed, running `npm ci` there first if they are missing, or the
// reason the Node configuration cannot run.
func findNode(dir string, install bool, log logf) (string, string) {
	node, err := exec.LookPath("node")
	if err != nil {
		return "", "node is not on PATH (install Node.js 20 or later)"
	}
	out, err := exec.Command(node, "--version").Output()
	v := strings.TrimSpace(string(out))
	major, _ := strconv.Atoi(strings.SplitN(strings.TrimPrefix(v, "v"), ".", 2)[0])
	if err != nil || major < 20 {
		return "", fmt.Sprintf("node %s is too old: 20 or later is needed", v)
	}
	pkg := filepath.Join(dir, "node_modules", "@upstash", "redis", "package.json")
	if _, err := os.Stat(pkg); err != nil {
		if !install {
			return "", "bench/node's packages are not installed (fix: npm ci --prefix bench/node)"
		}
		log("installing bench/node's packages from its lockfile (npm ci)")
		cmd := exec.Command("npm", "ci", "--no-audit", "--no-fund", "--loglevel=error")
		cmd.Dir = dir
		if out, err := cmd.CombinedOutput(); err != nil {
			return "", fmt.Sprintf("npm ci in bench/node failed (%v): %s", err, strings.TrimSpace(string(out)))
		}
	}
	return node, ""
}

// writeJSON prints every record as one JSON line.
func (r *report) writeJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	for _, rec := range r.records() {
		if err := enc.Encode(rec); err != nil {
			return err
		}
	}
	return nil
}
