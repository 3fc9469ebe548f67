package engine

import (
	"bytes"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
)

// An account counts only what passes the allowance; an increase that
// would pass the budget is refused whole, a decrease always gives back.
func TestBufferAccount(t *testing.T) {
	cut := 0
	b := NewBufferBudget(1000, func() { cut++ })
	var x, y BufferAccount
	x.Bind(b, nil) // not evictable: the growing one is refused
	y.Bind(b, nil)
	check := func(what string, ok, wantOK bool, used int64) {
		t.Helper()
		if ok != wantOK || b.Used() != used {
			t.Fatalf("%s: ok %v used %d, want %v %d", what, ok, b.Used(), wantOK, used)
		}
	}
	check("under the allowance", x.Set(BufferAllowance), true, 0)
	check("past it", x.Set(BufferAllowance+600), true, 600)
	check("the other, within the budget", y.Set(BufferAllowance+400), true, 1000)
	check("a decrease", x.Set(BufferAllowance+100), true, 500)
	check("the other grows into the room", y.Set(BufferAllowance+900), true, 1000)
	// Refused, y is cut off: what it counted comes back at once (it is
	// closing), and it takes nothing more, though there is room again.
	check("the other, past the budget", y.Set(BufferAllowance+901), false, 100)
	if y.Counted() != 0 {
		t.Fatalf("a refused account still counts %d", y.Counted())
	}
	check("a refused account takes no more", y.Set(BufferAllowance+1), false, 100)
	check("but may give back", y.Set(0), true, 100)
	y.Cutoff()
	if b.Cutoffs() != 1 || cut != 1 {
		t.Fatalf("cutoffs %d, hook %d", b.Cutoffs(), cut)
	}
	check("all back", x.Set(3), true, 0)

	var free BufferAccount // no budget: nothing counted, nothing refused
	check("unbound", free.Set(1<<40), true, 0)
	if NewBufferBudget(0, nil) != nil || (*BufferBudget)(nil).Used() != 0 {
		t.Fatal("a budget of 0 is not none")
	}
}

// Output past the allowance is charged as it is queued and given back as
// it is written; the session whose output would pass the budget is marked
// over (for the budget, not its own limit) and gives all back when it
// disconnects.
func TestOutputBufferBudget(t *testing.T) {
	e := newTestEngine(t, 1, nil)
	b := NewBufferBudget(1<<20, nil)
	s1 := e.NewSession(1, "127.0.0.1", nil)
	s2 := e.NewSession(2, "127.0.0.1", nil)
	s1.SetBufferBudget(b, nil)
	s2.SetBufferBudget(b, nil)
	var tr Turn
	big := bytes.Repeat([]byte("o"), 700<<10)
	tr.SendRaw(s1, big)
	if want := int64(len(big) - BufferAllowance); b.Used() != want || s1.OutputOver() {
		t.Fatalf("after 700 KiB: used %d (want %d), over %v", b.Used(), want, s1.OutputOver())
	}
	// Half written, half handed on to the network layer: still counted.
	s1.WriteOutput(func(p []byte) int { s1.HandOff(len(p) / 2); return len(p) })
	if want := int64(len(big)/2 - BufferAllowance); b.Used() != want {
		t.Fatalf("after half was written: used %d, want %d", b.Used(), want)
	}
	if s1.SetDownstream(0) || b.Used() != 0 {
		t.Fatalf("after the rest drained: used %d", b.Used())
	}
	tr.SendRaw(s1, big)
	tr.SendRaw(s2, big)
	if !s2.OutputOver() || !s2.OverBudget() || s1.OutputOver() {
		t.Fatalf("the session crossing the budget: over %v (for it %v); the other over %v", s2.OutputOver(), s2.OverBudget(), s1.OutputOver())
	}
	if b.Cutoffs() != 1 {
		t.Fatalf("cutoffs %d", b.Cutoffs())
	}
	tr.SendRaw(s2, big) // more for a session already cut off: no second cut-off
	if b.Cutoffs() != 1 {
		t.Fatalf("cutoffs %d after more output for a cut-off session", b.Cutoffs())
	}
	e.Disconnect(&tr, s2)
	e.Disconnect(&tr, s1)
	s1.SetDownstream(5 << 20) // late reports from the network layer count nothing
	if b.Used() != 0 {
		t.Fatalf("after both left: used %d", b.Used())
	}
}

