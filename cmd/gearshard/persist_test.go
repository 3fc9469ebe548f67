package main

import (
	"bufio"
	"fmt"
	"net"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"gearshard/engine/queue/queuetest"
	"gearshard/netio/gstest"
	"gearshard/wire"
)

// Each store's flags, pointing a server at a queue of the test's own.
func sqliteQueue(t *testing.T) []string {
	return []string{"-q", "libsqlite3", "--libsqlite3-db", filepath.Join(t.TempDir(), "queue.db")}
}

func postgresQueue(t *testing.T) []string {
	return []string{"-q", "Postgres", "--libpq-conninfo", queuetest.StartPostgres(t)}
}

func redisQueue(t *testing.T) []string {
	host, port, _ := net.SplitHostPort(queuetest.StartRedis(t))
	return []string{"-q", "redis", "--redis-server", host, "--redis-port", port}
}

// mysqlFlags are gearmand's flags for srv's database, table given.
func mysqlFlags(srv *queuetest.MySQL, table string) []string {
	return []string{"-q", "MySQL", "--mysql-host", srv.Host, "--mysql-port", strconv.Itoa(srv.Port),
		"--mysql-user", srv.User, "--mysql-password", srv.Password, "--mysql-db", srv.DB, "--mysql-table", table}
}

func mysqlQueue(t *testing.T) []string { return mysqlFlags(queuetest.NewMySQL(t), "gearman_queue") }

// memcachedFlags are gearmand's flags for the memcached servers srvs.
func memcachedFlags(srvs ...*queuetest.Memcached) []string {
	var addrs []string
	for _, s := range srvs {
		addrs = append(addrs, s.Addr)
	}
	return []string{"-q", "libmemcached", "--libmemcached-servers", strings.Join(addrs, ",")}
}

func memcachedQueue(t *testing.T) []string { return memcachedFlags(queuetest.NewMemcached(t)) }

func TestPersistRestartPostgres(t *testing.T) { testPersistRestart(t, postgresQueue(t)) }
func TestPersistRestartMySQL(t *testing.T)    { testPersistRestart(t, mysqlQueue(t)) }
func TestPersistRestartRedis(t *testing.T)    { testPersistRestart(t, redisQueue(t)) }
func TestPersistCrashPostgres(t *testing.T)   { testPersistCrash(t, postgresQueue(t)) }
func TestPersistCrashMySQL(t *testing.T)      { testPersistCrash(t, mysqlQueue(t)) }
func TestPersistCrashRedis(t *testing.T)      { testPersistCrash(t, redisQueue(t)) }

// (memcached keeps nothing across its own restart; these restart and
// kill gearshard, not memcached.)
func TestPersistRestartMemcached(t *testing.T) { testPersistRestart(t, memcachedQueue(t)) }
func TestPersistCrashMemcached(t *testing.T)   { testPersistCrash(t, memcachedQueue(t)) }

