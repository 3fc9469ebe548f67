package engine

import (
	"slices"

	"github.com/rs/zerolog"
	"strings"
	"time"
)

// LatencyBounds are the upper bounds, in seconds, of the buckets of the
// queue-wait and run-time histograms: fixed, so that observing is a few
// comparisons under the shard lock and never allocates.
var LatencyBounds = [...]float64{
	0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
	0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300,
}

// Histogram counts observations per bucket of LatencyBounds (not
// cumulative); the last count is the overflow bucket (+Inf).
type Histogram struct {
	Counts [len(LatencyBounds) + 1]uint64
	Sum    float64 // seconds
}

// latencyHist is a Histogram as a shard keeps it: integer nanoseconds, so
// that observing is integer compares.
type latencyHist struct {
	counts [len(LatencyBounds) + 1]uint64
	sum    int64 // nanoseconds
}

var latencyBoundsNanos = func() (b [len(LatencyBounds)]int64) {
	for i, s := range LatencyBounds {
		b[i] = int64(s * 1e9)
	}
	return b
}()

func (h *latencyHist) observe(nanos int64) {
	i := 0
	for i < len(latencyBoundsNanos) && nanos > latencyBoundsNanos[i] {
		i++
	}
	h.counts[i]++
	h.sum += nanos
}

func (h *latencyHist) export() Histogram {
	return Histogram{Counts: h.counts, Sum: float64(h.sum) / 1e9}
}

// Count is the number of observations.
func (h *Histogram) Count() uint64 {
	var n uint64
	for _, c := range h.Counts {
		n += c
	}
	return n
}

// jobCounters are a function's cumulative counts, kept by its shard.
type jobCounters struct {
	Submitted  uint64 // new jobs (coalesced submissions not included)
	Coalesced  uint64 // submissions that joined an existing job by unique key
	Completed  uint64
	Failed     uint64 // WORK_FAIL, CAN_DO_TIMEOUT expiry, retries exhausted
	Exceptions uint64
	Retried    uint64 // requeued after their worker went away
}

// Gauges are a function's figures as `status` and `prioritystatus` show them.
type Gauges struct {
	Total   int                // status's TOTAL: queued, delayed and running
	Queued  [numPriorities]int // runnable or waiting for their epoch, by priority (high, normal, low)
	Running int
	Workers int // registered workers
}

// gauges copies f's figures. Caller holds the shard's lock. The counts are
// kept as queues change, so this never walks a queue.
func (f *function) gauges() Gauges {
	g := Gauges{Total: f.total, Running: f.running, Workers: len(f.workers)}
	for p := range g.Queued {
		g.Queued[p] = f.queue[p].n + f.delayed[p]
	}
	return g
}

// FunctionStats is one function's figures at one instant.
type FunctionStats struct {
	Name  string
	Shard int
	Gauges
	jobCounters
	Wait Histogram // from queued (or requeued, or due) to assigned
	Run  Histogram // from assigned to its result
}

// ShardStats is one shard's load: imbalance between shards shows here.
type ShardStats struct {
	Index     int
	Functions int
	Queued    int // runnable jobs
	Running   int
	Submitted uint64 // new jobs routed to the shard
	Finished  uint64 // jobs that ended with a result (complete, fail, exception)
}

// ConnStats counts the current connections by what they have done.
type ConnStats struct {
	Workers, Clients, Admins, Idle int
	Accepted                       uint64 // connections ever registered
}

// Stats is a consistent-per-shard picture of the engine.
type Stats struct {
	Functions   []FunctionStats // the kept ones, sorted by name
	Other       FunctionStats   // the sum of the functions not kept (Name "", Shard -1)
	Folded      int             // how many functions Other sums
	Shards      []ShardStats
	Connections ConnStats
}

// Session kinds, recorded as the session acts (a connection can be both
// client and worker; it counts as a worker).
const (
	kindClient uint32 = 1 << iota
	kindWorker
	kindAdmin
)

