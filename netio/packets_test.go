package netio_test

// End-to-end tests of every binary packet type over real TCP, with
// gearmand 1.1.20's semantics and gearshard's deliberate differences.

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"gearshard/netio/gstest"
	"gearshard/wire"
)

// ---------------------------------------------------------------------------
// helpers

// sharedServer returns a default server (2 shards, prefix H:test) shared by
// the tests that need no special configuration and touch only their own
// function names, uniques and handles. It lives as long as the test binary:
// stopping a gnet server takes half a second (its shutdown poll), which on
// a 2-CPU machine would otherwise dominate the suite's running time. A test
// that asks a second time (go test -count=N) gets a fresh server, since its
// names would meet what its first run left behind.
func sharedServer(t testing.TB) *gstest.Server {
	t.Helper()
	sharedSrv.mu.Lock()
	defer sharedSrv.mu.Unlock()
	if sharedSrv.srv == nil || sharedSrv.askedBy[t.Name()] {
		sharedSrv.srv = gstest.Start(processTB{t}, nil)
		sharedSrv.askedBy = map[string]bool{}
	}
	if sharedSrv.srv == nil {
		t.Fatal("shared server did not start")
	}
	sharedSrv.askedBy[t.Name()] = true
	return sharedSrv.srv
}

var sharedSrv struct {
	mu      sync.Mutex
	srv     *gstest.Server
	askedBy map[string]bool // test names served by srv
}

// processTB is the TB the shared server is started with: its cleanups never
// run (the server dies with the process) and the server's later log lines
// are dropped rather than attributed to whichever test started it.
type processTB struct{ testing.TB }

func (processTB) Cleanup(func())      {}
func (processTB) Helper()             {}
func (processTB) Log(...any)          {}
func (processTB) Logf(string, ...any) {}

var echoSeq atomic.Int64

// barrier sends an ECHO_REQ and returns every packet that arrived before its
// ECHO_RES, i.e. everything the server queued for c before it handled the
// echo (a connection's output is strictly ordered).
func barrier(t testing.TB, c *gstest.Conn) []gstest.Packet {
	t.Helper()
	tok := fmt.Sprintf("barrier-%d", echoSeq.Add(1))
	c.Send(wire.EchoReq, tok)
	var got []gstest.Packet
	for {
		p, err := c.Read()
		if err != nil {
			t.Fatalf("waiting for echo %s: %v (got %v)", tok, err, got)
		}
		if p.Type == wire.EchoRes && len(p.Fields) == 1 && p.Fields[0] == tok {
			return got
		}
		got = append(got, p)
	}
}

// expectQuiet fails unless nothing was queued for c before an echo.
func expectQuiet(t testing.TB, c *gstest.Conn) {
	t.Helper()
	if got := barrier(t, c); len(got) > 0 {
		t.Fatalf("unexpected packets %v", got)
	}
}

// expectError reads one ERROR packet with exactly code and text.
func expectError(t testing.TB, c *gstest.Conn, code, text string) {
	t.Helper()
	c.Expect(wire.Error, code, text)
}

// expectJobNotFound sends typ(fields) from w and expects ERROR
// JOB_NOT_FOUND with text (one of the notFound* texts).
func expectJobNotFound(t testing.TB, w *gstest.Conn, text string, typ wire.Type, fields ...string) {
	t.Helper()
	w.Send(typ, fields...)
	expectError(t, w, "JOB_NOT_FOUND", text)
}

func submit(t testing.TB, c *gstest.Conn, typ wire.Type, fields ...string) string {
	t.Helper()
	c.Send(typ, fields...)
	return c.Expect(wire.JobCreated).Fields[0]
}

func dialWorker(t testing.TB, srv *gstest.Server, fns ...string) *gstest.Conn {
	t.Helper()
	w := gstest.Dial(t, srv.Addr)
	for _, fn := range fns {
		w.Send(wire.CanDo, fn)
	}
	expectQuiet(t, w)
	return w
}

// grab sends GRAB_JOB and expects JOB_ASSIGN(handle, fn, data).
func grab(t testing.TB, w *gstest.Conn, handle, fn, data string) {
	t.Helper()
	w.Send(wire.GrabJob)
	w.Expect(wire.JobAssign, handle, fn, data)
}

// grabOnceRequeued grabs a job that becomes available when the server
// handles another connection's close, which it may not have done yet:
// like a real worker, on NO_JOB it sleeps until NOOP and grabs again.
func grabOnceRequeued(t testing.TB, w *gstest.Conn, handle, fn, data string) {
	t.Helper()
	for i := 0; i < 10; i++ {
		w.Send(wire.GrabJob)
		p, err := w.Read()
		if err != nil {
			t.Fatal(err)
		}
		switch p.Type {
		case wire.JobAssign:
			if p.Fields[0] != handle || p.Fields[1] != fn || p.Fields[2] != data {
				t.Fatalf("got %v, want JOB_ASSIGN %s %s %s", p, handle, fn, data)
			}
			return
		case wire.NoJob:
			w.Send(wire.PreSleep)
			w.Expect(wire.Noop)
		default:
			t.Fatalf("got %v, want JOB_ASSIGN", p)
		}
	}
	t.Fatalf("job %s never came back", handle)
}

// grabAny sends GRAB_JOB and returns the JOB_ASSIGN fields.
func grabAny(t testing.TB, w *gstest.Conn) (handle, fn, data string) {
	t.Helper()
	w.Send(wire.GrabJob)
	p := w.Expect(wire.JobAssign)
	return p.Fields[0], p.Fields[1], p.Fields[2]
}

func expectNoJob(t testing.TB, w *gstest.Conn) {
	t.Helper()
	w.Send(wire.GrabJob)
	w.Expect(wire.NoJob)
}

// expectNoJobEveryGrab sends GRAB_JOB, GRAB_JOB_UNIQ and GRAB_JOB_ALL and
// expects NO_JOB to each.
func expectNoJobEveryGrab(t testing.TB, w *gstest.Conn) {
	t.Helper()
	for _, g := range []wire.Type{wire.GrabJob, wire.GrabJobUniq, wire.GrabJobAll} {
		w.Send(g)
		if p, err := w.Read(); err != nil || p.Type != wire.NoJob {
			t.Fatalf("%s: got %v (%v), want NO_JOB", g, p, err)
		}
	}
}

// preSleep sends PRE_SLEEP and checks that no NOOP comes back yet.
func preSleep(t testing.TB, w *gstest.Conn) {
	t.Helper()
	w.Send(wire.PreSleep)
	expectQuiet(t, w)
}

// completeJob sends WORK_COMPLETE(h, result) from worker w, checks that w
// is not answered (no JOB_NOT_FOUND), and expects each of clients to get
// WORK_COMPLETE(h, result).
func completeJob(t testing.TB, w *gstest.Conn, h, result string, clients ...*gstest.Conn) {
	t.Helper()
	w.Send(wire.WorkComplete, h, result)
	expectQuiet(t, w)
	for _, c := range clients {
		c.Expect(wire.WorkComplete, h, result)
	}
}

// expectStatus sends GET_STATUS h on c and expects STATUS_RES(h, known,
// running, num, den).
func expectStatus(t testing.TB, c *gstest.Conn, h, known, running, num, den string) {
	t.Helper()
	c.Send(wire.GetStatus, h)
	c.Expect(wire.StatusRes, h, known, running, num, den)
}

// expectStatusUnique sends GET_STATUS_UNIQUE uniq on c and expects
// STATUS_RES_UNIQUE(uniq, known, running, num, den, clients).
func expectStatusUnique(t testing.TB, c *gstest.Conn, uniq, known, running, num, den, clients string) {
	t.Helper()
	c.Send(wire.GetStatusUnique, uniq)
	c.Expect(wire.StatusResUnique, uniq, known, running, num, den, clients)
}

// waitClients polls GET_STATUS_UNIQUE uniq on c until the job's client
// count is want (a client's close is handled asynchronously).
func waitClients(t testing.TB, c *gstest.Conn, uniq, want string) {
	t.Helper()
	var last string
	gstest.Eventually(t, 5*time.Second, func() bool {
		c.Send(wire.GetStatusUnique, uniq)
		last = c.Expect(wire.StatusResUnique).Fields[5]
		return last == want
	}, "client count of %q is %s, want %s", uniq, lazy(func() string { return last }), want)
}

// expectSameJob fails the test (and goes on) unless a submit that should
// coalesce onto the job want got its handle.
func expectSameJob(t testing.TB, what, got, want string) {
	t.Helper()
	if got != want {
		t.Errorf("%s: handle %q, want %q (coalesced)", what, got, want)
	}
}

// requireSameJob is expectSameJob for a job the test goes on to use: it
// stops the test.
func requireSameJob(t testing.TB, what, got, want string) {
	t.Helper()
	if got != want {
		t.Fatalf("%s: handle %q, want %q (coalesced)", what, got, want)
	}
}

// expectNewJob fails the test (and goes on) if a submit that must not
// coalesce got the handle of the job other.
func expectNewJob(t testing.TB, what, got, other string) {
	t.Helper()
	if got == other {
		t.Errorf("%s: coalesced onto %q, want a new job", what, other)
	}
}

// statusLines returns admin "status" as FUNC → "TOTAL RUNNING WORKERS".
func statusLines(t testing.TB, adm *gstest.Conn) map[string]string {
	t.Helper()
	out := adm.Admin("status")
	m := map[string]string{}
	for _, line := range strings.Split(strings.TrimSuffix(out, ".\n"), "\n") {
		if line == "" {
			continue
		}
		f := strings.Split(line, "\t")
		if len(f) != 4 {
			t.Fatalf("bad status line %q in %q", line, out)
		}
		m[f[0]] = strings.Join(f[1:], " ")
	}
	return m
}

// waitStatus polls admin "status" until FUNC shows want ("TOTAL RUNNING
// WORKERS").
func waitStatus(t testing.TB, adm *gstest.Conn, fn, want string) {
	t.Helper()
	var last string
	gstest.Eventually(t, 5*time.Second, func() bool {
		last = statusLines(t, adm)[fn]
		return last == want
	}, "status of %q is %q, want %q", fn, lazy(func() string { return last }), want)
}

// lazy formats as the value of its function at the time of formatting.
type lazy func() string

func (l lazy) String() string { return l() }

// namesOnShard returns n function names starting with prefix that route to
// shard idx.
func namesOnShard(srv *gstest.Server, prefix string, idx, n int) []string {
	var out []string
	for i := 0; len(out) < n; i++ {
		name := prefix + strconv.Itoa(i)
		if srv.Engine.ShardOf([]byte(name)) == idx {
			out = append(out, name)
		}
	}
	return out
}

// twoShards returns a name on shard 0 and a name on shard 1.
func twoShards(t testing.TB, srv *gstest.Server, prefix string) (string, string) {
	t.Helper()
	if srv.Engine.Shards() < 2 {
		t.Fatalf("need 2 shards, have %d", srv.Engine.Shards())
	}
	a, b := namesOnShard(srv, prefix+"a", 0, 1)[0], namesOnShard(srv, prefix+"b", 1, 1)[0]
	return a, b
}

// handleNum returns the number in "H:test:N".
func handleNum(t testing.TB, h string) uint64 {
	t.Helper()
	s, ok := strings.CutPrefix(h, "H:test:")
	if !ok {
		t.Fatalf("handle %q lacks prefix H:test:", h)
	}
	n, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		t.Fatalf("handle %q: %v", h, err)
	}
	return n
}

// rawPacket builds a packet with an arbitrary magic, type and payload.
func rawPacket(magic string, typ uint32, payload []byte) []byte {
	b := []byte(magic)
	b = binary.BigEndian.AppendUint32(b, typ)
	b = binary.BigEndian.AppendUint32(b, uint32(len(payload)))
	return append(b, payload...)
}

// fieldsFor returns n placeholder fields ("f0", "f1", ...).
func fieldsFor(n int) []string {
	f := make([]string, n)
	for i := range f {
		f[i] = "f" + strconv.Itoa(i)
	}
	return f
}

const (
	notFoundResult    = "Job given in work result not found"
	notFoundData      = "Job does not exist on server"
	notFoundException = "An exception was received for a job that does not exist"
)

// ---------------------------------------------------------------------------
// every packet type, one connection

