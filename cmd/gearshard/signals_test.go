package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"gearshard/netio/gstest"
	"gearshard/wire"
)

// gearshardBinary builds the server into the test's temporary directory
// (the build cache makes every build after the first quick).
func gearshardBinary(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "gearshard")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("building gearshard: %v\n%s", err, out)
	}
	return bin
}

// proc is a gearshard process started by a test.
type proc struct {
	cmd      *exec.Cmd
	addr     string
	maxConns int64 // the connection budget it reported
	// the collector's settings it reported (memoryLimit -1: none)
	gcPercent   int
	memoryLimit int64
	done        chan error
}

// startProcess runs the binary on an ephemeral port and reads the bound
// address from its "gearshard ready" log line.
func startProcess(t *testing.T, args ...string) *proc {
	t.Helper()
	return startProcessAs(t, nil, args...)
}

// startProcessAs is startProcess with the process's credentials given
// (nil: the test's own).
func startProcessAs(t *testing.T, cred *syscall.Credential, args ...string) *proc {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	cmd := exec.CommandContext(ctx, gearshardBinary(t),
		append([]string{"-L", "127.0.0.1", "-p", "0", "-l", "stderr", "--verbose", "INFO"}, args...)...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &proc{cmd: cmd, done: make(chan error, 1)}
	type readyLine struct {
		Message, Addr  string
		MaxConnections int64 `json:"max_connections"`
		GCPercent      int   `json:"gc_percent"`
		MemoryLimit    int64 `json:"memory_limit"`
	}
	ready := make(chan readyLine, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			var ev readyLine
			if json.Unmarshal(sc.Bytes(), &ev) == nil && ev.Message == "gearshard ready" {
				ready <- ev
			}
		}
		_, _ = io.Copy(io.Discard, stderr)
		p.done <- cmd.Wait()
	}()
	t.Cleanup(func() {
		cancel()
		<-p.done
	})
	select {
	case ev := <-ready:
		p.addr, p.maxConns = ev.Addr, ev.MaxConnections
		p.gcPercent, p.memoryLimit = ev.GCPercent, ev.MemoryLimit
	case err := <-p.done:
		t.Fatalf("gearshard exited before it was ready: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("gearshard did not get ready")
	}
	return p
}

// exited reports whether the process has ended, without waiting.
func (p *proc) exited() (bool, error) {
	select {
	case err := <-p.done:
		p.done <- err // for the cleanup
		return true, err
	default:
		return false, nil
	}
}

// wait returns the process's exit error, failing the test after timeout.
// term stops p with SIGTERM, as an operator would, and fails the test
// unless it exits 0 within 20 s.
func (p *proc) term(t *testing.T) {
	t.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := p.wait(t, 20*time.Second); err != nil {
		t.Fatalf("gearshard after SIGTERM: %v, want exit status 0", err)
	}
}

func (p *proc) wait(t *testing.T, timeout time.Duration) error {
	t.Helper()
	select {
	case err := <-p.done:
		p.done <- err // for the cleanup
		return err
	case <-time.After(timeout):
		t.Fatal("gearshard did not exit")
		return nil
	}
}

func TestSignalTermStops(t *testing.T) {
	p := startProcess(t)
	c := gstest.Dial(t, p.addr)
	c.Send(wire.EchoReq, "up")
	c.Expect(wire.EchoRes, "up")
	p.term(t)
}

// SIGUSR1 is gearmand's graceful shutdown: no new connections; the open ones
// are served until no job is left, queued ones included (gearmand waits for
// its job_count to reach 0), then exit 0.
func TestSignalUsr1Graceful(t *testing.T) {
	p := startProcess(t)
	w := gstest.Dial(t, p.addr)
	c := gstest.Dial(t, p.addr)
	w.Send(wire.CanDo, "slow")
	c.Send(wire.SubmitJob, "slow", "", "first")
	running := c.Expect(wire.JobCreated).Fields[0]
	w.Send(wire.GrabJob)
	w.Expect(wire.JobAssign, running, "slow", "first")
	c.Send(wire.SubmitJob, "slow", "", "queued")
	queued := c.Expect(wire.JobCreated).Fields[0]
	c.Send(wire.SubmitJobBG, "slow", "", "background")
	background := c.Expect(wire.JobCreated).Fields[0]

	if err := p.cmd.Process.Signal(syscall.SIGUSR1); err != nil {
		t.Fatal(err)
	}
	// New connections are turned away once draining has begun.
	gstest.Eventually(t, 10*time.Second, func() bool {
		n := gstest.Dial(t, p.addr)
		n.TO = time.Second
		_, err := n.Read()
		var ne net.Error
		return err != nil && !(errors.As(err, &ne) && ne.Timeout()) // closed, by FIN or reset
	}, "new connections still accepted after SIGUSR1")
	w.Send(wire.WorkComplete, running, "result")
	c.Expect(wire.WorkComplete, running, "result")
	// Nothing runs now, but two jobs are queued: the server must wait for
	// them. It checks for the end every 50 ms, so a second without an exit
	// is twenty chances to have got it wrong.
	select {
	case err := <-p.done:
		p.done <- err
		t.Fatalf("exited with jobs still queued: %v", err)
	case <-time.After(time.Second):
	}
	w.Send(wire.GrabJob)
	w.Expect(wire.JobAssign, queued, "slow", "queued")
	w.Send(wire.WorkComplete, queued, "done")
	c.Expect(wire.WorkComplete, queued, "done")
	w.Send(wire.GrabJob)
	w.Expect(wire.JobAssign, background, "slow", "background")
	w.Send(wire.WorkComplete, background, "")
	if err := p.wait(t, 20*time.Second); err != nil {
		t.Fatalf("exit after graceful shutdown: %v, want status 0", err)
	}
}

// A graceful shutdown waiting for a job no worker can run is cut short by a
// plain one, as the README promises: SIGTERM after SIGUSR1, and the admin
// "shutdown" after "shutdown graceful" (from a connection opened before).
func TestShutdownDuringGraceful(t *testing.T) {
	for _, tc := range []struct {
		name            string
		graceful, plain func(p *proc, admin *gstest.Conn)
	}{
		{"signals",
			func(p *proc, _ *gstest.Conn) { _ = p.cmd.Process.Signal(syscall.SIGUSR1) },
			func(p *proc, _ *gstest.Conn) { _ = p.cmd.Process.Signal(syscall.SIGTERM) }},
		{"admin",
			func(_ *proc, a *gstest.Conn) { a.Admin("shutdown graceful") },
			func(_ *proc, a *gstest.Conn) { a.Write([]byte("shutdown\n")) }}, // the reply may race the close
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := startProcess(t)
			c := gstest.Dial(t, p.addr)
			admin := gstest.Dial(t, p.addr)
			c.Send(wire.SubmitJobBG, "nobody-runs-this", "", "x")
			c.Expect(wire.JobCreated)
			tc.graceful(p, admin)
			gstest.Eventually(t, 10*time.Second, func() bool {
				n := gstest.Dial(t, p.addr)
				n.TO = time.Second
				_, err := n.Read()
				var ne net.Error
				return err != nil && !(errors.As(err, &ne) && ne.Timeout())
			}, "new connections still accepted after the graceful shutdown began")
			if done, err := p.exited(); done {
				t.Fatalf("exited with a job queued: %v", err)
			}
			tc.plain(p, admin)
			if err := p.wait(t, 20*time.Second); err != nil {
				t.Fatalf("exit after the plain shutdown: %v, want status 0", err)
			}
		})
	}
}

// SIGHUP reopens the log file (log rotation), as gearmand does, and the
// server goes on.
func TestSignalHupReopensLog(t *testing.T) {
	dir := t.TempDir()
	logPath := filepath.Join(dir, "gearshard.log")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, gearshardBinary(t), "-L", "127.0.0.1", "-p", "0", "-l", logPath, "--verbose", "INFO")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cancel(); _ = cmd.Wait() }()
	var addr string
	gstest.Eventually(t, 30*time.Second, func() bool {
		data, _ := os.ReadFile(logPath)
		for _, line := range strings.Split(string(data), "\n") {
			var ev struct{ Message, Addr string }
			if json.Unmarshal([]byte(line), &ev) == nil && ev.Message == "gearshard ready" {
				addr = ev.Addr
				return true
			}
		}
		return false
	}, "no ready line in %s", logPath)

	if err := os.Rename(logPath, logPath+".1"); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	gstest.Eventually(t, 10*time.Second, func() bool {
		data, err := os.ReadFile(logPath)
		return err == nil && strings.Contains(string(data), "log file reopened")
	}, "SIGHUP did not start a new log file")
	c := gstest.Dial(t, addr)
	c.Send(wire.EchoReq, "alive")
	c.Expect(wire.EchoRes, "alive")
}
