package engine

import (
	"bytes"
	"fmt"
	"maps"
	"math"
	"math/rand/v2"
	"net"
	"runtime"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"gearshard/wire"
)

// The tests in this file drive the engine directly, with no sockets: a
// session's output is read back from its outbox.

func newTestEngine(t testing.TB, shards int, mod func(*Options)) *Engine {
	t.Helper()
	o := Options{Shards: shards, HandlePrefix: "H:t", Log: zerolog.Nop()}
	if mod != nil {
		mod(&o)
	}
	e, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Close)
	return e
}

// names returns n function names, all routed to shard idx.
func names(e *Engine, idx, n int) []string {
	var out []string
	for i := 0; len(out) < n; i++ {
		name := "f" + strconv.Itoa(i)
		if e.ShardOf([]byte(name)) == idx {
			out = append(out, name)
		}
	}
	return out
}

// drain decodes everything queued for s.
func drain(t testing.TB, s *Session) []wire.Packet {
	t.Helper()
	buf := s.takeOutput()
	var out []wire.Packet
	for len(buf) > 0 {
		p, n, err := wire.Decode(buf, wire.DefaultMaxPacket)
		if err != nil || n == 0 {
			t.Fatalf("bad output %q: %v", buf, err)
		}
		// Copy the fields: the buffer goes back for reuse.
		for i := 0; i < p.NField; i++ {
			p.Field[i] = append([]byte(nil), p.Field[i]...)
		}
		out = append(out, p)
		buf = buf[n:]
	}
	return out
}

func types(ps []wire.Packet) []wire.Type {
	var ts []wire.Type
	for _, p := range ps {
		ts = append(ts, p.Type)
	}
	return ts
}

// clientAndWorker opens the two sessions most tests need: a client (fd 1)
// and a worker (fd 2), both from 127.0.0.1.
func clientAndWorker(e *Engine) (client, worker *Session) {
	return e.NewSession(1, "127.0.0.1", nil), e.NewSession(2, "127.0.0.1", nil)
}

func req(typ wire.Type, fields ...string) *wire.Packet {
	args := make([][]byte, len(fields))
	for i, f := range fields {
		args[i] = []byte(f)
	}
	p, _, err := wire.Decode(wire.AppendRequest(nil, typ, args...), wire.DefaultMaxPacket)
	if err != nil {
		panic(err)
	}
	return &p
}

// expectOne asserts s got exactly one packet of type typ and returns it.
func expectOne(t testing.TB, s *Session, typ wire.Type) wire.Packet {
	t.Helper()
	ps := drain(t, s)
	if len(ps) != 1 || ps[0].Type != typ {
		t.Fatalf("got %v, want one %s", types(ps), typ)
	}
	return ps[0]
}

func TestHandleRoutesToOwningShard(t *testing.T) {
	e := newTestEngine(t, 3, nil)
	var tr Turn
	c := e.NewSession(1, "127.0.0.1", nil)
	for _, fn := range []string{"a", "b", "c", "d", "e", "f"} {
		e.Handle(&tr, c, req(wire.SubmitJobBG, fn, "", "x"))
		h := expectOne(t, c, wire.JobCreated).Field[0]
		s, id, ok := e.parseHandle(h)
		if !ok || s.idx != e.ShardOf([]byte(fn)) || s.job(id) == nil {
			t.Fatalf("handle %s of %s: shard %v ok %v, want shard %d", h, fn, s, ok, e.ShardOf([]byte(fn)))
		}
	}
	for _, bad := range []string{"H:t:", "H:t:0", "H:t:01", "H:x:1", "H:t:1a", "H:t:99999999999999999999999", "H:t:18446744073709551616"} {
		if _, _, ok := e.parseHandle([]byte(bad)); ok {
			t.Errorf("parseHandle(%q) accepted", bad)
		}
	}
}

// A connection that submits one unique key twice has two tasks waiting
// (libgearman matches one result packet to each): it gets every packet
// twice, and counts as two clients, as with gearmand.
func TestSameConnectionCoalescesPerSubmission(t *testing.T) {
	e := newTestEngine(t, 1, nil)
	var tr Turn
	c, w := clientAndWorker(e)
	e.Handle(&tr, c, req(wire.SubmitJob, "f", "u", "x"))
	e.Handle(&tr, c, req(wire.SubmitJob, "f", "u", "x"))
	created := drain(t, c)
	if len(created) != 2 || string(created[0].Field[0]) != string(created[1].Field[0]) {
		t.Fatalf("two submissions of one unique got %v", created)
	}
	h := string(created[0].Field[0])
	e.Handle(&tr, c, req(wire.GetStatusUnique, "u"))
	if p := expectOne(t, c, wire.StatusResUnique); string(p.Field[5]) != "2" {
		t.Fatalf("GET_STATUS_UNIQUE counts %s clients, want 2", p.Field[5])
	}
	e.Handle(&tr, w, req(wire.CanDo, "f"))
	e.Handle(&tr, w, req(wire.GrabJob))
	expectOne(t, w, wire.JobAssign)
	e.Handle(&tr, w, req(wire.WorkData, h, "d"))
	e.Handle(&tr, w, req(wire.WorkComplete, h, "r"))
	got := drain(t, c)
	want := []wire.Type{wire.WorkData, wire.WorkData, wire.WorkComplete, wire.WorkComplete}
	if fmt.Sprint(types(got)) != fmt.Sprint(want) {
		t.Fatalf("client got %v, want %v", types(got), want)
	}
}

