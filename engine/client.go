package engine

import (
	"bytes"
	"encoding/binary"
	"math"
	"math/rand/v2"
	"strconv"
	"sync"
	"time"

	"github.com/cespare/xxhash/v2"

	"gearshard/wire"
)

// submitSpec describes one kind of SUBMIT_* packet.
type submitSpec struct {
	pri        Priority
	background bool
}

// Submit handles every SUBMIT_* packet. Fields: FUNC, UNIQ, then for EPOCH
// the time, for SCHED five cron fields, for REDUCE reducer and aggregator,
// and last the workload.
func (e *Engine) Submit(t *Turn, sess *Session, p *wire.Packet) {
	var (
		spec    submitSpec
		reducer []byte
		when    int64
	)
	fn, unique, data := p.Field[0], p.Field[1], p.Field[p.NField-1]
	sess.mark(kindClient)
	switch p.Type {
	case wire.SubmitJob:
		spec = submitSpec{Normal, false}
	case wire.SubmitJobBG:
		spec = submitSpec{Normal, true}
	case wire.SubmitJobHigh:
		spec = submitSpec{High, false}
	case wire.SubmitJobHighBG:
		spec = submitSpec{High, true}
	case wire.SubmitJobLow:
		spec = submitSpec{Low, false}
	case wire.SubmitJobLowBG:
		spec = submitSpec{Low, true}
	case wire.SubmitJobEpoch:
		spec = submitSpec{Normal, true}
		n, ok := parseInt(p.Field[2])
		if !ok {
			// gearmand drops such a submission without a word.
			t.sendError(sess, "INVALID_ARGUMENT", "Epoch time out of range")
			return
		}
		// Held back at maxEpoch: later times overflow the clock's
		// nanoseconds into the past and would run the job at once.
		when = min(n, maxEpoch)
	case wire.SubmitJobSched:
		spec = submitSpec{Normal, true}
		next, ok := nextCron(time.Now(), p.Field[2:7])
		if !ok {
			t.sendError(sess, "INVALID_ARGUMENT", "Schedule fields out of range")
			return
		}
		when = next.Unix()
	case wire.SubmitReduceJob:
		spec = submitSpec{Normal, false}
		reducer = p.Field[2]
	case wire.SubmitReduceJobBackground:
		spec = submitSpec{Normal, true}
		reducer = p.Field[2]
	}
	if !checkFunctionName(t, sess, fn) {
		return
	}
	if len(unique) > MaxUnique {
		t.sendError(sess, "ARGUMENT_TOO_LARGE", "Unique value too large")
		return
	}
	e.submit(t, sess, fn, unique, reducer, data, spec, when)
}

func (e *Engine) submit(t *Turn, sess *Session, fname, unique, reducer, data []byte, spec submitSpec, when int64) {
	var hb [64]byte
	s := e.shardOf(fname)
	s.mu.Lock()
	// Looked up, not created: a refused submission leaves no name behind.
	f := s.function(fname, false)

	key, coalesce := coalesceKey(unique, data)
	if coalesce && f != nil {
		if j := f.unique[string(key)]; j != nil && (!isDash(unique) || bytes.Equal(j.data(), data)) {
			// gearmand: the existing job keeps its priority and kind; a
			// foreground submitter is attached and gets later WORK_*.
			if !spec.background {
				s.attach(j, sess)
			}
			f.counters.Coalesced++
			s.debugJob(j).Uint64("conn", sess.ID).Msg("submission joined job")
			h := e.appendHandle(hb[:0], j.id)
			if j.state == statePersisting {
				// Not durable yet: this client hears of it when it is.
				s.waiters[j.id] = append(s.waiters[j.id], waiter{sess, t.sendHeld(sess, wire.JobCreated, h)})
			} else {
				t.send(sess, wire.JobCreated, h)
			}
			s.mu.Unlock()
			return
		}
	}
	if f != nil {
		if m := f.maxQueue[spec.pri]; m > 0 && f.total >= m {
			s.mu.Unlock()
			t.sendError(sess, "QUEUE_ERROR", "Job queue is full")
			return
		}
	}
	if m := e.opts.MaxQueueBytes; m > 0 && e.queuedBytes()+int64(len(unique)+len(reducer)+len(data))+jobOverhead > m {
		s.mu.Unlock()
		e.collectSlabs()
		t.sendError(sess, "QUEUE_ERROR", "Server queue memory is full (--max-queue-bytes)")
		return
	}
	if f == nil {
		f = s.function(fname, true)
	}
	persist := spec.background && e.opts.Store != nil
	var stored []byte
	if persist && (len(unique) == 0 || isDash(unique)) {
		var kb [madeUpKeyLen]byte
		stored = AppendMadeUpKey(kb[:0], unique, rand.Uint64())
	}
	j := s.newJob(f, unique, reducer, data, stored)
	f.counters.Submitted++
	s.submitted++
	j.pri = spec.pri
	j.background = spec.background
	s.debugJob(j).Uint64("conn", sess.ID).Bool("background", j.background).Uint8("priority", uint8(j.pri)).
		Int("bytes", len(data)).Msg("job submitted")
	if coalesce {
		s.indexUnique(j, key)
	}
	if !spec.background {
		s.attach(j, sess)
	}
	h := e.appendHandle(hb[:0], j.id)
	if !persist {
		// Sleepers are woken before JOB_CREATED, as in gearmand: a
		// connection that is both a sleeping worker and the submitter
		// gets NOOP first.
		s.start(t, j, when)
		t.send(sess, wire.JobCreated, h)
		s.mu.Unlock()
		return
	}
	// Persisted first, acknowledged after: JOB_CREATED is queued now, in
	// its place, but held until the store says the job is durable.
	j.persisted = true
	j.state = statePersisting
	j.deadline = when // the run-at time, until the job starts
	gate := t.sendHeld(sess, wire.JobCreated, h)
	rec := Record{Function: unsafeBytes(f.name), Unique: j.storedKey(), Priority: j.pri, Data: j.data(), When: when}
	id := j.id
	s.mu.Unlock()
	// Outside the lock: a store may call back at once (when it is full).
	e.opts.Store.Add(rec, func(err error) { e.persisted(s, id, sess, gate, err) })
}

