// Package queue holds gearshard's persistent queues: implementations of
// engine.Store that keep background jobs in the tables and key layouts of
// gearmand's queue modules, so a queue left behind by gearmand is replayed
// as is.
//
// Every store commits in groups: Add and Remove only append to an
// in-memory queue and never block the caller; one writer goroutine takes
// whatever has queued up, writes it in one transaction (in call order),
// and then acknowledges every Add of that batch. A submission is
// acknowledged (JOB_CREATED) only after its batch is durable.
//
// gearmand's --store-queue-on-shutdown (skip the writes while running, dump
// the queue at shutdown) is accepted by gearshard for compatibility but has
// no mode here: it would acknowledge jobs that a crash then loses, and
// gearshard always stores a background job before acknowledging it.
package queue

import (
	"database/sql"
	"encoding/binary"
	"errors"
	"fmt"
	"net/url"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"
	"modernc.org/libc"
	"modernc.org/libc/sys/types"
	_ "modernc.org/sqlite" // pure-Go SQLite driver "sqlite", for database/sql
	sqlite3 "modernc.org/sqlite/lib"

	"gearshard/engine"
)

// DefaultSQLiteTable is gearmand's default --libsqlite3-table.
const DefaultSQLiteTable = "gearman_queue"

// MaxPending bounds the Adds and Removes waiting for the writer; beyond it
// an Add fails at once (the client gets an error instead of the server
// growing without bound while the database is stuck).
const MaxPending = 1_000_000

var (
	// ErrClosed is given to an Add after Close.
	ErrClosed = errors.New("persistent queue closed")
	// ErrFull is given to an Add while MaxPending writes are waiting.
	ErrFull = errors.New("persistent queue: too many writes pending")
)

// SQLite is the embedded store (gearmand's -q libsqlite3): one database
// file, one table with gearmand's schema.
//
// Keys and data are written as BLOB values so that any bytes round-trip
// (SQLite keeps a value's type even in a TEXT column); rows that gearmand
// wrote hold TEXT keys, which Replay reads alike and Remove deletes too.
type SQLite struct {
	db    *sql.DB // schema and Replay; the writer has a connection of its own
	path  string  // absolute
	table string
	busy  time.Duration
	log   zerolog.Logger

	mu      sync.Mutex
	pending []op
	adds    int       // Adds in pending
	since   time.Time // when pending last became non-empty
	closed  bool
	max     int

	signal  chan struct{} // 1 slot: the writer has something to do
	stopped chan struct{} // closed when the writer has returned

	// textKeys: the table held rows with TEXT keys (gearmand's) when it
	// was opened; a Remove then also deletes the key as TEXT. gearshard
	// itself writes keys as BLOBs only.
	textKeys bool

	commits atomic.Uint64 // transactions committed, for tests
	after   afterDone

	// Owned by the writer goroutine.
	conn *writerConn
}

// op is one queued write: an Add (done != nil) or a Remove.
type op struct {
	rec  engine.Record
	done func(error)
}

type sqliteOptions struct {
	busyTimeout time.Duration
	maxPending  int
}

// OpenSQLite opens (creating if need be) the database file at path and the
// queue table in it ("" means DefaultSQLiteTable), and starts the writer.
func OpenSQLite(path, table string, log zerolog.Logger) (*SQLite, error) {
	return openSQLite(path, table, log, sqliteOptions{})
}