// Registrations leave in any order and the rest stay counted; a worker
// that keeps registering, sleeping and withdrawing on a function nobody
// submits to leaves a bounded sleepers list (withdrawn entries are swept).
func TestRegistrationsWithdrawCleanly(t *testing.T) {
	e := newTestEngine(t, 1, nil)
	var tr Turn
	ws := make([]*Session, 5)
	for i := range ws {
		ws[i] = e.NewSession(i+1, "127.0.0.1", nil)
		e.Handle(&tr, ws[i], req(wire.CanDo, "f"))
		e.Handle(&tr, ws[i], req(wire.CanDo, "f")) // a repeat is a second registration
	}
	s := e.shards[0]
	f := s.function([]byte("f"), false)
	check := func(want int) {
		t.Helper()
		if len(f.workers) != want {
			t.Fatalf("%d registrations, want %d", len(f.workers), want)
		}
		for i, a := range f.workers {
			if a.idx != i || a.withdrawn {
				t.Fatalf("registration %d: idx %d withdrawn %v", i, a.idx, a.withdrawn)
			}
		}
	}
	check(10)
	e.CantDo(ws[2], []byte("f"))
	check(8)
	e.Disconnect(&tr, ws[0])
	e.ResetAbilities(ws[4])
	check(4)
	for _, w := range []*Session{ws[1], ws[3]} {
		e.CantDo(w, []byte("f"))
	}
	check(0)

	w := e.NewSession(9, "127.0.0.1", nil)
	for range 1000 {
		e.Handle(&tr, w, req(wire.CanDo, "idle"))
		e.Handle(&tr, w, req(wire.PreSleep))
		e.Handle(&tr, w, req(wire.CantDo, "idle"))
	}
	if n := len(s.function([]byte("idle"), false).sleepers); n > 2 {
		t.Fatalf("%d sleepers entries left by one worker's 1000 withdrawn registrations", n)
	}
}

// A worker whose functions live on two shards sleeps once and is woken
// once, whichever shard gets work first, and then drains both.
func TestCrossShardSleepAndWake(t *testing.T) {
	e := newTestEngine(t, 2, nil)
	var tr Turn
	fa, fb := names(e, 0, 1)[0], names(e, 1, 1)[0]
	w := e.NewSession(1, "127.0.0.1", nil)
	c := e.NewSession(2, "127.0.0.1", nil)
	e.Handle(&tr, w, req(wire.CanDo, fa))
	e.Handle(&tr, w, req(wire.CanDo, fb))
	e.Handle(&tr, w, req(wire.PreSleep))
	if ps := drain(t, w); len(ps) != 0 {
		t.Fatalf("sleeping worker got %v", types(ps))
	}
	e.Handle(&tr, c, req(wire.SubmitJob, fb, "", "b1"))
	e.Handle(&tr, c, req(wire.SubmitJob, fa, "", "a1"))
	expectOne(t, w, wire.Noop) // one NOOP for two shards' jobs
	e.Handle(&tr, w, req(wire.GrabJob))
	e.Handle(&tr, w, req(wire.GrabJob))
	e.Handle(&tr, w, req(wire.GrabJob))
	got := drain(t, w)
	if fmt.Sprint(types(got)) != fmt.Sprint([]wire.Type{wire.JobAssign, wire.JobAssign, wire.NoJob}) {
		t.Fatalf("grabs gave %v", types(got))
	}
	seen := map[string]bool{string(got[0].Field[2]): true, string(got[1].Field[2]): true}
	if !seen["a1"] || !seen["b1"] {
		t.Fatalf("grabbed %q and %q, want a1 and b1", got[0].Field[2], got[1].Field[2])
	}
	// Asleep again with work already queued: NOOP at once.
	e.Handle(&tr, c, req(wire.SubmitJobBG, fa, "", "a2"))
	drain(t, c)
	e.Handle(&tr, w, req(wire.PreSleep))
	expectOne(t, w, wire.Noop)
}

// Priority is global over a worker's functions and shards; equal
// priorities take turns.
func TestGrabOrderPriorityThenRoundRobin(t *testing.T) {
	e := newTestEngine(t, 2, nil)
	var tr Turn
	a, b := names(e, 0, 1)[0], names(e, 1, 1)[0]
	c, w := clientAndWorker(e)
	submit := func(typ wire.Type, fn, data string) { e.Handle(&tr, c, req(typ, fn, "", data)) }
	submit(wire.SubmitJobLowBG, a, "lowA")
	submit(wire.SubmitJobBG, a, "normA1")
	submit(wire.SubmitJobBG, a, "normA2")
	submit(wire.SubmitJobBG, b, "normB1")
	submit(wire.SubmitJobBG, b, "normB2")
	submit(wire.SubmitJobHighBG, b, "highB")
	e.Handle(&tr, w, req(wire.CanDo, a))
	e.Handle(&tr, w, req(wire.CanDo, b))
	var order []string
	for i := 0; i < 6; i++ {
		e.Handle(&tr, w, req(wire.GrabJob))
		p := expectOne(t, w, wire.JobAssign)
		order = append(order, string(p.Field[2]))
	}
	if order[0] != "highB" || order[5] != "lowA" {
		t.Fatalf("order %v: want highB first, lowA last", order)
	}
	mid := order[1:5]
	for i := 1; i < len(mid); i++ {
		if mid[i][:5] == mid[i-1][:5] {
			t.Fatalf("order %v: normal jobs of one function served back to back", order)
		}
	}
}

