package queue

import (
	"encoding/binary"
	"fmt"
	"math"
	"strings"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"gearshard/engine"
)

// What the stores that talk to a database server (PostgreSQL, MySQL, Redis)
// share:
// a bounded in-memory queue that Add and Remove append to without blocking,
// and one writer goroutine that takes what has queued up, commits it as one
// transaction through a netBackend, and then calls the Adds' done
// functions.

const (
	// netAttempt bounds one batch: connecting (again), writing and
	// committing. A server that is down or stuck fails the batch's Adds
	// after at most this long.
	netAttempt = 5 * time.Second
	// netBatchOps and netBatchBytes cap one transaction, so that a long
	// backlog (after a stall) is written in pieces that each fit in
	// netAttempt, rather than as one huge transaction.
	netBatchOps   = 20_000
	netBatchBytes = 32 << 20
	// netRetryRemoves is how soon Removes that failed because the server
	// was unreachable are tried again when nothing else is written.
	netRetryRemoves = time.Second
)

// netOp is one queued Add (done != nil) or Remove.
type netOp struct {
	rec  engine.Record
	done func(error)
	// err is set by a backend when this op alone failed in a batch that
	// was otherwise committed.
	err error
}

func (o *netOp) size() int { return len(o.rec.Function) + len(o.rec.Unique) + len(o.rec.Data) + 64 }

// netBackend writes batches for a netQueue; only the writer goroutine
// calls it.
type netBackend interface {
	// write commits ops as one transaction, in call order. An error fails
	// every op; ops[i].err fails just that one.
	write(ops []netOp) error
	// transient reports whether err means the server could not be reached
	// (a Remove that failed so is tried again later), rather than that it
	// refused the write.
	transient(err error) bool
}

type netQueue struct {
	log   zerolog.Logger
	after afterDone

	mu      sync.Mutex
	ops     []netOp
	spare   []netOp
	adds    int // Adds in ops
	limit   int // of adds; MaxPending (tests lower it)
	closing bool

	wake   chan struct{} // 1 slot
	exited chan struct{}
	// closeErr is the first batch error once Close has begun (set by the
	// writer before exited is closed).
	closeErr error
}

func (q *netQueue) start(b netBackend, log zerolog.Logger) {
	q.log = log
	q.limit = MaxPending
	q.wake = make(chan struct{}, 1)
	q.exited = make(chan struct{})
	go q.run(b)
}

