package bench

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cespare/xxhash/v2"

	"gearshard/wire"
)

// Config describes one run.
type Config struct {
	Servers  []string      // host:port; clients and workers are spread over them
	Clients  int           // client connections
	InFlight int           // jobs each client keeps in flight
	Workers  int           // worker connections
	Size     int           // payload bytes (at least 8: the job's sequence number)
	Funcs    int           // distinct function names
	Duration time.Duration // how long to run (fg, bg, status)
	Jobs     int64         // fg/bg: stop after this many jobs instead; drain/submit-only/status: jobs queued first
	PID      int           // the server's process, for CPU and memory figures; 0 = unknown
	Uniques  bool          // background jobs carry a unique key each, as libgearman's UUIDs
	Label    string        // names the server in reports
	Progress io.Writer     // live progress line; nil = quiet
}

// Scenarios lists the scenario names Run accepts.
var Scenarios = []string{"fg", "bg", "drain", "submit-only", "status", "latency"}

// Run runs one scenario against the configured servers.
func Run(ctx context.Context, scenario string, cfg Config) (*Result, error) {
	if len(cfg.Servers) == 0 {
		return nil, errors.New("bench: no server")
	}
	if cfg.Size < 8 {
		return nil, errors.New("bench: payload size must be at least 8 bytes")
	}
	cfg.Funcs = max(cfg.Funcs, 1)
	r := &Result{Scenario: scenario, Server: cfg.Label, Params: map[string]string{
		"clients": strconv.Itoa(cfg.Clients), "in_flight": strconv.Itoa(cfg.InFlight),
		"workers": strconv.Itoa(cfg.Workers), "size": strconv.Itoa(cfg.Size), "funcs": strconv.Itoa(cfg.Funcs),
	}}
	var err error
	switch scenario {
	case "fg":
		err = runFG(ctx, cfg, r)
	case "latency":
		cfg.Clients, cfg.InFlight, cfg.Workers = 1, 1, 1
		r.Params["clients"], r.Params["in_flight"], r.Params["workers"] = "1", "1", "1"
		err = runFG(ctx, cfg, r)
	case "bg":
		err = runBG(ctx, cfg, r)
	case "drain":
		err = runDrain(ctx, cfg, r, true)
	case "submit-only":
		err = runDrain(ctx, cfg, r, false)
	case "status":
		err = runStatus(ctx, cfg, r)
	default:
		return nil, fmt.Errorf("bench: unknown scenario %q (want one of %v)", scenario, Scenarios)
	}
	r.Clean = err == nil && r.Errors == 0
	return r, err
}

// funcNames are a run's function names, bench-0 … bench-(n-1), made once:
// the load generator must not allocate per job (its own GC pauses would
// show up in the latencies it measures).
func funcNames(n int) [][]byte {
	names := make([][]byte, n)
	for i := range names {
		names[i] = []byte("bench-" + strconv.Itoa(i))
	}
	return names
}

// payload fills buf with the job's sequence number and filler.
func payload(buf []byte, seq uint64) []byte {
	binary.BigEndian.PutUint64(buf, seq)
	return buf
}

// errCounter counts errors and keeps the first for the report.
type errCounter struct {
	n     atomic.Int64
	once  sync.Once
	first error
}

func (e *errCounter) add(err error) {
	e.n.Add(1)
	e.once.Do(func() { e.first = err })
}

// server returns the server for connection i.
func (c *Config) server(i int) string { return c.Servers[i%len(c.Servers)] }

// procMeter samples the server process around the measured interval.
type procMeter struct {
	pid    int
	before ProcSample
}

func startMeter(pid int) *procMeter {
	m := &procMeter{pid: pid}
	if pid > 0 {
		m.before, _ = SampleProc(pid)
	}
	return m
}

// finish records the server's CPU per job into r.
func (m *procMeter) finish(r *Result, jobs int64) {
	if m.pid <= 0 || jobs <= 0 {
		return
	}
	after, err := SampleProc(m.pid)
	if err != nil {
		return
	}
	d := after.Sub(m.before)
	r.ServerCPUSec = d.CPU.Seconds()
	r.CPUPerJobUS = float64(d.CPU.Microseconds()) / float64(jobs)
}

