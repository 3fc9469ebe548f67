package netio

import (
	"time"

	"gearshard/engine"
	"gearshard/wire"
)

// The buffer budget (--max-buffered-bytes). Each connection of the Gearman
// port may hold engine.BufferAllowance of output waiting for its reader
// and as much of a packet still arriving without counting; beyond that,
// what all of them hold shares one budget. A connection whose growth would
// take the total past it is cut off, unless another connection holds more:
// then that one goes instead (engine.BufferAccount.Set). The input side
// gets errBudget and a close, the output side the same cut-off as its own
// output limit.
// Whatever a connection counted is given back as its buffers drain, and
// all of it when it closes. An HTTP request counts its workload while it
// arrives and its result while it is collected (ServeHTTP); it is never
// evicted (it has a time limit of its own), and past the budget gets 503.

// errBudget is what a connection whose packet in arrival would pass the
// buffer budget is sent before the close: the code of an oversized packet,
// which is what it is to this server now.
var errBudget = &wire.ProtocolError{Code: "ARGUMENT_TOO_LARGE", Text: "Server buffer budget exceeded (--max-buffered-bytes)"}

// cutInput queues the ERROR for a connection whose input the budget
// refused, counts the cut-off and logs it; the caller flushes and closes.
func (s *Server) cutInput(t *engine.Turn, sess *engine.Session, acct *engine.BufferAccount) {
	acct.Cutoff()
	t.SendProtocolError(sess, errBudget)
	s.log.Info().Str("peer", sess.Addr).Uint64("conn", sess.ID).Msg("buffer budget exceeded by a packet in arrival, closing connection")
}

// evict is the buffer budget's cut-off of a connection holding the most
// when another needs room; any goroutine, under an outbox lock too. The
// owner loop does the cutting (cutEvicted).
func (cn *conn) evict() {
	cn.evicted.Store(true)
	cn.loop.post(cn.sess)
}

// cutEvicted cuts off a connection the buffer budget evicted: a packet in
// arrival gets errBudget first, as when its own growth is refused; output
// no reader takes is dropped with the connection. Event-loop only.
func (s *Server) cutEvicted(cn *conn) {
	if cn.closed {
		return
	}
	l := cn.loop
	if cn.in.Evicted() {
		l.turn.SendProtocolError(cn.sess, errBudget)
		s.flush(l)
	}
	s.logEvicted(cn.sess)
	_ = cn.c.Close()
}

// logEvicted logs the cut-off of a connection the buffer budget evicted.
func (s *Server) logEvicted(sess *engine.Session) {
	s.log.Info().Str("peer", sess.Addr).Uint64("conn", sess.ID).
		Msg("buffer budget spent while this connection held the most, closing it")
}

// budgetCutoff logs budget cut-offs, one line a second at most: a flood
// must not turn into a log flood. It may run under an outbox lock.
func (s *Server) budgetCutoff() {
	now := time.Now().UnixNano()
	if last := s.cutoffLogged.Load(); now-last >= int64(time.Second) && s.cutoffLogged.CompareAndSwap(last, now) {
		s.log.Warn().Int64("buffered", s.budget.Used()).Int64("limit", s.budget.Max()).Uint64("cutoffs", s.budget.Cutoffs()).
			Msg("connection cut off: the buffer budget is spent (--max-buffered-bytes); the connection holding the most goes")
	}
}

// BufferedBytes is what connections hold in buffers beyond their
// allowances, counted against --max-buffered-bytes (0 without a budget).
func (s *Server) BufferedBytes() int64 { return s.budget.Used() }

// BufferCutoffs is the number of connections cut off because the buffer
// budget was spent.
func (s *Server) BufferCutoffs() uint64 { return s.budget.Cutoffs() }