func openSQLite(path, table string, log zerolog.Logger, o sqliteOptions) (*SQLite, error) {
	if table == "" {
		table = DefaultSQLiteTable
	}
	if !validIdent(table) {
		return nil, fmt.Errorf("sqlite queue: table name %q: only letters, digits and _ (not first a digit), at most 64", table)
	}
	if path == "" {
		return nil, errors.New("sqlite queue: no database file given (--libsqlite3-db)")
	}
	if o.busyTimeout <= 0 {
		o.busyTimeout = 10 * time.Second
	}
	if o.maxPending <= 0 {
		o.maxPending = MaxPending
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("sqlite queue: %w", err)
	}
	// A file: URI so that no byte of the path is taken for a parameter;
	// every connection gets the pragmas. WAL with synchronous=FULL syncs
	// the log at every commit: an acknowledged job survives kill -9 and
	// power loss.
	q := url.Values{}
	q.Add("_pragma", fmt.Sprintf("busy_timeout(%d)", o.busyTimeout.Milliseconds()))
	q.Add("_pragma", "journal_mode(WAL)")
	q.Add("_pragma", "synchronous(FULL)")
	dsn := "file:" + (&url.URL{Path: abs}).EscapedPath() + "?" + q.Encode()
	db, err := sql.Open("sqlite", dsn)
	if err != nil {
		return nil, fmt.Errorf("sqlite queue %s: %w", abs, err)
	}
	db.SetMaxIdleConns(2)
	s := &SQLite{
		db:      db,
		path:    abs,
		table:   table,
		busy:    o.busyTimeout,
		log:     log.With().Str("queue", "libsqlite3").Str("db", abs).Str("table", table).Logger(),
		max:     o.maxPending,
		signal:  make(chan struct{}, 1),
		stopped: make(chan struct{}),
	}
	// gearmand's schema, verbatim, so either server can use the other's file.
	create := `CREATE TABLE IF NOT EXISTS "` + table + `" (unique_key TEXT, function_name TEXT, priority INTEGER, data BLOB, when_to_run INTEGER, PRIMARY KEY (unique_key, function_name))`
	if _, err := db.Exec(create); err != nil {
		db.Close()
		return nil, fmt.Errorf("sqlite queue %s: %w", abs, err)
	}
	err = db.QueryRow(`SELECT EXISTS (SELECT 1 FROM "` + table + `" WHERE typeof(unique_key) = 'text' OR typeof(function_name) = 'text')`).Scan(&s.textKeys)
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("sqlite queue %s: %w", abs, err)
	}
	if err := s.connect(); err != nil {
		db.Close()
		return nil, err
	}
	go s.run()
	return s, nil
}

// validIdent reports a plain SQL identifier, safe to put in a statement.
func validIdent(s string) bool {
	if s == "" || len(s) > 64 || (s[0] >= '0' && s[0] <= '9') {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c == '_' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9') {
			return false
		}
	}
	return true
}

// connect opens the writer's connection.
func (s *SQLite) connect() error {
	c, err := openWriterConn(s.path, s.table, s.busy)
	if err != nil {
		return fmt.Errorf("sqlite queue: %w", err)
	}
	s.conn = c
	return nil
}

// disconnect drops the writer's connection after a failure; the next batch
// opens a fresh one.
func (s *SQLite) disconnect() {
	if s.conn != nil {
		s.conn.close()
		s.conn = nil
	}
}

// Add queues r for the next batch; done runs once that batch is committed
// (or failed). When the store is closed or full, done runs at once, on the
// caller's goroutine, with ErrClosed or ErrFull.
func (s *SQLite) Add(r engine.Record, done func(error)) {
	if done == nil {
		done = func(error) {}
	}
	s.mu.Lock()
	var err error
	switch {
	case s.closed:
		err = ErrClosed
	case len(s.pending) >= s.max:
		err = ErrFull
	default:
		if len(s.pending) == 0 {
			s.since = time.Now()
		}
		s.pending = append(s.pending, op{rec: r, done: done})
		s.adds++
	}
	s.mu.Unlock()
	if err != nil {
		s.after.refuse(done, err)
		return
	}
	s.wake()
}

// Remove queues the deletion of (function, unique), after every Add queued
// before it. It is never refused for being full: a lost Remove would only
// replay a finished job, but refusing it gains nothing.
//
// A Remove need not be durable before anything, so Removes do not force a
// commit of their own: they go with the next Add's commit, or after
// removeDelay, or once removeBatch of them wait (see run).
func (s *SQLite) Remove(function, unique []byte) {
	b := make([]byte, len(function)+len(unique))
	copy(b, function)
	copy(b[len(function):], unique)
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		s.log.Warn().Bytes("function", function).Bytes("unique", unique).Msg("remove after close dropped")
		return
	}
	if len(s.pending) == 0 {
		s.since = time.Now()
	}
	s.pending = append(s.pending, op{rec: engine.Record{Function: b[:len(function):len(function)], Unique: b[len(function):]}})
	// The writer needs to know of the first (to time the wait) and of
	// the one that fills a batch; of the others it learns with the
	// next Add.
	n := len(s.pending)
	s.mu.Unlock()
	if n == 1 || n == removeBatch {
		s.wake()
	}
}

// Removes without an Add wait up to removeDelay, or until removeBatch of
// them are pending, for an Add to share its commit (one sync for both). A
// Remove lost in a crash in the meantime only means that a finished job
// may run again after the restart (at least once, as ever).
const (
	removeDelay = 50 * time.Millisecond
	removeBatch = 4096
)

func (s *SQLite) wake() {
	select {
	case s.signal <- struct{}{}:
	default:
	}
}

