package bench

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Target is a server to measure: either one already running (Addr, and
// PID when known) or a command line started afresh for every round, where
// "{port}" stands for a free loopback port.
type Target struct {
	Label string
	Addr  string
	PID   int
	Cmd   []string
}

// ParseTarget reads "label=command args" (a server to start) or
// "label@host:port[/pid]" (one running).
func ParseTarget(s string) (Target, error) {
	if label, cmd, ok := strings.Cut(s, "="); ok && !strings.Contains(label, "@") {
		fields := strings.Fields(cmd)
		if len(fields) == 0 {
			return Target{}, fmt.Errorf("bench: target %q has no command", s)
		}
		return Target{Label: label, Cmd: fields}, nil
	}
	label, rest, ok := strings.Cut(s, "@")
	if !ok {
		return Target{}, fmt.Errorf("bench: target %q: want label=command or label@host:port[/pid]", s)
	}
	t := Target{Label: label, Addr: rest}
	if addr, pid, ok := strings.Cut(rest, "/"); ok {
		n, err := strconv.Atoi(pid)
		if err != nil {
			return Target{}, fmt.Errorf("bench: target %q: bad pid", s)
		}
		t.Addr, t.PID = addr, n
	}
	return t, nil
}

// running is a started (or borrowed) server.
type running struct {
	addr string
	pid  int
	stop func()
}

// start launches the target's command on a free port and waits until it
// accepts connections; a target with an address is used as it is.
func (t Target) start(ctx context.Context) (*running, error) {
	if t.Cmd == nil {
		return &running{addr: t.Addr, pid: t.PID, stop: func() {}}, nil
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	port := strconv.Itoa(l.Addr().(*net.TCPAddr).Port)
	l.Close()
	args := make([]string, len(t.Cmd))
	for i, a := range t.Cmd {
		args[i] = strings.ReplaceAll(a, "{port}", port)
	}
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Stdout, cmd.Stderr = nil, os.Stderr
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("bench: starting %s: %w", t.Label, err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	stop := func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
	}
	addr := net.JoinHostPort("127.0.0.1", port)
	deadline := time.Now().Add(15 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return &running{addr: addr, pid: cmd.Process.Pid, stop: stop}, nil
		}
		select {
		case <-exited:
			return nil, fmt.Errorf("bench: %s exited before accepting connections", t.Label)
		case <-ctx.Done():
			stop()
			return nil, ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			stop()
			return nil, fmt.Errorf("bench: %s did not accept connections on %s", t.Label, addr)
		}
	}
}

// Compare runs the scenario against a and b in alternation, A B A B ...,
// for the given rounds, with fresh servers each round when the targets are
// commands, so that drift on a noisy machine hits both alike.
func Compare(ctx context.Context, scenario string, cfg Config, a, b Target, rounds int) (*Comparison, error) {
	cmp := &Comparison{Scenario: scenario, A: a.Label, B: b.Label}
	for round := 0; round < rounds; round++ {
		var pair [2]*Result
		for i, t := range []Target{a, b} {
			srv, err := t.start(ctx)
			if err != nil {
				return cmp, err
			}
			c := cfg
			c.Servers, c.PID, c.Label = []string{srv.addr}, srv.pid, t.Label
			r, err := Run(ctx, scenario, c)
			srv.stop()
			if r == nil {
				return cmp, err
			}
			pair[i] = r
		}
		cmp.Rounds = append(cmp.Rounds, pair)
	}
	return cmp, nil
}
