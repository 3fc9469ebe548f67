package queue

import (
	"errors"
	"fmt"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"gearshard/engine"
)

// netStore is what the tests of a store on a database server (PostgreSQL
// or Redis, from gearshard/engine/queue/queuetest, which the end-to-end
// tests of cmd/gearshard share) need to know of it: pgStore, redisStore.
type netStore struct {
	name string // in failure messages
	// server starts a server of the test's own and gives the address the
	// store opens.
	server func(t testing.TB) (netServer, string)
	// dial opens the store on the server at addr, under the table or key
	// prefix at ("": gearmand's default, dflt).
	dial func(addr, at string) (engine.Store, error)
	dflt string
	// crash is how the restart test stops the server: abruptly, so that
	// only what the server made durable survives.
	crash syscall.Signal
	// fits picks the records of the conformance suite the store can hold
	// (nil: all).
	fits func(engine.Record) bool
	// volatile: the server keeps nothing across its own restart
	// (memcached).
	volatile bool
}

// open is dial, failing the test on an error.
func (n netStore) open(t testing.TB, addr, at string) engine.Store {
	t.Helper()
	s, err := n.dial(addr, at)
	if err != nil {
		t.Fatalf("%s: open at %q: %v", n.name, at, err)
	}
	return s
}

// netServer is a queuetest.Postgres or queuetest.Redis.
type netServer interface {
	Start()
	Stop(sig syscall.Signal)
	Signal(sig syscall.Signal)
}

// What only the PostgreSQL and Redis stores have (a server that can go
// away or freeze); the generic suite and its helpers are in
// conformance_test.go.

// netRestart: with the server stopped, Adds fail within the bound; once it
// is back the store reconnects by itself, Removes that failed meanwhile
// are applied, and everything acknowledged is there (for a volatile
// server, everything acknowledged since it came back).
func netRestart(t *testing.T, n netStore) {
	srv, addr := n.server(t)
	open := func() engine.Store { return n.open(t, addr, "") }
	s := open()
	rec := func(phase string, i int) engine.Record {
		return engine.Record{Function: []byte("restart"), Unique: fmt.Appendf(nil, "%s-%d", phase, i), Priority: engine.Priority(i % 3), Data: fmt.Appendf(nil, "%s %d", phase, i), When: int64(i)}
	}
	var acked []engine.Record
	for i := range 100 {
		acked = append(acked, rec("before", i))
	}
	addAll(t, s, acked)

	srv.Stop(n.crash)
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
	if n.volatile {
		acked = nil
	}

	srv.Start()
	acked = append(acked, netBack(t, s, "restart", func(i int) engine.Record { return rec("probe", i) }))
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

// netBack: once the server is back (after event), the store goes on by
// itself: it adds rec(0), rec(1), ... until one is acknowledged, within
// 20 s, and returns that one.
func netBack(t *testing.T, s engine.Store, event string, rec func(i int) engine.Record) engine.Record {
	t.Helper()
	t0 := time.Now()
	for i := 0; ; i++ {
		r := rec(i)
		if err := addWait(t, s, r, 2*netAttempt+2*time.Second); err == nil {
			t.Logf("store back %v after the %s", time.Since(t0).Round(time.Millisecond), event)
			return r
		} else if time.Since(t0) > 20*time.Second {
			t.Fatalf("store not back 20 s after the %s: %v", event, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// netStall: with the server frozen (SIGSTOP: connections open, no
// answers), Adds fail after the bound rather than hang; once it runs again
// the store goes on. An Add that failed so may still have been written
// (the server runs what it had received once it resumes): at least once.
func netStall(t *testing.T, n netStore) {
	srv, addr := n.server(t)
	s := n.open(t, addr, "")
	defer s.Close()
	rec := func(phase string, i int) engine.Record {
		return engine.Record{Function: []byte("stall"), Unique: fmt.Appendf(nil, "%s-%d", phase, i), Priority: engine.Normal, Data: []byte(phase)}
	}
	var acked []engine.Record
	for i := range 10 {
		acked = append(acked, rec("before", i))
	}
	addAll(t, s, acked)
	srv.Signal(syscall.SIGSTOP)
	thawed := false
	defer func() {
		if !thawed {
			srv.Signal(syscall.SIGCONT)
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
	srv.Signal(syscall.SIGCONT)
	thawed = true
	acked = append(acked, netBack(t, s, "thaw", func(i int) engine.Record { return rec("after", i) }))
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

// netCrash is the crash test (testCrash) against a server of the test's
// own, which stays up: what the store acknowledged must be on it.
func netCrash(t *testing.T, n netStore) {
	testCrash(t, crashCase{
		store: n.name,
		setup: func(t *testing.T) string { _, addr := n.server(t); return addr },
		open:  func(t *testing.T, addr string) engine.Store { return n.open(t, addr, "crash") },
	})
}

// netConformance runs the generic suite against one server, each part
// under a table or key prefix of its own.
func netConformance(t *testing.T, n netStore, addr string) {
	parts := 0
	testStore(t, func(t *testing.T) func(t *testing.T) engine.Store {
		parts++
		at := fmt.Sprintf("conformance%d", parts)
		return func(t *testing.T) engine.Store { return n.open(t, addr, at) }
	}, n.fits)
}

// netDefault: a store opened without a table or key prefix is at
// gearmand's default one: r, added so, replays from there.
func netDefault(t *testing.T, n netStore, addr string, r engine.Record) {
	t.Helper()
	s := n.open(t, addr, "")
	addAll(t, s, []engine.Record{r})
	closeStore(t, s)
	s = n.open(t, addr, n.dflt)
	defer closeStore(t, s)
	wantSet(t, replayAll(t, s), []engine.Record{r})
}

// netDashKeys: jobs whose function and unique join with '-' to the same
// string, or whose names look escaped, are distinct jobs under the key
// prefix at; more are the store's own such cases.
func netDashKeys(t *testing.T, n netStore, addr, at string, more ...engine.Record) {
	s := n.open(t, addr, at)
	rs := append([]engine.Record{
		{Function: []byte("a-b"), Unique: []byte("c"), Priority: engine.Normal, Data: []byte("1")},
		{Function: []byte("a"), Unique: []byte("b-c"), Priority: engine.Normal, Data: []byte("2")},
		{Function: []byte("a-b-c"), Unique: []byte(""), Priority: engine.Normal, Data: []byte("3")},
		{Function: []byte("a%2Db"), Unique: []byte("c"), Priority: engine.Normal, Data: []byte("4")},
		{Function: []byte("a"), Unique: []byte("b%2Dc"), Priority: engine.Normal, Data: []byte("5")},
	}, more...)
	addAll(t, s, rs)
	closeStore(t, s)
	s = n.open(t, addr, at)
	defer closeStore(t, s)
	wantSet(t, replayAll(t, s), rs)
}

// netNoServer: opening the store at addr, where no server listens, fails
// within the bound of one attempt.
func netNoServer(t *testing.T, n netStore, addr string) {
	t.Helper()
	t0 := time.Now()
	if s, err := n.dial(addr, ""); err == nil {
		s.Close()
		t.Errorf("%s: open of a server that is not there succeeded", n.name)
	} else if d := time.Since(t0); d > netAttempt+time.Second {
		t.Errorf("%s: open failed after %v, more than the bound %v", n.name, d, netAttempt)
	}
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
	q.Remove([]byte("f"), []byte("k1"))
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
	q.add(engine.Record{Function: []byte("f"), Unique: []byte("k1")}, func(err error) { errc <- err }, nil)
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
