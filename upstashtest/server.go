package upstashtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/gomodule/redigo/redis"
)

// EnvRedis is the environment variable that picks the default backend:
// "redis-server" starts a private redis-server (like WithRedisServer), any
// other non-empty value is the address of an existing Redis (like
// WithRedisAddr). Explicit options win over it.
const EnvRedis = "UPSTASHTEST_REDIS"

// DefaultMaxRequestBytes is the default request size limit, Upstash's 10 MB
// on the Free and Pay-as-you-go plans.
const DefaultMaxRequestBytes = 10 * 1024 * 1024

// Server is an Upstash-compatible REST server for tests, backed by an
// embedded miniredis or a real Redis. Its methods are safe for concurrent
// use.
type Server struct {
	URL           string // "http://127.0.0.1:PORT", no trailing slash
	Token         string // full-access token
	ReadOnlyToken string // read-only token; empty when disabled with WithReadOnlyToken("")

	cfg     config
	log     *slog.Logger
	be      *backend
	handler http.Handler

	ctx    context.Context // cancelled by Close: aborts latency waits and Redis calls
	cancel context.CancelFunc

	httpSrv   *http.Server
	serveDone chan struct{}
	client    *http.Client

	lifeMu    sync.Mutex
	closed    bool
	inflight  sync.WaitGroup
	closeOnce sync.Once

	faults faultState

	scripts *scriptMap // translations of the scripts the server was given

	statsMu sync.Mutex
	stats   Stats

	syncMu     sync.Mutex
	syncPrefix string
	syncSeq    uint64
}

// Option configures a Server.
type Option func(*config)

type config struct {
	token       *string
	roToken     *string
	addr        string
	backend     backendKind
	redisAddr   string
	seed        int64
	logger      *slog.Logger
	maxBody     int64
	backendByOp bool // an option chose the backend (the env var is then ignored)
}

type backendKind int

const (
	backendEmbedded backendKind = iota
	backendExternal
	backendRedisServer
)

// WithToken sets the full-access token (default: 32 random hex digits). An
// empty token is replaced by a random one.
func WithToken(token string) Option { return func(c *config) { c.token = &token } }

// WithReadOnlyToken sets the read-only token (default: random). An empty
// string disables read-only access.
func WithReadOnlyToken(token string) Option { return func(c *config) { c.roToken = &token } }

// WithAddr sets the listen address (default "127.0.0.1:0", a free port).
func WithAddr(addr string) Option { return func(c *config) { c.addr = addr } }

// WithRedisAddr backs the server with an existing Redis, given as
// "host:port" or "redis://[user:password@]host:port[/db]". The server never
// flushes it by itself.
func WithRedisAddr(addr string) Option {
	return func(c *config) { c.backend, c.redisAddr, c.backendByOp = backendExternal, addr, true }
}

// WithRedisServer starts a private redis-server from PATH on a free
// 127.0.0.1 port (no persistence) and stops it on Close. The server makes
// sure that the Redis it talks to is that process, not another one that
// took the port first.
func WithRedisServer() Option {
	return func(c *config) { c.backend, c.backendByOp = backendRedisServer, true }
}

// WithEmbedded forces the embedded miniredis backend, whatever
// UPSTASHTEST_REDIS says.
func WithEmbedded() Option {
	return func(c *config) { c.backend, c.backendByOp = backendEmbedded, true }
}

// WithSeed seeds the PRNG behind SetFaultRate (default 1).
func WithSeed(seed int64) Option { return func(c *config) { c.seed = seed } }

// WithLogger sets the logger for requests and server errors (default:
// discard). Tokens are never logged.
func WithLogger(l *slog.Logger) Option { return func(c *config) { c.logger = l } }

// WithMaxRequestBytes sets the request body limit (default 10 MB). Larger
// bodies are answered 400 "ERR max request size exceeded".
func WithMaxRequestBytes(n int64) Option { return func(c *config) { c.maxBody = n } }

// NewServer starts a Server on a free 127.0.0.1 port and registers Close
// with t.Cleanup. It calls t.Fatal when the server or its Redis cannot be
// started; a requested real Redis never falls back to the embedded one.
func NewServer(t testing.TB, opts ...Option) *Server {
	t.Helper()
	s, err := Start(opts...)
	if err != nil {
		t.Fatalf("%v", err)
		return nil // reached only with a testing.TB whose Fatalf returns
	}
	t.Cleanup(s.Close)
	return s
}

