package queue

import (
	"bytes"
	"context"
	"database/sql"
	"fmt"
	"net"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"
	"github.com/rs/zerolog"

	"gearshard/engine"
	"gearshard/engine/queue/queuetest"
)

// myStore is the MySQL store for the tests all network stores share; its
// address is the test user's DSN.
var myStore = netStore{
	name: "mysql",
	server: func(t testing.TB) (netServer, string) {
		srv := queuetest.NewMySQL(t)
		return srv, srv.DSN()
	},
	dial: func(dsn, table string) (engine.Store, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		return OpenMySQL(ctx, myConfig(dsn, table), zerolog.Nop())
	},
	dflt: DefaultMySQLTable,
	// InnoDB keeps what was committed through a kill.
	crash: syscall.SIGKILL,
}

// myConfig gives the flags' view of a DSN of the test user.
func myConfig(dsn, table string) MySQLConfig {
	cfg, err := mysql.ParseDSN(dsn)
	if err != nil {
		panic(err)
	}
	host, port, _ := net.SplitHostPort(cfg.Addr)
	p, _ := strconv.Atoi(port)
	return MySQLConfig{Host: host, Port: p, User: cfg.User, Password: cfg.Passwd, DB: cfg.DBName, Table: table}
}

func myDB(t testing.TB, dsn string) *sql.DB {
	t.Helper()
	db, err := sql.Open("mysql", dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

func myExec(t testing.TB, db *sql.DB, q string, args ...any) {
	t.Helper()
	if _, err := db.Exec(q, args...); err != nil {
		t.Fatalf("%s: %v", q, err)
	}
}

// TestMySQL runs the store against one MariaDB server, each part on a
// table of its own.
func TestMySQL(t *testing.T) {
	srv := queuetest.NewMySQL(t)
	dsn := srv.DSN()
	db := myDB(t, dsn)
	netConformance(t, myStore, dsn)

	t.Run("DefaultTable", func(t *testing.T) {
		netDefault(t, myStore, dsn, engine.Record{Function: []byte("epoch"), Unique: []byte("e1"), Priority: engine.Low, Data: []byte("later"), When: 2000000000})

		// The row as gearmand's replay reads it (its SELECT, text protocol).
		var unique, function, data []byte
		var priority, when int32
		err := db.QueryRow("SELECT unique_key, function_name, data, priority, when_to_run FROM gearman_queue WHERE function_name = 'epoch'").
			Scan(&unique, &function, &data, &priority, &when)
		if err != nil || string(unique) != "e1" || string(function) != "epoch" || priority != 2 || string(data) != "later" || when != 2000000000 {
			t.Errorf("row as gearmand sees it: %q %q %d %q %d, %v", unique, function, priority, data, when, err)
		}
	})

	t.Run("GearmandTable", func(t *testing.T) {
		// gearmand's CREATE TABLE, under the server's default collation
		// (latin1_swedish_ci: case-insensitive, trailing spaces ignored),
		// and rows as gearmand 1.1 writes them.
		myExec(t, db, "CREATE TABLE gm (unique_key VARCHAR(64), function_name VARCHAR(255), priority INT,"+
			" data LONGBLOB, when_to_run INT, unique key (unique_key, function_name))")
		myExec(t, db, "INSERT INTO gm (unique_key, function_name, priority, data, when_to_run) VALUES"+
			" ('u1', 'reverse', 0, 'abc', 0), ('A', 'case', 1, 'upper', 0), ('', 'empty', 2, x'00ff', 1700000000),"+
			" ('u-3', 'f-n', NULL, NULL, NULL)")
		s := myStore.open(t, dsn, "gm")
		var textual int
		if err := db.QueryRow("SELECT count(*) FROM information_schema.columns WHERE table_schema = DATABASE() AND table_name = 'gm'" +
			" AND column_name IN ('unique_key', 'function_name') AND character_set_name IS NOT NULL").Scan(&textual); err != nil || textual != 0 {
			t.Errorf("key columns still textual after open: %d, %v", textual, err)
		}
		want := []engine.Record{
			{Function: []byte("reverse"), Unique: []byte("u1"), Priority: engine.High, Data: []byte("abc")},
			{Function: []byte("case"), Unique: []byte("A"), Priority: engine.Normal, Data: []byte("upper")},
			{Function: []byte("empty"), Unique: []byte{}, Priority: engine.Low, Data: []byte{0, 0xff}, When: 1700000000},
			{Function: []byte("f-n"), Unique: []byte("u-3"), Priority: engine.High, Data: []byte{}}, // NULL priority: gearmand's 0
		}
		wantSet(t, replayAll(t, s), want)
		// Keys that the old collation made one are distinct jobs now.
		distinct := []engine.Record{
			{Function: []byte("case"), Unique: []byte("a"), Priority: engine.Low, Data: []byte("lower")},
			{Function: []byte("case"), Unique: []byte("A "), Priority: engine.Low, Data: []byte("space")},
			{Function: []byte("CASE"), Unique: []byte("A"), Priority: engine.Low, Data: []byte("fn upper")},
		}
		addAll(t, s, distinct)
		s.Remove([]byte("reverse"), []byte("u1"))
		closeStore(t, s)
		s = myStore.open(t, dsn, "gm")
		defer closeStore(t, s)
		wantSet(t, replayAll(t, s), append(want[1:], distinct...))
	})

	t.Run("Limits", func(t *testing.T) {
		s := myStore.open(t, dsn, "limits")
		defer s.Close()
		var maxPacket int
		if err := db.QueryRow("SELECT @@max_allowed_packet").Scan(&maxPacket); err != nil {
			t.Fatal(err)
		}
		for _, r := range []engine.Record{
			{Function: bytes.Repeat([]byte("f"), 256), Unique: []byte("u")},
			{Function: []byte("f"), Unique: bytes.Repeat([]byte("u"), 65)},
			{Function: []byte("f"), Unique: []byte("u"), When: 1 << 40},
			{Function: []byte("f"), Unique: []byte("big"), Data: make([]byte, maxPacket)},
		} {
			err := addWait(t, s, r, 5*time.Second)
			if err == nil || !strings.Contains(err.Error(), "mysql queue") {
				t.Errorf("Add of %d-byte function, %d-byte unique, %d bytes of data, when %d: %v", len(r.Function), len(r.Unique), len(r.Data), r.When, err)
			}
		}
		// The largest keys, of any bytes, and data larger than a statement
		// is cut at (and than half the packet, which escaping could
		// double: the driver sends it as a prepared statement).
		large := bytes.Repeat([]byte{0, '\'', '\\', 0xff, 'x'}, maxPacket/2/5+1)
		edge := []engine.Record{
			{Function: bytes.Repeat([]byte{0xff}, 255), Unique: bytes.Repeat([]byte{0, '\''}, 32), Data: []byte("keys")},
			{Function: []byte("large"), Unique: []byte("l"), Priority: engine.Low, Data: large},
		}
		addAll(t, s, edge)
		closeStore(t, s)
		s = myStore.open(t, dsn, "limits")
		wantSet(t, replayAll(t, s), edge)
	})

	t.Run("UnixSocket", func(t *testing.T) {
		// Host localhost is the server's socket, as for gearmand
		// (libmysqlclient), found through MYSQL_UNIX_PORT.
		t.Setenv("MYSQL_UNIX_PORT", srv.Socket)
		root := myDB(t, "root@unix("+srv.Socket+")/")
		myExec(t, root, "CREATE USER IF NOT EXISTS 'sock'@'localhost' IDENTIFIED BY 'pw'")
		myExec(t, root, "GRANT ALL ON "+srv.DB+".* TO 'sock'@'localhost'")
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		s, err := OpenMySQL(ctx, MySQLConfig{Host: "localhost", User: "sock", Password: "pw", DB: srv.DB, Table: "sock"}, zerolog.Nop())
		if err != nil {
			t.Fatalf("open over the socket: %v", err)
		}
		r := engine.Record{Function: []byte("sock"), Unique: []byte("s"), Priority: engine.Normal, Data: []byte("via socket")}
		addAll(t, s, []engine.Record{r})
		defer closeStore(t, s)
		wantSet(t, replayAll(t, s), []engine.Record{r})
	})

	t.Run("BadOpen", func(t *testing.T) {
		if _, err := myStore.dial(dsn, "q; DROP TABLE gearman_queue"); err == nil {
			t.Errorf("bad table name accepted")
		}
		cfg := myConfig(dsn, "")
		cfg.Password = "wrong"
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if s, err := OpenMySQL(ctx, cfg, zerolog.Nop()); err == nil {
			s.Close()
			t.Errorf("wrong password accepted")
		} else if !strings.Contains(err.Error(), "Access denied") {
			t.Errorf("wrong password: %v", err)
		}
		netNoServer(t, myStore, fmt.Sprintf("gearshard:pw@tcp(127.0.0.1:%d)/gearman", queuetest.FreePort(t)))
	})
}

func TestMySQLRestart(t *testing.T) { netRestart(t, myStore) }
func TestMySQLStall(t *testing.T)   { netStall(t, myStore) }
func TestMySQLCrash(t *testing.T)   { netCrash(t, myStore) }

// BenchmarkMySQLAdd: acknowledged Adds per second, many in flight.
func BenchmarkMySQLAdd(b *testing.B) { netBenchAdd(b, myStore) }
