package queue

import (
	"bufio"
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"gearshard/engine"
	"gearshard/engine/queue/queuetest"
)

// The database servers come from gearshard/engine/queue/queuetest, which
// the end-to-end tests of cmd/gearshard share.

func startPostgres(t testing.TB) string { return queuetest.StartPostgres(t) }
func startRedis(t testing.TB) string    { return queuetest.StartRedis(t) }

type pgServer struct {
	*queuetest.Postgres
	conninfo string
}

func newPostgres(t testing.TB) *pgServer {
	p := queuetest.NewPostgres(t)
	return &pgServer{p, p.Conninfo}
}

func (s *pgServer) start()                    { s.Start() }
func (s *pgServer) stop(sig syscall.Signal)   { s.Stop(sig) }
func (s *pgServer) signal(sig syscall.Signal) { s.Signal(sig) }

type redisServer struct {
	*queuetest.Redis
	addr string
}

func newRedis(t testing.TB) *redisServer {
	r := queuetest.NewRedis(t)
	return &redisServer{r, r.Addr}
}

func (s *redisServer) start()                    { s.Start() }
func (s *redisServer) stop(sig syscall.Signal)   { s.Stop(sig) }
func (s *redisServer) signal(sig syscall.Signal) { s.Signal(sig) }

// Helpers the PostgreSQL and Redis tests share (conformance_test.go has
// the generic ones).

func netRecKey(function, unique []byte) string {
	return hex.EncodeToString(function) + "/" + hex.EncodeToString(unique)
}

// netAck adds rs and fails unless each is acknowledged without error.
func netAck(t testing.TB, s engine.Store, rs []engine.Record) {
	t.Helper()
	errc := make(chan error, len(rs))
	for _, r := range rs {
		s.Add(r, func(err error) { errc <- err })
	}
	deadline := time.After(30 * time.Second)
	for range rs {
		select {
		case err := <-errc:
			if err != nil {
				t.Fatalf("Add: %v", err)
			}
		case <-deadline:
			t.Fatalf("Adds not acknowledged in 30 s")
		}
	}
}

// netAddWait adds r and returns done's error, failing the test when done
// is not called within limit.
func netAddWait(t testing.TB, s engine.Store, r engine.Record, limit time.Duration) error {
	t.Helper()
	errc := make(chan error, 1)
	s.Add(r, func(err error) { errc <- err })
	select {
	case err := <-errc:
		return err
	case <-time.After(limit):
		t.Fatalf("Add of %q/%q: done not called in %v", r.Function, r.Unique, limit)
		return nil
	}
}

// netReplay returns the replayed records by netRecKey, copied.
func netReplay(t testing.TB, s engine.Store) map[string]engine.Record {
	t.Helper()
	got := map[string]engine.Record{}
	err := s.Replay(func(r engine.Record) {
		k := netRecKey(r.Function, r.Unique)
		if _, dup := got[k]; dup {
			t.Errorf("replayed twice: %q/%q", r.Function, r.Unique)
		}
		got[k] = engine.Record{Function: bytes.Clone(r.Function), Unique: bytes.Clone(r.Unique),
			Priority: r.Priority, Data: bytes.Clone(r.Data), When: r.When}
	})
	if err != nil {
		t.Fatalf("Replay: %v", err)
	}
	return got
}

// netSameRecord reports how g differs from w ("" when it does not).
func netSameRecord(g, w engine.Record) string {
	switch {
	case !bytes.Equal(g.Function, w.Function) || !bytes.Equal(g.Unique, w.Unique):
		return fmt.Sprintf("key %q/%q replayed as %q/%q", w.Function, w.Unique, g.Function, g.Unique)
	case !bytes.Equal(g.Data, w.Data):
		d := g.Data
		if len(d) > 40 {
			d = d[:40]
		}
		return fmt.Sprintf("%q/%q: data %q (%d bytes), want %d bytes", w.Function, w.Unique, d, len(g.Data), len(w.Data))
	case g.Priority != w.Priority || g.When != w.When:
		return fmt.Sprintf("%q/%q: priority %d when %d, want %d %d", w.Function, w.Unique, g.Priority, g.When, w.Priority, w.When)
	}
	return ""
}

