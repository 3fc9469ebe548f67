package queue

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"modernc.org/libc"
	sqlite3 "modernc.org/sqlite/lib"

	"gearshard/engine"
	"gearshard/engine/queue/queuetest"
	"gearshard/netio/gstest"
	"gearshard/wire"
)

func testLog(t testing.TB) zerolog.Logger {
	return zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.WarnLevel)
}

func openSQLiteT(t testing.TB, path string) *SQLite {
	t.Helper()
	s, err := OpenSQLite(path, "", testLog(t))
	if err != nil {
		t.Fatalf("OpenSQLite: %v", err)
	}
	return s
}

func TestSQLiteConformance(t *testing.T) {
	testStore(t, func(t *testing.T) func(t *testing.T) engine.Store {
		path := filepath.Join(t.TempDir(), "queue.db")
		return func(t *testing.T) engine.Store { return openSQLiteT(t, path) }
	}, nil)
}

// Run-at times past 2038 (beyond PostgreSQL's INTEGER, so not in the
// conformance data) round trip.
func TestSQLiteWideWhen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "queue.db")
	s := openSQLiteT(t, path)
	r := engine.Record{Function: []byte("epoch"), Unique: []byte("e1"), Priority: engine.Normal, Data: []byte("later"), When: 4102444800}
	addAll(t, s, []engine.Record{r})
	closeStore(t, s)
	s = openSQLiteT(t, path)
	defer closeStore(t, s)
	wantSet(t, replayAll(t, s), []engine.Record{r})
}

// rawDB opens the file without the store, as another program would.
func rawDB(t *testing.T, path string) *sql.DB {
	t.Helper()
	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	db.SetMaxOpenConns(1)
	t.Cleanup(func() { db.Close() })
	return db
}

func TestSQLiteTableName(t *testing.T) {
	dir := t.TempDir()
	for _, bad := range []string{"a;DROP TABLE x", "a-b", "1abc", `a"b`, "a b", "tab\x00", strings.Repeat("a", 65)} {
		if s, err := OpenSQLite(filepath.Join(dir, "bad.db"), bad, testLog(t)); err == nil {
			s.Close()
			t.Errorf("table %q accepted", bad)
		}
	}
	if _, err := OpenSQLite("", "", testLog(t)); err == nil {
		t.Errorf("empty path accepted")
	}
	path := filepath.Join(dir, "custom.db")
	s, err := OpenSQLite(path, "My_Queue2", testLog(t))
	if err != nil {
		t.Fatal(err)
	}
	addAll(t, s, []engine.Record{{Function: []byte("f"), Unique: []byte("u"), Priority: engine.Low, Data: []byte("d")}})
	closeStore(t, s)
	var n int
	if err := rawDB(t, path).QueryRow(`SELECT count(*) FROM My_Queue2`).Scan(&n); err != nil || n != 1 {
		t.Fatalf("custom table: %d rows, %v", n, err)
	}
}

