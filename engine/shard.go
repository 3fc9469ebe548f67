package engine

import (
	"container/heap"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"
)

// Priority of a job; the values are gearmand's (and its queue tables').
type Priority uint8

const (
	High Priority = iota
	Normal
	Low
	numPriorities
)

// A shard owns every function whose name hashes to it, with those
// functions' queues, unique keys, jobs, registrations and sleepers. Whoever
// holds mu is the only thread inside; every field below is guarded by it
// unless marked atomic.
type shard struct {
	_   [64]byte // keep shards on separate cache lines: each is hot on its own core
	mu  sync.Mutex
	idx int
	e   *Engine

	funcs map[string]*function
	// byName and newNames hold funcs for admin listings without a sort:
	// byName sorted by name, newNames those created since it was last
	// merged (see sortedFunctions).
	byName   []*function
	newNames []*function
	// withUniques are the functions holding jobs by unique key: where
	// GET_STATUS_UNIQUE looks, however many names workers registered.
	withUniques map[*function]struct{}
	jobs        jobTable // by handle number's sequence within the shard: (number-1) / shards
	nextID      uint64   // handle numbers: idx+1, idx+1+N, idx+1+2N, ...

	// runnable counts queued jobs per priority over all functions; GRAB
	// reads it without the lock to skip shards with nothing to offer.
	runnable [numPriorities]atomic.Int64
	// bytes is the memory held by this shard's jobs (see MaxQueueBytes),
	// allocated apart: slab cleanups hold it, and holding the shard instead
	// would keep the shard, and through it its slabs, for ever.
	bytes *atomic.Int64
	// ready lists, per priority, the functions with jobs queued at it, so
	// that a worker registered for many more functions looks only at these
	// (see leastRecentlyServed).
	ready [numPriorities][]*function

	timers    timerHeap // epoch jobs waiting for their time, running jobs with a CAN_DO_TIMEOUT
	timer     *time.Timer
	timerWhen time.Time

	submitted, finished uint64 // jobs routed here, jobs ended with a result (for Stats)

	free    []*Job              // recycled job records
	slab    []Job               // fresh records, handed out one at a time (see jobSlab)
	bufSlab []byte              // room for job buffers, carved off the front
	waiters map[uint64][]waiter // clients coalesced onto a job still being persisted
	_       [64]byte
}

// function is one function name's state within its shard.
type function struct {
	name     string
	queue    [numPriorities]jobList
	total    int // live jobs: queued, delayed and running (gearmand's TOTAL)
	running  int
	delayed  [numPriorities]int // jobs waiting for their epoch, by priority
	workers  []*ability         // registrations (ability.idx is the position)
	sleepers []*ability         // registrations whose worker slept with nothing to do
	// withdrawnSleepers counts sleepers entries whose registration is
	// gone; past half the list they are swept (see withdraw).
	withdrawnSleepers int
	maxQueue          [numPriorities]int
	unique            map[string]*Job
	readyAt           [numPriorities]int // 1 + position in shard.ready; 0 = not listed

	counters jobCounters
	// lat comes with the function's first job: a name only registered
	// (CAN_DO) stays small, gearmand keeping names for good too.
	lat *fnLatency
}

// fnLatency is a function's time-in-queue and run-time histograms.
type fnLatency struct{ wait, run latencyHist }

func (f *function) latency() *fnLatency {
	if f.lat == nil {
		f.lat = new(fnLatency)
	}
	return f.lat
}

// ability is one CAN_DO registration of a session for a function.
type ability struct {
	sess      *Session
	fn        *function
	timeout   time.Duration
	seq       uint64 // the session's canDoSeq when registered (orders "workers")
	idx       int    // position in fn.workers, for removal in O(1)
	served    uint64 // the session's grabSeq when last served; 0 = never
	asleep    bool   // listed in fn.sleepers
	withdrawn bool   // CANT_DO'd or session gone; skipped if still listed
	// prev and next link it into its session's serving order in the shard
	// (sessShard.unserved or .served).
	prev, next *ability
}

// abilityList is an intrusive doubly-linked list of registrations.
type abilityList struct{ head, tail *ability }

