package engine

import (
	"bytes"
	"testing"
)

// An account counts only what passes the allowance; an increase that
// would pass the budget is refused whole, a decrease always gives back.
func TestBufferAccount(t *testing.T) {
	cut := 0
	b := NewBufferBudget(1000, func() { cut++ })
	var x, y BufferAccount
	x.Bind(b)
	y.Bind(b)
	check := func(what string, ok, wantOK bool, used int64) {
		t.Helper()
		if ok != wantOK || b.Used() != used {
			t.Fatalf("%s: ok %v used %d, want %v %d", what, ok, b.Used(), wantOK, used)
		}
	}
	check("under the allowance", x.Set(BufferAllowance), true, 0)
	check("past it", x.Set(BufferAllowance+600), true, 600)
	check("the other, within the budget", y.Set(BufferAllowance+400), true, 1000)
	check("the other, past the budget", y.Set(BufferAllowance+401), false, 1000)
	if y.Counted() != 400 {
		t.Fatalf("refused increase charged: %d", y.Counted())
	}
	check("a decrease", x.Set(BufferAllowance+100), true, 500)
	check("now it fits", y.Set(BufferAllowance+900), true, 1000)
	check("all back", x.Set(0), true, 900)
	check("all back", y.Set(3), true, 0)
	y.Cutoff()
	if b.Cutoffs() != 1 || cut != 1 {
		t.Fatalf("cutoffs %d, hook %d", b.Cutoffs(), cut)
	}

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
	s1.SetBufferBudget(b)
	s2.SetBufferBudget(b)
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
