package bench

// The soak: mixed load with faults against one server for a long time,
// checking that every job is accounted for and that the server's memory
// and thread count stay flat.
//
// Load. Clients keep InFlight submissions each: foreground jobs at high,
// normal and low priority (half with a unique key of their own), background
// jobs (SUBMIT_JOB_BG and its priority variants, bounded so the queue does
// not grow without end), and "coalescing" jobs whose unique key is derived
// from the clock (a 20 ms window and one of four slots), so that clients
// submitting at the same moment share one job. Jobs are spread over Funcs
// functions. Workers run GRAB_JOB / PRE_SLEEP / NOOP and answer every job
// with WORK_COMPLETE "ok:"+payload; the payload alone decides (by its FNV
// hash) whether they send WORK_DATA "d:"+payload first and whether they
// answer WORK_FAIL instead, so every client can check what it receives.
//
// Faults. Every ~KillEvery one random worker is told to die on its next
// JOB_ASSIGN: it closes its connection while holding the job (sometimes
// after a WORK_DATA), so the server must requeue the job, and reconnects.
// Every ~DropEvery one random client closes its connection with foreground
// jobs outstanding and reconnects; those jobs are "abandoned".
//
// Accounting. Every submission has an id; foreground and background
// payloads carry it ("f<id>." / "b<id>."), so a ledger records, per id,
// what the client saw and how many times a worker answered it. At the end
// submitting stops, clients wait for their outstanding jobs, workers drain
// the queues until the admin "status" shows nothing left for the soak's
// functions, and the ledger must show: each completed or failed job
// answered by a worker exactly once, each background job answered exactly
// once, each abandoned job at most once, and nothing unsettled. A job
// delivered to a client twice (a result for a handle already settled), a
// wrong result or WORK_DATA, an unexpected WORK_FAIL (one not decided by
// the payload, and not for a job whose worker was killed, which a server
// with --job-retries fails), or a job that never settles is an error.
// Coalescing jobs carry a key, not an id: the clients check their results
// and the number of executions is only reported (coalesced = submissions
// settled minus executions).
//
// Flatness. With a PID the server's VmRSS and Threads (/proc/PID/status)
// are sampled every Duration/40 (200 ms to 5 s). The first sixth of the run
// is warm-up; the remaining samples are split in thirds, and the run is
// flat when the median RSS of the last third is at most 1.5 times that of
// the first third, and the most threads in the last third exceed the most
// in the first third by at most max(4, a quarter).

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"gearshard/wire"
)

// SoakConfig describes one soak run.
type SoakConfig struct {
	Addr      string        // the server, host:port
	PID       int           // its process, for RSS and threads; 0 = not sampled
	Duration  time.Duration // how long the load runs (the drain comes after)
	Clients   int           // client connections (default 8)
	InFlight  int           // submissions each client keeps outstanding (default 16)
	Workers   int           // worker connections (default 8)
	Funcs     int           // function names (default 8)
	Seed      uint64        // random seed; the run logs it
	KillEvery time.Duration // mean interval between worker kills (default 100 ms)
	DropEvery time.Duration // mean interval between client drops (default 200 ms)
	Stall     time.Duration // no progress for this long is a lost job (default 60 s)
	Log       io.Writer     // start and end lines; nil = quiet
}

// SoakResult is a soak's outcome and figures.
type SoakResult struct {
	Pass      bool
	Reason    string // why it failed
	Duration  time.Duration
	Seed      uint64
	Jobs      int64 // submissions
	Completed int64 // foreground results checked
	Failed    int64 // WORK_FAIL as the payload decided, plus FailedRetries
	// FailedRetries are WORK_FAILs for jobs whose worker was killed (a
	// server with --job-retries gives up on them).
	FailedRetries int64
	Abandoned     int64 // foreground jobs of dropped clients, background ones whose JOB_CREATED was lost with them
	Background    int64 // background jobs created
	BGDone        int64 // background jobs answered by workers
	Coalesced     int64 // coalescing submissions settled minus their executions
	StillQueued   int64 // jobs left in the soak's functions after the drain
	WorkerKills   int64
	ClientDrops   int64
	Errors        int64
	RSSFirst      int64 // median RSS of the first third after warm-up, bytes; 0 = not sampled
	RSSLast       int64 // median RSS of the last third
	ThreadsFirst  int   // most threads in the first third
	ThreadsLast   int   // most threads in the last third
	Samples       int
}

