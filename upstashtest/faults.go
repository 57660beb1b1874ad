package upstashtest

import (
	"math/rand/v2"
	"net"
	"net/http"
	"sync"
	"time"
)

// Fault is a kind of injected failure.
type Fault int

const (
	// FaultStatus answers the request with an HTTP error status and an
	// Upstash-shaped {"error": ...} body without running anything (503 when
	// chosen by SetFaultRate).
	FaultStatus Fault = iota + 1
	// FaultReset closes the connection abruptly (TCP RST) before anything
	// runs.
	FaultReset
	// FaultDrop runs the command(s), then closes the connection abruptly
	// without a response.
	FaultDrop
	// FaultLatency delays the request (by up to MaxRandomLatency when chosen
	// by SetFaultRate).
	FaultLatency
)

// MaxRandomLatency bounds the delay of a FaultLatency chosen by
// SetFaultRate; the delay is drawn uniformly from [0, MaxRandomLatency).
const MaxRandomLatency = 100 * time.Millisecond

// RandomFaultStatus is the HTTP status of a FaultStatus chosen by
// SetFaultRate.
const RandomFaultStatus = http.StatusServiceUnavailable

func (f Fault) String() string {
	switch f {
	case FaultStatus:
		return "status"
	case FaultReset:
		return "reset"
	case FaultDrop:
		return "drop"
	case FaultLatency:
		return "latency"
	}
	return "fault(?)"
}

// plannedFault is what happens to one request.
type plannedFault struct {
	kind    Fault // 0: none
	status  int   // FaultStatus
	latency time.Duration
}

type faultState struct {
	mu      sync.Mutex
	seed    int64
	latency time.Duration
	queue   []plannedFault
	rate    float64
	kinds   []Fault
	rng     *rand.Rand
}

func (f *faultState) init(seed int64) {
	f.seed = seed
	f.rng = newRand(seed)
}

func newRand(seed int64) *rand.Rand {
	return rand.New(rand.NewPCG(uint64(seed), 0x5eed))
}

// next decides the fault for the request that just arrived.
func (f *faultState) next() plannedFault {
	f.mu.Lock()
	defer f.mu.Unlock()
	p := plannedFault{latency: f.latency}
	if len(f.queue) > 0 {
		q := f.queue[0]
		f.queue = f.queue[1:]
		p.kind, p.status = q.kind, q.status
		return p
	}
	if f.rate <= 0 || len(f.kinds) == 0 {
		return p
	}
	if f.rng.Float64() >= f.rate {
		return p
	}
	p.kind = f.kinds[f.rng.IntN(len(f.kinds))]
	switch p.kind {
	case FaultStatus:
		p.status = RandomFaultStatus
	case FaultLatency:
		p.latency += time.Duration(f.rng.Int64N(int64(MaxRandomLatency)))
	}
	return p
}

func (f *faultState) enqueue(n int, p plannedFault) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for i := 0; i < n; i++ {
		f.queue = append(f.queue, p)
	}
}

// SetLatency adds d before every request is handled (0 turns it off).
func (s *Server) SetLatency(d time.Duration) {
	s.faults.mu.Lock()
	defer s.faults.mu.Unlock()
	s.faults.latency = d
}

// FailNext answers the next n requests with the given HTTP status (500 when
// it is not a valid status code) and an Upstash-shaped {"error": ...} body,
// without running anything.
//
// FailNext, ResetNext and DropResponseNext append to one queue: each
// request, in arrival order, takes the first queued fault, so FailNext(1,
// 500) then ResetNext(1) fails one request and resets the next. Queued
// faults take precedence over SetFaultRate.
func (s *Server) FailNext(n int, status int) {
	if status < 100 || status > 999 {
		status = http.StatusInternalServerError
	}
	s.faults.enqueue(n, plannedFault{kind: FaultStatus, status: status})
}

// ResetNext closes the connection of each of the next n requests abruptly
// (TCP RST) before any command runs.
func (s *Server) ResetNext(n int) { s.faults.enqueue(n, plannedFault{kind: FaultReset}) }

// DropResponseNext runs the command(s) of each of the next n requests, then
// closes the connection abruptly without sending the response.
func (s *Server) DropResponseNext(n int) { s.faults.enqueue(n, plannedFault{kind: FaultDrop}) }

// SetFaultRate injects a fault into each request with probability rate
// (0..1), the kind chosen among kinds (all four when none are given), from
// a PRNG seeded by WithSeed. Each call restarts the PRNG from the seed, so
// the same seed and the same sequence of requests give the same faults.
// A rate <= 0 turns random faults off.
func (s *Server) SetFaultRate(rate float64, kinds ...Fault) {
	if len(kinds) == 0 {
		kinds = []Fault{FaultStatus, FaultReset, FaultDrop, FaultLatency}
	}
	if rate > 1 {
		rate = 1
	}
	s.faults.mu.Lock()
	defer s.faults.mu.Unlock()
	s.faults.rate = rate
	s.faults.kinds = append([]Fault(nil), kinds...)
	s.faults.rng = newRand(s.faults.seed)
}

// ClearFaults removes the latency, the queued faults and the fault rate.
func (s *Server) ClearFaults() {
	s.faults.mu.Lock()
	defer s.faults.mu.Unlock()
	s.faults.latency = 0
	s.faults.queue = nil
	s.faults.rate = 0
	s.faults.kinds = nil
}

// abortConnection closes the request's connection abruptly: hijacked, with
// SO_LINGER 0 so that the peer gets a TCP RST. When the connection cannot
// be hijacked (HTTP/2, a wrapped ResponseWriter), the handler panics with
// http.ErrAbortHandler, which makes net/http abort the response.
func abortConnection(w http.ResponseWriter) {
	hj, ok := w.(http.Hijacker)
	if !ok {
		panic(http.ErrAbortHandler)
	}
	conn, _, err := hj.Hijack()
	if err != nil {
		panic(http.ErrAbortHandler)
	}
	if tc, ok := conn.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	_ = conn.Close()
}
