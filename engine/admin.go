package engine

import (
	"bytes"
	"cmp"
	"net"
	"runtime"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"

	"gearshard/wire"
)

// AdminConfig is what the admin commands report or call beyond the engine.
type AdminConfig struct {
	Version  string              // "version" reply
	PID      int                 // "getpid" reply
	Verbose  func() string       // current log level name, gearmand spelling
	Shutdown func(graceful bool) // "shutdown [graceful]"; nil disables it
	// Allow lists the networks besides loopback whose connections may run
	// the commands that change state (shutdown, maxqueue, cancel job,
	// create and drop function).
	Allow []*net.IPNet
}

// Admin is the coordinator: it answers the text admin commands, asking
// every shard in turn and holding each lock only to copy out its figures.
type Admin struct {
	e   *Engine
	cfg AdminConfig

	// Scratch reused by every command, so that a monitoring loop polling
	// "status" does not feed the garbage collector while millions of jobs
	// sit on the heap. Commands are rare: one at a time is plenty.
	mu     sync.Mutex
	stats  []funcStat
	merged []funcStat
	out    []byte

	listed     int         // jobs the command being run listed
	collecting atomic.Bool // a collection after a large listing is running
}

// largeListing is the number of jobs past which a listing's garbage (its
// copy of the jobs, about 100 bytes each, and its text) is collected at
// once. The server runs at GOGC=400 for its queue's sake, and under it
// listing after listing of a large queue would pile up to four times the
// queue's memory before the collector ran.
const largeListing = 100_000

// AdminAction tells the network layer what to do after a command.
type AdminAction uint8

const (
	AdminContinue AdminAction = iota
	// AdminYield: the reply was large (a listing). Commands pipelined after
	// it wait for the loop's next turn, so that a client pipelining many
	// listings holds its event loop for one at a time, not for all of them.
	AdminYield
)

// yieldAfter is the reply size, in bytes, past which a command yields.
const yieldAfter = 1 << 20

// NewAdmin binds the admin command set to an engine.
func NewAdmin(e *Engine, cfg AdminConfig) *Admin {
	if cfg.Verbose == nil {
		cfg.Verbose = func() string { return "ERROR" }
	}
	return &Admin{e: e, cfg: cfg}
}

const (
	textOK = "OK\r\n"
)

func errUnknownCommand(dst, cmd []byte) []byte {
	dst = append(dst, "ERR UNKNOWN_COMMAND Unknown+server+command"...)
	return append(append(dst, cmd...), "\r\n"...)
}

func errArgs(dst, cmd []byte) []byte {
	dst = append(dst, "ERR INVALID_ARGUMENTS An+incomplete+set+of+arguments+was+sent+to+this+command+"...)
	return append(append(dst, cmd...), "\r\n"...)
}

