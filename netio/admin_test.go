package netio_test

import (
	"strconv"
	"strings"
	"testing"
	"time"

	"gearshard/engine"
	"gearshard/netio/gstest"
	"gearshard/wire"
)

// Golden tests of the admin text protocol: exact bytes, as gearmand 1.1.20
// sends them (shared/reference/gearman.md §2), sorted where gearmand uses
// hash order.

func TestAdminGoldenEmptyServer(t *testing.T) {
	srv := gstest.Start(t, func(c *gstest.Config) {
		c.Admin = engine.AdminConfig{Version: "1.1.20+test", PID: 4242, Verbose: func() string { return "INFO" }}
	})
	a := gstest.Dial(t, srv.Addr)
	for _, c := range []struct{ send, want string }{
		{"status", ".\n"},
		{"STATUS", ".\n"},
		{"prioritystatus", ".\n"},
		{"show jobs", ".\n"},
		{"show unique jobs", ".\n"},
		{"version", "OK 1.1.20+test\n"},
		{"verbose", "OK INFO\n"},
		{"getpid", "OK 4242\n"},
		{"foo", "ERR UNKNOWN_COMMAND Unknown+server+commandfoo\r\n"},
		{"", "ERR UNKNOWN_COMMAND Unknown+server+command\r\n"},
		{"show", "ERR UNKNOWN_COMMAND Unknown+server+commandshow\r\n"},
		{"show foo", "ERR UNKNOWN_SHOW_ARGUMENTS\r\n"},
		{"maxqueue", "ERR INVALID_ARGUMENTS An+incomplete+set+of+arguments+was+sent+to+this+command+maxqueue\r\n"},
		{"maxqueue nosuchfn 5", "OK\r\n"},
		{"create function", "ERR INVALID_ARGUMENTS An+incomplete+set+of+arguments+was+sent+to+this+command+create\r\n"},
		{"drop", "ERR INVALID_ARGUMENTS An+incomplete+set+of+arguments+was+sent+to+this+command+drop\r\n"},
		{"drop function nosuch", "ERR function not found\r\n"},
		{"cancel job", "ERR UNKNOWN_COMMAND Unknown+server+commandcancel\r\n"},
		{"cancel foo bar", "ERR UNKNOWN_ERROR\r\n"},
		{"cancel job H:test:1", "ERR UNKNOWN_JOB\r\n"},
		{"shutdown now", "ERR UNKNOWN_COMMAND Unknown+server+commandshutdown\r\n"},
		// gearmand's words: a trailing space makes an empty last word, and
		// a word ends at a NUL.
		{"show jobs ", "ERR UNKNOWN_SHOW_ARGUMENTS\r\n"},
		{"drop function nosuch ", "ERR INVALID_ARGUMENTS An+incomplete+set+of+arguments+was+sent+to+this+command+drop\r\n"},
		{"cancel job H:test:1 ", "ERR UNKNOWN_ERROR\r\n"},
		{"show  jobs", ".\n"},
		{"status\x00", ".\n"},
		{"status\x00 ignored", ".\n"},
	} {
		if got := a.Admin(c.send); got != c.want {
			t.Errorf("%q: got %q, want %q", c.send, got, c.want)
		}
	}
}

// state builds: fA with a high and a normal background job, fB with a
// low one and a running foreground job held by worker "wid" (fB then fA),
// and an empty function fC.
func state(t *testing.T, srv *gstest.Server) (client, worker *gstest.Conn) {
	client = gstest.Dial(t, srv.Addr)
	client.Send(wire.SubmitJobBG, "fA", "", "x")
	client.Expect(wire.JobCreated)
	client.Send(wire.SubmitJobHighBG, "fA", "u1", "y")
	client.Expect(wire.JobCreated)
	client.Send(wire.SubmitJobLowBG, "fB", "", "z")
	client.Expect(wire.JobCreated)
	client.Send(wire.SubmitJob, "fB", "u2", "w")
	client.Expect(wire.JobCreated)
	worker = gstest.Dial(t, srv.Addr)
	worker.Send(wire.SetClientID, "wid")
	worker.Send(wire.CanDo, "fB")
	worker.Send(wire.GrabJob)
	worker.Expect(wire.JobAssign, "H:test:4", "fB", "w")
	worker.Send(wire.CanDo, "fA")
	worker.Send(wire.EchoReq, "sync")
	worker.Expect(wire.EchoRes, "sync")
	return client, worker
}

