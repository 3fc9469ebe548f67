package queue

import (
	"bufio"
	"bytes"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"gearshard/engine"
)

// storeAt gives a fresh, empty store location (a file, a table, a key
// prefix) and returns a function that opens it; that function is called
// again after Close to reopen the same location.
type storeAt func(t *testing.T) (open func(t *testing.T) engine.Store)

// testStore runs the behaviour every engine.Store must have against a real
// backend: round trip of any bytes, concurrent Adds, call order, flush on
// Close. TestSQLiteConformance and the tests of the network stores run it;
// the helpers below (addAll, addWait, replayAll, wantSet, sameRecord) are
// the ones every store test uses. fits, when not nil, picks the sample
// records the store can hold (memcached's keys are shorter than a
// database column allows); the store's own test shows it refuses the
// others.
func testStore(t *testing.T, fresh storeAt, fits func(engine.Record) bool) {
	t.Run("Empty", func(t *testing.T) {
		open := fresh(t)
		s := open(t)
		if got := replayAll(t, s); len(got) != 0 {
			t.Errorf("fresh store replays %d records", len(got))
		}
		closeStore(t, s)
	})
	t.Run("RoundTrip", func(t *testing.T) { testRoundTrip(t, fresh(t), fits) })
	t.Run("Concurrent", func(t *testing.T) { testConcurrent(t, fresh(t)) })
	t.Run("RemoveMany", func(t *testing.T) { testRemoveMany(t, fresh(t)) })
	t.Run("Order", func(t *testing.T) { testOrder(t, fresh(t)) })
	t.Run("CloseFlushes", func(t *testing.T) { testCloseFlushes(t, fresh(t)) })
	t.Run("AfterDone", func(t *testing.T) { testAfterDone(t, fresh(t)) })
	t.Run("AddAfterClose", func(t *testing.T) {
		open := fresh(t)
		s := open(t)
		closeStore(t, s)
		if err := addWait(t, s, engine.Record{Function: []byte("f"), Unique: []byte("u"), Priority: engine.Normal}, 5*time.Second); err == nil {
			t.Errorf("Add after Close acknowledged")
		}
		s.Remove([]byte("f"), []byte("u")) // must not panic or block
		if err := s.Close(); err != nil {
			t.Errorf("second Close: %v", err)
		}
	})
}

// sampleRecords covers keys and data of any bytes, all priorities and run-at
// times, within the limits of every store: PostgreSQL's VARCHAR(64) unique,
// VARCHAR(255) function and INTEGER run-at time (TestSQLiteWideWhen has one
// past 2038).
func sampleRecords() []engine.Record {
	made := func(n uint64) []byte { // a key as the engine makes up for an empty unique
		return engine.AppendMadeUpKey(nil, nil, n)
	}
	big := bytes.Repeat([]byte("0123456789\x00\xff"), 1<<17) // 1.5 MB
	rs := []engine.Record{
		{Function: []byte("reverse"), Unique: made(1), Priority: engine.Normal, Data: []byte("hello")},
		{Function: []byte("reverse"), Unique: made(2), Priority: engine.Normal, Data: []byte("hello")}, // same data, distinct made-up keys
		{Function: []byte("reverse"), Unique: engine.AppendMadeUpKey(nil, []byte("-"), 3), Priority: engine.Low, Data: []byte("dash")},
		{Function: []byte("reverse"), Unique: []byte("gs~abc"), Priority: engine.Normal, Data: []byte("a client's unique")},
		{Function: []byte("reverse"), Unique: []byte("a-b-c"), Priority: engine.High, Data: []byte("x\x00y\x00")},
		{Function: []byte("a-b"), Unique: []byte("c"), Priority: engine.Low, Data: []byte("")},
		{Function: []byte("a"), Unique: []byte("b-c"), Priority: engine.Low, Data: nil},
		{Function: []byte("fn\xff\xfe"), Unique: []byte("\xff\x80 raw \x01\x7f"), Priority: engine.High, Data: []byte{0, 0, 0}},
		{Function: []byte("quote'\"`;--"), Unique: []byte("') DROP TABLE queue; --"), Priority: engine.Normal, Data: []byte("q")},
		{Function: []byte("ünïcödé"), Unique: []byte("日本"), Priority: engine.Normal, Data: []byte("u"), When: 1},
		{Function: []byte("epoch"), Unique: []byte("e1"), Priority: engine.Normal, Data: []byte("later"), When: 2000000000},
		{Function: []byte("epoch"), Unique: []byte("e2"), Priority: engine.Low, Data: []byte("past"), When: 1000000000},
		{Function: []byte("same"), Unique: []byte("k"), Priority: engine.Normal, Data: []byte("1")},
		{Function: []byte("same2"), Unique: []byte("k"), Priority: engine.Normal, Data: []byte("2")}, // same unique, other function
		{Function: []byte("big"), Unique: []byte("big"), Priority: engine.Normal, Data: big},
		{Function: []byte("sp ace"), Unique: []byte(" "), Priority: engine.High, Data: []byte("\n")},
		{Function: []byte("long"), Unique: bytes.Repeat([]byte{'u', 0xff}, 32), Priority: engine.Normal, Data: []byte("L")},
		{Function: []byte("pct%2D"), Unique: []byte("%25-%"), Priority: engine.Normal, Data: []byte("escapes")},
		{Function: []byte("bin"), Unique: []byte("\xff\xfe\x00\x01 raw"), Priority: engine.High, Data: []byte{0, 0, 0, 0xff}},
		{Function: []byte("bin\x00fn\xc3"), Unique: []byte("\xf4\x8f\xb8\x80 looks escaped \U0010FE41"), Priority: engine.Normal, Data: []byte("e")},
		{Function: []byte("with-dash-es"), Unique: []byte("with-dash-es"), Priority: engine.High, Data: []byte("-")},
		{Function: bytes.Repeat([]byte{0xff}, 255), Unique: bytes.Repeat([]byte{0xfe}, 64), Priority: engine.Normal, Data: []byte("longest keys")},
	}
	return rs
}

