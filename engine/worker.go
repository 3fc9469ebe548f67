package engine

import (
	"math"
	"slices"
	"time"

	"gearshard/wire"
)

// CanDo registers sess for function fname (CAN_DO, or CAN_DO_TIMEOUT with a
// timeout > 0). Like gearmand, a repeated CAN_DO adds a second registration
// (withdrawing each is O(1), so a connection's many repeats cost a linear
// clean-up, not a quadratic one). Event-loop only (it updates the session's
// loop-owned shard list).
func (e *Engine) CanDo(t *Turn, sess *Session, fname []byte, timeout time.Duration) {
	s := e.shardOf(fname)
	sess.mark(kindWorker)
	sess.canDoSeq++
	s.mu.Lock()
	f := s.function(fname, true)
	a := &ability{sess: sess, fn: f, timeout: timeout, seq: sess.canDoSeq, idx: len(f.workers)}
	f.workers = append(f.workers, a)
	ps := &sess.per[s.idx]
	ps.abilities = append(ps.abilities, a)
	ps.unserved.pushBack(a)
	if ps.byFn == nil {
		ps.byFn = make(map[*function][]*ability)
	}
	// A function registered twice times its jobs by the newest
	// registration, as in gearmand (a worker re-registers to change its
	// timeout), whichever registration serves the job.
	for _, old := range ps.byFn[f] {
		old.timeout = timeout
	}
	ps.byFn[f] = append(ps.byFn[f], a)
	// A worker already asleep hears of work for its new function too.
	if sess.sleep.Load() == sleeping {
		if f.hasRunnable() && sess.sleep.CompareAndSwap(sleeping, woken) {
			t.send(sess, wire.Noop)
		} else {
			a.asleep = true
			f.sleepers = append(f.sleepers, a)
		}
	}
	s.mu.Unlock()
	if !slices.Contains(sess.workShards, s.idx) {
		sess.workShards = append(sess.workShards, s.idx)
	}
}

// CantDo removes every registration of sess for fname. Event-loop only.
func (e *Engine) CantDo(sess *Session, fname []byte) {
	s := e.shardOf(fname)
	s.mu.Lock()
	ps := &sess.per[s.idx]
	ps.abilities = slices.DeleteFunc(ps.abilities, func(a *ability) bool {
		if a.fn.name != string(fname) {
			return false
		}
		s.withdraw(a)
		delete(ps.byFn, a.fn)
		return true
	})
	empty := len(ps.abilities) == 0
	s.mu.Unlock()
	if empty {
		sess.workShards = slices.DeleteFunc(sess.workShards, func(i int) bool { return i == s.idx })
	}
}

// ResetAbilities removes every registration of sess. Event-loop only.
func (e *Engine) ResetAbilities(sess *Session) {
	for _, i := range sess.workShards {
		s := e.shards[i]
		s.mu.Lock()
		ps := &sess.per[i]
		for _, a := range ps.abilities {
			s.withdraw(a)
		}
		clear(ps.abilities)
		ps.abilities = ps.abilities[:0]
		clear(ps.byFn)
		s.mu.Unlock()
	}
	sess.workShards = sess.workShards[:0]
}

// withdraw removes a registration from its function. A sleepers entry, if
// any, is skipped and dropped by the next wake; should no job come to wake
// them, withdrawn entries are swept once they are half the list, so a
// worker that keeps registering, sleeping and withdrawing cannot grow it.
func (s *shard) withdraw(a *ability) {
	if a.withdrawn {
		return
	}
	a.withdrawn = true
	a.sess.per[s.idx].servingOrder(a).remove(a)
	f := a.fn
	last := len(f.workers) - 1
	f.workers[a.idx] = f.workers[last]
	f.workers[a.idx].idx = a.idx
	f.workers[last] = nil
	f.workers = f.workers[:last]
	if a.asleep {
		f.withdrawnSleepers++
		if 2*f.withdrawnSleepers > len(f.sleepers) {
			f.sleepers = slices.DeleteFunc(f.sleepers, func(x *ability) bool { return x.withdrawn })
			f.withdrawnSleepers = 0
		}
	}
}

