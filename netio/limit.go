package netio

import (
	"fmt"
	"net"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// The connection budget. gnet's acceptor treats running out of file
// descriptors (EMFILE) as fatal and shuts the whole server down, so the
// server must never let connections use them up: every front end — the
// Gearman port (gnet or TLS) and the HTTP front end — takes its
// connections from one budget set below the descriptor limit, and a
// connection over it is closed as soon as it is accepted. The metrics
// listener has a small cap of its own inside the server's reserve. gearmand's
// -f says the same: "total connections will be slightly less".

// ownDescriptors is what the server keeps for itself besides connections:
// standard streams, log and PID files, listeners, the queue store's files
// and connections, the Go runtime's poller, and up to MetricsConns
// connections to the metrics listener; each event loop adds its epoll and
// wake-up descriptors (counted apart).
const ownDescriptors = 64

// MetricsConns bounds the metrics listener's connections. They are kept
// apart from the clients' budget so that a full server can still be
// scraped.
const MetricsConns = 16

// ConnectionBudget is how many connections the file-descriptor limit
// (RLIMIT_NOFILE, which -f sets) leaves once the server's own descriptors
// and a full listen backlog are set aside: gnet accepts the whole backlog
// before the server can refuse any of it. loops and backlog as in Options.
func ConnectionBudget(loops, backlog int) (int64, error) {
	var rl unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &rl); err != nil {
		return 0, fmt.Errorf("reading the file-descriptor limit: %w", err)
	}
	if loops <= 0 {
		loops = runtime.NumCPU()
	}
	if somax := kernelMaxBacklog(); backlog <= 0 || backlog > somax {
		backlog = somax
	}
	reserve := int64(ownDescriptors + 2*(loops+1) + backlog)
	limit := int64(min(rl.Cur, 1<<40))
	if limit-reserve < 1 {
		return 0, fmt.Errorf("a limit of %d file descriptors leaves no room for connections: the server keeps about %d for itself and its listen backlog (-b %d); raise -f or lower -b",
			limit, reserve, backlog)
	}
	return limit - reserve, nil
}

// kernelMaxBacklog is the ceiling listen() puts on a backlog.
func kernelMaxBacklog() int {
	b, err := os.ReadFile("/proc/sys/net/core/somaxconn")
	if n, perr := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && perr == nil && n > 0 {
		return n
	}
	return 4096
}

// connBudget counts open connections against a maximum.
type connBudget struct {
	open atomic.Int64
	max  int64
}

// take claims a place; false means there is none left.
func (b *connBudget) take() bool {
	if b.open.Add(1) <= b.max {
		return true
	}
	b.open.Add(-1)
	return false
}

// give returns a place.
func (b *connBudget) give() { b.open.Add(-1) }

// admit takes a connection from the server's budget; false means the
// server is full and the caller closes the connection at once.
func (s *Server) admit() bool {
	if s.conns.take() {
		return true
	}
	s.refused.Add(1)
	// One line a second at most: a flood must not turn into a log flood.
	now := time.Now().UnixNano()
	if last := s.refusedLogged.Load(); now-last >= int64(time.Second) && s.refusedLogged.CompareAndSwap(last, now) {
		s.log.Warn().Int64("open", s.conns.open.Load()).Int64("limit", s.conns.max).Uint64("refused", s.refused.Load()).
			Msg("connection refused: the connection limit is reached (it follows the file-descriptor limit, -f)")
	}
	return false
}

// release returns a connection to the server's budget.
func (s *Server) release() { s.conns.give() }

// Refused is the number of connections closed because the budget was spent.
func (s *Server) Refused() uint64 { return s.refused.Load() }

// LimitHTTP makes the HTTP front end's listener take its connections from
// the server's budget; one over it is closed at once. (Not answered 503: a
// reply before the request confuses clients, and waiting for the request
// would hold the descriptor the budget protects.)
func (s *Server) LimitHTTP(l net.Listener) net.Listener {
	return &limitedListener{Listener: l, admit: s.admit, release: s.release}
}

// LimitConns caps a listener's open connections at n on a count of its
// own; one over it is closed at once.
func LimitConns(l net.Listener, n int64) net.Listener {
	b := &connBudget{max: n}
	return &limitedListener{Listener: l, admit: b.take, release: b.give}
}

type limitedListener struct {
	net.Listener
	admit   func() bool
	release func()
}

func (l *limitedListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		if l.admit() {
			return &budgetConn{Conn: c, release: l.release}, nil
		}
		c.Close()
	}
}

// budgetConn gives its place back when closed (once, however often Close
// is called).
type budgetConn struct {
	net.Conn
	release func()
	once    sync.Once
}

func (c *budgetConn) Close() error {
	c.once.Do(c.release)
	return c.Conn.Close()
}

// CloseWrite lets net/http half-close before closing, so that a client
// gets the error reply it is sent before a malformed request's close.
func (c *budgetConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}
