package main

import (
	"bufio"
	"fmt"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"gearshard/netio/gstest"
	"gearshard/wire"
)

func sqliteQueue(t *testing.T) []string {
	return []string{"-q", "libsqlite3", "--libsqlite3-db", filepath.Join(t.TempDir(), "queue.db")}
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
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := p.wait(t, 20*time.Second); err != nil {
		t.Fatalf("first server: %v", err)
	}

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
