package engine

import (
	"slices"
	"sync"
	"sync/atomic"

	"gearshard/wire"
)

// Worker sleep states. A worker goes awake → sleeping on PRE_SLEEP and
// sleeping → woken when a shard sends it NOOP; GRAB_JOB* makes it awake.
// The CAS sleeping → woken is what makes a worker with functions on several
// shards get exactly one NOOP per sleep, whichever shard wakes it first.
const (
	awake int32 = iota
	sleeping
	woken
)

// Session is the engine's view of one connection: a client, a worker, or
// both. Its fields fall in three ownership groups, noted on each.
type Session struct {
	// Set before the session is registered; read-only afterwards.
	ID    uint64
	FD    int
	Addr  string // peer IP, without port (as gearmand's "workers" shows)
	Owner any    // the network layer's connection, opaque here

	// Safe from any goroutine.
	out        outbox
	sleep      atomic.Int32
	exceptions atomic.Bool
	clientID   atomic.Pointer[string]
	kinds      atomic.Uint32 // kindClient|kindWorker|kindAdmin, as seen so far

	// per[i] is guarded by shard i's lock: this session's registrations,
	// running jobs and waited-on jobs in that shard.
	per []sessShard

	// Owned by the connection's event loop (the only goroutine that handles
	// its packets).
	workShards []int  // shards where this session has registrations
	grabSeq    uint64 // stamps registrations as they are served (fairness)
	canDoSeq   uint64 // orders registrations newest-first across shards
}

type sessShard struct {
	abilities []*ability // newest last
	// The same registrations in the order a GRAB serves them: those never
	// served in CAN_DO order, then the rest least recently served first.
	unserved, served abilityList
	// byFn holds the same registrations by function (a repeated CAN_DO
	// adds another), for workers with many (see leastRecentlyServed).
	byFn    map[*function][]*ability
	held    jobList // jobs this worker is running
	waiting listenerList
}

// ClientID returns the id set with SET_CLIENT_ID, or "-".
func (s *Session) ClientID() string {
	if p := s.clientID.Load(); p != nil {
		return *p
	}
	return "-"
}

// outbox buffers a connection's pending output. Any goroutine may append;
// the connection's event loop takes the bytes and writes them.
type outbox struct {
	mu      sync.Mutex
	buf     []byte
	pending bool // the session is on some Turn's dirty list, not yet flushed
	closed  bool
	limit   int
	over    bool // output exceeded limit: the connection must be cut off
	// overBudget: over because the buffer budget refused its growth.
	overBudget bool
	// downstream is what the network layer holds for the socket beyond
	// buf (written out of buf, not yet taken by the kernel): it counts
	// against limit too.
	downstream atomic.Int64
	// acct charges what buf and downstream hold beyond BufferAllowance to
	// the server's BufferBudget (unbound: nothing is counted).
	acct BufferAccount
	// gates hold back output from a JOB_CREATED whose job is not yet
	// durable: nothing from gates[0].pos on is written until it is
	// released, so the connection's replies stay in order.
	gates    []gate
	nextGate uint64
}

// gate marks the bytes [pos, end) of a held JOB_CREATED in buf.
type gate struct {
	pos, end int
	id       uint64
}

// Turn collects the sessions that received output during one unit of work
// (one read of a connection, one timer firing) so that each is flushed once
// at its end, not once per packet.
type Turn struct {
	Dirty []*Session
	now   int64 // the engine clock when first read in this turn; 0 = not yet
}

// Reset empties the turn for reuse.
func (t *Turn) Reset() {
	clear(t.Dirty)
	t.Dirty = t.Dirty[:0]
	t.now = 0
}

// begin locks s's outbox and returns its buffer to append to; ok is false
// (and nothing is locked) when the session is closed. end must follow.
func (t *Turn) begin(s *Session) (b []byte, ok bool) {
	s.out.mu.Lock()
	if s.out.closed {
		s.out.mu.Unlock()
		return nil, false
	}
	return s.out.buf, true
}

func (t *Turn) end(s *Session, b []byte) {
	o := &s.out
	o.buf = b
	o.checkLimit()
	if !o.pending {
		o.pending = true
		t.Dirty = append(t.Dirty, s)
	}
	o.mu.Unlock()
}

// send appends one response packet to s's output.
func (t *Turn) send(s *Session, typ wire.Type, args ...[]byte) {
	b, ok := t.begin(s)
	if !ok {
		return
	}
	t.end(s, wire.AppendResponse(b, typ, args...))
}

func (t *Turn) sendError(s *Session, code, text string) {
	b, ok := t.begin(s)
	if !ok {
		return
	}
	t.end(s, wire.AppendError(b, code, text))
}

// sendHeld appends a packet that must not reach the client before it is
// released (a JOB_CREATED waiting for its job to be durable); everything
// queued after it waits too. It returns the gate's id, or 0 when the
// session is closed.
func (t *Turn) sendHeld(s *Session, typ wire.Type, args ...[]byte) uint64 {
	b, ok := t.begin(s)
	if !ok {
		return 0
	}
	o := &s.out
	pos := len(b)
	b = wire.AppendResponse(b, typ, args...)
	o.nextGate++
	o.gates = append(o.gates, gate{pos: pos, end: len(b), id: o.nextGate})
	t.end(s, b)
	return o.nextGate
}

