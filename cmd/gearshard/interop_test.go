package main

// Interop tests against real third-party Gearman peers, each talking to an
// in-process gearshard on an ephemeral 127.0.0.1 port:
//   - the libgearman command-line tools gearman and gearadmin (Debian
//     gearman-tools),
//   - Perl Gearman::Client / Gearman::Worker (libgearman-client-perl), driven
//     by testdata/perl_client.pl and testdata/perl_worker.pl,
//   - PHP's gearman extension over libgearman (php-cli, php-gearman), driven
//     by testdata/php_client.php and testdata/php_worker.php.
//
// The peers are required: a missing one fails the test with the package to
// install (`make deps`), it never skips. Every process runs under a context
// timeout and is killed and reaped when its test ends; conditions are
// polled (admin output, a peer's stdout), never waited for with a sleep.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"gearshard/netio/gstest"
)

const (
	// Generous: on a loaded machine one perl start-up can take seconds.
	peerTimeout = 60 * time.Second // hard limit on any external process
	waitTimeout = 30 * time.Second // limit on any polled condition
)

// testServeCmd returns the ServeCmd the command line gives when no flag is
// set: every field at its kong default tag, as parsed by kong itself.
func testServeCmd() ServeCmd {
	var cli CLI
	parser, err := newParser(&cli, io.Discard, io.Discard, func(int) {})
	if err != nil {
		panic(err)
	}
	if _, err := parser.Parse(nil); err != nil {
		panic(err)
	}
	return cli.Serve
}

// testServer is an in-process gearshard on 127.0.0.1 with an ephemeral port.
type testServer struct {
	addr, host, port string
	metrics          string       // --metrics-listen's bound address, if set
	httpAddr         string       // the HTTP front end's bound address, if -r http
	adm              *gstest.Conn // admin connection for polling
}

// startServer starts gearshard from a ServeCmd (2 threads, prefix H:it,
// mod may change more) and stops it when the test ends.
func startServer(t *testing.T, mod func(*ServeCmd)) *testServer {
	t.Helper()
	cmd := testServeCmd()
	cmd.Listen = "127.0.0.1"
	cmd.Port = 0
	cmd.Threads = 2
	cmd.JobHandlePrefix = "H:it"
	if mod != nil {
		mod(&cmd)
	}
	srv, err := cmd.start(zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.InfoLevel))
	if err != nil {
		t.Fatalf("starting gearshard: %v", err)
	}
	t.Cleanup(func() {
		srv.shutdown(false)
		if err := srv.wait(); err != nil {
			t.Errorf("server stopped with %v", err)
		}
	})
	host, port, err := net.SplitHostPort(srv.addr())
	if err != nil {
		t.Fatalf("server address %q: %v", srv.addr(), err)
	}
	ts := &testServer{addr: srv.addr(), host: host, port: port, metrics: srv.metricsAddr, httpAddr: srv.httpAddr}
	ts.adm = gstest.Dial(t, ts.addr)
	return ts
}

// hp is the -h/-p pair for the libgearman tools.
func (ts *testServer) hp(args ...string) []string {
	return append([]string{"-h", ts.host, "-p", ts.port}, args...)
}

// admin sends one admin line on the polling connection and returns the reply.
func (ts *testServer) admin(line string) string { return ts.adm.Admin(line) }

// waitAdmin polls an admin command until its reply is exactly want.
func (ts *testServer) waitAdmin(t *testing.T, line, want string) {
	t.Helper()
	waitFor(t, fmt.Sprintf("admin %q to reply %q", line, want), func() (bool, string) {
		got := ts.admin(line)
		return got == want, got
	})
}

// waitStatus polls "status" until FUNC shows exactly these figures.
func (ts *testServer) waitStatus(t *testing.T, fn string, total, running, workers int) {
	t.Helper()
	want := fmt.Sprintf("%s\t%d\t%d\t%d", fn, total, running, workers)
	waitFor(t, "status line "+strconv.Quote(want), func() (bool, string) {
		got := ts.admin("status")
		return slices.Contains(strings.Split(got, "\n"), want), got
	})
}

// waitWorker polls "workers" until the connection with client id id has
// registered exactly funcs (newest first).
func (ts *testServer) waitWorker(t *testing.T, id string, funcs ...string) {
	t.Helper()
	suffix := " " + id + " : " + strings.Join(funcs, " ")
	waitFor(t, "worker "+strconv.Quote(suffix), func() (bool, string) {
		got := ts.admin("workers")
		for _, l := range strings.Split(got, "\n") {
			if strings.HasSuffix(l, suffix) {
				return true, got
			}
		}
		return false, got
	})
}

