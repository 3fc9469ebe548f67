package engine

import (
	"sync"
	"sync/atomic"
)

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

	mu      sync.Mutex
	holders map[*BufferAccount]struct{} // the accounts counting more than 0
}

// NewBufferBudget makes a budget of max bytes; onCutoff, if not nil, is
// called each time a connection is cut off for it. A max of 0 or less
// means no budget (nil).
func NewBufferBudget(max int64, onCutoff func()) *BufferBudget {
	if max <= 0 {
		return nil
	}
	return &BufferBudget{max: max, onCutoff: onCutoff, holders: map[*BufferAccount]struct{}{}}
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

func (b *BufferBudget) countCutoff() {
	b.cutoffs.Add(1)
	if b.onCutoff != nil {
		b.onCutoff()
	}
}

// BufferAccount is one connection's share of a BufferBudget in one
// direction. Its owner serializes Set and Cutoff (the outbox lock, the
// connection's event loop or reader); another connection's Set may evict
// it meanwhile, which mu orders.
type BufferAccount struct {
	b   *BufferBudget // nil: nothing is counted
	cut func()        // closes the connection from any goroutine; nil: never evicted

	mu      sync.Mutex
	counted atomic.Int64 // max(0, held - BufferAllowance) as last charged; written under mu
	out     bool         // cut off (refused or evicted): counts nothing, takes no more; under mu
	evicted bool         // out for another connection's growth, its cut-off counted then; under mu
}

// Bind makes the account charge b, before its first use. cut, if not nil,
// lets the budget cut the connection off when it holds the most and
// another needs room (see Set); it must not block, and may run under
// another connection's outbox lock.
func (a *BufferAccount) Bind(b *BufferBudget, cut func()) { a.b, a.cut = b, cut }

// Set records that the connection now holds held bytes in this direction.
// It returns false when the increase does not fit: the connection is cut
// off (the caller closes it and calls Cutoff once). A decrease always
// succeeds; Set(0) gives everything back. Under the allowance before and
// after, Set is one comparison.
//
// Who goes when the budget is spent: the connection holding the most. An
// increase that would cross the line evicts the largest other holder, if
// it holds more than this account would, and is then charged in the room
// that frees; otherwise the growing connection is the largest and is
// refused. So connections that park just under the line cannot make an
// honest one that grows later the one cut off. An account cut off either
// way gives back what it counted at once, since its connection is on its
// way out, and takes nothing more: a connection closing is never the
// reason another is cut off.
func (a *BufferAccount) Set(held int) bool {
	if held <= BufferAllowance && a.counted.Load() == 0 {
		return true
	}
	return a.set(int64(held) - BufferAllowance)
}

func (a *BufferAccount) set(want int64) bool {
	want = max(want, 0)
	if a.b == nil {
		return true
	}
	// Each eviction frees more than the increase, but other connections
	// may take that room first: a few tries, then this one goes.
	for range 4 {
		if ok, out := a.tryCharge(want); ok || out {
			return ok
		}
		victim := a.b.largestHolderOver(a, want)
		if victim == nil {
			break
		}
		victim.evict()
	}
	a.mu.Lock()
	a.leave()
	a.mu.Unlock()
	return false
}

// tryCharge charges the change to want if it fits (a decrease always
// does), and reports whether a is cut off. A CAS, not add-then-undo, so
// that a refused increase never makes another connection's fail too.
func (a *BufferAccount) tryCharge(want int64) (ok, out bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.out {
		return want == 0, true
	}
	was := a.counted.Load()
	delta := want - was
	for {
		used := a.b.used.Load()
		if delta > 0 && used+delta > a.b.max {
			return false, false
		}
		if a.b.used.CompareAndSwap(used, used+delta) {
			break
		}
	}
	a.counted.Store(want)
	if (was == 0) != (want == 0) {
		a.b.mu.Lock()
		if want == 0 {
			delete(a.b.holders, a)
		} else {
			a.b.holders[a] = struct{}{}
		}
		a.b.mu.Unlock()
	}
	return true, false
}

// leave cuts the account off: it gives back what it counted and stops
// being a holder. Caller holds a.mu.
func (a *BufferAccount) leave() {
	if a.out {
		return
	}
	a.out = true
	a.b.used.Add(-a.counted.Swap(0))
	a.b.mu.Lock()
	delete(a.b.holders, a)
	a.b.mu.Unlock()
}

// largestHolderOver is the evictable account, other than a, that counts
// the most, if that is more than want; nil if there is none.
func (b *BufferBudget) largestHolderOver(a *BufferAccount, want int64) *BufferAccount {
	b.mu.Lock()
	defer b.mu.Unlock()
	var victim *BufferAccount
	most := want
	for h := range b.holders {
		if n := h.counted.Load(); h != a && h.cut != nil && n > most {
			victim, most = h, n
		}
	}
	return victim
}

// evict cuts a off for another connection's growth: it gives back what it
// counted, the cut-off is counted, and its connection is cut off. Nothing
// happens if a was cut off already.
func (a *BufferAccount) evict() {
	a.mu.Lock()
	if a.out {
		a.mu.Unlock()
		return
	}
	a.leave()
	a.evicted = true
	a.mu.Unlock()
	a.b.countCutoff()
	a.cut()
}

// Bound reports whether the account charges a budget.
func (a *BufferAccount) Bound() bool { return a.b != nil }

// Counted is what the account holds against the budget now.
func (a *BufferAccount) Counted() int64 { return a.counted.Load() }

// Evicted reports whether the budget cut this connection off to make room
// for another (it has been counted, and cut called).
func (a *BufferAccount) Evicted() bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.evicted
}

// Cutoff counts a connection cut off because Set refused it (once: an
// evicted account was counted when it was evicted).
func (a *BufferAccount) Cutoff() {
	if a.b == nil || a.Evicted() {
		return
	}
	a.b.countCutoff()
}
