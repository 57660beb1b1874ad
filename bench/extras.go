package main

import (
	"archive/zip"
	"bufio"
	"bytes"
	"compress/gzip"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
)

// lambdaCommand is the README's build of the Lambda bootstrap.
const lambdaCommand = "GOOS=linux GOARCH=arm64 CGO_ENABLED=0 go build -tags lambda.norpc -ldflags='-s -w' -o bootstrap ./examples/lambda"

// wasmProgram is the small State program built for js/wasm when
// examples/edge does not exist: configuration from the environment, a
// client, a State, one lock.
const wasmProgram = `package main

import (
	"context"
	"fmt"
	"time"

	"github.com/chatstate/upstash"
)

func main() {
	cfg, err := upstash.ConfigFromEnv()
	if err != nil {
		fmt.Println(err)
		return
	}
	c, err := upstash.New(cfg)
	if err != nil {
		fmt.Println(err)
		return
	}
	lock, err := upstash.NewState(c).AcquireLock(context.Background(), "edge", 30*time.Second)
	fmt.Println(lock != nil, err)
}
`

// measureSizes builds the Lambda bootstrap and a js/wasm State program and
// reports their sizes, raw and compressed as they are shipped (zip for
// Lambda, gzip for a wasm file served over HTTP).
func measureSizes(root, tmp string, log logf) []sizeRecord {
	var out []sizeRecord

	log("building the Lambda bootstrap (linux/arm64)")
	lambda := sizeRecord{Kind: "size", Name: "lambda-bootstrap", Command: lambdaCommand, Source: "./examples/lambda", Packing: "zip"}
	bin := filepath.Join(tmp, "bootstrap")
	cmd := goCommand(root, []string{"GOOS=linux", "GOARCH=arm64", "CGO_ENABLED=0"},
		"build", "-tags", "lambda.norpc", "-ldflags=-s -w", "-o", bin, "./examples/lambda")
	if b, err := cmd.CombinedOutput(); err != nil {
		lambda.Error = fmt.Sprintf("%v: %s", err, strings.TrimSpace(string(b)))
	} else {
		lambda.Bytes, lambda.Compressed, lambda.Error = sizeAndZip(bin)
	}
	out = append(out, lambda)

	log("building a js/wasm State program")
	out = append(out, wasmSize(root, tmp))
	return out
}

func sizeAndZip(path string) (int64, int64, string) {
	data, err := os.ReadFile(path)
	if err != nil {
		return 0, 0, err.Error()
	}
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	w, err := zw.CreateHeader(&zip.FileHeader{Name: filepath.Base(path), Method: zip.Deflate})
	if err == nil {
		_, err = w.Write(data)
	}
	if err == nil {
		err = zw.Close()
	}
	if err != nil {
		return 0, 0, err.Error()
	}
	return int64(len(data)), int64(buf.Len()), ""
}

func gzipSize(data []byte) int64 {
	var buf bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&buf, gzip.BestCompression)
	_, _ = zw.Write(data)
	_ = zw.Close()
	return int64(buf.Len())
}

// wasmSize builds examples/edge for js/wasm when it exists, otherwise
// wasmProgram in a temporary module that points at this one.
func wasmSize(root, tmp string) sizeRecord {
	rec := sizeRecord{Kind: "size", Name: "js-wasm", Packing: "gzip -9"}
	wasm := filepath.Join(tmp, "state.wasm")
	env := []string{"GOOS=js", "GOARCH=wasm"}
	dir, pkg := root, "./examples/edge"
	if matches, _ := filepath.Glob(filepath.Join(root, "examples", "edge", "*.go")); len(matches) > 0 {
		rec.Source = "./examples/edge"
	} else {
		dir, pkg = filepath.Join(tmp, "wasmprobe"), "."
		rec.Source = "a small State program in a temporary module (ConfigFromEnv, New, NewState, AcquireLock; examples/edge does not exist yet)"
		if err := writeProbe(root, dir); err != nil {
			rec.Error = err.Error()
			return rec
		}
		env = append(env, "GOFLAGS=-mod=mod -buildvcs=false")
	}
	rec.Command = "GOOS=js GOARCH=wasm go build -ldflags='-s -w' -o state.wasm " + pkg
	cmd := goCommand(dir, env, "build", "-ldflags=-s -w", "-o", wasm, pkg)
	if b, err := cmd.CombinedOutput(); err != nil {
		rec.Error = fmt.Sprintf("%v: %s", err, strings.TrimSpace(string(b)))
		return rec
	}
	data, err := os.ReadFile(wasm)
	if err != nil {
		rec.Error = err.Error()
		return rec
	}
	rec.Bytes, rec.Compressed = int64(len(data)), gzipSize(data)
	return rec
}

// writeProbe writes wasmProgram as a module that requires this one through
// a replace directive, with this module's go.sum (no download needed).
func writeProbe(root, dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	sum, err := os.ReadFile(filepath.Join(root, "go.sum"))
	if err != nil {
		return err
	}
	mod := fmt.Sprintf("module wasmprobe\n\ngo 1.22\n\nrequire github.com/chatstate/upstash v0.0.0\n\nreplace github.com/chatstate/upstash => %s\n", root)
	for name, data := range map[string][]byte{"go.mod": []byte(mod), "go.sum": sum, "main.go": []byte(wasmProgram)} {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o644); err != nil {
			return err
		}
	}
	return nil
}

var benchLine = regexp.MustCompile(`^(Benchmark\S+?)(?:-\d+)?\s+\d+\s+([\d.]+) ns/op(.*)$`)

// runGoBench runs the root package's benchmarks and parses their lines.
func runGoBench(root, benchtime string, log logf) ([]benchRecord, string) {
	log("go test -run '^$' -bench . -benchmem -benchtime %s . (root package)", benchtime)
	cmd := goCommand(root, nil, "test", "-run", "^$", "-bench", ".", "-benchmem", "-benchtime", benchtime, "-count", "1", ".")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	recs := parseBench(&out)
	if err != nil {
		return recs, fmt.Sprintf("%v: %s", err, lastLines(out.String(), 20))
	}
	return recs, ""
}

func parseBench(r io.Reader) []benchRecord {
	var recs []benchRecord
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		m := benchLine.FindStringSubmatch(strings.TrimSpace(sc.Text()))
		if m == nil {
			continue
		}
		b := benchRecord{Kind: "gobench", Name: m[1]}
		b.NsPerOp, _ = strconv.ParseFloat(m[2], 64)
		f := strings.Fields(m[3])
		for i := 0; i+1 < len(f); i += 2 {
			switch f[i+1] {
			case "B/op":
				if v, err := strconv.ParseInt(f[i], 10, 64); err == nil {
					b.BytesPerOp = &v
				}
			case "allocs/op":
				if v, err := strconv.ParseInt(f[i], 10, 64); err == nil {
					b.AllocsPerOp = &v
				}
			case "MB/s":
				if v, err := strconv.ParseFloat(f[i], 64); err == nil {
					b.MBPerS = &v
				}
			default:
				if v, err := strconv.ParseFloat(f[i], 64); err == nil {
					if b.Metrics == nil {
						b.Metrics = map[string]float64{}
					}
					b.Metrics[f[i+1]] = v
				}
			}
		}
		recs = append(recs, b)
	}
	return recs
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
