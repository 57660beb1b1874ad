package upstashtest_test

import (
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/chatstate/upstash/upstashtest"
)

// Start runs a server without a testing.TB (as cmd/upstash-local does);
// Close stops it. Any HTTP client can talk to it like to Upstash.
func Example() {
	srv, err := upstashtest.Start(upstashtest.WithToken("example-token"))
	if err != nil {
		fmt.Println(err)
		return
	}
	defer srv.Close()

	req, _ := http.NewRequest("POST", srv.URL+"/pipeline",
		strings.NewReader(`[["SET","greeting","hello"],["GET","greeting"],["INCR","greeting"]]`))
	req.Header.Set("Authorization", "Bearer "+srv.Token)
	res, err := srv.Client().Do(req)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer res.Body.Close()
	body, _ := io.ReadAll(res.Body)
	fmt.Println(res.StatusCode, string(body))
	// Output:
	// 200 [{"result":"OK"},{"result":"hello"},{"error":"ERR value is not an integer or out of range"}]
}

// FailNext, ResetNext and DropResponseNext queue faults for the next
// requests, in arrival order.
func ExampleServer_FailNext() {
	srv, err := upstashtest.Start(upstashtest.WithEmbedded())
	if err != nil {
		fmt.Println(err)
		return
	}
	defer srv.Close()

	ping := func() {
		req, _ := http.NewRequest("POST", srv.URL, strings.NewReader(`["PING"]`))
		req.Header.Set("Authorization", "Bearer "+srv.Token)
		res, err := srv.Client().Do(req)
		if err != nil {
			fmt.Println("transport error")
			return
		}
		defer res.Body.Close()
		body, _ := io.ReadAll(res.Body)
		fmt.Println(res.StatusCode, string(body))
	}
	srv.FailNext(1, http.StatusServiceUnavailable)
	ping()
	ping()
	fmt.Println(srv.Stats().Requests["/"], "requests")
	// Output:
	// 503 {"error":"ERR upstashtest: injected fault (HTTP 503 Service Unavailable)"}
	// 200 {"result":"PONG"}
	// 2 requests
}
