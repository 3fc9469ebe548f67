package queue

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"

	"github.com/go-sql-driver/mysql"
	"github.com/rs/zerolog"

	"gearshard/engine"
)

// DefaultMySQLTable is gearmand's default --mysql-table.
const DefaultMySQLTable = "gearman_queue"

// mysqlDefaultSocket is where Debian's MariaDB and MySQL clients look for
// the server when the host is "localhost" (libmysqlclient's
// MYSQL_UNIX_ADDR; the environment variable MYSQL_UNIX_PORT overrides it).
const mysqlDefaultSocket = "/run/mysqld/mysqld.sock"

// Column sizes of gearmand's table, in bytes here (VARBINARY).
const (
	myMaxFunction = 255
	myMaxUnique   = 64
)

// Statements of a batch are cut at these many rows and bytes of data, far
// below the server's max_allowed_packet (16 MiB by default in MariaDB, 64
// MiB in MySQL 8), so that no statement is refused for its size.
const (
	myStmtRows  = 500
	myStmtBytes = 4 << 20
)

// MySQLConfig is where the MySQL store keeps its jobs: gearmand's --mysql-*
// flags.
type MySQLConfig struct {
	// Host "localhost" (gearmand's default) means the server's Unix socket,
	// as for every libmysqlclient program: MYSQL_UNIX_PORT, else
	// /run/mysqld/mysqld.sock. Any other host is reached over TCP at Port.
	Host     string
	Port     int
	User     string
	Password string
	DB       string
	// Table is DefaultMySQLTable when empty: a plain or db-qualified
	// identifier, used unquoted as gearmand does.
	Table string
}

// MySQL is the MySQL/MariaDB store (gearmand's -q MySQL): one table with
// gearmand's columns,
//
//	CREATE TABLE gearman_queue (unique_key VARBINARY(64) NOT NULL,
//	  function_name VARBINARY(255) NOT NULL, priority INT, data LONGBLOB,
//	  when_to_run INT, PRIMARY KEY (unique_key, function_name))
//
// so that rows gearmand left behind are replayed and rows gearshard writes
// are rows gearmand reads. gearmand's UNIQUE KEY over nullable columns
// leaves InnoDB a hidden row id to cluster on, so every insert and delete
// touches two B-trees; the primary key is the one (the database's CPU per
// job fell by a fifth).
//
// The key columns are binary where gearmand makes them VARCHAR. In
// gearmand's table they take the database's default collation, which is
// case-insensitive and ignores trailing spaces (latin1_swedish_ci,
// utf8mb4_general_ci): the uniques "A" and "a" of one function are one key
// there, and gearmand refuses the second job with QUEUE_ERROR although it
// is a distinct job on the wire. gearshard keeps them apart, so it needs
// keys compared byte for byte; Open converts the key columns of such a
// table to VARBINARY (an ALTER TABLE, logged), which gearmand reads and
// writes as before.
//
// One writer goroutine, on a connection of its own, commits each batch of
// Adds and Removes as one transaction: multi-row DELETEs, then multi-row
// INSERT ... ON DUPLICATE KEY UPDATE, then COMMIT, sent together in one
// round trip when they fit in one packet. An Add is acknowledged when
// that transaction has committed (with InnoDB's default
// innodb_flush_log_at_trx_commit=1, after its redo log is flushed). Batches are idempotent, so one that
// failed with the connection is sent once more on a new one.
//
// when_to_run is an INT: run-at times after 2038-01-19 fail the Add, and
// so does a job too large for one row of the server's max_allowed_packet
// (which replay could not read back).
type MySQL struct {
	netQueue  // the writer; Remove and AfterDone of engine.Store
	closeOnce sync.Once
	db        *sql.DB
	log       zerolog.Logger
	maxRow    int // bytes of function, unique and data that one row may hold

	deleteSQL, insertSQL, selectSQL string

	// The writer goroutine's.
	wconn           *sql.Conn
	latest          latestOps
	args            []any
	sqlBuf, stmtBuf []byte
}

var _ engine.Store = (*MySQL)(nil)