// Verdict is the one-line summary.
func (r *SoakResult) Verdict() string {
	var b strings.Builder
	if r.Pass {
		b.WriteString("soak PASS")
	} else {
		b.WriteString("soak FAIL " + r.Reason)
	}
	fmt.Fprintf(&b, " duration=%s seed=%d jobs=%d completed=%d failed=%d abandoned=%d bg=%d coalesced=%d still_queued=%d worker_kills=%d client_drops=%d errors=%d",
		r.Duration.Round(time.Second), r.Seed, r.Jobs, r.Completed, r.Failed, r.Abandoned, r.Background, r.Coalesced,
		r.StillQueued, r.WorkerKills, r.ClientDrops, r.Errors)
	if r.Samples > 0 {
		fmt.Fprintf(&b, " rss_first=%.1fMiB rss_last=%.1fMiB threads=%d/%d",
			float64(r.RSSFirst)/(1<<20), float64(r.RSSLast)/(1<<20), r.ThreadsFirst, r.ThreadsLast)
	} else {
		b.WriteString(" rss_first=n/a rss_last=n/a threads=n/a")
	}
	return b.String()
}

// Ledger states of a submission id.
const (
	stNone      uint8 = iota
	stPendingFG       // submitted, foreground
	stPendingBG       // submitted, background, no JOB_CREATED yet
	stCompleted
	stFailed
	stAbandoned // foreground, its client dropped
	stQueuedBG  // background, created
	stUncertain // background, its client dropped before JOB_CREATED
	stLost      // the client's connection failed with it outstanding
)

type ledgerEntry struct {
	state   uint8
	answers uint8 // times a worker answered it (saturating)
}

// ledger tracks every id-carrying submission.
type ledger struct {
	mu     sync.Mutex
	e      []ledgerEntry
	killed map[string]struct{} // payloads a killed worker held
}

func (l *ledger) at(id uint64) *ledgerEntry {
	for uint64(len(l.e)) <= id {
		l.e = append(l.e, ledgerEntry{})
	}
	return &l.e[id]
}

func (l *ledger) set(id uint64, st uint8) {
	l.mu.Lock()
	l.at(id).state = st
	l.mu.Unlock()
}

func (l *ledger) answer(id uint64) {
	l.mu.Lock()
	if e := l.at(id); e.answers < 255 {
		e.answers++
	}
	l.mu.Unlock()
}

func (l *ledger) noteKilled(payload []byte) {
	l.mu.Lock()
	l.killed[string(payload)] = struct{}{}
	l.mu.Unlock()
}

func (l *ledger) wasKilled(payload []byte) bool {
	l.mu.Lock()
	_, ok := l.killed[string(payload)]
	l.mu.Unlock()
	return ok
}

// soakHash decides a payload's function, WORK_DATA and WORK_FAIL.
func soakHash(payload []byte) uint32 {
	h := fnv.New32a()
	h.Write(payload)
	return h.Sum32()
}

func soakWantsFail(h uint32) bool { return h%16 == 0 }
func soakWantsData(h uint32) bool { return h%8 == 1 }

func soakFunc(i int) []byte { return []byte("soak-" + strconv.Itoa(i)) }

// soakPayload is head, '.', and n bytes of filler.
func soakPayload(head string, n int) []byte {
	b := make([]byte, 0, len(head)+1+n)
	b = append(append(b, head...), '.')
	for range n {
		b = append(b, 'x')
	}
	return b
}

// payloadID returns the id in an "f<id>." or "b<id>." payload.
func payloadID(p []byte) (kind byte, id uint64, ok bool) {
	if len(p) < 2 || (p[0] != 'f' && p[0] != 'b') {
		return 0, 0, false
	}
	end := 1
	for end < len(p) && p[end] != '.' {
		end++
	}
	id, err := strconv.ParseUint(string(p[1:end]), 10, 64)
	return p[0], id, err == nil
}