func testRoundTrip(t *testing.T, open func(t *testing.T) engine.Store, fits func(engine.Record) bool) {
	s := open(t)
	var rs []engine.Record
	for _, r := range sampleRecords() {
		if fits == nil || fits(r) {
			rs = append(rs, r)
		}
	}
	addAll(t, s, rs)
	// Remove some: by fresh copies of the key, as the engine would.
	removed := map[int]bool{1: true, 3: true, 10: true, 12: true}
	var keep []engine.Record
	for i, r := range rs {
		if removed[i] {
			s.Remove(bytes.Clone(r.Function), bytes.Clone(r.Unique))
		} else {
			keep = append(keep, r)
		}
	}
	s.Remove([]byte("never"), []byte("added")) // no-op
	closeStore(t, s)

	s = open(t)
	defer closeStore(t, s)
	got := replayAll(t, s)
	wantSet(t, got, keep)

	// Replay is repeatable and reads what the store holds, not a cache.
	wantSet(t, replayAll(t, s), keep)
}

func testConcurrent(t *testing.T, open func(t *testing.T) engine.Store) {
	s := open(t)
	const goroutines, each = 8, 1250
	var wg, acked sync.WaitGroup
	errs := make(chan error, goroutines*each)
	acked.Add(goroutines * each)
	for g := range goroutines {
		wg.Go(func() {
			for i := range each {
				r := engine.Record{
					Function: fmt.Appendf(nil, "fn%d", i%7),
					Unique:   fmt.Appendf(nil, "g%d-%d", g, i),
					Priority: engine.Priority(i % 3),
					Data:     fmt.Appendf(nil, "data %d %d", g, i),
					When:     int64(i),
				}
				s.Add(r, func(err error) {
					if err != nil {
						errs <- err
					}
					acked.Done()
				})
			}
		})
	}
	wg.Wait()
	if !waitTimeout(&acked, 60*time.Second) {
		t.Fatalf("not every Add was acknowledged")
	}
	close(errs)
	for err := range errs {
		t.Fatalf("Add failed: %v", err)
	}
	closeStore(t, s)

	s = open(t)
	defer closeStore(t, s)
	got := replayAll(t, s)
	if len(got) != goroutines*each {
		t.Fatalf("replayed %d records, want %d", len(got), goroutines*each)
	}
	for g := range goroutines {
		for i := range each {
			k := recKey(fmt.Appendf(nil, "fn%d", i%7), fmt.Appendf(nil, "g%d-%d", g, i))
			r, ok := got[k]
			if !ok {
				t.Fatalf("missing %q", k)
			}
			if string(r.Data) != fmt.Sprintf("data %d %d", g, i) || r.Priority != engine.Priority(i%3) || r.When != int64(i) {
				t.Fatalf("%q replayed as %+v", k, r)
			}
		}
	}
}

