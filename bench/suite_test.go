package bench

import "testing"

// A bar's verdict prints the figure it was judged on: a median just under
// the bar must not read as the bar itself.
func TestJudgeVerdicts(t *testing.T) {
	atLeast := func(min float64) func(float64) bool { return func(v float64) bool { return v >= min } }
	atMost := func(max float64) func(float64) bool { return func(v float64) bool { return v <= max } }
	rows := []RatioRow{{Metric: "jobs/s", Median: 1.1494}, {Metric: "p99", Median: 0.07, AMedian: 71413, BMedian: 4999}}
	for _, c := range []struct {
		b    bar
		want string
	}{
		{bar{"ratio", "jobs/s", "ratio", atLeast(1.15), "×"}, "| ratio | 1.149 × | — | no |"},
		{bar{"ratio", "jobs/s", "ratio", atLeast(1.14), "×"}, "| ratio | 1.149 × | — | yes |"},
		{bar{"p99", "p99", "b", atMost(5000), "µs"}, "| p99 | 4999 µs | gearmand: 71413 µs | yes |"},
		{bar{"cpu", "CPU/job", "ratio", atMost(0.5), "×"}, "| cpu | not measured | — | no |"},
	} {
		if got := judge(c.b, rows, "gearmand"); got != c.want {
			t.Errorf("judge(%s) = %q, want %q", c.b.text, got, c.want)
		}
	}
}