func (l *abilityList) pushBack(a *ability) {
	a.prev, a.next = l.tail, nil
	if l.tail != nil {
		l.tail.next = a
	} else {
		l.head = a
	}
	l.tail = a
}

func (l *abilityList) remove(a *ability) {
	if a.prev != nil {
		a.prev.next = a.next
	} else {
		l.head = a.next
	}
	if a.next != nil {
		a.next.prev = a.prev
	} else {
		l.tail = a.prev
	}
	a.prev, a.next = nil, nil
}

type jobState uint8

const (
	stateQueued     jobState = iota // in its function's FIFO
	statePersisting                 // background job waiting to be durable before JOB_CREATED
	stateDelayed                    // waiting for its epoch in the timer heap
	stateRunning                    // held by a worker
	stateDone                       // finished; record may be recycled
)

// Job is one job record. It lives in exactly one shard and is touched only
// under that shard's lock.
type Job struct {
	id         uint64
	fn         *function
	buf        []byte // unique, reducer, data and stored key, back to back
	uniqueLen  uint32
	reducerLen uint32
	storedLen  uint8 // a made-up stored key (for an empty unique) at the end of buf
	persisted  bool  // in the persistent queue (or being written there)
	pri        Priority
	state      jobState
	background bool
	inUnique   bool // listed in fn.unique
	retries    uint8
	num, den   uint32
	worker     *Session
	prev, next *Job // links in the function's FIFO while queued, in the worker's held list while running

	first     listener    // the submitting client, when foreground
	listeners []*listener // further clients coalesced onto the job

	deadline int64 // unix nanoseconds: epoch time or CAN_DO_TIMEOUT expiry, while in the timer heap
	stamp    int64 // engine clock when queued, then when assigned (for the wait and run histograms)
	filed    int64 // engine clock when filed under its unique: GET_STATUS_UNIQUE answers for the newest
	heapIdx  int32 // index in shard.timers, -1 when absent
}

func (j *Job) unique() []byte  { return j.buf[:j.uniqueLen] }
func (j *Job) reducer() []byte { return j.buf[j.uniqueLen : j.uniqueLen+j.reducerLen] }
func (j *Job) data() []byte    { return j.buf[j.uniqueLen+j.reducerLen : len(j.buf)-int(j.storedLen)] }

// storedKey is the unique the persistent queue files the job under.
func (j *Job) storedKey() []byte {
	if j.storedLen > 0 {
		return j.buf[len(j.buf)-int(j.storedLen):]
	}
	return j.unique()
}

// jobList is an intrusive doubly-linked FIFO of jobs.
type jobList struct {
	head, tail *Job
	n          int
}

func (l *jobList) pushBack(j *Job) {
	j.prev, j.next = l.tail, nil
	if l.tail != nil {
		l.tail.next = j
	} else {
		l.head = j
	}
	l.tail = j
	l.n++
}

func (l *jobList) remove(j *Job) {
	if j.prev != nil {
		j.prev.next = j.next
	} else {
		l.head = j.next
	}
	if j.next != nil {
		j.next.prev = j.prev
	} else {
		l.tail = j.prev
	}
	j.prev, j.next = nil, nil
	l.n--
}

// listener attaches a foreground client to a job; it is linked both into
// the job and into the client's per-shard waiting list.
type listener struct {
	sess       *Session
	job        *Job
	prev, next *listener
}

type listenerList struct {
	head *listener
}

func (l *listenerList) push(x *listener) {
	x.prev, x.next = nil, l.head
	if l.head != nil {
		l.head.prev = x
	}
	l.head = x
}

func (l *listenerList) remove(x *listener) {
	if x.prev != nil {
		x.prev.next = x.next
	} else {
		l.head = x.next
	}
	if x.next != nil {
		x.next.prev = x.prev
	}
	x.prev, x.next = nil, nil
}

// timerHeap orders jobs by deadline.
type timerHeap []*Job