// release lets a held packet go, replaced by other bytes when repl is
// not nil (an ERROR instead of the JOB_CREATED).
func (t *Turn) release(s *Session, id uint64, repl []byte) {
	b, ok := t.begin(s)
	if !ok {
		return
	}
	o := &s.out
	i := slices.IndexFunc(o.gates, func(g gate) bool { return g.id == id })
	if i < 0 {
		t.end(s, b)
		return
	}
	g := o.gates[i]
	if repl != nil {
		delta := len(repl) - (g.end - g.pos)
		b = slices.Replace(b, g.pos, g.end, repl...)
		for k := i + 1; k < len(o.gates); k++ {
			o.gates[k].pos += delta
			o.gates[k].end += delta
		}
	}
	o.gates = slices.Delete(o.gates, i, i+1)
	t.end(s, b)
}

// SendRaw appends already-encoded bytes (admin replies) to s's output.
func (t *Turn) SendRaw(s *Session, p []byte) {
	b, ok := t.begin(s)
	if !ok {
		return
	}
	t.end(s, append(b, p...))
}

// maxSpare bounds the buffer kept between flushes.
const maxSpare = 256 << 10

// WriteOutput hands the pending output to write while holding the outbox
// lock, so that writes to the connection stay in order whichever goroutine
// makes them. write returns how many bytes it took; the rest stays pending
// for a later flush. It reports whether bytes remain, and whether the
// output outgrew its limit (the connection must then be cut off). A closed
// session writes nothing.
func (s *Session) WriteOutput(write func(p []byte) int) (remaining, over bool) {
	o := &s.out
	o.mu.Lock()
	defer o.mu.Unlock()
	o.pending = false
	limit := len(o.buf)
	if len(o.gates) > 0 {
		limit = o.gates[0].pos
	}
	if o.closed || limit == 0 {
		return false, o.over
	}
	n := write(o.buf[:limit])
	rest := copy(o.buf, o.buf[n:])
	o.buf = o.buf[:rest]
	for i := range o.gates {
		o.gates[i].pos -= n
		o.gates[i].end -= n
	}
	if rest == 0 && cap(o.buf) > maxSpare {
		o.buf = nil // one large reply must not pin its memory for the connection's life
	}
	if o.acct.Counted() != 0 {
		// What was written is given back; what write handed on to the
		// network layer was added to downstream (HandOff), so it stays
		// counted. Never an increase, so it never fails.
		o.acct.Set(len(o.buf) + int(o.downstream.Load()))
	}
	return rest > 0 && (len(o.gates) == 0 || o.gates[0].pos > 0), o.over
}

// SetOutputLimit caps the bytes that may wait for this connection's
// writer; past it the connection is cut off (see WriteOutput).
func (s *Session) SetOutputLimit(n int) { s.out.limit = n }

// SetBufferBudget makes the output beyond BufferAllowance count toward b,
// shared with other connections: an increase that would take b past its
// maximum cuts this connection off as its output limit would, unless
// another connection holds more; cut is how the budget cuts this one off
// when it holds the most (BufferAccount.Bind). Before the session is used;
// nil counts nothing.
func (s *Session) SetBufferBudget(b *BufferBudget, cut func()) { s.out.acct.Bind(b, cut) }

// OutputCounted is what the output holds against the buffer budget now.
func (s *Session) OutputCounted() int64 {
	s.out.mu.Lock()
	defer s.out.mu.Unlock()
	return s.out.acct.Counted()
}

// HandOff records, from inside WriteOutput's write, that n of the bytes
// write takes stay held by the network layer (they count as downstream
// until SetDownstream says otherwise): moving bytes from the outbox to the
// network layer's buffer neither gives back nor charges budget.
func (s *Session) HandOff(n int) { s.out.downstream.Add(int64(n)) }

// OutputOver reports whether the output outgrew its limit: the connection
// is to be cut off, and nothing more it asked for should be run.
func (s *Session) OutputOver() bool {
	s.out.mu.Lock()
	defer s.out.mu.Unlock()
	return s.out.over
}

// OverBudget reports whether the output is over because the buffer
// budget refused it (not its own limit).
func (s *Session) OverBudget() bool {
	s.out.mu.Lock()
	defer s.out.mu.Unlock()
	return s.out.overBudget
}

// SetDownstream records the bytes the network layer holds for the socket
// beyond the outbox, and reports whether the two together are over the
// limit.
func (s *Session) SetDownstream(n int) (over bool) {
	o := &s.out
	if n == 0 && o.downstream.Load() == 0 {
		return false // the usual case (a load, no store): the caller has WriteOutput's verdict
	}
	o.downstream.Store(int64(n))
	o.mu.Lock()
	defer o.mu.Unlock()
	o.checkLimit()
	return o.over
}

// checkLimit marks the outbox over its limit when what waits in it and
// downstream of it is more than the limit allows, or when the buffer
// budget refuses to charge it (no other connection holds more, or this one
// was evicted already). Caller holds o.mu.
func (o *outbox) checkLimit() {
	if o.closed {
		return // Disconnect gave everything back; late reports change nothing
	}
	held := len(o.buf) + int(o.downstream.Load())
	if o.limit > 0 && held > o.limit {
		o.over = true
	}
	// Under the allowance, as nearly always, Set is one comparison. Once
	// refused, the account has given back what it counted (the connection
	// is on its way out) and refuses increases without another cut-off.
	if !o.acct.Set(held) && !o.over {
		o.over, o.overBudget = true, true
		o.acct.Cutoff()
	}
}