// TestE2EEveryPacketType sends each of the 42 packet types, well formed, as a
// request on one fresh connection and checks the immediate answer (or its
// absence); the connection stays usable throughout.
func TestE2EEveryPacketType(t *testing.T) {
	t.Parallel()
	srv := sharedServer(t)
	c := gstest.Dial(t, srv.Addr)
	enc := []string{"INVALID_COMMAND", "Command not expected"}
	h := "H:test:18446744073709551615" // never issued
	type step struct {
		typ    wire.Type
		fields []string
		reply  wire.Type // 0 = no reply
		want   []string  // nil = any fields
	}
	steps := []step{
		{wire.CanDo, []string{"tourw"}, 0, nil},
		{wire.CantDo, []string{"tourw"}, 0, nil},
		{wire.ResetAbilities, nil, 0, nil},
		{wire.PreSleep, nil, 0, nil},
		{5, nil, wire.Error, enc},
		{wire.Noop, nil, wire.Error, enc},
		{wire.SubmitJob, []string{"tour", "", "d7"}, wire.JobCreated, nil},
		{wire.JobCreated, []string{h}, wire.Error, enc},
		{wire.GrabJob, nil, wire.NoJob, nil},
		{wire.NoJob, nil, wire.Error, enc},
		{wire.JobAssign, []string{h, "tour", "x"}, wire.Error, enc},
		{wire.WorkStatus, []string{h, "1", "2"}, wire.Error, []string{"JOB_NOT_FOUND", notFoundResult}},
		{wire.WorkComplete, []string{h, "x"}, wire.Error, []string{"JOB_NOT_FOUND", notFoundResult}},
		{wire.WorkFail, []string{h}, wire.Error, []string{"JOB_NOT_FOUND", notFoundResult}},
		{wire.GetStatus, []string{h}, wire.StatusRes, []string{h, "0", "0", "0", "0"}},
		{wire.EchoReq, []string{"e\x00cho"}, wire.EchoRes, []string{"e\x00cho"}},
		{wire.EchoRes, []string{"x"}, wire.Error, enc},
		{wire.SubmitJobBG, []string{"tour", "", "d18"}, wire.JobCreated, nil},
		{wire.Error, []string{"CODE", "text"}, wire.Error, enc},
		{wire.StatusRes, []string{h, "1", "0", "0", "0"}, wire.Error, enc},
		{wire.SubmitJobHigh, []string{"tour", "", "d21"}, wire.JobCreated, nil},
		{wire.SetClientID, []string{"tourist"}, 0, nil},
		{wire.CanDoTimeout, []string{"tourw", "1000"}, 0, nil},
		{wire.AllYours, nil, wire.Error, enc},
		{wire.WorkException, []string{h, "x"}, wire.Error, []string{"JOB_NOT_FOUND", notFoundException}},
		{wire.OptionReq, []string{"exceptions"}, wire.OptionRes, []string{"exceptions"}},
		{wire.OptionRes, []string{"exceptions"}, wire.Error, enc},
		{wire.WorkData, []string{h, "x"}, wire.Error, []string{"JOB_NOT_FOUND", notFoundData}},
		{wire.WorkWarning, []string{h, "x"}, wire.Error, []string{"JOB_NOT_FOUND", notFoundData}},
		{wire.GrabJobUniq, nil, wire.NoJob, nil}, // tourw has no jobs
		{wire.JobAssignUniq, []string{h, "tour", "u", "x"}, wire.Error, enc},
		{wire.SubmitJobHighBG, []string{"tour", "", "d32"}, wire.JobCreated, nil},
		{wire.SubmitJobLow, []string{"tour", "", "d33"}, wire.JobCreated, nil},
		{wire.SubmitJobLowBG, []string{"tour", "", "d34"}, wire.JobCreated, nil},
		{wire.SubmitJobSched, []string{"tour", "", "*", "*", "*", "*", "*", "d35"}, wire.JobCreated, nil},
		{wire.SubmitJobEpoch, []string{"tour", "", "1", "d36"}, wire.JobCreated, nil},
		{wire.SubmitReduceJob, []string{"tour", "", "red", "agg", "d37"}, wire.JobCreated, nil},
		{wire.SubmitReduceJobBackground, []string{"tour", "", "red", "agg", "d38"}, wire.JobCreated, nil},
		{wire.GrabJobAll, nil, wire.NoJob, nil},
		{wire.JobAssignAll, []string{h, "tour", "u", "r", "x"}, wire.Error, enc},
		{wire.GetStatusUnique, []string{"nosuch"}, wire.StatusResUnique, []string{"nosuch", "0", "0", "0", "0", "0"}},
		{wire.StatusResUnique, []string{"u", "0", "0", "0", "0", "0"}, wire.Error, enc},
	}
	seen := map[wire.Type]bool{}
	for _, s := range steps {
		seen[s.typ] = true
		if got := s.typ.Fields(); len(s.fields) != got && !(got == 0 && s.fields == nil) {
			t.Fatalf("test table: %s has %d fields, want %d", s.typ, len(s.fields), got)
		}
		c.Send(s.typ, s.fields...)
		got := barrier(t, c)
		if s.reply == 0 {
			if len(got) != 0 {
				t.Errorf("%d %s: got %v, want no reply", s.typ, s.typ, got)
			}
			continue
		}
		if len(got) != 1 || got[0].Type != s.reply || (s.want != nil && fmt.Sprint(got[0].Fields) != fmt.Sprint(s.want)) {
			t.Errorf("%d %s: got %v, want one %s%q", s.typ, s.typ, got, s.reply, s.want)
		}
	}
	for typ := wire.Type(1); typ < wire.NumTypes; typ++ {
		if !seen[typ] {
			t.Errorf("packet type %d not covered", typ)
		}
	}
	// All submits went to "tour", which nobody does: 10 jobs, held or queued
	// (the foreground ones are still waited on by c).
	if got := statusLines(t, gstest.Dial(t, srv.Addr))["tour"]; got != "10 0 0" {
		t.Errorf("status tour = %q, want \"10 0 0\"", got)
	}
}

// ---------------------------------------------------------------------------
// framing

// TestE2EFramingErrors: a framing error gets one ERROR packet and the
// connection is closed; other connections are unaffected.
func TestE2EFramingErrors(t *testing.T) {
	t.Parallel()
	srv := gstest.Start(t, func(c *gstest.Config) { c.Net.MaxPacket = 1024 })
	bystander := gstest.Dial(t, srv.Addr)
	h := submit(t, bystander, wire.SubmitJob, "frm", "", "payload")
	w := dialWorker(t, srv, "frm")
	grab(t, w, h, "frm", "payload")

	cases := []struct {
		name       string
		bytes      []byte
		code, text string
	}{
		{"bad magic", rawPacket("\x00REX", uint32(wire.EchoReq), []byte("x")), "INVALID_MAGIC", "Invalid packet magic"},
		{"bad magic short", []byte("\x00XY"), "INVALID_MAGIC", "Invalid packet magic"},
		{"type 0", rawPacket("\x00REQ", 0, nil), "INVALID_COMMAND", "Invalid command"},
		{"type 43", rawPacket("\x00REQ", 43, nil), "INVALID_COMMAND", "Invalid command"},
		{"type 1000", rawPacket("\x00REQ", 1000, []byte("abc")), "INVALID_COMMAND", "Invalid command"},
		{"too large", rawPacket("\x00REQ", uint32(wire.EchoReq), nil)[:8], "ARGUMENT_TOO_LARGE", "Packet exceeds the maximum packet size"},
		{"too few fields SUBMIT_JOB", rawPacket("\x00REQ", uint32(wire.SubmitJob), []byte("fnonly")), "INVALID_PACKET", "Packet has too few arguments"},
		{"too few fields SUBMIT_JOB one NUL", rawPacket("\x00REQ", uint32(wire.SubmitJob), []byte("fn\x00uniq")), "INVALID_PACKET", "Packet has too few arguments"},
		{"too few fields WORK_STATUS", rawPacket("\x00REQ", uint32(wire.WorkStatus), []byte("H:test:1\x001")), "INVALID_PACKET", "Packet has too few arguments"},
		{"too few fields STATUS_RES_UNIQUE", rawPacket("\x00REQ", uint32(wire.StatusResUnique), nil), "INVALID_PACKET", "Packet has too few arguments"},
		{"too few fields SUBMIT_JOB_SCHED", rawPacket("\x00REQ", uint32(wire.SubmitJobSched), []byte("f\x00u\x00*\x00*\x00*\x00*\x00data")), "INVALID_PACKET", "Packet has too few arguments"},
		{"too few fields SUBMIT_REDUCE_JOB", rawPacket("\x00REQ", uint32(wire.SubmitReduceJob), []byte("f\x00u\x00red\x00data")), "INVALID_PACKET", "Packet has too few arguments"},
	}
	// "too large": announce 1025 bytes; the header alone must trigger it.
	cases[5].bytes = binary.BigEndian.AppendUint32(cases[5].bytes, 1025)
	for _, tc := range cases {
		c := gstest.Dial(t, srv.Addr)
		barrier(t, c) // the connection works before the bad packet
		c.Write(tc.bytes)
		got := c.ExpectClosed()
		want := fmt.Sprint([]gstest.Packet{{Type: wire.Error, Fields: []string{tc.code, tc.text}}})
		if fmt.Sprint(got) != want {
			t.Errorf("%s: got %v before close, want %s", tc.name, got, want)
		}
		expectQuiet(t, bystander)
	}
	// A payload of exactly the limit is accepted.
	c := gstest.Dial(t, srv.Addr)
	big := strings.Repeat("z", 1024)
	c.Send(wire.EchoReq, big)
	c.Expect(wire.EchoRes, big)
	// The worker's job survived all of that.
	completeJob(t, w, h, "ok", bystander)
}

// TestE2EOversizeResultFailsJobs: a worker whose result is over the packet
// limit is cut off, and the jobs it held fail instead of being requeued,
// where the next worker would send the same result, for ever at the default
// of unlimited retries.
func TestE2EOversizeResultFailsJobs(t *testing.T) {
	t.Parallel()
	srv := gstest.Start(t, func(c *gstest.Config) { c.Net.MaxPacket = 1024 })
	c := gstest.Dial(t, srv.Addr)
	fg := submit(t, c, wire.SubmitJob, "big-result", "", "fg")
	bg := submit(t, c, wire.SubmitJobBG, "big-result", "", "bg")
	w := dialWorker(t, srv, "big-result")
	grab(t, w, fg, "big-result", "fg")
	grab(t, w, bg, "big-result", "bg")

	result := rawPacket("\x00REQ", uint32(wire.WorkComplete), []byte(fg+"\x00"+strings.Repeat("r", 100)))
	binary.BigEndian.PutUint32(result[8:12], 1025) // announced over the limit; the rest never comes
	w.Write(result)
	got := w.ExpectClosed()
	want := fmt.Sprint([]gstest.Packet{{Type: wire.Error, Fields: []string{"ARGUMENT_TOO_LARGE", "Packet exceeds the maximum packet size"}}})
	if fmt.Sprint(got) != want {
		t.Fatalf("worker got %v before close, want %s", got, want)
	}
	c.Expect(wire.WorkFail, fg)
	if got := statusLines(t, c)["big-result"]; got != "0 0 0" {
		t.Errorf("status after the cut: %q, want no job left", got)
	}
	w2 := dialWorker(t, srv, "big-result")
	w2.Send(wire.GrabJob)
	w2.Expect(wire.NoJob)
}

// TestE2EResponseMagicOnRequest: "\0RES" on a request is answered with
// INVALID_MAGIC and the connection stays open (gearmand).
func TestE2EResponseMagicOnRequest(t *testing.T) {
	t.Parallel()
	srv := sharedServer(t)
	c := gstest.Dial(t, srv.Addr)
	c.Write(wire.AppendResponse(nil, wire.EchoReq, []byte("x")))
	expectError(t, c, "INVALID_MAGIC", "Request magic expected")
	c.Write(wire.AppendResponse(nil, wire.SubmitJob, []byte("rm-f"), nil, []byte("d")))
	expectError(t, c, "INVALID_MAGIC", "Request magic expected")
	c.Send(wire.EchoReq, "still open")
	c.Expect(wire.EchoRes, "still open")
	if got := statusLines(t, c)["rm-f"]; got != "" {
		t.Fatalf("the \\0RES submit created a function: %q", got)
	}
}

