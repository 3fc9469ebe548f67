package main

// Tests of `gearshard client` and `gearshard worker`, the stand-ins for
// libgearman's gearman CLI: in-process through run, the stdin modes through
// the built binary, and crossed with Debian's gearman as the real peer.

import (
	"io"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"gearshard/netio/gstest"
)

// gmEnv is a test server plus the in-process commands run against it. Its
// cleanup, registered before the server's, runs after the server has shut
// down (closing every connection) and then stops the commands still running
// (a worker reconnects until stopped), so no command goroutine outlives the
// test.
type gmEnv struct {
	*testServer
	mu       sync.Mutex
	runs     []*goRun
	stop     chan struct{}
	stopOnce sync.Once
}

func newGMEnv(t *testing.T) *gmEnv {
	t.Helper()
	return newGMEnvServing(t, nil)
}

// newGMEnvServing is newGMEnv with the server's flags changed by mod.
func newGMEnvServing(t *testing.T, mod func(*ServeCmd)) *gmEnv {
	t.Helper()
	e := &gmEnv{stop: make(chan struct{})}
	t.Cleanup(func() {
		e.halt()
		e.mu.Lock()
		defer e.mu.Unlock()
		for _, r := range e.runs {
			select {
			case <-r.done:
			case <-time.After(waitTimeout):
				t.Errorf("gearshard %v still running after it was stopped", r.args)
			}
		}
	})
	e.testServer = startServer(t, mod)
	return e
}

// halt stops every command still running (as a signal would).
func (e *gmEnv) halt() { e.stopOnce.Do(func() { close(e.stop) }) }

// goRun is one run(args) in a goroutine.
type goRun struct {
	args           []string
	stdout, stderr gstest.LockedBuffer
	done           chan struct{}
	code           int
}

// start runs `gearshard sub -h HOST -p PORT args...` in a goroutine.
func (e *gmEnv) start(sub string, args ...string) *goRun {
	return e.startArgs(append([]string{sub}, e.hp(args...)...)...)
}

// startArgs runs `gearshard args...` in a goroutine.
func (e *gmEnv) startArgs(args ...string) *goRun {
	r := &goRun{args: args, done: make(chan struct{})}
	e.mu.Lock()
	e.runs = append(e.runs, r)
	e.mu.Unlock()
	go func() {
		defer close(r.done)
		r.code = runWith(r.args, stdio{Out: &r.stdout, Err: &r.stderr, Stop: e.stop})
	}()
	return r
}

// wait returns the exit code once the command has returned.
func (r *goRun) wait(t *testing.T) int {
	t.Helper()
	select {
	case <-r.done:
	case <-time.After(waitTimeout):
		t.Fatalf("gearshard %v did not return; stdout %q stderr %q", r.args, r.stdout.String(), r.stderr.String())
	}
	return r.code
}

func (r *goRun) expect(t *testing.T, code int, stdout, stderr string) {
	t.Helper()
	if got := r.wait(t); got != code || r.stdout.String() != stdout || r.stderr.String() != stderr {
		t.Fatalf("gearshard %v: exit %d, stdout %q, stderr %q; want exit %d, stdout %q, stderr %q",
			r.args, got, r.stdout.String(), r.stderr.String(), code, stdout, stderr)
	}
}

// client runs `gearshard client` to completion in-process.
func (e *gmEnv) client(t *testing.T, args ...string) *goRun {
	t.Helper()
	r := e.start("client", args...)
	r.wait(t)
	return r
}

// worker starts `gearshard worker --id id` and waits until the server
// lists its functions (args must hold the -f flags in order, first).
func (e *gmEnv) worker(t *testing.T, id string, args ...string) *goRun {
	t.Helper()
	r := e.start("worker", append([]string{"--id", id}, args...)...)
	var funcs []string
	for i := 0; i+1 < len(args) && args[i] == "-f"; i += 2 {
		funcs = append(funcs, args[i+1])
	}
	slices.Reverse(funcs)
	e.waitWorker(t, id, funcs...)
	return r
}

// binClient runs the built binary's client mode with stdin.
func (e *gmEnv) binClient(t *testing.T, bin, stdin string, args ...string) *peer {
	t.Helper()
	return background(t, str(stdin), bin, append([]string{"client"}, e.hp(args...)...)...)
}