func TestAdminGoldenWithJobs(t *testing.T) {
	srv := gstest.Start(t, func(c *gstest.Config) { c.Engine.Shards = 1 })
	state(t, srv)
	a := gstest.Dial(t, srv.Addr)
	if got := a.Admin("create function fC\r"); got != "OK\r\n" {
		t.Fatalf("create function: %q", got)
	}
	// One write holding several commands, one of them cut across writes.
	a.Write([]byte("status\r\nprioritystatus\nshow j"))
	a.Write([]byte("obs\nshow unique jobs\n"))
	for _, want := range []string{
		"fA\t2\t0\t1\nfB\t2\t1\t1\nfC\t0\t0\t0\n.\n",
		"fA\t1\t1\t0\t1\nfB\t0\t0\t1\t1\nfC\t0\t0\t0\t0\n.\n",
		"H:test:1\t0\t0\t1\nH:test:2\t0\t0\t1\nH:test:3\t0\t0\t1\nH:test:4\t0\t0\t0\n.\n",
		"\nu1\n\nu2\n.\n",
	} {
		if got := a.ReadAdmin(); got != want {
			t.Errorf("got %q, want %q", got, want)
		}
	}
	workers := a.Admin("workers")
	lines := strings.Split(strings.TrimSuffix(workers, ".\n"), "\n")
	if len(lines) != 4 || !strings.HasSuffix(workers, ".\n") {
		t.Fatalf("workers: %q, want 3 connections and the terminator", workers)
	}
	var withID string
	for _, l := range lines[:3] {
		f := strings.SplitN(l, " ", 2)
		if _, err := strconv.Atoi(f[0]); err != nil {
			t.Errorf("workers line %q: no fd", l)
		}
		if strings.Contains(l, "wid") {
			withID = f[1]
		} else if f[1] != "127.0.0.1 - :" {
			t.Errorf("workers line %q: want \"FD 127.0.0.1 - :\"", l)
		}
	}
	if withID != "127.0.0.1 wid : fA fB" {
		t.Errorf("worker line %q, want newest registration first", withID)
	}
	if got := a.Admin("jobs"); got != "fA\t\t-\t0\nfA\tu1\t-\t0\nfB\t\t-\t0\nfB\tu2\t127.0.0.1\t1\n.\n" {
		t.Errorf("jobs: %q", got)
	}
	for _, c := range []struct{ send, want string }{
		{"drop function FA", "ERR there are still connected workers or executing clients\r\n"},
		{"drop function fc", "OK\r\n"},
		{"maxqueue fA 2", "OK\r\n"},
		{"cancel job H:test:1", "OK\r\n"},
		{"status", "fA\t1\t0\t1\nfB\t2\t1\t1\n.\n"},
	} {
		if got := a.Admin(c.send); got != c.want {
			t.Errorf("%q: got %q, want %q", c.send, got, c.want)
		}
	}
}

// maxqueue with three values limits each priority on its own.
func TestAdminMaxQueuePerPriority(t *testing.T) {
	srv := gstest.Start(t, nil)
	c := gstest.Dial(t, srv.Addr)
	c.Send(wire.SubmitJobBG, "f", "", "seed")
	c.Expect(wire.JobCreated)
	a := gstest.Dial(t, srv.Addr)
	if got := a.Admin("maxqueue f 3 1 2"); got != "OK\r\n" {
		t.Fatalf("maxqueue: %q", got)
	}
	c.Send(wire.SubmitJobBG, "f", "", "normal")
	c.Expect(wire.Error, "QUEUE_ERROR", "Job queue is full")
	c.Send(wire.SubmitJobLowBG, "f", "", "low")
	c.Expect(wire.JobCreated)
	c.Send(wire.SubmitJobLowBG, "f", "", "low2")
	c.Expect(wire.Error, "QUEUE_ERROR", "Job queue is full")
	c.Send(wire.SubmitJobHighBG, "f", "", "high")
	c.Expect(wire.JobCreated)
	if got := a.Admin("maxqueue f"); got != "OK\r\n" {
		t.Fatalf("maxqueue reset: %q", got)
	}
	c.Send(wire.SubmitJobBG, "f", "", "unlimited again")
	c.Expect(wire.JobCreated)
	// A trailing space is an empty fourth word, as in gearmand: the line
	// then sets HIGH to 1 and leaves the other priorities unlimited.
	if got := a.Admin("maxqueue f 1 "); got != "OK\r\n" {
		t.Fatalf("maxqueue with a trailing space: %q", got)
	}
	c.Send(wire.SubmitJobBG, "f", "", "normal, unlimited")
	c.Expect(wire.JobCreated)
	c.Send(wire.SubmitJobHighBG, "f", "", "high")
	c.Expect(wire.Error, "QUEUE_ERROR", "Job queue is full")
}

// shutdown is accepted from loopback and stops the server.
func TestAdminShutdown(t *testing.T) {
	stopped := make(chan bool, 1)
	srv := gstest.Start(t, func(c *gstest.Config) {
		c.Admin.Shutdown = func(graceful bool) { stopped <- graceful }
	})
	a := gstest.Dial(t, srv.Addr)
	if got := a.Admin("shutdown graceful"); got != "OK\r\n" {
		t.Fatalf("shutdown graceful: %q", got)
	}
	select {
	case g := <-stopped:
		if !g {
			t.Fatal("shutdown graceful called a plain shutdown")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("shutdown callback not called")
	}
}
