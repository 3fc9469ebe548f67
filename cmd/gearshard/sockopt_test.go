package main

import (
	"context"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"gearshard/netio/gstest"
	"gearshard/wire"
)

// -b sets the listen backlog the kernel reports, and --keepalive with its
// idle/interval/count flags reach each accepted socket: read back with ss
// (the listening socket's Send-Q is its backlog) and, since the server
// runs in this process, with getsockopt on the fd that "workers" shows.
func TestBacklogAndKeepaliveApplied(t *testing.T) {
	ss, err := exec.LookPath("ss")
	if err != nil {
		t.Fatalf("ss not found (%v): install the Debian package iproute2 (make deps)", err)
	}
	ts := startServer(t, func(c *ServeCmd) {
		c.Backlog = 77
		c.Keepalive = true
		c.KeepaliveIdle = 7
		c.KeepaliveInterval = 3
		c.KeepaliveCount = 4
	})
	ctx, cancel := context.WithTimeout(context.Background(), peerTimeout)
	defer cancel()
	out, err := exec.CommandContext(ctx, ss, "-Hltn", "sport = :"+ts.port).CombinedOutput()
	if err != nil {
		t.Fatalf("ss: %v: %s", err, out)
	}
	// State Recv-Q Send-Q Local Peer; for a listener Send-Q is the backlog.
	if f := strings.Fields(string(out)); len(f) < 4 || f[0] != "LISTEN" || f[2] != "77" {
		t.Fatalf("ss -ltn for port %s: %q, want a LISTEN socket with Send-Q 77", ts.port, out)
	}

	c := gstest.Dial(t, ts.addr)
	c.Send(wire.SetClientID, "sockopt") // so the connection is easy to find in "workers"
	var fd int
	waitFor(t, "the connection in workers", func() (bool, string) {
		w := ts.admin("workers")
		for _, line := range strings.Split(w, "\n") {
			if f := strings.Fields(line); len(f) >= 3 && f[2] == "sockopt" {
				fd, _ = strconv.Atoi(f[0])
				return true, w
			}
		}
		return false, w
	})
	for _, o := range []struct {
		name       string
		level, opt int
		want       int
	}{
		{"SO_KEEPALIVE", syscall.SOL_SOCKET, syscall.SO_KEEPALIVE, 1},
		{"TCP_KEEPIDLE", syscall.IPPROTO_TCP, unix.TCP_KEEPIDLE, 7},
		{"TCP_KEEPINTVL", syscall.IPPROTO_TCP, unix.TCP_KEEPINTVL, 3},
		{"TCP_KEEPCNT", syscall.IPPROTO_TCP, unix.TCP_KEEPCNT, 4},
	} {
		got, err := unix.GetsockoptInt(fd, o.level, o.opt)
		if err != nil || got != o.want {
			t.Errorf("%s on fd %d = %d (%v), want %d", o.name, fd, got, err, o.want)
		}
	}
}
