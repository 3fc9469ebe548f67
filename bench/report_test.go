package bench

import (
	"bytes"
	"encoding/json"
	"math"
	"reflect"
	"strings"
	"testing"
	"time"
)

// mkResult is a clean result with the figures the ratio tests vary.
func mkResult(server string, jps, p50, cpu float64, extra map[string]float64) *Result {
	return &Result{
		Scenario: "fg", Server: server, Jobs: 1000, Elapsed: time.Second,
		JobsPerSec: jps, LatencyP50: p50, LatencyP99: 2 * p50, LatencyP999: 4 * p50, LatencyMax: 8 * p50,
		CPUPerJobUS: cpu, Extra: extra, Clean: true,
	}
}

func rowsByMetric(rows []RatioRow) map[string]RatioRow {
	m := map[string]RatioRow{}
	for _, r := range rows {
		m[r.Metric] = r
	}
	return m
}

func within(got, want float64) bool { return math.Abs(got-want) <= 0.001*want }

func near(a, b float64) bool { return math.Abs(a-b) <= 1e-9*math.Max(math.Abs(a), math.Abs(b)) }

func TestRatiosOddRounds(t *testing.T) {
	c := &Comparison{Scenario: "fg", A: "gearmand", B: "gearshard", Rounds: [][2]*Result{
		{mkResult("gearmand", 1000, 400, 10, nil), mkResult("gearshard", 2000, 200, 5, nil)},
		{mkResult("gearmand", 1000, 500, 10, nil), mkResult("gearshard", 3000, 200, 0, nil)}, // B's CPU unknown
		{mkResult("gearmand", 2000, 100, 10, nil), mkResult("gearshard", 3000, 300, 5, nil)},
	}}
	rows := c.Ratios()
	var names []string
	for _, r := range rows {
		names = append(names, r.Metric)
	}
	// CPU/job is unknown in one round, RSS/job everywhere: both left out.
	if want := []string{"jobs/s", "p50", "p99", "p99.9", "max"}; !reflect.DeepEqual(names, want) {
		t.Fatalf("metrics %v, want %v", names, want)
	}
	m := rowsByMetric(rows)
	jps := m["jobs/s"]
	if !reflect.DeepEqual(jps.Ratios, []float64{2, 3, 1.5}) || jps.Min != 1.5 || jps.Median != 2 || jps.Max != 3 ||
		jps.AMedian != 1000 || jps.BMedian != 3000 {
		t.Fatalf("jobs/s row %+v", jps)
	}
	p50 := m["p50"]
	if !reflect.DeepEqual(p50.Ratios, []float64{0.5, 0.4, 3}) || p50.Min != 0.4 || p50.Median != 0.5 || p50.Max != 3 ||
		p50.AMedian != 400 || p50.BMedian != 200 {
		t.Fatalf("p50 row %+v", p50)
	}
	if mx := m["max"]; mx.AMedian != 3200 || mx.BMedian != 1600 || mx.Median != 0.5 {
		t.Fatalf("max row %+v", mx)
	}
}