// Many goroutines acting as event loops: clients submit, workers grab,
// sleep and complete, over functions on every shard. Every job must be
// assigned exactly once and completed to its client; a lost wake-up shows
// up as work left queued while every worker sleeps.
func TestConcurrentNoDoubleAssignNoLostWakeup(t *testing.T) {
	e := newTestEngine(t, 4, nil)
	const clients, workers, perClient = 4, 4, 500
	var funcs []string
	for i := 0; i < 4; i++ {
		funcs = append(funcs, names(e, i, 1)[0])
	}
	var assigned sync.Map // handle -> worker
	done := make(chan struct{})
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			var tr Turn
			s := e.NewSession(100+w, "127.0.0.1", nil)
			for _, f := range funcs[w%2:] {
				e.Handle(&tr, s, req(wire.CanDo, f))
			}
			for {
				e.Handle(&tr, s, req(wire.GrabJob))
				idle := false
				for _, p := range drain(t, s) {
					switch p.Type {
					case wire.JobAssign:
						h := string(p.Field[0])
						if prev, dup := assigned.LoadOrStore(h, w); dup {
							t.Errorf("job %s assigned to worker %d and %v", h, w, prev)
						}
						e.Handle(&tr, s, req(wire.WorkComplete, h, "done:"+string(p.Field[2])))
					case wire.NoJob:
						idle = true
					}
				}
				if !idle {
					continue
				}
				e.Handle(&tr, s, req(wire.PreSleep))
				for woken := false; !woken; {
					select {
					case <-done:
						return
					default:
					}
					for _, p := range drain(t, s) {
						woken = woken || p.Type == wire.Noop
					}
					if !woken {
						time.Sleep(20 * time.Microsecond)
					}
				}
			}
		}(w)
	}
	var cwg sync.WaitGroup
	for c := 0; c < clients; c++ {
		cwg.Add(1)
		go func(c int) {
			defer cwg.Done()
			var tr Turn
			s := e.NewSession(200+c, "127.0.0.1", nil)
			pri := []wire.Type{wire.SubmitJob, wire.SubmitJobHigh, wire.SubmitJobLow}
			handles := map[string]string{}
			completed := 0
			deadline := time.Now().Add(30 * time.Second)
			for i := 0; i < perClient || completed < perClient; {
				if i < perClient {
					data := fmt.Sprintf("c%d-%d", c, i)
					e.Handle(&tr, s, req(pri[i%3], funcs[i%len(funcs)], "", data))
					i++
					for _, p := range drain(t, s) {
						if p.Type == wire.JobCreated {
							handles[string(p.Field[0])] = data
						}
						completed += checkComplete(t, p, handles)
					}
					continue
				}
				for _, p := range drain(t, s) {
					completed += checkComplete(t, p, handles)
				}
				if time.Now().After(deadline) {
					t.Errorf("client %d: %d of %d jobs completed: lost wake-up?", c, completed, perClient)
					return
				}
				time.Sleep(20 * time.Microsecond)
			}
		}(c)
	}
	cwg.Wait()
	close(done)
	wg.Wait()
	n := 0
	assigned.Range(func(any, any) bool { n++; return true })
	if n != clients*perClient {
		t.Fatalf("%d jobs assigned, want %d", n, clients*perClient)
	}
	for _, s := range e.shards {
		if s.jobs.len() != 0 {
			t.Errorf("shard %d still holds %d jobs", s.idx, s.jobs.len())
		}
	}
}

func checkComplete(t *testing.T, p wire.Packet, handles map[string]string) int {
	if p.Type != wire.WorkComplete {
		return 0
	}
	want, ok := handles[string(p.Field[0])]
	if !ok || string(p.Field[1]) != "done:"+want {
		t.Errorf("WORK_COMPLETE %q %q: want result for %q", p.Field[0], p.Field[1], want)
	}
	return 1
}

// Commands that change state are refused to peers outside loopback and
// the --admin-allow networks; read-only commands stay open to all.
func TestAdminAccessControl(t *testing.T) {
	e := newTestEngine(t, 1, nil)
	_, lan, _ := net.ParseCIDR("10.0.0.0/8")
	a := NewAdmin(e, AdminConfig{Allow: []*net.IPNet{lan}, Shutdown: func(bool) {}})
	var tr Turn
	run := func(addr, line string) string {
		s := e.NewSession(1, addr, nil)
		a.Run(&tr, s, []byte(line))
		return string(s.takeOutput())
	}
	for _, line := range []string{"maxqueue f 1", "cancel job H:t:1", "create function f", "drop function f", "shutdown"} {
		if got := run("192.0.2.7", line); !strings.HasPrefix(got, "ERR PERMISSION_DENIED ") {
			t.Errorf("%q from 192.0.2.7: %q, want a refusal", line, got)
		}
		for _, ok := range []string{"127.0.0.1", "::1", "10.20.30.40"} {
			if got := run(ok, line); strings.HasPrefix(got, "ERR PERMISSION_DENIED") {
				t.Errorf("%q from %s refused: %q", line, ok, got)
			}
		}
	}
	// verbose only reports the level, in gearshard as in gearmand, so
	// gearadmin --server-verbose works from anywhere.
	for _, line := range []string{"status", "workers", "prioritystatus", "show jobs", "version", "getpid", "verbose"} {
		if got := run("192.0.2.7", line); strings.HasPrefix(got, "ERR") {
			t.Errorf("read-only %q from 192.0.2.7 refused: %q", line, got)
		}
	}
}

