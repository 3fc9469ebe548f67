package engine

import (
	"fmt"
	"math/rand/v2"
	"testing"
)

// The job table must agree with a plain map under any mix of adds and
// removals: mostly in order, with stragglers left behind for long.
func TestJobTableMatchesMap(t *testing.T) {
	seed := uint64(20261121)
	rng := rand.New(rand.NewPCG(seed, seed))
	t.Logf("seed %d", seed)
	var tab jobTable
	ref := map[uint64]*Job{}
	var live []uint64
	next := uint64(7) // numbering need not start at zero
	for step := 0; step < 200_000; step++ {
		switch r := rng.IntN(100); {
		case r < 55 || len(live) == 0:
			j := &Job{id: next}
			tab.add(next, j)
			ref[next] = j
			live = append(live, next)
			next++
		case r < 97:
			// Usually the oldest few finish; stragglers stay behind.
			i := rng.IntN(min(len(live), 8))
			if rng.IntN(50) == 0 {
				i = rng.IntN(len(live))
			}
			n := live[i]
			live = append(live[:i], live[i+1:]...)
			tab.remove(n)
			delete(ref, n)
		default:
			n := uint64(rng.IntN(int(next + 10)))
			if tab.get(n) != ref[n] {
				t.Fatalf("step %d: get(%d) = %v, want %v", step, n, tab.get(n), ref[n])
			}
		}
		if tab.len() != len(ref) {
			t.Fatalf("step %d: len %d, want %d", step, tab.len(), len(ref))
		}
	}
	seen := 0
	tab.each(func(j *Job) {
		if ref[j.id] != j {
			t.Fatalf("each gave %d, not live", j.id)
		}
		seen++
	})
	if seen != len(ref) {
		t.Fatalf("each gave %d jobs, want %d", seen, len(ref))
	}
	// A straggler must not make the ring grow with every later job.
	if len(tab.ring) > 64*minJobRing {
		t.Fatalf("ring grew to %d slots for %d live jobs", len(tab.ring), tab.len())
	}
}

// Stragglers: a few jobs stay live while thousands after them come and go,
// so the ring's window moves past them and they move to the map. Lookups,
// removal and each's number order (which admin listings rely on) must hold
// across the two.
func TestJobTableStragglers(t *testing.T) {
	var tab jobTable
	ref := map[uint64]*Job{}
	var kept []uint64
	checkEach := func(when string) {
		t.Helper()
		seen, last := 0, uint64(0)
		tab.each(func(j *Job) {
			if ref[j.id] != j {
				t.Fatalf("%s: each gave %d, not live", when, j.id)
			}
			if seen > 0 && j.id <= last {
				t.Fatalf("%s: each gave %d after %d", when, j.id, last)
			}
			seen, last = seen+1, j.id
		})
		if seen != len(ref) {
			t.Fatalf("%s: each gave %d jobs, want %d", when, seen, len(ref))
		}
	}
	for n := uint64(1); n <= 50_000; n++ {
		j := &Job{id: n}
		tab.add(n, j)
		ref[n] = j
		switch {
		case n%997 == 0: // a straggler: stays
			kept = append(kept, n)
		case n > 3:
			// The job three back finishes unless it is a straggler.
			if _, ok := ref[n-3]; ok && (n-3)%997 != 0 {
				tab.remove(n - 3)
				delete(ref, n-3)
			}
		}
		if n%5000 == 0 {
			checkEach(fmt.Sprintf("after %d", n))
		}
	}
	if len(tab.old) == 0 {
		t.Fatal("no straggler reached the map")
	}
	if len(tab.ring) > 4*minJobRing {
		t.Fatalf("ring grew to %d slots for %d live jobs", len(tab.ring), tab.len())
	}
	// Stragglers finish in another order than they came.
	for i, n := range kept {
		if i%2 == 1 {
			if tab.get(n) != ref[n] {
				t.Fatalf("get(%d) = %v, want its job", n, tab.get(n))
			}
			tab.remove(n)
			delete(ref, n)
		}
	}
	checkEach("after half the stragglers finished")
}