// TestE2ECommandNotExpected: response types, type 5 and ALL_YOURS sent as
// requests get INVALID_COMMAND "Command not expected"; the connection
// stays open.
func TestE2ECommandNotExpected(t *testing.T) {
	t.Parallel()
	srv := sharedServer(t)
	c := gstest.Dial(t, srv.Addr)
	for _, typ := range []wire.Type{5, 6, 8, 10, 11, 17, 19, 20, 24, 27, 31, 40, 42} {
		c.Send(typ, fieldsFor(typ.Fields())...)
		p, err := c.Read()
		if err != nil {
			t.Fatalf("type %d: %v", typ, err)
		}
		if p.Type != wire.Error || fmt.Sprint(p.Fields) != fmt.Sprint([]string{"INVALID_COMMAND", "Command not expected"}) {
			t.Errorf("type %d: got %v", typ, p)
		}
	}
	// Pipelined in one write, too.
	var buf []byte
	for _, typ := range []wire.Type{6, 24, 5} {
		buf = wire.AppendRequest(buf, typ)
	}
	buf = wire.AppendRequest(buf, wire.EchoReq, []byte("after"))
	c.Write(buf)
	for range 3 {
		expectError(t, c, "INVALID_COMMAND", "Command not expected")
	}
	c.Expect(wire.EchoRes, "after")
}

// TestE2EPartialAndPipelined: a packet trickled in byte by byte is decoded
// once complete; 1,500 pipelined packets are answered in order.
func TestE2EPartialAndPipelined(t *testing.T) {
	t.Parallel()
	srv := sharedServer(t)
	c := gstest.Dial(t, srv.Addr)
	c.TO = 2 * time.Second
	pkt := wire.AppendRequest(nil, wire.SubmitJob, []byte("trickle"), []byte("u"), []byte("da\x00ta"))
	for i := range pkt {
		_, _ = c.Raw().Write(pkt[i : i+1]) // errors show as a bad read below
		if i%7 == 0 {
			time.Sleep(time.Millisecond) // split across reads
		}
	}
	h := c.Expect(wire.JobCreated).Fields[0]
	w := dialWorker(t, srv, "trickle")
	w.Send(wire.GrabJobUniq)
	w.Expect(wire.JobAssignUniq, h, "trickle", "u", "da\x00ta")

	var buf []byte
	for i := range 1500 {
		buf = wire.AppendRequest(buf, wire.EchoReq, []byte(strconv.Itoa(i)))
	}
	c.Write(buf)
	for i := range 1500 {
		c.Expect(wire.EchoRes, strconv.Itoa(i))
	}
}

// TestE2ESplitPackets: a packet whose bytes arrive in several reads, with
// no complete packet in the first read, is decoded once complete, wherever
// it is cut (inside the magic, the header, or the payload).
func TestE2ESplitPackets(t *testing.T) {
	t.Parallel()
	srv := sharedServer(t)
	pkt := wire.AppendRequest(nil, wire.EchoReq, []byte("0123456789abcdef"))
	for _, cuts := range [][]int{{1}, {3}, {4}, {8}, {11}, {12}, {13}, {len(pkt) - 1}, {2, 6, 12, 20}} {
		c := gstest.Dial(t, srv.Addr)
		c.TO = 500 * time.Millisecond
		prev := 0
		for _, cut := range cuts {
			_, _ = c.Raw().Write(pkt[prev:cut]) // errors show as a bad read below
			prev = cut
			time.Sleep(20 * time.Millisecond) // let the server read the piece on its own
		}
		_, _ = c.Raw().Write(pkt[prev:])
		p, err := c.Read()
		if err != nil || p.Type != wire.EchoRes || len(p.Fields) != 1 || p.Fields[0] != "0123456789abcdef" {
			t.Errorf("ECHO_REQ cut at %v: got %v, %v; want ECHO_RES \"0123456789abcdef\"", cuts, p, err)
		}
	}
	// The same with a complete packet ahead of the partial one.
	c := gstest.Dial(t, srv.Addr)
	c.TO = time.Second
	first := wire.AppendRequest(nil, wire.EchoReq, []byte("first"))
	c.Write(append(first, pkt[:5]...))
	time.Sleep(20 * time.Millisecond)
	c.Write(pkt[5:])
	c.Expect(wire.EchoRes, "first")
	c.Expect(wire.EchoRes, "0123456789abcdef")
}

// TestE2EEcho: ECHO_RES carries the same bytes, NULs included.
func TestE2EEcho(t *testing.T) {
	t.Parallel()
	srv := sharedServer(t)
	c := gstest.Dial(t, srv.Addr)
	for _, d := range []string{"", "hello", "a\x00b\x00\x00c\x00", "\x00", strings.Repeat("\x00x", 5000)} {
		c.Send(wire.EchoReq, d)
		c.Expect(wire.EchoRes, d)
	}
}

// TestE2ELargePayload: multi-megabyte workloads and results pass intact.
func TestE2ELargePayload(t *testing.T) {
	t.Parallel()
	srv := sharedServer(t)
	c := gstest.Dial(t, srv.Addr)
	c.TO = 3 * time.Second
	data := bytes.Repeat([]byte("0123456789abcdef\x00"), 4<<20/17)
	c.Write(wire.AppendRequest(nil, wire.SubmitJob, []byte("big"), nil, data))
	h := c.Expect(wire.JobCreated).Fields[0]
	w := dialWorker(t, srv, "big")
	grab(t, w, h, "big", string(data))
	res := bytes.Repeat([]byte{'r', 0}, 3<<20)
	w.Write(wire.AppendRequest(nil, wire.WorkComplete, []byte(h), res))
	c.Expect(wire.WorkComplete, h, string(res))
}

// ---------------------------------------------------------------------------
// handles, submits, grabs

// TestE2EHandles: "<prefix>:<n>"; one shard numbers 1, 2, 3...; shard i of N
// numbers i+1, i+1+N, ...
func TestE2EHandles(t *testing.T) {
	t.Parallel()
	t.Run("one shard", func(t *testing.T) {
		t.Parallel()
		srv := gstest.Start(t, func(c *gstest.Config) { c.Engine.Shards = 1 })
		c := gstest.Dial(t, srv.Addr)
		types := []wire.Type{wire.SubmitJob, wire.SubmitJobBG, wire.SubmitJobHigh, wire.SubmitJobHighBG, wire.SubmitJobLow, wire.SubmitJobLowBG}
		for i, typ := range types {
			fn := "f" + strconv.Itoa(i%3)
			if h := submit(t, c, typ, fn, "", "d"); h != "H:test:"+strconv.Itoa(i+1) {
				t.Fatalf("submit %d (%s): handle %q, want H:test:%d", i, typ, h, i+1)
			}
		}
		if h := submit(t, c, wire.SubmitJobEpoch, "f", "", "1", "d"); h != "H:test:7" {
			t.Fatalf("epoch: %q", h)
		}
		if h := submit(t, c, wire.SubmitReduceJob, "f", "", "r", "a", "d"); h != "H:test:8" {
			t.Fatalf("reduce: %q", h)
		}
	})
	t.Run("two shards", func(t *testing.T) {
		t.Parallel()
		srv := gstest.Start(t, nil)
		c := gstest.Dial(t, srv.Addr)
		fa, fb := twoShards(t, srv, "hnd")
		next := map[string]uint64{fa: 1, fb: 2}
		for i := range 10 {
			fn := fa
			if i%3 == 0 {
				fn = fb
			}
			n := handleNum(t, submit(t, c, wire.SubmitJobBG, fn, "", "d"))
			if n != next[fn] {
				t.Fatalf("job %d of %s: handle number %d, want %d", i, fn, n, next[fn])
			}
			next[fn] += 2
		}
	})
}

// TestE2ESubmitKinds: every SUBMIT_* variant; foreground clients get the
// results, background submitters get nothing after JOB_CREATED.
func TestE2ESubmitKinds(t *testing.T) {
	t.Parallel()
	srv := sharedServer(t)
	c := gstest.Dial(t, srv.Addr)
	w := dialWorker(t, srv, "kind")
	past := strconv.FormatInt(time.Now().Add(-time.Hour).Unix(), 10)
	cases := []struct {
		typ    wire.Type
		fields []string
		fg     bool
	}{
		{wire.SubmitJob, []string{"kind", "", "d7"}, true},
		{wire.SubmitJobHigh, []string{"kind", "", "d21"}, true},
		{wire.SubmitJobLow, []string{"kind", "", "d33"}, true},
		{wire.SubmitReduceJob, []string{"kind", "", "red", "agg", "d37"}, true},
		{wire.SubmitJobBG, []string{"kind", "", "d18"}, false},
		{wire.SubmitJobHighBG, []string{"kind", "", "d32"}, false},
		{wire.SubmitJobLowBG, []string{"kind", "", "d34"}, false},
		{wire.SubmitReduceJobBackground, []string{"kind", "", "red", "agg", "d38"}, false},
		{wire.SubmitJobEpoch, []string{"kind", "", past, "d36past"}, false},
		{wire.SubmitJobEpoch, []string{"kind", "", "garbage", "d36garbage"}, false},
		{wire.SubmitJobEpoch, []string{"kind", "", "0", "d36zero"}, false},
	}
	for _, tc := range cases {
		h := submit(t, c, tc.typ, tc.fields...)
		data := tc.fields[len(tc.fields)-1]
		grab(t, w, h, "kind", data)
		expectStatus(t, c, h, "1", "1", "0", "0")
		w.Send(wire.WorkData, h, "part")
		completeJob(t, w, h, "res-"+data)
		if tc.fg {
			c.Expect(wire.WorkData, h, "part")
			c.Expect(wire.WorkComplete, h, "res-"+data)
		}
		expectQuiet(t, c) // a background submitter is told nothing
		expectStatus(t, c, h, "0", "0", "0", "0")
	}
	waitStatus(t, c, "kind", "0 0 1")
}

// TestE2EPriorityOrder: HIGH before NORMAL before LOW, FIFO within each,
// foreground and background alike.
func TestE2EPriorityOrder(t *testing.T) {
	t.Parallel()
	srv := sharedServer(t)
	c := gstest.Dial(t, srv.Addr)
	subs := []struct {
		typ  wire.Type
		data string
	}{
		{wire.SubmitJobLow, "low1"}, {wire.SubmitJob, "norm1"}, {wire.SubmitJobHighBG, "high1"},
		{wire.SubmitJobLowBG, "low2"}, {wire.SubmitJobBG, "norm2"}, {wire.SubmitJobHigh, "high2"},
		{wire.SubmitJobEpoch, "norm3"}, {wire.SubmitReduceJob, "norm4"},
	}
	handles := map[string]string{}
	for _, s := range subs {
		switch s.typ {
		case wire.SubmitJobEpoch:
			handles[s.data] = submit(t, c, s.typ, "prio", "", "1", s.data)
		case wire.SubmitReduceJob:
			handles[s.data] = submit(t, c, s.typ, "prio", "", "r", "a", s.data)
		default:
			handles[s.data] = submit(t, c, s.typ, "prio", "", s.data)
		}
	}
	w := dialWorker(t, srv, "prio")
	for _, d := range []string{"high1", "high2", "norm1", "norm2", "norm3", "norm4", "low1", "low2"} {
		grab(t, w, handles[d], "prio", d)
	}
	expectNoJob(t, w)
}