type soak struct {
	cfg      SoakConfig
	errs     errCounter
	led      ledger
	stopping atomic.Bool
	nextID   atomic.Uint64
	bgQueued atomic.Int64 // background jobs submitted and not yet answered

	workerKill []atomic.Bool
	clientDrop []atomic.Bool

	jobs, completed, failed, failedRetries, abandoned, uncertain atomic.Int64
	bgCreated, bgDone, coSettled, coExec, workerKills, drops     atomic.Int64
}

const soakBGCap = 2000 // background jobs outstanding at most

// Soak runs the soak and returns its result; the error is non-nil when
// the verdict is FAIL.
func Soak(ctx context.Context, cfg SoakConfig) (*SoakResult, error) {
	if cfg.Addr == "" {
		return nil, errors.New("bench: soak: no server")
	}
	def := func(v *int, d int) {
		if *v <= 0 {
			*v = d
		}
	}
	def(&cfg.Clients, 8)
	def(&cfg.InFlight, 16)
	def(&cfg.Workers, 8)
	def(&cfg.Funcs, 8)
	defD := func(v *time.Duration, d time.Duration) {
		if *v <= 0 {
			*v = d
		}
	}
	defD(&cfg.KillEvery, 100*time.Millisecond)
	defD(&cfg.DropEvery, 200*time.Millisecond)
	defD(&cfg.Stall, time.Minute)
	logf := func(format string, a ...any) {
		if cfg.Log != nil {
			fmt.Fprintf(cfg.Log, format+"\n", a...)
		}
	}
	logf("soak: seed=%d server=%s pid=%d duration=%s clients=%d in_flight=%d workers=%d funcs=%d",
		cfg.Seed, cfg.Addr, cfg.PID, cfg.Duration, cfg.Clients, cfg.InFlight, cfg.Workers, cfg.Funcs)

	s := &soak{cfg: cfg, workerKill: make([]atomic.Bool, cfg.Workers), clientDrop: make([]atomic.Bool, cfg.Clients)}
	s.led.killed = map[string]struct{}{}
	start := time.Now()

	// Sampling.
	var samples []soakSample
	sampleStop := make(chan struct{})
	sampleDone := make(chan struct{})
	go func() {
		defer close(sampleDone)
		if cfg.PID <= 0 {
			return
		}
		every := min(max(cfg.Duration/40, 200*time.Millisecond), 5*time.Second)
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			if x, err := sampleStatus(cfg.PID); err == nil {
				samples = append(samples, x)
			}
			select {
			case <-sampleStop:
				return
			case <-t.C:
			}
		}
	}()

	wctx, stopWorkers := context.WithCancel(context.WithoutCancel(ctx))
	defer stopWorkers()
	var wwg, cwg, chaos sync.WaitGroup
	for i := range cfg.Workers {
		wwg.Go(func() { s.worker(wctx, i) })
	}
	for i := range cfg.Clients {
		cwg.Go(func() { s.client(i) })
	}
	chaosStop := make(chan struct{})
	chaos.Go(func() { s.chaos(chaosStop, cfg.KillEvery, 1, s.workerKill) })
	chaos.Go(func() { s.chaos(chaosStop, cfg.DropEvery, 2, s.clientDrop) })

	// Run for the duration, or until interrupted or errors pile up.
	deadline := time.After(cfg.Duration)
	tick := time.NewTicker(100 * time.Millisecond)
