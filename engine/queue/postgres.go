package queue

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/rs/zerolog"

	"gearshard/engine"
)

// DefaultPostgresTable is gearmand's default --libpq-table.
const DefaultPostgresTable = "queue"

// Column sizes of gearmand's table; function names and uniques are
// limited in bytes (an escaped key never has more characters than bytes).
const (
	pgMaxFunction = 255
	pgMaxUnique   = 64
)

// Postgres is the PostgreSQL store (gearmand's -q Postgres): one table with
// gearmand's schema,
//
//	CREATE TABLE IF NOT EXISTS queue (unique_key VARCHAR(64),
//	  function_name VARCHAR(255), priority INTEGER, data BYTEA,
//	  when_to_run INTEGER, UNIQUE (unique_key, function_name))
//
// so that rows gearmand left behind are replayed, and rows gearshard writes
// for plain keys are rows gearmand reads.
//
// One writer goroutine owns one connection and commits each batch of Adds
// and Removes as one transaction: one multi-row DELETE and one multi-row
// INSERT ... ON CONFLICT DO UPDATE, sent together in one round trip (a pgx
// batch, which the server runs as one implicit transaction). An Add is
// acknowledged when that transaction has committed (with the server's
// default synchronous_commit=on, after its WAL is flushed).
//
// Keys of any bytes: VARCHAR holds valid UTF-8 without NUL only (in a UTF8
// database), so a function name or unique that is not valid UTF-8, or
// holds NUL, is stored escaped: each byte that is not part of a valid,
// non-NUL UTF-8 character becomes the private-use character U+10FE00+byte,
// and so does each byte of such a character already in the key (which
// keeps the escape reversible). Replay turns U+10FE00..U+10FEFF back into
// bytes. An escaped key has at most as many characters as the key has
// bytes, so the 64 and 255 character columns hold every key of up to 64
// and 255 bytes. Keys without those bytes, everything gearmand writes in
// practice, are stored as they are. In a SQL_ASCII database (where VARCHAR
// counts bytes) an escaped key takes 4 bytes per escaped byte.
//
// when_to_run is an INTEGER: run-at times after 2038-01-19 fail the Add.
type Postgres struct {
	netQueue  // the writer; Remove and AfterDone of engine.Store
	closeOnce sync.Once
	cfg       *pgx.ConnConfig
	table     string
	log       zerolog.Logger

	insertSQL, deleteSQL, selectSQL string

	// The writer goroutine's.
	conn   *pgx.Conn
	latest latestOps
	ins    struct {
		unique, function []string
		priority, when   []int32
		data             [][]byte
	}
	del struct{ unique, function []string }
}

var _ engine.Store = (*Postgres)(nil)

// OpenPostgres connects to PostgreSQL with conninfo (libpq key=value
// string or postgres:// URL, as gearmand's --libpq-conninfo), creates the
// table (table, or DefaultPostgresTable when empty; a plain or
// schema-qualified SQL identifier, unquoted as gearmand uses it) if it
// does not exist, and starts the writer.
func OpenPostgres(ctx context.Context, conninfo, table string, log zerolog.Logger) (*Postgres, error) {
	if table == "" {
		table = DefaultPostgresTable
	}
	if !sqlValidTable(table) {
		return nil, fmt.Errorf("postgres queue: table name %q: want letters, digits and _ (not first a digit), optionally schema.table", table)
	}
	cfg, err := pgx.ParseConfig(conninfo)
	if err != nil {
		return nil, fmt.Errorf("postgres queue: conninfo: %w", err)
	}
	if _, ok := cfg.RuntimeParams["application_name"]; !ok {
		cfg.RuntimeParams["application_name"] = "gearshard"
	}
	p := &Postgres{
		cfg:   cfg,
		table: table,
		log:   log,
		insertSQL: "INSERT INTO " + table + " (unique_key, function_name, priority, data, when_to_run)" +
			" SELECT * FROM unnest($1::text[], $2::text[], $3::int4[], $4::bytea[], $5::int4[])" +
			" ON CONFLICT (unique_key, function_name) DO UPDATE SET" +
			" priority = EXCLUDED.priority, data = EXCLUDED.data, when_to_run = EXCLUDED.when_to_run",
		deleteSQL: "DELETE FROM " + table + " AS q USING unnest($1::text[], $2::text[]) AS d(u, f)" +
			" WHERE q.unique_key = d.u AND q.function_name = d.f",
		selectSQL: "SELECT coalesce(unique_key, ''), coalesce(function_name, ''), coalesce(priority, 1)," +
			" coalesce(data, ''::bytea), coalesce(when_to_run, 0) FROM " + table,
	}
	cctx, cancel := context.WithTimeout(ctx, netAttempt)
	defer cancel()
	conn, err := pgx.ConnectConfig(cctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("postgres queue: connect: %w", err)
	}
	if _, err := conn.Exec(cctx, "CREATE TABLE IF NOT EXISTS "+table+" (unique_key VARCHAR(64), function_name VARCHAR(255),"+
		" priority INTEGER, data BYTEA, when_to_run INTEGER, UNIQUE (unique_key, function_name))"); err != nil {
		conn.Close(context.Background())
		return nil, fmt.Errorf("postgres queue: create table %s: %w", table, err)
	}
	if enc := conn.PgConn().ParameterStatus("server_encoding"); enc != "UTF8" {
		log.Warn().Str("server_encoding", enc).Msg("postgres queue: database is not UTF8; function names and uniques that are not plain UTF-8 take more room than their VARCHAR columns count on")
	}
	p.conn = conn
	p.netQueue.start(p, log)
	return p, nil
}