// --max-queue-bytes refuses new jobs once the jobs held reach the bound,
// and takes them again when jobs finish.
func TestMaxQueueBytes(t *testing.T) {
	e := newTestEngine(t, 2, nil)
	var tr Turn
	c := e.NewSession(1, "127.0.0.1", nil)
	data := strings.Repeat("x", 1000)
	for i := 0; i < 10; i++ {
		e.Handle(&tr, c, req(wire.SubmitJobBG, "f"+strconv.Itoa(i), "", data))
		expectOne(t, c, wire.JobCreated)
	}
	// The bound leaves room for less than one more such job.
	e.opts.MaxQueueBytes = e.queuedBytes() + jobOverhead + int64(len(data)) - 1
	e.Handle(&tr, c, req(wire.SubmitJobBG, "f0", "", data))
	if p := expectOne(t, c, wire.Error); string(p.Field[0]) != "QUEUE_ERROR" {
		t.Fatalf("over the bound: %s", p.String())
	}
	w := e.NewSession(2, "127.0.0.1", nil)
	e.Handle(&tr, w, req(wire.CanDo, "f3"))
	e.Handle(&tr, w, req(wire.GrabJob))
	h := expectOne(t, w, wire.JobAssign).Field[0]
	e.Handle(&tr, w, req(wire.WorkComplete, string(h), ""))
	e.Handle(&tr, c, req(wire.SubmitJobBG, "f0", "", data))
	expectOne(t, c, wire.JobCreated)

	// A refused submission of a new name leaves no function behind.
	e.Handle(&tr, c, req(wire.SubmitJobBG, "never-made", "", data+data))
	expectOne(t, c, wire.Error)
	if e.shardOf([]byte("never-made")).function([]byte("never-made"), false) != nil {
		t.Fatal("a refused submission created its function")
	}
}

// Function names are bounded: past MaxFunctionName, CAN_DO, CAN_DO_TIMEOUT
// and submissions get INVALID_FUNCTION_NAME and register nothing.
func TestFunctionNameBounded(t *testing.T) {
	e := newTestEngine(t, 1, nil)
	var tr Turn
	c := e.NewSession(1, "127.0.0.1", nil)
	long := strings.Repeat("n", MaxFunctionName+1)
	for _, p := range []*wire.Packet{
		req(wire.CanDo, long), req(wire.CanDoTimeout, long, "1000"),
		req(wire.SubmitJob, long, "", "x"), req(wire.SubmitJobBG, long, "", "x"),
	} {
		e.Handle(&tr, c, p)
		if got := expectOne(t, c, wire.Error); string(got.Field[0]) != "INVALID_FUNCTION_NAME" {
			t.Fatalf("%s with a %d-byte name: %s", p.Type, len(long), got.String())
		}
	}
	if n := len(e.shards[0].funcs); n != 0 {
		t.Fatalf("%d functions made from refused names", n)
	}
	e.Handle(&tr, c, req(wire.SubmitJobBG, long[1:], "", "x")) // exactly the limit
	expectOne(t, c, wire.JobCreated)
}

// SUBMIT_JOB_EPOCH for a time past what the clock can hold stays delayed
// (it used to overflow into the past and run at once).
func TestEpochFarFutureStaysDelayed(t *testing.T) {
	e := newTestEngine(t, 1, nil)
	var tr Turn
	c, w := clientAndWorker(e)
	e.Handle(&tr, w, req(wire.CanDo, "later"))
	for _, when := range []string{"9999999999", "100000000000", "4611686018427387903", "9223372036854775806", "9223372036854775807"} {
		e.Handle(&tr, c, req(wire.SubmitJobEpoch, "later", "", when, "x"))
		expectOne(t, c, wire.JobCreated)
		e.Handle(&tr, w, req(wire.GrabJob))
		expectOne(t, w, wire.NoJob) // not JOB_ASSIGN: still waiting for its time
	}
	// And their timers are set in the far future, not overflowed into the past.
	s := e.shards[0]
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, j := range s.timers {
		if at := time.Unix(0, j.deadline); at.Before(time.Now().AddDate(200, 0, 0)) {
			t.Fatalf("a far-future epoch job is due at %v", at)
		}
	}
	if len(s.timers) != 5 {
		t.Fatalf("%d delayed jobs, want 5", len(s.timers))
	}
}

// An epoch time outside int64 (strtoll's ERANGE) gets an ERROR and no job;
// gearmand drops it without a reply. The extremes themselves are times.
func TestEpochOutOfRange(t *testing.T) {
	e := newTestEngine(t, 1, nil)
	var tr Turn
	c, w := clientAndWorker(e)
	e.Handle(&tr, w, req(wire.CanDo, "f"))
	for _, when := range []string{"99999999999999999999", "-99999999999999999999", "9223372036854775808", "-9223372036854775809"} {
		e.Handle(&tr, c, req(wire.SubmitJobEpoch, "f", "", when, "x"))
		if p := expectOne(t, c, wire.Error); string(p.Field[0]) != "INVALID_ARGUMENT" {
			t.Fatalf("epoch %s: ERROR %q, want INVALID_ARGUMENT", when, p.Field[0])
		}
	}
	e.Handle(&tr, w, req(wire.GrabJob))
	expectOne(t, w, wire.NoJob)
	e.Handle(&tr, c, req(wire.SubmitJobEpoch, "f", "", "-9223372036854775808", "now"))
	expectOne(t, c, wire.JobCreated)
	e.Handle(&tr, w, req(wire.GrabJob))
	if p := expectOne(t, w, wire.JobAssign); string(p.Field[2]) != "now" {
		t.Fatalf("assigned %q, want the job of the earliest time", p.Field[2])
	}
}

// parseInt is strtoll: white space, sign, digits to the first non-digit,
// and ERANGE past int64.
func TestParseInt(t *testing.T) {
	for _, c := range []struct {
		in      string
		want    int64
		inRange bool
	}{
		{"", 0, true},
		{"abc", 0, true},
		{" \t\n12abc", 12, true},
		{"+7", 7, true},
		{"-0", 0, true},
		{"0x10", 0, true},
		{"9223372036854775807", math.MaxInt64, true},
		{"-9223372036854775808", math.MinInt64, true},
		{"9223372036854775808", math.MaxInt64, false},
		{"-9223372036854775809", math.MinInt64, false},
		{"18446744073709551616", math.MaxInt64, false},
		{"-99999999999999999999x", math.MinInt64, false},
	} {
		got, ok := parseInt([]byte(c.in))
		if got != c.want || ok != c.inRange {
			t.Errorf("parseInt(%q) = %d, %v; want %d, %v", c.in, got, ok, c.want, c.inRange)
		}
	}
}