// TestMemcachedSwitchWithGearmand: Debian's gearmand and gearshard take
// over each other's jobs on two memcached servers, in both directions:
// each finds the other's items and deletes a finished job's item on the
// server that holds it, by libmemcached's key hash (which reads key bytes
// as signed chars: the non-ASCII function names check that). A job with a
// run-at time, which gearmand refuses on this queue, is kept by gearshard
// where gearmand's replay skips it.
//
// Two limits of gearmand's replay shape the test. It lists keys with
// "stats cachedump", which in memcached 1.5 and later dumps only the COLD
// LRU: with the default segmented LRU it missed those still in the HOT
// and WARM LRUs (3 of the 4 it could replay, in one run here), so
// the servers run with -o no_lru_maintainer (one LRU per class, the COLD
// one). And it does not replay a job whose key holds non-ASCII bytes,
// not even one it wrote itself, so those come back in gearshard only.
func TestMemcachedSwitchWithGearmand(t *testing.T) {
	flags := memcachedFlags(queuetest.NewMemcached(t, "-o", "no_lru_maintainer"), queuetest.NewMemcached(t, "-o", "no_lru_maintainer"))
	functions := []string{"f", "fé", "日本"}
	// submitAll submits 12 jobs, 4 of each function, and gives them as
	// grabAll will: those of function f, and the others.
	submitAll := func(c *gstest.Conn, who string) (ascii, other []string) {
		for i := range 12 {
			typ := []wire.Type{wire.SubmitJobBG, wire.SubmitJobHighBG, wire.SubmitJobLowBG}[i%3]
			f, u, data := functions[i%len(functions)], fmt.Sprintf("%s-%d", who, i), fmt.Sprintf("%s data %d", who, i)
			c.Send(typ, f, u, data)
			c.Expect(wire.JobCreated)
			if f == "f" {
				ascii = append(ascii, u+"="+data)
			} else {
				other = append(other, u+"="+data)
			}
		}
		slices.Sort(ascii)
		slices.Sort(other)
		return ascii, other
	}
	grabSorted := func(addr string) []string {
		w := gstest.Dial(t, addr)
		for _, f := range functions {
			w.Send(wire.CanDo, f)
		}
		got := grabAll(t, w, 20)
		slices.Sort(got)
		return got
	}

	gd := startGearmand(t, append([]string{"-t", "0"}, flags...)...)
	c := gstest.Dial(t, gd.addr)
	gdASCII, gdOther := submitAll(c, "gd")
	c.Send(wire.SubmitJobEpoch, "f", "gd-epoch", strconv.FormatInt(time.Now().Unix()+3600, 10), "later")
	c.Expect(wire.Error, "QUEUE_ERROR", "QUEUE_ERROR")

	gs := startProcess(t, flags...)
	if got, want := grabSorted(gs.addr), slices.Sorted(slices.Values(append(gdASCII, gdOther...))); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("gearshard served gearmand's jobs as\n%v\nwant\n%v", got, want)
	}
	g := gstest.Dial(t, gs.addr)
	gsASCII, gsOther := submitAll(g, "gs")
	g.Send(wire.SubmitJobEpoch, "f", "gs-epoch", strconv.FormatInt(time.Now().Unix()+3600, 10), "later")
	g.Expect(wire.JobCreated)
	gs.term(t)

	// A new gearmand replays gearshard's jobs (those it can), none of
	// gearmand's that gearshard finished, and not the one with a run-at
	// time.
	gd2 := startGearmand(t, append([]string{"-t", "0"}, flags...)...)
	if got := grabSorted(gd2.addr); fmt.Sprint(got) != fmt.Sprint(gsASCII) {
		t.Fatalf("gearmand replayed gearshard's queue as\n%v\nwant\n%v", got, gsASCII)
	}
	// A new gearshard holds the rest of gearshard's jobs: none that either
	// server finished, and the one with a run-at time.
	gs2 := startProcess(t, flags...)
	if got := grabSorted(gs2.addr); fmt.Sprint(got) != fmt.Sprint(gsOther) {
		t.Fatalf("gearshard replayed\n%v\nwant\n%v", got, gsOther)
	}
	if s := gstest.Dial(t, gs2.addr).Admin("show jobs"); strings.Count(s, "\n") != 2 {
		t.Fatalf("show jobs: %q, want the one job with a run-at time", s)
	}
}

// TestMySQLSwitchWithGearmand: Debian's gearmand and gearshard take over
// each other's MySQL queue, in both directions, on gearmand's own table
// (VARCHAR keys under a case-insensitive collation, which gearshard makes
// binary).
func TestMySQLSwitchWithGearmand(t *testing.T) {
	flags := mysqlFlags(queuetest.NewMySQL(t), "switch")
	gd := startGearmand(t, append([]string{"-t", "0"}, flags...)...)
	c := gstest.Dial(t, gd.addr)
	for _, s := range []struct {
		typ    wire.Type
		fields []string
	}{
		{wire.SubmitJobLowBG, []string{"f", "gd-low", "low"}},
		{wire.SubmitJobBG, []string{"f", "gd-normal", "normal"}},
		{wire.SubmitJobHighBG, []string{"f", "gd-high", "high"}},
		{wire.SubmitJobBG, []string{"f", "A", "upper"}},
	} {
		c.Send(s.typ, s.fields...)
		c.Expect(wire.JobCreated)
	}
	// gearmand's table refuses a unique that differs only in case.
	c.Send(wire.SubmitJobBG, "f", "a", "lower")
	c.Expect(wire.Error, "QUEUE_ERROR", "QUEUE_ERROR")
	// (gearmand, holding its jobs in memory too, is left alone from here;
	// no worker of its function connects to it.)

	gs := startProcess(t, flags...)
	w := gstest.Dial(t, gs.addr)
	w.Send(wire.CanDo, "f")
	if got := grabAll(t, w, 5); fmt.Sprint(got) != "[gd-high=high gd-normal=normal A=upper gd-low=low]" {
		t.Fatalf("gearshard served gearmand's jobs as %v", got)
	}
	g := gstest.Dial(t, gs.addr)
	for _, u := range []string{"A", "a", "A "} {
		g.Send(wire.SubmitJobBG, "f", u, "gs "+u)
		g.Expect(wire.JobCreated)
	}
	gs.term(t)

	// A new gearmand replays what gearshard left: its three jobs, and none
	// of those gearshard's worker completed.
	gd2 := startGearmand(t, append([]string{"-t", "0"}, flags...)...)
	w2 := gstest.Dial(t, gd2.addr)
	w2.Send(wire.CanDo, "f")
	got := grabAll(t, w2, 4)
	slices.Sort(got)
	if fmt.Sprint(got) != "[A =gs A  A=gs A a=gs a]" {
		t.Fatalf("gearmand replayed gearshard's queue as %q", got)
	}
}

