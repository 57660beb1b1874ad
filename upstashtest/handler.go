package upstashtest

import (
	"crypto/subtle"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	"github.com/gomodule/redigo/redis"
)

// Error texts of the REST layer.
const (
	errUnauthorized   = "WRONGPASS invalid or missing auth token"
	errMaxRequestSize = "ERR max request size exceeded"
	errClosed         = "ERR upstashtest: server is closed"
	errInternal       = "ERR upstashtest: internal error"
)

// response is what a request is answered with.
type response struct {
	status int
	body   []byte
	wrote  bool // a command that can change data ran: move the sync token
}

func errorResponse(status int, text string) response {
	return response{status: status, body: marshalJSON(errorJSON{Error: text})}
}

func endpointOf(path string) string {
	switch path {
	case "", "/":
		return "/"
	case "/pipeline", "/pipeline/":
		return "/pipeline"
	case "/multi-exec", "/multi-exec/":
		return "/multi-exec"
	}
	return "path"
}

func (s *Server) serveHTTP(w http.ResponseWriter, r *http.Request) {
	s.lifeMu.Lock()
	if s.closed {
		s.lifeMu.Unlock()
		writeResponse(w, errorResponse(http.StatusServiceUnavailable, errClosed), "")
		return
	}
	s.inflight.Add(1)
	s.lifeMu.Unlock()
	defer s.inflight.Done()

	start := time.Now()
	endpoint := endpointOf(r.URL.Path)
	s.countRequest(endpoint)

	written := false
	defer func() {
		if v := recover(); v != nil {
			if v == http.ErrAbortHandler {
				panic(v)
			}
			s.log.Error("upstashtest: panic in handler", "panic", fmt.Sprint(v), "endpoint", endpoint)
			if !written {
				writeResponse(w, errorResponse(http.StatusInternalServerError, errInternal), "")
			}
		}
	}()

	fault := s.faults.next()
	if fault.kind != 0 {
		s.countFault(fault.kind)
	}
	if fault.latency > 0 {
		t := time.NewTimer(fault.latency)
		select {
		case <-t.C:
		case <-r.Context().Done():
			t.Stop()
			return
		case <-s.ctx.Done():
			t.Stop()
			written = true
			writeResponse(w, errorResponse(http.StatusServiceUnavailable, errClosed), "")
			return
		}
	}
	switch fault.kind {
	case FaultStatus:
		written = true
		writeResponse(w, errorResponse(fault.status, fmt.Sprintf("ERR upstashtest: injected fault (HTTP %d %s)", fault.status, http.StatusText(fault.status))), "")
		s.logRequest(r, endpoint, fault.status, start, "status")
		return
	case FaultReset:
		written = true
		s.logRequest(r, endpoint, 0, start, "reset")
		abortConnection(w)
		return
	}

	resp := s.handle(r, endpoint)
	token := ""
	if resp.status >= 200 && resp.status < 300 {
		token = s.syncToken(resp.wrote) // also for a dropped response: the write happened
	}
	if fault.kind == FaultDrop {
		written = true
		s.logRequest(r, endpoint, 0, start, "drop")
		abortConnection(w)
		return
	}
	written = true
	writeResponse(w, resp, token)
	s.logRequest(r, endpoint, resp.status, start, "")
}

func writeResponse(w http.ResponseWriter, resp response, syncToken string) {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	if syncToken != "" {
		h.Set("Upstash-Sync-Token", syncToken)
	}
	w.WriteHeader(resp.status)
	_, _ = w.Write(resp.body)
}

func (s *Server) logRequest(r *http.Request, endpoint string, status int, start time.Time, fault string) {
	// Never the query string (it may hold _token) nor headers.
	s.log.Debug("upstashtest: request", "method", r.Method, "endpoint", endpoint,
		"status", status, "fault", fault, "duration", time.Since(start))
}

// testHookHandle, when set by a test, runs at the start of handle.
var testHookHandle atomic.Pointer[func(*http.Request)]

// handle runs one request that got past fault injection.
func (s *Server) handle(r *http.Request, endpoint string) response {
	if hook := testHookHandle.Load(); hook != nil {
		(*hook)(r)
	}
	switch r.Method {
	case http.MethodHead, http.MethodGet, http.MethodPost, http.MethodPut:
	default:
		return errorResponse(http.StatusMethodNotAllowed,
			fmt.Sprintf("ERR method %s is not allowed, use HEAD, GET, POST or PUT", r.Method))
	}
	readOnly, ok := s.authenticate(r)
	if !ok {
		return errorResponse(http.StatusUnauthorized, errUnauthorized)
	}
	body, err := s.readBody(r)
	if err != nil {
		return errorResponse(http.StatusBadRequest, err.Error())
	}
	b64 := strings.EqualFold(strings.TrimSpace(r.Header.Get("Upstash-Encoding")), "base64")

	switch endpoint {
	case "/pipeline", "/multi-exec":
		what := "pipeline"
		if endpoint == "/multi-exec" {
			what = "transaction"
		}
		cmds, err := parseBatchBody(body, what)
		if err != nil {
			return errorResponse(http.StatusBadRequest, err.Error())
		}
		if endpoint == "/multi-exec" {
			return s.runMulti(cmds, readOnly, b64)
		}
		return s.runPipeline(cmds, readOnly, b64)
	case "/":
		cmd, err := parseCommandBody(body)
		if err != nil {
			return errorResponse(http.StatusBadRequest, err.Error())
		}
		return s.runSingle(cmd, readOnly, b64)
	default:
		cmd, err := parsePathCommand(r.URL, body)
		if err != nil {
			return errorResponse(http.StatusBadRequest, err.Error())
		}
		return s.runSingle(cmd, readOnly, b64)
	}
}

