package upstashtest_test

import (
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chatstate/upstash/upstashtest"
)

func TestLatency(t *testing.T) {
	eachBackend(t, func(t *testing.T, s *upstashtest.Server) {
		const d = 150 * time.Millisecond
		s.SetLatency(d)
		for _, r := range []req{{body: `["PING"]`}, {path: "/pipeline", body: `[["PING"]]`}, {method: "GET", path: "/ping"}} {
			start := time.Now()
			expect(t, send(t, s, r), 200, strings.TrimSpace(map[bool]string{true: `[{"result":"PONG"}]`, false: `{"result":"PONG"}`}[r.path == "/pipeline"]))
			if el := time.Since(start); el < d {
				t.Errorf("%s took %v, want >= %v", r.path, el, d)
			}
		}
		// After SetLatency(0) an hour's latency set before is gone: the
		// request returns (if it did not, the test would time out).
		s.SetLatency(time.Hour)
		s.SetLatency(0)
		expect(t, cmd(t, s, "PING"), 200, `{"result":"PONG"}`)
	})
}

func TestFailNext(t *testing.T) {
	eachBackend(t, func(t *testing.T, s *upstashtest.Server) {
		s.FailNext(2, http.StatusServiceUnavailable)
		for i := 0; i < 2; i++ {
			got := cmd(t, s, "INCR", "n")
			expectError(t, got, 503, "ERR upstashtest: injected fault (HTTP 503 Service Unavailable)")
			if tok := got.header.Get("Upstash-Sync-Token"); tok != "" {
				t.Errorf("a failed response carries a sync token %q", tok)
			}
		}
		if v := get(t, s, "n"); v != nil {
			t.Errorf("n = %v: a failed request ran", v)
		}
		expect(t, cmd(t, s, "INCR", "n"), 200, `{"result":1}`)
		// Any status, and the pipeline endpoint too.
		s.FailNext(1, 429)
		expectError(t, send(t, s, req{path: "/pipeline", body: `[["INCR","n"]]`}), 429, "ERR upstashtest: injected fault (HTTP 429")
		s.FailNext(1, 500)
		expectError(t, send(t, s, req{method: "GET", path: "/incr/n"}), 500, "ERR upstashtest: injected fault (HTTP 500")
		expect(t, cmd(t, s, "GET", "n"), 200, `{"result":"1"}`)
		st := s.Stats()
		if st.Faults[upstashtest.FaultStatus] != 4 || st.Commands["INCR"] != 1 {
			t.Errorf("Stats: faults %v commands %v", st.Faults, st.Commands)
		}
	})
}

func TestResetNext(t *testing.T) {
	eachBackend(t, func(t *testing.T, s *upstashtest.Server) {
		s.ResetNext(1)
		_, err := sendErr(s, req{body: `["SET","k","v"]`})
		if err == nil {
			t.Fatal("a reset request got a response")
		}
		t.Logf("client error: %v", err)
		if v := get(t, s, "k"); v != nil {
			t.Errorf("k = %v: the command ran before the reset", v)
		}
		// Also for a pipeline and a transaction.
		s.ResetNext(2)
		if _, err := sendErr(s, req{path: "/pipeline", body: `[["SET","p","v"]]`}); err == nil {
			t.Error("a reset pipeline got a response")
		}
		if _, err := sendErr(s, req{path: "/multi-exec", body: `[["SET","m","v"]]`}); err == nil {
			t.Error("a reset transaction got a response")
		}
		if get(t, s, "p") != nil || get(t, s, "m") != nil {
			t.Error("a reset batch ran")
		}
		expect(t, cmd(t, s, "SET", "k", "v"), 200, `{"result":"OK"}`)
		if st := s.Stats(); st.Faults[upstashtest.FaultReset] != 3 || st.Commands["SET"] != 1 {
			t.Errorf("Stats: faults %v commands %v", st.Faults, st.Commands)
		}
	})
}

func TestDropResponseNext(t *testing.T) {
	eachBackend(t, func(t *testing.T, s *upstashtest.Server) {
		s.DropResponseNext(1)
		_, err := sendErr(s, req{body: `["SET","k","v"]`})
		if err == nil {
			t.Fatal("a dropped request got a response")
		}
		t.Logf("client error: %v", err)
		if v := get(t, s, "k"); v != "v" {
			t.Errorf("k = %v: the command did not run before the drop", v)
		}
		s.DropResponseNext(2)
		if _, err := sendErr(s, req{path: "/pipeline", body: `[["INCR","n"],["INCR","n"]]`}); err == nil {
			t.Error("a dropped pipeline got a response")
		}
		if _, err := sendErr(s, req{path: "/multi-exec", body: `[["INCR","n"]]`}); err == nil {
			t.Error("a dropped transaction got a response")
		}
		if v := get(t, s, "n"); v != "3" {
			t.Errorf("n = %v, want 3: dropped batches must run", v)
		}
		expect(t, cmd(t, s, "GET", "k"), 200, `{"result":"v"}`)
		if st := s.Stats(); st.Faults[upstashtest.FaultDrop] != 3 || st.Commands["INCR"] != 3 {
			t.Errorf("Stats: faults %v commands %v", st.Faults, st.Commands)
		}
	})
}