// progress prints a live line until stop is closed.
func progress(w io.Writer, label string, done *atomic.Int64, stop <-chan struct{}) {
	if w == nil {
		return
	}
	start := time.Now()
	t := time.NewTicker(500 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-stop:
			fmt.Fprint(w, "\r\033[K")
			return
		case <-t.C:
			n := done.Load()
			fmt.Fprintf(w, "\r\033[K%s: %d jobs, %.0f jobs/s", label, n, float64(n)/time.Since(start).Seconds())
		}
	}
}

// worker runs the standard worker loop — GRAB_JOB, and when there is
// nothing, PRE_SLEEP until NOOP — answering every job with its own
// workload, until ctx ends. onJob sees each job's data.
func worker(ctx context.Context, addr string, funcs int, errs *errCounter, onJob func(data []byte)) {
	c, err := dial(addr)
	if err != nil {
		errs.add(err)
		return
	}
	go func() { <-ctx.Done(); c.close() }()
	workLoop(c, funcNames(funcs), errs, func(handle, data []byte) bool {
		onJob(data)
		c.send(wire.WorkComplete, handle, data)
		return true
	})
	if ctx.Err() == nil {
		errs.add(errors.New("worker connection lost"))
	}
}

// pending is one submitted foreground job.
type pending struct {
	seq   uint64
	start time.Time
}

// runFG: clients keep InFlight foreground jobs each, workers answer with
// the workload; every result is checked against what was sent for its
// handle, and each job's round trip is recorded.
func runFG(ctx context.Context, cfg Config, r *Result) error {
	var (
		errs     errCounter
		done     atomic.Int64
		settled  atomic.Int64
		stopping atomic.Bool
		wg       sync.WaitGroup
		hists    = make([]*Histogram, cfg.Clients)
	)
	wctx, stopWorkers := context.WithCancel(ctx)
	defer stopWorkers()
	var wwg sync.WaitGroup
	for i := 0; i < cfg.Workers; i++ {
		wwg.Add(1)
		go func(i int) {
			defer wwg.Done()
			worker(wctx, cfg.server(i), cfg.Funcs, &errs, func([]byte) {})
		}(i)
	}
	meter := startMeter(cfg.PID)
	start := time.Now()
	stopProgress := make(chan struct{})
	go progress(cfg.Progress, r.Scenario, &done, stopProgress)
	for i := 0; i < cfg.Clients; i++ {
		hists[i] = NewHistogram()
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			if err := fgClient(cfg, i, hists[i], &done, &settled, &stopping, &errs); err != nil {
				errs.add(err)
			}
		}(i)
	}
	if cfg.Jobs == 0 {
		select {
		case <-time.After(cfg.Duration):
		case <-ctx.Done():
		}
		stopping.Store(true)
	}
	wg.Wait()
	elapsed := time.Since(start)
	close(stopProgress)
	meter.finish(r, done.Load())
	stopWorkers()
	wwg.Wait()
	h := NewHistogram()
	for _, x := range hists {
		h.Merge(x)
	}
	r.SetLatency(h)
	r.Jobs, r.Errors = done.Load(), errs.n.Load()
	r.Elapsed = elapsed
	r.JobsPerSec = float64(r.Jobs) / elapsed.Seconds()
	return errs.first
}