// TestGearmanReverse is the README example with gearshard in both roles:
// `gearshard worker -f reverse -- rev` and `echo hello | gearshard client -f reverse`.
func TestGearmanReverse(t *testing.T) {
	t.Parallel()
	e := newGMEnv(t)
	bin := gearshardBinary(t)

	w := e.worker(t, "revw", "-f", "reverse", "-c", "3", "--", "rev")
	e.binClient(t, bin, "hello\n", "-f", "reverse").expectExit(t, 0, "olleh\n", "")
	// DATA arguments: one job each, results back to back, nothing added.
	e.client(t, "-f", "reverse", "ab", "cde").expect(t, 0, "baedc", "")
	w.expect(t, 0, "", "")
	e.waitAdmin(t, "status", "reverse\t0\t0\t0\n.\n")
}

// TestGearmanBackground queues -b jobs with no worker, then a -c 2 worker
// without a command prints their workloads, as gearman -w does.
func TestGearmanBackground(t *testing.T) {
	t.Parallel()
	e := newGMEnv(t)

	r := e.client(t, "-v", "-b", "-f", "bgjob", "one\n")
	if r.code != 0 || r.stderr.String() != "" || !regexp.MustCompile(`^Task created: H:it:[1-9][0-9]*\n$`).MatchString(r.stdout.String()) {
		t.Fatalf("client -v -b: exit %d, stdout %q, stderr %q; want \"Task created: H:it:N\\n\"", r.code, r.stdout.String(), r.stderr.String())
	}
	e.client(t, "-b", "-f", "bgjob", "two\n").expect(t, 0, "", "")
	if got := e.admin("status"); got != "bgjob\t2\t0\t0\n.\n" {
		t.Fatalf("status after two -b submits: %q", got)
	}
	e.start("worker", "-f", "bgjob", "-c", "2").expect(t, 0, "one\ntwo\n", "")
	e.waitAdmin(t, "status", "bgjob\t0\t0\t0\n.\n")
}

// TestGearmanPriorities queues -L, normal and -I background jobs; a worker
// started afterwards runs high → normal → low, FIFO within a priority.
func TestGearmanPriorities(t *testing.T) {
	t.Parallel()
	e := newGMEnv(t)
	for _, j := range []struct{ data, flag string }{
		{"low1", "-L"}, {"normal1", ""}, {"high1", "-I"},
		{"low2", "-L"}, {"normal2", ""}, {"high2", "-I"},
	} {
		args := []string{"-b", "-f", "prio"}
		if j.flag != "" {
			args = append(args, j.flag)
		}
		e.client(t, append(args, j.data+"\n")...).expect(t, 0, "", "")
	}
	if got := e.admin("prioritystatus"); got != "prio\t2\t2\t2\t0\n.\n" {
		t.Fatalf("prioritystatus: %q", got)
	}
	e.start("worker", "-f", "prio", "-c", "6").expect(t, 0, "high1\nhigh2\nnormal1\nnormal2\nlow1\nlow2\n", "")

	// Foreground -I and -L submit too (the worker echoes through cat).
	w := e.worker(t, "fg", "-f", "prio", "-c", "2", "--", "cat")
	e.client(t, "-I", "-f", "prio", "hi").expect(t, 0, "hi", "")
	e.client(t, "-L", "-f", "prio", "lo").expect(t, 0, "lo", "")
	w.expect(t, 0, "", "")
	e.client(t, "-I", "-L", "-f", "prio", "x").expect(t, 2, "", "gearshard: client: -I and -L cannot be used together\n")
}

// TestGearmanLines: client -n / -N make one job per stdin line (the worker's
// -c proves the count); -P prefixes each result; worker -n / -N send a
// WORK_DATA per output line.
func TestGearmanLines(t *testing.T) {
	t.Parallel()
	e := newGMEnv(t)
	bin := gearshardBinary(t)

	w := e.worker(t, "lw", "-f", "rev", "-c", "5", "--", "rev")
	e.binClient(t, bin, "ab\ncd\n", "-n", "-f", "rev").expectExit(t, 0, "ba\ndc\n", "")
	e.binClient(t, bin, "ab\ncd", "-N", "-f", "rev").expectExit(t, 0, "badc", "")
	e.binClient(t, bin, "ignored", "-s", "-P", "-f", "rev").expectExit(t, 0, "rev: ", "")
	w.expect(t, 0, "", "")

	// Two functions: the job goes to each, each result prefixed.
	w1 := e.worker(t, "pa", "-f", "fa", "-c", "1", "--", "rev")
	w2 := e.worker(t, "pb", "-f", "fb", "-c", "1", "--", "tr", "a-z", "A-Z")
	r := e.client(t, "-P", "-f", "fa", "-f", "fb", "xy")
	if got := r.stdout.String(); r.code != 0 || (got != "fa: yxfb: XY" && got != "fb: XYfa: yx") {
		t.Fatalf("client -P -f fa -f fb: exit %d, stdout %q, stderr %q", r.code, got, r.stderr.String())
	}
	w1.expect(t, 0, "", "")
	w2.expect(t, 0, "", "")

	ln := e.worker(t, "ln", "-f", "ln", "-f", "lN", "-c", "2", "--", "printf", `a\nb\n`)
	e.client(t, "-f", "ln", "x").expect(t, 0, "a\nb\n", "")
	e.client(t, "-f", "lN", "x").expect(t, 0, "a\nb\n", "")
	ln.expect(t, 0, "", "")
	wn := e.worker(t, "wn", "-f", "wn", "-n", "-c", "1", "--", "printf", `a\nb\nc`)
	e.client(t, "-f", "wn", "x").expect(t, 0, "a\nb\nc", "")
	wn.expect(t, 0, "", "")
	wN := e.worker(t, "wN", "-f", "wN", "-N", "-c", "1", "--", "printf", `a\nb\n`)
	e.client(t, "-P", "-f", "wN", "x").expect(t, 0, "wN: awN: bwN: ", "")
	wN.expect(t, 0, "", "")
}