// OpenMySQL connects to the server, creates the table if it does not
// exist (or makes the key columns of an existing one binary) and starts
// the writer.
func OpenMySQL(ctx context.Context, c MySQLConfig, log zerolog.Logger) (*MySQL, error) {
	table := c.Table
	if table == "" {
		table = DefaultMySQLTable
	}
	if !sqlValidTable(table) {
		return nil, fmt.Errorf("mysql queue: table name %q: want letters, digits and _ (not first a digit), optionally db.table", table)
	}
	cfg := mysql.NewConfig()
	cfg.User, cfg.Passwd, cfg.DBName = c.User, c.Password, c.DB
	if c.Host == "" || c.Host == "localhost" {
		socket := os.Getenv("MYSQL_UNIX_PORT")
		if socket == "" {
			socket = mysqlDefaultSocket
		}
		cfg.Net, cfg.Addr = "unix", socket
	} else {
		cfg.Net, cfg.Addr = "tcp", net.JoinHostPort(c.Host, strconv.Itoa(c.Port))
	}
	cfg.Timeout, cfg.ReadTimeout, cfg.WriteTimeout = netAttempt, netAttempt, netAttempt
	// One round trip per statement (no prepare); a statement that would
	// still be too large falls back to a prepared one, which sends long
	// data in pieces.
	cfg.InterpolateParams = true
	cfg.MultiStatements = true // a batch in one round trip; every value is escaped by the driver
	cfg.MaxAllowedPacket = 0   // the server's
	cfg.Params = map[string]string{"sql_mode": "'STRICT_ALL_TABLES'"}
	connector, err := mysql.NewConnector(cfg)
	if err != nil {
		return nil, fmt.Errorf("mysql queue: %w", err)
	}
	m := &MySQL{
		db:        sql.OpenDB(connector),
		log:       log,
		deleteSQL: "DELETE FROM " + table + " WHERE (unique_key, function_name) IN (",
		insertSQL: "INSERT INTO " + table + " (unique_key, function_name, priority, data, when_to_run) VALUES ",
		selectSQL: "SELECT coalesce(unique_key, ''), coalesce(function_name, ''), coalesce(priority, 0)," +
			" coalesce(data, ''), coalesce(when_to_run, 0) FROM " + table,
	}
	// The writer and Replay: one connection each, kept.
	m.db.SetMaxOpenConns(2)
	m.db.SetMaxIdleConns(2)
	cctx, cancel := context.WithTimeout(ctx, netAttempt)
	defer cancel()
	if err := m.prepareTable(cctx, table); err != nil {
		m.db.Close()
		return nil, err
	}
	var maxPacket int
	if err := m.db.QueryRowContext(cctx, "SELECT @@max_allowed_packet").Scan(&maxPacket); err != nil {
		m.db.Close()
		return nil, fmt.Errorf("mysql queue: %w", err)
	}
	m.maxRow = maxPacket - 1024 // the row's framing and the other columns
	m.netQueue.start(m, log)
	return m, nil
}

// prepareTable creates table with binary key columns, or converts the key
// columns of an existing one (gearmand's VARCHARs) to binary.
func (m *MySQL) prepareTable(ctx context.Context, table string) error {
	if _, err := m.db.ExecContext(ctx, "CREATE TABLE IF NOT EXISTS "+table+
		" (unique_key VARBINARY(64) NOT NULL, function_name VARBINARY(255) NOT NULL, priority INT, data LONGBLOB,"+
		" when_to_run INT, PRIMARY KEY (unique_key, function_name))"); err != nil {
		return fmt.Errorf("mysql queue: create table %s: %w", table, mysqlHint(err))
	}
	schema, args := "DATABASE()", []any{table}
	if db, t, ok := strings.Cut(table, "."); ok {
		schema, args = "?", []any{db, t}
	}
	rows, err := m.db.QueryContext(ctx, "SELECT column_name, data_type FROM information_schema.columns"+
		" WHERE table_schema = "+schema+" AND table_name = ?"+
		" AND column_name IN ('unique_key', 'function_name') AND character_set_name IS NOT NULL", args...)
	if err != nil {
		return fmt.Errorf("mysql queue: columns of %s: %w", table, err)
	}
	var textual []string
	for rows.Next() {
		var column, kind string
		if err := rows.Scan(&column, &kind); err != nil {
			rows.Close()
			return fmt.Errorf("mysql queue: columns of %s: %w", table, err)
		}
		textual = append(textual, column+" "+kind)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return fmt.Errorf("mysql queue: columns of %s: %w", table, err)
	}
	if len(textual) == 0 {
		return nil
	}
	alter := "ALTER TABLE " + table + " MODIFY unique_key VARBINARY(64), MODIFY function_name VARBINARY(255)"
	m.log.Warn().Str("table", table).Strs("columns", textual).Str("statement", alter).
		Msg("mysql queue: making the key columns binary: a text collation makes uniques that differ only in case or trailing spaces one key, and a second such job would overwrite the first; gearmand uses the table as before")
	if _, err := m.db.ExecContext(ctx, alter); err != nil {
		return fmt.Errorf("mysql queue: %s: %w (an administrator can run it; gearmand works with the result)", alter, mysqlHint(err))
	}
	return nil
}

