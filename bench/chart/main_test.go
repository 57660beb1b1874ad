package main

import (
	"image/png"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const sample = `{"kind":"machine","cpus":2,"cpu_model":"Test CPU","go_version":"go1.22","node_version":"v20"}
{"kind":"throughput","client":"go-calls","callers":64,"latency_ms":5,"available":true,"webhooks_per_s":300,"requests_per_webhook":8.1}
{"kind":"throughput","client":"go-fused","callers":64,"latency_ms":5,"available":false,"webhooks_per_s":null,"requests_per_webhook":null}
{"kind":"throughput","client":"go-chatflow","callers":64,"latency_ms":5,"available":true,"webhooks_per_s":900,"requests_per_webhook":0.5}
{"kind":"throughput","client":"node","callers":64,"latency_ms":5,"available":true,"webhooks_per_s":280,"requests_per_webhook":0.6}
{"kind":"coldstart","client":"go","wall_ms":7,"peak_rss_mb":17}
{"kind":"coldstart","client":"node","wall_ms":190,"peak_rss_mb":84}
`

func TestChartDrawsEveryClient(t *testing.T) {
	dir := t.TempDir()
	in, out := filepath.Join(dir, "in.jsonl"), filepath.Join(dir, "out.png")
	if err := os.WriteFile(in, []byte(sample), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := run(in, out); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(out)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	img, err := png.Decode(f)
	if err != nil {
		t.Fatal(err)
	}
	if b := img.Bounds(); b.Dx() != 1200 || b.Dy() < 800 {
		t.Errorf("image is %v", b)
	}
	// Count pixels of each client's colour: bars are drawn for go-calls,
	// go-chatflow and node; go-fused has only its legend swatch (16×14
	// pixels).
	counts := map[string]int{}
	b := img.Bounds()
	for y := b.Min.Y; y < b.Max.Y; y++ {
		for x := b.Min.X; x < b.Max.X; x++ {
			r, g, bl, _ := img.At(x, y).RGBA()
			for name, c := range colors {
				if uint8(r>>8) == c.R && uint8(g>>8) == c.G && uint8(bl>>8) == c.B {
					counts[name]++
				}
			}
		}
	}
	if counts["go-calls"] < 5000 || counts["node"] < 5000 || counts["go-chatflow"] < 5000 {
		t.Errorf("bar pixels: %v", counts)
	}
	if counts["go-fused"] != 16*14 {
		t.Errorf("go-fused pixels %d, want only the legend swatch (%d)", counts["go-fused"], 16*14)
	}
}

func TestChartRefusesBadInput(t *testing.T) {
	if _, err := readRecords(strings.NewReader("{\"kind\":\"machine\"}\nnot json\n")); err == nil || !strings.Contains(err.Error(), "line 2") {
		t.Errorf("malformed line: %v", err)
	}
	recs, err := readRecords(strings.NewReader(`{"kind":"machine","cpus":2}` + "\n"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := render(recs); err == nil {
		t.Error("render without measurements succeeded")
	}
}

func TestFontCoversLabels(t *testing.T) {
	for _, s := range []string{"Webhooks per second (higher is better)", "0123456789.,:/()-+=%_<>?@", "abcdefghijklmnopqrstuvwxyz"} {
		for _, r := range strings.ToUpper(s) {
			if _, ok := glyphs[r]; !ok {
				t.Errorf("no glyph for %q", r)
			}
		}
	}
	for r, g := range glyphs {
		for _, row := range g {
			if len(row) != 5 {
				t.Errorf("glyph %q has a row of %d cells", r, len(row))
			}
		}
	}
}