func (h timerHeap) Len() int           { return len(h) }
func (h timerHeap) Less(a, b int) bool { return h[a].deadline < h[b].deadline }
func (h timerHeap) Swap(a, b int) {
	h[a], h[b] = h[b], h[a]
	h[a].heapIdx, h[b].heapIdx = int32(a), int32(b)
}
func (h *timerHeap) Push(x any) {
	j := x.(*Job)
	j.heapIdx = int32(len(*h))
	*h = append(*h, j)
}
func (h *timerHeap) Pop() any {
	old := *h
	j := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	j.heapIdx = -1
	return j
}

func newShard(e *Engine, idx int) *shard {
	return &shard{
		e:           e,
		idx:         idx,
		funcs:       make(map[string]*function),
		withUniques: make(map[*function]struct{}),
		waiters:     make(map[uint64][]waiter),
		nextID:      uint64(idx) + 1,
		bytes:       new(atomic.Int64),
	}
}

// seq turns a handle number of this shard into its job-table index.
func (s *shard) seq(id uint64) uint64 { return (id - 1) / uint64(len(s.e.shards)) }

// job returns the job with handle number id, or nil.
func (s *shard) job(id uint64) *Job { return s.jobs.get(s.seq(id)) }

// function returns the named function, creating it when create is set.
func (s *shard) function(name []byte, create bool) *function {
	if fn := s.funcs[string(name)]; fn != nil {
		return fn
	}
	if !create {
		return nil
	}
	fn := &function{name: string(name)}
	s.funcs[fn.name] = fn
	s.newNames = append(s.newNames, fn)
	if len(s.newNames) > max(minNewNames, len(s.byName)/4) {
		s.mergeNames()
	}
	return fn
}

// minNewNames is how many new functions wait before they are merged into
// byName even when no listing asks.
const minNewNames = 64

// sortedFunctions returns the shard's functions sorted by name. Caller
// holds s.mu; the slice is valid until the lock is released.
func (s *shard) sortedFunctions() []*function {
	s.mergeNames()
	return s.byName
}

// mergeNames sorts newNames into byName. Inserting each name into the
// sorted list would move the whole list per name (a client registering a
// million names would hold the shard for minutes); merging in batches at
// least a quarter of the list's size costs a few moves per name.
func (s *shard) mergeNames() {
	if len(s.newNames) == 0 {
		return
	}
	byNameOrder := func(a, b *function) int { return strings.Compare(a.name, b.name) }
	slices.SortFunc(s.newNames, byNameOrder)
	old, add := len(s.byName), s.newNames
	s.byName = slices.Grow(s.byName, len(add))[:old+len(add)]
	// Merge from the back, so nothing in byName is overwritten unread.
	i, j := old-1, len(add)-1
	for k := len(s.byName) - 1; j >= 0; k-- {
		if i >= 0 && s.byName[i].name > add[j].name {
			s.byName[k] = s.byName[i]
			i--
		} else {
			s.byName[k] = add[j]
			j--
		}
	}
	clear(s.newNames)
	s.newNames = s.newNames[:0]
}

// newJob takes a recycled record or makes one, and gives it the next handle.
func (s *shard) newJob(fn *function, unique, reducer, data, stored []byte) *Job {
	var j *Job
	if n := len(s.free); n > 0 {
		j = s.free[n-1]
		s.free = s.free[:n-1]
	} else {
		if len(s.slab) == 0 {
			s.slab = make([]Job, jobSlab)
			charge(s, &s.slab[0], jobSlabBytes)
		}
		j = &s.slab[0]
		s.slab = s.slab[1:]
	}
	size := len(unique) + len(reducer) + len(data) + len(stored)
	buf := j.buf[:0]
	if cap(buf) < size {
		buf = s.carve(size)
	}
	buf = append(append(append(append(buf, unique...), reducer...), data...), stored...)
	*j = Job{
		id:         s.nextID,
		fn:         fn,
		buf:        buf,
		uniqueLen:  uint32(len(unique)),
		reducerLen: uint32(len(reducer)),
		storedLen:  uint8(len(stored)),
		heapIdx:    -1,
	}
	s.nextID += uint64(len(s.e.shards))
	s.jobs.add(s.seq(j.id), j)
	fn.total++
	s.bytes.Add(jobCharge(buf))
	return j
}