func (q *netQueue) signal() {
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

// add queues an Add, unless refused (the store's own check of r) or the
// queue says no. A rejected one gets done(err) from a goroutine of its
// own, never from inside the caller's call.
func (q *netQueue) add(r engine.Record, done func(error), refused error) {
	if done == nil {
		done = func(error) {}
	}
	if refused != nil {
		go q.after.refuse(done, refused)
		return
	}
	q.mu.Lock()
	var err error
	switch {
	case q.closing:
		err = ErrClosed
	case q.adds >= q.limit:
		err = ErrFull
	default:
		q.ops = append(q.ops, netOp{rec: r, done: done})
		q.adds++
	}
	q.mu.Unlock()
	if err != nil {
		go q.after.refuse(done, err)
		return
	}
	q.signal()
}

// Remove implements engine.Store for the stores that embed a netQueue: it
// queues a Remove of copies of function and unique. After Close it does
// nothing.
func (q *netQueue) Remove(function, unique []byte) {
	b := make([]byte, len(function)+len(unique))
	copy(b, function)
	copy(b[len(function):], unique)
	op := netOp{rec: engine.Record{Function: b[:len(function):len(function)], Unique: b[len(function):]}}
	q.mu.Lock()
	if q.closing {
		q.mu.Unlock()
		return
	}
	q.ops = append(q.ops, op)
	q.mu.Unlock()
	q.signal()
}

// AfterDone implements engine.Store for the stores that embed a netQueue.
func (q *netQueue) AfterDone(fn func()) { q.after.set(fn) }

// netq gives the tests the queue of any of these stores.
func (q *netQueue) netq() *netQueue { return q }

// take appends to dst what is queued, up to the batch caps, and reports
// whether Close has begun.
func (q *netQueue) take(dst []netOp) ([]netOp, bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	n, size := 0, 0
	for _, op := range dst {
		size += op.size()
	}
	for n < len(q.ops) && len(dst)+n < netBatchOps && (n == 0 || size < netBatchBytes) {
		size += q.ops[n].size()
		n++
	}
	if n == 0 {
		return dst, q.closing
	}
	if len(dst) == 0 && n == len(q.ops) {
		// Everything: swap the buffers instead of copying.
		dst, q.ops, q.spare = q.ops, q.spare[:0], nil
	} else {
		dst = append(dst, q.ops[:n]...)
		clear(q.ops[:n])
		q.ops = q.ops[n:]
	}
	for i := range dst {
		if dst[i].done != nil { // (carried ops are Removes only)
			q.adds--
		}
	}
	return dst, q.closing
}

// recycle gives a written batch's buffer back for the next take.
func (q *netQueue) recycle(b []netOp) {
	clear(b)
	q.mu.Lock()
	if q.spare == nil || cap(b) > cap(q.spare) {
		q.spare = b[:0]
	}
	q.mu.Unlock()
}

func (q *netQueue) run(b netBackend) {
	defer close(q.exited)
	var carry []netOp // Removes to try again: the server was unreachable
	failing := false
	// abandon: Close has begun and the server is unreachable; what is
	// still queued fails at once instead of a timeout per batch.
	var abandon error
	var retry *time.Timer
	for {
		var retryC <-chan time.Time
		if len(carry) > 0 {
			if retry == nil {
				retry = time.NewTimer(netRetryRemoves)
			} else {
				retry.Reset(netRetryRemoves)
			}
			retryC = retry.C
		}
		select {
		case <-q.wake:
		case <-retryC:
		}
		closing := false
		for {
			// Carried Removes go first: they were called before anything
			// still queued.
			var batch []netOp
			if len(carry) > 0 {
				k := min(len(carry), netBatchOps)
				batch = append(batch, carry[:k]...)
				carry = append(carry[:0], carry[k:]...)
			}
			if len(carry) == 0 {
				batch, closing = q.take(batch)
			} else {
				q.mu.Lock()
				closing = q.closing
				q.mu.Unlock()
			}
			if len(batch) == 0 {
				break
			}
			err := abandon
			if err == nil {
				err = b.write(batch)
			}
			switch {
			case err != nil && !failing:
				q.log.Error().Err(err).Int("ops", len(batch)).Msg("persistent queue: write failed; background submissions fail until the store is back")
				failing = true
			case err == nil && failing:
				q.log.Info().Msg("persistent queue: store reachable again")
				failing = false
			}
			if err != nil && closing {
				if q.closeErr == nil {
					q.closeErr = err
				}
				if b.transient(err) {
					abandon = err
				}
			}
			dropped := 0
			var dropErr error
			var dropOp *netOp
			for i := range batch {
				op := &batch[i]
				e := err
				if e == nil {
					e = op.err
				}
				if op.done != nil {
					op.done(e)
					continue
				}
				if e == nil {
					continue
				}
				if b.transient(e) && !closing && len(carry) < MaxPending {
					op.err = nil
					carry = append(carry, *op)
					continue
				}
				if dropped++; dropped == 1 {
					dropErr, dropOp = e, op
				}
			}
			q.after.call()
			if dropped > 0 {
				q.log.Warn().Err(dropErr).Int("removes", dropped).Bytes("function", dropOp.rec.Function).Bytes("unique", dropOp.rec.Unique).
					Msg("persistent queue: removes failed; those jobs will be replayed at the next start")
			}
			q.recycle(batch)
			if err != nil && b.transient(err) && !closing {
				break // wait for new work or the retry timer
			}
		}
		if closing {
			q.mu.Lock()
			empty := len(q.ops) == 0
			q.mu.Unlock()
			if empty && len(carry) == 0 {
				return
			}
			q.signal()
		}
	}
}

// close stops new work, lets the writer write everything queued and waits
// for it.
func (q *netQueue) close() error {
	q.mu.Lock()
	already := q.closing
	q.closing = true
	q.mu.Unlock()
	q.signal()
	<-q.exited
	if already {
		return nil
	}
	return q.closeErr
}

// latestOps picks, for the SQL stores, the op of each (function, unique)
// that has an effect: the last one of the batch, which is what running
// them one by one in call order would leave. A DELETE and an INSERT of
// what it picks then touch distinct keys.
type latestOps struct {
	last map[string]int // key → index of its last op in the batch
	kbuf []byte
}

// each calls fn for the last op of each key in ops, in call order.
func (l *latestOps) each(ops []netOp, fn func(op *netOp)) {
	if l.last == nil {
		l.last = map[string]int{}
	}
	clear(l.last)
	for i := range ops {
		l.last[string(l.key(&ops[i]))] = i
	}
	for i := range ops {
		if l.last[string(l.key(&ops[i]))] == i {
			fn(&ops[i])
		}
	}
}

// key gives op's (function, unique) as one byte string, in a buffer that
// the next call reuses.
func (l *latestOps) key(op *netOp) []byte {
	l.kbuf = binary.AppendUvarint(l.kbuf[:0], uint64(len(op.rec.Function)))
	l.kbuf = append(append(l.kbuf, op.rec.Function...), op.rec.Unique...)
	return l.kbuf
}

// sqlRecordErr checks r against a table of gearmand's columns, whose
// function_name and unique_key hold at most maxFunction and maxUnique
// bytes and whose when_to_run is an INTEGER; store names the store in the
// error.
func sqlRecordErr(store string, r engine.Record, maxFunction, maxUnique int) error {
	switch {
	case len(r.Function) > maxFunction:
		return fmt.Errorf("%s queue: function name is %d bytes, more than the %d of column function_name", store, len(r.Function), maxFunction)
	case len(r.Unique) > maxUnique:
		return fmt.Errorf("%s queue: unique is %d bytes, more than the %d of column unique_key", store, len(r.Unique), maxUnique)
	case r.When < math.MinInt32 || r.When > math.MaxInt32:
		return fmt.Errorf("%s queue: run-at time %d does not fit column when_to_run (INTEGER)", store, r.When)
	}
	return nil
}

// sqlValidTable accepts table or schema.table (MySQL: db.table), each an
// unquoted identifier of at most 63 characters: a name the SQL stores put
// into their statements as it is, as gearmand does.
func sqlValidTable(s string) bool {
	parts := strings.Split(s, ".")
	if len(parts) > 2 {
		return false
	}
	for _, p := range parts {
		if p == "" || len(p) > 63 || p[0] >= '0' && p[0] <= '9' {
			return false
		}
		for i := 0; i < len(p); i++ {
			c := p[i]
			if !(c == '_' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9') {
				return false
			}
		}
	}
	return true
}
