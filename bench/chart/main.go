// Command chart draws BENCHMARKS.png from the harness's JSON lines, with
// the standard library only (image/png and a built-in 5×7 bitmap font):
//
//	go run ./bench -quick -json > bench/results.jsonl
//	go run ./bench/chart -in bench/results.jsonl -out BENCHMARKS.png
//
// Panels: webhooks per second and HTTP requests per webhook for each
// throughput configuration, then cold start time and peak memory.
package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"image"
	"image/color"
	"image/draw"
	"image/png"
	"io"
	"math"
	"os"
	"sort"
	"strings"
	"unicode"
)

func main() {
	in := flag.String("in", "-", "JSON lines from go run ./bench -json (- for stdin)")
	out := flag.String("out", "BENCHMARKS.png", "PNG file to write")
	flag.Parse()
	if err := run(*in, *out); err != nil {
		fmt.Fprintln(os.Stderr, "chart:", err)
		os.Exit(1)
	}
}

func run(in, out string) error {
	var r io.Reader = os.Stdin
	if in != "-" {
		f, err := os.Open(in)
		if err != nil {
			return err
		}
		defer f.Close()
		r = f
	}
	recs, err := readRecords(r)
	if err != nil {
		return err
	}
	img, err := render(recs)
	if err != nil {
		return err
	}
	f, err := os.Create(out)
	if err != nil {
		return err
	}
	if err := png.Encode(f, img); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// record is one JSON line; only the fields the chart uses.
type record struct {
	Kind         string   `json:"kind"`
	Client       string   `json:"client"`
	Callers      int      `json:"callers"`
	LatencyMS    int      `json:"latency_ms"`
	Available    bool     `json:"available"`
	WebhooksPerS *float64 `json:"webhooks_per_s"`
	Requests     *float64 `json:"requests_per_webhook"`
	WallMS       float64  `json:"wall_ms"`
	PeakRSSMB    float64  `json:"peak_rss_mb"`
	CPUs         int      `json:"cpus"`
	CPUModel     string   `json:"cpu_model"`
	GoVersion    string   `json:"go_version"`
	NodeVersion  string   `json:"node_version"`
}

func readRecords(r io.Reader) ([]record, error) {
	var recs []record
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), 16*1024*1024)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" {
			continue
		}
		var rec record
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			return nil, fmt.Errorf("line %d: %w", n, err)
		}
		recs = append(recs, rec)
	}
	return recs, sc.Err()
}

// series is one bar per group; nil means not measured.
type series struct {
	name   string
	values []*float64
}

type panel struct {
	title  string
	groups []string
	series []series
	format string
}

var (
	white  = color.RGBA{255, 255, 255, 255}
	ink    = color.RGBA{40, 40, 40, 255}
	grey   = color.RGBA{150, 150, 150, 255}
	grid   = color.RGBA{225, 225, 225, 255}
	colors = map[string]color.RGBA{
		"go-calls":    {31, 119, 180, 255},
		"go":          {31, 119, 180, 255},
		"go-fused":    {44, 160, 44, 255},
		"go-chatflow": {148, 103, 189, 255},
		"node":        {230, 120, 20, 255},
	}
)

var clientOrder = []string{"go-calls", "go-fused", "go-chatflow", "node"}

// render lays the panels out on one image.
func render(recs []record) (*image.RGBA, error) {
	var machine record
	type key struct{ callers, latency int }
	var keys []key
	tp := map[key]map[string]record{}
	cold := map[string]record{}
	for _, r := range recs {
		switch r.Kind {
		case "machine":
			machine = r
		case "throughput":
			k := key{r.Callers, r.LatencyMS}
			if tp[k] == nil {
				tp[k] = map[string]record{}
				keys = append(keys, k)
			}
			tp[k][r.Client] = r
		case "coldstart":
			cold[r.Client] = r
		}
	}
	if len(keys) == 0 && len(cold) == 0 {
		return nil, errors.New("no throughput or coldstart records in the input")
	}
	sort.Slice(keys, func(i, j int) bool {
		if keys[i].callers != keys[j].callers {
			return keys[i].callers < keys[j].callers
		}
		return keys[i].latency < keys[j].latency
	})

	var panels []panel
	if len(keys) > 0 {
		wps := panel{title: "Webhooks per second (higher is better)", format: "%.0f"}
		req := panel{title: "HTTP requests per webhook (lower is better)", format: "%.2f"}
		for _, k := range keys {
			label := fmt.Sprintf("%d ms, %d callers", k.latency, k.callers)
			wps.groups = append(wps.groups, label)
			req.groups = append(req.groups, label)
		}
		for _, c := range clientOrder {
			present := false
			s1, s2 := series{name: c}, series{name: c}
			for _, k := range keys {
				r, ok := tp[k][c]
				present = present || ok
				if ok && r.Available {
					s1.values = append(s1.values, r.WebhooksPerS)
					s2.values = append(s2.values, r.Requests)
				} else {
					s1.values = append(s1.values, nil)
					s2.values = append(s2.values, nil)
				}
			}
			if present {
				wps.series = append(wps.series, s1)
				req.series = append(req.series, s2)
			}
		}
		panels = append(panels, wps, req)
	}
	var small []panel
	if len(cold) > 0 {
		wall := panel{title: "Cold start to first lock, ms", groups: []string{""}, format: "%.0f"}
		rss := panel{title: "Cold start peak RSS, MB", groups: []string{""}, format: "%.0f"}
		for _, c := range []string{"go", "node"} {
			if r, ok := cold[c]; ok {
				wall.series = append(wall.series, series{name: c, values: []*float64{&r.WallMS}})
				rss.series = append(rss.series, series{name: c, values: []*float64{&r.PeakRSSMB}})
			}
		}
		small = append(small, wall, rss)
	}

	const width, top, bigH, smallH, gap = 1200, 110, 330, 300, 20
	height := top + len(panels)*(bigH+gap) + gap
	if len(small) > 0 {
		height += smallH + gap
	}
	img := image.NewRGBA(image.Rect(0, 0, width, height))
	draw.Draw(img, img.Bounds(), &image.Uniform{white}, image.Point{}, draw.Src)

	drawText(img, 20, 16, "Chat SDK webhook flow: this library vs @upstash/redis (Node)", 3, ink)
	sub := fmt.Sprintf("%d CPUs %s, %s, Node %s, upstashtest on redis-server", machine.CPUs, machine.CPUModel, machine.GoVersion, machine.NodeVersion)
	drawText(img, 20, 50, sub, 2, grey)
	legend(img, 20, 78)

	y := top
	for _, p := range panels {
		drawPanel(img, image.Rect(20, y, width-20, y+bigH), p)
		y += bigH + gap
	}
	if len(small) > 0 {
		w := (width - 60) / 2
		for i, p := range small {
			x := 20 + i*(w+20)
			drawPanel(img, image.Rect(x, y, x+w, y+smallH), p)
		}
	}
	return img, nil
}