// Run executes one admin line from sess and queues the whole reply as one
// write (gearadmin stops reading after a 5 ms pause).
func (a *Admin) Run(t *Turn, sess *Session, line []byte) AdminAction {
	if sess != nil {
		sess.mark(kindAdmin)
	}
	var argv [5][]byte
	argc := splitAdminLine(line, argv[:])
	cmd := argv[0]
	is := func(b []byte, s string) bool { return bytes.EqualFold(b, []byte(s)) }
	a.mu.Lock()
	defer a.mu.Unlock()
	out := a.out[:0]
	defer func() {
		if cap(out) <= maxSpare {
			a.out = out[:0]
		}
	}()
	if mutating(cmd, is) && !a.allowed(sess.Addr) {
		t.SendRaw(sess, []byte("ERR PERMISSION_DENIED "+string(cmd)+"+is+not+allowed+from+this+address+(see+--admin-allow)\r\n"))
		return AdminContinue
	}
	switch {
	case is(cmd, "status"):
		out = a.status(out)
	case is(cmd, "prioritystatus"):
		out = a.priorityStatus(out)
	case is(cmd, "workers"):
		out = a.workers(out)
	case is(cmd, "jobs"):
		out = a.jobs(out)
	case is(cmd, "clients"):
		out = a.clients(out)
	case is(cmd, "version"):
		out = append(append(append(out, "OK "...), a.cfg.Version...), '\n')
	case is(cmd, "getpid"):
		out = append(strconv.AppendInt(append(out, "OK "...), int64(a.cfg.PID), 10), '\n')
	case is(cmd, "verbose"):
		out = append(append(append(out, "OK "...), a.cfg.Verbose()...), '\n')
	case is(cmd, "maxqueue"):
		if argc == 1 {
			out = errArgs(out, cmd)
			break
		}
		a.maxQueue(argv[1], argv[2:argc])
		out = append(out, textOK...)
	case is(cmd, "cancel") && argc >= 3:
		switch {
		case argc != 3 || !is(argv[1], "job"):
			out = append(out, "ERR UNKNOWN_ERROR\r\n"...)
		case a.e.CancelJob(t, argv[2]):
			out = append(out, textOK...)
		default:
			out = append(out, "ERR UNKNOWN_JOB\r\n"...)
		}
	case is(cmd, "show") && argc >= 2:
		switch {
		case argc == 3 && is(argv[1], "unique") && is(argv[2], "jobs"):
			out = a.showUniqueJobs(out)
		case argc == 2 && is(argv[1], "jobs"):
			out = a.showJobs(out)
		default:
			out = append(out, "ERR UNKNOWN_SHOW_ARGUMENTS\r\n"...)
		}
	case is(cmd, "create"):
		if argc != 3 || !is(argv[1], "function") {
			out = errArgs(out, cmd)
			break
		}
		s := a.e.shardOf(argv[2])
		s.mu.Lock()
		s.function(argv[2], true)
		s.mu.Unlock()
		out = append(out, textOK...)
	case is(cmd, "drop"):
		if argc != 3 || !is(argv[1], "function") {
			out = errArgs(out, cmd)
			break
		}
		out = a.dropFunction(t, out, argv[2])
	case is(cmd, "shutdown") && a.cfg.Shutdown != nil:
		graceful := false
		switch {
		case argc == 2 && is(argv[1], "graceful"):
			graceful = true
		case argc > 1:
			out = append(out, "ERR unknown_args Unknown+arguments+to+server+command\r\n"...)
		}
		if len(out) > 0 {
			break
		}
		t.SendRaw(sess, []byte(textOK))
		a.cfg.Shutdown(graceful)
		return AdminContinue
	default:
		out = errUnknownCommand(out, cmd)
	}
	t.SendRaw(sess, out)
	if a.listed >= largeListing {
		a.collectGarbage()
	}
	a.listed = 0
	if len(out) > yieldAfter {
		return AdminYield
	}
	return AdminContinue
}

// collectGarbage starts a collection off the event loop, unless one is
// running. Called once the listing's copy is unreachable, so that this
// collection frees it.
func (a *Admin) collectGarbage() {
	if a.collecting.CompareAndSwap(false, true) {
		go func() {
			defer a.collecting.Store(false)
			runtime.GC()
		}()
	}
}

// splitAdminLine splits a line into words as gearmand does: at each space,
// the spaces after it skipped, so that a line ending in a space has an
// empty last word ("show jobs " is three words, and gearmand refuses it);
// a word ends at a NUL, gearmand's words being C strings. Words past
// len(argv) are dropped.
func splitAdminLine(line []byte, argv [][]byte) int {
	argc := 0
	for argc < len(argv) {
		word, rest, more := bytes.Cut(line, []byte{' '})
		if i := bytes.IndexByte(word, 0); i >= 0 {
			word = word[:i]
		}
		argv[argc] = word
		argc++
		if !more {
			break
		}
		line = bytes.TrimLeft(rest, " ")
	}
	return argc
}

// mutating tells the commands that change the server's state.
func mutating(cmd []byte, is func([]byte, string) bool) bool {
	for _, c := range []string{"shutdown", "maxqueue", "cancel", "create", "drop"} {
		if is(cmd, c) {
			return true
		}
	}
	return false
}

// allowed reports whether a peer may change state: loopback, or a network
// given with --admin-allow.
func (a *Admin) allowed(addr string) bool {
	ip := net.ParseIP(addr)
	if ip == nil {
		return false
	}
	if ip.IsLoopback() {
		return true
	}
	for _, n := range a.cfg.Allow {
		if n.Contains(ip) {
			return true
		}
	}
	return false
}

// funcStat is one function's figures as copied out of its shard.
type funcStat struct {
	name string
	Gauges
}

// snapshot copies every function's gauges, one shard at a time, and
// merges the shards' name-ordered lists. Caller holds a.mu; the result is
// valid until the next call.
func (a *Admin) snapshot() []funcStat {
	all := a.stats[:0]
	var runs [][2]int // each shard's span of all, already sorted
	for _, s := range a.e.shards {
		start := len(all)
		s.mu.Lock()
		for _, f := range s.sortedFunctions() {
			all = append(all, funcStat{name: f.name, Gauges: f.gauges()})
		}
		s.mu.Unlock()
		runs = append(runs, [2]int{start, len(all)})
	}
	a.stats = all
	if len(runs) == 1 {
		return all
	}
	merged := a.merged[:0]
	for {
		best := leastRun(runs, func(i, j int) bool { return all[i].name < all[j].name })
		if best < 0 {
			break
		}
		merged = append(merged, all[runs[best][0]])
		runs[best][0]++
	}
	a.merged = merged
	return merged
}

