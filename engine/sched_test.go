package engine

import (
	"testing"
	"time"
)

func TestNextCronDates(t *testing.T) {
	now := time.Date(2026, 11, 21, 22, 0, 30, 0, time.UTC)
	f := func(s ...string) [][]byte {
		b := make([][]byte, len(s))
		for i := range s {
			b[i] = []byte(s[i])
		}
		return b
	}
	for _, tc := range []struct {
		fields []string
		want   string // "" = never
	}{
		{[]string{"*", "*", "*", "*", "*"}, "2026-11-21T22:01:00Z"},
		{[]string{"30", "6", "29", "2", "*"}, "2028-02-29T06:30:00Z"}, // the next leap year
		{[]string{"0", "0", "31", "12", "*"}, "2026-12-31T00:00:00Z"},
		{[]string{"0", "0", "*", "*", "0"}, "2026-11-22T00:00:00Z"}, // the next Sunday
		{[]string{"*", "*", "30", "2", "*"}, ""},
		{[]string{"*", "*", "31", "4", "*"}, ""},
		{[]string{"*", "*", "31", "9", "*"}, ""},
	} {
		got, ok := nextCron(now, f(tc.fields...))
		if tc.want == "" {
			if ok {
				t.Errorf("%q: %v, want never", tc.fields, got)
			}
			continue
		}
		if !ok || got.Format(time.RFC3339) != tc.want {
			t.Errorf("%q: %v %v, want %s", tc.fields, got, ok, tc.want)
		}
	}
}
