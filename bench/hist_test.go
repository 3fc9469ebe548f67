package bench

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"
	"time"
)

// trueQuantile is the nearest-rank quantile of sorted, the definition
// Histogram.Quantile approximates.
func trueQuantile(sorted []time.Duration, q float64) time.Duration {
	rank := max(int(math.Ceil(q*float64(len(sorted)))), 1)
	return sorted[rank-1]
}

var testQuantiles = []float64{0.0001, 0.001, 0.01, 0.1, 0.25, 0.5, 0.75, 0.9, 0.99, 0.999, 0.9999}

// checkQuantiles records vals and checks every quantile within 0.1%.
func checkQuantiles(t *testing.T, vals []time.Duration) {
	t.Helper()
	h := NewHistogram()
	for _, v := range vals {
		h.Record(v)
	}
	sorted := slices.Clone(vals)
	slices.Sort(sorted)
	for _, q := range testQuantiles {
		want, got := trueQuantile(sorted, q), h.Quantile(q)
		if rel := math.Abs(float64(got-want)) / float64(want); rel > 0.001 {
			t.Errorf("q=%v: got %v, want %v (rel err %.5f)", q, got, want, rel)
		}
	}
	if h.Min() != sorted[0] || h.Max() != sorted[len(sorted)-1] {
		t.Errorf("min/max = %v/%v, want %v/%v", h.Min(), h.Max(), sorted[0], sorted[len(sorted)-1])
	}
	if h.Quantile(0) != sorted[0] || h.Quantile(1) != sorted[len(sorted)-1] {
		t.Errorf("Quantile(0)/(1) = %v/%v, want exact min/max", h.Quantile(0), h.Quantile(1))
	}
	var sum time.Duration
	for _, v := range vals {
		sum += v
	}
	if want := sum / time.Duration(len(vals)); h.Mean() != want {
		t.Errorf("mean = %v, want %v", h.Mean(), want)
	}
	if h.Count() != int64(len(vals)) {
		t.Errorf("count = %d, want %d", h.Count(), len(vals))
	}
}

func TestHistogramUniform(t *testing.T) {
	var vals []time.Duration
	for i := 1; i <= 100000; i++ {
		vals = append(vals, time.Duration(i)*time.Microsecond)
	}
	rand.New(rand.NewPCG(1, 2)).Shuffle(len(vals), func(i, j int) { vals[i], vals[j] = vals[j], vals[i] })
	checkQuantiles(t, vals)
}

func TestHistogramBimodal(t *testing.T) {
	// Fast path around 200 µs, a slow tail around 40 ms, both with
	// nanosecond noise so values fall anywhere inside buckets.
	r := rand.New(rand.NewPCG(3, 4))
	var vals []time.Duration
	for range 90000 {
		vals = append(vals, time.Duration(200e3+r.NormFloat64()*30e3))
	}
	for range 10000 {
		vals = append(vals, time.Duration(40e6+r.NormFloat64()*5e6))
	}
	checkQuantiles(t, vals)
}

func TestHistogramWideRange(t *testing.T) {
	// Log-uniform over 1 µs .. 1 h checks every power of two.
	r := rand.New(rand.NewPCG(5, 6))
	var vals []time.Duration
	lo, hi := math.Log(float64(time.Microsecond)), math.Log(float64(time.Hour))
	for range 200000 {
		vals = append(vals, time.Duration(math.Exp(lo+r.Float64()*(hi-lo))))
	}
	checkQuantiles(t, vals)
}

func TestHistogramBucketsRoundTrip(t *testing.T) {
	// Every bucket's bounds map back to it, and buckets tile the range.
	var next int64
	for i := range histLen {
		low, width := histBounds(i)
		if low != next {
			t.Fatalf("bucket %d starts at %d, want %d", i, low, next)
		}
		if histIndex(low) != i || histIndex(low+width-1) != i {
			t.Fatalf("bucket %d [%d,+%d) does not map back", i, low, width)
		}
		if low >= histSubCount && float64(width)/float64(low) > 1.0/1024 {
			t.Fatalf("bucket %d too wide: %d at %d", i, width, low)
		}
		next = low + width
	}
	if low, width := histBounds(histLen - 1); int64(histHighest) < low || int64(histHighest) >= low+width {
		t.Fatalf("last bucket [%d,+%d) does not hold 1h", low, width)
	}
}