// grabAll grabs and completes jobs on w (which has said CAN_DO) until
// NO_JOB or more than max, giving each as unique=data.
func grabAll(t *testing.T, w *gstest.Conn, max int) []string {
	t.Helper()
	var got []string
	for len(got) <= max {
		w.Send(wire.GrabJobUniq)
		p, err := w.Read()
		if err != nil {
			t.Fatal(err)
		}
		if p.Type == wire.NoJob {
			return got
		}
		if p.Type != wire.JobAssignUniq {
			t.Fatalf("GRAB_JOB_UNIQ: %v", p)
		}
		got = append(got, string(p.Fields[2])+"="+string(p.Fields[3]))
		w.Send(wire.WorkComplete, p.Fields[0], "")
	}
	t.Fatalf("more than %d jobs: %v", max, got)
	return nil
}

// Scaling out: nodes share one PostgreSQL (or Redis) with a table (or key
// prefix) each. When a node dies, a node started on its table takes over
// its background jobs, and the other nodes' jobs stay where they are.
func TestScaleOutTakeOverPostgres(t *testing.T) {
	conninfo := queuetest.StartPostgres(t)
	testTakeOver(t, func(node string) []string {
		return []string{"-q", "Postgres", "--libpq-conninfo", conninfo, "--libpq-table", "queue_" + node}
	})
}

func TestScaleOutTakeOverMySQL(t *testing.T) {
	srv := queuetest.NewMySQL(t)
	testTakeOver(t, func(node string) []string { return mysqlFlags(srv, "queue_"+node) })
}

func TestScaleOutTakeOverMemcached(t *testing.T) {
	flags := memcachedQueue(t)
	testTakeOver(t, func(node string) []string { return append(flags, "--libmemcached-prefix", "gear_"+node+"_") })
}

func TestScaleOutTakeOverRedis(t *testing.T) {
	host, port, _ := net.SplitHostPort(queuetest.StartRedis(t))
	testTakeOver(t, func(node string) []string {
		return []string{"-q", "redis", "--redis-server", host, "--redis-port", port, "--redis-prefix", "_gear_" + node}
	})
}

func testTakeOver(t *testing.T, queueOf func(node string) []string) {
	a := startProcess(t, queueOf("a")...)
	b := startProcess(t, queueOf("b")...)
	for _, n := range []struct {
		p    *proc
		name string
	}{{a, "a"}, {b, "b"}} {
		c := gstest.Dial(t, n.p.addr)
		for i := 0; i < 3; i++ {
			c.Send(wire.SubmitJobBG, "work", "", n.name+strconv.Itoa(i))
			c.Expect(wire.JobCreated)
		}
	}
	if err := a.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = a.wait(t, 20*time.Second)
	// A new node on a's queue serves a's jobs; b's stay with b.
	c := startProcess(t, queueOf("a")...)
	w := gstest.Dial(t, c.addr)
	w.Send(wire.CanDo, "work")
	var got []string
	for {
		w.Send(wire.GrabJob)
		p, err := w.Read()
		if err != nil {
			t.Fatal(err)
		}
		if p.Type == wire.NoJob {
			break
		}
		got = append(got, p.Fields[2])
		w.Send(wire.WorkComplete, p.Fields[0], "")
	}
	slices.Sort(got)
	if fmt.Sprint(got) != "[a0 a1 a2]" {
		t.Fatalf("the node that took over served %v, want a0 a1 a2", got)
	}
	if s := gstest.Dial(t, b.addr).Admin("status"); s != "work\t3\t0\t0\n.\n" {
		t.Fatalf("node b's queue changed: %q", s)
	}
}

// TestPersistRestartSQLite: background jobs with their priorities, unique
// keys and epoch times survive a restart of the server.
func TestPersistRestartSQLite(t *testing.T) { testPersistRestart(t, sqliteQueue(t)) }