// The table is gearmand's, column for column, and the file is in WAL mode.
func TestSQLiteSchema(t *testing.T) {
	path := filepath.Join(t.TempDir(), "q.db")
	closeStore(t, openSQLiteT(t, path))
	db := rawDB(t, path)
	rows, err := db.Query(`PRAGMA table_info(gearman_queue)`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var got []string
	for rows.Next() {
		var cid, notnull, pk int
		var name, typ string
		var dflt sql.NullString
		if err := rows.Scan(&cid, &name, &typ, &notnull, &dflt, &pk); err != nil {
			t.Fatal(err)
		}
		got = append(got, fmt.Sprintf("%s %s pk%d", name, typ, pk))
	}
	want := "unique_key TEXT pk1,function_name TEXT pk2,priority INTEGER pk0,data BLOB pk0,when_to_run INTEGER pk0"
	if strings.Join(got, ",") != want {
		t.Errorf("columns %q\nwant    %q", strings.Join(got, ","), want)
	}
	var mode string
	if err := db.QueryRow(`PRAGMA journal_mode`).Scan(&mode); err != nil || mode != "wal" {
		t.Errorf("journal_mode %q, %v", mode, err)
	}
}

// Rows as gearmand writes them (TEXT keys, an empty unique, NULL when) replay,
// and a Remove deletes such a row although gearshard binds keys as BLOBs.
func TestSQLiteGearmandRows(t *testing.T) {
	path := filepath.Join(t.TempDir(), "q.db")
	closeStore(t, openSQLiteT(t, path))
	db := rawDB(t, path)
	ins := `INSERT INTO gearman_queue (unique_key, function_name, priority, data, when_to_run) VALUES (?, ?, ?, ?, ?)`
	for _, row := range [][]any{
		{"u-1", "reverse", 0, []byte("a\x00b"), 0},
		{"", "reverse", 1, []byte("empty unique"), nil},
		{"u-3", "fn-x", 2, nil, 1700000000},
		{"u-4", "fn-x", nil, []byte("null priority"), 0},
	} {
		if _, err := db.Exec(ins, row...); err != nil {
			t.Fatal(err)
		}
	}
	db.Close()

	s := openSQLiteT(t, path)
	want := []engine.Record{
		{Function: []byte("reverse"), Unique: []byte("u-1"), Priority: engine.High, Data: []byte("a\x00b")},
		{Function: []byte("reverse"), Unique: []byte(""), Priority: engine.Normal, Data: []byte("empty unique")},
		{Function: []byte("fn-x"), Unique: []byte("u-3"), Priority: engine.Low, When: 1700000000},
		{Function: []byte("fn-x"), Unique: []byte("u-4"), Priority: engine.Normal, Data: []byte("null priority")},
	}
	wantSet(t, replayAll(t, s), want)
	s.Remove([]byte("reverse"), []byte("u-1"))
	s.Remove([]byte("reverse"), nil)
	s.Remove([]byte("fn-x"), []byte("u-3"))
	closeStore(t, s)
	s = openSQLiteT(t, path)
	defer closeStore(t, s)
	wantSet(t, replayAll(t, s), want[3:])
}

// The writer's own connection (not database/sql's) syncs every commit:
// WAL with synchronous=FULL, durable against power loss and not only
// against a crash of the process.
func TestSQLiteWriterDurable(t *testing.T) {
	path := filepath.Join(t.TempDir(), "q.db")
	closeStore(t, openSQLiteT(t, path))
	c, err := openWriterConn(path, DefaultSQLiteTable, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.close()
	for q, want := range map[string]string{"PRAGMA synchronous": "2", "PRAGMA journal_mode": "wal"} {
		st, err := c.prepare(q)
		if err != nil {
			t.Fatal(err)
		}
		got := ""
		if sqlite3.Xsqlite3_step(c.tls, st) == sqlite3.SQLITE_ROW {
			got = libc.GoString(sqlite3.Xsqlite3_column_text(c.tls, st, 0))
		}
		sqlite3.Xsqlite3_finalize(c.tls, st)
		if got != want {
			t.Errorf("%s: %q, want %q", q, got, want)
		}
	}
}

// Removes do not force commits of their own: queued before an Add, they
// are in the file once that Add is acknowledged (they share its commit);
// alone, they are written together after at most removeDelay.
func TestSQLiteRemoveFolded(t *testing.T) {
	path := filepath.Join(t.TempDir(), "q.db")
	s := openSQLiteT(t, path)
	defer closeStore(t, s)
	rec := func(i int) engine.Record {
		return engine.Record{Function: []byte("fold"), Unique: fmt.Appendf(nil, "u%d", i), Priority: engine.Normal, Data: fmt.Appendf(nil, "d%d", i)}
	}
	var rs []engine.Record
	for i := range 40 {
		rs = append(rs, rec(i))
	}
	addAll(t, s, rs)
	db := rawDB(t, path)
	rows := func() int {
		var n int
		if err := db.QueryRow(`SELECT count(*) FROM gearman_queue`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	base := s.commits.Load()
	for i := range 10 {
		s.Remove(rec(i).Function, rec(i).Unique)
	}
	addAll(t, s, []engine.Record{rec(40)})
	if n := rows(); n != 31 {
		t.Fatalf("after the Add following 10 Removes: %d rows, want 31", n)
	}
	t.Logf("10 Removes and an Add: %d commits", s.commits.Load()-base)

	// 20 Removes alone, 2 ms apart: a handful of commits, not 20.
	base = s.commits.Load()
	for i := 10; i < 30; i++ {
		s.Remove(rec(i).Function, rec(i).Unique)
		time.Sleep(2 * time.Millisecond)
	}
	gstest.Eventually(t, 5*time.Second, func() bool { return rows() == 11 }, "Removes alone not written")
	if n := s.commits.Load() - base; n > 5 {
		t.Errorf("20 Removes alone took %d commits", n)
	} else {
		t.Logf("20 Removes alone: %d commits", n)
	}
	closeStore(t, s)
	s = openSQLiteT(t, path)
	want := []engine.Record{}
	for i := 30; i <= 40; i++ {
		want = append(want, rec(i))
	}
	wantSet(t, replayAll(t, s), want)
}

// Rows bigger than the writer's value buffer (and the empty values after
// one) round trip; empty values are stored as empty BLOBs, not NULL, even
// in the writer's very first row.
func TestSQLiteBigRecord(t *testing.T) {
	path := filepath.Join(t.TempDir(), "q.db")
	s := openSQLiteT(t, path)
	addAll(t, s, []engine.Record{{Function: []byte{}, Unique: []byte{}, Data: []byte{}}})
	var types string
	if err := rawDB(t, path).QueryRow(`SELECT typeof(unique_key) || typeof(function_name) || typeof(data) FROM gearman_queue`).Scan(&types); err != nil || types != "blobblobblob" {
		t.Fatalf("empty values stored as %q, %v", types, err)
	}
	s.Remove([]byte{}, []byte{})
	big := make([]byte, 3<<20)
	for i := range big {
		big[i] = byte(i * 7)
	}
	rs := []engine.Record{
		{Function: []byte("big"), Unique: []byte("b1"), Priority: engine.Low, Data: big},
		{Function: []byte("big"), Unique: []byte("b2"), Priority: engine.High, Data: big[:bufMin+1]},
		{Function: []byte("big"), Unique: []byte{}, Priority: engine.Normal},
		{Function: []byte("big"), Unique: []byte("b4"), Priority: engine.Normal, Data: []byte("small")},
	}
	for _, r := range rs {
		addAll(t, s, []engine.Record{r})
	}
	closeStore(t, s)
	s = openSQLiteT(t, path)
	defer closeStore(t, s)
	wantSet(t, replayAll(t, s), rs)
}

// A database locked by another process holds a batch for the busy timeout
// (bounded), then fails it; the queue behind it is bounded; later batches
// go through once the lock is gone.
func TestSQLiteBusyAndFull(t *testing.T) {
	path := filepath.Join(t.TempDir(), "q.db")
	s, err := openSQLite(path, "", testLog(t), sqliteOptions{busyTimeout: 500 * time.Millisecond, maxPending: 5})
	if err != nil {
		t.Fatal(err)
	}
	defer closeStore(t, s)
	lockDB := rawDB(t, path)
	lock, err := lockDB.Conn(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := lock.ExecContext(context.Background(), "BEGIN EXCLUSIVE"); err != nil {
		t.Fatal(err)
	}
	rec := func(i int) engine.Record {
		return engine.Record{Function: []byte("busy"), Unique: fmt.Appendf(nil, "%d", i), Priority: engine.Normal}
	}
	errs := make([]chan error, 8)
	for i := range errs {
		errs[i] = make(chan error, 1)
	}
	add := func(i int) {
		s.Add(rec(i), func(err error) { errs[i] <- err })
	}
	add(0)
	gstest.Eventually(t, 5*time.Second, func() bool { // the writer has taken it
		s.mu.Lock()
		defer s.mu.Unlock()
		return len(s.pending) == 0
	}, "writer idle")
	for i := 1; i <= 5; i++ {
		add(i)
	}
	add(6) // over the bound: refused at once
	select {
	case err := <-errs[6]:
		if !errors.Is(err, ErrFull) {
			t.Fatalf("Add over the bound: %v, want ErrFull", err)
		}
	default:
		t.Fatalf("Add over the bound not refused at once")
	}
	start := time.Now()
	select {
	case err := <-errs[0]:
		if err == nil {
			t.Fatalf("Add acknowledged while the database is locked")
		}
		t.Logf("locked database: %v after %v", err, time.Since(start))
	case <-time.After(10 * time.Second):
		t.Fatalf("locked database held an Add beyond the busy timeout")
	}
	if _, err := lock.ExecContext(context.Background(), "ROLLBACK"); err != nil {
		t.Fatal(err)
	}
	lock.Close()
	for i := 1; i <= 5; i++ {
		select {
		case err := <-errs[i]:
			if err != nil {
				t.Fatalf("Add %d after the lock: %v", i, err)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("Add %d not acknowledged", i)
		}
	}
	add(7)
	if err := <-errs[7]; err != nil {
		t.Fatalf("Add 7: %v", err)
	}
	wantSet(t, replayAll(t, s), []engine.Record{rec(1), rec(2), rec(3), rec(4), rec(5), rec(7)})
}

// Every Add acknowledged before a kill -9 is in the file afterwards.
func TestSQLiteCrash(t *testing.T) { testCrash(t, sqliteCrash(false)) }

// Removes going with the Adds' commits (or held back for them) lose no
// acknowledged Add in a kill -9 either; a removed record may or may not be
// there afterwards (at least once), and the file is sound.
func TestSQLiteCrashWithRemoves(t *testing.T) { testCrash(t, sqliteCrash(true)) }

// sqliteCrash is the crash test on a file of the test's own, which is
// sound afterwards.
func sqliteCrash(removes bool) crashCase {
	return crashCase{
		store:   "sqlite",
		setup:   func(t *testing.T) string { return filepath.Join(t.TempDir(), "crash.db") },
		open:    func(t *testing.T, path string) engine.Store { return openSQLiteT(t, path) },
		removes: removes,
		check: func(t *testing.T, path string) {
			var check string
			if err := rawDB(t, path).QueryRow(`PRAGMA integrity_check`).Scan(&check); err != nil || check != "ok" {
				t.Errorf("integrity_check: %q, %v", check, err)
			}
		},
	}
}

// A queue written by Debian's gearmand 1.1.20 (-q libsqlite3) replays with
// function, unique, priority, data and run-at time, and gearshard's Remove
// deletes gearmand's rows.
func TestSQLiteGearmandCompat(t *testing.T) {
	const gearmand = "/usr/sbin/gearmand"
	if _, err := os.Stat(gearmand); err != nil {
		t.Fatalf("%s not found (install the Debian package gearman-job-server): %v", gearmand, err)
	}
	dir := t.TempDir()
	path := filepath.Join(dir, "gearmand.db")
	port := queuetest.FreePort(t)
	logFile := filepath.Join(dir, "gearmand.log")
	cmd := exec.Command(gearmand, "-q", "libsqlite3", "--libsqlite3-db", path,
		"-p", strconv.Itoa(port), "-L", "127.0.0.1", "-l", logFile, "-P", filepath.Join(dir, "gearmand.pid"))
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatalf("start gearmand: %v", err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-exited
	})
	showLog := func() string {
		b, _ := os.ReadFile(logFile)
		return out.String() + string(b)
	}
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	gstest.Eventually(t, 10*time.Second, func() bool {
		select {
		case <-exited:
			t.Fatalf("gearmand exited: %s", showLog())
		default:
		}
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
		}
		return err == nil
	}, "gearmand not listening on %s", addr)

	epoch := time.Now().Add(24 * time.Hour).Unix()
	want := []engine.Record{
		{Function: []byte("fn-high"), Unique: []byte("u-high-1"), Priority: engine.High, Data: []byte("high\x00data\xff")},
		{Function: []byte("fn-normal"), Unique: []byte("u-normal-2"), Priority: engine.Normal, Data: []byte("normal data")},
		{Function: []byte("fn-low"), Unique: []byte("u-low-3"), Priority: engine.Low, Data: []byte("\x00low\x00")},
		{Function: []byte("fn-epoch"), Unique: []byte("u-epoch-4"), Priority: engine.Normal, Data: []byte("at epoch"), When: epoch},
	}
	c := gstest.Dial(t, addr)
	c.Send(wire.SubmitJobHighBG, "fn-high", "u-high-1", "high\x00data\xff")
	c.Expect(wire.JobCreated)
	c.Send(wire.SubmitJobBG, "fn-normal", "u-normal-2", "normal data")
	c.Expect(wire.JobCreated)
	c.Send(wire.SubmitJobLowBG, "fn-low", "u-low-3", "\x00low\x00")
	c.Expect(wire.JobCreated)
	c.Send(wire.SubmitJobEpoch, "fn-epoch", "u-epoch-4", strconv.FormatInt(epoch, 10), "at epoch")
	c.Expect(wire.JobCreated)
	c.Raw().Close()

	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-exited:
	case <-time.After(15 * time.Second):
		t.Fatalf("gearmand did not stop on SIGTERM: %s", showLog())
	}

	// gearmand bound the keys as TEXT: the rows Replay and Remove must
	// also handle.
	var texts int
	db := rawDB(t, path)
	if err := db.QueryRow(`SELECT count(*) FROM gearman_queue WHERE typeof(unique_key) = 'text' AND typeof(function_name) = 'text'`).Scan(&texts); err != nil || texts != len(want) {
		t.Fatalf("gearmand wrote %d rows with TEXT keys (%v), want %d", texts, err, len(want))
	}
	db.Close()

	s := openSQLiteT(t, path)
	got := replayAll(t, s)
	wantSet(t, got, want)

	// The jobs finish under gearshard: its Removes delete gearmand's rows.
	s.Remove([]byte("fn-high"), []byte("u-high-1"))
	s.Remove([]byte("fn-epoch"), []byte("u-epoch-4"))
	closeStore(t, s)
	s = openSQLiteT(t, path)
	defer closeStore(t, s)
	wantSet(t, replayAll(t, s), want[1:3])
}

// BenchmarkSQLiteAdd: acknowledged Adds per second, many submitters each
// waiting for its acknowledgement (as clients wait for JOB_CREATED).
func BenchmarkSQLiteAdd(b *testing.B) {
	s, err := OpenSQLite(filepath.Join(b.TempDir(), "bench.db"), "", zerolog.Nop())
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	data := make([]byte, 100)
	var seq atomic.Uint64
	b.SetParallelism(64) // 64 × GOMAXPROCS submitters in flight
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		done := make(chan error, 1)
		for pb.Next() {
			n := seq.Add(1)
			s.Add(engine.Record{
				Function: []byte("bench"),
				Unique:   engine.AppendMadeUpKey(nil, nil, n),
				Priority: engine.Normal,
				Data:     data,
			}, func(err error) { done <- err })
			if err := <-done; err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "adds/s")
}