func (f *function) hasRunnable() bool {
	return f.queue[High].n+f.queue[Normal].n+f.queue[Low].n > 0
}

// PreSleep marks sess asleep. The state is set before any shard is looked
// at, and each shard is checked and joined under its lock, so a job queued
// concurrently either is seen here or sees the sleeper: no lost wake-up.
// Event-loop only.
func (e *Engine) PreSleep(t *Turn, sess *Session) {
	sess.sleep.Store(sleeping)
	for _, i := range sess.workShards {
		s := e.shards[i]
		s.mu.Lock()
		ps := &sess.per[i]
		for _, a := range ps.abilities {
			if a.fn.hasRunnable() {
				if sess.sleep.CompareAndSwap(sleeping, woken) {
					t.send(sess, wire.Noop)
				}
				s.mu.Unlock()
				return
			}
		}
		for _, a := range ps.abilities {
			if !a.asleep {
				a.asleep = true
				a.fn.sleepers = append(a.fn.sleepers, a)
			}
		}
		s.mu.Unlock()
	}
}

// GrabKind selects the JOB_ASSIGN variant a worker asked for.
type GrabKind uint8

const (
	GrabPlain GrabKind = iota // GRAB_JOB → JOB_ASSIGN
	GrabUniq                  // GRAB_JOB_UNIQ → JOB_ASSIGN_UNIQ
	GrabAll                   // GRAB_JOB_ALL → JOB_ASSIGN_ALL, or _UNIQ when the job has no reducer
)

// Grab hands sess its next job: the highest priority queued over all its
// functions, wherever they live; among equal priorities, the registration
// served least recently wins, so every function gets its turn however the
// functions are spread over shards. Event-loop only.
func (e *Engine) Grab(t *Turn, sess *Session, kind GrabKind) {
	sess.sleep.Store(awake)
	if len(sess.workShards) == 1 {
		// All its functions in one shard: look and take under one lock.
		s := e.shards[sess.workShards[0]]
		s.mu.Lock()
		for pri := High; pri < numPriorities; pri++ {
			if a := s.leastRecentlyServed(sess, pri); a != nil {
				s.serve(t, sess, a, pri, kind)
				s.mu.Unlock()
				return
			}
		}
		s.mu.Unlock()
		t.send(sess, wire.NoJob)
		return
	}
	for pri := High; pri < numPriorities; pri++ {
		// Another worker may take the chosen job between looking and
		// taking; then look again. The bound only matters under a storm of
		// such races, and the last round takes whatever it finds.
		for round := 0; round < 4; round++ {
			s, a := e.leastRecentlyServed(sess, pri)
			if a == nil {
				break
			}
			s.mu.Lock()
			if a.fn.queue[pri].head != nil && !a.withdrawn {
				s.serve(t, sess, a, pri, kind)
				s.mu.Unlock()
				return
			}
			s.mu.Unlock()
		}
	}
	t.send(sess, wire.NoJob)
}

// leastRecentlyServed finds, over the worker's shards, its registration
// with a job queued at pri that was served longest ago. Shards with nothing
// queued at pri are skipped without taking their lock.
func (e *Engine) leastRecentlyServed(sess *Session, pri Priority) (*shard, *ability) {
	var (
		bestShard *shard
		best      *ability
	)
	for _, i := range sess.workShards {
		s := e.shards[i]
		if s.runnable[pri].Load() == 0 {
			continue
		}
		s.mu.Lock()
		if a := s.leastRecentlyServed(sess, pri); a != nil && (best == nil || a.served < best.served) {
			bestShard, best = s, a
		}
		s.mu.Unlock()
	}
	return bestShard, best
}