run:
	for {
		select {
		case <-deadline:
			break run
		case <-ctx.Done():
			s.errs.add(errors.New("interrupted"))
			break run
		case <-tick.C:
			if s.errs.n.Load() > 100 {
				break run
			}
		}
	}
	tick.Stop()
	elapsed := time.Since(start)

	// Drain: no more faults, no more submissions; clients wait for theirs.
	close(chaosStop)
	chaos.Wait()
	for i := range s.workerKill {
		s.workerKill[i].Store(false)
	}
	for i := range s.clientDrop {
		s.clientDrop[i].Store(false)
	}
	s.stopping.Store(true)
	cwg.Wait()
	stillQueued, err := s.waitEmpty(ctx)
	if err != nil {
		s.errs.add(err)
	}
	close(sampleStop)
	<-sampleDone
	stopWorkers()
	wwg.Wait()

	r := &SoakResult{
		Duration: elapsed, Seed: cfg.Seed, Jobs: s.jobs.Load(), Completed: s.completed.Load(),
		Failed: s.failed.Load() + s.failedRetries.Load(), FailedRetries: s.failedRetries.Load(),
		Abandoned: s.abandoned.Load() + s.uncertain.Load(), Background: s.bgCreated.Load(), BGDone: s.bgDone.Load(),
		Coalesced: max(0, s.coSettled.Load()-s.coExec.Load()), StillQueued: stillQueued,
		WorkerKills: s.workerKills.Load(), ClientDrops: s.drops.Load(),
	}
	reasons := s.checkLedger(stillQueued)
	r.Errors = s.errs.n.Load()
	if s.errs.first != nil {
		reasons = append([]string{fmt.Sprintf("%d errors, first: %v", r.Errors, s.errs.first)}, reasons...)
	}
	if sum := r.Completed + r.Failed + r.Abandoned + r.Background; r.Errors == 0 && sum != r.Jobs {
		reasons = append(reasons, fmt.Sprintf("%d jobs submitted, %d accounted for", r.Jobs, sum))
	}
	if stillQueued > 0 {
		reasons = append(reasons, fmt.Sprintf("%d jobs still queued after the drain", stillQueued))
	}
	var why string
	r.RSSFirst, r.RSSLast, r.ThreadsFirst, r.ThreadsLast, r.Samples, why = flatness(samples, start.Add(cfg.Duration/6))
	if why != "" {
		reasons = append(reasons, why)
	}
	r.Pass = len(reasons) == 0
	if !r.Pass {
		r.Reason = strings.Join(reasons, "; ")
		logf("soak: seed=%d to reproduce", cfg.Seed)
		return r, errors.New("soak FAIL: " + r.Reason)
	}
	return r, nil
}

// chaos sets a random flag of flags every ~every (uniform in [every/2,
// 3every/2)) until stop is closed.
func (s *soak) chaos(stop <-chan struct{}, every time.Duration, stream uint64, flags []atomic.Bool) {
	if len(flags) == 0 {
		return
	}
	rng := rand.New(rand.NewPCG(s.cfg.Seed, stream))
	for {
		d := every/2 + time.Duration(rng.Int64N(int64(every)))
		select {
		case <-stop:
			return
		case <-time.After(d):
		}
		flags[rng.IntN(len(flags))].Store(true)
	}
}

// worker runs worker connections until ctx ends, reconnecting after kills.
func (s *soak) worker(ctx context.Context, idx int) {
	rng := rand.New(rand.NewPCG(s.cfg.Seed, 1<<32|uint64(idx)))
	for ctx.Err() == nil {
		s.workerConn(ctx, idx, rng)
	}
}

func (s *soak) workerConn(ctx context.Context, idx int, rng *rand.Rand) {
	c, err := dial(s.cfg.Addr)
	if err != nil {
		if ctx.Err() == nil {
			s.errs.add(fmt.Errorf("worker: %w", err))
			time.Sleep(100 * time.Millisecond)
		}
		return
	}
	defer context.AfterFunc(ctx, c.close)()
	defer c.close()
	funcs := make([][]byte, s.cfg.Funcs)
	for i := range funcs {
		funcs[i] = soakFunc(i)
	}
	killed := workLoop(c, funcs, &s.errs, func(handle, payload []byte) bool {
		h := soakHash(payload)
		if s.workerKill[idx].Swap(false) {
			// Die holding the job, sometimes after partial data.
			if soakWantsData(h) && rng.IntN(2) == 0 {
				c.send(wire.WorkData, handle, append([]byte("d:"), payload...))
				_ = c.flush()
			}
			s.led.noteKilled(payload)
			s.workerKills.Add(1)
			return false
		}
		if kind, id, ok := payloadID(payload); ok {
			s.led.answer(id)
			if kind == 'b' {
				s.bgDone.Add(1)
				s.bgQueued.Add(-1)
			}
		} else {
			s.coExec.Add(1)
		}
		if soakWantsData(h) {
			c.send(wire.WorkData, handle, append([]byte("d:"), payload...))
		}
		if soakWantsFail(h) {
			c.send(wire.WorkFail, handle)
		} else {
			c.send(wire.WorkComplete, handle, append([]byte("ok:"), payload...))
		}
		return true
	})
	if killed {
		return
	}
	if ctx.Err() == nil {
		s.errs.add(errors.New("worker connection lost"))
	}
}

