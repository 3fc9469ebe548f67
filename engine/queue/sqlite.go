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
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/rs/zerolog"
	_ "modernc.org/sqlite" // pure-Go SQLite driver "sqlite"

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
	db    *sql.DB
	table string
	log   zerolog.Logger

	mu      sync.Mutex
	pending []op
	closed  bool
	max     int

	signal  chan struct{} // 1 slot: the writer has something to do
	stopped chan struct{} // closed when the writer has returned

	// Owned by the writer goroutine.
	conn           *sql.Conn
	insSQL, delSQL [chunk + 1]string // by row count
	args           []any
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
		table:   table,
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

// connect takes the writer's connection.
func (s *SQLite) connect() error {
	c, err := s.db.Conn(context.Background())
	if err != nil {
		return fmt.Errorf("sqlite queue: %w", err)
	}
	s.conn = c
	return nil
}

// disconnect drops the writer's connection after a failure; the next batch
// takes a fresh one.
func (s *SQLite) disconnect() {
	if s.conn != nil {
		s.conn.Close()
		s.conn = nil
	}
}

// chunk is the most rows one statement writes. The driver compiles a
// statement at every execution (it keeps no prepared sqlite3_stmt), so a
// batch goes out in multi-row statements: one compilation per chunk
// instead of per row. 64 rows bind 320 parameters, far below SQLite's
// limit of 32766.
const chunk = 64

// insertSQL is the statement that adds n rows.
func (s *SQLite) insertSQL(n int) string {
	if q := s.insSQL[n]; q != "" {
		return q
	}
	var b strings.Builder
	b.WriteString(`INSERT OR REPLACE INTO "` + s.table + `" (unique_key, function_name, priority, data, when_to_run) VALUES `)
	for i := range n {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString("(?,?,?,?,?)")
	}
	s.insSQL[n] = b.String()
	return s.insSQL[n]
}

// deleteSQL is the statement that removes n keys. A key matches as BLOB
// (as gearshard writes it) or as TEXT (as gearmand wrote it); the lookups
// use the primary key.
func (s *SQLite) deleteSQL(n int) string {
	if q := s.delSQL[n]; q != "" {
		return q
	}
	var b strings.Builder
	b.WriteString(`DELETE FROM "` + s.table + `" WHERE (unique_key, function_name) IN (VALUES `)
	for i := range n {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, "(?%d,?%d),(CAST(?%d AS TEXT),CAST(?%d AS TEXT))", 2*i+1, 2*i+2, 2*i+1, 2*i+2)
	}
	b.WriteByte(')')
	s.delSQL[n] = b.String()
	return s.delSQL[n]
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
		s.pending = append(s.pending, op{rec: r, done: done})
	}
	s.mu.Unlock()
	if err != nil {
		done(err)
		return
	}
	s.wake()
}

// Remove queues the deletion of (function, unique), after every Add queued
// before it. It is never refused for being full: a lost Remove would only
// replay a finished job, but refusing it gains nothing.
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
	s.pending = append(s.pending, op{rec: engine.Record{Function: b[:len(function):len(function)], Unique: b[len(function):]}})
	s.mu.Unlock()
	s.wake()
}

func (s *SQLite) wake() {
	select {
	case s.signal <- struct{}{}:
	default:
	}
}

// run is the writer: it takes all that is queued, writes it, acknowledges
// it, and waits for more; after Close it returns once the queue is empty.
func (s *SQLite) run() {
	defer close(s.stopped)
	var batch []op
	for {
		s.mu.Lock()
		batch, s.pending = s.pending, batch[:0]
		closed := s.closed
		s.mu.Unlock()
		if len(batch) == 0 {
			if closed {
				return
			}
			<-s.signal
			continue
		}
		err := s.write(batch)
		for i := range batch {
			if d := batch[i].done; d != nil {
				d(err)
			}
		}
		clear(batch) // let go of the records' memory
		if cap(batch) > 1<<16 {
			batch = nil
		}
	}
}

// write runs one batch in one transaction.
func (s *SQLite) write(batch []op) (err error) {
	ctx := context.Background()
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
	if _, err := s.conn.ExecContext(ctx, "BEGIN IMMEDIATE"); err != nil {
		return fmt.Errorf("sqlite queue: begin: %w", err)
	}
	for i := 0; i < len(batch); {
		add := batch[i].done != nil
		j := i + 1
		for j < len(batch) && j-i < chunk && (batch[j].done != nil) == add {
			j++
		}
		args := s.args[:0]
		var q string
		if add {
			for _, o := range batch[i:j] {
				args = append(args, blob(o.rec.Unique), blob(o.rec.Function), int64(o.rec.Priority), blob(o.rec.Data), o.rec.When)
			}
			q = s.insertSQL(j - i)
		} else {
			for _, o := range batch[i:j] {
				args = append(args, blob(o.rec.Unique), blob(o.rec.Function))
			}
			q = s.deleteSQL(j - i)
		}
		_, err = s.conn.ExecContext(ctx, q, args...)
		clear(args)
		s.args = args[:0]
		if err != nil {
			_, _ = s.conn.ExecContext(ctx, "ROLLBACK")
			return fmt.Errorf("sqlite queue: write: %w", err)
		}
		i = j
	}
	if _, err := s.conn.ExecContext(ctx, "COMMIT"); err != nil {
		_, _ = s.conn.ExecContext(ctx, "ROLLBACK")
		return fmt.Errorf("sqlite queue: commit: %w", err)
	}
	if e := s.log.Trace(); e.Enabled() {
		e.Int("writes", len(batch)).Dur("took", time.Since(start)).Msg("batch committed")
	}
	return nil
}

// blob makes b a BLOB value: an empty slice, not NULL, for no bytes.
func blob(b []byte) []byte {
	if b == nil {
		return []byte{}
	}
	return b
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

var _ engine.Store = (*SQLite)(nil)