// run is the writer: it takes all that is queued, writes it, hands it to
// the acknowledger, and waits for more; after Close it returns once the
// queue is empty and acknowledged.
//
// Acknowledging (the callbacks send JOB_CREATED) runs on a goroutine of its
// own, in batch order, while the writer already commits the next batch: a
// commit then starts as soon as the previous one ends.
func (s *SQLite) run() {
	acks := make(chan written, 2)
	spare := make(chan []op, 3)
	acked := make(chan struct{})
	go acknowledge(acks, spare, acked, s.after.call)
	defer func() {
		close(acks)
		<-acked
		close(s.stopped)
	}()
	var next []op
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	for {
		if next == nil {
			select {
			case next = <-spare:
			default:
			}
		}
		s.mu.Lock()
		n, closed := len(s.pending), s.closed
		var hold time.Duration
		if n > 0 && s.adds == 0 && !closed && n < removeBatch {
			hold = removeDelay - time.Since(s.since)
		}
		if n == 0 || hold > 0 {
			s.mu.Unlock()
			if n == 0 && closed {
				return
			}
			if hold <= 0 {
				<-s.signal
				continue
			}
			timer.Reset(hold)
			select {
			case <-s.signal:
			case <-timer.C:
			}
			timer.Stop()
			continue
		}
		batch := s.pending
		s.pending, next = next, nil
		s.adds = 0
		s.mu.Unlock()
		err := s.write(batch)
		acks <- written{batch, err}
	}
}

// written is a batch the writer is done with, and how that went.
type written struct {
	batch []op
	err   error
}

// acknowledge runs the callbacks of each batch in turn, then after, and
// passes the emptied batch back for reuse.
func acknowledge(acks <-chan written, spare chan<- []op, done chan<- struct{}, after func()) {
	defer close(done)
	for w := range acks {
		for i := range w.batch {
			if d := w.batch[i].done; d != nil {
				d(w.err)
			}
		}
		after()
		clear(w.batch) // let go of the records' memory
		if cap(w.batch) <= 1<<16 {
			select {
			case spare <- w.batch[:0]:
			default:
			}
		}
	}
}

// write runs one batch in one transaction, in call order.
func (s *SQLite) write(batch []op) (err error) {
	start := time.Now()
	if s.conn == nil {
		if err := s.connect(); err != nil {
			s.log.Error().Err(err).Int("writes", len(batch)).Msg("batch not written")
			return err
		}
	}
	defer func() {
		if err != nil {
			s.log.Error().Err(err).Int("writes", len(batch)).Msg("batch not written")
			// Unacknowledged Adds fail; Removes are dropped, which may
			// replay a finished job after a restart (at least once).
			s.disconnect()
		}
	}()
	c := s.conn
	if err := c.step(c.begin); err != nil {
		return fmt.Errorf("sqlite queue: begin: %w", err)
	}
	for i := range batch {
		o := &batch[i]
		if o.done != nil {
			err = c.insert(&o.rec)
		} else {
			err = c.remove(o.rec.Function, o.rec.Unique, s.textKeys)
		}
		if err != nil {
			_ = c.step(c.rollback)
			return fmt.Errorf("sqlite queue: write: %w", err)
		}
	}
	if err := c.step(c.commit); err != nil {
		_ = c.step(c.rollback)
		return fmt.Errorf("sqlite queue: commit: %w", err)
	}
	s.commits.Add(1)
	if e := s.log.Trace(); e.Enabled() {
		e.Int("writes", len(batch)).Dur("took", time.Since(start)).Msg("batch committed")
	}
	return nil
}

// Replay calls fn for every stored row, oldest first. It accepts what
// gearmand wrote: TEXT keys, an empty unique, NULL data or when_to_run.
func (s *SQLite) Replay(fn func(engine.Record)) error {
	rows, err := s.db.Query(`SELECT unique_key, function_name, priority, data, when_to_run FROM "` + s.table + `" ORDER BY rowid`)
	if err != nil {
		return fmt.Errorf("sqlite queue: replay: %w", err)
	}
	defer rows.Close()
	var (
		unique, function, data sql.RawBytes
		pri, when              sql.NullInt64
	)
	for rows.Next() {
		if err := rows.Scan(&unique, &function, &pri, &data, &when); err != nil {
			return fmt.Errorf("sqlite queue: replay: %w", err)
		}
		p := engine.Priority(pri.Int64)
		if !pri.Valid || pri.Int64 < int64(engine.High) || pri.Int64 > int64(engine.Low) {
			s.log.Warn().Bytes("function", function).Bytes("unique", unique).Int64("priority", pri.Int64).
				Msg("stored priority out of range: replayed as normal")
			p = engine.Normal
		}
		fn(engine.Record{Function: function, Unique: unique, Priority: p, Data: data, When: when.Int64})
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("sqlite queue: replay: %w", err)
	}
	return nil
}