// Add implements engine.Store. A function name over 255 bytes, a unique
// over 64 bytes or a run-at time outside INTEGER fails at once.
func (p *Postgres) Add(r engine.Record, done func(error)) {
	p.add(r, done, sqlRecordErr("postgres", r, pgMaxFunction, pgMaxUnique))
}

// Close implements engine.Store: it writes what is queued (each batch
// bounded as always) and closes the connection.
func (p *Postgres) Close() error {
	err := p.netQueue.close()
	p.closeOnce.Do(func() { // the writer has exited: its connection is ours
		if p.conn != nil {
			ctx, cancel := context.WithTimeout(context.Background(), netAttempt)
			p.conn.Close(ctx)
			cancel()
			p.conn = nil
		}
	})
	return err
}

// Replay implements engine.Store, on a connection of its own.
func (p *Postgres) Replay(fn func(engine.Record)) error {
	cctx, cancel := context.WithTimeout(context.Background(), netAttempt)
	conn, err := pgx.ConnectConfig(cctx, p.cfg)
	cancel()
	if err != nil {
		return fmt.Errorf("postgres queue: replay: connect: %w", err)
	}
	defer conn.Close(context.Background())
	rows, err := conn.Query(context.Background(), p.selectSQL)
	if err != nil {
		return fmt.Errorf("postgres queue: replay: %w", err)
	}
	defer rows.Close()
	var (
		unique, function string
		priority         int32
		data             []byte
		when             int32
		ubuf, fbuf       []byte
	)
	for rows.Next() {
		if err := rows.Scan(&unique, &function, &priority, &data, &when); err != nil {
			return fmt.Errorf("postgres queue: replay: %w", err)
		}
		ubuf = pgUnescape(ubuf[:0], unique)
		fbuf = pgUnescape(fbuf[:0], function)
		fn(engine.Record{Function: fbuf, Unique: ubuf, Priority: engine.Priority(priority), Data: data, When: int64(when)})
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("postgres queue: replay: %w", err)
	}
	return nil
}

// pgEscBase + b is the character that stands for byte b in a stored key.
const pgEscBase = 0x10FE00

func pgIsEsc(r rune) bool { return r >= pgEscBase && r <= pgEscBase+0xFF }

// pgEscape gives the stored form of a key: b itself when it is valid UTF-8
// without NUL and without escape characters, else b with each offending
// byte replaced by its escape character.
func pgEscape(b []byte) string {
	if utf8.Valid(b) && bytes.IndexByte(b, 0) < 0 && bytes.IndexByte(b, 0xF4) < 0 {
		return string(b) // the fast path: escape characters all start with 0xF4
	}
	out := make([]byte, 0, len(b)*2)
	for i := 0; i < len(b); {
		r, n := utf8.DecodeRune(b[i:])
		if r == 0 || r == utf8.RuneError && n == 1 || pgIsEsc(r) {
			for _, c := range b[i : i+n] {
				out = utf8.AppendRune(out, pgEscBase+rune(c))
			}
		} else {
			out = append(out, b[i:i+n]...)
		}
		i += n
	}
	return string(out)
}