func legend(img *image.RGBA, x, y int) {
	for _, c := range clientOrder {
		fill(img, image.Rect(x, y, x+16, y+14), colors[c])
		name := c
		if c == "go-calls" {
			name = "go-calls (go in cold start)"
		}
		drawText(img, x+22, y, name, 2, ink)
		x += 22 + textWidth(name, 2) + 30
	}
	drawText(img, x, y, "n/a: not measured", 2, grey)
}

// drawPanel draws a bar chart of p inside r.
func drawPanel(img *image.RGBA, r image.Rectangle, p panel) {
	drawText(img, r.Min.X, r.Min.Y, p.title, 2, ink)
	plot := image.Rect(r.Min.X+70, r.Min.Y+30, r.Max.X-10, r.Max.Y-30)
	maxV := 0.0
	for _, s := range p.series {
		for _, v := range s.values {
			if v != nil {
				maxV = math.Max(maxV, *v)
			}
		}
	}
	step := niceStep(maxV / 4)
	top := math.Ceil(maxV*1.15/step) * step
	if top <= 0 {
		top = 1
	}
	yOf := func(v float64) int {
		return plot.Max.Y - int(math.Round(v/top*float64(plot.Dy())))
	}
	for v := 0.0; v <= top+step/2; v += step {
		y := yOf(v)
		fill(img, image.Rect(plot.Min.X, y, plot.Max.X, y+1), grid)
		label := trimNumber(v)
		drawText(img, plot.Min.X-8-textWidth(label, 2), y-7, label, 2, grey)
	}
	fill(img, image.Rect(plot.Min.X, plot.Max.Y, plot.Max.X, plot.Max.Y+2), ink)

	groupW := plot.Dx() / max(len(p.groups), 1)
	barW := int(float64(groupW) * 0.7 / float64(max(len(p.series), 1)))
	for g, name := range p.groups {
		gx := plot.Min.X + g*groupW + (groupW-barW*len(p.series))/2
		for i, s := range p.series {
			x := gx + i*barW
			v := s.values[g]
			if v == nil {
				drawText(img, x+(barW-textWidth("n/a", 2))/2, plot.Max.Y-20, "n/a", 2, grey)
				continue
			}
			fill(img, image.Rect(x+2, yOf(*v), x+barW-2, plot.Max.Y), colors[s.name])
			label := fmt.Sprintf(p.format, *v)
			drawText(img, x+(barW-textWidth(label, 2))/2, yOf(*v)-18, label, 2, ink)
		}
		drawText(img, plot.Min.X+g*groupW+(groupW-textWidth(name, 2))/2, plot.Max.Y+10, name, 2, ink)
	}
}

// niceStep rounds x up to 1, 2 or 5 times a power of ten.
func niceStep(x float64) float64 {
	if x <= 0 {
		return 1
	}
	p := math.Pow(10, math.Floor(math.Log10(x)))
	for _, m := range []float64{1, 2, 5, 10} {
		if m*p >= x {
			return m * p
		}
	}
	return 10 * p
}

func trimNumber(v float64) string {
	s := fmt.Sprintf("%.2f", v)
	s = strings.TrimRight(strings.TrimRight(s, "0"), ".")
	return s
}

func fill(img *image.RGBA, r image.Rectangle, c color.RGBA) {
	draw.Draw(img, r.Intersect(img.Bounds()), &image.Uniform{c}, image.Point{}, draw.Src)
}

// textWidth is the width in pixels of s drawn at scale.
func textWidth(s string, scale int) int {
	n := len([]rune(s))
	if n == 0 {
		return 0
	}
	return n*6*scale - scale
}

// drawText draws s with its top-left corner at (x, y), each font cell
// scale×scale pixels. Characters the font lacks are drawn as '?'.
func drawText(img *image.RGBA, x, y int, s string, scale int, c color.RGBA) {
	for _, ch := range s {
		g, ok := glyphs[unicode.ToUpper(ch)]
		if !ok {
			g = glyphs['?']
		}
		for row, line := range g {
			for col, cell := range line {
				if cell == '#' {
					fill(img, image.Rect(x+col*scale, y+row*scale, x+(col+1)*scale, y+(row+1)*scale), c)
				}
			}
		}
		x += 6 * scale
	}
}
