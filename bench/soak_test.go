package bench

import (
	"context"
	"strings"
	"testing"
	"time"

	"gearshard/netio/gstest"
)

// A short soak against an in-process server passes, with workers killed
// and clients dropped along the way.
func TestSoakPasses(t *testing.T) {
	srv := gstest.Start(t, nil)
	var log strings.Builder
	r, err := Soak(context.Background(), SoakConfig{
		Addr: srv.Addr, Duration: 5 * time.Second, Clients: 6, InFlight: 8, Workers: 6, Seed: 7,
		KillEvery: 50 * time.Millisecond, DropEvery: 100 * time.Millisecond, Stall: 20 * time.Second, Log: &log,
	})
	if r == nil {
		t.Fatalf("no result: %v", err)
	}
	t.Log(r.Verdict())
	if err != nil || !r.Pass {
		t.Fatalf("soak failed: %v\n%s", err, log.String())
	}
	if !strings.HasPrefix(r.Verdict(), "soak PASS ") {
		t.Errorf("verdict %q", r.Verdict())
	}
	if r.WorkerKills == 0 || r.ClientDrops == 0 || r.Completed == 0 || r.Failed == 0 || r.Abandoned == 0 || r.Background == 0 || r.BGDone < r.Background {
		t.Errorf("faults or job kinds missing: %+v", r)
	}
	if r.Jobs != r.Completed+r.Failed+r.Abandoned+r.Background {
		t.Errorf("accounting: %+v", r)
	}
}

// The flatness rule: median RSS of the last third after warm-up within
// 1.5x of the first third's, threads not growing.
func TestSoakFlatness(t *testing.T) {
	t0 := time.Now()
	mk := func(rss []int64, thr []int) []soakSample {
		var s []soakSample
		for i := range rss {
			s = append(s, soakSample{at: t0.Add(time.Duration(i) * time.Second), rss: rss[i] << 20, threads: thr[i]})
		}
		return s
	}
	// The first two samples are warm-up (before t0+2s) and ignored.
	flat := mk([]int64{1, 50, 10, 11, 10, 12, 11, 13, 14}, []int{3, 20, 8, 8, 9, 9, 9, 10, 10})
	if f, l, _, _, n, why := flatness(flat, t0.Add(2*time.Second)); why != "" || n != 7 || f != 11<<20 || l != 14<<20 {
		t.Errorf("flat run: first %d last %d n %d why %q", f, l, n, why)
	}
	grow := mk([]int64{10, 10, 10, 12, 14, 16, 18, 20, 22}, []int{8, 8, 8, 8, 8, 8, 8, 8, 8})
	if _, _, _, _, _, why := flatness(grow, t0); !strings.Contains(why, "RSS grew") {
		t.Errorf("growing RSS: %q", why)
	}
	thr := mk([]int64{10, 10, 10, 10, 10, 10, 10, 10, 10}, []int{8, 8, 8, 9, 10, 12, 14, 16, 20})
	if _, _, _, _, _, why := flatness(thr, t0); !strings.Contains(why, "threads grew") {
		t.Errorf("growing threads: %q", why)
	}
}