// leastRecentlyServed is the same within one shard: of equals, the oldest
// registration. It walks the worker's registrations or the shard's
// functions with work, whichever list is shorter (a map lookup costs a few
// steps of a walk), so a worker of thousands of functions does not hold the
// shard for thousands of steps per GRAB. Caller holds s.mu.
func (s *shard) leastRecentlyServed(sess *Session, pri Priority) *ability {
	ps := &sess.per[s.idx]
	if len(s.ready[pri])*lookupSteps < len(ps.abilities) {
		return s.servedLeastViaReady(ps, pri)
	}
	return servedLeastViaRegistrations(ps, pri)
}

// lookupSteps is about what one map lookup costs in steps of a walk over
// registrations.
const lookupSteps = 4

// servedLeastViaRegistrations walks the registrations in serving order and
// stops at the first with a job: under load, that is the first or second.
func servedLeastViaRegistrations(ps *sessShard, pri Priority) *ability {
	for _, l := range [...]*abilityList{&ps.unserved, &ps.served} {
		for a := l.head; a != nil; a = a.next {
			if a.fn.queue[pri].head != nil {
				return a
			}
		}
	}
	return nil
}

// servingOrder is the list that holds a.
func (ps *sessShard) servingOrder(a *ability) *abilityList {
	if a.served == 0 {
		return &ps.unserved
	}
	return &ps.served
}

func (s *shard) servedLeastViaReady(ps *sessShard, pri Priority) *ability {
	var best *ability
	for _, fn := range s.ready[pri] {
		for _, a := range ps.byFn[fn] {
			if servedBefore(a, best) {
				best = a
			}
		}
	}
	return best
}

// servedBefore says a should be served before best (nil: nothing yet).
func servedBefore(a, best *ability) bool {
	return best == nil || a.served < best.served || (a.served == best.served && a.seq < best.seq)
}

// serve assigns the head job of a's queue at pri and stamps a as served.
// Caller holds s.mu.
func (s *shard) serve(t *Turn, sess *Session, a *ability, pri Priority, kind GrabKind) {
	ps := &sess.per[s.idx]
	ps.servingOrder(a).remove(a)
	sess.grabSeq++
	a.served = sess.grabSeq
	ps.served.pushBack(a)
	s.assign(t, sess, a, a.fn.queue[pri].head, kind)
}

func (s *shard) assign(t *Turn, sess *Session, a *ability, j *Job, kind GrabKind) {
	s.dequeue(j)
	now := t.clock(s.e)
	j.fn.latency().wait.observe(now - j.stamp)
	j.stamp = now
	j.state = stateRunning
	j.worker = sess
	s.debugJob(j).Uint64("worker", sess.ID).Msg("job assigned")
	j.fn.running++
	sess.per[s.idx].held.pushBack(j)
	if a.timeout > 0 {
		s.armTimer(j, time.Now().Add(a.timeout))
	}
	var hb [64]byte
	h := s.e.appendHandle(hb[:0], j.id)
	name := unsafeBytes(j.fn.name)
	switch {
	case kind == GrabAll && j.reducerLen > 0:
		t.send(sess, wire.JobAssignAll, h, name, j.unique(), j.reducer(), j.data())
	case kind == GrabAll || kind == GrabUniq:
		t.send(sess, wire.JobAssignUniq, h, name, j.unique(), j.data())
	default:
		t.send(sess, wire.JobAssign, h, name, j.data())
	}
}