// TestE2EGlobalPriority: a worker gets the highest priority job over all its
// functions, on whichever shard they live.
func TestE2EGlobalPriority(t *testing.T) {
	t.Parallel()
	srv := sharedServer(t)
	fa, fb := twoShards(t, srv, "gp")
	c := gstest.Dial(t, srv.Addr)
	submit(t, c, wire.SubmitJobLowBG, fa, "", "lowA")
	submit(t, c, wire.SubmitJobBG, fa, "", "normA")
	submit(t, c, wire.SubmitJobLowBG, fb, "", "lowB")
	submit(t, c, wire.SubmitJobBG, fb, "", "normB")
	submit(t, c, wire.SubmitJobHighBG, fb, "", "highB")
	submit(t, c, wire.SubmitJobHighBG, fa, "", "highA")
	w := dialWorker(t, srv, fa, fb)
	var got []string
	for range 6 {
		_, _, d := grabAny(t, w)
		got = append(got, d)
	}
	expectNoJob(t, w)
	class := func(d string) string { return strings.TrimRight(d, "AB") }
	want := []string{"high", "high", "norm", "norm", "low", "low"}
	for i := range got {
		if class(got[i]) != want[i] {
			t.Fatalf("grab order %v: want priority classes %v", got, want)
		}
	}
	for i := 0; i < 6; i += 2 {
		if got[i] == got[i+1] {
			t.Fatalf("grab order %v: both functions expected in each class", got)
		}
	}

	// Same with both functions on one shard.
	names := namesOnShard(srv, "gpsame", 0, 2)
	submit(t, c, wire.SubmitJobLowBG, names[0], "", "low0")
	submit(t, c, wire.SubmitJobBG, names[1], "", "norm1")
	submit(t, c, wire.SubmitJobHighBG, names[0], "", "high0")
	w2 := dialWorker(t, srv, names[1], names[0])
	for _, d := range []string{"high0", "norm1", "low0"} {
		if _, _, got := grabAny(t, w2); got != d {
			t.Fatalf("same shard: got %q, want %q", got, d)
		}
	}
}

// TestE2ERoundRobin: at equal priority a worker's functions take turns:
// once a function is served, every other function of the worker that has
// a job at that priority is served before it again.
func TestE2ERoundRobin(t *testing.T) {
	t.Parallel()
	// checkRR grabs n jobs and verifies the turn-taking property given
	// which functions have jobs; jobs maps function → queued count.
	checkRR := func(t *testing.T, w *gstest.Conn, jobs map[string]int) {
		t.Helper()
		total := 0
		for _, n := range jobs {
			total += n
		}
		var order []string
		lastServed := map[string]int{}
		for i := range total {
			_, fn, _ := grabAny(t, w)
			order = append(order, fn)
			// fn must not have been served more recently than any other
			// function that still has jobs.
			for other, n := range jobs {
				if other == fn || n == 0 {
					continue
				}
				lo, okO := lastServed[other]
				lf, okF := lastServed[fn]
				if okF && (!okO || lo < lf) {
					t.Fatalf("grab order %v: %s served again while %s (with jobs) waited longer", order, fn, other)
				}
			}
			lastServed[fn] = i
			jobs[fn]--
		}
		expectNoJob(t, w)
	}
	t.Run("two functions one shard", func(t *testing.T) {
		t.Parallel()
		srv := sharedServer(t)
		names := namesOnShard(srv, "rr1", 1, 2)
		c := gstest.Dial(t, srv.Addr)
		for i := range 3 {
			for _, fn := range names {
				submit(t, c, wire.SubmitJobBG, fn, "", strconv.Itoa(i))
			}
		}
		checkRR(t, dialWorker(t, srv, names...), map[string]int{names[0]: 3, names[1]: 3})
	})
	t.Run("two functions two shards", func(t *testing.T) {
		t.Parallel()
		srv := sharedServer(t)
		fa, fb := twoShards(t, srv, "rr2")
		c := gstest.Dial(t, srv.Addr)
		for i := range 3 {
			submit(t, c, wire.SubmitJobBG, fa, "", strconv.Itoa(i))
			submit(t, c, wire.SubmitJobBG, fb, "", strconv.Itoa(i))
		}
		checkRR(t, dialWorker(t, srv, fa, fb), map[string]int{fa: 3, fb: 3})
	})
	t.Run("three functions two shards", func(t *testing.T) {
		t.Parallel()
		srv := sharedServer(t)
		a := namesOnShard(srv, "rr3a", 0, 1)[0]
		bc := namesOnShard(srv, "rr3b", 1, 2)
		c := gstest.Dial(t, srv.Addr)
		for i := range 4 {
			for _, fn := range []string{a, bc[0], bc[1]} {
				submit(t, c, wire.SubmitJobBG, fn, "", strconv.Itoa(i))
			}
		}
		checkRR(t, dialWorker(t, srv, a, bc[0], bc[1]), map[string]int{a: 4, bc[0]: 4, bc[1]: 4})
	})
	t.Run("late arrival on the other shard", func(t *testing.T) {
		// fb is served while fa has nothing; then fa gets a job: fa must
		// come next, not fb's second job.
		t.Parallel()
		srv := sharedServer(t)
		fa, fb := twoShards(t, srv, "rr4")
		c := gstest.Dial(t, srv.Addr)
		w := dialWorker(t, srv, fa, fb)
		submit(t, c, wire.SubmitJobBG, fb, "", "b1")
		submit(t, c, wire.SubmitJobBG, fb, "", "b2")
		if _, fn, _ := grabAny(t, w); fn != fb {
			t.Fatalf("first grab from %s", fn)
		}
		submit(t, c, wire.SubmitJobBG, fa, "", "a1")
		if _, fn, d := grabAny(t, w); fn != fa {
			t.Fatalf("after serving %s, grab got %s/%s while %s had a job waiting", fb, fn, d, fa)
		}
	})
}

// TestE2EGrabKinds: GRAB_JOB → JOB_ASSIGN, GRAB_JOB_UNIQ → JOB_ASSIGN_UNIQ,
// GRAB_JOB_ALL → JOB_ASSIGN_ALL for a reduce job and JOB_ASSIGN_UNIQ
// otherwise; NO_JOB when nothing is queued.
func TestE2EGrabKinds(t *testing.T) {
	t.Parallel()
	srv := sharedServer(t)
	c := gstest.Dial(t, srv.Addr)
	w := dialWorker(t, srv, "gk")
	expectNoJobEveryGrab(t, w)
	// mk queues one background job for gk, a reduce job when reducer is set.
	mk := func(uniq, reducer, data string) string {
		if reducer != "" {
			return submit(t, c, wire.SubmitReduceJobBackground, "gk", uniq, reducer, "agg", data)
		}
		return submit(t, c, wire.SubmitJobBG, "gk", uniq, data)
	}
	// One job at a time, taken with grab and answered with assign; want
	// is the answer's fields after the handle.
	for _, tc := range []struct {
		uniq, reducer, data string
		grab, assign        wire.Type
		want                []string
	}{
		{"u1", "", "plain\x00data", wire.GrabJob, wire.JobAssign, []string{"gk", "plain\x00data"}},
		{"u2", "", "d2", wire.GrabJobUniq, wire.JobAssignUniq, []string{"gk", "u2", "d2"}},
		{"u3", "", "d3", wire.GrabJobAll, wire.JobAssignUniq, []string{"gk", "u3", "d3"}},
		{"u4", "myreducer", "d4\x00x", wire.GrabJobAll, wire.JobAssignAll, []string{"gk", "u4", "myreducer", "d4\x00x"}},
		{"u5", "myreducer", "d5", wire.GrabJobUniq, wire.JobAssignUniq, []string{"gk", "u5", "d5"}},
		{"u6", "myreducer", "d6", wire.GrabJob, wire.JobAssign, []string{"gk", "d6"}},
		{"", "", "d7", wire.GrabJobAll, wire.JobAssignUniq, []string{"gk", "", "d7"}},
		{"-", "", "d8", wire.GrabJobUniq, wire.JobAssignUniq, []string{"gk", "-", "d8"}},
	} {
		want := gstest.Packet{Type: tc.assign, Fields: append([]string{mk(tc.uniq, tc.reducer, tc.data)}, tc.want...)}
		w.Send(tc.grab)
		if p, err := w.Read(); err != nil || p.String() != want.String() {
			t.Fatalf("%s for %q: got %v (%v), want %v", tc.grab, tc.data, p, err, want)
		}
	}
	expectNoJobEveryGrab(t, w)
	// A connection with no abilities gets NO_JOB even with jobs queued.
	mk("", "", "unowned")
	c.Send(wire.GrabJob)
	c.Expect(wire.NoJob)
}

// TestE2EReduceJobs: SUBMIT_REDUCE_JOB is foreground, _BACKGROUND is not;
// both carry the reducer to GRAB_JOB_ALL.
func TestE2EReduceJobs(t *testing.T) {
	t.Parallel()
	srv := sharedServer(t)
	c := gstest.Dial(t, srv.Addr)
	w := dialWorker(t, srv, "mr")
	h := submit(t, c, wire.SubmitReduceJob, "mr", "cd-ru", "count", "sum", "a b c")
	w.Send(wire.GrabJobAll)
	w.Expect(wire.JobAssignAll, h, "mr", "cd-ru", "count", "a b c")
	w.Send(wire.WorkStatus, h, "1", "3")
	w.Send(wire.WorkComplete, h, "3")
	c.Expect(wire.WorkStatus, h, "1", "3")
	c.Expect(wire.WorkComplete, h, "3")

	h = submit(t, c, wire.SubmitReduceJobBackground, "mr", "rb", "count", "sum", "x")
	w.Send(wire.GrabJobAll)
	w.Expect(wire.JobAssignAll, h, "mr", "rb", "count", "x")
	completeJob(t, w, h, "1")
	expectQuiet(t, c)
	waitStatus(t, c, "mr", "0 0 1")
}

// ---------------------------------------------------------------------------
// results

// TestE2EWorkForwarding: WORK_DATA, WORK_WARNING, WORK_STATUS, WORK_COMPLETE
// and WORK_FAIL reach the client verbatim; GET_STATUS tracks num/den.
func TestE2EWorkForwarding(t *testing.T) {
	t.Parallel()
	srv := sharedServer(t)
	c := gstest.Dial(t, srv.Addr)
	w := dialWorker(t, srv, "fw")
	h := submit(t, c, wire.SubmitJob, "fw", "", "in")
	expectStatus(t, c, h, "1", "0", "0", "0")
	grab(t, w, h, "fw", "in")
	expectStatus(t, c, h, "1", "1", "0", "0")
	w.Send(wire.WorkData, h, "chunk\x00one")
	w.Send(wire.WorkWarning, h, "careful\x00")
	w.Send(wire.WorkStatus, h, "3", "4")
	c.Expect(wire.WorkData, h, "chunk\x00one")
	c.Expect(wire.WorkWarning, h, "careful\x00")
	c.Expect(wire.WorkStatus, h, "3", "4")
	expectStatus(t, c, h, "1", "1", "3", "4")
	w.Send(wire.WorkStatus, h, "40", "100")
	c.Expect(wire.WorkStatus, h, "40", "100")
	expectStatus(t, c, h, "1", "1", "40", "100")
	w.Send(wire.WorkData, h, "")
	c.Expect(wire.WorkData, h, "")
	completeJob(t, w, h, "result\x00with\x00nuls", c)
	expectStatus(t, c, h, "0", "0", "0", "0")
	// The job is gone: further results are refused.
	expectJobNotFound(t, w, notFoundResult, wire.WorkComplete, h, "again")

	h = submit(t, c, wire.SubmitJobHigh, "fw", "", "in2")
	grab(t, w, h, "fw", "in2")
	w.Send(wire.WorkFail, h)
	c.Expect(wire.WorkFail, h)
	expectJobNotFound(t, w, notFoundResult, wire.WorkFail, h)
	expectQuiet(t, c)

	h = submit(t, c, wire.SubmitJob, "fw", "", "in3")
	grab(t, w, h, "fw", "in3")
	completeJob(t, w, h, "", c)
	waitStatus(t, c, "fw", "0 0 1")
}