// waitFor polls cond until it holds; state is shown if it never does.
func waitFor(t *testing.T, what string, cond func() (ok bool, state string)) {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for {
		ok, state := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s; last state:\n%s", what, state)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// --- required peers -------------------------------------------------------

var perlModules = sync.OnceValue(func() error {
	ctx, cancel := context.WithTimeout(context.Background(), peerTimeout)
	defer cancel()
	out, err := exec.CommandContext(ctx, "perl", "-MGearman::Client", "-MGearman::Worker", "-e1").CombinedOutput()
	if err != nil {
		return fmt.Errorf("%v: %s", err, bytes.TrimSpace(out))
	}
	return nil
})

var phpGearman = sync.OnceValue(func() error {
	ctx, cancel := context.WithTimeout(context.Background(), peerTimeout)
	defer cancel()
	out, err := exec.CommandContext(ctx, "php", "-r", `exit(extension_loaded("gearman") ? 0 : 1);`).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%v: %s", err, bytes.TrimSpace(out))
	}
	return nil
})

// requirePeers fails the test (never skips) when a peer is missing.
func requirePeers(t *testing.T, peers ...string) {
	t.Helper()
	for _, p := range peers {
		switch p {
		case "gearman", "gearadmin":
			if _, err := exec.LookPath(p); err != nil {
				t.Fatalf("%s not found (%v): install the Debian package gearman-tools (make deps)", p, err)
			}
		case "perl":
			if err := perlModules(); err != nil {
				t.Fatalf("perl Gearman::Client/Gearman::Worker unavailable (%v): install the Debian package libgearman-client-perl (make deps)", err)
			}
		case "prometheus", "promtool":
			if _, err := exec.LookPath(p); err != nil {
				t.Fatalf("%s not found (%v): install the Debian package prometheus (make deps)", p, err)
			}
		case "php":
			if err := phpGearman(); err != nil {
				t.Fatalf("php with the gearman extension unavailable (%v): install the Debian packages php-cli and php-gearman (make deps)", err)
			}
		default:
			t.Fatalf("unknown peer %q", p)
		}
	}
}

// --- external processes ---------------------------------------------------

// peer is an external process; it has a context timeout and is killed and
// reaped when the test ends.
type peer struct {
	name           string
	cmd            *exec.Cmd
	stdin          io.WriteCloser // nil unless asked for
	stdout, stderr gstest.LockedBuffer
	done           chan struct{}
	err            error // from Wait, once done is closed
}

// startPeer starts name with args. Its stdin is a pipe kept open (pipe),
// else the input string, else empty (input nil).
func startPeer(t *testing.T, input *string, pipe bool, name string, args ...string) *peer {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), peerTimeout)
	cmd := exec.CommandContext(ctx, name, args...)
	p := &peer{name: name + " " + strings.Join(args, " "), cmd: cmd, done: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = &p.stdout, &p.stderr
	cmd.WaitDelay = 2 * time.Second
	switch {
	case pipe:
		w, err := cmd.StdinPipe()
		if err != nil {
			cancel()
			t.Fatalf("stdin pipe: %v", err)
		}
		p.stdin = w
	case input != nil:
		cmd.Stdin = strings.NewReader(*input)
	}
	if err := cmd.Start(); err != nil {
		cancel()
		t.Fatalf("starting %s: %v", p.name, err)
	}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-p.done
		cancel()
	})
	return p
}

// spawn starts a long-running peer with a stdin pipe.
func spawn(t *testing.T, name string, args ...string) *peer {
	t.Helper()
	return startPeer(t, nil, true, name, args...)
}

// background starts a peer with fixed stdin (nil: none).
func background(t *testing.T, input *string, name string, args ...string) *peer {
	t.Helper()
	return startPeer(t, input, false, name, args...)
}

func str(s string) *string { return &s }

// wait waits for the peer to exit and returns its exit code (-1 if killed
// by a signal).
func (p *peer) wait(t *testing.T) int {
	t.Helper()
	select {
	case <-p.done:
	case <-time.After(peerTimeout):
		t.Fatalf("%s did not exit; stdout %q stderr %q", p.name, p.stdout.String(), p.stderr.String())
	}
	var ee *exec.ExitError
	if p.err != nil && !errors.As(p.err, &ee) {
		t.Fatalf("%s: %v; stderr %q", p.name, p.err, p.stderr.String())
	}
	return p.cmd.ProcessState.ExitCode()
}

// expectExit waits for the peer and checks its exit code and exact output.
func (p *peer) expectExit(t *testing.T, code int, stdout, stderr string) {
	t.Helper()
	got := p.wait(t)
	if got != code || p.stdout.String() != stdout || p.stderr.String() != stderr {
		t.Fatalf("%s: exit %d, stdout %q, stderr %q; want exit %d, stdout %q, stderr %q",
			p.name, got, p.stdout.String(), p.stderr.String(), code, stdout, stderr)
	}
}

// waitStdout polls until the peer's whole stdout is exactly want.
func (p *peer) waitStdout(t *testing.T, want string) {
	t.Helper()
	waitFor(t, fmt.Sprintf("%s to print %q", p.name, want), func() (bool, string) {
		out := p.stdout.String()
		select {
		case <-p.done:
			return out == want, fmt.Sprintf("exited (%v); stdout %q stderr %q", p.err, out, p.stderr.String())
		default:
		}
		return out == want, fmt.Sprintf("stdout %q stderr %q", out, p.stderr.String())
	})
}

// release writes one line to the peer's stdin (a blocked Perl worker
// finishes its job).
func (p *peer) release(t *testing.T) {
	t.Helper()
	if _, err := io.WriteString(p.stdin, "go\n"); err != nil {
		t.Fatalf("writing to %s: %v", p.name, err)
	}
}

// kill9 sends SIGKILL and reaps the process.
func (p *peer) kill9(t *testing.T) {
	t.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatalf("kill -9 %s: %v", p.name, err)
	}
	<-p.done
	ws, ok := p.cmd.ProcessState.Sys().(syscall.WaitStatus)
	if !ok || !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
		t.Fatalf("%s ended with %v before it was killed; stdout %q stderr %q",
			p.name, p.cmd.ProcessState, p.stdout.String(), p.stderr.String())
	}
}