// A connection that registers a function twice has its jobs timed by the
// newest registration, as in gearmand: a worker re-registers to change
// its timeout, and every job must see the change, not every other one.
func TestTimeoutOfNewestRegistration(t *testing.T) {
	for _, c := range []struct {
		name  string
		regs  []*wire.Packet
		timed bool
	}{
		{"timeout then plain", []*wire.Packet{req(wire.CanDoTimeout, "f", "1000"), req(wire.CanDo, "f")}, false},
		{"plain then timeout", []*wire.Packet{req(wire.CanDo, "f"), req(wire.CanDoTimeout, "f", "1000")}, true},
		{"long then short", []*wire.Packet{req(wire.CanDoTimeout, "f", "60000"), req(wire.CanDoTimeout, "f", "1000")}, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			e := newTestEngine(t, 1, nil)
			var tr Turn
			cl := e.NewSession(1, "127.0.0.1", nil)
			w := e.NewSession(2, "127.0.0.1", nil)
			for _, r := range c.regs {
				e.Handle(&tr, w, r)
			}
			s := e.shards[0]
			for i := 0; i < 4; i++ { // both registrations take their turns
				e.Handle(&tr, cl, req(wire.SubmitJobBG, "f", "", "x"))
				expectOne(t, cl, wire.JobCreated)
				e.Handle(&tr, w, req(wire.GrabJob))
				expectOne(t, w, wire.JobAssign)
				s.mu.Lock()
				var deadline time.Duration
				if len(s.timers) > 0 {
					deadline = time.Until(time.Unix(0, s.timers[0].deadline))
				}
				n := len(s.timers)
				s.mu.Unlock()
				if c.timed && (n != i+1 || deadline > 2*time.Second) {
					t.Fatalf("job %d: %d timers, first due in %v; want %d due within the newest registration's 1 s", i+1, n, deadline, i+1)
				}
				if !c.timed && n != 0 {
					t.Fatalf("job %d: %d timers, want none (the newest registration has no timeout)", i+1, n)
				}
			}
		})
	}
}

// CAN_DO_TIMEOUT with an empty function name is refused as CAN_DO's is.
func TestCanDoTimeoutEmptyName(t *testing.T) {
	e := newTestEngine(t, 1, nil)
	var tr Turn
	w := e.NewSession(1, "127.0.0.1", nil)
	for _, r := range []*wire.Packet{req(wire.CanDo, ""), req(wire.CanDoTimeout, "", "1000")} {
		e.Handle(&tr, w, r)
		if p := expectOne(t, w, wire.Error); string(p.Field[0]) != "INVALID_FUNCTION_NAME" {
			t.Fatalf("%s with an empty name: ERROR %q, want INVALID_FUNCTION_NAME", r.Type, p.Field[0])
		}
	}
}

// OPTION_REQ's option is read up to a NUL, as gearmand reads it, and the
// answer echoes what was sent.
func TestOptionReqStopsAtNUL(t *testing.T) {
	e := newTestEngine(t, 1, nil)
	var tr Turn
	c := e.NewSession(1, "127.0.0.1", nil)
	e.Handle(&tr, c, req(wire.OptionReq, "Exceptions\x00junk"))
	if p := expectOne(t, c, wire.OptionRes); string(p.Field[0]) != "Exceptions\x00junk" {
		t.Fatalf("OPTION_RES %q, want the option as sent", p.Field[0])
	}
	if !c.exceptions.Load() {
		t.Fatal("exceptions not turned on")
	}
	e.Handle(&tr, c, req(wire.OptionReq, "junk\x00exceptions"))
	expectOne(t, c, wire.Error)
}

// Admin listings stay sorted by name while functions come and go in any
// order, across the batches in which new names are merged into each
// shard's sorted list.
func TestFunctionListingStaysSorted(t *testing.T) {
	e := newTestEngine(t, 2, nil)
	a := NewAdmin(e, AdminConfig{})
	var tr Turn
	adm := e.NewSession(1, "127.0.0.1", nil)
	run := func(line string) string {
		a.Run(&tr, adm, []byte(line))
		return string(adm.takeOutput())
	}
	rng := rand.New(rand.NewPCG(1, 2))
	want := map[string]bool{}
	check := func() {
		t.Helper()
		var got []string
		for _, line := range strings.Split(strings.TrimSuffix(run("status"), ".\n"), "\n") {
			if line != "" {
				got = append(got, strings.SplitN(line, "\t", 2)[0])
			}
		}
		ref := slices.Sorted(maps.Keys(want))
		if !slices.Equal(got, ref) {
			t.Fatalf("status lists %d names, want %d sorted; first difference at %d", len(got), len(ref), firstDifference(got, ref))
		}
	}
	for i := 0; i < 5000; i++ {
		switch r := rng.IntN(100); {
		case r < 85:
			name := "f" + strconv.Itoa(rng.IntN(20000))
			if got := run("create function " + name); got != textOK {
				t.Fatalf("create function %s: %q", name, got)
			}
			want[name] = true
		case r < 95 && len(want) > 0:
			keys := slices.Sorted(maps.Keys(want))
			name := keys[rng.IntN(len(keys))]
			if got := run("drop function " + name); got != textOK {
				t.Fatalf("drop function %s: %q", name, got)
			}
			delete(want, name)
		default:
			check()
		}
	}
	check()
	if st := e.Stats(nil); len(st.Functions) != len(want) {
		t.Errorf("Stats has %d functions, want %d", len(st.Functions), len(want))
	}
}

