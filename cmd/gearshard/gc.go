package main

import (
	"bytes"
	"math"
	"os"
	"runtime/debug"
	"strconv"
)

// defaultGCPercent replaces Go's GOGC=100. A job server's heap is mostly its
// queue, and the queue is live: while a backlog builds, a collection every
// time the heap doubles marks the whole queue and frees almost nothing
// (queueing 1M jobs takes eight). At 400 it takes two, and submissions cost
// about a fifth less server CPU (bench/limits.md); memory per queued job is
// unchanged, since there is nothing to collect. Garbage (HTTP requests,
// admin listings) may grow to four times the live heap before a collection,
// which defaultMemoryLimit caps; a listing of a large queue is collected
// right after it (engine.largeListing).
const defaultGCPercent = 400

// tuneGC applies defaultGCPercent and defaultMemoryLimit unless the user
// set GOGC or GOMEMLIMIT, and returns the settings in force (limit -1: none).
func tuneGC(getenv func(string) string) (percent int, limit int64) {
	if getenv("GOGC") == "" {
		debug.SetGCPercent(defaultGCPercent)
	}
	if getenv("GOMEMLIMIT") == "" {
		if lim := defaultMemoryLimit(); lim > 0 {
			debug.SetMemoryLimit(lim)
		}
	}
	percent = debug.SetGCPercent(-1)
	debug.SetGCPercent(percent)
	limit = debug.SetMemoryLimit(-1)
	if limit == math.MaxInt64 {
		limit = -1
	}
	return percent, limit
}

// defaultMemoryLimit is three quarters of the memory the process may use:
// the cgroup's limit, or the machine's. Near it the collector runs sooner,
// so GOGC's headroom never takes the machine; 0 when neither is known.
func defaultMemoryLimit() int64 {
	avail := physicalMemory()
	if b, err := os.ReadFile("/sys/fs/cgroup/memory.max"); err == nil {
		if n, err := strconv.ParseInt(string(bytes.TrimSpace(b)), 10, 64); err == nil && (avail == 0 || n < avail) {
			avail = n
		}
	}
	return avail / 4 * 3
}