// netWantExactly fails unless got holds exactly want.
func netWantExactly(t testing.TB, got map[string]engine.Record, want []engine.Record) {
	t.Helper()
	var problems []string
	seen := map[string]bool{}
	for _, w := range want {
		k := netRecKey(w.Function, w.Unique)
		seen[k] = true
		if g, ok := got[k]; !ok {
			problems = append(problems, fmt.Sprintf("missing %q/%q", w.Function, w.Unique))
		} else if p := netSameRecord(g, w); p != "" {
			problems = append(problems, p)
		}
	}
	for k, g := range got {
		if !seen[k] {
			problems = append(problems, fmt.Sprintf("unexpected %q/%q", g.Function, g.Unique))
		}
	}
	if len(problems) > 0 {
		sort.Strings(problems)
		if len(problems) > 20 {
			problems = append(problems[:20], fmt.Sprintf("... %d more", len(problems)-20))
		}
		t.Fatalf("replay differs (%d records, want %d):\n%s", len(got), len(want), strings.Join(problems, "\n"))
	}
}

// netAwkward are records with keys and data of awkward bytes, every
// priority and run-at times.
func netAwkward() []engine.Record {
	return []engine.Record{
		{Function: []byte("reverse"), Unique: []byte("plain"), Priority: engine.Normal, Data: []byte("hello")},
		{Function: []byte("reverse"), Unique: []byte("gs~8000000000000001"), Priority: engine.Normal, Data: []byte("made-up key")},
		{Function: []byte("reverse"), Unique: []byte("with-dash-es"), Priority: engine.High, Data: []byte("x\x00y\x00")},
		{Function: []byte("fn-with-dash"), Unique: []byte("u"), Priority: engine.Low, Data: []byte{}},
		{Function: []byte("a-b"), Unique: []byte("c"), Priority: engine.Low, Data: []byte("ab/c")},
		{Function: []byte("a"), Unique: []byte("b-c"), Priority: engine.High, Data: []byte("a/bc")},
		{Function: []byte("pct%2D"), Unique: []byte("%25-%"), Priority: engine.Normal, Data: []byte("escapes")},
		{Function: []byte("bin"), Unique: []byte("\xff\xfe\x00\x01 raw"), Priority: engine.High, Data: []byte{0, 0, 0, 0xff}},
		{Function: []byte("bin\x00fn\xc3"), Unique: []byte("\xf4\x8f\xb8\x80 looks escaped \U0010FE41"), Priority: engine.Normal, Data: []byte("e")},
		{Function: []byte("ünïcödé"), Unique: []byte("日本"), Priority: engine.Normal, Data: []byte("u"), When: 1},
		{Function: []byte("epoch"), Unique: []byte("e1"), Priority: engine.Low, Data: []byte("later"), When: 2000000000},
		{Function: []byte("quote'\"`;--"), Unique: []byte("') DROP TABLE queue; --"), Priority: engine.Normal, Data: []byte("q")},
		{Function: bytes.Repeat([]byte{0xff}, 255), Unique: bytes.Repeat([]byte{0xfe}, 64), Priority: engine.Normal, Data: []byte("longest keys")},
		{Function: []byte("big"), Unique: []byte("big"), Priority: engine.Normal, Data: bytes.Repeat([]byte("0123456789\x00\xff"), 1<<16)},
	}
}

// netConcurrent adds 10,000 records from 8 goroutines at once and checks
// that each is acknowledged, and replayed after reopening.
func netConcurrent(t *testing.T, open func() engine.Store) {
	s := open()
	const goroutines, each = 8, 1250
	var wg, acked sync.WaitGroup
	var mu sync.Mutex
	var failed []error
	acked.Add(goroutines * each)
	var want []engine.Record
	for g := range goroutines {
		for i := range each {
			want = append(want, engine.Record{
				Function: fmt.Appendf(nil, "fn%d", i%7), Unique: fmt.Appendf(nil, "g%d-%d", g, i),
				Priority: engine.Priority(i % 3), Data: fmt.Appendf(nil, "data %d %d", g, i), When: int64(i),
			})
		}
	}
	for g := range goroutines {
		wg.Go(func() {
			for _, r := range want[g*each : (g+1)*each] {
				s.Add(r, func(err error) {
					if err != nil {
						mu.Lock()
						failed = append(failed, err)
						mu.Unlock()
					}
					acked.Done()
				})
			}
		})
	}
	wg.Wait()
	done := make(chan struct{})
	go func() { acked.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(60 * time.Second):
		t.Fatalf("not every Add acknowledged in 60 s")
	}
	if len(failed) > 0 {
		t.Fatalf("%d Adds failed, first: %v", len(failed), failed[0])
	}
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	s = open()
	defer s.Close()
	netWantExactly(t, netReplay(t, s), want)
}