func firstDifference(a, b []string) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

// A job's record and buffer come from slabs, and a slab stays while any of
// its jobs does: --max-queue-bytes must count what held jobs really pin
// (a worker keeping one job in 32), and give slabs back once they are free.
func TestJobMemoryChargedBySlab(t *testing.T) {
	e := newTestEngine(t, 1, nil)
	var tr Turn
	c, w := clientAndWorker(e)
	const slabs = 64
	data := strings.Repeat("x", 64) // carved from buffer slabs
	for i := 0; i < slabs*jobSlab; i++ {
		e.Handle(&tr, c, req(wire.SubmitJobBG, "f", "", data))
	}
	c.discardOutput()
	e.Handle(&tr, w, req(wire.CanDo, "f"))
	var held [][]byte
	for i := 0; i < slabs*jobSlab; i++ {
		e.Handle(&tr, w, req(wire.GrabJob))
		h := expectOne(t, w, wire.JobAssign).Field[0]
		if i%jobSlab == 0 {
			held = append(held, h)
			continue
		}
		e.Handle(&tr, w, req(wire.WorkComplete, string(h), ""))
		w.discardOutput()
	}
	collect := func(until func(int64) bool) int64 {
		t.Helper()
		for i := 0; i < 100; i++ {
			runtime.GC()
			if n := e.queuedBytes(); until(n) {
				return n
			}
			time.Sleep(time.Millisecond) // the cleanups run on their own goroutine
		}
		t.Fatalf("job memory charged: %d bytes after 100 collections", e.queuedBytes())
		return 0
	}
	pinned := int64(slabs) * jobSlabBytes
	if n := collect(func(int64) bool { return true }); n < pinned {
		t.Fatalf("%d held jobs, one per slab, are charged %d bytes; their slabs hold %d", len(held), n, pinned)
	}
	for _, h := range held {
		e.Handle(&tr, w, req(wire.WorkComplete, string(h), ""))
	}
	// Now only the recycled records (the first maxRecycled freed, with
	// their buffers: one record in jobSlab was held, so they span
	// maxRecycled/(jobSlab-1) slabs) and the shard's current slabs may
	// keep memory.
	perBufSlab := bufSlab / len(data)
	kept := (maxRecycled/(jobSlab-1)+2)*jobSlabBytes + int64(maxRecycled/(perBufSlab-2)+2)*bufSlab
	if kept >= pinned {
		t.Fatalf("test too small: %d bytes may stay of %d", kept, pinned)
	}
	collect(func(n int64) bool { return n <= kept })
}

// A closed engine that nobody refers to is collected, slabs and all: the
// slab cleanups must not hold what holds the slabs (a cycle through the
// runtime, which once kept every engine a test or fuzz run made: ~40 KB
// each, gigabytes a minute under go test -fuzz).
func TestClosedEngineIsCollected(t *testing.T) {
	gone := make(chan struct{})
	func() {
		e, err := New(Options{Shards: 2, HandlePrefix: "H:t", Log: zerolog.Nop()})
		if err != nil {
			t.Fatal(err)
		}
		var tr Turn
		c, w := clientAndWorker(e)
		e.Handle(&tr, w, req(wire.CanDo, "f"))
		for i := 0; i < 3*jobSlab; i++ { // several record and buffer slabs
			e.Handle(&tr, c, req(wire.SubmitJobBG, "f", "", strings.Repeat("x", 100)))
		}
		e.Handle(&tr, c, req(wire.SubmitJob, "g", "", "fg"))
		e.Close()
		runtime.AddCleanup(e, func(ch chan struct{}) { close(ch) }, gone)
	}()
	for i := 0; i < 100; i++ {
		runtime.GC()
		select {
		case <-gone:
			return
		case <-time.After(time.Millisecond): // cleanups run on their own goroutine
		}
	}
	t.Fatal("a closed engine is still in memory after 100 collections")
}