// logStoreRefusal logs a job the store refused, at most once a second.
func (e *Engine) logStoreRefusal(err error) {
	now := time.Now().UnixNano()
	last := e.storeErrLogged.Load()
	if now-last < int64(time.Second) || !e.storeErrLogged.CompareAndSwap(last, now) {
		e.storeErrQuiet.Add(1)
		return
	}
	e.log.Error().Err(err).Int64("refused_since_last_line", e.storeErrQuiet.Swap(0)).Msg("persistent queue: job not stored")
}

// maxEpoch is the latest run-at time kept (in 2255; int64 nanoseconds
// end in 2262).
const maxEpoch = 9_000_000_000

// waiter is a client whose JOB_CREATED for a job being persisted is held.
type waiter struct {
	sess *Session
	gate uint64
}

// persisted runs when the store has written (or failed to write) a job:
// its JOB_CREATED is released and the job starts, or the client gets an
// ERROR and the job is forgotten. Runs on a store goroutine; the replies
// wait in the engine's ack turn until the store calls flushAcks after the
// batch.
func (e *Engine) persisted(s *shard, id uint64, sess *Session, gate uint64, err error) {
	e.acks.mu.Lock()
	defer e.acks.mu.Unlock()
	t := &e.acks.turn
	s.mu.Lock()
	defer s.mu.Unlock()
	j := s.job(id)
	alive := j != nil && j.state == statePersisting
	var repl []byte
	if err != nil {
		e.logStoreRefusal(err)
		repl = wire.AppendError(nil, "QUEUE_ERROR", "Job could not be stored in the persistent queue: "+err.Error())
		if alive {
			// Every client of the job was still waiting for its
			// JOB_CREATED: each gets the ERROR instead, nothing more.
			j.persisted = false
			s.detachAll(j)
			s.freeJob(j)
		}
	} else if alive {
		s.debugJob(j).Msg("job stored")
		s.start(t, j, j.deadline)
	}
	t.release(sess, gate, repl)
	for _, w := range s.waiters[id] {
		t.release(w.sess, w.gate, repl)
	}
	delete(s.waiters, id)
}

// ackTurn collects the replies released by the store's callbacks between
// two flushAcks.
type ackTurn struct {
	mu    sync.Mutex
	turn  Turn
	spare []*Session // the last flushed Dirty list, for reuse
}

// flushAcks sends what the store's callbacks released: the store calls it
// after each run of callbacks (Store.AfterDone).
func (e *Engine) flushAcks() {
	e.acks.mu.Lock()
	t := e.acks.turn
	e.acks.turn = Turn{Dirty: e.acks.spare}
	e.acks.spare = nil
	e.acks.mu.Unlock()
	e.dispatch(&t)
	t.Reset()
	e.acks.mu.Lock()
	e.acks.spare = t.Dirty
	e.acks.mu.Unlock()
}

// start lets a new job run: queued now, or held until its run-at time
// (unix seconds). Caller holds s.mu.
func (s *shard) start(t *Turn, j *Job, when int64) {
	if when > 0 && when > time.Now().Unix() {
		j.state = stateDelayed
		j.fn.delayed[j.pri]++
		s.armTimer(j, time.Unix(when, 0))
		return
	}
	s.enqueue(t, j)
}

func isDash(unique []byte) bool { return len(unique) == 1 && unique[0] == '-' }

// coalesceKey returns the unique-table key of a submission. An empty unique
// never coalesces; "-" means "same workload" and keys on a hash of the data
// (a real unique cannot hold NUL, so the two key spaces cannot meet).
func coalesceKey(unique, data []byte) ([]byte, bool) {
	switch {
	case len(unique) == 0:
		return nil, false
	case isDash(unique):
		if len(data) == 0 {
			return nil, false
		}
		return binary.BigEndian.AppendUint64([]byte("-\x00"), xxhash.Sum64(data)), true
	default:
		return unique, true
	}
}