// fgClient runs one client connection. done counts jobs whose result
// checked out; settled counts every finished job, good or bad, and bounds
// a run of cfg.Jobs.
func fgClient(cfg Config, id int, h *Histogram, done, settled *atomic.Int64, stopping *atomic.Bool, errs *errCounter) error {
	c, err := dial(cfg.server(id))
	if err != nil {
		return err
	}
	defer c.close()
	// A bound on a stuck server, not a measurement.
	_ = c.c.SetDeadline(time.Now().Add(cfg.Duration + 10*time.Minute))
	buf := make([]byte, cfg.Size)
	for i := range buf {
		buf[i] = 'x'
	}
	var (
		first   = uint64(id) << 40 // this client's sequence numbers follow
		seq     = first
		created = make([]pending, cfg.InFlight) // ring: submitted, awaiting JOB_CREATED (FIFO per connection)
		head, n int                             // created[head] is the oldest of n
		// running is keyed by a hash of the handle, not the handle: a
		// string key would allocate per job. Two live handles sharing a
		// hash would be caught by the workload check below.
		running = make(map[uint64]pending, cfg.InFlight)
		names   = funcNames(cfg.Funcs)
	)
	submit := func() bool {
		if stopping.Load() || n == len(created) || (cfg.Jobs > 0 && settled.Load()+int64(n+len(running)) >= cfg.Jobs) {
			return false
		}
		seq++
		c.send(wire.SubmitJob, names[fgFunction(id, cfg.InFlight, seq-first, len(names))], nil, payload(buf, seq))
		created[(head+n)%len(created)] = pending{seq: seq, start: time.Now()}
		n++
		return true
	}
	for i := 0; i < cfg.InFlight; i++ {
		submit()
	}
	for n+len(running) > 0 {
		if !c.buffered() {
			if err := c.flush(); err != nil {
				return err
			}
		}
		p, err := c.next()
		if err != nil {
			return err
		}
		switch p.Type {
		case wire.JobCreated:
			if n == 0 {
				return errors.New("JOB_CREATED with no submission pending")
			}
			running[xxhash.Sum64(p.Field[0])] = created[head]
			head, n = (head+1)%len(created), n-1
		case wire.WorkComplete:
			key := xxhash.Sum64(p.Field[0])
			job, ok := running[key]
			if !ok {
				errs.add(fmt.Errorf("WORK_COMPLETE for unknown handle %q", p.Field[0]))
				continue
			}
			delete(running, key)
			settled.Add(1)
			if got := p.Field[1]; len(got) != cfg.Size || binary.BigEndian.Uint64(got) != job.seq {
				errs.add(fmt.Errorf("handle %q: result is not its workload", p.Field[0]))
			} else {
				h.Record(time.Since(job.start))
				done.Add(1)
			}
			submit()
		case wire.WorkData, wire.WorkStatus, wire.WorkWarning:
		default:
			errs.add(errUnexpected(&p))
			return errs.first
		}
	}
	return c.flush()
}

// fgFunction picks the function of a client's job-th job (from 1). Each
// client starts its round of the functions where the client before it
// stops, so the jobs first in flight spread over all of them. Were every
// client to start at the same function, the first C×P jobs would pile up on
// P functions, and a server that serves a worker's functions in turn would
// work that pile off at 1/F of its rate while every other job went through:
// 2,000 clients with 2 in flight over 64 functions left 1,840 jobs on each
// of two functions, and the run measured that pile (p99 5 s, p50 20 ms).
func fgFunction(client, inFlight int, job uint64, funcs int) int {
	return int((job + uint64(client)*uint64(inFlight)) % uint64(funcs))
}

// submitBG queues jobs background jobs from cfg.Clients connections, each
// keeping InFlight submissions outstanding, and returns when every
// JOB_CREATED is in. fn picks each job's function.
func submitBG(cfg Config, jobs int64, fn func(seq uint64) []byte, created *atomic.Int64, errs *errCounter) {
	var wg sync.WaitGroup
	var next atomic.Int64
	for i := 0; i < cfg.Clients; i++ {
		wg.Add(1)
		go func(id int) {
			defer wg.Done()
			c, err := dial(cfg.server(id))
			if err != nil {
				errs.add(err)
				return
			}
			defer c.close()
			buf := make([]byte, cfg.Size)
			for i := range buf {
				buf[i] = 'x'
			}
			var ubuf [24]byte
			outstanding := 0
			submit := func() {
				n := next.Add(1)
				if n > jobs {
					return
				}
				var unique []byte
				if cfg.Uniques {
					unique = strconv.AppendInt(append(ubuf[:0], 'u'), n, 10)
				}
				c.send(wire.SubmitJobBG, fn(uint64(n)), unique, payload(buf, uint64(n)))
				outstanding++
			}
			for i := 0; i < max(cfg.InFlight, 1); i++ {
				submit()
			}
			for outstanding > 0 {
				if !c.buffered() {
					if err := c.flush(); err != nil {
						errs.add(err)
						return
					}
				}
				p, err := c.next()
				if err != nil {
					errs.add(err)
					return
				}
				if p.Type != wire.JobCreated {
					errs.add(errUnexpected(&p))
					return
				}
				outstanding--
				created.Add(1)
				submit()
			}
		}(i)
	}
	wg.Wait()
}

