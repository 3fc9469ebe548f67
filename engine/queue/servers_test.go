package queue

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
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

// What only the PostgreSQL and Redis stores have (a server that can go
// away or freeze); the generic suite and its helpers are in
// conformance_test.go.

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
	addAll(t, s, acked)

	stop()
	for i := range 10 {
		t0 := time.Now()
		err := addWait(t, s, rec("down", i), 2*netAttempt+2*time.Second)
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
		if err := addWait(t, s, r, 2*netAttempt+2*time.Second); err == nil {
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
	addAll(t, s, after)
	acked = append(acked, after...)
	closeStore(t, s)
	s = open()
	defer s.Close()
	wantSet(t, replayAll(t, s), acked)
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
	addAll(t, s, acked)
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
		if err := addWait(t, s, r, 2*netAttempt+2*time.Second); err == nil {
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
	got := replayAll(t, s)
	for _, w := range acked {
		if g, ok := got[recKey(w.Function, w.Unique)]; !ok {
			t.Errorf("acknowledged %q missing", w.Unique)
		} else if p := sameRecord(g, w); p != "" {
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
	got := replayAll(t, s)
	missing := 0
	for i := range acked {
		w := netCrashRecord(i)
		g, ok := got[recKey(w.Function, w.Unique)]
		if !ok {
			if missing++; missing <= 10 {
				t.Errorf("acknowledged record %d not replayed", i)
			}
			continue
		}
		if p := sameRecord(g, w); p != "" {
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