// Close refuses further writes, writes everything queued (acknowledging
// it), and closes the database.
func (s *SQLite) Close() error {
	s.mu.Lock()
	already := s.closed
	s.closed = true
	s.mu.Unlock()
	if already {
		<-s.stopped
		return nil
	}
	s.wake()
	<-s.stopped
	s.disconnect()
	return s.db.Close()
}

// writerConn is the writer's connection, on SQLite's C API
// (modernc.org/sqlite/lib) rather than database/sql: that driver compiles
// a statement at every execution and copies every bound value into memory
// it allocates for that execution, which made up most of a batch's time.
// The writer keeps its few statements compiled for the life of the
// connection and copies a row's values into one buffer of its own.
//
// Only the writer goroutine uses it (so it is opened without SQLite's
// mutexes); all memory handed to SQLite is C memory (libc.Xmalloc).
type writerConn struct {
	tls  *libc.TLS
	db   uintptr // sqlite3*
	out  uintptr // one pointer, for out parameters
	buf  uintptr // a row's keys and data, bound SQLITE_STATIC
	bufN int

	begin, commit, rollback, insert1, remove1 uintptr // sqlite3_stmt*
}

// bufMin is the value buffer's usual size; one grown beyond bufMax for a
// big job is given back after the row.
const (
	bufMin = 4 << 10
	bufMax = 1 << 20
)

// openWriterConn opens the database at path (which must exist) in WAL mode
// with synchronous=FULL: every commit syncs the log, so an acknowledged
// job survives kill -9 and power loss.
func openWriterConn(path, table string, busy time.Duration) (_ *writerConn, err error) {
	c := &writerConn{tls: libc.NewTLS()}
	defer func() {
		if err != nil {
			c.close()
		}
	}()
	if c.out = libc.Xmalloc(c.tls, 8); c.out == 0 {
		return nil, errors.New("out of memory")
	}
	name, err := libc.CString(path)
	if err != nil {
		return nil, err
	}
	rc := sqlite3.Xsqlite3_open_v2(c.tls, name, c.out, sqlite3.SQLITE_OPEN_READWRITE|sqlite3.SQLITE_OPEN_NOMUTEX, 0)
	libc.Xfree(c.tls, name)
	c.db = c.outPtr()
	if rc != sqlite3.SQLITE_OK {
		return nil, c.err(rc, "open "+path)
	}
	sqlite3.Xsqlite3_extended_result_codes(c.tls, c.db, 1)
	sqlite3.Xsqlite3_busy_timeout(c.tls, c.db, int32(min(busy.Milliseconds(), 1<<31-1)))
	for _, q := range []string{
		"PRAGMA journal_mode = WAL",
		"PRAGMA synchronous = FULL",
		// The log is rewritten in place from its start after each
		// checkpoint; one grown by a burst is cut back to this size.
		"PRAGMA journal_size_limit = 67108864",
	} {
		st, err := c.prepare(q)
		if err != nil {
			return nil, err
		}
		err = c.step(st)
		sqlite3.Xsqlite3_finalize(c.tls, st)
		if err != nil {
			return nil, err
		}
	}
	for _, p := range []struct {
		stmt *uintptr
		sql  string
	}{
		{&c.begin, "BEGIN IMMEDIATE"},
		{&c.commit, "COMMIT"},
		{&c.rollback, "ROLLBACK"},
		// Parameters: the byte values first (unique, function, data),
		// then priority and run-at time.
		{&c.insert1, `INSERT OR REPLACE INTO "` + table + `" (unique_key, function_name, priority, data, when_to_run) VALUES (?1, ?2, ?4, ?3, ?5)`},
		// Uses the primary key's index; binds the key as BLOB (as
		// gearshard writes it) or TEXT (as gearmand did).
		{&c.remove1, `DELETE FROM "` + table + `" WHERE unique_key = ?1 AND function_name = ?2`},
	} {
		if *p.stmt, err = c.prepare(p.sql); err != nil {
			return nil, err
		}
	}
	return c, nil
}

// outPtr reads the pointer an out parameter received.
func (c *writerConn) outPtr() uintptr {
	return uintptr(binary.NativeEndian.Uint64(libc.GoBytes(c.out, 8)))
}

func (c *writerConn) prepare(q string) (uintptr, error) {
	z, err := libc.CString(q)
	if err != nil {
		return 0, err
	}
	defer libc.Xfree(c.tls, z)
	if rc := sqlite3.Xsqlite3_prepare_v3(c.tls, c.db, z, -1, sqlite3.SQLITE_PREPARE_PERSISTENT, c.out, 0); rc != sqlite3.SQLITE_OK {
		return 0, c.err(rc, q)
	}
	return c.outPtr(), nil
}