// TestE2EMultipleClientsOnOneJob: every foreground client attached to a job
// gets every WORK_* sent after it attached, and nothing from before.
func TestE2EMultipleClientsOnOneJob(t *testing.T) {
	t.Parallel()
	srv := sharedServer(t)
	a := gstest.Dial(t, srv.Addr)
	b := gstest.Dial(t, srv.Addr)
	d := gstest.Dial(t, srv.Addr)
	bg := gstest.Dial(t, srv.Addr)
	w := dialWorker(t, srv, "mc")
	h := submit(t, a, wire.SubmitJob, "mc", "mc-shared", "work")
	requireSameJob(t, "second client", submit(t, b, wire.SubmitJobLow, "mc", "mc-shared", "other data"), h)
	grab(t, w, h, "mc", "work")
	w.Send(wire.WorkData, h, "d1")
	a.Expect(wire.WorkData, h, "d1")
	b.Expect(wire.WorkData, h, "d1")
	// A third client attaches to the running job; a background submit of
	// the same unique gets the handle but is not attached.
	requireSameJob(t, "third client", submit(t, d, wire.SubmitJobHigh, "mc", "mc-shared", "x"), h)
	requireSameJob(t, "background submitter", submit(t, bg, wire.SubmitJobBG, "mc", "mc-shared", "x"), h)
	expectStatusUnique(t, d, "mc-shared", "1", "1", "0", "0", "3")
	w.Send(wire.WorkData, h, "d2")
	w.Send(wire.WorkWarning, h, "w1")
	w.Send(wire.WorkStatus, h, "1", "2")
	w.Send(wire.WorkComplete, h, "done")
	for _, c := range []*gstest.Conn{a, b, d} {
		c.Expect(wire.WorkData, h, "d2") // d does not get the earlier d1
		c.Expect(wire.WorkWarning, h, "w1")
		c.Expect(wire.WorkStatus, h, "1", "2")
		c.Expect(wire.WorkComplete, h, "done")
	}
	expectQuiet(t, bg)
	// The unique is free again: a new submit makes a new job.
	if h5 := submit(t, a, wire.SubmitJob, "mc", "mc-shared", "again"); h5 == h {
		t.Fatalf("unique of a finished job still coalesces onto %q", h)
	}

	// WORK_FAIL reaches every attached client too.
	h = submit(t, a, wire.SubmitJob, "mc", "f", "x")
	submit(t, b, wire.SubmitJob, "mc", "f", "x")
	for {
		hh, _, _ := grabAny(t, w)
		if hh == h {
			break
		}
		completeJob(t, w, hh, "", a)
	}
	w.Send(wire.WorkFail, h)
	a.Expect(wire.WorkFail, h)
	b.Expect(wire.WorkFail, h)
}

// TestE2EUniqueCoalescing: scope (function, unique); "" never coalesces;
// "-" coalesces on identical data; HIGH onto NORMAL keeps NORMAL.
func TestE2EUniqueCoalescing(t *testing.T) {
	t.Parallel()
	srv := sharedServer(t)
	c := gstest.Dial(t, srv.Addr)
	fa, fb := twoShards(t, srv, "uq")
	fa2 := namesOnShard(srv, "uqsame", 0, 1)[0]

	h1 := submit(t, c, wire.SubmitJobBG, fa, "k", "d1")
	expectSameJob(t, "same function+unique", submit(t, c, wire.SubmitJobBG, fa, "k", "other"), h1)
	expectNewJob(t, "other function (other shard), same unique", submit(t, c, wire.SubmitJobBG, fb, "k", "d1"), h1)
	expectNewJob(t, "other function (same shard), same unique", submit(t, c, wire.SubmitJobBG, fa2, "k", "d1"), h1)
	expectNewJob(t, "unique K (case-sensitive) after k", submit(t, c, wire.SubmitJobBG, fa, "K", "d1"), h1)
	e1 := submit(t, c, wire.SubmitJobBG, fa, "", "same")
	expectNewJob(t, "empty unique", submit(t, c, wire.SubmitJobBG, fa, "", "same"), e1)
	d1 := submit(t, c, wire.SubmitJobBG, fa, "-", "payload")
	expectSameJob(t, `"-" with identical data`, submit(t, c, wire.SubmitJobBG, fa, "-", "payload"), d1)
	expectNewJob(t, `"-" with different data`, submit(t, c, wire.SubmitJobBG, fa, "-", "payload2"), d1)
	expectNewJob(t, `"-" in another function`, submit(t, c, wire.SubmitJobBG, fb, "-", "payload"), d1)
	z1 := submit(t, c, wire.SubmitJobBG, fa, "-", "")
	expectNewJob(t, `"-" with empty data`, submit(t, c, wire.SubmitJobBG, fa, "-", ""), z1)
	// A literal unique equal to the data is not the "-" key.
	expectNewJob(t, `unique "payload" (vs "-"/payload)`, submit(t, c, wire.SubmitJobBG, fa, "payload", "payload"), d1)
	long := strings.Repeat("u", 64)
	l1 := submit(t, c, wire.SubmitJobBG, fa, long, "x")
	expectSameJob(t, "64-byte unique", submit(t, c, wire.SubmitJob, fa, long, "y"), l1)

	// HIGH onto a queued NORMAL job: same handle, the job stays NORMAL.
	c2 := gstest.Dial(t, srv.Addr)
	a := submit(t, c2, wire.SubmitJob, "hp", "ua", "A")
	b := submit(t, c2, wire.SubmitJobBG, "hp", "ub", "B")
	requireSameJob(t, "HIGH onto NORMAL", submit(t, c2, wire.SubmitJobHigh, "hp", "ua", "A'"), a)
	requireSameJob(t, "HIGH_BG onto NORMAL_BG", submit(t, c2, wire.SubmitJobHighBG, "hp", "ub", "B'"), b)
	hi := submit(t, c2, wire.SubmitJobHighBG, "hp", "uc", "C")
	requireSameJob(t, "LOW onto HIGH", submit(t, c2, wire.SubmitJobLow, "hp", "uc", "C'"), hi)
	w := dialWorker(t, srv, "hp")
	grab(t, w, hi, "hp", "C")
	grab(t, w, a, "hp", "A")
	grab(t, w, b, "hp", "B")
	expectNoJob(t, w)
	// Running jobs coalesce too.
	requireSameJob(t, "submit onto running job", submit(t, c2, wire.SubmitJob, "hp", "ua", "again"), a)
	w.Send(wire.WorkComplete, a, "A done")
	// c2 submitted ua three times in the foreground (a libgearman client
	// has three tasks waiting): one result each, as from gearmand.
	for range 3 {
		c2.Expect(wire.WorkComplete, a, "A done")
	}
	completeJob(t, w, hi, "C done", c2)
	expectQuiet(t, c2)
}

// TestE2EGetStatus: STATUS_RES(handle, known, running, num, den), zeros for
// unknown and malformed handles.
func TestE2EGetStatus(t *testing.T) {
	t.Parallel()
	srv := sharedServer(t)
	c := gstest.Dial(t, srv.Addr)
	for _, h := range []string{"H:test:18446744073709551615", "H:test:18446744073709551614", "H:other:1", "garbage", "", "H:test:0", "H:test:99999999999999999999999"} {
		expectStatus(t, c, h, "0", "0", "0", "0")
	}
	h := submit(t, c, wire.SubmitJobBG, "gs", "", "x")
	other := gstest.Dial(t, srv.Addr) // status works from any connection
	expectStatus(t, other, h, "1", "0", "0", "0")
	w := dialWorker(t, srv, "gs")
	grab(t, w, h, "gs", "x")
	w.Send(wire.WorkStatus, h, "7", "9")
	expectQuiet(t, w)
	expectStatus(t, other, h, "1", "1", "7", "9")
	completeJob(t, w, h, "")
	expectStatus(t, other, h, "0", "0", "0", "0")
}

// TestE2EGetStatusUnique: STATUS_RES_UNIQUE(unique, known, running, num,
// den, client_count).
func TestE2EGetStatusUnique(t *testing.T) {
	t.Parallel()
	srv := sharedServer(t)
	a := gstest.Dial(t, srv.Addr)
	b := gstest.Dial(t, srv.Addr)
	q := gstest.Dial(t, srv.Addr)
	expectStatusUnique(t, q, "gsu-nope", "0", "0", "0", "0", "0")
	expectStatusUnique(t, q, "", "0", "0", "0", "0", "0")

	bgH := submit(t, a, wire.SubmitJobBG, "gsu", "gsu-bgu", "x")
	expectStatusUnique(t, q, "gsu-bgu", "1", "0", "0", "0", "0")

	h := submit(t, a, wire.SubmitJob, "gsu", "gsu-fgu", "y")
	expectStatusUnique(t, q, "gsu-fgu", "1", "0", "0", "0", "1")
	submit(t, b, wire.SubmitJob, "gsu", "gsu-fgu", "y")
	expectStatusUnique(t, q, "gsu-fgu", "1", "0", "0", "0", "2")

	w := dialWorker(t, srv, "gsu")
	grab(t, w, bgH, "gsu", "x")
	grab(t, w, h, "gsu", "y")
	w.Send(wire.WorkStatus, h, "5", "10")
	a.Expect(wire.WorkStatus, h, "5", "10")
	expectStatusUnique(t, q, "gsu-fgu", "1", "1", "5", "10", "2")
	expectStatusUnique(t, q, "gsu-bgu", "1", "1", "0", "0", "0")

	// One client leaves: the count drops, the job stays.
	b.Raw().Close()
	waitClients(t, q, "gsu-fgu", "1")
	completeJob(t, w, h, "r", a)
	expectStatusUnique(t, q, "gsu-fgu", "0", "0", "0", "0", "0")
}

// TestE2EWorkException: WORK_EXCEPTION goes as such to clients that asked
// with OPTION_REQ "exceptions" and as WORK_FAIL(handle), no trailing NUL,
// to the others; the job ends.
func TestE2EWorkException(t *testing.T) {
	t.Parallel()
	srv := sharedServer(t)
	ex := gstest.Dial(t, srv.Addr)
	plain := gstest.Dial(t, srv.Addr)
	ex.Send(wire.OptionReq, "exceptions")
	ex.Expect(wire.OptionRes, "exceptions")
	ex.Send(wire.OptionReq, "EXCEPTIONS") // echoed as sent
	ex.Expect(wire.OptionRes, "EXCEPTIONS")
	for _, o := range []string{"exception", "exceptions2", "", "foo"} {
		plain.Send(wire.OptionReq, o)
		expectError(t, plain, "UNKNOWN_OPTION", "Server does not recognize given option")
	}
	w := dialWorker(t, srv, "exc")
	h := submit(t, ex, wire.SubmitJob, "exc", "eu", "x")
	submit(t, plain, wire.SubmitJob, "exc", "eu", "x")
	grab(t, w, h, "exc", "x")
	w.Send(wire.WorkException, h, "boom\x00trace")
	ex.Expect(wire.WorkException, h, "boom\x00trace")
	p := plain.Expect(wire.WorkFail, h) // Fields has 1 element: no trailing NUL
	if len(p.Fields) != 1 || p.Fields[0] != h {
		t.Fatalf("WORK_FAIL payload %q", p.Fields)
	}
	// The job is over.
	expectStatus(t, ex, h, "0", "0", "0", "0")
	expectJobNotFound(t, w, notFoundResult, wire.WorkComplete, h, "late")
	expectJobNotFound(t, w, notFoundException, wire.WorkException, h, "again")
	expectQuiet(t, ex)
	expectQuiet(t, plain)
	waitStatus(t, ex, "exc", "0 0 1")

	// Background job: nobody to tell, but the job ends.
	h = submit(t, plain, wire.SubmitJobBG, "exc", "", "bg")
	grab(t, w, h, "exc", "bg")
	w.Send(wire.WorkException, h, "boom")
	expectQuiet(t, w)
	expectQuiet(t, plain)
	waitStatus(t, ex, "exc", "0 0 1")
}

// TestE2EJobNotFound: WORK_* for an unknown handle, a queued job, or a job
// another worker holds get JOB_NOT_FOUND with gearmand's texts and change
// nothing.
func TestE2EJobNotFound(t *testing.T) {
	t.Parallel()
	srv := sharedServer(t)
	c := gstest.Dial(t, srv.Addr)
	owner := dialWorker(t, srv, "nf")
	intruder := dialWorker(t, srv, "nf")
	running := submit(t, c, wire.SubmitJob, "nf", "", "r")
	grab(t, owner, running, "nf", "r")
	queued := submit(t, c, wire.SubmitJob, "nf", "", "q")
	texts := map[wire.Type]string{
		wire.WorkData:      notFoundData,
		wire.WorkWarning:   notFoundData,
		wire.WorkStatus:    notFoundResult,
		wire.WorkComplete:  notFoundResult,
		wire.WorkFail:      notFoundResult,
		wire.WorkException: notFoundException,
	}
	send := func(conn *gstest.Conn, typ wire.Type, h string) {
		switch typ {
		case wire.WorkStatus:
			conn.Send(typ, h, "1", "2")
		case wire.WorkFail:
			conn.Send(typ, h)
		default:
			conn.Send(typ, h, "x")
		}
	}
	for _, typ := range []wire.Type{wire.WorkData, wire.WorkWarning, wire.WorkStatus, wire.WorkComplete, wire.WorkFail, wire.WorkException} {
		for _, tc := range []struct {
			who  string
			conn *gstest.Conn
			h    string
		}{
			{"unknown", owner, "H:test:18446744073709551613"},
			{"garbage", owner, "not-a-handle"},
			{"empty", owner, ""},
			{"other prefix", owner, "H:else:1"},
			{"queued job", owner, queued},
			{"queued job, from client", c, queued},
			{"other worker's job", intruder, running},
			{"running job, from its client", c, running},
		} {
			send(tc.conn, typ, tc.h)
			got := barrier(t, tc.conn)
			want := fmt.Sprint([]gstest.Packet{{Type: wire.Error, Fields: []string{"JOB_NOT_FOUND", texts[typ]}}})
			if fmt.Sprint(got) != want {
				t.Errorf("%s %s: got %v, want %s", typ, tc.who, got, want)
			}
		}
	}
	// Nothing reached the client; both jobs are intact.
	expectQuiet(t, c)
	expectStatus(t, c, running, "1", "1", "0", "0")
	expectStatus(t, c, queued, "1", "0", "0", "0")
	completeJob(t, owner, running, "ok", c)
	grab(t, intruder, queued, "nf", "q")
	completeJob(t, intruder, queued, "ok2", c)
}