// seqSet checks that workers saw every submitted job exactly once.
type seqSet struct {
	mu   sync.Mutex
	seen []uint64
}

func (s *seqSet) add(data []byte) {
	s.mu.Lock()
	s.seen = append(s.seen, binary.BigEndian.Uint64(data))
	s.mu.Unlock()
}

// check returns an error unless the sequence numbers 1..n were each seen once.
func (s *seqSet) check(n int64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	slices.Sort(s.seen)
	if int64(len(s.seen)) != n {
		return fmt.Errorf("workers got %d jobs, %d were submitted", len(s.seen), n)
	}
	for i, v := range s.seen {
		if v != uint64(i+1) {
			return fmt.Errorf("job %d delivered wrongly (duplicate or unknown sequence %d)", i+1, v)
		}
	}
	return nil
}

// drainers are workers that answer every background job and check that
// each was delivered exactly once.
type drainers struct {
	seen    seqSet
	drained atomic.Int64
	stop    context.CancelFunc
	wg      sync.WaitGroup
}

func startDrainers(ctx context.Context, cfg Config, errs *errCounter) *drainers {
	d := &drainers{}
	wctx, cancel := context.WithCancel(ctx)
	d.stop = cancel
	for i := 0; i < cfg.Workers; i++ {
		d.wg.Add(1)
		go func(i int) {
			defer d.wg.Done()
			worker(wctx, cfg.server(i), cfg.Funcs, errs, func(b []byte) { d.seen.add(b); d.drained.Add(1) })
		}(i)
	}
	return d
}

// finish stops the workers and checks that jobs 1..n each came once.
func (d *drainers) finish(n int64, errs *errCounter) {
	d.stop()
	d.wg.Wait()
	if err := d.seen.check(n); err != nil {
		errs.add(err)
	}
}

// runBG: clients submit background jobs while workers drain them; reports
// the submit rate and the drain rate.
func runBG(ctx context.Context, cfg Config, r *Result) error {
	jobs := cfg.Jobs
	if jobs == 0 {
		jobs = 100_000
	}
	var errs errCounter
	var created atomic.Int64
	d := startDrainers(ctx, cfg, &errs)
	meter := startMeter(cfg.PID)
	stopProgress := make(chan struct{})
	go progress(cfg.Progress, r.Scenario, &d.drained, stopProgress)
	start := time.Now()
	names := funcNames(cfg.Funcs)
	submitBG(cfg, jobs, func(seq uint64) []byte { return names[int(seq)%len(names)] }, &created, &errs)
	submitted := time.Since(start)
	d.drainTo(ctx, r, created.Load(), start, meter, &errs)
	close(stopProgress)
	r.Extra = map[string]float64{
		"submit_per_sec": float64(created.Load()) / submitted.Seconds(),
		"drain_per_sec":  r.JobsPerSec,
	}
	return errs.first
}

// drainTo waits until the drainers have done the n jobs queued, checks
// them, and fills r's count, errors, time and rate since start, and the
// server's CPU figures.
func (d *drainers) drainTo(ctx context.Context, r *Result, n int64, start time.Time, meter *procMeter, errs *errCounter) {
	waitCount(ctx, &d.drained, n, errs)
	elapsed := time.Since(start)
	meter.finish(r, d.drained.Load())
	d.finish(n, errs)
	r.Jobs, r.Errors, r.Elapsed = d.drained.Load(), errs.n.Load(), elapsed
	r.JobsPerSec = float64(r.Jobs) / elapsed.Seconds()
}

// waitCount polls until counter reaches n, ctx ends, or it stops moving
// for a minute (a lost job), which counts as an error.
func waitCount(ctx context.Context, counter *atomic.Int64, n int64, errs *errCounter) {
	last, lastMove := counter.Load(), time.Now()
	for counter.Load() < n {
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Millisecond):
		}
		if v := counter.Load(); v != last {
			last, lastMove = v, time.Now()
		} else if time.Since(lastMove) > time.Minute {
			errs.add(fmt.Errorf("stuck at %d of %d jobs", v, n))
			return
		}
	}
}