// soakSub is one submission a client awaits.
type soakSub struct {
	id      uint64
	kind    byte // 'f' foreground, 'b' background, 'c' coalescing
	payload []byte
	key     string // 'c': the unique key
}

// client runs client connections until the soak stops, reconnecting
// after drops.
func (s *soak) client(idx int) {
	rng := rand.New(rand.NewPCG(s.cfg.Seed, 2<<32|uint64(idx)))
	for !s.clientConn(idx, rng) {
	}
}

// clientConn runs one connection; it reports whether the client is done.
func (s *soak) clientConn(idx int, rng *rand.Rand) (done bool) {
	c, err := dial(s.cfg.Addr)
	if err != nil {
		s.errs.add(fmt.Errorf("client: %w", err))
		time.Sleep(100 * time.Millisecond)
		return s.stopping.Load()
	}
	defer c.close()
	var (
		created []*soakSub              // awaiting JOB_CREATED, in order
		running = map[string]*soakSub{} // handle → foreground job
		coKeys  = map[string]bool{}     // coalescing keys outstanding here
		fgOut   int                     // foreground submissions outstanding
	)
	submit := func() {
		id := s.nextID.Add(1)
		s.jobs.Add(1)
		sub := &soakSub{id: id}
		var t wire.Type
		var unique []byte
		r := rng.IntN(100)
		switch {
		case r < 15 && s.bgQueued.Load() < soakBGCap:
			sub.kind = 'b'
			head := "b" + strconv.FormatUint(id, 10)
			sub.payload = soakPayload(head, int(id*7919%193))
			t = []wire.Type{wire.SubmitJobBG, wire.SubmitJobBG, wire.SubmitJobHighBG, wire.SubmitJobLowBG}[rng.IntN(4)]
			if rng.IntN(2) == 0 {
				unique = []byte(head)
			}
			s.bgQueued.Add(1)
			s.led.set(id, stPendingBG)
		case r < 30:
			key := "c" + strconv.FormatInt(time.Now().UnixMilli()/20, 10) + "." + strconv.Itoa(rng.IntN(4))
			if !coKeys[key] {
				sub.kind, sub.key = 'c', key
				sub.payload = soakPayload(key, int(soakHash([]byte(key))%193))
				unique = []byte(key)
				coKeys[key] = true
				break
			}
			fallthrough
		default:
			sub.kind = 'f'
			head := "f" + strconv.FormatUint(id, 10)
			sub.payload = soakPayload(head, int(id*7919%193))
			if rng.IntN(2) == 0 {
				unique = []byte("u" + head)
			}
			s.led.set(id, stPendingFG)
		}
		if sub.kind != 'b' {
			t = []wire.Type{wire.SubmitJobHigh, wire.SubmitJob, wire.SubmitJob, wire.SubmitJob, wire.SubmitJobLow}[rng.IntN(5)]
			fgOut++
		}
		fn := soakFunc(int(soakHash(sub.payload)>>8) % s.cfg.Funcs)
		c.send(t, fn, unique, sub.payload)
		created = append(created, sub)
	}
	// settle ends a foreground job with the given ledger state.
	settle := func(sub *soakSub, st uint8) {
		fgOut--
		if sub.kind == 'c' {
			delete(coKeys, sub.key)
			if st == stCompleted || st == stFailed {
				s.coSettled.Add(1)
			}
		} else {
			s.led.set(sub.id, st)
		}
	}
	// abandon gives up on everything outstanding, with state st for
	// foreground jobs.
	abandon := func(st uint8) {
		for _, sub := range created {
			if sub.kind == 'b' {
				s.led.set(sub.id, stUncertain)
				s.uncertain.Add(1)
				continue
			}
			settle(sub, st)
			if st == stAbandoned {
				s.abandoned.Add(1)
			}
		}
		for _, sub := range running {
			settle(sub, st)
			if st == stAbandoned {
				s.abandoned.Add(1)
			}
		}
	}
	for {
		for !s.stopping.Load() && len(created)+len(running) < s.cfg.InFlight {
			submit()
		}
		if len(created)+len(running) == 0 {
			return true
		}
		if fgOut > 0 && s.clientDrop[idx].Swap(false) {
			abandon(stAbandoned)
			s.drops.Add(1)
			return false
		}
		if !c.buffered() {
			_ = c.c.SetReadDeadline(time.Now().Add(s.cfg.Stall))
			if err := c.flush(); err != nil {
				s.errs.add(fmt.Errorf("client: %w", err))
				abandon(stLost)
				return s.stopping.Load()
			}
		}
		p, err := c.next()
		if err != nil {
			s.errs.add(fmt.Errorf("client: %w with %d jobs outstanding", err, len(created)+len(running)))
			abandon(stLost)
			return s.stopping.Load()
		}
		switch p.Type {
		case wire.JobCreated:
			if len(created) == 0 {
				s.errs.add(errors.New("JOB_CREATED with no submission pending"))
				continue
			}
			sub := created[0]
			created = created[1:]
			if sub.kind == 'b' {
				s.led.set(sub.id, stQueuedBG)
				s.bgCreated.Add(1)
				continue
			}
			h := string(p.Field[0])
			if _, dup := running[h]; dup {
				s.errs.add(fmt.Errorf("handle %q created twice on one connection", h))
			}
			running[h] = sub
		case wire.WorkData:
			sub := running[string(p.Field[0])]
			switch {
			case sub == nil:
				s.errs.add(fmt.Errorf("WORK_DATA for handle %q not outstanding", p.Field[0]))
			case !soakWantsData(soakHash(sub.payload)) || string(p.Field[1]) != "d:"+string(sub.payload):
				s.errs.add(fmt.Errorf("handle %q: wrong WORK_DATA", p.Field[0]))
			}
		case wire.WorkComplete:
			h := string(p.Field[0])
			sub := running[h]
			if sub == nil {
				s.errs.add(fmt.Errorf("WORK_COMPLETE for handle %q not outstanding (delivered twice?)", h))
				continue
			}
			delete(running, h)
			if soakWantsFail(soakHash(sub.payload)) || string(p.Field[1]) != "ok:"+string(sub.payload) {
				s.errs.add(fmt.Errorf("handle %q (%.20s): wrong result", h, sub.payload))
				settle(sub, stLost)
				continue
			}
			s.completed.Add(1)
			settle(sub, stCompleted)
		case wire.WorkFail:
			h := string(p.Field[0])
			sub := running[h]
			if sub == nil {
				s.errs.add(fmt.Errorf("WORK_FAIL for handle %q not outstanding (delivered twice?)", h))
				continue
			}
			delete(running, h)
			switch {
			case soakWantsFail(soakHash(sub.payload)):
				s.failed.Add(1)
			case s.led.wasKilled(sub.payload):
				s.failedRetries.Add(1)
			default:
				s.errs.add(fmt.Errorf("handle %q (%.20s): unexpected WORK_FAIL", h, sub.payload))
				settle(sub, stLost)
				continue
			}
			settle(sub, stFailed)
		default:
			s.errs.add(fmt.Errorf("client: %w", errUnexpected(&p)))
		}
	}
}

