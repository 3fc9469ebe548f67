package bench

import (
	"errors"
	"io/fs"
	"os"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"
)

func skipUnlessProc(t *testing.T) {
	t.Helper()
	if runtime.GOOS != "linux" {
		t.Skip("/proc is Linux's")
	}
}

func TestSampleProcSelf(t *testing.T) {
	skipUnlessProc(t)
	before, err := SampleProc(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if before.RSS <= 0 {
		t.Fatalf("RSS %d, want > 0", before.RSS)
	}
	// Burn CPU until the kernel's 10 ms ticks show it; a loaded machine
	// only makes this take longer.
	var after ProcSample
	x := uint64(1)
	deadline := time.Now().Add(20 * time.Second)
	for {
		for i := 0; i < 1e6; i++ {
			x = x*6364136223846793005 + 1442695040888963407
		}
		if after, err = SampleProc(os.Getpid()); err != nil {
			t.Fatal(err)
		}
		if after.CPU-before.CPU >= 50*time.Millisecond {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("CPU went from %v to %v after 20s of burning (x=%d)", before.CPU, after.CPU, x)
		}
	}
	d := after.Sub(before)
	if d.CPU < 50*time.Millisecond || d.CPU%(10*time.Millisecond) != 0 {
		t.Fatalf("CPU delta %v, want >= 50ms in whole 10ms ticks", d.CPU)
	}
	if !d.At.Equal(after.At) || !after.At.After(before.At) {
		t.Fatalf("At: delta %v, before %v, after %v", d.At, before.At, after.At)
	}
	if d.RSS != after.RSS-before.RSS {
		t.Fatalf("RSS delta %d, want %d", d.RSS, after.RSS-before.RSS)
	}
}

func TestSampleProcMissing(t *testing.T) {
	skipUnlessProc(t)
	// No pid exceeds pid_max.
	pid := 1 << 22 // the kernel's upper limit for pid_max
	if b, err := os.ReadFile("/proc/sys/kernel/pid_max"); err == nil {
		if n, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil {
			pid = n + 1
		}
	}
	if _, err := SampleProc(pid); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("pid %d: err %v, want fs.ErrNotExist", pid, err)
	}
	for _, pid := range []int{0, -1} {
		if _, err := SampleProc(pid); err == nil {
			t.Fatalf("pid %d: no error", pid)
		}
	}
}

func TestParseProcStat(t *testing.T) {
	// Command names with spaces, ')' and things that look like fields;
	// utime is 4242 and stime 17 in each.
	const rest = " R 1 1234 1234 0 -1 4194560 100 0 0 0 4242 17 0 0 20 0 3 0 555 1000000 250 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 17 2 0 0 0 0 0\n"
	for _, comm := range []string{"(gearmand)", "((a b) c))", "(x) 1 2 3 4 5 6)", "()"} {
		u, s, err := parseProcStat([]byte("1234 " + comm + rest))
		if err != nil || u != 4242 || s != 17 {
			t.Errorf("comm %s: got utime %d stime %d err %v, want 4242 17", comm, u, s, err)
		}
	}
	for _, bad := range []string{
		"",
		"1234 (noclose R 1 2 3",
		"1234 (x) R 1 2 3",
		"1234 (x) R 1 1234 1234 0 -1 4194560 100 0 0 0 abc 17 0",
		"1234 (x) R 1 1234 1234 0 -1 4194560 100 0 0 0 1 -2 0",
	} {
		if _, _, err := parseProcStat([]byte(bad)); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
}

func TestParseProcStatusRSS(t *testing.T) {
	status := "Name:\tgearmand\nVmPeak:\t  999 kB\nVmRSS:\t    1536 kB\nRssAnon:\t 1000 kB\n"
	if rss, err := parseProcStatusRSS([]byte(status)); err != nil || rss != 1536*1024 {
		t.Fatalf("got %d %v, want %d", rss, err, 1536*1024)
	}
	if rss, err := parseProcStatusRSS([]byte("Name:\tkthreadd\nState:\tS (sleeping)\n")); err != nil || rss != 0 {
		t.Fatalf("no VmRSS line: got %d %v, want 0", rss, err)
	}
	for _, bad := range []string{"VmRSS:\t12 MB\n", "VmRSS:\tx kB\n", "VmRSS:\n"} {
		if _, err := parseProcStatusRSS([]byte(bad)); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
}