// testRemoveMany: bursts of Removes from many goroutines, interleaved
// with Adds, delete exactly their keys.
func testRemoveMany(t *testing.T, open func(t *testing.T) engine.Store) {
	s := open(t)
	rec := func(i int) engine.Record {
		return engine.Record{Function: fmt.Appendf(nil, "rm%d", i%3), Unique: fmt.Appendf(nil, "%d", i), Priority: engine.Normal, Data: []byte{byte(i)}}
	}
	const n = 3000
	var rs []engine.Record
	for i := range n {
		rs = append(rs, rec(i))
	}
	addAll(t, s, rs)
	var want []engine.Record
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			for i := g; i < n; i += 4 {
				if i%3 != 0 {
					r := rec(i)
					s.Remove(r.Function, r.Unique)
				}
			}
		})
	}
	wg.Wait()
	for i := range n {
		if i%3 == 0 {
			want = append(want, rec(i))
		}
	}
	more := []engine.Record{rec(n), rec(n + 1)}
	addAll(t, s, more)
	want = append(want, more...)
	closeStore(t, s)
	s = open(t)
	defer closeStore(t, s)
	wantSet(t, replayAll(t, s), want)
}

// testOrder: writes take effect in call order, also when they fall into
// one batch.
func testOrder(t *testing.T, open func(t *testing.T) engine.Store) {
	s := open(t)
	rec := func(u string) engine.Record {
		return engine.Record{Function: []byte("order"), Unique: []byte(u), Priority: engine.Normal, Data: []byte(u)}
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
	for i := range 200 {
		u := fmt.Sprintf("gone%d", i)
		add(rec(u))
		s.Remove([]byte("order"), []byte(u)) // before the Add is acknowledged
	}
	add(rec("stays"))
	// Removed, then added again: present.
	add(rec("back"))
	s.Remove([]byte("order"), []byte("back"))
	add(rec("back"))
	if !waitTimeout(&acked, 30*time.Second) {
		t.Fatalf("Adds not acknowledged")
	}
	// Removed once acknowledged, in a later batch.
	s.Remove([]byte("order"), []byte("stays"))
	add(rec("last"))
	closeStore(t, s)

	s = open(t)
	defer closeStore(t, s)
	wantSet(t, replayAll(t, s), []engine.Record{rec("back"), rec("last")})
}

// testCloseFlushes: Close writes and acknowledges everything queued.
func testCloseFlushes(t *testing.T, open func(t *testing.T) engine.Store) {
	s := open(t)
	const n = 3000
	var mu sync.Mutex
	acks, fails := 0, 0
	var want []engine.Record
	for i := range n {
		r := engine.Record{Function: []byte("flush"), Unique: fmt.Appendf(nil, "%d", i), Priority: engine.Low, Data: []byte("d")}
		want = append(want, r)
		s.Add(r, func(err error) {
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				fails++
			} else {
				acks++
			}
		})
	}
	closeStore(t, s)
	mu.Lock()
	if acks != n || fails != 0 {
		t.Errorf("after Close: %d acknowledged, %d failed, want %d and 0", acks, fails, n)
	}
	mu.Unlock()
	s = open(t)
	defer closeStore(t, s)
	wantSet(t, replayAll(t, s), want)
}