// TestE2ESubmitErrors: empty function name, unique over 64 bytes, full
// queue (admin maxqueue).
func TestE2ESubmitErrors(t *testing.T) {
	t.Parallel()
	srv := sharedServer(t)
	c := gstest.Dial(t, srv.Addr)
	submits := map[wire.Type]func(fn, uniq string) []string{
		wire.SubmitJob:                 func(fn, u string) []string { return []string{fn, u, "d"} },
		wire.SubmitJobBG:               func(fn, u string) []string { return []string{fn, u, "d"} },
		wire.SubmitJobHigh:             func(fn, u string) []string { return []string{fn, u, "d"} },
		wire.SubmitJobHighBG:           func(fn, u string) []string { return []string{fn, u, "d"} },
		wire.SubmitJobLow:              func(fn, u string) []string { return []string{fn, u, "d"} },
		wire.SubmitJobLowBG:            func(fn, u string) []string { return []string{fn, u, "d"} },
		wire.SubmitJobEpoch:            func(fn, u string) []string { return []string{fn, u, "1", "d"} },
		wire.SubmitJobSched:            func(fn, u string) []string { return []string{fn, u, "*", "*", "*", "*", "*", "d"} },
		wire.SubmitReduceJob:           func(fn, u string) []string { return []string{fn, u, "r", "a", "d"} },
		wire.SubmitReduceJobBackground: func(fn, u string) []string { return []string{fn, u, "r", "a", "d"} },
	}
	u65 := strings.Repeat("x", 65)
	for typ, mk := range submits {
		c.Send(typ, mk("", "")...)
		expectError(t, c, "INVALID_FUNCTION_NAME", "Function name is empty")
		c.Send(typ, mk("se", u65)...)
		expectError(t, c, "ARGUMENT_TOO_LARGE", "Unique value too large")
		c.Send(typ, mk("se", strings.Repeat("x", 64)+strconv.Itoa(int(typ)%10))...)
		expectError(t, c, "ARGUMENT_TOO_LARGE", "Unique value too large")
	}
	// None of that created a job; the connection still works.
	if st := statusLines(t, c)["se"]; st != "" {
		t.Fatalf("rejected submits created function se: %q", st)
	}
	w := gstest.Dial(t, srv.Addr)
	w.Send(wire.CanDo, "")
	expectError(t, w, "INVALID_FUNCTION_NAME", "Function name is empty")
	expectQuiet(t, w)
	if st := statusLines(t, c); st[""] != "" {
		t.Fatalf("empty function registered: %v", st)
	}

	// maxqueue: queued + running count; coalesced submits pass.
	if r := c.Admin("maxqueue mq 2"); r != "OK\r\n" {
		t.Fatalf("maxqueue: %q", r)
	}
	submit(t, c, wire.SubmitJobBG, "mq", "", "1") // creates mq
	if r := c.Admin("maxqueue mq 2"); r != "OK\r\n" {
		t.Fatalf("maxqueue: %q", r)
	}
	h2 := submit(t, c, wire.SubmitJob, "mq", "two", "2")
	for _, typ := range []wire.Type{wire.SubmitJob, wire.SubmitJobBG, wire.SubmitJobHigh, wire.SubmitJobLowBG} {
		c.Send(typ, "mq", "", "3")
		expectError(t, c, "QUEUE_ERROR", "Job queue is full")
	}
	c.Send(wire.SubmitJobEpoch, "mq", "", "1", "3")
	expectError(t, c, "QUEUE_ERROR", "Job queue is full")
	requireSameJob(t, "coalesced submit on a full queue", submit(t, c, wire.SubmitJob, "mq", "two", "2"), h2)
	w = dialWorker(t, srv, "mq")
	h1, _, _ := grabAny(t, w) // running still counts
	c.Send(wire.SubmitJobBG, "mq", "", "3")
	expectError(t, c, "QUEUE_ERROR", "Job queue is full")
	completeJob(t, w, h1, "")
	submit(t, c, wire.SubmitJobBG, "mq", "", "3")
	waitStatus(t, c, "mq", "2 0 1")
	// Other functions are not limited.
	for i := range 5 {
		submit(t, c, wire.SubmitJobBG, "mq-free", "", strconv.Itoa(i))
	}
	// Values past 32 bits are read as strtoll reads them (no practical
	// limit), not wrapped to 32 bits as gearmand's atoi wraps them (to 1).
	for _, v := range []string{"4294967297", "-4294967295"} {
		if r := c.Admin("maxqueue mq " + v); r != "OK\r\n" {
			t.Fatalf("maxqueue mq %s: %q", v, r)
		}
		for i := range 3 {
			submit(t, c, wire.SubmitJobBG, "mq", "", v+"-"+strconv.Itoa(i))
		}
	}
	if r := c.Admin("maxqueue mq 0"); r != "OK\r\n" {
		t.Fatalf("maxqueue reset: %q", r)
	}
	submit(t, c, wire.SubmitJobBG, "mq", "", "4")
}

// ---------------------------------------------------------------------------
// timing

// TestE2EEpoch: SUBMIT_JOB_EPOCH jobs wait for their time; a sleeping worker
// is woken by a timer at that time, not by an unrelated event.
func TestE2EEpoch(t *testing.T) {
	t.Parallel()
	srv := sharedServer(t)
	c := gstest.Dial(t, srv.Addr)
	w := dialWorker(t, srv, "ep")
	expectNoJob(t, w)
	preSleep(t, w)

	when := time.Now().Unix() + 2
	h := submit(t, c, wire.SubmitJobEpoch, "ep", "epu", strconv.FormatInt(when, 10), "later")
	expectQuiet(t, c)
	w.ExpectSilence(100 * time.Millisecond)
	expectStatus(t, c, h, "1", "0", "0", "0")
	waitStatus(t, c, "ep", "1 0 1")
	if ps := c.Admin("prioritystatus"); !strings.Contains(ps, "ep\t0\t1\t0\t1\n") {
		t.Errorf("prioritystatus %q lacks the held job", ps)
	}
	// Coalescing works on a held job.
	expectSameJob(t, "coalesce onto held job", submit(t, c, wire.SubmitJobBG, "ep", "epu", "x"), h)
	// Another worker grabbing in the meantime gets nothing.
	w2 := dialWorker(t, srv, "ep")
	expectNoJob(t, w2)

	w.TO = 5 * time.Second
	w.Expect(wire.Noop)
	if now := time.Now(); now.Unix() < when {
		t.Fatalf("NOOP at %v, before the job's time %d", now, when)
	} else if now.Sub(time.Unix(when, 0)) > 1500*time.Millisecond {
		t.Errorf("NOOP %v after the job's time", now.Sub(time.Unix(when, 0)))
	}
	grab(t, w, h, "ep", "later")
	completeJob(t, w, h, "")
	expectQuiet(t, c)
	waitStatus(t, c, "ep", "0 0 2")
}

// TestE2ESched: SUBMIT_JOB_SCHED is a background job held until the next
// matching minute; out of range fields are refused.
func TestE2ESched(t *testing.T) {
	t.Parallel()
	srv := sharedServer(t)
	c := gstest.Dial(t, srv.Addr)
	for _, f := range [][5]string{
		{"60", "*", "*", "*", "*"},
		{"*", "24", "*", "*", "*"},
		{"*", "*", "0", "*", "*"},
		{"*", "*", "32", "*", "*"},
		{"*", "*", "*", "0", "*"},
		{"*", "*", "*", "13", "*"},
		{"*", "*", "*", "*", "7"},
		{"-1", "", "", "", ""},
		{"x", "", "", "", ""},
		{"", "", "", "", "99999999999999999999"},
		{"*", "*", "30", "2", "*"}, // dates that never come
		{"*", "*", "31", "11", "*"},
	} {
		c.Send(wire.SubmitJobSched, "sch", "", f[0], f[1], f[2], f[3], f[4], "d")
		p := c.Expect(wire.Error)
		if fmt.Sprint(p.Fields) != fmt.Sprint([]string{"INVALID_ARGUMENT", "Schedule fields out of range"}) {
			t.Errorf("fields %q: got %v", f, p)
		}
	}
	if st := statusLines(t, c)["sch"]; st != "" && st != "0 0 0" {
		t.Fatalf("refused schedules created jobs: %q", st)
	}
	w := dialWorker(t, srv, "sch")
	expectNoJob(t, w)
	preSleep(t, w)
	// A minute at least 29 minutes away, given as the only constraint;
	// the other fields are empty or "*" (any).
	min := strconv.Itoa((time.Now().Minute() + 30) % 60)
	h := submit(t, c, wire.SubmitJobSched, "sch", "sch-su", min, "", "*", "", "*", "sched data")
	h2 := submit(t, c, wire.SubmitJobSched, "sch", "", "59", "23", "31", "12", "", "new year")
	// Both are background (the submitter is not attached) and held.
	expectStatusUnique(t, c, "sch-su", "1", "0", "0", "0", "0")
	expectStatus(t, c, h2, "1", "0", "0", "0")
	w.ExpectSilence(100 * time.Millisecond)
	w2 := dialWorker(t, srv, "sch")
	expectNoJob(t, w2)
	waitStatus(t, c, "sch", "2 0 2")
	expectSameJob(t, "coalesce onto scheduled job", submit(t, c, wire.SubmitJobSched, "sch", "sch-su", "*", "*", "*", "*", "*", "x"), h)
}

// TestE2ECanDoTimeout: a job outliving its CAN_DO_TIMEOUT (milliseconds,
// raised to gearmand's floor of one second) fails to its clients and is
// gone; the worker's late result is refused.
func TestE2ECanDoTimeout(t *testing.T) {
	t.Parallel()
	srv := sharedServer(t)
	c := gstest.Dial(t, srv.Addr)
	c2 := gstest.Dial(t, srv.Addr)
	w := gstest.Dial(t, srv.Addr)
	w.Send(wire.CanDoTimeout, "cdt", "300")
	expectQuiet(t, w)
	waitStatus(t, c, "cdt", "0 0 1")

	// A job finished in time is unaffected.
	h := submit(t, c, wire.SubmitJob, "cdt", "", "quick")
	grab(t, w, h, "cdt", "quick")
	completeJob(t, w, h, "fast", c)

	h = submit(t, c, wire.SubmitJob, "cdt", "slowu", "slow")
	submit(t, c2, wire.SubmitJob, "cdt", "slowu", "slow")
	start := time.Now()
	grab(t, w, h, "cdt", "slow")
	w.Send(wire.WorkStatus, h, "1", "2")
	c.Expect(wire.WorkStatus, h, "1", "2")
	c2.Expect(wire.WorkStatus, h, "1", "2")
	c.Expect(wire.WorkFail, h)
	elapsed := time.Since(start)
	c2.Expect(wire.WorkFail, h)
	if elapsed < time.Second {
		t.Errorf("WORK_FAIL after %v: before the 1 s floor (300 ms is raised to it)", elapsed)
	}
	expectStatus(t, c, h, "0", "0", "0", "0")
	waitStatus(t, c, "cdt", "0 0 1")
	expectJobNotFound(t, w, notFoundData, wire.WorkData, h, "late")
	expectJobNotFound(t, w, notFoundResult, wire.WorkComplete, h, "late")
	expectQuiet(t, c)
	expectQuiet(t, c2)
	// Not requeued: nobody gets it again.
	expectNoJob(t, w)

	// The same applies to a background job; a worker with a plain CAN_DO
	// for another function is not timed.
	w.Send(wire.CanDo, "cdt-plain")
	hb := submit(t, c, wire.SubmitJobBG, "cdt", "", "bg")
	grab(t, w, hb, "cdt", "bg")
	hp := submit(t, c, wire.SubmitJob, "cdt-plain", "", "p")
	grab(t, w, hp, "cdt-plain", "p")
	gstest.Eventually(t, 5*time.Second, func() bool {
		c.Send(wire.GetStatus, hb)
		return c.Expect(wire.StatusRes).Fields[1] == "0"
	}, "background job never timed out")
	expectStatus(t, c, hp, "1", "1", "0", "0")
	completeJob(t, w, hp, "p done", c)

	// Non-numeric timeout means none (gearmand's strtol).
	w3 := gstest.Dial(t, srv.Addr)
	w3.Send(wire.CanDoTimeout, "cdt-none", "soon")
	expectQuiet(t, w3)
	waitStatus(t, c, "cdt-none", "0 0 1")
}