func TestRatiosEvenRounds(t *testing.T) {
	ex := func(kv ...float64) map[string]float64 {
		m := map[string]float64{}
		keys := []string{"submit_per_sec", "bytes_per_job", "only_a", "zero"}
		for i, v := range kv {
			if !math.IsNaN(v) {
				m[keys[i]] = v
			}
		}
		return m
	}
	nan := math.NaN()
	c := &Comparison{Scenario: "bg", A: "a", B: "b", Rounds: [][2]*Result{
		{mkResult("a", 100, 10, 4, ex(10, 100, 1, 0)), mkResult("b", 150, 10, 2, ex(20, 90, nan, 0))},
		{mkResult("a", 100, 10, 4, ex(10, 100, 1, 0)), mkResult("b", 400, 10, 3, ex(50, 80, nan, 0))},
		{nil, mkResult("b", 1e9, 1, 1, nil)}, // a failed round is ignored
		{mkResult("a", 200, 10, 4, ex(20, 100, 1, 0)), mkResult("b", 200, 10, 1, ex(20, 70, nan, 0))},
		{mkResult("a", 100, 10, 4, ex(10, 100, 1, 0)), mkResult("b", 250, 10, 4, ex(40, 60, nan, 0))},
	}}
	m := rowsByMetric(c.Ratios())
	// only_a is on one side, zero is 0 on both: neither is compared.
	if len(m) != 8 {
		t.Fatalf("rows %v, want 8", m)
	}
	check := func(metric string, ratios []float64, min, med, max, amed, bmed float64) {
		t.Helper()
		r, ok := m[metric]
		if !ok {
			t.Fatalf("no %s row", metric)
		}
		if len(r.Ratios) != len(ratios) {
			t.Fatalf("%s ratios %v, want %v", metric, r.Ratios, ratios)
		}
		for i := range ratios {
			if !near(r.Ratios[i], ratios[i]) {
				t.Fatalf("%s ratios %v, want %v", metric, r.Ratios, ratios)
			}
		}
		if !near(r.Min, min) || !near(r.Median, med) || !near(r.Max, max) || !near(r.AMedian, amed) || !near(r.BMedian, bmed) {
			t.Fatalf("%s: min %v median %v max %v A %v B %v, want %v %v %v %v %v",
				metric, r.Min, r.Median, r.Max, r.AMedian, r.BMedian, min, med, max, amed, bmed)
		}
	}
	// Even counts: the median is the mean of the middle two.
	check("jobs/s", []float64{1.5, 4, 1, 2.5}, 1, 2, 4, 100, 225)
	check("CPU/job", []float64{0.5, 0.75, 0.25, 1}, 0.25, 0.625, 1, 4, 2.5)
	check("p50", []float64{1, 1, 1, 1}, 1, 1, 1, 10, 10)
	check("submit_per_sec", []float64{2, 5, 1, 4}, 1, 3, 5, 10, 30)
	check("bytes_per_job", []float64{0.9, 0.8, 0.7, 0.6}, 0.6, 0.75, 0.9, 100, 75)

	if rows := (&Comparison{}).Ratios(); len(rows) != 0 {
		t.Fatalf("no rounds: %v", rows)
	}
}

