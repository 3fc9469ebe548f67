package engine

import "sync/atomic"

// BufferAllowance is what one connection may hold in each direction — its
// output waiting for the socket, the input of a packet still arriving —
// without it counting toward the server's BufferBudget. Almost every
// connection stays under it, and then pays one comparison per update and
// no atomic operation.
const BufferAllowance = 64 << 10

// BufferBudget bounds what all connections together hold in their buffers
// beyond their allowances (--max-buffered-bytes). Every connection has an
// account for its output and one for its input; both charge the same
// total.
type BufferBudget struct {
	max     int64
	used    atomic.Int64
	cutoffs atomic.Uint64
	// onCutoff runs after each cut-off is counted (the network layer logs,
	// at most once a second); it may run under an outbox lock, so it must
	// not take one.
	onCutoff func()
}

// NewBufferBudget makes a budget of max bytes; onCutoff, if not nil, is
// called each time a connection is cut off for it. A max of 0 or less
// means no budget (nil).
func NewBufferBudget(max int64, onCutoff func()) *BufferBudget {
	if max <= 0 {
		return nil
	}
	return &BufferBudget{max: max, onCutoff: onCutoff}
}

// Used is the total counted now (bytes beyond the allowances).
func (b *BufferBudget) Used() int64 {
	if b == nil {
		return 0
	}
	return b.used.Load()
}

// Max is the budget's size; 0 for no budget.
func (b *BufferBudget) Max() int64 {
	if b == nil {
		return 0
	}
	return b.max
}

// Cutoffs is how many connections were cut off for the budget.
func (b *BufferBudget) Cutoffs() uint64 {
	if b == nil {
		return 0
	}
	return b.cutoffs.Load()
}

// BufferAccount is one connection's share of a BufferBudget in one
// direction. It is not safe for concurrent use: its owner serializes the
// calls (the outbox lock, the connection's event loop or reader).
type BufferAccount struct {
	b       *BufferBudget // nil: nothing is counted
	counted int64         // max(0, held - BufferAllowance) as last charged
}

// Bind makes the account charge b; before its first use.
func (a *BufferAccount) Bind(b *BufferBudget) { a.b = b }

// Set records that the connection now holds held bytes in this direction.
// It returns false, charging nothing, when the increase would take the
// budget's total past its maximum: the caller cuts the connection off (and
// calls Cutoff once). A decrease always succeeds; Set(0) gives everything
// back. Under the allowance before and after, Set is one comparison.
func (a *BufferAccount) Set(held int) bool {
	if held <= BufferAllowance && a.counted == 0 {
		return true
	}
	return a.set(int64(held) - BufferAllowance)
}

func (a *BufferAccount) set(want int64) bool {
	want = max(want, 0)
	delta := want - a.counted
	if delta == 0 || a.b == nil {
		return true
	}
	if delta < 0 {
		a.b.used.Add(delta)
		a.counted = want
		return true
	}
	// The connection whose increase crosses the line is the one refused:
	// simple and O(1), and the connections that hog the budget are the
	// ones that keep growing, so they are the ones that meet it. A CAS,
	// not add-then-undo, so that a refused increase never makes another
	// connection's fail too.
	for {
		used := a.b.used.Load()
		if used+delta > a.b.max {
			return false
		}
		if a.b.used.CompareAndSwap(used, used+delta) {
			a.counted = want
			return true
		}
	}
}

// Bound reports whether the account charges a budget.
func (a *BufferAccount) Bound() bool { return a.b != nil }

// Counted is what the account holds against the budget now.
func (a *BufferAccount) Counted() int64 { return a.counted }

// Cutoff counts a connection cut off because Set refused it.
func (a *BufferAccount) Cutoff() {
	if a.b == nil {
		return
	}
	a.b.cutoffs.Add(1)
	if a.b.onCutoff != nil {
		a.b.onCutoff()
	}
}