// carve returns an empty buffer with room for size bytes.
func (s *shard) carve(size int) []byte {
	if size > maxCarved {
		return make([]byte, 0, size)
	}
	if len(s.bufSlab) < size {
		s.bufSlab = make([]byte, bufSlab)
		charge(s, &s.bufSlab[0], int64(bufSlab))
	}
	buf := s.bufSlab[:0:size]
	s.bufSlab = s.bufSlab[size:]
	return buf
}

const (
	bufSlab   = 4096
	maxCarved = 512
)

// Job memory is charged to s.bytes as it is allocated: a slab when it is
// made, given back when the collector finds none of it in use. A slab
// outlives its jobs while one of them is held (a worker may keep one job in
// 32 for ever), so charging jobs rather than slabs would let
// --max-queue-bytes admit many times the memory it names. Per job, only
// what no slab holds: jobCharge.
func charge[T any](s *shard, slab *T, n int64) {
	s.bytes.Add(n)
	runtime.AddCleanup(slab, slabCharge.release, slabCharge{s.bytes, n})
}

type slabCharge struct {
	to *atomic.Int64
	n  int64
}

func (c slabCharge) release() { c.to.Add(-c.n) }

const (
	jobRecord    = int64(unsafe.Sizeof(Job{}))
	jobSlabBytes = jobSlab * jobRecord
	// jobOverhead must cover a record: a compile error here says it no longer does.
	_ = uint64(jobOverhead - jobRecord)
)

// jobCharge is a job's memory outside the slabs: its table slot and
// bookkeeping, and a buffer too large to carve from one.
func jobCharge(buf []byte) int64 {
	n := jobOverhead - jobRecord
	if cap(buf) > maxCarved {
		n += int64(len(buf))
	}
	return n
}

// jobSlab is how many fresh records one allocation makes. A backlog
// allocates a record per submission, and one allocation per 32 takes the
// allocator off the submit path (queueing 1M jobs: about 12% less server
// CPU). A slab lives while any of its records does, like a C heap's
// fragmentation; its memory never exceeds what its jobs once held.
const jobSlab = 32

// maxRecycled bounds the free list and the buffer a recycled record keeps.
const (
	maxRecycled    = 1024
	maxRecycledBuf = 4096
)

// freeJob forgets a finished job. The record is recycled; nothing may hold
// it after this.
func (s *shard) freeJob(j *Job) {
	s.forgetUnique(j)
	if j.heapIdx >= 0 {
		heap.Remove(&s.timers, int(j.heapIdx))
	}
	s.jobs.remove(s.seq(j.id))
	j.fn.total--
	s.bytes.Add(-jobCharge(j.buf))
	if j.state == stateDelayed {
		j.fn.delayed[j.pri]--
	}
	if j.persisted {
		s.e.opts.Store.Remove(unsafeBytes(j.fn.name), j.storedKey())
	}
	// A job still being written keeps its buffer: the store reads it
	// until it calls back.
	recycle := j.state != statePersisting
	j.state = stateDone
	if recycle && len(s.free) < maxRecycled && cap(j.buf) <= maxRecycledBuf {
		buf := j.buf
		*j = Job{buf: buf[:0], heapIdx: -1}
		s.free = append(s.free, j)
	}
}

// drop forgets a job that is not running, out of its queue or the timer
// heap. Caller holds s.mu.
func (s *shard) drop(j *Job) {
	if j.state == stateQueued {
		s.dequeue(j)
	}
	s.freeJob(j)
}

// enqueue puts a job at the tail of its priority FIFO and wakes sleepers.
func (s *shard) enqueue(t *Turn, j *Job) {
	j.state = stateQueued
	j.stamp = t.clock(s.e)
	q := &j.fn.queue[j.pri]
	if q.head == nil {
		s.listReady(j.fn, j.pri)
	}
	q.pushBack(j)
	s.runnable[j.pri].Add(1)
	s.wake(t, j.fn)
}