// TestGearmanUnique: -u coalesces, in the background (same handle, one
// job) and in the foreground (two clients, one run, both get the result).
func TestGearmanUnique(t *testing.T) {
	t.Parallel()
	e := newGMEnv(t)
	var handles []string
	for range 2 {
		r := e.client(t, "-v", "-b", "-u", "BGKEY", "-f", "uniqbg", "data")
		if r.code != 0 || !strings.HasPrefix(r.stdout.String(), "Task created: H:it:") {
			t.Fatalf("client -v -b -u BGKEY: exit %d, stdout %q, stderr %q", r.code, r.stdout.String(), r.stderr.String())
		}
		handles = append(handles, r.stdout.String())
	}
	if handles[0] != handles[1] {
		t.Fatalf("two background submits with unique BGKEY: %q and %q; want one handle", handles[0], handles[1])
	}
	if got := e.admin("status"); got != "uniqbg\t1\t0\t0\n.\n" {
		t.Fatalf("status after two coalesced background submits: %q", got)
	}

	// The worker holds the job until the test creates the file "go".
	gate := filepath.Join(t.TempDir(), "go")
	w := e.worker(t, "uw", "-f", "uniqfn", "-c", "1", "--", "sh", "-c",
		`cat; while [ ! -e "$1" ]; do sleep 0.01; done`, "sh", gate)
	c1 := e.start("client", "-f", "uniqfn", "-u", "KEY1", "payload")
	e.waitStatus(t, "uniqfn", 1, 1, 1)
	c2 := e.start("client", "-f", "uniqfn", "-u", "KEY1", "payload")
	e.waitAdmin(t, "jobs", "uniqbg\tBGKEY\t-\t0\nuniqfn\tKEY1\t127.0.0.1\t2\n.\n")
	if err := os.WriteFile(gate, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	c1.expect(t, 0, "payload", "")
	c2.expect(t, 0, "payload", "")
	w.expect(t, 0, "", "") // -c 1: it ran the job once
	e.waitAdmin(t, "status", "uniqbg\t1\t0\t0\nuniqfn\t0\t0\t0\n.\n")
}

// TestGearmanFail: a command exiting non-zero fails the job; the client
// prints what it sent, says "Job failed" and exits 1, as gearman does.
func TestGearmanFail(t *testing.T) {
	t.Parallel()
	e := newGMEnv(t)
	w := e.worker(t, "fw", "-f", "fail", "-c", "3", "--", "sh", "-c", "cat; exit 3")
	e.client(t, "-f", "fail", "xx").expect(t, 1, "xx", "gearshard: Job failed\n")
	e.client(t, "-f", "fail", "a", "b").expect(t, 1, "ab", "gearshard: 2 jobs failed\n")
	w.expect(t, 0, "", "")

	nx := e.worker(t, "nx", "-f", "nx", "-c", "1", "--", "/nonexistent/gearshard-test")
	e.client(t, "-f", "nx", "x").expect(t, 1, "", "gearshard: Job failed\n")
	if got := nx.wait(t); got != 0 || !strings.Contains(nx.stderr.String(), "/nonexistent/gearshard-test") {
		t.Fatalf("worker with a missing command: exit %d, stderr %q", got, nx.stderr.String())
	}
}

// TestGearmanCLIErrors: bad flags exit 2, an unreachable server exits a
// client with 1.
func TestGearmanCLIErrors(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		args   []string
		code   int
		stderr string // prefix
	}{
		{[]string{"client", "data"}, 2, "gearshard: missing flags: --function=FUNC\n"},
		{[]string{"worker"}, 2, "gearshard: missing flags: --function=FUNC\n"},
		{[]string{"client", "-f", "x", "-I", "-L", "d"}, 2, "gearshard: client: -I and -L cannot be used together\n"},
		{[]string{"worker", "-f", "x", "--count=-1"}, 2, "gearshard: worker: -c -1: must be >= 0\n"},
		{[]string{"client", "-f", "x", "-p", "0", "d"}, 2, "gearshard: -p 0: must be 1..65535\n"},
		{[]string{"client", "-f", "x", "--bogus"}, 2, "gearshard: unknown flag --bogus\n"},
		{[]string{"client", "-h", "127.0.0.1", "-p", "1", "-f", "x", "d"}, 1, "gearshard: could not connect to 127.0.0.1:1: "},
		// A worker keeps trying, as gearman -w does, here until -t.
		{[]string{"worker", "-h", "127.0.0.1", "-p", "1", "-f", "x", "-t", "300"}, 0, "gearshard: could not connect to 127.0.0.1:1: "},
	} {
		var out, errOut strings.Builder
		code := run(c.args, &out, &errOut)
		if code != c.code || !strings.HasPrefix(errOut.String(), c.stderr) || (c.code == 2 && out.Len() > 0 && !strings.Contains(out.String(), "Usage")) {
			t.Errorf("gearshard %v: exit %d, stdout %q, stderr %q; want exit %d, stderr %q...", c.args, code, out.String(), errOut.String(), c.code, c.stderr)
		}
	}

	// -t: an idle worker exits quietly; a client gives up on a job no
	// worker takes.
	e := newGMEnv(t)
	e.start("worker", "-f", "idle", "-t", "50").expect(t, 0, "", "")
	e.start("client", "-f", "idle", "-t", "50", "x").expect(t, 1, "", "gearshard: timed out waiting for the server after 50ms\n")
}