// WorkResult handles WORK_DATA, WORK_WARNING, WORK_STATUS, WORK_COMPLETE,
// WORK_FAIL and WORK_EXCEPTION from the worker holding the job.
func (e *Engine) WorkResult(t *Turn, sess *Session, p *wire.Packet) {
	handle := p.Field[0]
	s, id, ok := e.parseHandle(handle)
	if !ok {
		e.jobNotFound(t, sess, p.Type)
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	j := s.job(id)
	if j == nil || j.state != stateRunning || j.worker != sess {
		e.jobNotFound(t, sess, p.Type)
		return
	}
	switch p.Type {
	case wire.WorkData, wire.WorkWarning:
		s.forward(t, j, p.Type, handle, p.Field[1])
	case wire.WorkStatus:
		// As gearmand's (uint32_t)atoi: out of range clamps, then the low 32 bits stay.
		num, _ := parseInt(p.Field[1])
		den, _ := parseInt(p.Field[2])
		j.num, j.den = uint32(num), uint32(den)
		s.forward(t, j, p.Type, handle, p.Field[1], p.Field[2])
	case wire.WorkComplete:
		j.fn.counters.Completed++
		s.forward(t, j, p.Type, handle, p.Field[1])
		s.finish(t, j, "job completed")
	case wire.WorkFail:
		j.fn.counters.Failed++
		s.forward(t, j, p.Type, handle)
		s.finish(t, j, "job failed")
	case wire.WorkException:
		j.fn.counters.Exceptions++
		s.forEachListener(j, func(c *Session) {
			if c.exceptions.Load() {
				t.send(c, wire.WorkException, handle, p.Field[1])
			} else {
				t.send(c, wire.WorkFail, handle)
			}
		})
		s.finish(t, j, "job exception")
	}
}

func (s *shard) forEachListener(j *Job, fn func(*Session)) {
	if j.first.sess != nil {
		fn(j.first.sess)
	}
	for _, l := range j.listeners {
		fn(l.sess)
	}
}

func (e *Engine) jobNotFound(t *Turn, sess *Session, typ wire.Type) {
	text := "Job given in work result not found"
	switch typ {
	case wire.WorkData, wire.WorkWarning:
		text = "Job does not exist on server"
	case wire.WorkException:
		text = "An exception was received for a job that does not exist"
	}
	t.sendError(sess, "JOB_NOT_FOUND", text)
}

// finish ends a running job with its result: off its worker, clients
// detached, forgotten.
func (s *shard) finish(t *Turn, j *Job, outcome string) {
	run := t.clock(s.e) - j.stamp
	j.fn.latency().run.observe(run)
	s.debugJob(j).Uint64("worker", j.worker.ID).Dur("run", time.Duration(run)).Msg(outcome)
	s.finished++
	j.worker.per[s.idx].held.remove(j)
	j.fn.running--
	j.worker = nil
	s.detachAll(j)
	s.freeJob(j)
}

// timeoutJob fails a running job whose worker outlived its CAN_DO_TIMEOUT.
// The worker is not told; its late result gets JOB_NOT_FOUND.
func (s *shard) timeoutJob(t *Turn, j *Job) { s.failRunning(t, j, "job failed: worker timeout") }

// failRunning ends a running job with WORK_FAIL to its clients.
func (s *shard) failRunning(t *Turn, j *Job, outcome string) {
	var hb [64]byte
	j.fn.counters.Failed++
	s.forward(t, j, wire.WorkFail, s.e.appendHandle(hb[:0], j.id))
	s.finish(t, j, outcome)
}

// FailHeld fails the jobs sess is running, where Disconnect would requeue
// them: for a worker cut off for sending a result the server refuses
// (over --max-packet-size), which running the job again would repeat, for
// ever at the default of unlimited retries. Event-loop only.
func (e *Engine) FailHeld(t *Turn, sess *Session, outcome string) {
	for _, s := range e.shards {
		s.mu.Lock()
		held := &sess.per[s.idx].held
		for held.head != nil {
			s.failRunning(t, held.head, outcome)
		}
		s.mu.Unlock()
	}
}

// requeue returns a job whose worker went away to the tail of its queue,
// or fails it once it has used up --job-retries.
func (s *shard) requeue(t *Turn, j *Job) {
	j.worker.per[s.idx].held.remove(j)
	j.fn.running--
	j.worker = nil
	s.disarmTimer(j)
	j.num, j.den = 0, 0
	if j.retries < 255 {
		j.retries++
	}
	if r := s.e.opts.JobRetries; r > 0 && int(j.retries) >= r {
		var hb [64]byte
		j.fn.counters.Failed++
		s.e.log.Info().Str("function", j.fn.name).Uint64("job", j.id).Msg("dropped job due to max retry count")
		s.forward(t, j, wire.WorkFail, s.e.appendHandle(hb[:0], j.id))
		s.detachAll(j)
		s.freeJob(j)
		return
	}
	if !j.background && !j.hasListeners() {
		s.freeJob(j) // nobody is waiting for it any more
		return
	}
	j.fn.counters.Retried++
	s.debugJob(j).Uint8("retries", j.retries).Msg("job requeued: its worker went away")
	s.enqueue(t, j)
}

// Disconnect removes a session: its registrations are withdrawn, the jobs
// it was running are requeued, and it stops waiting on its jobs; a queued
// foreground job nobody waits for any more is dropped. Event-loop only.
func (e *Engine) Disconnect(t *Turn, sess *Session) {
	sess.out.mu.Lock()
	sess.out.closed = true
	sess.out.buf = nil
	sess.out.acct.Set(0) // the buffer budget gets back all it counted
	sess.out.mu.Unlock()
	for _, s := range e.shards {
		s.mu.Lock()
		ps := &sess.per[s.idx]
		for _, a := range ps.abilities {
			s.withdraw(a)
		}
		ps.abilities, ps.byFn = nil, nil
		for ps.held.head != nil {
			s.requeue(t, ps.held.head)
		}
		for l := ps.waiting.head; l != nil; l = ps.waiting.head {
			s.detach(l)
		}
		s.mu.Unlock()
	}
	sess.workShards = nil
	e.sessMu.Lock()
	delete(e.sessions, sess.ID)
	e.sessMu.Unlock()
}

// detach removes one listener from its job; a foreground job left with no
// listener is dropped if still queued (a running one finishes unheard).
func (s *shard) detach(l *listener) {
	j := l.job
	l.sess.per[s.idx].waiting.remove(l)
	if l == &j.first {
		j.first.sess = nil
	} else {
		j.listeners = slices.DeleteFunc(j.listeners, func(x *listener) bool { return x == l })
	}
	if !j.background && !j.hasListeners() && j.state != stateRunning {
		s.drop(j)
	}
}

// CancelJob fails a job to its clients and forgets it ("cancel job"). A
// running job is detached from its clients and finishes unheard.
func (e *Engine) CancelJob(t *Turn, handle []byte) bool {
	s, id, ok := e.parseHandle(handle)
	if !ok {
		return false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	j := s.job(id)
	if j == nil {
		return false
	}
	s.debugJob(j).Msg("job cancelled")
	s.forward(t, j, wire.WorkFail, handle)
	s.detachAll(j)
	if j.state != stateRunning {
		s.drop(j)
		return true
	}
	// Running: it finishes unheard, and a new submission with its unique
	// key starts a new job rather than joining a cancelled one.
	j.background = false
	s.forgetUnique(j)
	return true
}

// parseTimeout reads CAN_DO_TIMEOUT's milliseconds as gearmand does
// (strtol; garbage is 0, meaning no timeout), including its floor of one
// second: workers written when the unit was seconds (Perl Gearman::Worker
// documents seconds) send small numbers, and those must not fail every job.
func parseTimeout(b []byte) (time.Duration, bool) {
	if len(b) > 20 {
		return 0, false
	}
	n, _ := parseInt(b)
	if n <= 0 {
		return 0, true
	}
	// Past about 292 years the product would wrap negative.
	n = min(n, int64(math.MaxInt64/time.Millisecond))
	return max(time.Duration(n)*time.Millisecond, time.Second), true
}