// waitEmpty polls the admin status until the soak's functions hold no job,
// and returns how many remain when it gives up (no progress for Stall).
func (s *soak) waitEmpty(ctx context.Context) (int64, error) {
	c, err := dial(s.cfg.Addr)
	if err != nil {
		return -1, fmt.Errorf("admin: %w", err)
	}
	defer c.close()
	last, lastMove := int64(-1), time.Now()
	for {
		_ = c.c.SetDeadline(time.Now().Add(30 * time.Second))
		c.sendLine("status")
		if err := c.flush(); err != nil {
			return -1, fmt.Errorf("admin: %w", err)
		}
		var total int64
		for {
			line, err := c.line()
			if err != nil {
				return -1, fmt.Errorf("admin status: %w", err)
			}
			if string(line) == "." {
				break
			}
			f := strings.Split(string(line), "\t")
			if len(f) < 3 || !strings.HasPrefix(f[0], "soak-") {
				continue
			}
			n, err := strconv.ParseInt(f[1], 10, 64)
			if err != nil {
				return -1, fmt.Errorf("admin status line %q", line)
			}
			total += n
		}
		if total == 0 {
			return 0, nil
		}
		if total != last {
			last, lastMove = total, time.Now()
		} else if time.Since(lastMove) > s.cfg.Stall || ctx.Err() != nil {
			return total, nil
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// checkLedger returns what the ledger shows wrong.
func (s *soak) checkLedger(stillQueued int64) []string {
	s.led.mu.Lock()
	defer s.led.mu.Unlock()
	var twice, vanished, lost, unsettled, phantom int64
	for _, e := range s.led.e {
		if e.answers > 1 {
			twice++
		}
		switch e.state {
		case stNone:
			if e.answers > 0 {
				phantom++
			}
		case stPendingFG, stPendingBG:
			unsettled++
		case stCompleted, stFailed:
			if e.answers == 0 {
				phantom++ // a result no worker gave
			}
		case stQueuedBG:
			if e.answers == 0 && stillQueued <= 0 {
				vanished++
			}
		case stLost:
			lost++
		}
	}
	var out []string
	add := func(n int64, what string) {
		if n > 0 {
			out = append(out, fmt.Sprintf("%d %s", n, what))
		}
	}
	add(twice, "jobs answered by workers more than once")
	add(vanished, "background jobs vanished")
	add(lost, "jobs lost or wrongly answered")
	add(unsettled, "jobs never settled")
	add(phantom, "results for jobs no worker answered")
	return out
}

// soakSample is one reading of the server process.
type soakSample struct {
	at      time.Time
	rss     int64
	threads int
}

func sampleStatus(pid int) (soakSample, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return soakSample{}, err
	}
	x := soakSample{at: time.Now()}
	if x.rss, err = parseProcStatusRSS(b); err != nil {
		return soakSample{}, err
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "Threads:"); ok {
			x.threads, _ = strconv.Atoi(strings.TrimSpace(rest))
		}
	}
	return x, nil
}

// flatness applies the rule in the package comment to the samples taken
// after warm: the median RSS of the first and last thirds, the most
// threads in each, and why they are not flat ("" when they are, or when
// there are too few samples to say).
func flatness(samples []soakSample, warm time.Time) (rssFirst, rssLast int64, thrFirst, thrLast, n int, why string) {
	i := 0
	for i < len(samples) && samples[i].at.Before(warm) {
		i++
	}
	samples = samples[i:]
	n = len(samples)
	if n < 3 {
		return 0, 0, 0, 0, 0, ""
	}
	third := n / 3
	first, last := samples[:third], samples[n-third:]
	median := func(xs []soakSample) int64 {
		r := make([]int64, len(xs))
		for i, x := range xs {
			r[i] = x.rss
		}
		slices.Sort(r)
		return r[len(r)/2]
	}
	most := func(xs []soakSample) int {
		m := 0
		for _, x := range xs {
			m = max(m, x.threads)
		}
		return m
	}
	rssFirst, rssLast, thrFirst, thrLast = median(first), median(last), most(first), most(last)
	var reasons []string
	if float64(rssLast) > 1.5*float64(rssFirst) {
		reasons = append(reasons, fmt.Sprintf("RSS grew: median %.1f MiB in the first third, %.1f MiB in the last",
			float64(rssFirst)/(1<<20), float64(rssLast)/(1<<20)))
	}
	if thrLast > thrFirst+max(4, thrFirst/4) {
		reasons = append(reasons, fmt.Sprintf("threads grew: %d in the first third, %d in the last", thrFirst, thrLast))
	}
	return rssFirst, rssLast, thrFirst, thrLast, n, strings.Join(reasons, "; ")
}

// StartServer starts a server from a command line in which "{port}" stands
// for a free loopback port, waits until it accepts connections, and returns
// its address, PID and a function that stops it.
func StartServer(ctx context.Context, cmdline string) (addr string, pid int, stop func(), err error) {
	t := Target{Label: "server", Cmd: strings.Fields(cmdline)}
	if len(t.Cmd) == 0 {
		return "", 0, nil, errors.New("bench: empty server command")
	}
	srv, err := t.start(ctx)
	if err != nil {
		return "", 0, nil, err
	}
	return srv.addr, srv.pid, srv.stop, nil
}