// pgUnescape appends the key that s stores to dst.
func pgUnescape(dst []byte, s string) []byte {
	if strings.IndexByte(s, 0xF4) < 0 {
		return append(dst, s...)
	}
	for i := 0; i < len(s); {
		r, n := utf8.DecodeRuneInString(s[i:])
		if pgIsEsc(r) {
			dst = append(dst, byte(r-pgEscBase))
		} else {
			dst = append(dst, s[i:i+n]...)
		}
		i += n
	}
	return dst
}

// write implements netBackend.
func (p *Postgres) write(ops []netOp) error {
	ins, del := &p.ins, &p.del
	p.latest.each(ops, func(op *netOp) {
		u, f := pgEscape(op.rec.Unique), pgEscape(op.rec.Function)
		if op.done == nil {
			del.unique = append(del.unique, u)
			del.function = append(del.function, f)
			return
		}
		ins.unique = append(ins.unique, u)
		ins.function = append(ins.function, f)
		ins.priority = append(ins.priority, int32(op.rec.Priority))
		data := op.rec.Data
		if data == nil {
			data = []byte{} // NULL would read back as no data anyway; keep the column non-NULL
		}
		ins.data = append(ins.data, data)
		ins.when = append(ins.when, int32(op.rec.When))
	})
	defer func() {
		clear(ins.unique)
		clear(ins.function)
		clear(ins.data)
		clear(del.unique)
		clear(del.function)
		ins.unique, ins.function, ins.priority, ins.data, ins.when = ins.unique[:0], ins.function[:0], ins.priority[:0], ins.data[:0], ins.when[:0]
		del.unique, del.function = del.unique[:0], del.function[:0]
	}()

	ctx, cancel := context.WithTimeout(context.Background(), netAttempt)
	defer cancel()
	fresh := false
	if p.conn == nil || p.conn.IsClosed() {
		if err := p.connect(ctx); err != nil {
			return err
		}
		fresh = true
	}
	err := p.send(ctx)
	if err != nil && !fresh && !pgRefused(err) && ctx.Err() == nil {
		// A connection that has been idle may have died (server restart)
		// without our knowing: once more on a new one. The batch is
		// idempotent, so a first attempt that did commit does no harm.
		p.drop()
		if err = p.connect(ctx); err != nil {
			return err
		}
		err = p.send(ctx)
	}
	if err != nil {
		if !pgRefused(err) {
			p.drop()
		}
		return fmt.Errorf("postgres queue: %w", err)
	}
	return nil
}

func (p *Postgres) send(ctx context.Context) error {
	b := &pgx.Batch{}
	if len(p.del.unique) > 0 {
		b.Queue(p.deleteSQL, p.del.unique, p.del.function)
	}
	if len(p.ins.unique) > 0 {
		b.Queue(p.insertSQL, p.ins.unique, p.ins.function, p.ins.priority, p.ins.data, p.ins.when)
	}
	if b.Len() == 0 {
		return nil
	}
	return p.conn.SendBatch(ctx, b).Close()
}

func (p *Postgres) connect(ctx context.Context) error {
	conn, err := pgx.ConnectConfig(ctx, p.cfg)
	if err != nil {
		return fmt.Errorf("postgres queue: connect: %w", err)
	}
	p.conn = conn
	return nil
}

func (p *Postgres) drop() {
	if p.conn != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		p.conn.Close(ctx)
		cancel()
		p.conn = nil
	}
}

// pgRefused: the server answered with an error about the statements (the
// connection is fine), rather than that it cannot be reached or is not
// ready (SQLSTATE classes 08 connection exception, 53 insufficient
// resources, 57 operator intervention such as a shutdown).
func pgRefused(err error) bool {
	var pe *pgconn.PgError
	if !errors.As(err, &pe) {
		return false
	}
	switch {
	case strings.HasPrefix(pe.Code, "08"), strings.HasPrefix(pe.Code, "53"), strings.HasPrefix(pe.Code, "57"):
		return false
	}
	return true
}

// transient implements netBackend.
func (p *Postgres) transient(err error) bool { return !pgRefused(err) }