// mysqlHint adds to a refused statement what usually causes it.
func mysqlHint(err error) error {
	var me *mysql.MySQLError
	if errors.As(err, &me) && (me.Number == 1142 || me.Number == 1044) { // command denied, access denied to db
		return fmt.Errorf("%w: the --mysql-user needs CREATE and ALTER on the table", err)
	}
	return err
}

// Add implements engine.Store. A function name over 255 bytes, a unique
// over 64 bytes, a run-at time outside INT or a row larger than the
// server's max_allowed_packet fails at once.
func (m *MySQL) Add(r engine.Record, done func(error)) {
	err := sqlRecordErr("mysql", r, myMaxFunction, myMaxUnique)
	if n := len(r.Function) + len(r.Unique) + len(r.Data); err == nil && n > m.maxRow {
		err = fmt.Errorf("mysql queue: job of %d bytes does not fit the server's max_allowed_packet (%d bytes of job at most)", n, m.maxRow)
	}
	m.add(r, done, err)
}

// Close implements engine.Store: it writes what is queued (each batch
// bounded as always) and closes the connections.
func (m *MySQL) Close() error {
	err := m.netQueue.close()
	m.closeOnce.Do(func() { // the writer has exited: its connection is ours
		if m.wconn != nil {
			m.wconn.Close()
		}
		m.db.Close()
	})
	return err
}

// Replay implements engine.Store. Like gearmand's replay, a NULL priority
// is high and a NULL when_to_run is 0.
func (m *MySQL) Replay(fn func(engine.Record)) error {
	rows, err := m.db.QueryContext(context.Background(), m.selectSQL)
	if err != nil {
		return fmt.Errorf("mysql queue: replay: %w", err)
	}
	defer rows.Close()
	var (
		unique, function, data sql.RawBytes
		priority               int32
		when                   int64
	)
	for rows.Next() {
		if err := rows.Scan(&unique, &function, &priority, &data, &when); err != nil {
			return fmt.Errorf("mysql queue: replay: %w", err)
		}
		fn(engine.Record{Function: function, Unique: unique, Priority: engine.Priority(priority), Data: data, When: when})
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("mysql queue: replay: %w", err)
	}
	return nil
}

// write implements netBackend.
func (m *MySQL) write(ops []netOp) error {
	var dels, inss []*netOp
	m.latest.each(ops, func(op *netOp) {
		if op.done == nil {
			dels = append(dels, op)
		} else {
			inss = append(inss, op)
		}
	})
	if len(dels)+len(inss) == 0 {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), netAttempt)
	defer cancel()
	err := m.send(ctx, dels, inss)
	if err != nil && !myRefused(err) && ctx.Err() == nil {
		// The connection may have died while idle (a server restart):
		// once more, on a new one. The batch is idempotent.
		err = m.send(ctx, dels, inss)
	}
	if err != nil {
		return fmt.Errorf("mysql queue: %w", err)
	}
	return nil
}