// TestPersistCrashSQLite: kill -9 during a stream of submissions loses no
// job whose JOB_CREATED reached the client.
func TestPersistCrashSQLite(t *testing.T) { testPersistCrash(t, sqliteQueue(t)) }

func testPersistRestart(t *testing.T, queue []string) {
	p := startProcess(t, queue...)
	c := gstest.Dial(t, p.addr)
	future := strconv.FormatInt(time.Now().Add(time.Hour).Unix(), 10)
	for _, s := range []struct {
		typ    wire.Type
		fields []string
	}{
		{wire.SubmitJobLowBG, []string{"f", "", "low"}},
		{wire.SubmitJobBG, []string{"f", "u-normal", "normal"}},
		{wire.SubmitJobHighBG, []string{"f", "", "high"}},
		{wire.SubmitJobEpoch, []string{"f", "u-epoch", future, "later"}},
		{wire.SubmitJobBG, []string{"g-h", "", "other function"}},
	} {
		c.Send(s.typ, s.fields...)
		c.Expect(wire.JobCreated)
	}
	p.term(t)

	p2 := startProcess(t, queue...)
	a := gstest.Dial(t, p2.addr)
	if got := a.Admin("prioritystatus"); got != "f\t1\t2\t1\t0\ng-h\t0\t1\t0\t0\n.\n" {
		t.Fatalf("after restart prioritystatus %q", got)
	}
	w := gstest.Dial(t, p2.addr)
	w.Send(wire.CanDo, "f")
	var got []string
	for i := 0; i < 4; i++ {
		w.Send(wire.GrabJobUniq)
		p, err := w.Read()
		if err != nil {
			t.Fatal(err)
		}
		if p.Type == wire.NoJob {
			break
		}
		got = append(got, p.Fields[2]+"="+p.Fields[3])
		w.Send(wire.WorkComplete, p.Fields[0], "")
	}
	if fmt.Sprint(got[:3]) != "[=high u-normal=normal =low]" {
		t.Fatalf("replayed jobs served %v, want high, normal (unique kept), low", got)
	}
	// The epoch job keeps its time: known, not yet runnable.
	if len(got) > 3 {
		t.Fatalf("the epoch job ran before its time: %v", got)
	}
	c2 := gstest.Dial(t, p2.addr)
	c2.Send(wire.GetStatusUnique, "u-epoch")
	c2.Expect(wire.StatusResUnique, "u-epoch", "1", "0", "0", "0", "0")
}

func testPersistCrash(t *testing.T, queue []string) {
	const total = 20_000
	p := startProcess(t, queue...)
	c := gstest.Dial(t, p.addr)
	// Submit in a pipeline; kill the server after a few thousand acks.
	go func() {
		w := bufio.NewWriter(c.Raw())
		for i := 0; i < total; i++ {
			_, _ = w.Write(wire.AppendRequest(nil, wire.SubmitJobBG, []byte("crash"), []byte("k"+strconv.Itoa(i)), []byte(strconv.Itoa(i))))
			if i%64 == 63 {
				if w.Flush() != nil {
					return
				}
			}
		}
		_ = w.Flush()
	}()
	n := 0
	for n < total {
		pk, err := c.Read()
		if err != nil {
			break
		}
		if pk.Type != wire.JobCreated {
			t.Fatalf("got %v", pk)
		}
		n++
		if n == 3000 {
			if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
		}
	}
	_ = p.wait(t, 20*time.Second)
	if n < 3000 {
		t.Fatalf("only %d acknowledgements before the kill", n)
	}

	// Every acknowledged submission (they carry their index as data and
	// unique) must come back: at least once, so count distinct uniques.
	p2 := startProcess(t, queue...)
	w := gstest.Dial(t, p2.addr)
	w.Send(wire.CanDo, "crash")
	seen := map[string]bool{}
	for {
		w.Send(wire.GrabJobUniq)
		pk, err := w.Read()
		if err != nil {
			t.Fatal(err)
		}
		if pk.Type == wire.NoJob {
			break
		}
		seen[pk.Fields[2]] = true
		w.Send(wire.WorkComplete, pk.Fields[0], "")
	}
	if len(seen) < n {
		t.Fatalf("%d jobs acknowledged before kill -9, %d replayed", n, len(seen))
	}
	for i := 0; i < n; i++ {
		if !seen["k"+strconv.Itoa(i)] {
			t.Fatalf("acknowledged job k%d lost", i)
		}
	}
}