// runPeer runs a peer to completion with the given stdin (nil: none).
func runPeer(t *testing.T, input *string, name string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	p := background(t, input, name, args...)
	code = p.wait(t)
	return p.stdout.String(), p.stderr.String(), code
}

// gearadmin runs gearadmin against ts with one action flag; it must exit 0.
func (ts *testServer) gearadmin(t *testing.T, args ...string) (stdout, stderr string) {
	t.Helper()
	out, errOut, code := runPeer(t, nil, "gearadmin", ts.hp(args...)...)
	if code != 0 {
		t.Fatalf("gearadmin %v: exit %d, stdout %q, stderr %q", args, code, out, errOut)
	}
	return out, errOut
}

// expectGearadmin checks gearadmin's exact stdout and stderr.
func (ts *testServer) expectGearadmin(t *testing.T, stdout, stderr string, args ...string) {
	t.Helper()
	out, errOut := ts.gearadmin(t, args...)
	if out != stdout || errOut != stderr {
		t.Fatalf("gearadmin %v: stdout %q, stderr %q; want stdout %q, stderr %q", args, out, errOut, stdout, stderr)
	}
}

func script(t *testing.T, name string) string {
	t.Helper()
	p, err := filepath.Abs(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// perlWorker starts testdata/perl_worker.pl (modes: echo, block, status,
// exception, sleep; ":T" adds a CAN_DO_TIMEOUT) with client id id and
// waits until the server lists its registrations.
func (ts *testServer) perlWorker(t *testing.T, id, mode string, funcs ...string) *peer {
	t.Helper()
	args := append([]string{script(t, "perl_worker.pl"), ts.addr, id, mode}, funcs...)
	w := spawn(t, "perl", args...)
	rev := slices.Clone(funcs)
	slices.Reverse(rev)
	ts.waitWorker(t, id, rev...)
	return w
}

// perlClient starts testdata/perl_client.pl.
func (ts *testServer) perlClient(t *testing.T, args ...string) *peer {
	t.Helper()
	return background(t, nil, "perl", append([]string{script(t, "perl_client.pl"), ts.addr}, args...)...)
}

// --- tests ----------------------------------------------------------------

// TestInteropGearmanReverse is the README's "done when": the gearman CLI as
// a worker running rev, and the gearman CLI as a client.
func TestInteropGearmanReverse(t *testing.T) {
	t.Parallel()
	requirePeers(t, "gearman")
	ts := startServer(t, nil)

	spawn(t, "gearman", ts.hp("-w", "-f", "reverse", "--", "rev")...)
	ts.waitStatus(t, "reverse", 0, 0, 1)

	for in, want := range map[string]string{"hello\n": "olleh\n", "gearshard\n": "drahsraeg\n"} {
		c := background(t, str(in), "gearman", ts.hp("-f", "reverse")...)
		c.expectExit(t, 0, want, "")
	}
	ts.waitAdmin(t, "status", "reverse\t0\t0\t1\n.\n")
}

// TestInteropGearmanBackground submits background jobs with `gearman -b`
// while no worker exists, then lets a `gearman -w -c 2` worker run them.
func TestInteropGearmanBackground(t *testing.T) {
	t.Parallel()
	requirePeers(t, "gearman")
	ts := startServer(t, nil)

	out, errOut, code := runPeer(t, str("one\n"), "gearman", ts.hp("-v", "-b", "-f", "bgjob")...)
	m := regexp.MustCompile(`^Task created: (H:it:[1-9][0-9]*)\n$`).FindStringSubmatch(out)
	if code != 0 || m == nil || errOut != "" {
		t.Fatalf("gearman -v -b: exit %d, stdout %q, stderr %q; want 0, \"Task created: H:it:N\\n\"", code, out, errOut)
	}
	h1 := m[1]
	background(t, str("two\n"), "gearman", ts.hp("-b", "-f", "bgjob")...).expectExit(t, 0, "", "")

	if got := ts.admin("status"); got != "bgjob\t2\t0\t0\n.\n" {
		t.Fatalf("status after two -b submits: %q", got)
	}
	if got := ts.admin("show jobs"); !strings.HasPrefix(got, h1+"\t0\t0\t1\n") || strings.Count(got, "\n") != 3 {
		t.Fatalf("show jobs: %q; want %s first of two jobs", got, h1)
	}

	// Without a command the CLI worker prints each workload to stdout.
	w := background(t, nil, "gearman", ts.hp("-w", "-f", "bgjob", "-c", "2")...)
	w.expectExit(t, 0, "one\ntwo\n", "")
	ts.waitAdmin(t, "status", "bgjob\t0\t0\t0\n.\n")
	if got := ts.admin("show jobs"); got != ".\n" {
		t.Fatalf("show jobs after the worker ran them: %q", got)
	}
}

// TestInteropPerl runs Perl Gearman::Client against a Perl Gearman::Worker
// (foreground do_task, dispatch_background) and crosses both with the
// gearman CLI.
func TestInteropPerl(t *testing.T) {
	t.Parallel()
	requirePeers(t, "gearman", "perl")
	ts := startServer(t, nil)

	w := ts.perlWorker(t, "perlw", "echo", "perlfn")

	ts.perlClient(t, "do", "perlfn", "abc").expectExit(t, 0, "complete done:abc\n", "")
	w.waitStdout(t, "start perlfn abc\nend perlfn abc\n")

	// gearman CLI client → Perl worker.
	background(t, nil, "gearman", ts.hp("-f", "perlfn", "xyz")...).expectExit(t, 0, "done:xyz", "")
	w.waitStdout(t, "start perlfn abc\nend perlfn abc\nstart perlfn xyz\nend perlfn xyz\n")

	// Perl dispatch_background → Perl worker.
	bg := ts.perlClient(t, "bg", "perlfn", "bgarg")
	if code := bg.wait(t); code != 0 || !regexp.MustCompile(`^handle `+regexp.QuoteMeta(ts.addr)+`//H:it:[1-9][0-9]*\n$`).MatchString(bg.stdout.String()) {
		t.Fatalf("dispatch_background: exit %d, stdout %q, stderr %q", code, bg.stdout.String(), bg.stderr.String())
	}
	w.waitStdout(t, "start perlfn abc\nend perlfn abc\nstart perlfn xyz\nend perlfn xyz\nstart perlfn bgarg\nend perlfn bgarg\n")
	ts.waitStatus(t, "perlfn", 0, 0, 1)

	// Perl client → gearman CLI worker.
	spawn(t, "gearman", ts.hp("-w", "-f", "clirev", "--", "rev")...)
	ts.waitStatus(t, "clirev", 0, 0, 1)
	ts.perlClient(t, "do", "clirev", "stressed").expectExit(t, 0, "complete desserts\n", "")
}

// TestInteropPerlAdminAPI reads gearshard's admin output through
// Gearman::Client's parsers: status, and the Perl server's jobs and
// clients commands, which gearshard answers too. (The Perl API keys jobs by
// function and clients by address, so later rows replace earlier ones.)
func TestInteropPerlAdminAPI(t *testing.T) {
	t.Parallel()
	requirePeers(t, "gearman", "perl")
	ts := startServer(t, nil)
	w := ts.perlWorker(t, "aw", "block", "adm")
	c := background(t, nil, "gearman", ts.hp("-f", "adm", "-u", "K1", "one")...)
	w.waitStdout(t, "start adm one\n")
	background(t, nil, "gearman", ts.hp("-b", "-f", "adm", "-u", "K2", "two")...).expectExit(t, 0, "", "")
	ts.waitAdmin(t, "jobs", "adm\tK1\t127.0.0.1\t1\nadm\tK2\t-\t0\n.\n")

	ts.perlClient(t, "admin").expectExit(t, 0, strings.Join([]string{
		"client 127.0.0.1",
		"client 127.0.0.1 waits adm key=K1 worker=127.0.0.1",
		"job adm key=K2 address=- listeners=0",
		"status adm queued=2 running=1 capable=1",
	}, "\n")+"\n", "")

	w.release(t)
	c.expectExit(t, 0, "done:one", "")
	w.release(t)
	w.waitStdout(t, "start adm one\nend adm one\nstart adm two\nend adm two\n")
	ts.waitAdmin(t, "status", "adm\t0\t0\t1\n.\n")
	ts.perlClient(t, "admin").expectExit(t, 0, "client 127.0.0.1\nstatus adm queued=0 running=0 capable=1\n", "")
}

// TestInteropPriorities queues low, normal and high background jobs while
// no worker is connected and checks a worker gets high → normal → low,
// FIFO within a priority: with the gearman CLI (-L / -I) and with Perl
// (priority => low / high).
func TestInteropPriorities(t *testing.T) {
	t.Parallel()
	requirePeers(t, "gearman", "perl")
	ts := startServer(t, nil)

	order := []struct{ data, flag, pri string }{
		{"low1", "-L", "low"}, {"normal1", "", "normal"}, {"high1", "-I", "high"},
		{"low2", "-L", "low"}, {"normal2", "", "normal"}, {"high2", "-I", "high"},
	}
	var perlJobs []string
	for _, j := range order {
		args := []string{"-b", "-f", "cliprio"}
		if j.flag != "" {
			args = append(args, j.flag)
		}
		background(t, str(j.data+"\n"), "gearman", ts.hp(args...)...).expectExit(t, 0, "", "")
		perlJobs = append(perlJobs, j.data+"@"+j.pri)
	}
	p := ts.perlClient(t, append([]string{"bgs", "perlprio"}, perlJobs...)...)
	if code := p.wait(t); code != 0 || !regexp.MustCompile(`^(handle \S+//H:it:\d+\n){6}$`).MatchString(p.stdout.String()) {
		t.Fatalf("perl dispatch_background x6: exit %d, stdout %q, stderr %q", code, p.stdout.String(), p.stderr.String())
	}
	if got := ts.admin("prioritystatus"); got != "cliprio\t2\t2\t2\t0\nperlprio\t2\t2\t2\t0\n.\n" {
		t.Fatalf("prioritystatus: %q", got)
	}

	w := background(t, nil, "gearman", ts.hp("-w", "-f", "cliprio", "-c", "6")...)
	w.expectExit(t, 0, "high1\nhigh2\nnormal1\nnormal2\nlow1\nlow2\n", "")

	pw := ts.perlWorker(t, "prio", "echo", "perlprio")
	var want strings.Builder
	for _, d := range []string{"high1", "high2", "normal1", "normal2", "low1", "low2"} {
		fmt.Fprintf(&want, "start perlprio %s\nend perlprio %s\n", d, d)
	}
	pw.waitStdout(t, want.String())
	ts.waitAdmin(t, "prioritystatus", "cliprio\t0\t0\t0\t0\nperlprio\t0\t0\t0\t1\n.\n")

	// A worker with two functions gets the highest priority across both
	// (gearshard's documented choice; gearmand serves by CAN_DO order).
	// Within a priority the functions take turns, in either order.
	for _, j := range []struct{ fn, data, flag string }{
		{"pa", "low", "-L"}, {"pb", "normal", ""}, {"pa", "high", "-I"},
		{"pb", "low", "-L"}, {"pa", "normal", ""}, {"pb", "high", "-I"},
	} {
		args := []string{"-b", "-f", j.fn}
		if j.flag != "" {
			args = append(args, j.flag)
		}
		background(t, str(j.fn+"-"+j.data+"\n"), "gearman", ts.hp(args...)...).expectExit(t, 0, "", "")
	}
	two := background(t, nil, "gearman", ts.hp("-w", "-f", "pa", "-f", "pb", "-c", "6")...)
	if code := two.wait(t); code != 0 {
		t.Fatalf("two-function worker: exit %d, stderr %q", code, two.stderr.String())
	}
	got := strings.Split(strings.TrimSuffix(two.stdout.String(), "\n"), "\n")
	if len(got) != 6 {
		t.Fatalf("two-function worker ran %q; want 6 jobs", got)
	}
	for i, pri := range []string{"high", "high", "normal", "normal", "low", "low"} {
		if !strings.HasSuffix(got[i], "-"+pri) || (i%2 == 1 && got[i] == got[i-1]) {
			t.Fatalf("two-function worker ran %q; want both highs, both normals, both lows", got)
		}
	}
}

// TestInteropUniqueCoalescing submits two foreground jobs with the same
// unique while the worker is blocked on the first: both clients get the one
// result and the worker runs once. gearman -u twice, then Perl uniq with
// gearman -u on one job.
func TestInteropUniqueCoalescing(t *testing.T) {
	t.Parallel()
	requirePeers(t, "gearman", "perl")
	ts := startServer(t, nil)
	// Background: the same unique gets the same handle, one job.
	var handles []string
	for range 2 {
		out, errOut, code := runPeer(t, nil, "gearman", ts.hp("-v", "-b", "-u", "BGKEY", "-f", "uniqbg", "data")...)
		if code != 0 || errOut != "" || !strings.HasPrefix(out, "Task created: H:it:") {
			t.Fatalf("gearman -v -b -u BGKEY: exit %d, stdout %q, stderr %q", code, out, errOut)
		}
		handles = append(handles, out)
	}
	if handles[0] != handles[1] {
		t.Fatalf("two background submits with unique BGKEY: %q and %q; want the same handle", handles[0], handles[1])
	}
	if got := ts.admin("status"); got != "uniqbg\t1\t0\t0\n.\n" {
		t.Fatalf("status after two coalesced background submits: %q", got)
	}
	if got := ts.admin("show unique jobs"); got != "BGKEY\n.\n" {
		t.Fatalf("show unique jobs: %q", got)
	}

	w := ts.perlWorker(t, "uw", "block", "uniqfn")

	c1 := background(t, nil, "gearman", ts.hp("-f", "uniqfn", "-u", "KEY1", "payload")...)
	w.waitStdout(t, "start uniqfn payload\n")
	c2 := background(t, nil, "gearman", ts.hp("-f", "uniqfn", "-u", "KEY1", "payload")...)
	ts.waitAdmin(t, "jobs", "uniqbg\tBGKEY\t-\t0\nuniqfn\tKEY1\t127.0.0.1\t2\n.\n")
	if got := ts.admin("status"); got != "uniqbg\t1\t0\t0\nuniqfn\t1\t1\t1\n.\n" {
		t.Fatalf("status with two clients on one job: %q", got)
	}
	w.release(t)
	c1.expectExit(t, 0, "done:payload", "")
	c2.expectExit(t, 0, "done:payload", "")
	w.waitStdout(t, "start uniqfn payload\nend uniqfn payload\n")
	ts.waitAdmin(t, "status", "uniqbg\t1\t0\t0\nuniqfn\t0\t0\t1\n.\n")

	// Perl do_task with uniq, joined by the gearman CLI with the same -u.
	p1 := ts.perlClient(t, "do", "uniqfn", "second", "uniq=KEY2")
	w.waitStdout(t, "start uniqfn payload\nend uniqfn payload\nstart uniqfn second\n")
	c3 := background(t, nil, "gearman", ts.hp("-f", "uniqfn", "-u", "KEY2", "second")...)
	ts.waitAdmin(t, "jobs", "uniqbg\tBGKEY\t-\t0\nuniqfn\tKEY2\t127.0.0.1\t2\n.\n")
	w.release(t)
	p1.expectExit(t, 0, "complete done:second\n", "")
	c3.expectExit(t, 0, "done:second", "")
	w.waitStdout(t, "start uniqfn payload\nend uniqfn payload\nstart uniqfn second\nend uniqfn second\n")
	ts.waitAdmin(t, "status", "uniqbg\t1\t0\t0\nuniqfn\t0\t0\t1\n.\n")
}

// TestInteropStatusForwarding has a Perl worker send WORK_STATUS 1/2 and
// WORK_DATA: a Perl client's on_status / on_data get them, and
// Gearman::Client->get_status reports a background job's progress.
func TestInteropStatusForwarding(t *testing.T) {
	t.Parallel()
	requirePeers(t, "perl")
	ts := startServer(t, nil)

	bg := ts.perlClient(t, "bg", "statfn", "b1")
	if code := bg.wait(t); code != 0 || !strings.HasPrefix(bg.stdout.String(), "handle ") {
		t.Fatalf("dispatch_background: exit %d, stdout %q, stderr %q", code, bg.stdout.String(), bg.stderr.String())
	}
	handle := strings.TrimSuffix(strings.TrimPrefix(bg.stdout.String(), "handle "), "\n")
	// status HANDLE WANT polls get_status inside one perl until it reads WANT.
	waitStatus := func(want string) {
		t.Helper()
		ts.perlClient(t, "status", handle, want).expectExit(t, 0, want+"\n", "")
	}
	ts.perlClient(t, "status", handle).expectExit(t, 0, "known=1 running=0 num=0 den=0\n", "")

	w := ts.perlWorker(t, "sw", "status", "statfn")
	w.waitStdout(t, "start statfn b1\n")
	waitStatus("known=1 running=1 num=1 den=2")
	w.release(t)
	w.waitStdout(t, "start statfn b1\nend statfn b1\n")
	waitStatus("known=0 running=0 num=0 den=0")

	c := ts.perlClient(t, "do", "statfn", "f1")
	c.waitStdout(t, "status 1/2\ndata chunk:f1\n")
	w.release(t)
	c.expectExit(t, 0, "status 1/2\ndata chunk:f1\ncomplete done:f1\n", "")

	// The gearman CLI client writes WORK_DATA and the result to stdout as
	// they come and prints WORK_STATUS as "50% Complete" through stdio,
	// which a pipe buffers until exit.
	g := background(t, nil, "gearman", ts.hp("-f", "statfn", "c1")...)
	w.waitStdout(t, "start statfn b1\nend statfn b1\nstart statfn f1\nend statfn f1\nstart statfn c1\n")
	w.release(t)
	g.expectExit(t, 0, "chunk:c1done:c150% Complete\n", "")
}

// TestInteropWorkerKilled kills -9 a Perl worker holding a foreground job.
// By default (and with -j -1, gearmand's newer "no limit") the job is
// requeued and a second worker completes it for the waiting client; with
// JobRetries 1 the client gets a failure instead.
func TestInteropWorkerKilled(t *testing.T) {
	t.Parallel()
	requirePeers(t, "gearman", "perl")

	for _, retries := range []int{0, -1} {
		t.Run("requeue"+strconv.Itoa(retries), func(t *testing.T) {
			t.Parallel()
			testRequeueAfterKill(t, startServer(t, func(c *ServeCmd) { c.JobRetries = retries }))
		})
	}

	t.Run("retries1", func(t *testing.T) {
		t.Parallel()
		ts := startServer(t, func(c *ServeCmd) { c.JobRetries = 1 })

		// gearman CLI client.
		victim := ts.perlWorker(t, "victim1", "block", "retryfn")
		c := background(t, nil, "gearman", ts.hp("-f", "retryfn", "payload")...)
		victim.waitStdout(t, "start retryfn payload\n")
		victim.kill9(t)
		c.expectExit(t, 1, "", "Job failed\n")
		ts.waitAdmin(t, "status", "retryfn\t0\t0\t0\n.\n")
		if got := ts.admin("show jobs"); got != ".\n" {
			t.Fatalf("show jobs after the job failed: %q", got)
		}

		// Perl client.
		victim = ts.perlWorker(t, "victim2", "block", "retryfn")
		p := ts.perlClient(t, "do", "retryfn", "again")
		victim.waitStdout(t, "start retryfn again\n")
		victim.kill9(t)
		p.expectExit(t, 1, "fail\n", "")
		ts.waitAdmin(t, "status", "retryfn\t0\t0\t0\n.\n")
	})
}

// testRequeueAfterKill: a job whose worker is killed is requeued, with one
// retry counted, and a second worker completes it for the waiting client.
func testRequeueAfterKill(t *testing.T, ts *testServer) {
	victim := ts.perlWorker(t, "victim", "block", "killfn")
	c := background(t, nil, "gearman", ts.hp("-f", "killfn", "payload")...)
	victim.waitStdout(t, "start killfn payload\n")
	ts.waitStatus(t, "killfn", 1, 1, 1)

	victim.kill9(t)
	ts.waitAdmin(t, "status", "killfn\t1\t0\t0\n.\n")
	if got := ts.admin("show jobs"); !regexp.MustCompile(`^H:it:[1-9][0-9]*\t1\t0\t0\n\.\n$`).MatchString(got) {
		t.Fatalf("show jobs after the worker died: %q; want one job with 1 retry", got)
	}

	rescuer := ts.perlWorker(t, "rescuer", "echo", "killfn")
	c.expectExit(t, 0, "done:payload", "")
	rescuer.waitStdout(t, "start killfn payload\nend killfn payload\n")
	ts.waitAdmin(t, "status", "killfn\t0\t0\t1\n.\n")
}

// TestInteropLargePayload moves 1 MiB each way through the gearman CLI,
// well past every 64 KiB socket and pipe buffer, so packets arrive and
// leave in many pieces. (The CLI itself is too slow for much more: 4 MB
// takes it 8 s against gearmand too, and a `-- cat` worker deadlocks on its
// own pipes past 128 KiB.)
func TestInteropLargePayload(t *testing.T) {
	t.Parallel()
	requirePeers(t, "gearman")
	ts := startServer(t, nil)

	var b strings.Builder
	for i := 0; b.Len() < 1<<20; i++ {
		fmt.Fprintf(&b, "%08d the quick brown fox jumps over the lazy dog\n", i)
	}
	big := b.String()
	file := filepath.Join(t.TempDir(), "big.txt")
	if err := os.WriteFile(file, []byte(big), 0o644); err != nil {
		t.Fatal(err)
	}
	same := func(what, got string) {
		t.Helper()
		if got != big {
			t.Fatalf("%s: got %d bytes (equal: false); want the %d bytes sent", what, len(got), len(big))
		}
	}

	// Client → worker: a command-less CLI worker prints the workload.
	in := background(t, nil, "gearman", ts.hp("-w", "-f", "bigin", "-c", "1")...)
	ts.waitStatus(t, "bigin", 0, 0, 1)
	background(t, &big, "gearman", ts.hp("-f", "bigin")...).expectExit(t, 0, "", "")
	if code := in.wait(t); code != 0 {
		t.Fatalf("worker exit %d, stderr %q", code, in.stderr.String())
	}
	same("workload received by the worker", in.stdout.String())

	// Worker → client: the worker's command prints the file as the result.
	spawn(t, "gearman", ts.hp("-w", "-f", "bigout", "--", "sh", "-c", "cat >/dev/null; cat "+file)...)
	ts.waitStatus(t, "bigout", 0, 0, 1)
	c := background(t, str("x"), "gearman", ts.hp("-f", "bigout")...)
	if code := c.wait(t); code != 0 || c.stderr.String() != "" {
		t.Fatalf("client exit %d, stderr %q", code, c.stderr.String())
	}
	same("result received by the client", c.stdout.String())
}

// TestInteropExceptions has a Perl worker end jobs with WORK_EXCEPTION:
// a Perl client that asked for exceptions (OPTION_REQ) gets it, one that
// did not gets WORK_FAIL, unless the server runs with --exceptions.
func TestInteropExceptions(t *testing.T) {
	t.Parallel()
	requirePeers(t, "perl")

	t.Run("option", func(t *testing.T) {
		t.Parallel()
		ts := startServer(t, nil)
		w := ts.perlWorker(t, "exc", "exception", "excfn")
		ts.perlClient(t, "do", "excfn", "a", "exceptions=1").expectExit(t, 1, "exception boom:a\n", "")
		ts.perlClient(t, "do", "excfn", "b").expectExit(t, 1, "fail\n", "")
		w.waitStdout(t, "start excfn a\nend excfn a\nstart excfn b\nend excfn b\n")
		ts.waitAdmin(t, "status", "excfn\t0\t0\t1\n.\n")
	})
	t.Run("server-flag", func(t *testing.T) {
		t.Parallel()
		ts := startServer(t, func(c *ServeCmd) { c.Exceptions = true })
		ts.perlWorker(t, "exc", "exception", "excfn")
		ts.perlClient(t, "do", "excfn", "c").expectExit(t, 1, "exception boom:c\n", "")
	})
}

// TestInteropCanDoTimeout registers a Perl worker with
// register_function(FUNC, 1, ...), which sends CAN_DO_TIMEOUT "1".
// Gearman::Worker documents the timeout in seconds; gearmand >= 1.1.19 reads
// it as milliseconds but raises 1..999 ms to 1000 ms, so such workers keep
// working there. A job held past the timeout is failed to its client
// (gearshard's documented choice; gearmand requeues it).
func TestInteropCanDoTimeout(t *testing.T) {
	t.Parallel()
	requirePeers(t, "perl")

	t.Run("floor", func(t *testing.T) {
		t.Parallel()
		ts := startServer(t, nil)
		// The job takes 0.2 s: inside gearmand's 1000 ms floor.
		w := ts.perlWorker(t, "tw", "sleep:1", "tfn")
		ts.perlClient(t, "do", "tfn", "x").expectExit(t, 0, "complete done:x\n", "")
		w.waitStdout(t, "start tfn x\nend tfn x\n")
	})
	t.Run("enforced", func(t *testing.T) {
		t.Parallel()
		ts := startServer(t, nil)
		w := ts.perlWorker(t, "tw", "block:1", "tfn")
		c := ts.perlClient(t, "do", "tfn", "y")
		w.waitStdout(t, "start tfn y\n")
		c.expectExit(t, 1, "fail\n", "")
		ts.waitAdmin(t, "status", "tfn\t0\t0\t1\n.\n")
	})
}

// TestInteropGearadmin runs every gearadmin action against gearshard and
// checks its exact output.
func TestInteropGearadmin(t *testing.T) {
	t.Parallel()
	requirePeers(t, "gearadmin", "gearman", "perl")
	ts := startServer(t, nil)

	ts.expectGearadmin(t, Version+"\n", "", "--server-version")
	ts.expectGearadmin(t, strconv.Itoa(os.Getpid())+"\n", "", "--getpid")
	ts.expectGearadmin(t, "ERROR\n", "", "--server-verbose")
	ts.expectGearadmin(t, ".\n", "", "--status")
	ts.expectGearadmin(t, ".\n", "", "--show-jobs")

	ts.expectGearadmin(t, "OK\n", "", "--create-function", "alpha")
	ts.expectGearadmin(t, "alpha\t0\t0\t0\n.\n", "", "--status")

	// A Perl worker for beta, three background jobs from the gearman CLI.
	ts.perlWorker(t, "w1", "echo", "beta")
	submit := func(fn, flag string) (handle string, id int) {
		out, errOut, code := runPeer(t, str("x"), "gearman", ts.hp("-v", "-b", flag, "-f", fn)...)
		m := regexp.MustCompile(`^Task created: (H:it:([1-9][0-9]*))\n$`).FindStringSubmatch(out)
		if code != 0 || m == nil || errOut != "" {
			t.Fatalf("gearman -v -b %s -f %s: exit %d, stdout %q, stderr %q", flag, fn, code, out, errOut)
		}
		id, _ = strconv.Atoi(m[2])
		return m[1], id
	}
	hz1, iz1 := submit("zeta", "-L")
	hz2, iz2 := submit("zeta", "-I")
	ha, ia := submit("alpha", "-L")

	ts.expectGearadmin(t, "alpha\t1\t0\t0\nbeta\t0\t0\t1\nzeta\t2\t0\t0\n.\n", "", "--status")
	ts.expectGearadmin(t, "alpha\t0\t0\t1\t0\nbeta\t0\t0\t0\t1\nzeta\t1\t0\t1\t0\n.\n", "", "--priority-status")

	type row struct {
		id int
		h  string
	}
	showJobs := func(rows ...row) string {
		slices.SortFunc(rows, func(a, b row) int { return a.id - b.id })
		var b strings.Builder
		for _, r := range rows {
			b.WriteString(r.h + "\t0\t0\t1\n") // no retries, not ignored, background
		}
		return b.String() + ".\n"
	}
	ts.expectGearadmin(t, showJobs(row{iz1, hz1}, row{iz2, hz2}, row{ia, ha}), "", "--show-jobs")

	// workers: every connection, "FD IP ID : FUNC...", ascending FD. The
	// FDs are the test process's own, so they are checked for order only.
	// Connections now: the polling admin connection, the Perl worker w1
	// and gearadmin itself (the gearman -b clients have gone).
	wantWorkers := []string{"127.0.0.1 - :", "127.0.0.1 - :", "127.0.0.1 w1 : beta"}
	waitFor(t, "gearadmin --workers", func() (bool, string) {
		out, _ := ts.gearadmin(t, "--workers")
		lines := strings.Split(out, "\n")
		if len(lines) < 2 || lines[len(lines)-2] != "." || lines[len(lines)-1] != "" {
			return false, out
		}
		var rest []string
		last := -1
		for _, l := range lines[:len(lines)-2] {
			fd, tail, ok := strings.Cut(l, " ")
			n, err := strconv.Atoi(fd)
			if !ok || err != nil || n <= last {
				return false, out
			}
			last = n
			rest = append(rest, tail)
		}
		slices.Sort(rest)
		return slices.Equal(rest, wantWorkers), out
	})

	ts.expectGearadmin(t, "OK\n", "", "--cancel-job", ha)
	ts.expectGearadmin(t, showJobs(row{iz1, hz1}, row{iz2, hz2}), "", "--show-jobs")
	ts.expectGearadmin(t, "alpha\t0\t0\t0\nbeta\t0\t0\t1\nzeta\t2\t0\t0\n.\n", "", "--status")
	ts.expectGearadmin(t, "", "Error: UNKNOWN_JOB\r\n", "--cancel-job", "H:it:999999")

	ts.expectGearadmin(t, "OK\n", "", "--drop-function", "alpha")
	ts.expectGearadmin(t, "", "Error: function not found\r\n", "--drop-function", "alpha")
	ts.expectGearadmin(t, "", "Error: there are still connected workers or executing clients\r\n", "--drop-function", "beta")
	ts.expectGearadmin(t, "OK\n", "", "--drop-function", "zeta")
	ts.expectGearadmin(t, "beta\t0\t0\t1\n.\n", "", "--status")
	ts.expectGearadmin(t, ".\n", "", "--show-jobs")
}

// TestInteropPHP runs php-gearman (libgearman's client and worker API): a
// task with status and data callbacks, a high-priority background job and
// jobStatus on it while a PHP worker holds it.
func TestInteropPHP(t *testing.T) {
	t.Parallel()
	requirePeers(t, "php")
	ts := startServer(t, nil)
	w := spawn(t, "php", script(t, "php_worker.php"), ts.host, ts.port, "phpw", "phpfn")
	ts.waitWorker(t, "phpw", "phpfn")
	php := func(args ...string) *peer {
		return background(t, nil, "php", append([]string{script(t, "php_client.php"), ts.host, ts.port}, args...)...)
	}

	c := php("task", "phpfn", "abc")
	c.waitStdout(t, "status 1/2\ndata chunk:abc\n")
	w.release(t)
	c.expectExit(t, 0, "status 1/2\ndata chunk:abc\ncomplete ABC\n", "")
	w.waitStdout(t, "start abc\nend abc\n")

	bg := php("bg", "phpfn", "bgx", "high")
	if code := bg.wait(t); code != 0 || !regexp.MustCompile(`^handle H:it:[1-9][0-9]*\n$`).MatchString(bg.stdout.String()) {
		t.Fatalf("doHighBackground: exit %d, stdout %q, stderr %q", code, bg.stdout.String(), bg.stderr.String())
	}
	handle := strings.TrimSuffix(strings.TrimPrefix(bg.stdout.String(), "handle "), "\n")
	// status HANDLE WANT polls jobStatus inside one php until it reads WANT.
	waitStatus := func(want string) {
		t.Helper()
		php("status", handle, want).expectExit(t, 0, want+"\n", "")
	}
	w.waitStdout(t, "start abc\nend abc\nstart bgx\n")
	waitStatus("known=1 running=1 num=1 den=2")
	w.release(t)
	w.waitStdout(t, "start abc\nend abc\nstart bgx\nend bgx\n")
	waitStatus("known=0 running=0 num=0 den=0")
	ts.waitAdmin(t, "status", "phpfn\t0\t0\t1\n.\n")
}