func TestWriteComparisonGolden(t *testing.T) {
	a1, b1 := mkResult("gearmand", 12034, 350, 4.1, map[string]float64{"submit_per_sec": 50000}),
		mkResult("gearshard", 30000, 150, 2.2, map[string]float64{"submit_per_sec": 150000})
	a2, b2 := mkResult("gearmand", 11000, 400, 4, map[string]float64{"submit_per_sec": 40000}),
		mkResult("gearshard", 33000, 100, 2, map[string]float64{"submit_per_sec": 160000})
	a3, b3 := mkResult("gearmand", 13000, 300, 4.2, map[string]float64{"submit_per_sec": 45000}),
		mkResult("gearshard", 26000, 120, 2.1, map[string]float64{"submit_per_sec": 90000})
	a1.RSSPerJobBytes, b1.RSSPerJobBytes = 2048, 512
	a2.RSSPerJobBytes, b2.RSSPerJobBytes = 2048, 1024
	a3.RSSPerJobBytes, b3.RSSPerJobBytes = 4096, 1024
	b2.Errors, b2.Clean = 3, false
	a3.Clean = false
	c := &Comparison{Scenario: "fg", A: "gearmand", B: "gearshard", Rounds: [][2]*Result{{a1, b1}, {a2, b2}, {a3, b3}}}

	var buf bytes.Buffer
	if err := WriteComparison(&buf, c); err != nil {
		t.Fatal(err)
	}
	const want = `### fg: gearshard vs gearmand, 3 rounds

A = gearmand (baseline), B = gearshard (candidate). Medians over the rounds; B/A per round.

**NOT CLEAN**: round 2 B gearshard: 3 errors; round 3 A gearmand: 0 errors, but not every result was checked.

| metric | A median | B median | B/A min | B/A median | B/A max |
|:--|--:|--:|--:|--:|--:|
| jobs/s | 12034 | 30000 | 2.00 | 2.49 | 3.00 |
| p50 | 0.35ms | 0.12ms | 0.25 | 0.40 | 0.43 |
| p99 | 0.7ms | 0.24ms | 0.25 | 0.40 | 0.43 |
| p99.9 | 1.4ms | 0.48ms | 0.25 | 0.40 | 0.43 |
| max | 2.8ms | 0.96ms | 0.25 | 0.40 | 0.43 |
| CPU/job | 4.1µs | 2.1µs | 0.50 | 0.50 | 0.54 |
| RSS/job | 2KiB | 1KiB | 0.25 | 0.25 | 0.50 |
| submit_per_sec | 45000 | 150000 | 2.00 | 3.00 | 4.00 |

B/A above 1: B is higher, which is better for rates (jobs/s, *_per_sec) and worse for latencies and per-job costs.
`
	if got := buf.String(); got != want {
		t.Fatalf("got:\n%s\nwant:\n%s", got, want)
	}

	// Nothing comparable: say so instead of an empty table.
	buf.Reset()
	WriteComparison(&buf, &Comparison{Scenario: "status", A: "x", B: "y", Rounds: [][2]*Result{{a1, nil}}})
	if got := buf.String(); !strings.Contains(got, "round 1 B y: no result") || !strings.Contains(got, "(no metric known on both sides)") ||
		strings.Contains(got, "| metric") {
		t.Fatalf("got:\n%s", got)
	}
}

func TestResultJSONRoundTrip(t *testing.T) {
	r := &Result{
		Scenario: "drain", Server: "gearshard", Params: map[string]string{"clients": "64", "size": "100"},
		Jobs: 120000, Errors: 2, Elapsed: 9*time.Second + 876543211,
		JobsPerSec: 12034.5, LatencyP50: 350.25, LatencyP99: 1200, LatencyP999: 3100, LatencyMax: 9000,
		ServerCPUSec: 0.492, CPUPerJobUS: 4.1, RSSPerJobBytes: 120.5,
		Extra: map[string]float64{"submit_per_sec": 50000, "drain_per_sec": 41000.25},
	}
	var buf bytes.Buffer
	if err := WriteJSON(&buf, []*Result{r, {Scenario: "fg", Clean: true}}); err != nil {
		t.Fatal(err)
	}
	var raw []map[string]any
	if err := json.Unmarshal(buf.Bytes(), &raw); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"scenario", "server", "params", "jobs", "errors", "elapsed_sec", "jobs_per_sec",
		"latency_p50_us", "latency_p99_us", "latency_p999_us", "latency_max_us",
		"server_cpu_sec", "cpu_per_job_us", "rss_per_job_bytes", "extra", "clean"} {
		if _, ok := raw[0][k]; !ok {
			t.Errorf("JSON lacks %q: %s", k, buf.String())
		}
	}
	if raw[0]["elapsed_sec"] != 9.876543211 {
		t.Errorf("elapsed_sec = %v", raw[0]["elapsed_sec"])
	}
	if _, ok := raw[0]["Elapsed"]; ok {
		t.Error("Elapsed written as well as elapsed_sec")
	}
	var back []*Result
	if err := json.Unmarshal(buf.Bytes(), &back); err != nil {
		t.Fatal(err)
	}
	if len(back) != 2 || !reflect.DeepEqual(back[0], r) || !reflect.DeepEqual(back[1], &Result{Scenario: "fg", Clean: true}) {
		t.Fatalf("round trip:\n%+v\n%+v\nwant\n%+v", back[0], back[1], r)
	}

	buf.Reset()
	if err := WriteJSON(&buf, nil); err != nil || strings.TrimSpace(buf.String()) != "[]" {
		t.Fatalf("empty: %q %v", buf.String(), err)
	}
}