// When the budget is spent, the connection holding the most goes: an
// increase that does not fit evicts the largest other holder if it holds
// more than the growing one would, and is charged in the room that frees;
// otherwise the growing one is refused. An evicted account counts nothing
// more and refuses any increase, and its cut-off is counted once.
func TestBufferBudgetEvictsLargestHolder(t *testing.T) {
	b := NewBufferBudget(1000, nil)
	cuts := map[string]int{}
	account := func(name string) *BufferAccount {
		a := new(BufferAccount)
		a.Bind(b, func() { cuts[name]++ })
		return a
	}
	big, mid, grower := account("big"), account("mid"), account("grower")
	set := func(a *BufferAccount, n int) bool { return a.Set(BufferAllowance + n) }
	if !set(big, 600) || !set(mid, 300) {
		t.Fatal("within the budget, refused")
	}
	if !set(grower, 200) { // 1100 > 1000: big (600) holds more than 200
		t.Fatal("an increase with a larger holder to evict was refused")
	}
	if b.Used() != 500 || cuts["big"] != 1 || cuts["mid"] != 0 || b.Cutoffs() != 1 || !big.Evicted() {
		t.Fatalf("after the eviction: used %d, cuts %v, cutoffs %d", b.Used(), cuts, b.Cutoffs())
	}
	if set(big, 100) || b.Used() != 500 {
		t.Fatalf("an evicted account took more: used %d", b.Used())
	}
	big.Cutoff() // its owner noticing: counted already
	if !big.Set(0) || b.Used() != 500 || b.Cutoffs() != 1 {
		t.Fatalf("an evicted account's close: used %d, cutoffs %d", b.Used(), b.Cutoffs())
	}

	// The grower is now the largest: growing past the budget, it goes, and
	// gives back what it held (it is closing).
	if set(grower, 800) { // 1100 > 1000, and mid's 300 is not more than 800
		t.Fatal("the largest holder's increase was not refused")
	}
	if b.Used() != 300 || cuts["mid"] != 0 || cuts["grower"] != 0 || grower.Counted() != 0 {
		t.Fatalf("after the refusal: used %d, cuts %v, grower %d", b.Used(), cuts, grower.Counted())
	}
	// Accounts bound without a way to cut them off are never evicted.
	fixed, small := new(BufferAccount), account("small")
	fixed.Bind(b, nil)
	if !set(fixed, 500) || set(small, 301) || b.Used() != 800 { // only fixed holds more than 301
		t.Fatalf("an account that cannot be cut off was evicted: used %d", b.Used())
	}
	// A tie is no reason to evict: the newcomer would hold as much as mid.
	tied := account("tied")
	if set(tied, 300) || cuts["mid"] != 0 || b.Used() != 800 {
		t.Fatalf("tie: used %d, cuts %v", b.Used(), cuts)
	}
	if !mid.Set(0) || !fixed.Set(0) || b.Used() != 0 {
		t.Fatalf("all given back: used %d", b.Used())
	}

	// A connection refused is on its way out and counts nothing from then
	// on: it is never the reason another is evicted.
	b = NewBufferBudget(2000, nil)
	refused, other, next := account("refused"), account("other"), account("next")
	if !set(refused, 1100) || set(refused, 2100) || !set(other, 500) {
		t.Fatal("setting up a refused connection")
	}
	if !set(next, 1400) || cuts["refused"] != 0 || cuts["other"] != 0 || b.Cutoffs() != 0 || b.Used() != 1900 {
		t.Fatalf("with a refused connection closing: cuts %v, cutoffs %d, used %d", cuts, b.Cutoffs(), b.Used())
	}
}

// Many connections growing and shrinking at once, evicting each other:
// the budget's total never passes its maximum, each eviction is counted
// and cut once, and when all have left nothing is counted.
func TestBufferBudgetEvictionConcurrent(t *testing.T) {
	const max, accounts, parked, steps = 1 << 20, 16, 4, 2000
	var evictions atomic.Int64
	b := NewBufferBudget(max, nil)
	var peak atomic.Int64
	accts := make([]BufferAccount, accounts)
	cuts := make([]atomic.Int32, accounts)
	for i := range accts {
		accts[i].Bind(b, func() { cuts[i].Add(1); evictions.Add(1) })
		// The first four park on the whole budget, each holding more than
		// the others ask for: the first growth of another evicts one, even
		// if the goroutines happen to run one after another.
		if i < parked && !accts[i].Set(BufferAllowance+max/parked) {
			t.Fatalf("account %d: its share refused", i)
		}
	}
	var wg sync.WaitGroup
	for i := parked; i < accounts; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(i), 1))
			for range steps {
				accts[i].Set(rng.IntN(BufferAllowance + max/parked)) // less than a parked one holds
				if u := b.Used(); u > peak.Load() {
					peak.Store(u)
				}
			}
			accts[i].Set(0)
		}()
	}
	wg.Wait()
	for i := range parked {
		accts[i].Set(0)
	}
	for i := range cuts {
		if n := cuts[i].Load(); n > 1 {
			t.Errorf("account %d cut %d times", i, n)
		}
	}
	if p := peak.Load(); p > max {
		t.Fatalf("used peaked at %d, past %d", p, max)
	}
	if b.Used() != 0 || uint64(evictions.Load()) != b.Cutoffs() || evictions.Load() == 0 {
		t.Fatalf("used %d after all left; %d evictions, %d cut-offs", b.Used(), evictions.Load(), b.Cutoffs())
	}
}