// netAddRemove: an Add and a Remove of the same key, in one batch or in
// two, leave nothing; a Remove and then an Add leave the record.
func netAddRemove(t *testing.T, open func() engine.Store) {
	s := open()
	rec := func(u string) engine.Record {
		return engine.Record{Function: []byte("ar"), Unique: []byte(u), Priority: engine.Normal, Data: []byte(u)}
	}
	var acked sync.WaitGroup
	add := func(r engine.Record) {
		acked.Add(1)
		s.Add(r, func(err error) {
			if err != nil {
				t.Errorf("Add %s: %v", r.Unique, err)
			}
			acked.Done()
		})
	}
	for i := range 100 {
		u := fmt.Sprintf("gone-%d", i)
		add(rec(u))
		s.Remove([]byte("ar"), []byte(u)) // before the Add is acknowledged
	}
	add(rec("back"))
	s.Remove([]byte("ar"), []byte("back"))
	add(rec("back"))
	add(rec("later"))
	acked.Wait()
	netAck(t, s, []engine.Record{rec("acked-then-removed")})
	s.Remove([]byte("ar"), []byte("acked-then-removed"))
	s.Remove([]byte("ar"), []byte("later"))
	s.Remove([]byte("never"), []byte("added"))
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	s = open()
	defer s.Close()
	netWantExactly(t, netReplay(t, s), []engine.Record{rec("back")})
}

// netAfterClose: an Add after Close fails (from another goroutine), a
// Remove is ignored.
func netAfterClose(t *testing.T, s engine.Store) {
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := netAddWait(t, s, engine.Record{Function: []byte("f"), Unique: []byte("u")}, 5*time.Second); err == nil {
		t.Fatalf("Add after Close acknowledged")
	}
	s.Remove([]byte("f"), []byte("u"))
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}