// A worker's choice of job is its least recently served registration with
// a job, whichever list it walks (its serving order, or the shard's
// functions with work), and the shards' lists of functions with work stay
// exact, through registrations, withdrawals, submissions at every
// priority, grabs, results and disconnections.
func TestGrabChoiceSameFromReadyList(t *testing.T) {
	e := newTestEngine(t, 2, nil)
	var tr Turn
	rng := rand.New(rand.NewPCG(3, 4))
	name := func() string { return "f" + strconv.Itoa(rng.IntN(300)) }
	client := e.NewSession(1, "127.0.0.1", nil)
	var workers []*Session
	held := map[*Session][]string{}
	fd := 2
	check := func(step int) {
		t.Helper()
		for _, s := range e.shards {
			for pri := High; pri < numPriorities; pri++ {
				want := 0
				for _, fn := range s.funcs {
					if fn.queue[pri].head != nil {
						want++
						if at := fn.readyAt[pri]; at == 0 || s.ready[pri][at-1] != fn {
							t.Fatalf("step %d: %s has work at %d but is not listed ready", step, fn.name, pri)
						}
					} else if fn.readyAt[pri] != 0 {
						t.Fatalf("step %d: %s has no work at %d but is listed ready", step, fn.name, pri)
					}
				}
				if len(s.ready[pri]) != want {
					t.Fatalf("step %d: shard %d lists %d functions ready at %d, %d have work", step, s.idx, len(s.ready[pri]), pri, want)
				}
				for _, w := range workers {
					ps := &w.per[s.idx]
					n := 0
					for _, as := range ps.byFn {
						n += len(as)
					}
					if n != len(ps.abilities) {
						t.Fatalf("step %d: %d registrations by function, %d in all", step, n, len(ps.abilities))
					}
					listed := 0
					for _, l := range [...]*abilityList{&ps.unserved, &ps.served} {
						for a := l.head; a != nil; a = a.next {
							listed++
						}
					}
					if listed != len(ps.abilities) {
						t.Fatalf("step %d: %d registrations in serving order, %d in all", step, listed, len(ps.abilities))
					}
					var want *ability // by definition: the least recently served with a job
					for _, a := range ps.abilities {
						if a.fn.queue[pri].head != nil && servedBefore(a, want) {
							want = a
						}
					}
					if a, b := servedLeastViaRegistrations(ps, pri), s.servedLeastViaReady(ps, pri); a != want || b != want {
						t.Fatalf("step %d: at priority %d the serving order gives %v, the ready list %v, want %v", step, pri, a, b, want)
					}
				}
			}
		}
	}
	for step := 0; step < 20000; step++ {
		r := rng.IntN(100)
		switch {
		case r < 5 || len(workers) == 0:
			w := e.NewSession(fd, "127.0.0.1", nil)
			fd++
			workers = append(workers, w)
		case r < 35:
			w := workers[rng.IntN(len(workers))]
			e.Handle(&tr, w, req(wire.CanDo, name())) // repeats add registrations
		case r < 40:
			e.Handle(&tr, workers[rng.IntN(len(workers))], req(wire.CantDo, name()))
		case r < 42:
			e.Handle(&tr, workers[rng.IntN(len(workers))], req(wire.ResetAbilities))
		case r < 70:
			typ := []wire.Type{wire.SubmitJobHighBG, wire.SubmitJobBG, wire.SubmitJobLowBG}[rng.IntN(3)]
			e.Handle(&tr, client, req(typ, name(), "", "x"))
		case r < 90:
			w := workers[rng.IntN(len(workers))]
			w.takeOutput()
			e.Handle(&tr, w, req(wire.GrabJob))
			for _, p := range drain(t, w) {
				if p.Type == wire.JobAssign {
					held[w] = append(held[w], string(p.Field[0]))
				}
			}
		case r < 98:
			w := workers[rng.IntN(len(workers))]
			if hs := held[w]; len(hs) > 0 {
				e.Handle(&tr, w, req(wire.WorkComplete, hs[0], "r"))
				held[w] = hs[1:]
			}
		default:
			i := rng.IntN(len(workers))
			e.Disconnect(&tr, workers[i])
			delete(held, workers[i])
			workers = slices.Delete(workers, i, i+1)
		}
		client.takeOutput()
		tr.Reset()
		if step%50 == 0 {
			check(step)
		}
	}
	check(20000)
}

// CAN_DO_TIMEOUT is in milliseconds with a floor of one second; a huge value
// means no practical timeout, never a negative one that fires at the floor.
func TestParseTimeout(t *testing.T) {
	for _, c := range []struct {
		in   string
		want time.Duration
	}{
		{"0", 0},
		{"-5", 0},
		{"300", time.Second},
		{"2500", 2500 * time.Millisecond},
		{"9223372036855", math.MaxInt64 / time.Millisecond * time.Millisecond},
		{"9223372036854775807", math.MaxInt64 / time.Millisecond * time.Millisecond},
	} {
		got, ok := parseTimeout([]byte(c.in))
		if !ok || got != c.want {
			t.Errorf("parseTimeout(%q) = %v, %v; want %v", c.in, got, ok, c.want)
		}
	}
}

// TestGetStatusUniqueNewest: a unique held by jobs of several functions is
// answered for the newest job, as gearmand answers, whether the functions
// share a shard or not (a map walk would pick one at random).
func TestGetStatusUniqueNewest(t *testing.T) {
	e := newTestEngine(t, 2, nil)
	var tr Turn
	c := e.NewSession(1, "127.0.0.1", nil)
	sameShard, otherShard := false, false
	for i := 0; i < 8; i++ {
		older, newer := fmt.Sprintf("f%d", i), fmt.Sprintf("g%d", i)
		if e.shardOf([]byte(older)) == e.shardOf([]byte(newer)) {
			sameShard = true
		} else {
			otherShard = true
		}
		// The foreground job has one client, the background job none; the
		// client count tells which job answered.
		for round, bgNewest := range []bool{true, false} {
			u := fmt.Sprintf("u%d-%d", i, round)
			first, second := wire.SubmitJob, wire.SubmitJobBG
			if !bgNewest {
				first, second = second, first
			}
			e.Handle(&tr, c, req(first, older, u, "x"))
			e.Handle(&tr, c, req(second, newer, u, "x"))
			drain(t, c)
			for range 5 {
				e.Handle(&tr, c, req(wire.GetStatusUnique, u))
				want := "1"
				if bgNewest {
					want = "0"
				}
				if p := expectOne(t, c, wire.StatusResUnique); string(p.Field[1]) != "1" || string(p.Field[5]) != want {
					t.Fatalf("%s then %s under %q: GET_STATUS_UNIQUE = %q; want the newer job's (%s clients)", older, newer, u, p.Field, want)
				}
			}
		}
	}
	if !sameShard || !otherShard {
		t.Fatalf("function pairs cover same shard %v, other shard %v; want both", sameShard, otherShard)
	}
}