func TestHistogramMerge(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 8))
	all, parts := NewHistogram(), []*Histogram{NewHistogram(), NewHistogram(), NewHistogram()}
	for i := range 30000 {
		d := time.Duration(r.ExpFloat64() * 1e6)
		if i == 17 {
			d = 3 * time.Hour // a clamped one must merge too
		}
		all.Record(d)
		parts[i%len(parts)].Record(d)
	}
	merged := NewHistogram()
	merged.Merge(NewHistogram()) // empty merges change nothing
	for _, p := range parts {
		merged.Merge(p)
	}
	merged.Merge(nil)
	if !slices.Equal(merged.counts, all.counts) {
		t.Fatal("merged counts differ from recording everything in one")
	}
	if merged.Count() != all.Count() || merged.Min() != all.Min() || merged.Max() != all.Max() ||
		merged.Mean() != all.Mean() || merged.Clamped() != all.Clamped() {
		t.Fatalf("merged %d %v %v %v %d, want %d %v %v %v %d",
			merged.Count(), merged.Min(), merged.Max(), merged.Mean(), merged.Clamped(),
			all.Count(), all.Min(), all.Max(), all.Mean(), all.Clamped())
	}
	for _, q := range testQuantiles {
		if merged.Quantile(q) != all.Quantile(q) {
			t.Errorf("q=%v: merged %v, all %v", q, merged.Quantile(q), all.Quantile(q))
		}
	}
}

func TestHistogramRecordAllocs(t *testing.T) {
	h := NewHistogram()
	d := time.Duration(0)
	allocs := testing.AllocsPerRun(10000, func() {
		d += 12345
		h.Record(d)
		h.Record(2 * time.Hour)
		h.Record(-1)
	})
	if allocs != 0 {
		t.Fatalf("Record allocates %v times per run", allocs)
	}
}

func TestHistogramClamp(t *testing.T) {
	h := NewHistogram()
	h.Record(time.Millisecond)
	h.Record(2 * time.Hour)
	h.Record(5 * time.Hour)
	if h.Count() != 3 || h.Clamped() != 2 {
		t.Fatalf("count %d clamped %d, want 3 and 2", h.Count(), h.Clamped())
	}
	if h.Max() != 5*time.Hour {
		t.Fatalf("max %v, want the exact 5h", h.Max())
	}
	if h.counts[len(h.counts)-1] != 2 {
		t.Fatalf("last bucket holds %d, want the 2 clamped values", h.counts[len(h.counts)-1])
	}
	// The clamped values read back as the last bucket, about 1 h.
	if got := h.Quantile(0.5); math.Abs(float64(got-time.Hour))/float64(time.Hour) > 0.001 {
		t.Fatalf("median %v, want about 1h", got)
	}
	if got := h.Quantile(0.3); math.Abs(float64(got-time.Millisecond))/float64(time.Millisecond) > 0.001 {
		t.Fatalf("q=0.3 %v, want about 1ms", got)
	}

	// Below 1 µs: kept, exact at this scale, and never below the true min.
	s := NewHistogram()
	s.Record(300)
	s.Record(-5) // counts as 0
	if s.Min() != 0 || s.Max() != 300 || s.Quantile(0.5) != 0 || s.Quantile(0.9) != 300 {
		t.Fatalf("sub-µs: min %v max %v q50 %v q90 %v", s.Min(), s.Max(), s.Quantile(0.5), s.Quantile(0.9))
	}
}

func TestHistogramQuantileWithinMinMax(t *testing.T) {
	// One value in a wide bucket: the midpoint would miss it, min/max pin it.
	h := NewHistogram()
	v := 30*time.Minute + 7
	h.Record(v)
	for _, q := range testQuantiles {
		if got := h.Quantile(q); got != v {
			t.Fatalf("q=%v: %v, want %v", q, got, v)
		}
	}
}

func TestHistogramEmptyAndReset(t *testing.T) {
	h := NewHistogram()
	check := func(when string) {
		t.Helper()
		if h.Count() != 0 || h.Min() != 0 || h.Max() != 0 || h.Mean() != 0 || h.Clamped() != 0 ||
			h.Quantile(0) != 0 || h.Quantile(0.5) != 0 || h.Quantile(1) != 0 {
			t.Fatalf("%s: not all zero: count %d min %v max %v mean %v q50 %v",
				when, h.Count(), h.Min(), h.Max(), h.Mean(), h.Quantile(0.5))
		}
	}
	check("new")
	h.Record(5 * time.Millisecond)
	h.Record(3 * time.Hour)
	h.Reset()
	check("after Reset")
	h.Record(7 * time.Millisecond)
	if h.Min() != 7*time.Millisecond || h.Max() != 7*time.Millisecond || h.Count() != 1 {
		t.Fatalf("after Reset and Record: min %v max %v count %d", h.Min(), h.Max(), h.Count())
	}
}

func BenchmarkHistogramRecord(b *testing.B) {
	h := NewHistogram()
	d := time.Duration(0)
	for b.Loop() {
		d += 7919
		h.Record(d % time.Second)
	}
}
