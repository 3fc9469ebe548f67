package main

import "testing"

// The server's collector defaults apply only where the user set nothing:
// GOGC and GOMEMLIMIT, read by Go's runtime itself, win.
func TestGCDefaultsYieldToEnvironment(t *testing.T) {
	t.Setenv("GOGC", "")
	t.Setenv("GOMEMLIMIT", "")
	p := startProcess(t)
	if p.gcPercent != defaultGCPercent {
		t.Errorf("gc_percent = %d, want the default %d", p.gcPercent, defaultGCPercent)
	}
	if total := physicalMemory(); p.memoryLimit <= 0 || p.memoryLimit > total {
		t.Errorf("memory_limit = %d, want a limit within the machine's %d bytes", p.memoryLimit, total)
	}

	t.Setenv("GOGC", "150")
	t.Setenv("GOMEMLIMIT", "1GiB")
	p = startProcess(t)
	if p.gcPercent != 150 || p.memoryLimit != 1<<30 {
		t.Errorf("with GOGC=150 GOMEMLIMIT=1GiB: gc_percent = %d, memory_limit = %d", p.gcPercent, p.memoryLimit)
	}

	t.Setenv("GOGC", "off")
	t.Setenv("GOMEMLIMIT", "")
	if p = startProcess(t); p.gcPercent != -1 {
		t.Errorf("with GOGC=off: gc_percent = %d, want -1", p.gcPercent)
	}
}