// netRestart: with the server stopped, Adds fail within the bound; once it
// is back the store reconnects by itself, Removes that failed meanwhile
// are applied, and everything acknowledged is there.
func netRestart(t *testing.T, open func() engine.Store, stop, start func()) {
	s := open()
	rec := func(phase string, i int) engine.Record {
		return engine.Record{Function: []byte("restart"), Unique: fmt.Appendf(nil, "%s-%d", phase, i), Priority: engine.Priority(i % 3), Data: fmt.Appendf(nil, "%s %d", phase, i), When: int64(i)}
	}
	var acked []engine.Record
	for i := range 100 {
		acked = append(acked, rec("before", i))
	}
	netAck(t, s, acked)

	stop()
	for i := range 10 {
		t0 := time.Now()
		err := netAddWait(t, s, rec("down", i), 2*netAttempt+2*time.Second)
		if err == nil {
			t.Fatalf("Add acknowledged with the server down")
		}
		if d := time.Since(t0); d > netAttempt+time.Second {
			t.Errorf("Add failed after %v, more than the bound %v", d, netAttempt)
		}
		if i == 0 {
			t.Logf("with the server down: %v", err)
		}
	}
	// Removed while down: retried once the server is back.
	s.Remove([]byte("restart"), []byte("before-0"))
	s.Remove([]byte("restart"), []byte("before-1"))
	acked = acked[2:]

	start()
	t0 := time.Now()
	for i := 0; ; i++ {
		r := rec("probe", i)
		if err := netAddWait(t, s, r, 2*netAttempt+2*time.Second); err == nil {
			acked = append(acked, r)
			break
		} else if time.Since(t0) > 20*time.Second {
			t.Fatalf("store did not reconnect in 20 s: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("reconnected %v after the restart", time.Since(t0).Round(time.Millisecond))
	var after []engine.Record
	for i := range 100 {
		after = append(after, rec("after", i))
	}
	netAck(t, s, after)
	acked = append(acked, after...)
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	s = open()
	defer s.Close()
	netWantExactly(t, netReplay(t, s), acked)
}

// netStall: with the server frozen (SIGSTOP: connections open, no
// answers), Adds fail after the bound rather than hang; once it runs again
// the store goes on. An Add that failed so may still have been written
// (the server runs what it had received once it resumes): at least once.
func netStall(t *testing.T, open func() engine.Store, freeze, thaw func()) {
	s := open()
	defer s.Close()
	rec := func(phase string, i int) engine.Record {
		return engine.Record{Function: []byte("stall"), Unique: fmt.Appendf(nil, "%s-%d", phase, i), Priority: engine.Normal, Data: []byte(phase)}
	}
	var acked []engine.Record
	for i := range 10 {
		acked = append(acked, rec("before", i))
	}
	netAck(t, s, acked)
	freeze()
	thawed := false
	defer func() {
		if !thawed {
			thaw()
		}
	}()
	t0 := time.Now()
	errc := make(chan error, 1)
	s.Add(rec("frozen", 0), func(err error) { errc <- err })
	// While the writer waits on the server with that Add: past the limit
	// of waiting Adds, an Add fails at once.
	q := s.(interface{ netq() *netQueue }).netq()
	for waiting := 1; waiting > 0; time.Sleep(10 * time.Millisecond) {
		q.mu.Lock()
		waiting = q.adds
		q.mu.Unlock()
	}
	q.mu.Lock()
	q.limit = 5
	q.mu.Unlock()
	full := make(chan error, 8)
	for i := range 8 {
		s.Add(rec("full", i), func(err error) { full <- err })
	}
	for range 3 {
		select {
		case err := <-full:
			if !errors.Is(err, ErrFull) {
				t.Errorf("Add past the limit: %v, want ErrFull", err)
			}
		case <-time.After(time.Second):
			t.Fatalf("Add past the limit did not fail at once")
		}
	}
	// The batch with the first Add fails after netAttempt.
	select {
	case err := <-errc:
		if err == nil {
			t.Fatalf("Add acknowledged by a frozen server")
		}
		t.Logf("frozen server: failed after %v: %v", time.Since(t0).Round(time.Millisecond), err)
	case <-time.After(netAttempt + 2*time.Second):
		t.Fatalf("Add not failed %v after the server froze", time.Since(t0))
	}
	if d := time.Since(t0); d < netAttempt-time.Second {
		t.Errorf("Adds failed after %v, before the bound", d)
	}
	q.mu.Lock()
	q.limit = MaxPending
	q.mu.Unlock()
	thaw()
	thawed = true
	t0 = time.Now()
	for i := 0; ; i++ {
		r := rec("after", i)
		if err := netAddWait(t, s, r, 2*netAttempt+2*time.Second); err == nil {
			acked = append(acked, r)
			break
		} else if time.Since(t0) > 20*time.Second {
			t.Fatalf("store did not recover in 20 s: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	for range 5 { // the Adds that waited: written once the server is back, or failed
		select {
		case <-full:
		case <-time.After(2*netAttempt + 2*time.Second):
			t.Fatalf("waiting Adds never done")
		}
	}
	got := netReplay(t, s)
	for _, w := range acked {
		if g, ok := got[netRecKey(w.Function, w.Unique)]; !ok {
			t.Errorf("acknowledged %q missing", w.Unique)
		} else if p := netSameRecord(g, w); p != "" {
			t.Error(p)
		}
	}
}

// The crash test: a child process (this test binary again) adds records
// and prints each acknowledged one; the parent SIGKILLs it after ~2,000
// acknowledgements, reopens the store and checks that every acknowledged
// record is replayed.

const netCrashEnv = "GEARSHARD_QUEUE_CRASH_CHILD"

func netCrashRecord(i int) engine.Record {
	return engine.Record{
		Function: fmt.Appendf(nil, "crash%d", i%5),
		Unique:   fmt.Appendf(nil, "c-%d", i),
		Priority: engine.Priority(i % 3),
		Data:     fmt.Appendf(nil, "payload %d \x00\xff", i),
		When:     int64(i%2) * 1700000000,
	}
}

// netCrashChild runs in the child: add records from 8 goroutines, 32 in
// flight each, printing "ack N" for each acknowledged one, until killed.
func netCrashChild(s engine.Store) {
	var mu sync.Mutex
	out := bufio.NewWriter(os.Stdout)
	go func() { // flush what is acknowledged promptly
		for {
			time.Sleep(2 * time.Millisecond)
			mu.Lock()
			out.Flush()
			mu.Unlock()
		}
	}()
	for g := range 8 {
		go func() {
			sem := make(chan struct{}, 32)
			for i := g; ; i += 8 {
				sem <- struct{}{}
				s.Add(netCrashRecord(i), func(err error) {
					if err == nil {
						mu.Lock()
						fmt.Fprintf(out, "ack %d\n", i)
						mu.Unlock()
					}
					<-sem
				})
			}
		}()
	}
	time.Sleep(60 * time.Second) // the parent kills us long before
	fmt.Fprintln(os.Stderr, "crash child: not killed")
	os.Exit(3)
}

func netCrash(t *testing.T, kind, addr, testName string, open func() engine.Store) {
	cmd := exec.Command(os.Args[0], "-test.run=^"+testName+"$", "-test.count=1")
	cmd.Env = append(os.Environ(), netCrashEnv+"="+kind+"\t"+addr)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	killed := false
	timer := time.AfterFunc(45*time.Second, func() { cmd.Process.Kill() })
	defer timer.Stop()
	acked := map[int]bool{}
	sc := bufio.NewScanner(stdout)
	for sc.Scan() {
		n, ok := strings.CutPrefix(sc.Text(), "ack ")
		if !ok {
			continue
		}
		i, err := strconv.Atoi(n)
		if err != nil {
			continue
		}
		acked[i] = true
		if len(acked) >= 2000 && !killed {
			cmd.Process.Signal(syscall.SIGKILL)
			killed = true
		}
	}
	cmd.Wait()
	if !killed {
		t.Fatalf("child ended after %d acknowledgements:\n%s", len(acked), stderr.String())
	}
	t.Logf("child killed after %d acknowledgements (counting those already in the pipe)", len(acked))
	s := open()
	defer s.Close()
	got := netReplay(t, s)
	missing := 0
	for i := range acked {
		w := netCrashRecord(i)
		g, ok := got[netRecKey(w.Function, w.Unique)]
		if !ok {
			if missing++; missing <= 10 {
				t.Errorf("acknowledged record %d not replayed", i)
			}
			continue
		}
		if p := netSameRecord(g, w); p != "" {
			t.Errorf("record %d: %s", i, p)
		}
	}
	if missing > 0 {
		t.Fatalf("%d of %d acknowledged records lost", missing, len(acked))
	}
	t.Logf("all %d acknowledged records replayed (%d in the store)", len(acked), len(got))
}

// netCrashChildArgs reports whether this process is a crash child for
// kind, and the address it is to use.
func netCrashChildArgs(kind string) (string, bool) {
	k, addr, ok := strings.Cut(os.Getenv(netCrashEnv), "\t")
	return addr, ok && k == kind
}

// fakeNet is a netBackend that fails its first fail writes as a server
// that cannot be reached would; it only checks netQueue's bookkeeping.
type fakeNet struct {
	mu       sync.Mutex
	fail     int
	attempts int
	written  [][]string
}

var errFakeDown = errors.New("fake server down")

func (f *fakeNet) write(ops []netOp) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.attempts++
	if f.fail > 0 {
		f.fail--
		return errFakeDown
	}
	var w []string
	for _, op := range ops {
		kind := "R:"
		if op.done != nil {
			kind = "A:"
		}
		w = append(w, kind+string(op.rec.Unique))
	}
	f.written = append(f.written, w)
	return nil
}

func (f *fakeNet) transient(err error) bool { return errors.Is(err, errFakeDown) }

// TestNetQueueCarry: a Remove that failed because the server was down is
// written again, before anything called after it.
func TestNetQueueCarry(t *testing.T) {
	f := &fakeNet{fail: 1}
	var q netQueue
	q.start(f, zerolog.Nop())
	q.remove([]byte("f"), []byte("k1"))
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		f.mu.Lock()
		n := f.attempts
		f.mu.Unlock()
		if n >= 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no write attempt")
		}
	}
	errc := make(chan error, 1)
	q.add(engine.Record{Function: []byte("f"), Unique: []byte("k1")}, func(err error) { errc <- err })
	if err := <-errc; err != nil {
		t.Fatalf("Add: %v", err)
	}
	if err := q.close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if got := fmt.Sprint(f.written); got != "[[R:k1 A:k1]]" {
		t.Errorf("written %s, want [[R:k1 A:k1]]", got)
	}
}
