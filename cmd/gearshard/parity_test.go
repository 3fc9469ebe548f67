package main

import (
	"context"
	"net"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"gearshard/netio/gstest"
	"gearshard/wire"
)

// startGearmand runs Debian's gearmand on a free loopback port.
func startGearmand(t *testing.T, args ...string) *testServer {
	t.Helper()
	bin, err := exec.LookPath("gearmand")
	if err != nil {
		if bin, err = exec.LookPath("/usr/sbin/gearmand"); err != nil {
			t.Fatal("gearmand not found: install Debian's gearman-job-server (make deps)")
		}
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	dir := t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, bin, append([]string{"-L", "127.0.0.1", "-p", strconv.Itoa(port),
		"-l", filepath.Join(dir, "gearmand.log"), "-P", filepath.Join(dir, "gearmand.pid")}, args...)...)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cancel(); _ = cmd.Wait() })
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	gstest.Eventually(t, 10*time.Second, func() bool {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
		}
		return err == nil
	}, "gearmand did not start on %s", addr)
	return &testServer{addr: addr, host: "127.0.0.1", port: strconv.Itoa(port), adm: gstest.Dial(t, addr)}
}

// ownAdmin runs "gearshard admin" with gearadmin's flags.
func (ts *testServer) ownAdmin(t *testing.T, flags ...string) (string, string) {
	t.Helper()
	var out, errb strings.Builder
	if code := run(append([]string{"admin"}, ts.hp(flags...)...), &out, &errb); code != 0 {
		t.Fatalf("gearshard admin %v: exit %d, stderr %q", flags, code, errb.String())
	}
	return out.String(), errb.String()
}

// makeState puts the same jobs, workers and functions on a server: queued
// background jobs at every priority, a running foreground job held by a
// worker with a client id, an extra function and a queue limit.
func makeState(t *testing.T, ts *testServer) (client, worker *gstest.Conn) {
	addr := ts.addr
	client = gstest.Dial(t, addr)
	for _, s := range [][]string{{"fA", "", "x"}, {"fA", "u1", "y"}, {"fB", "", "z"}, {"fB", "u2", "w"}} {
		typ := map[string]wire.Type{"x": wire.SubmitJobBG, "y": wire.SubmitJobHighBG, "z": wire.SubmitJobLowBG, "w": wire.SubmitJob}[s[2]]
		client.Send(typ, s...)
		client.Expect(wire.JobCreated)
	}
	worker = gstest.Dial(t, addr)
	worker.Send(wire.SetClientID, "wid")
	worker.Send(wire.CanDo, "fB")
	worker.Send(wire.GrabJob)
	worker.Expect(wire.JobAssign, "H:cmp:4", "fB", "w")
	worker.Send(wire.CanDo, "fA")
	adm := ts.adm
	for _, line := range []string{"create function fC\r", "maxqueue fA 10"} {
		if got := adm.Admin(line); got != "OK\r\n" {
			t.Fatalf("%s: %q", line, got)
		}
	}
	// The worker's CAN_DO is processed once "workers" shows it.
	gstest.Eventually(t, 5*time.Second, func() bool {
		return strings.Contains(adm.Admin("workers"), "wid : fA fB")
	}, "worker registrations not visible")
	return client, worker
}

var fdPrefix = regexp.MustCompile(`(?m)^\d+ `)

// normalize makes two replies comparable: fd numbers blanked, lines sorted.
func normalize(s string) string {
	lines := strings.Split(fdPrefix.ReplaceAllString(s, "FD "), "\n")
	slices.Sort(lines)
	return strings.Join(lines, "\n")
}

// TestInteropGearadminParity runs every gearadmin flag against gearmand
// and gearshard holding the same state: the outputs must match up to line
// order and file-descriptor numbers. "gearshard admin" with the same flags,
// against a third server in the same state, must print the same too.
func TestInteropGearadminParity(t *testing.T) {
	gd := startGearmand(t, "-t", "0", "--job-handle-prefix", "H:cmp")
	oneShard := func(c *ServeCmd) { c.Threads, c.JobHandlePrefix = 1, "H:cmp" }
	gs := startServer(t, oneShard)
	own := startServer(t, oneShard) // for "gearshard admin"
	makeState(t, gd)
	makeState(t, gs)
	makeState(t, own)

	for _, flags := range [][]string{
		{"--status"}, {"--priority-status"}, {"--workers"}, {"--show-jobs"}, {"--show-unique-jobs"},
		{"--server-verbose"}, {"--create-function", "fD"}, {"--drop-function", "fC"},
		{"--drop-function", "nosuch"}, {"--drop-function", "fA"}, {"--cancel-job", "H:cmp:99"},
		{"--status", "--workers"}, {"--cancel-job", "H:cmp:1"},
	} {
		gdOut, gdErr := gd.gearadmin(t, flags...)
		gsOut, gsErr := gs.gearadmin(t, flags...)
		ownOut, ownErr := own.ownAdmin(t, flags...)
		if normalize(gdOut) != normalize(ownOut) || gdErr != ownErr {
			t.Errorf("gearshard admin %v:\ngearmand  out %q err %q\ngearshard out %q err %q", flags, gdOut, gdErr, ownOut, ownErr)
		}
		if normalize(gdOut) != normalize(gsOut) || gdErr != gsErr {
			t.Errorf("gearadmin %v:\ngearmand  out %q err %q\ngearshard out %q err %q", flags, gdOut, gdErr, gsOut, gsErr)
		}
	}
	// Values that differ by nature: same shape.
	for _, c := range []struct {
		flag string
		re   string
	}{{"--getpid", `^\d+\n$`}, {"--server-version", `^1\.1\.\d+\S*\n$`}} {
		for _, ts := range []*testServer{gd, gs} {
			out, _ := ts.gearadmin(t, c.flag)
			if own, _ := ts.ownAdmin(t, c.flag); own != out {
				t.Errorf("gearshard admin %s against %s: %q, gearadmin printed %q", c.flag, ts.addr, own, out)
			}
			if !regexp.MustCompile(c.re).MatchString(out) {
				t.Errorf("gearadmin %s against %s: %q does not match %s", c.flag, ts.addr, out, c.re)
			}
		}
	}
}
