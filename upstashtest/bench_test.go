package upstashtest_test

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/chatstate/upstash/upstashtest"
)

// BenchmarkEmbeddedRequestManyTTLKeys measures one small REST request
// (GET, 8 clients at once) on the embedded backend while it holds 20,000
// keys with a TTL, as the stress suite's op records make it: the cost of
// keeping miniredis's TTLs on the wall clock grows with the keys.
func BenchmarkEmbeddedRequestManyTTLKeys(b *testing.B) {
	s := upstashtest.NewServer(b, upstashtest.WithEmbedded())
	const keys = 20000
	var seed strings.Builder
	seed.WriteString("[")
	for i := 0; i < keys; i++ {
		if i > 0 {
			seed.WriteString(",")
		}
		fmt.Fprintf(&seed, `["SET","k%d","v","PX",3600000]`, i)
	}
	seed.WriteString("]")
	if r := send(b, s, req{path: "/pipeline", body: seed.String()}); r.status != http.StatusOK {
		b.Fatalf("seeding: %d %s", r.status, r.body)
	}
	client := s.Client()
	b.SetParallelism(4) // 4 x GOMAXPROCS clients
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			r, err := http.NewRequest(http.MethodPost, s.URL, strings.NewReader(`["GET","k1"]`))
			if err != nil {
				b.Error(err)
				return
			}
			r.Header.Set("Authorization", "Bearer "+s.Token)
			res, err := client.Do(r)
			if err != nil {
				b.Error(err)
				return
			}
			body, err := io.ReadAll(res.Body)
			res.Body.Close()
			if err != nil || res.StatusCode != http.StatusOK || string(body) != `{"result":"v"}` {
				b.Errorf("GET: %d %s %v", res.StatusCode, body, err)
				return
			}
		}
	})
}
