package upstashtest_test

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"reflect"
	"strings"
	"testing"

	"github.com/chatstate/upstash/internal/testtool"

	"github.com/chatstate/upstash/upstashtest"
)

// eachBackend runs fn against an embedded server and against one backed by
// a private redis-server. Without redis-server on PATH the second subtest
// is skipped, or fails when CI is set.
func eachBackend(t *testing.T, fn func(t *testing.T, s *upstashtest.Server), opts ...upstashtest.Option) {
	t.Helper()
	t.Run("embedded", func(t *testing.T) {
		fn(t, upstashtest.NewServer(t, append(opts, upstashtest.WithEmbedded())...))
	})
	t.Run("redis-server", func(t *testing.T) {
		testtool.RequireRedisServer(t)
		fn(t, upstashtest.NewServer(t, append(opts, upstashtest.WithRedisServer())...))
	})
}

// req is one raw HTTP request to a Server.
type req struct {
	method string // default POST
	path   string // default "/"
	body   string
	token  string // default the server's full token; "-" sends none
	header map[string]string
}

type resp struct {
	status int
	header http.Header
	body   string
}

// send does r against s with a plain net/http client and no keep-alive,
// so that every request has its own connection.
func send(t testing.TB, s *upstashtest.Server, r req) resp {
	t.Helper()
	res, err := sendErr(s, r)
	if err != nil {
		t.Fatalf("%s %s: %v", r.method, r.path, err)
	}
	return res
}

func sendErr(s *upstashtest.Server, r req) (resp, error) {
	method, path := r.method, r.path
	if method == "" {
		method = http.MethodPost
	}
	if path == "" {
		path = "/"
	}
	var body io.Reader
	if r.body != "" {
		body = strings.NewReader(r.body)
	}
	hr, err := http.NewRequest(method, s.URL+path, body)
	if err != nil {
		return resp{}, err
	}
	switch r.token {
	case "":
		hr.Header.Set("Authorization", "Bearer "+s.Token)
	case "-":
	default:
		hr.Header.Set("Authorization", "Bearer "+r.token)
	}
	for k, v := range r.header {
		hr.Header.Set(k, v)
	}
	hr.Close = true
	res, err := noKeepAlive.Do(hr)
	if err != nil {
		return resp{}, err
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		return resp{}, err
	}
	return resp{status: res.StatusCode, header: res.Header, body: string(b)}, nil
}

var noKeepAlive = &http.Client{Transport: &http.Transport{DisableKeepAlives: true, Proxy: nil}}

// cmd posts one JSON command to / and returns the response.
func cmd(t testing.TB, s *upstashtest.Server, args ...interface{}) resp {
	t.Helper()
	return send(t, s, req{body: mustJSON(t, args)})
}

func mustJSON(t testing.TB, v interface{}) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// expect checks the status and that the body is JSON equal to want.
func expect(t testing.TB, got resp, status int, want string) {
	t.Helper()
	if got.status != status {
		t.Errorf("status = %d, want %d (body %s)", got.status, status, got.body)
	}
	if !jsonEqual(got.body, want) {
		t.Errorf("body = %s\nwant   %s", got.body, want)
	}
	if ct := got.header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type = %q, want application/json", ct)
	}
}

// expectError checks the status and that the body is exactly
// {"error": <text starting with prefix>}.
func expectError(t testing.TB, got resp, status int, prefix string) {
	t.Helper()
	if got.status != status {
		t.Errorf("status = %d, want %d (body %s)", got.status, status, got.body)
	}
	var m map[string]interface{}
	if err := json.Unmarshal([]byte(got.body), &m); err != nil {
		t.Fatalf("body %q is not a JSON object: %v", got.body, err)
	}
	e, ok := m["error"].(string)
	if !ok || len(m) != 1 {
		t.Fatalf("body %s: want exactly one string field \"error\"", got.body)
	}
	if !strings.HasPrefix(e, prefix) {
		t.Errorf("error = %q, want prefix %q", e, prefix)
	}
}

func jsonEqual(a, b string) bool {
	va, errA := decodeJSON(a)
	vb, errB := decodeJSON(b)
	return errA == nil && errB == nil && reflect.DeepEqual(va, vb)
}

func decodeJSON(s string) (interface{}, error) {
	dec := json.NewDecoder(bytes.NewReader([]byte(s)))
	dec.UseNumber()
	var v interface{}
	err := dec.Decode(&v)
	return v, err
}

// get reads a key directly from the backing Redis (nil when missing).
func get(t testing.TB, s *upstashtest.Server, key string) interface{} {
	t.Helper()
	v, err := s.Do("GET", key)
	if err != nil {
		t.Fatalf("GET %s: %v", key, err)
	}
	if b, ok := v.([]byte); ok {
		return string(b)
	}
	return v
}