// The job listings give every live job once, in handle order, across
// shards whose numbers interleave and with stragglers (jobs held while
// thousands after them finish) that the job table keeps apart; "show
// unique jobs" lists the same jobs' uniques in the same order.
func TestShowJobsInHandleOrder(t *testing.T) {
	e := newTestEngine(t, 3, nil)
	a := NewAdmin(e, AdminConfig{})
	var tr Turn
	c, w := clientAndWorker(e)
	adm := e.NewSession(3, "127.0.0.1", nil)
	fns := []string{"fa", "fb", "fc", "fd", "fe", "ff"}
	for _, f := range fns {
		e.Handle(&tr, w, req(wire.CanDo, f))
	}
	w.takeOutput()
	number := func(h []byte) uint64 {
		n, err := strconv.ParseUint(string(h[bytes.LastIndexByte(h, ':')+1:]), 10, 64)
		if err != nil {
			t.Fatalf("handle %q: %v", h, err)
		}
		return n
	}
	uniqueOf := map[uint64]string{}
	for i := 0; i < 12_000; i++ {
		u := fmt.Sprintf("u%d", i)
		e.Handle(&tr, c, req(wire.SubmitJobBG, fns[i%len(fns)], u, "x"))
		uniqueOf[number(expectOne(t, c, wire.JobCreated).Field[0])] = u
		// Most jobs are taken and finished soon; every 500th is held for
		// good (a straggler), and the rest of each 100 stay queued.
		if i%100 < 90 {
			e.Handle(&tr, w, req(wire.GrabJob))
			h := expectOne(t, w, wire.JobAssign).Field[0]
			if i%500 != 0 {
				e.Handle(&tr, w, req(wire.WorkComplete, string(h), "r"))
				w.takeOutput()
				delete(uniqueOf, number(h))
			}
		}
	}
	stragglers := 0
	for _, s := range e.shards {
		stragglers += len(s.jobs.old)
	}
	if stragglers == 0 {
		t.Fatal("no job reached a job table's map: the test covers less than it claims")
	}
	list := func(cmd string) []string {
		a.Run(&tr, adm, []byte(cmd))
		out := strings.TrimSuffix(string(adm.takeOutput()), ".\n")
		return strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	}
	jobs, uniques := list("show jobs"), list("show unique jobs")
	if len(jobs) != len(uniqueOf) || len(uniques) != len(uniqueOf) {
		t.Fatalf("%d job lines and %d unique lines, want %d live jobs", len(jobs), len(uniques), len(uniqueOf))
	}
	last := uint64(0)
	for i, line := range jobs {
		n := number([]byte(strings.Fields(line)[0]))
		if n <= last {
			t.Fatalf("line %d: handle %d after %d", i, n, last)
		}
		last = n
		if uniques[i] != uniqueOf[n] {
			t.Fatalf("line %d: unique %q for job %d, want %q", i, uniques[i], n, uniqueOf[n])
		}
	}
}

// "workers" lists each connection's registrations newest first, as
// gearmand does, across shards: repeated registrations each show, and a
// CANT_DO removes every registration of its function.
func TestWorkersNewestFirstAcrossShards(t *testing.T) {
	e := newTestEngine(t, 3, nil)
	a := NewAdmin(e, AdminConfig{})
	var tr Turn
	w := e.NewSession(7, "127.0.0.1", nil)
	adm := e.NewSession(8, "127.0.0.1", nil)
	var made []string // the registrations, oldest first
	shards := map[int]bool{}
	for i := 0; i < 40; i++ {
		f := fmt.Sprintf("f%d", i%25) // f0..f14 registered twice
		e.Handle(&tr, w, req(wire.CanDo, f))
		made = append(made, f)
		shards[e.shardOf([]byte(f)).idx] = true
	}
	for _, f := range []string{"f3", "f20"} {
		e.Handle(&tr, w, req(wire.CantDo, f))
		made = slices.DeleteFunc(made, func(g string) bool { return g == f })
	}
	if len(shards) != 3 {
		t.Fatalf("registrations on %d shards, want all 3", len(shards))
	}
	a.Run(&tr, adm, []byte("workers"))
	var line string
	for _, l := range strings.Split(string(adm.takeOutput()), "\n") {
		if strings.HasPrefix(l, "7 ") {
			line = l
		}
	}
	slices.Reverse(made)
	if want := "7 127.0.0.1 - : " + strings.Join(made, " "); line != want {
		t.Fatalf("workers line\n%q\nwant\n%q", line, want)
	}
}

// A listing of more than largeListing jobs is followed by a collection
// (the server's GOGC=400 would otherwise let listing after listing pile
// up); a small one is not. The collector is off for the test, so only
// that collection can count.
func TestLargeListingCollects(t *testing.T) {
	defer debug.SetGCPercent(debug.SetGCPercent(-1))
	gcs := func() uint32 {
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		return m.NumGC
	}
	listWith := func(jobs int) (*Admin, uint32) {
		e := newTestEngine(t, 2, nil)
		a := NewAdmin(e, AdminConfig{})
		var tr Turn
		c := e.NewSession(1, "127.0.0.1", nil)
		adm := e.NewSession(2, "127.0.0.1", nil)
		for i := 0; i < jobs; i++ {
			e.Handle(&tr, c, req(wire.SubmitJobBG, "f"+strconv.Itoa(i%7), "", "x"))
			if i%1024 == 0 {
				c.discardOutput()
			}
		}
		before := gcs()
		a.Run(&tr, adm, []byte("show unique jobs"))
		if n := strings.Count(string(adm.takeOutput()), "\n"); n != jobs+1 {
			t.Fatalf("%d lines, want %d", n, jobs+1)
		}
		return a, before
	}
	a, before := listWith(1000)
	if a.collecting.Load() || gcs() != before {
		t.Fatal("a listing of 1,000 jobs started a collection")
	}
	_, before = listWith(largeListing)
	for i := 0; gcs() == before; i++ {
		if i == 1000 {
			t.Fatal("no collection within 10 s of a listing of largeListing jobs")
		}
		time.Sleep(10 * time.Millisecond)
	}
}
