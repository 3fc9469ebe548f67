package bench

import (
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Result is one scenario run against one server. Figures that could not be
// measured are 0 (a remote server's CPU, say), and presentation treats 0 as
// unknown.
type Result struct {
	Scenario string            `json:"scenario"`
	Server   string            `json:"server"` // label, e.g. "gearmand"
	Params   map[string]string `json:"params,omitempty"`
	Jobs     int64             `json:"jobs"`
	Errors   int64             `json:"errors"`
	// Elapsed is the measured interval; JSON carries it as elapsed_sec
	// (float seconds) so there is one field to set, not two to keep in step.
	Elapsed    time.Duration `json:"-"`
	JobsPerSec float64       `json:"jobs_per_sec"`
	// Latencies in microseconds.
	LatencyP50  float64 `json:"latency_p50_us"`
	LatencyP99  float64 `json:"latency_p99_us"`
	LatencyP999 float64 `json:"latency_p999_us"`
	LatencyMax  float64 `json:"latency_max_us"`
	// Server process figures, when it runs locally with a known pid.
	ServerCPUSec   float64 `json:"server_cpu_sec"`
	CPUPerJobUS    float64 `json:"cpu_per_job_us"`
	RSSPerJobBytes float64 `json:"rss_per_job_bytes"`
	// Extra holds scenario-specific figures such as "submit_per_sec".
	Extra map[string]float64 `json:"extra,omitempty"`
	// Clean is true when there were no errors and every result was checked.
	Clean bool `json:"clean"`
}

// resultFields is Result without its JSON methods, for them to delegate to.
type resultFields Result

// MarshalJSON writes Elapsed as elapsed_sec. JSON has no NaN or infinity,
// so such figures (a rate over an empty interval) are written as 0,
// unknown, rather than losing the whole report to an encoding error.
func (r Result) MarshalJSON() ([]byte, error) {
	f := resultFields(r)
	for _, p := range []*float64{&f.JobsPerSec, &f.LatencyP50, &f.LatencyP99, &f.LatencyP999,
		&f.LatencyMax, &f.ServerCPUSec, &f.CPUPerJobUS, &f.RSSPerJobBytes} {
		*p = finiteOrZero(*p)
	}
	for _, v := range f.Extra {
		if finiteOrZero(v) != v { // true for NaN too
			f.Extra = maps.Clone(f.Extra) // the caller's map stays as it was
			for k, v := range f.Extra {
				f.Extra[k] = finiteOrZero(v)
			}
			break
		}
	}
	return json.Marshal(struct {
		*resultFields
		ElapsedSec float64 `json:"elapsed_sec"`
	}{&f, r.Elapsed.Seconds()})
}

// UnmarshalJSON reads what MarshalJSON writes.
func (r *Result) UnmarshalJSON(b []byte) error {
	aux := struct {
		*resultFields
		ElapsedSec float64 `json:"elapsed_sec"`
	}{resultFields: (*resultFields)(r)}
	if err := json.Unmarshal(b, &aux); err != nil {
		return err
	}
	r.Elapsed = time.Duration(math.Round(aux.ElapsedSec * float64(time.Second)))
	return nil
}

func finiteOrZero(v float64) float64 {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return 0
	}
	return v
}

// SetLatency fills the latency figures from h (all 0 when h is empty).
func (r *Result) SetLatency(h *Histogram) {
	us := func(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }
	r.LatencyP50 = us(h.Quantile(0.5))
	r.LatencyP99 = us(h.Quantile(0.99))
	r.LatencyP999 = us(h.Quantile(0.999))
	r.LatencyMax = us(h.Max())
}

