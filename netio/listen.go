package netio

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"sync"
)

// lookupIPAddr resolves -L's host name (a variable so that tests can give
// a name several addresses on any machine).
var lookupIPAddr = net.DefaultResolver.LookupIPAddr

// ListenAddrs lists the host:port addresses to bind for -L host: as
// gearmand, every address a name resolves to. Debian's service starts it
// with --listen=localhost, which is both 127.0.0.1 and ::1 where
// /etc/hosts says so; Go's own listen would take one of the two. "" is
// every interface, one dual-stack socket; an IP literal is itself.
func ListenAddrs(ctx context.Context, host string, port int) ([]string, error) {
	p := strconv.Itoa(port)
	if host == "" {
		return []string{net.JoinHostPort("", p)}, nil
	}
	if _, err := netip.ParseAddr(host); err == nil {
		return []string{net.JoinHostPort(host, p)}, nil
	}
	ips, err := lookupIPAddr(ctx, host)
	if err != nil {
		return nil, err
	}
	var addrs []string
	seen := make(map[string]bool, len(ips))
	for _, ip := range ips {
		h := ip.String() // with the zone of a link-local address
		if !seen[h] {
			seen[h] = true
			addrs = append(addrs, net.JoinHostPort(h, p))
		}
	}
	if len(addrs) == 0 {
		return nil, fmt.Errorf("%s has no address", host)
	}
	return addrs, nil
}

// ListenAll listens on every address of host (see ListenAddrs), as one
// listener. With port 0 each address gets its own port.
func ListenAll(ctx context.Context, host string, port int) (net.Listener, error) {
	addrs, err := ListenAddrs(ctx, host, port)
	if err != nil {
		return nil, err
	}
	ls := make([]net.Listener, 0, len(addrs))
	for _, a := range addrs {
		l, err := net.Listen(network(a), a)
		if err != nil {
			for _, l := range ls {
				l.Close()
			}
			return nil, err
		}
		ls = append(ls, l)
	}
	if len(ls) == 1 {
		return ls[0], nil
	}
	m := &multiListener{ls: ls, accepted: make(chan accepted), done: make(chan struct{})}
	for _, l := range ls {
		go m.acceptFrom(l)
	}
	return m, nil
}

// network is "tcp" for the wildcard (one dual-stack socket) and else the
// address's family: an IPv6 address, "::" too, is IPv6 only, as gearmand
// and gnet bind it.
func network(hostPort string) string {
	host, _, _ := net.SplitHostPort(hostPort)
	ip, err := netip.ParseAddr(host)
	switch {
	case err != nil:
		return "tcp"
	case ip.Is4():
		return "tcp4"
	}
	return "tcp6"
}

// ListenerAddrs is every address l listens on.
func ListenerAddrs(l net.Listener) []net.Addr {
	if m, ok := l.(*multiListener); ok {
		addrs := make([]net.Addr, len(m.ls))
		for i, l := range m.ls {
			addrs[i] = l.Addr()
		}
		return addrs
	}
	return []net.Addr{l.Addr()}
}

// multiListener merges the connections of several listeners; its Accept
// returns them in arrival order and its errors as they come.
type multiListener struct {
	ls       []net.Listener
	accepted chan accepted
	done     chan struct{}
	once     sync.Once
}

type accepted struct {
	c   net.Conn
	err error
}

// acceptFrom hands on l's connections one at a time (the channel is
// unbuffered: a consumer backing off from EMFILE paces this loop too).
func (m *multiListener) acceptFrom(l net.Listener) {
	for {
		c, err := l.Accept()
		select {
		case m.accepted <- accepted{c, err}:
		case <-m.done:
			if c != nil {
				c.Close()
			}
			return
		}
		if errors.Is(err, net.ErrClosed) {
			return
		}
	}
}

func (m *multiListener) Accept() (net.Conn, error) {
	select {
	case a := <-m.accepted:
		return a.c, a.err
	case <-m.done:
		return nil, net.ErrClosed
	}
}

func (m *multiListener) Close() error {
	var err error
	m.once.Do(func() {
		close(m.done)
		for _, l := range m.ls {
			err = errors.Join(err, l.Close())
		}
	})
	return err
}

// Addr is the first address; ListenerAddrs gives them all.
func (m *multiListener) Addr() net.Addr { return m.ls[0].Addr() }
