package stress_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chatstate/upstash"
	"github.com/chatstate/upstash/upstashtest"
	"github.com/gomodule/redigo/redis"
)

// Sizes of one round. The floor: 8 workers with a client each, 4
// contended threads, 2,000 lock cycles, queues with several producers and
// consumers, two racing deliveries of every message.
const (
	lockWorkers = 8
	lockThreads = 4
	lockCycles  = 2000 // in all, lockCycles/lockWorkers per worker

	queueThreads = 2
	producers    = 4
	consumers    = 4
	entries      = 1000 // in all, entries/producers per producer
	// queueMaxSize is Enqueue's maxSize: far more than the entries of a
	// round, so nothing is ever trimmed.
	queueMaxSize = 1_000_000

	dedupePairs = 4
	messages    = 500 // in all, messages/dedupePairs per pair, each delivered twice
)

// Timings, all far from what a round needs, so that a machine ten times
// slower changes nothing but the round's length.
const (
	// lockTTL: a critical section lasts a few milliseconds. A lock that
	// lapsed while held would show as "lost while held".
	lockTTL = 20 * time.Second
	// entryTTL and dedupeTTL outlive any round.
	entryTTL  = 10 * time.Minute
	dedupeTTL = 10 * time.Minute
	// callTimeout bounds each call of the library (its retries included).
	callTimeout = 30 * time.Second
	// roundTimeout bounds a whole round: past it the workers stop and the
	// round fails, with the figures of what was done. It is just under go
	// test's default timeout of 10 minutes (a soak needs a longer
	// -timeout), several times what a round took on a 2-core machine
	// running several other test suites at once.
	roundTimeout = 9 * time.Minute
	// monitorEvery is the period of the stranded-lock monitor's samples.
	monitorEvery = 5 * time.Millisecond
)

// retryPolicy is every worker's: many quick retries, so that a call fails
// only when the faults hit every attempt (about one call in 10^10 at 15%).
var retryPolicy = upstash.RetryPolicy{MaxRetries: 10, MinBackoff: time.Millisecond, MaxBackoff: 20 * time.Millisecond}

// round is one run of the workloads against their servers.
type round struct {
	t    *testing.T
	seed int64
	chk  *checker
	// The servers of the lock, queue and dedupe workloads (see runRound).
	locks, queues, dedupe *server

	// counts of what the workers did, for the summary
	plainCycles, withLockCycles, waitCycles, refreshes atomic.Int64
	monitorSamples, transientUnknown                   atomic.Int64
	strandedSeen                                       sync.Map // token → struct{}
	enqueueUnknown                                     atomic.Int64

	enqueuedMu sync.Mutex
	enqueued   map[string]bool // entry id → the Enqueue call returned nil

	// cancel ends the round's context; stopped says why it was ended
	// early (see stop).
	cancel    context.CancelFunc
	stoppedMu sync.Mutex
	stopped   string
}

// stop ends the round early, for the reason given (the first one is
// kept), when it has already failed in a way that would make the rest of
// it crawl.
func (r *round) stop(reason string) {
	r.stoppedMu.Lock()
	if r.stopped == "" {
		r.stopped = reason
	}
	r.stoppedMu.Unlock()
	if r.cancel != nil {
		r.cancel()
	}
}

// server is an upstashtest server and a direct connection to its backing
// Redis.
type server struct {
	*upstashtest.Server
	db *backingRedis
}

// newServer starts a server with the seed; it and its connection are
// closed when the test ends.
func newServer(t *testing.T, seed int64) *server {
	srv := upstashtest.NewServer(t, upstashtest.WithSeed(seed))
	db := newBackingRedis(srv.RedisAddr())
	t.Cleanup(db.close)
	return &server{Server: srv, db: db}
}

// newRound returns a round whose workloads use the given servers (one
// server may serve several).
func newRound(t *testing.T, seed int64, locks, queues, dedupe *server) *round {
	return &round{t: t, seed: seed, chk: newChecker(), locks: locks, queues: queues, dedupe: dedupe, enqueued: map[string]bool{}}
}

// Key names: the State's prefix, and the keys the checker keeps on the
// server beside the library's (no library key starts with "stress:").
const (
	prefix       = upstash.DefaultKeyPrefix
	consumedKey  = "stress:consumed"
	processedKey = "stress:processed"
)

func threadID(i int) string             { return fmt.Sprintf("thread-%d", i) }
func queueThreadID(i int) string        { return fmt.Sprintf("queue-%d", i) }
func lockKey(thread string) string      { return prefix + ":lock:" + thread }
func fenceListKey(thread string) string { return "stress:fences:" + thread }
func dedupeKey(msg string) string       { return "dedupe:" + msg }