// WriteText writes a one-line human summary of r, such as
//
//	fg gearshard  jobs=120000 in 10s  12034 jobs/s  p50 0.35ms p99 1.2ms p99.9 3.1ms max 9ms  server 4.1µs CPU/job  errors=0
//
// leaving out what is unknown, and a NOT CLEAN line after it when r is not
// clean, so that a bad run cannot pass for a good one.
func WriteText(w io.Writer, r *Result) error {
	var b strings.Builder
	b.WriteString(r.Scenario)
	if r.Server != "" {
		b.WriteString(" " + r.Server)
	}
	fmt.Fprintf(&b, "  jobs=%d in %ss  %s jobs/s", r.Jobs, fmtSig(r.Elapsed.Seconds(), 3), fmtSig(r.JobsPerSec, 3))
	if r.LatencyMax > 0 {
		fmt.Fprintf(&b, "  p50 %s p99 %s p99.9 %s max %s", fmtMicros(r.LatencyP50),
			fmtMicros(r.LatencyP99), fmtMicros(r.LatencyP999), fmtMicros(r.LatencyMax))
	}
	if r.CPUPerJobUS > 0 || r.RSSPerJobBytes > 0 {
		b.WriteString("  server")
		if r.CPUPerJobUS > 0 {
			b.WriteString(" " + fmtMicros(r.CPUPerJobUS) + " CPU/job")
		}
		if r.RSSPerJobBytes > 0 {
			b.WriteString(" " + fmtBytes(r.RSSPerJobBytes) + " RSS/job")
		}
	}
	if len(r.Extra) > 0 {
		b.WriteString(" ")
		for _, k := range slices.Sorted(maps.Keys(r.Extra)) {
			b.WriteString(" " + k + "=" + fmtSig(r.Extra[k], 3))
		}
	}
	fmt.Fprintf(&b, "  errors=%d\n", r.Errors)
	if !r.Clean {
		b.WriteString(notCleanLine(r) + "\n")
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// notCleanLine says why r is not clean, for the loud line of WriteText.
func notCleanLine(r *Result) string {
	if r.Errors > 0 {
		return fmt.Sprintf("NOT CLEAN: %d errors", r.Errors)
	}
	return "NOT CLEAN: 0 errors, but not every result was checked"
}

// WriteJSON writes rs as an indented JSON array ([] when empty).
func WriteJSON(w io.Writer, rs []*Result) error {
	if rs == nil {
		rs = []*Result{}
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(rs)
}

// Comparison is one scenario run in rounds against a baseline A (e.g.
// gearmand) and a candidate B (e.g. gearshard); each round holds A's result
// then B's.
type Comparison struct {
	Scenario string
	A, B     string // labels
	Rounds   [][2]*Result
}

// RatioRow compares one metric across the rounds.
type RatioRow struct {
	Metric           string
	Ratios           []float64 // B/A per round
	Min, Median, Max float64   // of Ratios
	// Medians over the rounds of the metric itself, in Result's units
	// (µs for latencies and CPU/job, bytes for RSS/job).
	AMedian, BMedian float64
}

// compareMetric is one row's source: how to read it from a Result and how
// to show its values.
type compareMetric struct {
	name   string
	get    func(*Result) float64
	format func(float64) string
}

var compareFixed = []compareMetric{
	{"jobs/s", func(r *Result) float64 { return r.JobsPerSec }, fmtPlain},
	{"p50", func(r *Result) float64 { return r.LatencyP50 }, fmtMicros},
	{"p99", func(r *Result) float64 { return r.LatencyP99 }, fmtMicros},
	{"p99.9", func(r *Result) float64 { return r.LatencyP999 }, fmtMicros},
	{"max", func(r *Result) float64 { return r.LatencyMax }, fmtMicros},
	{"CPU/job", func(r *Result) float64 { return r.CPUPerJobUS }, fmtMicros},
	{"RSS/job", func(r *Result) float64 { return r.RSSPerJobBytes }, fmtBytes},
}

// rounds are the rounds with both results; a missing one cannot be compared.
func (c *Comparison) rounds() [][2]*Result {
	var rs [][2]*Result
	for _, p := range c.Rounds {
		if p[0] != nil && p[1] != nil {
			rs = append(rs, p)
		}
	}
	return rs
}

// metrics are the fixed metrics, then the Extra keys that every round has
// on both sides, sorted.
func (c *Comparison) metrics() []compareMetric {
	ms := slices.Clone(compareFixed)
	rs := c.rounds()
	if len(rs) == 0 {
		return ms
	}
	for _, k := range slices.Sorted(maps.Keys(rs[0][0].Extra)) {
		everywhere := true
		for _, p := range rs {
			_, inA := p[0].Extra[k]
			_, inB := p[1].Extra[k]
			everywhere = everywhere && inA && inB
		}
		if everywhere {
			ms = append(ms, compareMetric{k, func(r *Result) float64 { return r.Extra[k] }, fmtPlain})
		}
	}
	return ms
}

// Ratios compares B with A metric by metric: jobs/s, p50, p99, p99.9, max,
// CPU/job, RSS/job, then the Extra keys both sides report. A metric is left
// out unless it is positive and finite on both sides in every round, since
// 0 means unknown and a ratio of it means nothing. Rounds missing either
// result are ignored.
func (c *Comparison) Ratios() []RatioRow {
	rows, _ := c.ratioRows()
	return rows
}

// ratioRows is Ratios with each row's value formatter.
func (c *Comparison) ratioRows() ([]RatioRow, []func(float64) string) {
	rs := c.rounds()
	if len(rs) == 0 {
		return nil, nil
	}
	var (
		rows    []RatioRow
		formats []func(float64) string
	)
metrics:
	for _, m := range c.metrics() {
		var as, bs, ratios []float64
		for _, p := range rs {
			a, b := m.get(p[0]), m.get(p[1])
			if !(a > 0 && b > 0) || math.IsInf(a, 0) || math.IsInf(b, 0) {
				continue metrics
			}
			as, bs, ratios = append(as, a), append(bs, b), append(ratios, b/a)
		}
		rows = append(rows, RatioRow{
			Metric: m.name, Ratios: ratios,
			Min: slices.Min(ratios), Median: median(ratios), Max: slices.Max(ratios),
			AMedian: median(as), BMedian: median(bs),
		})
		formats = append(formats, m.format)
	}
	return rows, formats
}

// median of vs (not empty): the middle one, or the mean of the middle two.
func median(vs []float64) float64 {
	s := slices.Sorted(slices.Values(vs))
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

// WriteComparison writes c as a Markdown section: a heading, a loud note
// naming every round that was not clean, and a table of Ratios.
func WriteComparison(w io.Writer, c *Comparison) error {
	var b strings.Builder
	fmt.Fprintf(&b, "### %s: %s vs %s, %d rounds\n\n", c.Scenario, c.B, c.A, len(c.Rounds))
	fmt.Fprintf(&b, "A = %s (baseline), B = %s (candidate). Medians over the rounds; B/A per round.\n\n", c.A, c.B)
	var dirty []string
	for i, p := range c.Rounds {
		for side, r := range p {
			who := [2]string{"A " + c.A, "B " + c.B}[side]
			switch {
			case r == nil:
				dirty = append(dirty, fmt.Sprintf("round %d %s: no result", i+1, who))
			case !r.Clean:
				dirty = append(dirty, fmt.Sprintf("round %d %s: %s", i+1, who, strings.TrimPrefix(notCleanLine(r), "NOT CLEAN: ")))
			}
		}
	}
	if len(dirty) > 0 {
		fmt.Fprintf(&b, "**NOT CLEAN**: %s.\n\n", strings.Join(dirty, "; "))
	}
	rows, formats := c.ratioRows()
	if len(rows) == 0 {
		b.WriteString("(no metric known on both sides)\n")
	} else {
		b.WriteString("| metric | A median | B median | B/A min | B/A median | B/A max |\n")
		b.WriteString("|:--|--:|--:|--:|--:|--:|\n")
		for i, row := range rows {
			f := formats[i]
			fmt.Fprintf(&b, "| %s | %s | %s | %.2f | %.2f | %.2f |\n",
				row.Metric, f(row.AMedian), f(row.BMedian), row.Min, row.Median, row.Max)
		}
		b.WriteString("\nB/A above 1: B is higher, which is better for rates (jobs/s, *_per_sec) and worse for latencies and per-job costs.\n")
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// fmtSig formats v to about digits significant digits without an exponent
// and without trailing zeros: 0.35, 1.2, 9, 12034.
func fmtSig(v float64, digits int) string {
	if v == 0 || math.IsNaN(v) || math.IsInf(v, 0) {
		return strconv.FormatFloat(v, 'f', -1, 64)
	}
	prec := max(digits-1-int(math.Floor(math.Log10(math.Abs(v)))), 0)
	s := strconv.FormatFloat(v, 'f', prec, 64)
	if strings.Contains(s, ".") {
		s = strings.TrimRight(strings.TrimRight(s, "0"), ".")
	}
	return s
}

func fmtPlain(v float64) string { return fmtSig(v, 3) }

// fmtMicros shows a time in µs with two significant digits in the unit
// that keeps it short: 45µs, 0.35ms, 12ms, 1.5s.
func fmtMicros(us float64) string {
	switch {
	case math.Abs(us) < 100:
		return fmtSig(us, 2) + "µs"
	case math.Abs(us) < 1e6:
		return fmtSig(us/1e3, 2) + "ms"
	default:
		return fmtSig(us/1e6, 2) + "s"
	}
}

// fmtBytes shows a size in binary units with two significant digits.
func fmtBytes(v float64) string {
	units := []string{"B", "KiB", "MiB", "GiB"}
	i := 0
	for math.Abs(v) >= 1024 && i < len(units)-1 {
		v /= 1024
		i++
	}
	return fmtSig(v, 2) + units[i]
}