// leastRun picks, among runs (each shard's [next, end) span of a slice
// sorted its way), the one whose next item comes first, or -1 when all are
// spent: the merge step of listings that shards hold sorted.
func leastRun(runs [][2]int, before func(i, j int) bool) int {
	best := -1
	for i, r := range runs {
		if r[0] < r[1] && (best < 0 || before(r[0], runs[best][0])) {
			best = i
		}
	}
	return best
}

func (a *Admin) status(out []byte) []byte {
	for _, f := range a.snapshot() {
		out = append(out, f.name...)
		out = appendTabInt(out, f.Total)
		out = appendTabInt(out, f.Running)
		out = appendTabInt(out, f.Workers)
		out = append(out, '\n')
	}
	return append(out, ".\n"...)
}

func (a *Admin) priorityStatus(out []byte) []byte {
	for _, f := range a.snapshot() {
		out = append(out, f.name...)
		for _, n := range f.Queued {
			out = appendTabInt(out, n)
		}
		out = appendTabInt(out, f.Workers)
		out = append(out, '\n')
	}
	return append(out, ".\n"...)
}

func appendTabInt(b []byte, n int) []byte {
	return strconv.AppendInt(append(b, '\t'), int64(n), 10)
}

// sessionsByFD lists every connection, ordered by file descriptor.
func (a *Admin) sessionsByFD() []*Session {
	a.e.sessMu.Lock()
	list := make([]*Session, 0, len(a.e.sessions))
	for _, s := range a.e.sessions {
		list = append(list, s)
	}
	a.e.sessMu.Unlock()
	slices.SortFunc(list, func(x, y *Session) int { return cmp.Compare(x.FD, y.FD) })
	return list
}

// workers prints "FD IP ID : FUNC..." for every connection, registrations
// newest first, as gearmand does. Each shard keeps a connection's
// registrations in the order they were made, so the shards' runs are
// merged from their ends, not sorted.
func (a *Admin) workers(out []byte) []byte {
	type reg struct {
		name string
		seq  uint64
	}
	var (
		regs  []reg // one connection's runs, one per shard, back to back
		start = make([]int, len(a.e.shards))
		next  = make([]int, len(a.e.shards)) // per run: one past its next to print
	)
	for _, sess := range a.sessionsByFD() {
		regs = regs[:0]
		for i, s := range a.e.shards {
			start[i] = len(regs)
			s.mu.Lock()
			for _, ab := range sess.per[i].abilities {
				regs = append(regs, reg{ab.fn.name, ab.seq})
			}
			s.mu.Unlock()
			next[i] = len(regs)
		}
		out = strconv.AppendInt(out, int64(sess.FD), 10)
		out = append(append(append(append(append(out, ' '), sess.Addr...), ' '), sess.ClientID()...), " :"...)
		for {
			newest := -1
			for i := range next {
				if next[i] > start[i] && (newest < 0 || regs[next[i]-1].seq > regs[next[newest]-1].seq) {
					newest = i
				}
			}
			if newest < 0 {
				break
			}
			next[newest]--
			out = append(append(out, ' '), regs[next[newest]].name...)
		}
		out = append(out, '\n')
	}
	return append(out, ".\n"...)
}

// maxQueue sets a function's queue limits: one value for every priority,
// or HIGH NORMAL LOW; none resets to unlimited. Negative means unlimited.
// An unknown function is left alone, as in gearmand.
func (a *Admin) maxQueue(fname []byte, vals [][]byte) {
	var max [numPriorities]int
	for p := range max {
		if p < len(vals) {
			n, _ := parseInt(vals[p])
			max[p] = max0(int(n))
		}
	}
	if len(vals) <= 1 {
		max[Normal], max[Low] = max[High], max[High]
	}
	s := a.e.shardOf(fname)
	s.mu.Lock()
	if f := s.function(fname, false); f != nil {
		f.maxQueue = max
	}
	s.mu.Unlock()
}

func max0(n int) int {
	if n < 0 {
		return 0
	}
	return n
}

// dropFunction forgets a function with no workers and no running jobs.
// Names match case-insensitively, as in gearmand.
func (a *Admin) dropFunction(t *Turn, out, name []byte) []byte {
	for _, s := range a.e.shards {
		s.mu.Lock()
		for key, f := range s.funcs {
			if !bytes.EqualFold([]byte(key), name) {
				continue
			}
			if len(f.workers) > 0 || f.running > 0 {
				s.mu.Unlock()
				return append(out, "ERR there are still connected workers or executing clients\r\n"...)
			}
			s.dropQueued(t, f)
			s.dropFunction(f)
			s.mu.Unlock()
			return append(out, textOK...)
		}
		s.mu.Unlock()
	}
	return append(out, "ERR function not found\r\n"...)
}