// err describes a failed call: SQLite's message for the connection.
func (c *writerConn) err(rc int32, what string) error {
	msg := libc.GoString(sqlite3.Xsqlite3_errstr(c.tls, rc))
	if c.db != 0 {
		if m := libc.GoString(sqlite3.Xsqlite3_errmsg(c.tls, c.db)); m != msg {
			msg += ": " + m
		}
	}
	return fmt.Errorf("%s: %s (%d)", what, msg, rc)
}

// step runs st to its end (its rows, if any, are skipped) and resets it;
// its bindings stay.
func (c *writerConn) step(st uintptr) error {
	for {
		switch rc := sqlite3.Xsqlite3_step(c.tls, st); rc {
		case sqlite3.SQLITE_ROW:
			continue
		case sqlite3.SQLITE_DONE:
			sqlite3.Xsqlite3_reset(c.tls, st)
			return nil
		default:
			sqlite3.Xsqlite3_reset(c.tls, st)
			return c.err(rc, libc.GoString(sqlite3.Xsqlite3_sql(c.tls, st)))
		}
	}
}

// room makes the value buffer hold at least n bytes.
func (c *writerConn) room(n int) error {
	if c.buf != 0 && n <= c.bufN && (c.bufN <= bufMax || n > bufMax) {
		return nil
	}
	if c.buf != 0 {
		libc.Xfree(c.tls, c.buf)
		c.buf, c.bufN = 0, 0
	}
	size := max(n, bufMin)
	if c.buf = libc.Xmalloc(c.tls, types.Size_t(size)); c.buf == 0 {
		return fmt.Errorf("out of memory for a %d-byte row", n)
	}
	c.bufN = size
	return nil
}

// bind binds the values of vals to st's parameters from 1 on, as BLOB or
// as TEXT, through the value buffer; nil binds an empty value, not NULL.
func (c *writerConn) bind(st uintptr, text bool, vals ...[]byte) error {
	n := 0
	for _, v := range vals {
		n += len(v)
	}
	if err := c.room(n); err != nil {
		return err
	}
	mem := libc.GoBytes(c.buf, n)
	off := 0
	for i, v := range vals {
		copy(mem[off:], v)
		p, l := c.buf+uintptr(off), int32(len(v))
		off += len(v)
		var rc int32
		if text {
			rc = sqlite3.Xsqlite3_bind_text(c.tls, st, int32(i+1), p, l, 0)
		} else {
			rc = sqlite3.Xsqlite3_bind_blob(c.tls, st, int32(i+1), p, l, 0)
		}
		if rc != sqlite3.SQLITE_OK {
			return c.err(rc, "bind")
		}
	}
	return nil
}

// insert writes r, replacing a row with its key.
func (c *writerConn) insert(r *engine.Record) error {
	if err := c.bind(c.insert1, false, r.Unique, r.Function, r.Data); err != nil {
		return err
	}
	if rc := sqlite3.Xsqlite3_bind_int64(c.tls, c.insert1, 4, int64(r.Priority)); rc != sqlite3.SQLITE_OK {
		return c.err(rc, "bind")
	}
	if rc := sqlite3.Xsqlite3_bind_int64(c.tls, c.insert1, 5, r.When); rc != sqlite3.SQLITE_OK {
		return c.err(rc, "bind")
	}
	return c.step(c.insert1)
}

// remove deletes the row of (function, unique) stored with BLOB keys and,
// if text, with TEXT keys.
func (c *writerConn) remove(function, unique []byte, text bool) error {
	for _, asText := range [2]bool{false, true} {
		if asText && !text {
			break
		}
		if err := c.bind(c.remove1, asText, unique, function); err != nil {
			return err
		}
		if err := c.step(c.remove1); err != nil {
			return err
		}
	}
	return nil
}

// close finalizes the statements and closes the connection.
func (c *writerConn) close() {
	for _, st := range []uintptr{c.begin, c.commit, c.rollback, c.insert1, c.remove1} {
		if st != 0 {
			sqlite3.Xsqlite3_finalize(c.tls, st)
		}
	}
	if c.db != 0 {
		sqlite3.Xsqlite3_close_v2(c.tls, c.db)
	}
	for _, p := range []uintptr{c.buf, c.out} {
		if p != 0 {
			libc.Xfree(c.tls, p)
		}
	}
	c.tls.Close()
	*c = writerConn{}
}

// AfterDone implements engine.Store.
func (s *SQLite) AfterDone(fn func()) { s.after.set(fn) }

var _ engine.Store = (*SQLite)(nil)
