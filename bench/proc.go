package bench

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strconv"
	"time"
)

// ProcSample is a local process's resource use at one moment, read from
// /proc (Linux only; elsewhere SampleProc fails).
type ProcSample struct {
	CPU time.Duration // user + system time (utime + stime), all threads
	RSS int64         // resident set size in bytes (VmRSS)
	At  time.Time     // when the sample was taken
}

// procUserHZ is the unit of utime and stime in /proc/PID/stat: USER_HZ,
// what `getconf CLK_TCK` prints. The kernel fixes USER_HZ at 100 for every
// mainstream architecture regardless of its internal HZ, and sysconf would
// need cgo, so a constant suffices. CPU figures are thus 10 ms granular:
// sample over intervals long enough for that not to matter.
const procUserHZ = 100

// SampleProc reads pid's CPU time from /proc/PID/stat and its VmRSS from
// /proc/PID/status. A process without VmRSS (a zombie, a kernel thread)
// reports RSS 0. The error wraps fs.ErrNotExist when there is no such process.
func SampleProc(pid int) (ProcSample, error) {
	if pid <= 0 {
		return ProcSample{}, fmt.Errorf("bench: sample process: invalid pid %d", pid)
	}
	s := ProcSample{At: time.Now()}
	dir := "/proc/" + strconv.Itoa(pid)
	stat, err := os.ReadFile(dir + "/stat")
	if err != nil {
		return ProcSample{}, fmt.Errorf("bench: sample process %d: %w", pid, err)
	}
	utime, stime, err := parseProcStat(stat)
	if err != nil {
		return ProcSample{}, fmt.Errorf("bench: sample process %d: %w", pid, err)
	}
	s.CPU = time.Duration(utime+stime) * (time.Second / procUserHZ) // exact: 100 divides 1e9
	status, err := os.ReadFile(dir + "/status")
	if err != nil {
		return ProcSample{}, fmt.Errorf("bench: sample process %d: %w", pid, err)
	}
	if s.RSS, err = parseProcStatusRSS(status); err != nil {
		return ProcSample{}, fmt.Errorf("bench: sample process %d: %w", pid, err)
	}
	return s, nil
}

// Sub returns the change from b to a: CPU used and RSS growth (negative if
// it shrank) over the interval. At stays a's, the end of the interval; the
// interval itself is a.At.Sub(b.At).
func (a ProcSample) Sub(b ProcSample) ProcSample {
	return ProcSample{CPU: a.CPU - b.CPU, RSS: a.RSS - b.RSS, At: a.At}
}

// parseProcStat returns utime and stime, in clock ticks, from the contents
// of /proc/PID/stat. The command name (field 2) is in parentheses and may
// itself hold spaces and ')', but nothing after it can hold ')', so the
// fields are counted from the last ')'.
func parseProcStat(b []byte) (utime, stime uint64, err error) {
	end := bytes.LastIndexByte(b, ')')
	if end < 0 {
		return 0, 0, errors.New("malformed /proc stat: no ')' after the command name")
	}
	// After the name: state (field 3), ppid, ..., utime (14), stime (15).
	f := bytes.Fields(b[end+1:])
	const utimeAt, stimeAt = 14 - 3, 15 - 3
	if len(f) <= stimeAt {
		return 0, 0, fmt.Errorf("malformed /proc stat: %d fields after the command name", len(f))
	}
	if utime, err = strconv.ParseUint(string(f[utimeAt]), 10, 64); err != nil {
		return 0, 0, fmt.Errorf("malformed /proc stat utime: %w", err)
	}
	if stime, err = strconv.ParseUint(string(f[stimeAt]), 10, 64); err != nil {
		return 0, 0, fmt.Errorf("malformed /proc stat stime: %w", err)
	}
	return utime, stime, nil
}

// parseProcStatusRSS returns VmRSS in bytes from the contents of
// /proc/PID/status ("VmRSS:   1234 kB"), 0 when the line is absent.
func parseProcStatusRSS(b []byte) (int64, error) {
	for line := range bytes.SplitSeq(b, []byte{'\n'}) {
		rest, ok := bytes.CutPrefix(line, []byte("VmRSS:"))
		if !ok {
			continue
		}
		f := bytes.Fields(rest)
		if len(f) != 2 || string(f[1]) != "kB" {
			return 0, fmt.Errorf("malformed /proc status VmRSS line %q", line)
		}
		kb, err := strconv.ParseInt(string(f[0]), 10, 64)
		if err != nil {
			return 0, fmt.Errorf("malformed /proc status VmRSS: %w", err)
		}
		return kb << 10, nil
	}
	return 0, nil
}