// dequeue removes a queued job from its FIFO.
func (s *shard) dequeue(j *Job) {
	q := &j.fn.queue[j.pri]
	q.remove(j)
	s.runnable[j.pri].Add(-1)
	if q.head == nil {
		s.unlistReady(j.fn, j.pri)
	}
}

// listReady adds fn to the shard's functions with work at pri.
func (s *shard) listReady(fn *function, pri Priority) {
	s.ready[pri] = append(s.ready[pri], fn)
	fn.readyAt[pri] = len(s.ready[pri])
}

// unlistReady removes fn from them in O(1): the last entry takes its place.
func (s *shard) unlistReady(fn *function, pri Priority) {
	ready, at := s.ready[pri], fn.readyAt[pri]-1
	last := len(ready) - 1
	ready[at] = ready[last]
	ready[at].readyAt[pri] = at + 1
	ready[last] = nil
	s.ready[pri] = ready[:last]
	fn.readyAt[pri] = 0
}

// wake sends NOOP to sleeping workers of fn: all of them, or at most
// --worker-wakeup. Entries whose worker already woke (through another
// shard, or by grabbing) are dropped on the way.
func (s *shard) wake(t *Turn, fn *function) {
	limit := s.e.opts.WorkerWakeup
	woke := 0
	i := 0
	for ; i < len(fn.sleepers); i++ {
		if limit > 0 && woke >= limit {
			break
		}
		a := fn.sleepers[i]
		a.asleep = false
		if a.withdrawn {
			fn.withdrawnSleepers--
			continue
		}
		if a.sess.sleep.CompareAndSwap(sleeping, woken) {
			t.send(a.sess, wireNoop)
			woke++
		}
	}
	n := copy(fn.sleepers, fn.sleepers[i:])
	clear(fn.sleepers[n:])
	fn.sleepers = fn.sleepers[:n]
}

// armTimer schedules j in the timer heap at d.
func (s *shard) armTimer(j *Job, d time.Time) {
	j.deadline = d.UnixNano()
	if j.heapIdx >= 0 {
		heap.Fix(&s.timers, int(j.heapIdx))
	} else {
		heap.Push(&s.timers, j)
	}
	s.resetTimer()
}

func (s *shard) disarmTimer(j *Job) {
	if j.heapIdx >= 0 {
		heap.Remove(&s.timers, int(j.heapIdx))
	}
}

// resetTimer points the shard's timer at the earliest deadline.
func (s *shard) resetTimer() {
	if len(s.timers) == 0 {
		return
	}
	next := time.Unix(0, s.timers[0].deadline)
	if s.timer != nil && !s.timerWhen.IsZero() && !next.Before(s.timerWhen) {
		return // already due no later than next
	}
	s.timerWhen = next
	d := time.Until(next)
	if s.timer == nil {
		s.timer = time.AfterFunc(d, s.fire)
	} else {
		s.timer.Reset(d)
	}
}

// fire runs on the timer goroutine: it releases due epoch jobs into their
// queues and fails running jobs past their CAN_DO_TIMEOUT.
func (s *shard) fire() {
	var t Turn
	s.mu.Lock()
	s.timerWhen = time.Time{}
	now := time.Now().UnixNano()
	for len(s.timers) > 0 && s.timers[0].deadline <= now {
		j := heap.Pop(&s.timers).(*Job)
		switch j.state {
		case stateDelayed:
			j.fn.delayed[j.pri]--
			s.enqueue(&t, j)
		case stateRunning:
			s.e.log.Warn().Str("function", j.fn.name).Uint64("job", j.id).Msg("worker timeout reached on job, failing it")
			s.timeoutJob(&t, j)
		}
	}
	s.resetTimer()
	s.mu.Unlock()
	s.e.dispatch(&t)
}

// dropFunction forgets a function. Caller holds s.mu.
func (s *shard) dropFunction(f *function) {
	delete(s.funcs, f.name)
	delete(s.withUniques, f)
	s.mergeNames()
	if i := slices.Index(s.byName, f); i >= 0 {
		s.byName = slices.Delete(s.byName, i, i+1)
	}
}
