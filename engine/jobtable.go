package engine

import (
	"maps"
	"slices"
)

// jobTable finds a shard's jobs by handle number. A shard numbers its jobs
// in order, and jobs mostly finish in about that order, so the live ones
// sit in a window of recent numbers: a ring indexed by number holds that
// window with no hashing and 8 bytes a job. A job that stays behind while
// the window moves on (a long-running or scheduled one) is moved to a map,
// so one straggler cannot make the ring grow without bound.
type jobTable struct {
	ring   []*Job // length a power of two; number n lives at ring[n & (len-1)]
	lo, hi uint64 // the ring holds numbers [lo, hi)
	inRing int    // live jobs in the ring
	old    map[uint64]*Job
}

const minJobRing = 1024

// add files job j under number n, which must be the next number (n == hi).
func (t *jobTable) add(n uint64, j *Job) {
	if t.ring == nil {
		t.ring = make([]*Job, minJobRing)
		t.lo, t.hi = n, n
	}
	if t.hi-t.lo == uint64(len(t.ring)) {
		t.makeRoom()
	}
	t.ring[n&uint64(len(t.ring)-1)] = j
	t.hi = n + 1
	t.inRing++
}

// makeRoom grows a ring that is mostly live, or else moves the oldest
// stragglers out to the map until there is a free slot.
func (t *jobTable) makeRoom() {
	if t.inRing > len(t.ring)/2 {
		bigger := make([]*Job, 2*len(t.ring))
		for n := t.lo; n < t.hi; n++ {
			bigger[n&uint64(len(bigger)-1)] = t.ring[n&uint64(len(t.ring)-1)]
		}
		t.ring = bigger
		return
	}
	for t.hi-t.lo == uint64(len(t.ring)) || (t.lo < t.hi && t.ring[t.lo&uint64(len(t.ring)-1)] == nil) {
		slot := &t.ring[t.lo&uint64(len(t.ring)-1)]
		if j := *slot; j != nil {
			if t.old == nil {
				t.old = make(map[uint64]*Job)
			}
			t.old[t.lo] = j
			*slot = nil
			t.inRing--
		}
		t.lo++
	}
}

// get returns the job numbered n, or nil.
func (t *jobTable) get(n uint64) *Job {
	switch {
	case n >= t.hi:
		return nil
	case n >= t.lo:
		return t.ring[n&uint64(len(t.ring)-1)]
	default:
		return t.old[n]
	}
}

// remove forgets the job numbered n.
func (t *jobTable) remove(n uint64) {
	if n < t.lo {
		delete(t.old, n)
		return
	}
	mask := uint64(len(t.ring) - 1)
	if t.ring[n&mask] == nil {
		return
	}
	t.ring[n&mask] = nil
	t.inRing--
	for t.lo < t.hi && t.ring[t.lo&mask] == nil {
		t.lo++
	}
}

// len is the number of live jobs.
func (t *jobTable) len() int { return t.inRing + len(t.old) }

// each calls fn for every live job, in number order (the map's
// stragglers are all older than the ring's window); fn may remove the job
// it is given.
func (t *jobTable) each(fn func(*Job)) {
	for _, n := range slices.Sorted(maps.Keys(t.old)) {
		fn(t.old[n])
	}
	for n := t.lo; n < t.hi; n++ {
		if j := t.ring[n&uint64(len(t.ring)-1)]; j != nil {
			fn(j)
		}
	}
}