func (s *Session) mark(kind uint32) {
	if s.kinds.Load()&kind == 0 {
		s.kinds.Or(kind)
	}
}

// Stats copies every shard's figures, one shard at a time under its lock
// (the coordinator's way: counters are kept as things change, so this
// never walks a queue). Functions for which keep says no are summed into
// Other as they are met, so the copy stays as small as what is kept however
// many names clients invent; keep runs under a shard's lock. A nil keep
// keeps every function.
func (e *Engine) Stats(keep func(name string) bool) Stats {
	st := Stats{Other: FunctionStats{Shard: -1}}
	for _, s := range e.shards {
		sh := ShardStats{Index: s.idx}
		s.mu.Lock()
		sh.Submitted, sh.Finished = s.submitted, s.finished
		funcs := s.sortedFunctions()
		sh.Functions = len(funcs)
		for _, f := range funcs {
			fs := FunctionStats{Name: f.name, Shard: s.idx, Gauges: f.gauges(), jobCounters: f.counters}
			if f.lat != nil { // none until the function's first job
				fs.Wait, fs.Run = f.lat.wait.export(), f.lat.run.export()
			}
			for p := range f.queue {
				sh.Queued += f.queue[p].n // runnable only: delayed jobs wait for their time
			}
			sh.Running += f.running
			if keep == nil || keep(f.name) {
				st.Functions = append(st.Functions, fs)
			} else {
				st.Other.Add(fs)
				st.Folded++
			}
		}
		s.mu.Unlock()
		st.Shards = append(st.Shards, sh)
	}
	slices.SortFunc(st.Functions, func(a, b FunctionStats) int { return strings.Compare(a.Name, b.Name) })

	e.sessMu.Lock()
	for _, s := range e.sessions {
		switch k := s.kinds.Load(); {
		case k&kindWorker != 0:
			st.Connections.Workers++
		case k&kindClient != 0:
			st.Connections.Clients++
		case k&kindAdmin != 0:
			st.Connections.Admins++
		default:
			st.Connections.Idle++
		}
	}
	e.sessMu.Unlock()
	st.Connections.Accepted = e.nextSess.Load()
	return st
}

// now is the engine's monotonic clock for job timings, in nanoseconds; never 0.
func (e *Engine) now() int64 { return int64(time.Since(e.started)) + 1 }

// clock is the engine clock read once per turn: a turn is one read of one
// connection, so every packet of it shares the reading, and a pipelined
// batch costs one clock read instead of several per job.
func (t *Turn) clock(e *Engine) int64 {
	if t.now == 0 {
		t.now = e.now()
	}
	return t.now
}

// Add sums g's figures into f (for rolling many functions into one row).
func (f *FunctionStats) Add(g FunctionStats) {
	f.Total += g.Total
	for p := range f.Queued {
		f.Queued[p] += g.Queued[p]
	}
	f.Running += g.Running
	f.Workers += g.Workers
	f.Submitted += g.Submitted
	f.Coalesced += g.Coalesced
	f.Completed += g.Completed
	f.Failed += g.Failed
	f.Exceptions += g.Exceptions
	f.Retried += g.Retried
	f.Wait.add(g.Wait)
	f.Run.add(g.Run)
}

func (h *Histogram) add(g Histogram) {
	for i := range h.Counts {
		h.Counts[i] += g.Counts[i]
	}
	h.Sum += g.Sum
}

// debugJob starts a debug line about j: one line per job event, keyed by
// handle and by the "conn" ids of the connection events. Below debug level
// it is nil, and zerolog's methods on a nil event do nothing, so the hot
// path pays one branch. Caller holds the shard's lock.
func (s *shard) debugJob(j *Job) *zerolog.Event {
	if !s.e.debug {
		return nil
	}
	ev := s.e.log.Debug()
	if ev == nil {
		return nil
	}
	var hb [64]byte
	return ev.Bytes("handle", s.e.appendHandle(hb[:0], j.id)).Str("function", j.fn.name)
}