// Start is NewServer without a testing.TB: the caller must Close the
// server.
func Start(opts ...Option) (*Server, error) {
	s, err := newServer(opts...)
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", s.cfg.addr)
	if err != nil {
		s.cancel()
		s.be.close()
		return nil, fmt.Errorf("upstashtest: listening on %s: %w", s.cfg.addr, err)
	}
	s.URL = "http://" + ln.Addr().String()
	s.httpSrv = &http.Server{
		Handler:           s.handler,
		ReadHeaderTimeout: 30 * time.Second,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
	}
	s.serveDone = make(chan struct{})
	go func() {
		defer close(s.serveDone)
		if err := s.httpSrv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.log.Error("upstashtest: HTTP server stopped", "err", err)
		}
	}()
	s.log.Info("upstashtest: serving", "url", s.URL, "redis", s.be.addr, "embedded", s.Embedded())
	return s, nil
}

func newServer(opts ...Option) (*Server, error) {
	cfg := config{addr: "127.0.0.1:0", seed: 1, maxBody: DefaultMaxRequestBytes}
	for _, o := range opts {
		o(&cfg)
	}
	if !cfg.backendByOp {
		switch v := os.Getenv(EnvRedis); v {
		case "":
		case "redis-server":
			cfg.backend = backendRedisServer
		default:
			cfg.backend, cfg.redisAddr = backendExternal, v
		}
	}
	if cfg.maxBody <= 0 {
		cfg.maxBody = DefaultMaxRequestBytes
	}
	s := &Server{cfg: cfg, log: cfg.logger}
	if s.log == nil {
		s.log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	var err error
	if s.Token, err = tokenOrRandom(cfg.token, false); err != nil {
		return nil, err
	}
	if s.ReadOnlyToken, err = tokenOrRandom(cfg.roToken, true); err != nil {
		return nil, err
	}
	if s.syncPrefix, err = randomHex(8); err != nil {
		return nil, err
	}
	s.faults.init(cfg.seed)
	s.stats = newStats()
	s.ctx, s.cancel = context.WithCancel(context.Background())

	startCtx, cancel := context.WithTimeout(s.ctx, 15*time.Second)
	defer cancel()
	switch cfg.backend {
	case backendRedisServer:
		s.be, err = newRedisServerBackend(startCtx)
	case backendExternal:
		s.be, err = newExternalBackend(startCtx, cfg.redisAddr)
	default:
		s.be, err = newEmbeddedBackend()
	}
	if err != nil {
		s.cancel()
		if !cfg.backendByOp {
			err = fmt.Errorf("%w (backend chosen by %s=%q; unset it for the embedded one)", err, EnvRedis, redactURL(os.Getenv(EnvRedis)))
		}
		return nil, err
	}
	s.scripts = newScriptMap(s.be.mr != nil)
	s.handler = http.HandlerFunc(s.serveHTTP)
	return s, nil
}

func tokenOrRandom(p *string, emptyDisables bool) (string, error) {
	if p != nil && (*p != "" || emptyDisables) {
		return *p, nil
	}
	return randomHex(16)
}

func randomHex(n int) (string, error) {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("upstashtest: reading random bytes: %w", err)
	}
	return hex.EncodeToString(b), nil
}

// Close stops the HTTP server, waits for the requests in flight, and stops
// the backend (and the redis-server it started). It is idempotent.
func (s *Server) Close() {
	s.closeOnce.Do(func() {
		s.lifeMu.Lock()
		s.closed = true
		s.lifeMu.Unlock()
		s.cancel()
		if s.httpSrv != nil {
			s.httpSrv.Close()
			<-s.serveDone
		}
		s.inflight.Wait()
		s.lifeMu.Lock()
		client := s.client
		s.lifeMu.Unlock()
		if client != nil {
			client.CloseIdleConnections()
		}
		s.be.close()
	})
}

// Handler returns the REST handler, to mount on another server. Requests
// it serves count in Stats and see the faults like any other.
func (s *Server) Handler() http.Handler { return s.handler }

