package engine

import (
	"time"
	"unsafe"
)

// nextCron returns the first minute strictly after now matching the
// SUBMIT_JOB_SCHED fields minute, hour, day of month, month, day of week
// (0 = Sunday). An empty field or "*" matches anything. ok is false for a
// field that is not a number in its range, or a date that never comes.
func nextCron(now time.Time, fields [][]byte) (time.Time, bool) {
	ranges := [5][2]int{{0, 59}, {0, 23}, {1, 31}, {1, 12}, {0, 6}}
	var want [5]int
	for i, f := range fields {
		want[i] = -1
		if len(f) == 0 || (len(f) == 1 && f[0] == '*') {
			continue
		}
		n := 0
		for _, c := range f {
			if c < '0' || c > '9' || n > 100 {
				return time.Time{}, false
			}
			n = n*10 + int(c-'0')
		}
		if n < ranges[i][0] || n > ranges[i][1] {
			return time.Time{}, false
		}
		want[i] = n
	}
	// A day the month never has (30 February, 31 April) needs no search.
	if maxDay := [13]int{0, 31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31}; want[3] > 0 && want[2] > maxDay[want[3]] {
		return time.Time{}, false
	}
	match := func(w, v int) bool { return w < 0 || w == v }
	t := now.Truncate(time.Minute).Add(time.Minute)
	// Walk days first, then minutes within a matching day; four years
	// cover every reachable date (29 February included).
	for day := 0; day < 4*366; day++ {
		if match(want[2], t.Day()) && match(want[3], int(t.Month())) && match(want[4], int(t.Weekday())) {
			for d := t; d.Day() == t.Day(); d = d.Add(time.Minute) {
				if match(want[1], d.Hour()) && match(want[0], d.Minute()) {
					return d, true
				}
			}
		}
		y, m, dd := t.Date()
		t = time.Date(y, m, dd+1, 0, 0, 0, 0, t.Location())
	}
	return time.Time{}, false
}

// unsafeBytes views a string's bytes without copying; the result must not
// be modified.
func unsafeBytes(s string) []byte { return unsafe.Slice(unsafe.StringData(s), len(s)) }
