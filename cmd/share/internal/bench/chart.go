package bench

import (
	"fmt"
	"html"
	"math"
	"slices"
	"strings"

	"github.com/dustin/go-humanize"
)

// Chart draws the scaling scenario as an SVG: distribution time against N
// for both modes (median, with the min-max spread when there are several
// runs), and both lower bounds as dashed lines.
func Chart(res *Results) string {
	const (
		w, h                     = 760, 460
		left, right, top, bottom = 70, 190, 50, 60
	)
	ns := scalingNs(res)
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif" font-size="13">`+"\n", w, h, w, h)
	b.WriteString(`<rect width="100%" height="100%" fill="white"/>` + "\n")
	title := fmt.Sprintf("Distribution of a %s file to N downloaders, every upload capped at %s",
		humanize.IBytes(uint64(res.Size)), rate(res.UploadCap))
	if res.emulated() {
		title = fmt.Sprintf("Distribution of a %s file to N downloaders, network %s", humanize.IBytes(uint64(res.Size)), res.Network)
	}
	fmt.Fprintf(&b, `<text x="%d" y="28" font-size="15" font-weight="bold">%s</text>`+"\n", left, html.EscapeString(title))
	if len(ns) == 0 {
		b.WriteString(`<text x="70" y="120">no scaling scenario in this run</text></svg>` + "\n")
		return b.String()
	}
	type series struct {
		mode, label, color string
		bound              bool
	}
	all := []series{
		{ClientServer, "client-server", "#1f77b4", false},
		{ClientServer, "client-server bound", "#1f77b4", true},
		{P2P, "peer-to-peer", "#d62728", false},
		{P2P, "peer-to-peer bound", "#d62728", true},
	}
	if slices.ContainsFunc(res.Summaries, func(s Summary) bool { return s.Scenario == ScenarioScaling && s.Mode == BitTorrent }) {
		// The reference's bound is the P2P bound: its line alone.
		all = append(all, series{BitTorrent, "BitTorrent (aria2)", "#2ca02c", false})
	}
	value := func(s series, n int) (v, lo, hi float64, ok bool) {
		sum, found := res.summary(ScenarioScaling, "", s.mode, n)
		switch {
		case !found:
			return 0, 0, 0, false
		case s.bound:
			return sum.Bound, sum.Bound, sum.Bound, true
		case sum.Median > 0:
			return sum.Median, sum.Min, sum.Max, true
		}
		return 0, 0, 0, false
	}
	ymax := 0.0
	for _, s := range all {
		for _, n := range ns {
			if _, _, hi, ok := value(s, n); ok {
				ymax = math.Max(ymax, hi)
			}
		}
	}
	ymax = niceCeil(ymax * 1.05)
	pw, ph := float64(w-left-right), float64(h-top-bottom)
	x := func(n int) float64 {
		if len(ns) == 1 {
			return float64(left) + pw/2
		}
		lo, hi := math.Log2(float64(ns[0])), math.Log2(float64(ns[len(ns)-1]))
		return float64(left) + pw*(math.Log2(float64(n))-lo)/(hi-lo)
	}
	y := func(v float64) float64 { return float64(top) + ph*(1-v/ymax) }
	// Grid and axes.
	step := niceStep(ymax / 6)
	for v := 0.0; v <= ymax+1e-9; v += step {
		fmt.Fprintf(&b, `<line x1="%d" y1="%.1f" x2="%d" y2="%.1f" stroke="#e5e5e5"/>`+"\n", left, y(v), w-right, y(v))
		fmt.Fprintf(&b, `<text x="%d" y="%.1f" text-anchor="end" fill="#555">%g</text>`+"\n", left-8, y(v)+4, v)
	}
	for _, n := range ns {
		fmt.Fprintf(&b, `<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="#e5e5e5"/>`+"\n", x(n), top, x(n), h-bottom)
		fmt.Fprintf(&b, `<text x="%.1f" y="%d" text-anchor="middle" fill="#555">%d</text>`+"\n", x(n), h-bottom+18, n)
	}
	fmt.Fprintf(&b, `<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="#333"/>`+"\n", left, h-bottom, w-right, h-bottom)
	fmt.Fprintf(&b, `<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="#333"/>`+"\n", left, top, left, h-bottom)
	xlabel := "N (downloaders)"
	if len(ns) > 1 {
		xlabel = "N (downloaders, log scale)"
	}
	fmt.Fprintf(&b, `<text x="%.1f" y="%d" text-anchor="middle">%s</text>`+"\n", float64(left)+pw/2, h-18, xlabel)
	fmt.Fprintf(&b, `<text x="18" y="%.1f" text-anchor="middle" transform="rotate(-90 18 %.1f)">distribution time (s)</text>`+"\n", float64(top)+ph/2, float64(top)+ph/2)
	// Series.
	for k, s := range all {
		var pts []string
		for _, n := range ns {
			v, lo, hi, ok := value(s, n)
			if !ok {
				continue
			}
			pts = append(pts, fmt.Sprintf("%.1f,%.1f", x(n), y(v)))
			if !s.bound {
				fmt.Fprintf(&b, `<circle cx="%.1f" cy="%.1f" r="4" fill="%s"><title>%s N=%d: %.2f s</title></circle>`+"\n", x(n), y(v), s.color, s.label, n, v)
				if hi > lo {
					fmt.Fprintf(&b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="%s"/>`+"\n", x(n), y(lo), x(n), y(hi), s.color)
				}
			}
		}
		dash := ""
		if s.bound {
			dash = ` stroke-dasharray="6 5"`
		}
		if len(pts) > 0 {
			fmt.Fprintf(&b, `<polyline points="%s" fill="none" stroke="%s" stroke-width="2"%s/>`+"\n", strings.Join(pts, " "), s.color, dash)
		}
		ly := top + 20 + 24*k
		fmt.Fprintf(&b, `<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="%s" stroke-width="2"%s/>`+"\n", w-right+16, ly, w-right+46, ly, s.color, dash)
		fmt.Fprintf(&b, `<text x="%d" y="%d">%s</text>`+"\n", w-right+52, ly+4, s.label)
	}
	b.WriteString("</svg>\n")
	return b.String()
}

// niceCeil rounds v up to 1, 2 or 5 times a power of ten.
func niceCeil(v float64) float64 {
	if v <= 0 {
		return 1
	}
	p := math.Pow(10, math.Floor(math.Log10(v)))
	for _, m := range []float64{1, 2, 5, 10} {
		if m*p >= v {
			return m * p
		}
	}
	return 10 * p
}

// niceStep rounds v to 1, 2 or 5 times a power of ten.
func niceStep(v float64) float64 {
	if v <= 0 {
		return 1
	}
	p := math.Pow(10, math.Floor(math.Log10(v)))
	for _, m := range []float64{1, 2, 5} {
		if m*p >= v {
			return m * p
		}
	}
	return 10 * p
}