// Client returns an HTTP client with its own transport, whose idle
// connections are closed by Close.
func (s *Server) Client() *http.Client {
	s.lifeMu.Lock()
	defer s.lifeMu.Unlock()
	if s.client == nil {
		s.client = &http.Client{Transport: &http.Transport{
			Proxy:             nil,
			DialContext:       (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
			ForceAttemptHTTP2: false,
			MaxIdleConns:      16,
			IdleConnTimeout:   30 * time.Second,
		}}
	}
	return s.client
}

// RedisAddr returns the host:port of the backing Redis.
func (s *Server) RedisAddr() string { return s.be.addr }

// Embedded reports whether the server is backed by the embedded miniredis.
func (s *Server) Embedded() bool { return s.be.mr != nil }

// FastForward moves the embedded Redis clock forward by d, expiring keys
// whose TTL runs out, on top of the real time that passes anyway (the
// clock is first brought exactly to the wall clock). It returns an error
// on a real Redis.
func (s *Server) FastForward(d time.Duration) error {
	if s.be.mr == nil {
		return errNotEmbedded
	}
	s.be.tick(true)
	s.be.mr.FastForward(d)
	return nil
}

// FlushAll deletes every key of the backing Redis (FLUSHALL: all of its
// databases).
func (s *Server) FlushAll() error {
	_, err := s.Do("FLUSHALL")
	return err
}

// Do runs one command directly on the backing Redis, bypassing the REST
// layer, faults and counters; use it to seed or inspect data. Scripts sent
// through Do are not translated (see the package documentation), and
// expiry times are not checked. The reply is redigo's: nil, int64, []byte
// (bulk), string (status) or []interface{}.
func (s *Server) Do(cmd string, args ...interface{}) (interface{}, error) {
	ctx, cancel := context.WithTimeout(s.ctx, 30*time.Second)
	defer cancel()
	s.be.tick(true)
	c, err := s.be.pool.GetContext(ctx)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	return redis.DoContext(c, ctx, cmd, args...)
}

// Stats are request and command counters.
type Stats struct {
	// Requests counts every HTTP request received, by endpoint: "/"
	// (command in the body), "/pipeline", "/multi-exec", or "path"
	// (path-style command).
	Requests map[string]int64
	// Commands counts the commands sent to Redis, by upper-case name.
	// Commands refused before reaching Redis (NOPERM, unsupported, faults)
	// are not counted; a discarded transaction counts none of its commands.
	Commands map[string]int64
	// Faults counts injected faults by kind (FailNext, ResetNext and
	// DropResponseNext count as FaultStatus, FaultReset and FaultDrop;
	// SetLatency is not counted).
	Faults map[Fault]int64

	TotalRequests, TotalCommands int64
}

func newStats() Stats {
	return Stats{Requests: map[string]int64{}, Commands: map[string]int64{}, Faults: map[Fault]int64{}}
}

// Stats returns a copy of the counters.
func (s *Server) Stats() Stats {
	s.statsMu.Lock()
	defer s.statsMu.Unlock()
	out := newStats()
	for k, v := range s.stats.Requests {
		out.Requests[k] = v
	}
	for k, v := range s.stats.Commands {
		out.Commands[k] = v
	}
	for k, v := range s.stats.Faults {
		out.Faults[k] = v
	}
	out.TotalRequests, out.TotalCommands = s.stats.TotalRequests, s.stats.TotalCommands
	return out
}

// ResetStats sets every counter to zero.
func (s *Server) ResetStats() {
	s.statsMu.Lock()
	defer s.statsMu.Unlock()
	s.stats = newStats()
}

func (s *Server) countRequest(endpoint string) {
	s.statsMu.Lock()
	defer s.statsMu.Unlock()
	s.stats.Requests[endpoint]++
	s.stats.TotalRequests++
}

func (s *Server) countCommands(cmds []command) {
	s.statsMu.Lock()
	defer s.statsMu.Unlock()
	for _, c := range cmds {
		s.stats.Commands[c.name]++
		s.stats.TotalCommands++
	}
}

func (s *Server) countFault(f Fault) {
	s.statsMu.Lock()
	defer s.statsMu.Unlock()
	s.stats.Faults[f]++
}

// syncToken returns the current sync token, first moving it on when the
// request wrote.
func (s *Server) syncToken(wrote bool) string {
	s.syncMu.Lock()
	defer s.syncMu.Unlock()
	if wrote {
		s.syncSeq++
	}
	return fmt.Sprintf("%s-%d", s.syncPrefix, s.syncSeq)
}