// TestGearmanCrossCheck crosses gearshard with Debian's gearman: our client
// against `gearman -w -f reverse -- rev`, gearman's client against our worker.
func TestGearmanCrossCheck(t *testing.T) {
	t.Parallel()
	requirePeers(t, "gearman")
	e := newGMEnv(t)
	bin := gearshardBinary(t)

	spawn(t, "gearman", e.hp("-w", "-f", "reverse", "--", "rev")...)
	e.waitStatus(t, "reverse", 0, 0, 1)
	e.binClient(t, bin, "hello\n", "-f", "reverse").expectExit(t, 0, "olleh\n", "")
	e.binClient(t, bin, "ab\ncd\n", "-P", "-n", "-f", "reverse").expectExit(t, 0, "reverse: ba\nreverse: dc\n", "")

	w := e.worker(t, "ours", "-f", "reverse2", "-c", "3", "--", "rev")
	background(t, str("hello\n"), "gearman", e.hp("-f", "reverse2")...).expectExit(t, 0, "olleh\n", "")
	background(t, str("ab\ncd\n"), "gearman", e.hp("-N", "-f", "reverse2")...).expectExit(t, 0, "badc", "")
	w.expect(t, 0, "", "")

	// Background from gearman, run by our command-less worker; and the
	// other way round.
	background(t, nil, "gearman", e.hp("-b", "-f", "bg", "one\n")...).expectExit(t, 0, "", "")
	e.start("worker", "-f", "bg", "-c", "1").expect(t, 0, "one\n", "")
	e.client(t, "-b", "-f", "bg2", "two\n").expect(t, 0, "", "")
	background(t, nil, "gearman", e.hp("-w", "-f", "bg2", "-c", "1")...).expectExit(t, 0, "two\n", "")

	// A failing command: both clients see the same bytes and exit 1.
	spawn(t, "gearman", e.hp("-w", "-f", "gfail", "--", "sh", "-c", "cat; exit 3")...)
	e.waitStatus(t, "gfail", 0, 0, 1)
	e.client(t, "-f", "gfail", "xx").expect(t, 1, "xx", "gearshard: Job failed\n")
	fw := e.worker(t, "fw", "-f", "ofail", "-c", "1", "--", "sh", "-c", "cat; exit 3")
	background(t, nil, "gearman", e.hp("-f", "ofail", "xx")...).expectExit(t, 1, "xx", "Job failed\n")
	fw.expect(t, 0, "", "")
}

// TestGearmanSeedExample is the gearman CLI example of the project's seed
// documents with gearshard in libgearman's place: "gearman -w -f func1 &"
// then "gearman -I -f func1 test", and the worker shows "test".
func TestGearmanSeedExample(t *testing.T) {
	t.Parallel()
	e := newGMEnv(t)
	w := e.worker(t, "seed", "-f", "func1", "-c", "1")
	e.client(t, "-I", "-f", "func1", "test").expect(t, 0, "", "")
	w.expect(t, 0, "test", "")
}