// runDrain queues Jobs background jobs with no worker connected (the
// enqueue rate, and with a PID the server's memory per queued job); with
// drain set it then starts the workers and times how fast they empty it.
func runDrain(ctx context.Context, cfg Config, r *Result, drain bool) error {
	jobs := cfg.Jobs
	if jobs == 0 {
		jobs = 1_000_000
	}
	r.Params["jobs"] = strconv.FormatInt(jobs, 10)
	var errs errCounter
	var created atomic.Int64
	var before ProcSample
	if cfg.PID > 0 {
		before, _ = SampleProc(cfg.PID)
	}
	stopProgress := make(chan struct{})
	go progress(cfg.Progress, r.Scenario+" (queueing)", &created, stopProgress)
	start := time.Now()
	names := funcNames(cfg.Funcs)
	submitBG(cfg, jobs, func(seq uint64) []byte { return names[int(seq)%len(names)] }, &created, &errs)
	queued := time.Since(start)
	close(stopProgress)
	r.Extra = map[string]float64{"submit_per_sec": float64(created.Load()) / queued.Seconds()}
	if cfg.PID > 0 {
		if after, err := SampleProc(cfg.PID); err == nil && created.Load() > 0 {
			r.RSSPerJobBytes = float64(after.RSS-before.RSS) / float64(created.Load())
			r.Extra["submit_cpu_per_job_us"] = float64(after.Sub(before).CPU.Microseconds()) / float64(created.Load())
		}
	}
	r.Jobs, r.Elapsed = created.Load(), queued
	r.JobsPerSec = r.Extra["submit_per_sec"]
	if !drain {
		r.Errors = errs.n.Load()
		return errs.first
	}
	meter := startMeter(cfg.PID)
	start = time.Now()
	d := startDrainers(ctx, cfg, &errs)
	stopProgress = make(chan struct{})
	go progress(cfg.Progress, r.Scenario, &d.drained, stopProgress)
	d.drainTo(ctx, r, created.Load(), start, meter, &errs)
	close(stopProgress)
	r.Extra["drain_per_sec"] = r.JobsPerSec
	return errs.first
}

// runStatus holds Jobs queued background jobs over Funcs functions (no
// worker does them) and, while a foreground load runs on another function,
// times the admin "status" command. Latency figures are status's.
func runStatus(ctx context.Context, cfg Config, r *Result) error {
	jobs := cfg.Jobs
	if jobs == 0 {
		jobs = 1_000_000
	}
	r.Params["jobs"] = strconv.FormatInt(jobs, 10)
	var errs errCounter
	var created atomic.Int64
	submitBG(cfg, jobs, func(seq uint64) []byte { return []byte("held-" + strconv.Itoa(int(seq)%cfg.Funcs)) }, &created, &errs)

	// The foreground load: its own function and workers, kept moderate
	// (2 clients × 4 in flight, 2 workers) so that the load generator is
	// not itself saturated and status's latency is the server's.
	load := cfg
	load.Funcs, load.Jobs = 1, 0
	load.Clients, load.InFlight, load.Workers = 2, 4, 2
	fgDone := make(chan *Result, 1)
	go func() {
		fr := &Result{Scenario: "fg", Params: map[string]string{}}
		_ = runFG(ctx, load, fr)
		fgDone <- fr
	}()
	h := NewHistogram()
	c, err := dial(cfg.server(0))
	if err != nil {
		return err
	}
	defer c.close()
	deadline := time.Now().Add(cfg.Duration)
	n := int64(0)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		t0 := time.Now()
		c.sendLine("status")
		if err := c.flush(); err != nil {
			errs.add(err)
			break
		}
		lines := 0
		for {
			line, err := c.line()
			if err != nil {
				errs.add(err)
				return errs.first
			}
			if string(line) == "." {
				break
			}
			lines++
		}
		h.Record(time.Since(t0))
		n++
		if lines < cfg.Funcs {
			errs.add(fmt.Errorf("status listed %d functions, want at least %d", lines, cfg.Funcs))
		}
	}
	fr := <-fgDone
	r.SetLatency(h)
	r.Jobs, r.Errors, r.Elapsed = n, errs.n.Load()+fr.Errors, cfg.Duration
	r.JobsPerSec = float64(n) / cfg.Duration.Seconds()
	r.Extra = map[string]float64{"fg_jobs_per_sec": fr.JobsPerSec, "queued_jobs": float64(created.Load())}
	return errs.first
}