// dropQueued forgets the queued and delayed jobs of a function being
// dropped (gearmand leaks them); their clients are told WORK_FAIL.
func (s *shard) dropQueued(t *Turn, f *function) {
	var hb [64]byte
	s.jobs.each(func(j *Job) {
		if j.fn != f {
			return
		}
		s.forward(t, j, wire.WorkFail, s.e.appendHandle(hb[:0], j.id))
		s.detachAll(j)
		s.drop(j)
	})
}

// jobRow is one job as copied out for "show jobs" and friends.
type jobRow struct {
	id        uint64
	fn        string
	unique    []byte // in eachJob's arena, set once the arena is complete
	uniqueAt  [2]int // where in the arena
	retries   uint8
	bg        bool // persisted kind: gearmand's JOB_QUEUED column
	ignored   bool // a foreground job nobody waits for any more
	worker    *Session
	listeners []*Session
}

// eachJob calls fn for every job in handle order. Each shard's jobs are
// copied under its lock, already in number order, into one slice sized for
// all of them, their uniques into one arena: a listing of a million jobs
// holds each shard for the copy alone, allocates little, and needs no sort,
// only a merge of the shards' runs.
func (a *Admin) eachJob(fn func(r *jobRow)) {
	total := 0
	for _, s := range a.e.shards {
		s.mu.Lock()
		total += s.jobs.len()
		s.mu.Unlock()
	}
	total += total / 16 // jobs submitted meanwhile
	rows := make([]jobRow, 0, total)
	var arena []byte
	runs := make([][2]int, 0, len(a.e.shards))
	for _, s := range a.e.shards {
		s.mu.Lock()
		start := len(rows)
		s.jobs.each(func(j *Job) {
			r := jobRow{id: j.id, fn: j.fn.name, retries: j.retries, worker: j.worker,
				bg: j.background, ignored: !j.background && !j.hasListeners(),
				uniqueAt: [2]int{len(arena), len(arena) + len(j.unique())}}
			s.forEachListener(j, func(c *Session) { r.listeners = append(r.listeners, c) })
			rows = append(rows, r)
			arena = append(arena, j.unique()...)
		})
		s.mu.Unlock()
		runs = append(runs, [2]int{start, len(rows)})
	}
	a.listed = len(rows)
	for {
		best := leastRun(runs, func(i, j int) bool { return rows[i].id < rows[j].id })
		if best < 0 {
			return
		}
		k := runs[best][0]
		runs[best][0]++
		r := &rows[k]
		r.unique = arena[r.uniqueAt[0]:r.uniqueAt[1]]
		fn(r)
	}
}

// showJobs prints "HANDLE\tRETRIES\tIGNORE_JOB\tJOB_QUEUED" per job;
// gearmand marks background jobs queued (handed to the queue module).
func (a *Admin) showJobs(out []byte) []byte {
	a.eachJob(func(r *jobRow) {
		out = a.e.appendHandle(out, r.id)
		out = appendTabInt(out, int(r.retries))
		out = appendTabInt(out, b2i(r.ignored))
		out = appendTabInt(out, b2i(r.bg))
		out = append(out, '\n')
	})
	return append(out, ".\n"...)
}

func (a *Admin) showUniqueJobs(out []byte) []byte {
	a.eachJob(func(r *jobRow) { out = append(append(out, r.unique...), '\n') })
	return append(out, ".\n"...)
}

// jobs prints the Perl server's "FUNC\tUNIQ\tWORKER\tLISTENERS" lines.
func (a *Admin) jobs(out []byte) []byte {
	a.eachJob(func(r *jobRow) {
		out = append(append(append(append(out, r.fn...), '\t'), r.unique...), '\t')
		out = appendPeer(out, r.worker)
		out = appendTabInt(out, len(r.listeners))
		out = append(out, '\n')
	})
	return append(out, ".\n"...)
}

// clients prints, as the Perl server does, each connection followed by the
// jobs it waits on.
func (a *Admin) clients(out []byte) []byte {
	waits := make(map[*Session][]jobRow)
	a.eachJob(func(r *jobRow) {
		for _, c := range r.listeners {
			waits[c] = append(waits[c], *r)
		}
	})
	for _, sess := range a.sessionsByFD() {
		out = append(appendPeer(out, sess), '\n')
		for _, r := range waits[sess] {
			out = append(append(append(append(append(out, '\t'), r.fn...), '\t'), r.unique...), '\t')
			out = append(appendPeer(out, r.worker), '\n')
		}
	}
	return append(out, ".\n"...)
}

func appendPeer(b []byte, s *Session) []byte {
	if s == nil {
		return append(b, '-')
	}
	return append(b, s.Addr...)
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}