// TestGearmanWorkerReconnects: a worker whose server goes away connects
// again and registers its functions again, as gearman -w does: here the
// server "restarts" by a relay cutting the connection and sending the next
// one to a second server at the same address.
func TestGearmanWorkerReconnects(t *testing.T) {
	t.Parallel()
	e := newGMEnv(t)
	second := startServer(t, nil)
	relay := newCutRelay(t, e.addr)

	w := e.startArgs("worker", "-h", "127.0.0.1", "-p", relay.port, "--id", "rw", "-f", "rc", "--", "rev")
	e.waitWorker(t, "rw", "rc")
	e.client(t, "-f", "rc", "abc").expect(t, 0, "cba", "")

	relay.cutTo(second.addr)
	second.waitWorker(t, "rw", "rc")
	e.waitStatus(t, "rc", 0, 0, 0)
	e.startArgs(append([]string{"client"}, second.hp("-f", "rc", "xyz")...)...).expect(t, 0, "zyx", "")

	e.halt()
	if code := w.wait(t); code != 0 {
		t.Fatalf("worker exit %d, stderr %q", code, w.stderr.String())
	}
	stderr := w.stderr.String()
	want := regexp.MustCompile(`^gearshard: lost connection to 127\.0\.0\.1:\d+: [^\n]+; retrying\n(gearshard: could not connect to [^\n]+; retrying\n)?gearshard: connected to 127\.0\.0\.1:\d+ again\n$`)
	if !want.MatchString(stderr) {
		t.Fatalf("worker stderr %q, want one outage reported", stderr)
	}
}

// TestGearmanServerEnv: GEARMAN_SERVER overrides -h and -p, as in gearman.
// The client takes the first server that answers; the worker works for
// every server in the list.
func TestGearmanServerEnv(t *testing.T) {
	e := newGMEnv(t)
	second := startServer(t, nil)

	t.Setenv("GEARMAN_SERVER", "127.0.0.1:1,"+e.addr)
	e.startArgs("client", "-h", "127.0.0.1", "-p", "2", "-b", "-f", "env", "one\n").expect(t, 0, "", "")
	e.waitStatus(t, "env", 1, 0, 0)
	t.Setenv("GEARMAN_SERVER", second.addr)
	e.startArgs("client", "-b", "-f", "env", "two\n").expect(t, 0, "", "")
	second.waitStatus(t, "env", 1, 0, 0)

	t.Setenv("GEARMAN_SERVER", e.addr+","+second.addr)
	w := e.startArgs("worker", "-f", "env", "-c", "2")
	if code := w.wait(t); code != 0 {
		t.Fatalf("worker exit %d, stderr %q", code, w.stderr.String())
	}
	if got := w.stdout.String(); got != "one\ntwo\n" && got != "two\none\n" {
		t.Fatalf("worker printed %q, want both servers' jobs", got)
	}
	e.waitStatus(t, "env", 0, 0, 0)
	second.waitStatus(t, "env", 0, 0, 0)

	t.Setenv("GEARMAN_SERVER", "127.0.0.1:http")
	if r := e.startArgs("client", "-f", "env", "x"); r.wait(t) != 2 || !strings.Contains(r.stderr.String(), "bad port") {
		t.Fatalf("bad GEARMAN_SERVER: exit %d, stderr %q", r.code, r.stderr.String())
	}
}

// cutRelay forwards connections on an ephemeral port to a target, and can
// cut every forwarded connection and send new ones elsewhere.
type cutRelay struct {
	port   string
	mu     sync.Mutex
	target string
	conns  []net.Conn
}

func newCutRelay(t *testing.T, target string) *cutRelay {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	r := &cutRelay{port: port, target: target}
	var wg sync.WaitGroup
	t.Cleanup(func() {
		ln.Close()
		r.cutTo("")
		wg.Wait()
	})
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			r.mu.Lock()
			up, err := net.Dial("tcp", r.target)
			if err != nil {
				r.mu.Unlock()
				c.Close()
				continue
			}
			r.conns = append(r.conns, c, up)
			r.mu.Unlock()
			wg.Go(func() { io.Copy(up, c); up.Close() })
			wg.Go(func() { io.Copy(c, up); c.Close() })
		}
	})
	return r
}

// cutTo closes every forwarded connection; later ones go to target.
func (r *cutRelay) cutTo(target string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, c := range r.conns {
		c.Close()
	}
	r.conns, r.target = nil, target
}