// newState returns a State on srv, on a client of its own. Call it from
// the test's goroutine.
func (r *round) newState(srv *server) *upstash.State {
	r.t.Helper()
	c, err := upstash.New(upstash.Config{URL: srv.URL, Token: srv.Token}, upstash.WithRetry(retryPolicy))
	if err != nil {
		r.t.Fatalf("upstash.New: %v", err)
	}
	return upstash.NewState(c, upstash.WithKeyPrefix(prefix))
}

// newStates returns n States on srv, each on a client of its own.
func (r *round) newStates(srv *server, n int) []*upstash.State {
	r.t.Helper()
	out := make([]*upstash.State, n)
	for i := range out {
		out[i] = r.newState(srv)
	}
	return out
}

// rng returns the PRNG of one worker, derived from the round's seed.
func (r *round) rng(role, i int) *rand.Rand {
	return rand.New(rand.NewPCG(uint64(r.seed), uint64(role<<16|i)))
}

func isUnknown(err error) bool { return errors.Is(err, upstash.ErrOutcomeUnknown) }

// pause sleeps up to max, or until ctx ends.
func pause(ctx context.Context, rng *rand.Rand, max time.Duration) {
	t := time.NewTimer(time.Duration(rng.Int64N(int64(max) + 1)))
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// ---- locks ----

// lockMode is how a worker takes the lock for one cycle.
type lockMode int

const (
	modePlain    lockMode = iota // AcquireLock, Refresh now and then, Unlock
	modeWithLock                 // WithLock
	modeWait                     // AcquireLockWait, Unlock
)

// A lock worker that was not given the lock pauses for a random time up
// to a bound that starts at minBusyPause and doubles with each busy answer
// in a row, up to maxBusyPause. Meanwhile the holder and the other workers
// go on, so every thread stays contended, without spending most requests
// on busy answers (on a loaded machine, shorter pauses only made the round
// slower: more requests competing for the CPU).
const (
	minBusyPause = 16 * time.Millisecond
	maxBusyPause = 128 * time.Millisecond
)

// waitOneIn: one lock cycle in waitOneIn uses AcquireLockWait. Its
// backoff (up to a second) loses most races against the workers that
// retry sooner, so these cycles are slow: a few are enough.
const waitOneIn = 50

// lockWorker completes n lock cycles on random threads. Workers 2 and 5
// use WithLock; every worker takes one cycle in waitOneIn with
// AcquireLockWait; the others use AcquireLock and Unlock.
func (r *round) lockWorker(ctx context.Context, st *upstash.State, w, n int) {
	rng := r.rng(1, w)
	mode := modePlain
	bound := minBusyPause
	for done := 0; done < n && ctx.Err() == nil; {
		thread := threadID(rng.IntN(lockThreads))
		if mode != modeWait {
			switch {
			case rng.IntN(waitOneIn) == 0:
				mode = modeWait // kept until the cycle is done
			case w%3 == 2:
				mode = modeWithLock
			default:
				mode = modePlain
			}
		}
		var ok bool
		switch mode {
		case modeWithLock:
			ok = r.withLockCycle(ctx, st, w, thread)
		default:
			ok = r.plainCycle(ctx, st, rng, w, thread, mode == modeWait)
		}
		if ok {
			done++
			mode = modePlain
			bound = minBusyPause
		} else {
			pause(ctx, rng, bound)
			bound = min(2*bound, maxBusyPause)
		}
	}
}

// plainCycle takes the lock with AcquireLock (or AcquireLockWait), runs
// the critical section and unlocks. It reports whether it held the lock.
func (r *round) plainCycle(ctx context.Context, st *upstash.State, rng *rand.Rand, w int, thread string, wait bool) bool {
	id, _ := r.chk.startAcquire(thread)
	var clock replyClock
	cctx, cancel := context.WithTimeout(ctx, callTimeout)
	var lock *upstash.Lock
	var err error
	op := "AcquireLock"
	if wait {
		op = "AcquireLockWait"
		lock, err = st.AcquireLockWait(clock.trace(cctx), thread, lockTTL)
	} else {
		lock, err = st.AcquireLock(clock.trace(cctx), thread, lockTTL)
	}
	cancel()
	end := time.Now()
	r.chk.call(op, err)
	switch {
	case err != nil:
		r.chk.acquireFailed(id, end, isUnknown(err))
		return false
	case lock == nil:
		r.chk.acquireBusy(id, end)
		return false
	}
	acquired := clock.lastReply(end)
	r.chk.acquired(id, lock.Token)

	r.critical(thread, lock.Fence)
	if rng.IntN(10) == 0 {
		r.refreshes.Add(1)
		cctx, cancel := context.WithTimeout(ctx, callTimeout)
		err := st.Refresh(cctx, lock, lockTTL)
		cancel()
		if errors.Is(err, upstash.ErrLockNotHeld) {
			r.chk.lost(fmt.Sprintf("Refresh by worker %d: %v", w, err))
			err = nil
		}
		r.chk.call("Refresh", err)
	}

	released := time.Now()
	cctx, cancel = context.WithTimeout(ctx, callTimeout)
	err = st.Unlock(cctx, lock)
	cancel()
	end = time.Now()
	gone := err == nil
	if errors.Is(err, upstash.ErrLockNotHeld) {
		r.chk.lost(fmt.Sprintf("Unlock by worker %d: %v", w, err))
		err, gone = nil, true
	}
	r.chk.call("Unlock", err)
	r.chk.releaseDone(id, end, gone)
	r.chk.addSection(section{key: thread, worker: w, token: lock.Token, fence: lock.Fence, acquired: acquired, released: released})
	if wait {
		r.waitCycles.Add(1)
	} else {
		r.plainCycles.Add(1)
	}
	return true
}

// withLockCycle runs the critical section under WithLock. It reports
// whether the function ran.
func (r *round) withLockCycle(ctx context.Context, st *upstash.State, w int, thread string) bool {
	id, _ := r.chk.startAcquire(thread)
	var sec section
	ran := false
	cctx, cancel := context.WithTimeout(ctx, callTimeout)
	err := st.WithLock(cctx, thread, lockTTL, func(fctx context.Context, h *upstash.HeldLock) error {
		acquired := time.Now()
		l := h.Snapshot()
		r.chk.acquired(id, l.Token)
		ran = true
		if fctx.Err() != nil {
			r.chk.lost(fmt.Sprintf("WithLock by worker %d: the function's context was already done: %v", w, context.Cause(fctx)))
		} else {
			r.critical(thread, l.Fence)
		}
		sec = section{key: thread, worker: w, token: l.Token, fence: l.Fence, acquired: acquired, released: time.Now()}
		return nil
	})
	cancel()
	end := time.Now()
	if !ran {
		if errors.Is(err, upstash.ErrLockBusy) {
			r.chk.call("WithLock", nil)
			r.chk.acquireBusy(id, end)
			return false
		}
		r.chk.call("WithLock", err)
		r.chk.acquireFailed(id, end, isUnknown(err))
		return false
	}
	gone := err == nil
	if errors.Is(err, upstash.ErrLockNotHeld) && !isUnknown(err) {
		r.chk.lost(fmt.Sprintf("WithLock by worker %d: %v", w, err))
		err, gone = nil, true
	}
	r.chk.call("WithLock", err)
	r.chk.releaseDone(id, end, gone)
	r.chk.addSection(sec)
	r.withLockCycles.Add(1)
	return true
}

// critical is the work done under the lock: it appends the fencing token
// to a list on the server, as a store that checks fences would see them.
// The list is written directly on the backing Redis, without faults.
func (r *round) critical(thread string, fence int64) {
	if _, err := r.locks.db.do("RPUSH", fenceListKey(thread), fence); err != nil {
		r.t.Errorf("recording a fence on the server: %v", err)
	}
}

// monitor samples the lock keys on the server until stop is closed. A
// token no worker knows is suspect; it is stranded if it is still in the
// key once every acquire of that key that was in flight when it was seen
// has returned (and still no worker knows it). A token that goes away by
// then was an acquire that failed and released what it may have set.
func (r *round) monitor(ctx context.Context, stop <-chan struct{}) {
	keys := make([]any, lockThreads)
	for i := range keys {
		keys[i] = lockKey(threadID(i))
	}
	tick := time.NewTicker(monitorEvery)
	defer tick.Stop()
	for {
		select {
		case <-stop:
			return
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		v, err := r.locks.db.do("MGET", keys...)
		if err != nil {
			r.t.Errorf("monitor: MGET: %v", err)
			return
		}
		// Every acquire that could have set what MGET read started before
		// now.
		seen := time.Now()
		r.monitorSamples.Add(1)
		for i, tok := range v.([]any) {
			b, ok := tok.([]byte)
			if !ok || r.chk.isKnown(string(b)) {
				continue
			}
			thread := threadID(i)
			if err := r.chk.waitAcquiresBefore(ctx, thread, seen); err != nil {
				return
			}
			if r.chk.isKnown(string(b)) {
				continue
			}
			now, err := r.locks.db.do("GET", lockKey(thread))
			if err != nil {
				r.t.Errorf("monitor: GET: %v", err)
				return
			}
			if nb, ok := now.([]byte); ok && string(nb) == string(b) {
				r.strandedSeen.Store(string(b), struct{}{})
				// A stranded lock blocks its thread for the lock's TTL:
				// the round has failed, stop it rather than wait.
				r.stop(fmt.Sprintf("a stranded lock on %q", thread))
			} else {
				r.transientUnknown.Add(1)
			}
		}
	}
}

// ---- queues ----

// queueMessage is the message of a queue entry: the entry's number.
type queueMessage struct {
	ID string `json:"id"`
}

// producer enqueues n numbered entries, alternating between the queues.
func (r *round) producer(ctx context.Context, st *upstash.State, p, n int) {
	for i := 0; i < n && ctx.Err() == nil; i++ {
		id := fmt.Sprintf("p%d-%d", p, i)
		entry, err := upstash.NewQueueEntry(queueMessage{ID: id}, entryTTL)
		if err != nil {
			r.t.Errorf("NewQueueEntry: %v", err)
			return
		}
		cctx, cancel := context.WithTimeout(ctx, callTimeout)
		_, err = st.Enqueue(cctx, queueThreadID((p+i)%queueThreads), entry, queueMaxSize)
		cancel()
		r.chk.call("Enqueue", err)
		if isUnknown(err) {
			r.enqueueUnknown.Add(1)
		}
		r.enqueuedMu.Lock()
		r.enqueued[id] = err == nil
		r.enqueuedMu.Unlock()
	}
}

// consumer dequeues from every queue in turn and records each entry on the
// server, until the producers are done and a whole turn found every queue
// empty.
func (r *round) consumer(ctx context.Context, st *upstash.State, c int, producersDone <-chan struct{}) {
	rng := r.rng(2, c)
	for ctx.Err() == nil {
		finished := false
		select {
		case <-producersDone:
			finished = true // observed before this turn's dequeues
		default:
		}
		got, failed := false, false
		for q := 0; q < queueThreads; q++ {
			cctx, cancel := context.WithTimeout(ctx, callTimeout)
			e, err := st.Dequeue(cctx, queueThreadID((c+q)%queueThreads))
			cancel()
			r.chk.call("Dequeue", err)
			if err != nil {
				failed = true
				continue
			}
			if e == nil {
				continue
			}
			got = true
			var m queueMessage
			if err := json.Unmarshal(e.Message, &m); err != nil || m.ID == "" {
				r.t.Errorf("dequeued an entry that is not one of ours: %s (%v)", e.Message, err)
				continue
			}
			if _, err := r.queues.db.do("RPUSH", consumedKey, m.ID); err != nil {
				r.t.Errorf("recording a consumed entry on the server: %v", err)
			}
		}
		if finished && !got && !failed {
			return
		}
		if !got {
			pause(ctx, rng, time.Millisecond)
		}
	}
}

// ---- dedupe ----

// dedupePair delivers each of its n messages twice, from two workers with
// clients of their own that meet before each message, so that the two
// SetIfNotExists race. The delivery that gets true processes the message:
// it appends the message's id to a list on the server.
func (r *round) dedupePair(ctx context.Context, sides [2]*upstash.State, pair, n int) {
	meet := make(chan struct{})
	var wg sync.WaitGroup
	for side := 0; side < 2; side++ {
		wg.Add(1)
		go func(side int) {
			defer wg.Done()
			st := sides[side]
			for i := 0; i < n; i++ {
				if side == 0 {
					select {
					case meet <- struct{}{}:
					case <-ctx.Done():
						return
					}
				} else {
					select {
					case <-meet:
					case <-ctx.Done():
						return
					}
				}
				msg := fmt.Sprintf("m%d-%d", pair, i)
				cctx, cancel := context.WithTimeout(ctx, callTimeout)
				first, err := st.SetIfNotExists(cctx, dedupeKey(msg), fmt.Sprintf("delivery %d", side), dedupeTTL)
				cancel()
				r.chk.call("SetIfNotExists", err)
				if first {
					if _, err := r.dedupe.db.do("RPUSH", processedKey, msg); err != nil {
						r.t.Errorf("recording a processed message on the server: %v", err)
					}
				}
			}
		}(side)
	}
	wg.Wait()
}

// backingRedis talks to the server's backing Redis directly (not through
// the REST layer: no faults, no counters, and on the embedded backend no
// clock tick), for the checker's own records and reads.
type backingRedis struct{ pool *redis.Pool }

func newBackingRedis(addr string) *backingRedis {
	return &backingRedis{pool: &redis.Pool{
		MaxIdle: 32,
		Dial: func() (redis.Conn, error) {
			return redis.Dial("tcp", addr, redis.DialConnectTimeout(5*time.Second), redis.DialReadTimeout(30*time.Second), redis.DialWriteTimeout(30*time.Second))
		},
	}}
}

// do runs one command. The reply is redigo's: nil, int64, []byte, string
// or []any.
func (b *backingRedis) do(cmd string, args ...any) (any, error) {
	c := b.pool.Get()
	defer c.Close()
	return c.Do(cmd, args...)
}

func (b *backingRedis) close() { _ = b.pool.Close() }