// ---------------------------------------------------------------------------
// disconnects

// TestE2EClientDisconnect: a queued foreground job whose clients all left is
// dropped at once; a running one finishes unheard; a background job that a
// foreground client coalesced onto survives that client.
func TestE2EClientDisconnect(t *testing.T) {
	t.Parallel()
	srv := sharedServer(t)
	adm := gstest.Dial(t, srv.Addr)

	t.Run("queued", func(t *testing.T) {
		c := gstest.Dial(t, srv.Addr)
		c2 := gstest.Dial(t, srv.Addr)
		h := submit(t, c, wire.SubmitJob, "cd-q", "", "x")
		submit(t, c, wire.SubmitJobLow, "cd-q", "", "y")
		hs := submit(t, c, wire.SubmitJob, "cd-q", "cd-shared", "z")
		submit(t, c2, wire.SubmitJob, "cd-q", "cd-shared", "z")
		waitStatus(t, adm, "cd-q", "3 0 0")
		c.Raw().Close()
		// Only the shared job is left (c2 still waits on it).
		waitStatus(t, adm, "cd-q", "1 0 0")
		expectStatus(t, adm, h, "0", "0", "0", "0")
		w := dialWorker(t, srv, "cd-q")
		grab(t, w, hs, "cd-q", "z")
		expectNoJob(t, w)
		completeJob(t, w, hs, "r", c2)
		c2.Raw().Close()
		waitStatus(t, adm, "cd-q", "0 0 1")
	})
	t.Run("running", func(t *testing.T) {
		c := gstest.Dial(t, srv.Addr)
		w := dialWorker(t, srv, "cd-r")
		h := submit(t, c, wire.SubmitJob, "cd-r", "cd-ru", "x")
		grab(t, w, h, "cd-r", "x")
		c.Raw().Close()
		waitClients(t, adm, "cd-ru", "0")
		waitStatus(t, adm, "cd-r", "1 1 1")
		w.Send(wire.WorkData, h, "d")
		completeJob(t, w, h, "nobody hears") // no error: the job existed
		waitStatus(t, adm, "cd-r", "0 0 1")
		expectNoJob(t, w)
	})
	t.Run("coalesced onto background", func(t *testing.T) {
		bgc := gstest.Dial(t, srv.Addr)
		h := submit(t, bgc, wire.SubmitJobBG, "cd-b", "cd-bu", "keep me")
		c := gstest.Dial(t, srv.Addr)
		requireSameJob(t, "coalesce", submit(t, c, wire.SubmitJob, "cd-b", "cd-bu", "keep me"), h)
		expectStatusUnique(t, adm, "cd-bu", "1", "0", "0", "0", "1")
		c.Raw().Close()
		waitClients(t, adm, "cd-bu", "0")
		waitStatus(t, adm, "cd-b", "1 0 0")
		w := dialWorker(t, srv, "cd-b")
		grab(t, w, h, "cd-b", "keep me")
		// And while running, a foreground client leaving does not stop it.
		c3 := gstest.Dial(t, srv.Addr)
		submit(t, c3, wire.SubmitJob, "cd-b", "cd-bu", "keep me")
		expectStatusUnique(t, adm, "cd-bu", "1", "1", "0", "0", "1")
		c3.Raw().Close()
		waitClients(t, adm, "cd-bu", "0")
		waitStatus(t, adm, "cd-b", "1 1 1")
		completeJob(t, w, h, "")
		waitStatus(t, adm, "cd-b", "0 0 1")
	})
}

// TestE2EWorkerDisconnect: a worker's jobs are requeued at the tail when it
// goes; the client is not told, the next worker gets the same handle and
// the client the result.
func TestE2EWorkerDisconnect(t *testing.T) {
	t.Parallel()
	srv := sharedServer(t)
	fa, fb := twoShards(t, srv, "wd")
	c := gstest.Dial(t, srv.Addr)
	adm := gstest.Dial(t, srv.Addr)
	w1 := dialWorker(t, srv, fa, fb)
	ha := submit(t, c, wire.SubmitJob, fa, "", "A")
	hb := submit(t, c, wire.SubmitJob, fb, "", "B")
	got := map[string]bool{}
	for range 2 {
		h, _, _ := grabAny(t, w1)
		got[h] = true
	}
	if !got[ha] || !got[hb] {
		t.Fatalf("w1 grabbed %v", got)
	}
	w1.Send(wire.WorkStatus, ha, "1", "2")
	c.Expect(wire.WorkStatus, ha, "1", "2")
	// Jobs queued behind the held ones.
	ha2 := submit(t, c, wire.SubmitJob, fa, "", "A2")
	hbg := submit(t, c, wire.SubmitJobBG, fb, "", "Bbg")
	w1.Raw().Close()
	waitStatus(t, adm, fa, "2 0 0")
	waitStatus(t, adm, fb, "2 0 0")
	c.ExpectSilence(100 * time.Millisecond)
	// Progress is reset.
	expectStatus(t, c, ha, "1", "0", "0", "0")

	w2 := dialWorker(t, srv, fa)
	grab(t, w2, ha2, fa, "A2") // requeued at the tail
	grab(t, w2, ha, fa, "A")
	w2.Send(wire.WorkComplete, ha, "A done")
	w2.Send(wire.WorkComplete, ha2, "A2 done")
	c.Expect(wire.WorkComplete, ha, "A done")
	c.Expect(wire.WorkComplete, ha2, "A2 done")
	w3 := dialWorker(t, srv, fb)
	grab(t, w3, hbg, fb, "Bbg")
	grab(t, w3, hb, fb, "B")
	completeJob(t, w3, hb, "B done", c)
	completeJob(t, w3, hbg, "")
	expectQuiet(t, c)

	// A sleeping worker is woken by the requeue.
	h := submit(t, c, wire.SubmitJobBG, fa, "", "R")
	w4 := dialWorker(t, srv, fa)
	grab(t, w4, h, fa, "R")
	preSleep(t, w2)
	w4.Raw().Close()
	w2.Expect(wire.Noop)
	grab(t, w2, h, fa, "R")

	// Unlimited retries by default.
	for i := range 4 {
		w2.Raw().Close()
		w2 = dialWorker(t, srv, fa)
		grabOnceRequeued(t, w2, h, fa, "R")
		if i == 3 {
			completeJob(t, w2, h, "")
		}
	}
	waitStatus(t, adm, fa, "0 0 1")
}

// TestE2EJobRetries: with JobRetries N a job fails (WORK_FAIL to its clients)
// at the N-th worker loss.
func TestE2EJobRetries(t *testing.T) {
	t.Parallel()
	for _, n := range []int{2} {
		t.Run(strconv.Itoa(n), func(t *testing.T) {
			t.Parallel()
			srv := gstest.Start(t, func(c *gstest.Config) { c.Engine.JobRetries = n })
			c := gstest.Dial(t, srv.Addr)
			adm := gstest.Dial(t, srv.Addr)
			h := submit(t, c, wire.SubmitJob, "jr", "", "x")
			hbg := submit(t, c, wire.SubmitJobBG, "jr", "", "y")
			for i := 1; i <= n; i++ {
				w := dialWorker(t, srv, "jr")
				grab(t, w, h, "jr", "x")
				grab(t, w, hbg, "jr", "y")
				w.Raw().Close()
				if i < n {
					waitStatus(t, adm, "jr", "2 0 0")
					c.ExpectSilence(50 * time.Millisecond)
				}
			}
			c.Expect(wire.WorkFail, h)
			waitStatus(t, adm, "jr", "0 0 0")
			expectStatus(t, c, h, "0", "0", "0", "0")
			w := dialWorker(t, srv, "jr")
			expectNoJob(t, w)
			expectQuiet(t, c)
		})
	}
}

// ---------------------------------------------------------------------------
// sleep and wake

// TestE2EPreSleepNoop: NOOP wakes sleeping workers: once per sleep even
// across shards, at once when work is already queued, to every sleeper by
// default and to WorkerWakeup of them per job otherwise.
func TestE2EPreSleepNoop(t *testing.T) {
	t.Parallel()
	t.Run("one NOOP across shards", func(t *testing.T) {
		t.Parallel()
		srv := sharedServer(t)
		fa, fb := twoShards(t, srv, "ps")
		c := gstest.Dial(t, srv.Addr)
		w := dialWorker(t, srv, fa, fb)
		preSleep(t, w)
		ha := submit(t, c, wire.SubmitJobBG, fa, "", "a")
		hb := submit(t, c, wire.SubmitJobBG, fb, "", "b")
		hb2 := submit(t, c, wire.SubmitJobBG, fb, "", "b2")
		// Both submits are done, so any NOOP is queued before this echo.
		got := barrier(t, w)
		if len(got) != 1 || got[0].Type != wire.Noop {
			t.Fatalf("after PRE_SLEEP and 3 submits on 2 shards: got %v, want one NOOP", got)
		}
		w.ExpectSilence(50 * time.Millisecond)
		seen := map[string]bool{}
		for range 3 {
			h, _, _ := grabAny(t, w)
			seen[h] = true
		}
		if !seen[ha] || !seen[hb] || !seen[hb2] {
			t.Fatalf("grabbed %v", seen)
		}
		expectNoJob(t, w)
		// Sleep again: one NOOP for the next job, on either shard.
		for _, fn := range []string{fb, fa} {
			preSleep(t, w)
			h := submit(t, c, wire.SubmitJobBG, fn, "", "again")
			submit(t, c, wire.SubmitJobBG, fa, "", "more")
			submit(t, c, wire.SubmitJobBG, fb, "", "more")
			if got := barrier(t, w); len(got) != 1 || got[0].Type != wire.Noop {
				t.Fatalf("second sleep (%s): got %v", fn, got)
			}
			seen := map[string]bool{}
			for range 3 {
				gh, _, _ := grabAny(t, w)
				seen[gh] = true
			}
			if !seen[h] {
				t.Fatalf("job %s never grabbed (got %v)", h, seen)
			}
			expectNoJob(t, w)
		}
	})
	t.Run("immediate NOOP when work is queued", func(t *testing.T) {
		t.Parallel()
		srv := sharedServer(t)
		fa, fb := twoShards(t, srv, "psi")
		c := gstest.Dial(t, srv.Addr)
		for _, fn := range []string{fa, fb} {
			h := submit(t, c, wire.SubmitJobBG, fn, "", "queued")
			w := dialWorker(t, srv, fa, fb)
			w.Send(wire.PreSleep)
			w.Expect(wire.Noop)
			expectQuiet(t, w)
			grab(t, w, h, fn, "queued")
			completeJob(t, w, h, "")
		}
		// Nothing queued: no NOOP, for a worker and for a connection
		// without abilities.
		w := dialWorker(t, srv, fa, fb)
		w.Send(wire.PreSleep)
		c.Send(wire.PreSleep)
		expectQuiet(t, w)
		expectQuiet(t, c)
		w.ExpectSilence(50 * time.Millisecond)
		// Work for a function the worker does not do: still silent.
		submit(t, c, wire.SubmitJobBG, "psi-other", "", "x")
		expectQuiet(t, w)
		// Held (epoch) work does not wake it either.
		submit(t, c, wire.SubmitJobEpoch, fa, "", strconv.FormatInt(time.Now().Unix()+3600, 10), "x")
		expectQuiet(t, w)
	})
	t.Run("every sleeper by default", func(t *testing.T) {
		t.Parallel()
		srv := sharedServer(t)
		c := gstest.Dial(t, srv.Addr)
		var ws []*gstest.Conn
		for range 3 {
			w := dialWorker(t, srv, "psall")
			preSleep(t, w)
			ws = append(ws, w)
		}
		awake := dialWorker(t, srv, "psall") // did not PRE_SLEEP
		h := submit(t, c, wire.SubmitJobBG, "psall", "", "x")
		for i, w := range ws {
			if got := barrier(t, w); len(got) != 1 || got[0].Type != wire.Noop {
				t.Fatalf("worker %d: got %v, want one NOOP", i, got)
			}
		}
		expectQuiet(t, awake)
		grab(t, ws[1], h, "psall", "x")
		expectNoJob(t, ws[0])
		// A second job while they are woken but have not grabbed: no
		// second NOOP.
		submit(t, c, wire.SubmitJobBG, "psall", "", "y")
		expectQuiet(t, ws[2])
	})
	t.Run("WorkerWakeup 1", func(t *testing.T) {
		t.Parallel()
		srv := gstest.Start(t, func(c *gstest.Config) { c.Engine.WorkerWakeup = 1 })
		fa, fb := twoShards(t, srv, "ww")
		c := gstest.Dial(t, srv.Addr)
		w1 := dialWorker(t, srv, fa, fb)
		w2 := dialWorker(t, srv, fa, fb)
		for _, w := range []*gstest.Conn{w1, w2} {
			preSleep(t, w)
		}
		submit(t, c, wire.SubmitJobBG, fa, "", "1")
		g1, g2 := barrier(t, w1), barrier(t, w2)
		if len(g1)+len(g2) != 1 {
			t.Fatalf("first job woke %v and %v, want exactly one NOOP", g1, g2)
		}
		first, second := w1, w2
		if len(g2) == 1 {
			first, second = w2, w1
		}
		// The next job (other shard) wakes the other sleeper.
		submit(t, c, wire.SubmitJobBG, fb, "", "2")
		if got := barrier(t, second); len(got) != 1 || got[0].Type != wire.Noop {
			t.Fatalf("second job: the still sleeping worker got %v", got)
		}
		expectQuiet(t, first)
		grabAny(t, first)
		grabAny(t, second)
	})
}

