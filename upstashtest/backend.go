package upstashtest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/gomodule/redigo/redis"
)

// backend is the Redis behind the REST server: an embedded miniredis, a
// private redis-server process, or an existing Redis. All three are spoken
// to over TCP with redigo, through one code path.
type backend struct {
	addr string // host:port
	pool *redis.Pool

	mr *miniredis.Miniredis // embedded only

	// The clock keeps miniredis TTLs running in real time (see tick).
	clockMu   sync.Mutex   // held while the clock is moved
	clockBase time.Time    // origin of lastTick, with its monotonic reading
	lastTick  atomic.Int64 // the wall-clock time the clock was last moved to, in ns since clockBase
	now       func() time.Time
	// For tests: the number of times the clock was moved, and a hook run
	// before tick waits for clockMu.
	clockMoves    atomic.Int64
	hookClockWait func()

	proc     *exec.Cmd     // private redis-server only
	procDone chan struct{} // closed when proc has been waited for
	procErr  error
	tmpDir   string
}

// redisServerHint is appended to errors about a missing redis-server.
const redisServerHint = "install it (apt-get install -y redis-server) or use the embedded backend"

// testHookClock, when set by a test, is the wall clock of the embedded
// backends created from then on.
var testHookClock atomic.Pointer[func() time.Time]

func newEmbeddedBackend() (*backend, error) {
	mr := miniredis.NewMiniRedis()
	if err := mr.StartAddr("127.0.0.1:0"); err != nil {
		return nil, fmt.Errorf("upstashtest: starting embedded miniredis: %w", err)
	}
	now := time.Now
	if hook := testHookClock.Load(); hook != nil {
		now = *hook
	}
	b := &backend{addr: mr.Addr(), mr: mr, clockBase: now(), now: now}
	b.pool = newPool("redis://" + b.addr)
	return b, nil
}

// newExternalBackend connects to an existing Redis given as "host:port" or
// "redis://host:port[/db]" and checks that it answers PING.
func newExternalBackend(ctx context.Context, addr string) (*backend, error) {
	rawURL := addr
	if !strings.Contains(addr, "://") {
		rawURL = "redis://" + addr
	}
	u, err := url.Parse(rawURL)
	if err != nil || (u.Scheme != "redis" && u.Scheme != "rediss") || u.Host == "" {
		return nil, fmt.Errorf("upstashtest: bad Redis address %q: want host:port or redis://host:port[/db]", redactURL(addr))
	}
	host := u.Host
	if u.Port() == "" {
		host = net.JoinHostPort(u.Hostname(), "6379")
	}
	b := &backend{addr: host, pool: newPool(rawURL)}
	if err := b.ping(ctx); err != nil {
		b.pool.Close()
		return nil, fmt.Errorf("upstashtest: Redis at %s is unreachable: %w", redactURL(addr), err)
	}
	return b, nil
}

// newRedisServerBackend starts a private redis-server from PATH on a free
// 127.0.0.1 port, without persistence.
func newRedisServerBackend(ctx context.Context) (*backend, error) {
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		return nil, fmt.Errorf("upstashtest: a real Redis was requested (WithRedisServer or UPSTASHTEST_REDIS=redis-server) but redis-server is not on PATH: %w; %s", err, redisServerHint)
	}
	var lastErr error
	for attempt := 0; attempt < 5; attempt++ {
		b, err := startRedisServer(ctx, bin)
		if err == nil {
			return b, nil
		}
		lastErr = err
		if ctx.Err() != nil {
			break
		}
	}
	return nil, lastErr
}

// testHookFreePort, when set by a test, replaces freePort when a private
// redis-server is started.
var testHookFreePort atomic.Pointer[func() (int, error)]

