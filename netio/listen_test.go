package netio_test

import (
	"context"
	"errors"
	"net"
	"slices"
	"testing"

	"golang.org/x/sys/unix"

	"gearshard/netio"
	"gearshard/netio/gstest"
	"gearshard/wire"
)

// dualStack stubs a name with both loopback addresses, as Debian's
// /etc/hosts gives localhost, and one with neither.
func dualStack(t *testing.T) {
	netio.StubLookup(t, map[string][]string{
		"dual.test":  {"127.0.0.1", "::1", "127.0.0.1"},
		"empty.test": {},
	})
}

func TestListenAddrs(t *testing.T) {
	dualStack(t)
	for _, c := range []struct {
		host string
		want []string
	}{
		{"", []string{":4730"}},
		{"127.0.0.1", []string{"127.0.0.1:4730"}},
		{"::1", []string{"[::1]:4730"}},
		{"fe80::1%lo", []string{"[fe80::1%lo]:4730"}},
		{"dual.test", []string{"127.0.0.1:4730", "[::1]:4730"}}, // each address once
	} {
		got, err := netio.ListenAddrs(context.Background(), c.host, 4730)
		if err != nil || !slices.Equal(got, c.want) {
			t.Errorf("ListenAddrs(%q) = %q, %v; want %q", c.host, got, err, c.want)
		}
	}
	for _, host := range []string{"nowhere.test", "empty.test"} {
		if got, err := netio.ListenAddrs(context.Background(), host, 4730); err == nil {
			t.Errorf("ListenAddrs(%q) = %q, want an error", host, got)
		}
	}
}

// TestServeEveryAddress: -L with a name serves on each of its addresses,
// as gearmand does, not only on the first.
func TestServeEveryAddress(t *testing.T) {
	dualStack(t)
	srv := gstest.Start(t, func(c *gstest.Config) { c.Net.Listen = "dual.test" })
	addrs := srv.Net.Addrs()
	if len(addrs) != 2 || !addrs[0].IP.Equal(net.IPv4(127, 0, 0, 1)) || !addrs[1].IP.Equal(net.IPv6loopback) {
		t.Fatalf("bound %v, want 127.0.0.1 and ::1", addrs)
	}
	for _, a := range addrs {
		c := gstest.Dial(t, a.String())
		c.Send(wire.EchoReq, "ping "+a.String())
		c.Expect(wire.EchoRes, "ping "+a.String())
		if got := c.Admin("version"); got != "OK test\n" {
			t.Errorf("%s: version = %q", a, got)
		}
	}
}

// TestListenAll: one listener over every address; Close ends Accept.
func TestListenAll(t *testing.T) {
	dualStack(t)
	l, err := netio.ListenAll(context.Background(), "dual.test", 0)
	if err != nil {
		t.Fatal(err)
	}
	addrs := netio.ListenerAddrs(l)
	if len(addrs) != 2 || l.Addr() != addrs[0] {
		t.Fatalf("listening on %v (Addr %v)", addrs, l.Addr())
	}
	accepted := make(chan string, 2)
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				close(accepted)
				if !errors.Is(err, net.ErrClosed) {
					t.Errorf("Accept after Close: %v", err)
				}
				return
			}
			accepted <- c.LocalAddr().String()
			c.Close()
		}
	}()
	var want []string
	for _, a := range addrs {
		c, err := net.Dial("tcp", a.String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		want = append(want, a.String())
		if got := <-accepted; got != a.String() {
			t.Errorf("accepted on %s, dialled %s", got, a)
		}
	}
	l.Close()
	if _, ok := <-accepted; ok {
		t.Error("Accept returned a connection after Close")
	}
	for _, a := range want {
		if c, err := net.Dial("tcp", a); err == nil {
			c.Close()
			t.Errorf("%s still accepts after Close", a)
		}
	}
	if _, err := netio.ListenAll(context.Background(), "nowhere.test", 0); err == nil {
		t.Error("ListenAll of a name that does not resolve succeeded")
	}
}

// TestListenAllIPv6Only: "::" is IPv6 only, as on the gnet port and in
// gearmand; only "" (every interface) is one dual-stack socket.
func TestListenAllIPv6Only(t *testing.T) {
	for host, want := range map[string]int{"::": 1, "": 0} {
		l, err := netio.ListenAll(context.Background(), host, 0)
		if err != nil {
			t.Fatal(err)
		}
		raw, err := l.(*net.TCPListener).SyscallConn()
		if err != nil {
			t.Fatal(err)
		}
		var v6only int
		var serr error
		if err := raw.Control(func(fd uintptr) {
			v6only, serr = unix.GetsockoptInt(int(fd), unix.IPPROTO_IPV6, unix.IPV6_V6ONLY)
		}); err != nil || serr != nil {
			t.Fatal(err, serr)
		}
		l.Close()
		if v6only != want {
			t.Errorf("-L %q: IPV6_V6ONLY = %d, want %d", host, v6only, want)
		}
	}
}