// TestE2ECantDoResetAbilities: CANT_DO and RESET_ABILITIES stop a worker
// from getting the function's jobs, and "status" worker counts drop.
func TestE2ECantDoResetAbilities(t *testing.T) {
	t.Parallel()
	srv := sharedServer(t)
	fa, fb := twoShards(t, srv, "cant")
	fc := namesOnShard(srv, "cantc", 0, 1)[0]
	adm := gstest.Dial(t, srv.Addr)
	c := gstest.Dial(t, srv.Addr)
	w := dialWorker(t, srv, fa, fb, fc, fa) // fa twice: two registrations
	waitStatus(t, adm, fa, "0 0 2")
	waitStatus(t, adm, fb, "0 0 1")
	waitStatus(t, adm, fc, "0 0 1")

	w.Send(wire.CantDo, fa) // removes both registrations
	waitStatus(t, adm, fa, "0 0 0")
	ha := submit(t, c, wire.SubmitJobBG, fa, "", "a")
	expectNoJob(t, w)
	hc := submit(t, c, wire.SubmitJobBG, fc, "", "c")
	grab(t, w, hc, fc, "c") // fc, same shard as fa, still served
	w.Send(wire.CantDo, "never-registered")
	expectQuiet(t, w)

	// A sleeping worker is not woken for a function it gave up.
	preSleep(t, w)
	submit(t, c, wire.SubmitJobBG, fa, "", "a2")
	expectQuiet(t, w)

	w.Send(wire.ResetAbilities)
	waitStatus(t, adm, fb, "0 0 0")
	waitStatus(t, adm, fc, "1 1 0") // the running job stays with w
	submit(t, c, wire.SubmitJobBG, fb, "", "b")
	submit(t, c, wire.SubmitJobBG, fc, "", "c2")
	expectQuiet(t, w)
	expectNoJobEveryGrab(t, w)
	// It still finishes the job it holds.
	completeJob(t, w, hc, "")
	waitStatus(t, adm, fc, "1 0 0")
	// Registering again works.
	w.Send(wire.CanDo, fa)
	waitStatus(t, adm, fa, "2 0 1")
	grab(t, w, ha, fa, "a")
}

// TestE2ESetClientID: the id shows in admin "workers" as "FD IP ID : FUNCS",
// registrations newest first; "-" without one.
func TestE2ESetClientID(t *testing.T) {
	t.Parallel()
	srv := sharedServer(t)
	adm := gstest.Dial(t, srv.Addr)
	w := dialWorker(t, srv, "sid-a", "sid-b")
	w.Send(wire.SetClientID, "worker-7")
	expectQuiet(t, w)
	c := gstest.Dial(t, srv.Addr)
	c.Send(wire.SetClientID, "client-1")
	expectQuiet(t, c)
	anon := dialWorker(t, srv, "sid-c")

	out := adm.Admin("workers")
	for _, re := range []string{
		`(?m)^\d+ 127\.0\.0\.1 worker-7 : sid-b sid-a$`,
		`(?m)^\d+ 127\.0\.0\.1 client-1 :$`,
		`(?m)^\d+ 127\.0\.0\.1 - : sid-c$`,
	} {
		if !regexp.MustCompile(re).MatchString(out) {
			t.Errorf("workers output %q does not match %s", out, re)
		}
	}
	if !strings.HasSuffix(out, "\n.\n") {
		t.Errorf("workers output %q not terminated by .", out)
	}
	// The id can change.
	w.Send(wire.SetClientID, "worker-8")
	expectQuiet(t, w)
	if out := adm.Admin("workers"); !regexp.MustCompile(`(?m)^\d+ 127\.0\.0\.1 worker-8 : sid-b sid-a$`).MatchString(out) {
		t.Errorf("after second SET_CLIENT_ID: %q", out)
	}
	_ = anon
}

// ---------------------------------------------------------------------------
// concurrency

// TestE2EConcurrentLoad: 4 workers doing functions on both shards, 4 clients
// submitting 2,000 jobs each over mixed priorities. Every client gets one
// WORK_COMPLETE per job with the right payload; no job is assigned twice.
func TestE2EConcurrentLoad(t *testing.T) {
	t.Parallel()
	const (
		nWorkers  = 4
		nClients  = 4
		perClient = 2000
	)
	srv := gstest.Start(t, nil)
	fa, fb := twoShards(t, srv, "load")
	fns := []string{fa, fb}
	prios := []wire.Type{wire.SubmitJob, wire.SubmitJobHigh, wire.SubmitJobLow}

	var (
		mu       sync.Mutex
		assigned = map[string]string{} // handle → data
		stopping atomic.Bool
		errs     = make(chan error, 64)
	)
	report := func(err error) {
		select {
		case errs <- err:
		default:
		}
	}
	var wwg sync.WaitGroup
	var workers []*gstest.Conn
	for i := range nWorkers {
		w := gstest.Dial(t, srv.Addr)
		w.TO = 30 * time.Second
		workers = append(workers, w)
		var buf []byte
		// Half the workers register fa first, half fb first.
		for k := range fns {
			buf = wire.AppendRequest(buf, wire.CanDo, []byte(fns[(i+k)%2]))
		}
		buf = wire.AppendRequest(buf, wire.GrabJob)
		if _, err := w.Raw().Write(buf); err != nil {
			t.Fatal(err)
		}
		wwg.Add(1)
		go func() {
			defer wwg.Done()
			write := func(b []byte) bool {
				if _, err := w.Raw().Write(b); err != nil {
					if !stopping.Load() {
						report(fmt.Errorf("worker %d write: %v", i, err))
					}
					return false
				}
				return true
			}
			for {
				p, err := w.Read()
				if err != nil {
					if !stopping.Load() {
						report(fmt.Errorf("worker %d read: %v", i, err))
					}
					return
				}
				var out []byte
				switch p.Type {
				case wire.JobAssign:
					h, fn, data := p.Fields[0], p.Fields[1], p.Fields[2]
					mu.Lock()
					prev, dup := assigned[h]
					assigned[h] = data
					mu.Unlock()
					if dup {
						report(fmt.Errorf("handle %s assigned twice (%q, then %q to worker %d)", h, prev, data, i))
					}
					out = wire.AppendRequest(nil, wire.WorkComplete, []byte(h), []byte("done:"+fn+":"+data))
					out = wire.AppendRequest(out, wire.GrabJob)
				case wire.NoJob:
					out = wire.AppendRequest(nil, wire.PreSleep)
				case wire.Noop:
					out = wire.AppendRequest(nil, wire.GrabJob)
				default:
					report(fmt.Errorf("worker %d: unexpected %v", i, p))
					return
				}
				if !write(out) {
					return
				}
			}
		}()
	}

	var cwg sync.WaitGroup
	for ci := range nClients {
		c := gstest.Dial(t, srv.Addr)
		c.TO = 15 * time.Second
		type sub struct{ fn, data string }
		subs := make([]sub, perClient)
		var buf []byte
		for i := range subs {
			subs[i] = sub{fns[(i+ci)%2], fmt.Sprintf("c%d-j%d", ci, i)}
			uniq := ""
			if i%2 == 0 {
				uniq = subs[i].data // distinct uniques: no coalescing
			}
			buf = wire.AppendRequest(buf, prios[(i/2)%3], []byte(subs[i].fn), []byte(uniq), []byte(subs[i].data))
		}
		cwg.Add(2)
		go func() { // writer: in chunks, concurrently with the reader
			defer cwg.Done()
			const chunk = 37 * 100
			for off := 0; off < len(buf); off += chunk {
				end := min(off+chunk, len(buf))
				if _, err := c.Raw().Write(buf[off:end]); err != nil {
					report(fmt.Errorf("client %d write: %v", ci, err))
					return
				}
			}
		}()
		go func() {
			defer cwg.Done()
			want := map[string]string{} // handle → expected result
			created, completed := 0, 0
			for completed < perClient {
				p, err := c.Read()
				if err != nil {
					report(fmt.Errorf("client %d: %v after %d created, %d completed", ci, err, created, completed))
					return
				}
				switch p.Type {
				case wire.JobCreated:
					if created == perClient {
						report(fmt.Errorf("client %d: extra JOB_CREATED %v", ci, p))
						return
					}
					h := p.Fields[0]
					if _, ok := want[h]; ok {
						report(fmt.Errorf("client %d: handle %s created twice", ci, h))
						return
					}
					s := subs[created]
					want[h] = "done:" + s.fn + ":" + s.data
					created++
				case wire.WorkComplete:
					h := p.Fields[0]
					exp, ok := want[h]
					if !ok {
						report(fmt.Errorf("client %d: WORK_COMPLETE for %s, not its job (or twice)", ci, h))
						return
					}
					if p.Fields[1] != exp {
						report(fmt.Errorf("client %d: %s completed with %q, want %q", ci, h, p.Fields[1], exp))
						return
					}
					delete(want, h)
					completed++
				default:
					report(fmt.Errorf("client %d: unexpected %v", ci, p))
					return
				}
			}
			if created != perClient || len(want) != 0 {
				report(fmt.Errorf("client %d: %d created, %d still pending", ci, created, len(want)))
			}
			// Nothing more may arrive.
			c.TO = 50 * time.Millisecond
			if p, err := c.Read(); err == nil {
				report(fmt.Errorf("client %d: extra packet %v", ci, p))
			}
		}()
	}
	cwg.Wait()
	stopping.Store(true)
	for _, w := range workers {
		w.Raw().Close()
	}
	wwg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if t.Failed() {
		return
	}
	mu.Lock()
	n := len(assigned)
	mu.Unlock()
	if n != nClients*perClient {
		t.Errorf("%d jobs assigned, want %d", n, nClients*perClient)
	}
	adm := gstest.Dial(t, srv.Addr)
	waitStatus(t, adm, fa, "0 0 0")
	waitStatus(t, adm, fb, "0 0 0")
}