// indexUnique files j under its coalescing key, unless another job holds
// the key already.
func (s *shard) indexUnique(j *Job, key []byte) {
	f := j.fn
	if f.unique == nil {
		f.unique = make(map[string]*Job)
	}
	if _, taken := f.unique[string(key)]; taken {
		return
	}
	j.inUnique = true
	j.filed = s.e.now()
	f.unique[string(key)] = j
	if len(f.unique) == 1 {
		s.withUniques[f] = struct{}{}
	}
}

// forgetUnique takes j out of its function's unique table; the key is
// recomputed rather than kept in every job.
func (s *shard) forgetUnique(j *Job) {
	if !j.inUnique {
		return
	}
	key, _ := coalesceKey(j.unique(), j.data())
	delete(j.fn.unique, string(key))
	if len(j.fn.unique) == 0 {
		delete(s.withUniques, j.fn)
	}
	j.inUnique = false
}

// attach makes sess a listener of j, once per submission: a connection
// that submits the same unique key twice has two tasks waiting (libgearman
// matches one result packet to each), so it gets every packet twice, as
// from gearmand.
func (s *shard) attach(j *Job, sess *Session) {
	var l *listener
	if j.first.sess == nil {
		l = &j.first
	} else {
		l = &listener{}
		j.listeners = append(j.listeners, l)
	}
	l.sess, l.job = sess, j
	sess.per[s.idx].waiting.push(l)
}

// detachAll unlinks every listener of j from its client.
func (s *shard) detachAll(j *Job) {
	if j.first.sess != nil {
		j.first.sess.per[s.idx].waiting.remove(&j.first)
		j.first.sess = nil
	}
	for _, l := range j.listeners {
		l.sess.per[s.idx].waiting.remove(l)
	}
	j.listeners = nil
}

func (j *Job) hasListeners() bool { return j.first.sess != nil || len(j.listeners) > 0 }

// forward sends a packet to every client waiting on j.
func (s *shard) forward(t *Turn, j *Job, typ wire.Type, args ...[]byte) {
	if j.first.sess != nil {
		t.send(j.first.sess, typ, args...)
	}
	for _, l := range j.listeners {
		t.send(l.sess, typ, args...)
	}
}

// GetStatus answers GET_STATUS HANDLE.
func (e *Engine) GetStatus(t *Turn, sess *Session, handle []byte) {
	var nb, db [10]byte
	known, running := false, false
	var num, den uint32
	if s, id, ok := e.parseHandle(handle); ok {
		s.mu.Lock()
		if j := s.job(id); j != nil {
			known, running = true, j.state == stateRunning
			num, den = j.num, j.den
		}
		s.mu.Unlock()
	}
	t.send(sess, wire.StatusRes, handle, boolField(known), boolField(running),
		strconv.AppendUint(nb[:0], uint64(num), 10), strconv.AppendUint(db[:0], uint64(den), 10))
}

// GetStatusUnique answers GET_STATUS_UNIQUE UNIQUE. The unique is looked up
// in every function holding jobs by unique, in every shard; where several
// functions have a job under it, the newest answers, as in gearmand (whose
// unique table lists the newest first).
func (e *Engine) GetStatusUnique(t *Turn, sess *Session, unique []byte) {
	var nb, db, cb [10]byte
	var known, running bool
	var num, den uint32
	var clients int
	newest := int64(-1)
	for _, s := range e.shards {
		s.mu.Lock()
		for f := range s.withUniques {
			j := f.unique[string(unique)]
			if j == nil || j.filed <= newest {
				continue
			}
			newest = j.filed
			known, running = true, j.state == stateRunning
			num, den = j.num, j.den
			clients = len(j.listeners)
			if j.first.sess != nil {
				clients++
			}
		}
		s.mu.Unlock()
	}
	t.send(sess, wire.StatusResUnique, unique, boolField(known), boolField(running),
		strconv.AppendUint(nb[:0], uint64(num), 10), strconv.AppendUint(db[:0], uint64(den), 10),
		strconv.AppendInt(cb[:0], int64(clients), 10))
}

var (
	field0 = []byte("0")
	field1 = []byte("1")
)

func boolField(b bool) []byte {
	if b {
		return field1
	}
	return field0
}

// parseInt reads a decimal the way strtoll does: leading white space and
// sign, digits up to the first non-digit, 0 when there are none. inRange is
// false where strtoll sets ERANGE (n is then clamped, as strtoll clamps).
func parseInt(b []byte) (n int64, inRange bool) {
	b = bytes.TrimLeft(b, " \t\n\v\f\r")
	neg := false
	if len(b) > 0 && (b[0] == '-' || b[0] == '+') {
		neg = b[0] == '-'
		b = b[1:]
	}
	limit := uint64(math.MaxInt64)
	if neg {
		limit++
	}
	var u uint64
	for _, c := range b {
		if c < '0' || c > '9' {
			break
		}
		if u > (limit-uint64(c-'0'))/10 {
			if neg {
				return math.MinInt64, false
			}
			return math.MaxInt64, false
		}
		u = u*10 + uint64(c-'0')
	}
	if neg {
		return int64(-u), true // -(MaxInt64+1) wraps to MinInt64, as wanted
	}
	return int64(u), true
}