// send runs one batch as one transaction on the writer's connection. A
// batch whose statements fit in one packet goes as one multi-statement
// query, START TRANSACTION; DELETE ...; INSERT ...; COMMIT: one round
// trip, as PostgreSQL's pipelined batch. A larger one goes statement by
// statement (where the driver may prepare a statement to send its data in
// pieces). On an error the connection is dropped, so that no transaction
// is left open on it.
func (m *MySQL) send(ctx context.Context, dels, inss []*netOp) (err error) {
	if m.wconn == nil {
		if m.wconn, err = m.db.Conn(ctx); err != nil {
			return err
		}
	}
	defer func() {
		clear(m.args)
		m.args = m.args[:0]
		if err != nil {
			m.wconn.Raw(func(any) error { return driver.ErrBadConn }) // closes it
			m.wconn.Close()
			m.wconn = nil
		}
	}()
	size := len(m.insertSQL) + len(m.deleteSQL) + 64
	for _, op := range dels {
		size += 2*(len(op.rec.Unique)+len(op.rec.Function)) + 32
	}
	for _, op := range inss {
		size += 2*(len(op.rec.Unique)+len(op.rec.Function)+len(op.rec.Data)) + 64
	}
	if size <= m.maxRow {
		q := append(m.sqlBuf[:0], "START TRANSACTION"...)
		m.statements(dels, inss, func(stmt []byte) error {
			q = append(append(q, ';'), stmt...)
			return nil
		})
		q = append(q, ";COMMIT"...)
		m.sqlBuf = q
		_, err = m.wconn.ExecContext(ctx, string(q), m.args...)
		return err
	}
	tx, err := m.wconn.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	if err = m.statements(dels, inss, func(stmt []byte) error {
		_, err := tx.ExecContext(ctx, string(stmt), m.args...)
		clear(m.args)
		m.args = m.args[:0]
		return err
	}); err != nil {
		tx.Rollback()
		return err
	}
	return tx.Commit()
}

// statements gives the batch's DELETEs, then its INSERTs, to run, each
// with its arguments in m.args, cut at myStmtRows rows and myStmtBytes of
// data.
func (m *MySQL) statements(dels, inss []*netOp, run func(stmt []byte) error) error {
	for len(dels) > 0 {
		n := min(len(dels), myStmtRows)
		q := append(m.stmtBuf[:0], m.deleteSQL...)
		for i, op := range dels[:n] {
			if i > 0 {
				q = append(q, ',')
			}
			q = append(q, "(?,?)"...)
			m.args = append(m.args, op.rec.Unique, op.rec.Function)
		}
		m.stmtBuf = append(q, ')')
		if err := run(m.stmtBuf); err != nil {
			return err
		}
		dels = dels[n:]
	}
	for len(inss) > 0 {
		n, size := 0, 0
		for n < len(inss) && n < myStmtRows && (n == 0 || size < myStmtBytes) {
			size += len(inss[n].rec.Data)
			n++
		}
		q := append(m.stmtBuf[:0], m.insertSQL...)
		for i, op := range inss[:n] {
			if i > 0 {
				q = append(q, ',')
			}
			q = append(q, "(?,?,?,?,?)"...)
			data := op.rec.Data
			if data == nil {
				data = []byte{} // not NULL, which gearmand's replay would read as no data anyway
			}
			m.args = append(m.args, op.rec.Unique, op.rec.Function, int32(op.rec.Priority), data, int32(op.rec.When))
		}
		m.stmtBuf = append(q, " ON DUPLICATE KEY UPDATE priority = VALUES(priority), data = VALUES(data), when_to_run = VALUES(when_to_run)"...)
		if err := run(m.stmtBuf); err != nil {
			return err
		}
		inss = inss[n:]
	}
	return nil
}

// myRefused: the server answered with an error about the statements (the
// connection is fine), rather than that it cannot be reached, is shutting
// down or out of connections, or gave up on a lock.
func myRefused(err error) bool {
	var me *mysql.MySQLError
	if !errors.As(err, &me) {
		return false
	}
	switch me.Number {
	case 1040, 1203, 1226, // too many connections, per user, resource limit
		1053, 1927, 1317, // server shutdown, connection killed, query interrupted
		1205, 1213, // lock wait timeout, deadlock
		1290, 1836: // read-only server
		return false
	}
	return true
}

// transient implements netBackend.
func (m *MySQL) transient(err error) bool { return !myRefused(err) }