func TestFaultQueueOrder(t *testing.T) {
	s := upstashtest.NewServer(t, upstashtest.WithEmbedded())
	s.FailNext(1, 502)
	s.ResetNext(1)
	s.DropResponseNext(1)
	s.FailNext(1, 504)
	got := cmd(t, s, "INCR", "n")
	expectError(t, got, 502, "ERR upstashtest: injected fault")
	if _, err := sendErr(s, req{body: `["INCR","n"]`}); err == nil {
		t.Error("second request: want a reset")
	}
	if _, err := sendErr(s, req{body: `["INCR","n"]`}); err == nil {
		t.Error("third request: want a drop")
	}
	expectError(t, cmd(t, s, "INCR", "n"), 504, "ERR upstashtest: injected fault")
	expect(t, cmd(t, s, "INCR", "n"), 200, `{"result":2}`) // 1 from the drop
	// ClearFaults empties the queue and the latency.
	s.FailNext(10, 500)
	s.SetLatency(time.Hour)
	s.ClearFaults()
	expect(t, cmd(t, s, "GET", "n"), 200, `{"result":"2"}`)
}

// outcomes sends n INCR requests one by one and describes what each got.
func outcomes(t *testing.T, s *upstashtest.Server, n int) []string {
	t.Helper()
	out := make([]string, n)
	for i := range out {
		r, err := sendErr(s, req{body: `["INCR","seq"]`})
		switch {
		case err != nil:
			out[i] = "transport-error"
		default:
			out[i] = fmt.Sprint(r.status)
		}
	}
	return out
}

func TestSeededRandomFaults(t *testing.T) {
	eachBackend(t, func(t *testing.T, a *upstashtest.Server) {
		const n = 60
		b := upstashtest.NewServer(t, upstashtest.WithEmbedded(), upstashtest.WithSeed(42))
		c := upstashtest.NewServer(t, upstashtest.WithEmbedded(), upstashtest.WithSeed(43))
		kinds := []upstashtest.Fault{upstashtest.FaultStatus, upstashtest.FaultReset, upstashtest.FaultDrop, upstashtest.FaultLatency}
		for _, s := range []*upstashtest.Server{a, b, c} {
			s.SetFaultRate(0.5, kinds...)
		}
		seqA, seqB, seqC := outcomes(t, a, n), outcomes(t, b, n), outcomes(t, c, n)
		if strings.Join(seqA, ",") != strings.Join(seqB, ",") {
			t.Errorf("same seed, different faults:\n%v\n%v", seqA, seqB)
		}
		if strings.Join(seqA, ",") == strings.Join(seqC, ",") {
			t.Errorf("seeds 42 and 43 gave the same %d outcomes", n)
		}
		fa, fb := a.Stats().Faults, b.Stats().Faults
		for _, k := range kinds {
			if fa[k] != fb[k] {
				t.Errorf("%v faults: %d vs %d with the same seed", k, fa[k], fb[k])
			}
			if fa[k] == 0 {
				t.Errorf("no %v fault in %d requests at rate 0.5", k, n)
			}
		}
		// Drops ran their command, resets and status faults did not.
		ok := 0
		for _, o := range seqA {
			if o == "200" {
				ok++
			}
		}
		want := fmt.Sprint(int64(ok) + fa[upstashtest.FaultDrop])
		if v := get(t, a, "seq"); v != want {
			t.Errorf("seq = %v, want %s (200s + drops)", v, want)
		}
		// SetFaultRate restarts the sequence from the seed.
		b.SetFaultRate(0.5, kinds...)
		if again := outcomes(t, b, n); strings.Join(again, ",") != strings.Join(seqB, ",") {
			t.Errorf("SetFaultRate did not restart the sequence:\n%v\n%v", seqB, again)
		}
		// Rate 0 turns random faults off.
		a.SetFaultRate(0)
		for _, o := range outcomes(t, a, 10) {
			if o != "200" {
				t.Fatalf("fault %s with rate 0", o)
			}
		}
	}, upstashtest.WithSeed(42))
}

func TestRandomStatusAndLatencyFaults(t *testing.T) {
	s := upstashtest.NewServer(t, upstashtest.WithEmbedded())
	s.SetFaultRate(1, upstashtest.FaultStatus)
	expectError(t, cmd(t, s, "PING"), upstashtest.RandomFaultStatus, "ERR upstashtest: injected fault")
	s.SetFaultRate(1, upstashtest.FaultLatency)
	for i := 0; i < 5; i++ {
		expect(t, cmd(t, s, "PING"), 200, `{"result":"PONG"}`)
	}
	if got := s.Stats().Faults[upstashtest.FaultLatency]; got != 5 {
		t.Errorf("latency faults = %d, want 5", got)
	}
}

func TestFaultsUnderConcurrency(t *testing.T) {
	eachBackend(t, func(t *testing.T, s *upstashtest.Server) {
		s.SetFaultRate(0.3)
		var wg sync.WaitGroup
		for g := 0; g < 8; g++ {
			wg.Add(1)
			go func(g int) {
				defer wg.Done()
				for i := 0; i < 20; i++ {
					var r req
					switch i % 3 {
					case 0:
						r = req{body: `["INCR","c"]`}
					case 1:
						r = req{path: "/pipeline", body: `[["INCR","c"],["GET","c"]]`}
					default:
						r = req{path: "/multi-exec", body: `[["INCR","c"],["GET","c"]]`}
					}
					_, _ = sendErr(s, r)
				}
			}(g)
		}
		wg.Wait()
		if st := s.Stats(); st.TotalRequests != 160 {
			t.Errorf("TotalRequests = %d, want 160", st.TotalRequests)
		}
	})
}