func startRedisServer(ctx context.Context, bin string) (*backend, error) {
	pickPort := freePort
	if hook := testHookFreePort.Load(); hook != nil {
		pickPort = *hook
	}
	port, err := pickPort()
	if err != nil {
		return nil, fmt.Errorf("upstashtest: finding a free port for redis-server: %w", err)
	}
	dir, err := os.MkdirTemp("", "upstashtest-redis-")
	if err != nil {
		return nil, fmt.Errorf("upstashtest: %w", err)
	}
	logFile := filepath.Join(dir, "redis.log")
	cmd := exec.Command(bin,
		"--port", strconv.Itoa(port),
		"--bind", "127.0.0.1",
		"--save", "",
		"--appendonly", "no",
		"--daemonize", "no",
		"--dir", dir,
		"--logfile", logFile,
	)
	cmd.Dir = dir
	killWithParent(cmd)
	if err := cmd.Start(); err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("upstashtest: starting redis-server: %w", err)
	}
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	b := &backend{addr: addr, proc: cmd, procDone: make(chan struct{}), tmpDir: dir}
	go func() {
		b.procErr = cmd.Wait()
		close(b.procDone)
	}()
	b.pool = newPool("redis://" + addr)

	deadline := time.Now().Add(10 * time.Second)
	for {
		pctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
		err := b.ping(pctx)
		cancel()
		if err == nil {
			// Something answers on the port, but it may be another Redis
			// that took the port between freePort and redis-server's bind
			// (another test's redis-server or embedded miniredis): then
			// this redis-server exits, and the server would share that
			// Redis, and send scripts translated for a real Redis to what
			// may be a miniredis.
			cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			err = b.checkProcess(cctx, cmd.Process.Pid)
			cancel()
			if err == nil {
				return b, nil
			}
			b.close()
			return nil, fmt.Errorf("upstashtest: redis-server on port %d: %w", port, err)
		}
		select {
		case <-b.procDone:
			log, _ := os.ReadFile(logFile)
			b.close()
			return nil, fmt.Errorf("upstashtest: redis-server on port %d exited (%v): %s", port, b.procErr, lastLines(string(log), 5))
		default:
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			b.close()
			return nil, fmt.Errorf("upstashtest: redis-server on port %d did not answer PING: %w", port, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// checkProcess checks that the Redis at b.addr is the process pid, from
// the process_id of INFO server.
func (b *backend) checkProcess(ctx context.Context, pid int) error {
	c, err := b.pool.GetContext(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	info, err := redis.String(redis.DoContext(c, ctx, "INFO", "server"))
	got := ""
	for _, line := range strings.Split(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "process_id:"); ok {
			got = v
			break
		}
	}
	if err == nil && got == strconv.Itoa(pid) {
		return nil
	}
	if got == "" {
		got = "unknown"
	}
	return fmt.Errorf("the port is served by another Redis (process_id %s, not %d): it was taken after it was chosen", got, pid)
}

func newPool(rawURL string) *redis.Pool {
	return &redis.Pool{
		MaxIdle:     16,
		IdleTimeout: 2 * time.Minute,
		DialContext: func(ctx context.Context) (redis.Conn, error) {
			return redis.DialURLContext(ctx, rawURL,
				redis.DialConnectTimeout(5*time.Second),
				redis.DialWriteTimeout(30*time.Second),
			)
		},
		TestOnBorrowContext: func(ctx context.Context, c redis.Conn, lastUsed time.Time) error {
			if time.Since(lastUsed) < 10*time.Second {
				return nil
			}
			_, err := redis.DoContext(c, ctx, "PING")
			return err
		},
	}
}

func (b *backend) ping(ctx context.Context) error {
	c, err := b.pool.GetContext(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	_, err = redis.DoContext(c, ctx, "PING")
	return err
}

// clockStep is how far the embedded backend's clock may lag behind the
// wall clock when a request that does not need it exact runs (see tick).
const clockStep = 5 * time.Millisecond

// tick moves the miniredis clock on to the wall clock, so that TTLs expire
// in real time. miniredis keeps each TTL as the time left, and its
// FastForward walks (and sorts) every key: moving the clock before every
// request cost more the more keys there were (a quarter of the CPU of the
// stress suite). Unless exact is set, tick therefore leaves the clock
// alone when it was moved to a time less than clockStep before this call
// (for this request or one that came just before), so a request runs with
// the clock at most clockStep behind the time it reached tick: a key can
// be seen up to clockStep after its TTL ran out, PTTL inside a script can
// read up to clockStep high, and a TTL a script sets runs out up to
// clockStep early (requests whose commands set or read a TTL move the
// clock exactly: see exactClockCommands). Requests
// that arrive while the clock is being moved wait for it, and do not move
// it again. With exact, the clock is moved to now whatever the lag.
func (b *backend) tick(exact bool) {
	if b.mr == nil {
		return
	}
	arrived := int64(b.now().Sub(b.clockBase))
	if !exact && arrived-b.lastTick.Load() < int64(clockStep) {
		return
	}
	if b.hookClockWait != nil {
		b.hookClockWait()
	}
	b.clockMu.Lock()
	defer b.clockMu.Unlock()
	last := b.lastTick.Load()
	if !exact && arrived-last < int64(clockStep) {
		return // moved while this request waited
	}
	now := int64(b.now().Sub(b.clockBase))
	if now > last {
		b.mr.FastForward(time.Duration(now - last))
		b.lastTick.Store(now)
		b.clockMoves.Add(1)
	}
}

// exactClockCommands are the commands whose reply shows the time left
// before a key or field expires, or that set it: a request holding one
// moves the embedded clock exactly (see tick), so that its reply is exact
// and a TTL it sets starts from now (a TTL set while the clock lags would
// run out up to that lag early). SET counts when it has an expiry option.
var exactClockCommands = setOf(
	"TTL", "PTTL", "EXPIRETIME", "PEXPIRETIME", "HTTL", "HPTTL", "HEXPIRETIME", "HPEXPIRETIME",
	"EXPIRE", "PEXPIRE", "EXPIREAT", "PEXPIREAT", "SETEX", "PSETEX", "GETEX",
	"HEXPIRE", "HPEXPIRE", "HEXPIREAT", "HPEXPIREAT", "RESTORE",
)

// needsExactClock reports whether one of cmds needs the exact clock (see
// exactClockCommands).
func needsExactClock(cmds []command) bool {
	for _, c := range cmds {
		if exactClockCommands[c.name] {
			return true
		}
		if c.name == "SET" {
			for _, a := range c.args[min(len(c.args), 2):] {
				switch strings.ToUpper(string(a)) {
				case "EX", "PX", "EXAT", "PXAT":
					return true
				}
			}
		}
	}
	return false
}

// testHookBackendSend, when set by a test, sees the commands of each
// request as they are sent to the backend (the MULTI around a transaction
// left out).
var testHookBackendSend atomic.Pointer[func([]command)]

// do runs cmds pipelined on one connection and returns one reply per
// command (a redis.Error for a command error). The error is a connection
// problem.
func (b *backend) do(ctx context.Context, cmds []command) ([]interface{}, error) {
	c, err := b.pool.GetContext(ctx)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	send, fix := b.fixups(cmds)
	if hook := testHookBackendSend.Load(); hook != nil {
		(*hook)(send)
	}
	replies, err := sendAll(ctx, c, send)
	if err != nil {
		return nil, err
	}
	return applyFixups(replies, fix), nil
}

// fixups returns the commands to send and, for the embedded backend, the
// reply fixups (see embeddedFixup and expiryCheck).
func (b *backend) fixups(cmds []command) ([]command, []func(interface{}) interface{}) {
	if b.mr == nil {
		return cmds, nil
	}
	send := make([]command, len(cmds))
	fix := make([]func(interface{}) interface{}, len(cmds))
	nowMs := time.Now().UnixMilli()
	for i, c := range cmds {
		c, errText := expiryCheck(c, nowMs)
		if errText != "" {
			send[i], fix[i] = errorReply(errText)
			continue
		}
		send[i], fix[i] = embeddedFixup(c)
	}
	return send, fix
}

func applyFixups(replies []interface{}, fix []func(interface{}) interface{}) []interface{} {
	for i, f := range fix {
		if f == nil {
			continue
		}
		if _, isErr := replies[i].(redis.Error); !isErr {
			replies[i] = f(replies[i])
		}
	}
	return replies
}

// sendAll pipelines cmds on c and reads one reply per command.
func sendAll(ctx context.Context, c redis.Conn, cmds []command) ([]interface{}, error) {
	for _, cmd := range cmds {
		if err := c.Send(cmd.name, cmd.redisArgs()...); err != nil {
			return nil, err
		}
	}
	r, err := redis.DoContext(c, ctx, "")
	if err != nil {
		return nil, err
	}
	replies, ok := r.([]interface{})
	if !ok || len(replies) != len(cmds) {
		return nil, fmt.Errorf("unexpected pipeline reply %T", r)
	}
	return replies, nil
}

// multiExec runs cmds as MULTI ... EXEC on one connection. When a command
// is refused while queueing, the transaction is discarded (DISCARD, not
// EXEC, so that a backend which does not flag the transaction itself still
// runs nothing) and queueErr is that first refusal.
func (b *backend) multiExec(ctx context.Context, cmds []command) (replies []interface{}, queueErr redis.Error, err error) {
	c, err := b.pool.GetContext(ctx)
	if err != nil {
		return nil, "", err
	}
	defer c.Close()
	send, fix := b.fixups(cmds)
	if hook := testHookBackendSend.Load(); hook != nil {
		(*hook)(send)
	}
	queued, err := sendAll(ctx, c, append([]command{{name: "MULTI"}}, send...))
	if err != nil {
		return nil, "", err
	}
	for _, q := range queued {
		if e, ok := q.(redis.Error); ok {
			queueErr = e
			break
		}
	}
	if queueErr != "" {
		if _, err := redis.DoContext(c, ctx, "DISCARD"); err != nil {
			if _, isRedisErr := err.(redis.Error); !isRedisErr {
				return nil, "", err
			}
		}
		return nil, queueErr, nil
	}
	r, err := redis.DoContext(c, ctx, "EXEC")
	if e, ok := err.(redis.Error); ok {
		return nil, e, nil
	}
	if err != nil {
		return nil, "", err
	}
	exec, ok := r.([]interface{})
	if !ok || len(exec) != len(cmds) {
		return nil, "", fmt.Errorf("unexpected EXEC reply %T for %d commands", r, len(cmds))
	}
	return applyFixups(exec, fix), "", nil
}

func (b *backend) close() {
	if b.pool != nil {
		b.pool.Close()
	}
	if b.mr != nil {
		b.mr.Close()
	}
	if b.proc != nil {
		select {
		case <-b.procDone:
		default:
			_ = b.proc.Process.Signal(syscall.SIGTERM)
			select {
			case <-b.procDone:
			case <-time.After(5 * time.Second):
				_ = b.proc.Process.Kill()
				<-b.procDone
			}
		}
	}
	if b.tmpDir != "" {
		os.RemoveAll(b.tmpDir)
	}
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, " | ")
}

// redactURL hides a password in a redis:// URL.
func redactURL(s string) string {
	u, err := url.Parse(s)
	if err != nil || u.User == nil {
		return s
	}
	if _, has := u.User.Password(); has {
		u.User = url.UserPassword(u.User.Username(), "xxxxx")
	}
	return u.String()
}

var errNotEmbedded = errors.New("upstashtest: FastForward needs the embedded backend (miniredis); this server uses a real Redis, whose TTLs run on its own clock")
