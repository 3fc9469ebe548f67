package bench

import (
	"math"
	"math/bits"
	"time"
)

// Histogram is a log-linear latency histogram in the manner of HdrHistogram:
// every power of two of nanoseconds is split into 1024 equal sub-buckets, so
// a bucket is never wider than 1/1024 of the values in it and its midpoint
// is within 0.05% of any of them (three significant decimal digits) from
// 1 µs up to the 1 h ceiling. Values under 2048 ns are kept exactly, which
// covers the sub-microsecond ones; values above 1 h are counted in the last
// bucket (see Clamped) while Min, Max and Mean stay exact.
//
// The counts take about 260 KiB, allocated once by NewHistogram so that
// Record never allocates. A Histogram is not safe for concurrent use: give
// each goroutine its own and Merge them at the end.
type Histogram struct {
	counts   []int64
	count    int64
	clamped  int64
	sum      int64 // ns; overflows only past ~292 years of summed latency
	min, max time.Duration
}

const (
	// 2^histSubBits = 2048 sub-buckets per power of two (half of them new
	// at each power): HdrHistogram's choice for three significant digits.
	histSubBits  = 11
	histSubCount = 1 << histSubBits
	histSubHalf  = histSubCount / 2
	histSubMask  = histSubCount - 1
	// histHighest is the largest value with a bucket of its own.
	histHighest = time.Hour
)

// histLen is the number of buckets: up to and including histHighest's.
var histLen = histIndex(int64(histHighest)) + 1

// NewHistogram returns an empty histogram covering 1 µs .. 1 h.
func NewHistogram() *Histogram {
	return &Histogram{counts: make([]int64, histLen)}
}

// histIndex maps a non-negative value in ns to its bucket: values below
// 2048 have one bucket each, and from there each power of two
// [2^k, 2^(k+1)) is split into 1024 buckets of width 2^(k-10).
func histIndex(v int64) int {
	// pow is 0 below 2048; above, v>>pow falls in [1024, 2048).
	pow := 63 - bits.LeadingZeros64(uint64(v)|histSubMask) - (histSubBits - 1)
	sub := int(v >> pow)
	return pow<<(histSubBits-1) + sub
}

// histBounds is histIndex's inverse: the lowest value of bucket i and its
// width, both in ns.
func histBounds(i int) (low, width int64) {
	if i < histSubCount {
		return int64(i), 1
	}
	pow := i>>(histSubBits-1) - 1
	sub := int64(i&(histSubHalf-1) + histSubHalf)
	return sub << pow, 1 << pow
}

// Record adds one observation. Negative durations count as 0.
func (h *Histogram) Record(d time.Duration) {
	if d < 0 {
		d = 0
	}
	if h.count == 0 || d < h.min {
		h.min = d
	}
	if d > h.max {
		h.max = d
	}
	h.count++
	h.sum += int64(d)
	i := len(h.counts) - 1
	if d <= histHighest {
		i = histIndex(int64(d))
	} else {
		h.clamped++
	}
	h.counts[i]++
}

// Merge adds every observation of o to h; o is unchanged.
func (h *Histogram) Merge(o *Histogram) {
	if o == nil || o.count == 0 {
		return
	}
	if h.count == 0 || o.min < h.min {
		h.min = o.min
	}
	if o.max > h.max {
		h.max = o.max
	}
	h.count += o.count
	h.clamped += o.clamped
	h.sum += o.sum
	for i, c := range o.counts {
		h.counts[i] += c
	}
}

// Count is the number of observations.
func (h *Histogram) Count() int64 { return h.count }

// Clamped is how many observations were above 1 h and so were counted in
// the last bucket.
func (h *Histogram) Clamped() int64 { return h.clamped }

// Min is the exact smallest observation, 0 when empty.
func (h *Histogram) Min() time.Duration { return h.min }

// Max is the exact largest observation, 0 when empty.
func (h *Histogram) Max() time.Duration { return h.max }

// Mean is the exact mean of the observations, 0 when empty.
func (h *Histogram) Mean() time.Duration {
	if h.count == 0 {
		return 0
	}
	return time.Duration(h.sum / h.count)
}

// Quantile returns the value below or at which a fraction q (0..1) of the
// observations lie: the midpoint of the bucket holding the ceil(q*Count)-th
// smallest observation, kept within [Min, Max]. Quantile(0) is Min and
// Quantile(1) is Max exactly; an empty histogram gives 0.
func (h *Histogram) Quantile(q float64) time.Duration {
	if h.count == 0 {
		return 0
	}
	if !(q > 0) { // also NaN
		return h.min
	}
	if q >= 1 {
		return h.max
	}
	rank := max(int64(math.Ceil(q*float64(h.count))), 1) // nearest rank
	var seen int64
	for i, c := range h.counts {
		seen += c
		if seen >= rank {
			low, width := histBounds(i)
			v := time.Duration(low + width/2)
			return min(max(v, h.min), h.max)
		}
	}
	return h.max // unreachable: the counts sum to h.count
}

// Reset empties h, keeping its buckets for reuse.
func (h *Histogram) Reset() {
	clear(h.counts)
	h.count, h.clamped, h.sum, h.min, h.max = 0, 0, 0, 0, 0
}
