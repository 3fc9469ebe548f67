package queue

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"
	"github.com/rs/zerolog"

	"gearshard/engine"
	"gearshard/engine/queue/queuetest"
)

// pgStore is the PostgreSQL store for the tests all network stores share.
var pgStore = netStore{
	name: "postgres",
	server: func(t testing.TB) (netServer, string) {
		srv := queuetest.NewPostgres(t)
		return srv, srv.Conninfo
	},
	dial: func(conninfo, table string) (engine.Store, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		return OpenPostgres(ctx, conninfo, table, zerolog.Nop())
	},
	dflt: "queue",
	// An immediate shutdown, without a checkpoint: the next start
	// recovers from the WAL, as after a crash.
	crash: syscall.SIGQUIT,
}

func pgExec(t testing.TB, conninfo, sql string, args ...any) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := pgx.Connect(ctx, conninfo)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	defer c.Close(ctx)
	if _, err := c.Exec(ctx, sql, args...); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

func TestPostgresKeyEscape(t *testing.T) {
	check := func(b []byte) {
		t.Helper()
		s := pgEscape(b)
		if !utf8.ValidString(s) || strings.IndexByte(s, 0) >= 0 {
			t.Fatalf("escape of %q = %q: not valid UTF-8 without NUL", b, s)
		}
		if n := utf8.RuneCountInString(s); n > len(b) {
			t.Fatalf("escape of %q has %d characters, more than its %d bytes", b, n, len(b))
		}
		if back := pgUnescape(nil, s); !bytes.Equal(back, b) {
			t.Fatalf("escape of %q = %q unescapes to %q", b, s, back)
		}
	}
	for _, k := range []string{"", "plain", "gs~8000000000000001", "日本", "a-b", "\x00", "\xff", "a\xffb", "\xc3", "\xed\xa0\x80",
		"\U0010FE00", "\U0010FEFF", "\U0010FDFF\U0010FF00", "\xf4\x8f\xb8", "\xf4", "\U0010FFFF"} {
		check([]byte(k))
	}
	if got := pgEscape([]byte("plain ütf-8")); got != "plain ütf-8" {
		t.Errorf("plain UTF-8 stored as %q", got)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	alphabet := []byte{0, 'a', '-', 0xc3, 0xbc, 0xf4, 0x8f, 0xb8, 0xbf, 0x80, 0xff, 0xe6, 0x97, 0xa5}
	for range 20000 {
		b := make([]byte, rng.IntN(12))
		for i := range b {
			if rng.IntN(4) == 0 {
				b[i] = byte(rng.Uint32())
			} else {
				b[i] = alphabet[rng.IntN(len(alphabet))]
			}
		}
		check(b)
	}
}

func TestSQLValidTable(t *testing.T) {
	for _, ok := range []string{"queue", "gearman_queue", "Q1", "public.queue", "_x"} {
		if !sqlValidTable(ok) {
			t.Errorf("%q rejected", ok)
		}
	}
	for _, bad := range []string{"", "1q", "q;drop table x", "a.b.c", "a.", "q-1", `"q"`, "q q", strings.Repeat("q", 64)} {
		if sqlValidTable(bad) {
			t.Errorf("%q accepted", bad)
		}
	}
}

// TestPostgres runs the store against one PostgreSQL server, each part on
// a table of its own.
func TestPostgres(t *testing.T) {
	conninfo := queuetest.StartPostgres(t)
	netConformance(t, pgStore, conninfo)

	t.Run("DefaultTable", func(t *testing.T) {
		netDefault(t, pgStore, conninfo, engine.Record{Function: []byte("epoch"), Unique: []byte("e1"), Priority: engine.Low, Data: []byte("later"), When: 2000000000})

		// Plain keys are stored as they are: gearmand reads these rows.
		ctx := context.Background()
		c, err := pgx.Connect(ctx, conninfo)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close(ctx)
		var unique, function string
		var priority, when int32
		var data []byte
		err = c.QueryRow(ctx, "SELECT unique_key, function_name, priority, data, when_to_run FROM queue WHERE function_name = 'epoch'").
			Scan(&unique, &function, &priority, &data, &when)
		if err != nil || unique != "e1" || function != "epoch" || priority != 2 || string(data) != "later" || when != 2000000000 {
			t.Errorf("row as gearmand sees it: %q %q %d %q %d, %v", unique, function, priority, data, when, err)
		}
	})

	t.Run("GearmandRows", func(t *testing.T) {
		// Rows as gearmand 1.1 writes them (plain INSERT), one with NULL
		// when_to_run.
		s := pgStore.open(t, conninfo, "gm")
		pgExec(t, conninfo, "INSERT INTO gm (unique_key, function_name, priority, data, when_to_run) VALUES"+
			" ('u1', 'reverse', 0, 'abc', 0), ('', 'empty', 2, '\\x00ff'::bytea, 1700000000), ('u-3', 'f-n', 1, NULL, NULL)")
		want := []engine.Record{
			{Function: []byte("reverse"), Unique: []byte("u1"), Priority: engine.High, Data: []byte("abc")},
			{Function: []byte("empty"), Unique: []byte{}, Priority: engine.Low, Data: []byte{0, 0xff}, When: 1700000000},
			{Function: []byte("f-n"), Unique: []byte("u-3"), Priority: engine.Normal, Data: []byte{}},
		}
		wantSet(t, replayAll(t, s), want)
		s.Remove([]byte("reverse"), []byte("u1"))
		addAll(t, s, []engine.Record{{Function: []byte("f-n"), Unique: []byte("u-3"), Priority: engine.High, Data: []byte("new")}})
		closeStore(t, s)
		s = pgStore.open(t, conninfo, "gm")
		defer closeStore(t, s)
		wantSet(t, replayAll(t, s), []engine.Record{want[1],
			{Function: []byte("f-n"), Unique: []byte("u-3"), Priority: engine.High, Data: []byte("new")}})
	})

	t.Run("Limits", func(t *testing.T) {
		s := pgStore.open(t, conninfo, "limits")
		defer s.Close()
		for _, r := range []engine.Record{
			{Function: bytes.Repeat([]byte("f"), 256), Unique: []byte("u")},
			{Function: []byte("f"), Unique: bytes.Repeat([]byte("u"), 65)},
			{Function: []byte("f"), Unique: []byte("u"), When: 1 << 40},
		} {
			err := addWait(t, s, r, 5*time.Second)
			if err == nil || !strings.Contains(err.Error(), "postgres queue") {
				t.Errorf("Add of %d-byte function, %d-byte unique, when %d: %v", len(r.Function), len(r.Unique), r.When, err)
			}
		}
		if err := addWait(t, s, engine.Record{Function: bytes.Repeat([]byte("ü"), 127), Unique: bytes.Repeat([]byte("\x00"), 64)}, 10*time.Second); err != nil {
			t.Errorf("254-byte function, 64-byte unique: %v", err)
		}
	})

	t.Run("BadOpen", func(t *testing.T) {
		if _, err := pgStore.dial(conninfo, "q; DROP TABLE queue"); err == nil {
			t.Errorf("bad table name accepted")
		}
		netNoServer(t, pgStore, fmt.Sprintf("host=127.0.0.1 port=%d user=postgres sslmode=disable", queuetest.FreePort(t)))
	})
}

func TestPostgresRestart(t *testing.T) { netRestart(t, pgStore) }
func TestPostgresStall(t *testing.T)   { netStall(t, pgStore) }
func TestPostgresCrash(t *testing.T)   { netCrash(t, pgStore) }

// BenchmarkPostgresAdd: acknowledged Adds per second, many in flight.
func BenchmarkPostgresAdd(b *testing.B) { netBenchAdd(b, pgStore) }

// netBenchAdd: acknowledged Adds per second on a server of the
// benchmark's own.
func netBenchAdd(b *testing.B, n netStore) {
	_, addr := n.server(b)
	s := n.open(b, addr, "bench")
	defer s.Close()
	var seq atomic.Uint64
	data := bytes.Repeat([]byte("x"), 100)
	b.SetParallelism(netBenchParallel)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		done := make(chan error, 1)
		for pb.Next() {
			n := seq.Add(1)
			s.Add(engine.Record{Function: []byte("bench"), Unique: fmt.Appendf(nil, "b-%d", n), Priority: engine.Normal, Data: data},
				func(err error) { done <- err })
			if err := <-done; err != nil {
				b.Errorf("Add: %v", err)
				return
			}
		}
	})
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "acks/s")
}

// netBenchParallel × GOMAXPROCS Adds are in flight in the benchmarks.
var netBenchParallel = 64