// addAll adds rs and waits until each is acknowledged without error.
func addAll(t testing.TB, s engine.Store, rs []engine.Record) {
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

// addWait adds r and returns done's error, failing the test when done is
// not called within limit.
func addWait(t testing.TB, s engine.Store, r engine.Record, limit time.Duration) error {
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

func closeStore(t testing.TB, s engine.Store) {
	t.Helper()
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
}

func recKey(function, unique []byte) string {
	return hex.EncodeToString(function) + "/" + hex.EncodeToString(unique)
}

// replayAll returns the replayed records by key, copied out of fn, and
// fails on a key replayed twice.
func replayAll(t testing.TB, s engine.Store) map[string]engine.Record {
	t.Helper()
	got := map[string]engine.Record{}
	err := s.Replay(func(r engine.Record) {
		k := recKey(r.Function, r.Unique)
		if _, dup := got[k]; dup {
			t.Errorf("replayed twice: %q %q", r.Function, r.Unique)
		}
		got[k] = engine.Record{
			Function: bytes.Clone(r.Function), Unique: bytes.Clone(r.Unique),
			Priority: r.Priority, Data: bytes.Clone(r.Data), When: r.When,
		}
	})
	if err != nil {
		t.Fatalf("Replay: %v", err)
	}
	return got
}

// wantSet fails unless got holds exactly want (nil and empty data alike).
func wantSet(t testing.TB, got map[string]engine.Record, want []engine.Record) {
	t.Helper()
	var problems []string
	seen := map[string]bool{}
	for _, w := range want {
		k := recKey(w.Function, w.Unique)
		seen[k] = true
		if g, ok := got[k]; !ok {
			problems = append(problems, fmt.Sprintf("missing %q/%q", w.Function, w.Unique))
		} else if p := sameRecord(g, w); p != "" {
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

// sameRecord reports how the replayed g differs from w ("" when it does
// not; nil and empty data alike).
func sameRecord(g, w engine.Record) string {
	switch {
	case !bytes.Equal(g.Function, w.Function) || !bytes.Equal(g.Unique, w.Unique):
		return fmt.Sprintf("key %q/%q replayed as %q/%q", w.Function, w.Unique, g.Function, g.Unique)
	case !bytes.Equal(g.Data, w.Data):
		return fmt.Sprintf("%q/%q: data %q (%d bytes), want %q (%d bytes)", w.Function, w.Unique, trunc(g.Data), len(g.Data), trunc(w.Data), len(w.Data))
	case g.Priority != w.Priority || g.When != w.When:
		return fmt.Sprintf("%q/%q: priority %d when %d, want %d %d", w.Function, w.Unique, g.Priority, g.When, w.Priority, w.When)
	}
	return ""
}

func trunc(b []byte) []byte {
	if len(b) > 40 {
		return b[:40]
	}
	return b
}

func waitTimeout(wg *sync.WaitGroup, d time.Duration) bool {
	c := make(chan struct{})
	go func() { wg.Wait(); close(c) }()
	select {
	case <-c:
		return true
	case <-time.After(d):
		return false
	}
}

// testAfterDone: every done call is followed, on the same goroutine, by a
// call of the AfterDone function (the engine sends a batch's replies then),
// for a batch of acknowledged Adds and for a refused one.
func testAfterDone(t *testing.T, open func(t *testing.T) engine.Store) {
	s := open(t)
	var mu sync.Mutex
	unflushed := 0 // done calls not yet followed by an after call
	afters := 0
	s.AfterDone(func() {
		mu.Lock()
		unflushed = 0
		afters++
		mu.Unlock()
	})
	const n = 300
	var wg sync.WaitGroup
	wg.Add(n)
	for i := range n {
		r := engine.Record{Function: []byte("after"), Unique: fmt.Appendf(nil, "u%d", i), Priority: engine.Normal, Data: []byte("d")}
		s.Add(r, func(err error) {
			if err != nil {
				t.Errorf("add %d: %v", i, err)
			}
			mu.Lock()
			unflushed++
			mu.Unlock()
			wg.Done()
		})
	}
	wg.Wait()
	closeStore(t, s) // after Close every callback run has ended
	mu.Lock()
	if unflushed != 0 || afters == 0 || afters > n {
		t.Errorf("%d done calls never followed by the after function (%d after calls for %d Adds)", unflushed, afters, n)
	}
	mu.Unlock()

	refused := make(chan struct{})
	s.Add(engine.Record{Function: []byte("after"), Unique: []byte("late"), Priority: engine.Normal}, func(err error) {
		if err == nil {
			t.Errorf("Add after Close acknowledged")
		}
		mu.Lock()
		unflushed++
		mu.Unlock()
		close(refused)
	})
	<-refused
	deadline := time.Now().Add(5 * time.Second)
	for {
		mu.Lock()
		u := unflushed
		mu.Unlock()
		if u == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("a refused Add's done was not followed by the after function")
		}
		time.Sleep(time.Millisecond)
	}
}

// The crash test: a child process (this test binary again, running the
// same test) adds records and writes "ack N" for each acknowledged one;
// the parent SIGKILLs it after 2,000 acknowledgements, reopens the store
// and checks that every acknowledged record is replayed, as it was added.
// TestSQLiteCrash, TestSQLiteCrashWithRemoves, TestPostgresCrash and
// TestRedisCrash run it.

// crashCase is a store under the crash test.
type crashCase struct {
	store string // in failure messages
	// setup, in the parent, gives a fresh location for the store (a file,
	// a server's address); the child gets it too.
	setup func(t *testing.T) string
	open  func(t *testing.T, at string) engine.Store
	// removes: the child removes each even-numbered record once it is
	// acknowledged (as a worker finishes the job), so that Removes go with
	// the Adds' writes; such a record may or may not be replayed.
	removes bool
	// check, when not nil, checks the location once the replay is checked.
	check func(t *testing.T, at string)
}

// crashEnv tells the child which test it runs for, and where the store is:
// "TestName\tlocation".
const crashEnv = "GEARSHARD_QUEUE_CRASH_CHILD"

func crashRecord(n int) engine.Record {
	return engine.Record{
		Function: fmt.Appendf(nil, "crash%d", n%5),
		Unique:   fmt.Appendf(nil, "c-%d", n),
		Priority: engine.Priority(n % 3),
		Data:     fmt.Appendf(nil, "payload %d \x00\xff", n),
		When:     int64(n%2) * 1700000000,
	}
}

func testCrash(t *testing.T, c crashCase) {
	if name, at, ok := strings.Cut(os.Getenv(crashEnv), "\t"); ok && name == t.Name() {
		crashChild(c.open(t, at), c.removes)
		return
	}
	at := c.setup(t)
	closeStore(t, c.open(t, at)) // the store (file, table) exists before the child starts
	// -test.v: what the child logs reaches the parent at once.
	cmd := exec.Command(os.Args[0], "-test.run=^"+t.Name()+"$", "-test.count=1", "-test.v")
	cmd.Env = append(os.Environ(), crashEnv+"="+t.Name()+"\t"+at)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	killed := false
	timer := time.AfterFunc(90*time.Second, func() { cmd.Process.Kill() })
	defer timer.Stop()
	acked := map[int]bool{}
	sc := bufio.NewScanner(stdout)
	for sc.Scan() {
		line := sc.Text()
		n, isAck := strings.CutPrefix(line, "ack ")
		i, err := strconv.Atoi(n)
		if !isAck || err != nil {
			t.Logf("%s child: %s", c.store, line)
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
		t.Fatalf("%s: child ended after %d acknowledgements without being killed; stderr:\n%s", c.store, len(acked), stderr.String())
	}
	t.Logf("%s: child killed after %d acknowledgements (counting those already in the pipe)", c.store, len(acked))

	s := c.open(t, at)
	defer closeStore(t, s)
	got := replayAll(t, s)
	lost, wrong, removed := 0, 0, 0
	for i := range acked {
		w := crashRecord(i)
		g, ok := got[recKey(w.Function, w.Unique)]
		switch {
		case !ok && c.removes && i%2 == 0:
			removed++
		case !ok:
			if lost++; lost <= 10 {
				t.Errorf("%s: acknowledged record %d (%q/%q) not replayed", c.store, i, w.Function, w.Unique)
			}
		default:
			if p := sameRecord(g, w); p != "" {
				if wrong++; wrong <= 10 {
					t.Errorf("%s: acknowledged record %d: %s", c.store, i, p)
				}
			}
		}
	}
	if lost+wrong > 0 {
		t.Fatalf("%s: of %d acknowledged records %d lost, %d replayed wrong", c.store, len(acked), lost, wrong)
	}
	t.Logf("%s: all %d acknowledged records replayed (but %d removed); %d in the store", c.store, len(acked), removed, len(got))
	if c.removes && removed == 0 {
		t.Errorf("%s: no Remove reached the store", c.store)
	}
	if c.check != nil {
		c.check(t, at)
	}
}

// crashChild runs in the child: it adds records without end from 8
// goroutines, 32 in flight each, and writes "ack N" the moment record N is
// acknowledged, until killed.
func crashChild(s engine.Store, removes bool) {
	var next atomic.Int64
	var out sync.Mutex
	for range 8 {
		go func() {
			sem := make(chan struct{}, 32)
			for {
				sem <- struct{}{}
				n := int(next.Add(1))
				r := crashRecord(n)
				s.Add(r, func(err error) {
					if err == nil {
						out.Lock()
						os.Stdout.WriteString("ack " + strconv.Itoa(n) + "\n")
						out.Unlock()
						if removes && n%2 == 0 {
							s.Remove(r.Function, r.Unique)
						}
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