func TestResultJSONNonFinite(t *testing.T) {
	extra := map[string]float64{"rate": math.Inf(1), "ok": 2}
	r := &Result{Scenario: "fg", JobsPerSec: math.NaN(), Extra: extra}
	b, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	var back Result
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if back.JobsPerSec != 0 || back.Extra["rate"] != 0 || back.Extra["ok"] != 2 {
		t.Fatalf("got %s", b)
	}
	if !math.IsInf(extra["rate"], 1) {
		t.Fatal("MarshalJSON changed the caller's Extra")
	}
}

func TestSetLatencyAndWriteText(t *testing.T) {
	h := NewHistogram()
	for i := 1; i <= 1000; i++ {
		h.Record(time.Duration(i) * time.Microsecond)
	}
	h.Record(9 * time.Millisecond)
	r := &Result{Scenario: "fg", Server: "gearshard", Jobs: 120000, Elapsed: 10 * time.Second, JobsPerSec: 12034.4,
		CPUPerJobUS: 4.1, Clean: true}
	r.SetLatency(h)
	// Bucket midpoints, within 0.1%; the max is exact.
	if !within(r.LatencyP50, 501) || !within(r.LatencyP99, 991) || !within(r.LatencyP999, 1000) || r.LatencyMax != 9000 {
		t.Fatalf("latencies %v %v %v %v", r.LatencyP50, r.LatencyP99, r.LatencyP999, r.LatencyMax)
	}
	var buf bytes.Buffer
	if err := WriteText(&buf, r); err != nil {
		t.Fatal(err)
	}
	want := "fg gearshard  jobs=120000 in 10s  12034 jobs/s  p50 0.5ms p99 0.99ms p99.9 1ms max 9ms  server 4.1µs CPU/job  errors=0\n"
	if buf.String() != want {
		t.Fatalf("got  %q\nwant %q", buf.String(), want)
	}

	// Unknowns left out, Extra shown, and a loud line when not clean.
	r = &Result{Scenario: "submit-only", Jobs: 5, Errors: 2, Elapsed: 1500 * time.Millisecond, JobsPerSec: 3.333,
		RSSPerJobBytes: 3 << 20, Extra: map[string]float64{"submit_per_sec": 3.333, "bytes_per_job": 181}}
	buf.Reset()
	WriteText(&buf, r)
	want = "submit-only  jobs=5 in 1.5s  3.33 jobs/s  server 3MiB RSS/job  bytes_per_job=181 submit_per_sec=3.33  errors=2\nNOT CLEAN: 2 errors\n"
	if buf.String() != want {
		t.Fatalf("got  %q\nwant %q", buf.String(), want)
	}
	r.Errors = 0
	buf.Reset()
	WriteText(&buf, r)
	if !strings.HasSuffix(buf.String(), "\nNOT CLEAN: 0 errors, but not every result was checked\n") {
		t.Fatalf("got %q", buf.String())
	}

	// An empty histogram clears the latencies.
	r.SetLatency(NewHistogram())
	if r.LatencyP50 != 0 || r.LatencyMax != 0 {
		t.Fatalf("empty histogram: %+v", r)
	}
}

func TestFmtSig(t *testing.T) {
	for _, c := range []struct {
		v      float64
		digits int
		want   string
	}{
		{0.35, 2, "0.35"}, {1.2, 2, "1.2"}, {9, 2, "9"}, {12034, 3, "12034"}, {0.004, 2, "0.004"},
		{9.96, 2, "10"}, {0, 2, "0"}, {-1.25, 2, "-1.2"}, {100, 3, "100"},
	} {
		if got := fmtSig(c.v, c.digits); got != c.want {
			t.Errorf("fmtSig(%v, %d) = %q, want %q", c.v, c.digits, got, c.want)
		}
	}
}