// authenticate checks the Bearer header, or the _token query parameter when
// there is no Authorization header.
func (s *Server) authenticate(r *http.Request) (readOnly, ok bool) {
	var got string
	if h := r.Header.Get("Authorization"); h != "" {
		scheme, tok, found := strings.Cut(strings.TrimSpace(h), " ")
		if !found || !strings.EqualFold(scheme, "Bearer") {
			return false, false
		}
		got = strings.TrimSpace(tok)
	} else {
		got = r.URL.Query().Get("_token")
	}
	if got == "" {
		return false, false
	}
	if subtle.ConstantTimeCompare([]byte(got), []byte(s.Token)) == 1 {
		return false, true
	}
	if s.ReadOnlyToken != "" && subtle.ConstantTimeCompare([]byte(got), []byte(s.ReadOnlyToken)) == 1 {
		return true, true
	}
	return false, false
}

// readBody reads at most the configured limit. A larger body is an error;
// the rest of it is drained (up to the limit again, never buffered) so
// that the client can read the answer, then the connection is closed.
func (s *Server) readBody(r *http.Request) ([]byte, error) {
	max := s.cfg.maxBody
	if r.ContentLength > max {
		_, _ = io.CopyN(io.Discard, r.Body, max)
		return nil, requestError(errMaxRequestSize)
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, max+1))
	if err != nil {
		return nil, badRequest("ERR failed to read the request body: %v", err)
	}
	if int64(len(body)) > max {
		_, _ = io.CopyN(io.Discard, r.Body, max)
		return nil, requestError(errMaxRequestSize)
	}
	return body, nil
}

func (s *Server) backendFailure(err error) response {
	s.log.Error("upstashtest: Redis call failed", "err", err)
	if s.ctx.Err() != nil {
		return errorResponse(http.StatusServiceUnavailable, errClosed)
	}
	return errorResponse(http.StatusServiceUnavailable, "ERR redis connection failed: "+err.Error())
}

func (s *Server) runSingle(cmd command, readOnly, b64 bool) response {
	if text := checkCommand(cmd.name, cmd.args, readOnly); text != "" {
		return errorResponse(http.StatusBadRequest, text)
	}
	s.be.tick(needsExactClock([]command{cmd}))
	replies, err := s.exec([]command{cmd})
	if err != nil {
		return s.backendFailure(err)
	}
	s.countCommands([]command{cmd})
	wrote := !isRead(cmd.name, cmd.args)
	if e, ok := replies[0].(redis.Error); ok {
		return response{status: http.StatusBadRequest, body: marshalJSON(errorJSON{Error: string(e)}), wrote: wrote}
	}
	return response{status: http.StatusOK, body: marshalJSON(resultJSON{Result: replyValue(replies[0], b64, true)}), wrote: wrote}
}

func (s *Server) runPipeline(cmds []command, readOnly, b64 bool) response {
	out := make([]interface{}, len(cmds))
	var run []command
	var runIdx []int
	for i, c := range cmds {
		if text := checkCommand(c.name, c.args, readOnly); text != "" {
			out[i] = errorJSON{Error: text}
			continue
		}
		run = append(run, c)
		runIdx = append(runIdx, i)
	}
	wrote := false
	if len(run) > 0 {
		s.be.tick(needsExactClock(run))
		replies, err := s.exec(run)
		if err != nil {
			return s.backendFailure(err)
		}
		s.countCommands(run)
		for j, rep := range replies {
			out[runIdx[j]] = elementJSON(rep, b64)
			if !isRead(run[j].name, run[j].args) {
				wrote = true
			}
		}
	}
	return response{status: http.StatusOK, body: marshalJSON(out), wrote: wrote}
}

func (s *Server) runMulti(cmds []command, readOnly, b64 bool) response {
	for _, c := range cmds {
		if text := checkCommand(c.name, c.args, readOnly); text != "" {
			return errorResponse(http.StatusBadRequest, text)
		}
	}
	s.be.tick(needsExactClock(cmds))
	replies, queueErr, err := s.execMulti(cmds)
	if err != nil {
		return s.backendFailure(err)
	}
	if queueErr != "" {
		return errorResponse(http.StatusBadRequest, string(queueErr))
	}
	s.countCommands(cmds)
	out := make([]interface{}, len(replies))
	wrote := false
	for i, rep := range replies {
		out[i] = elementJSON(rep, b64)
		if !isRead(cmds[i].name, cmds[i].args) {
			wrote = true
		}
	}
	return response{status: http.StatusOK, body: marshalJSON(out), wrote: wrote}
}

// exec runs cmds pipelined on the backend, scripts translated (see
// scripts.go).
func (s *Server) exec(cmds []command) ([]interface{}, error) {
	send, fixes := s.scripts.prepare(cmds)
	replies, err := s.be.do(s.ctx, send)
	if err != nil {
		return nil, err
	}
	applyReplyFixes(replies, fixes)
	return replies, nil
}

// execMulti runs cmds as a transaction on the backend, scripts translated.
func (s *Server) execMulti(cmds []command) ([]interface{}, redis.Error, error) {
	send, fixes := s.scripts.prepare(cmds)
	replies, queueErr, err := s.be.multiExec(s.ctx, send)
	if err != nil || queueErr != "" {
		return nil, queueErr, err
	}
	applyReplyFixes(replies, fixes)
	return replies, "", nil
}
