// Package gstest starts real gearshard servers on ephemeral loopback ports
// and speaks raw Gearman to them, for tests in any package.
package gstest

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"gearshard/engine"
	"gearshard/netio"
	"gearshard/wire"
)

// Server is a running engine and network layer on 127.0.0.1.
type Server struct {
	Addr   string
	Engine *engine.Engine
	Net    *netio.Server
}

// Config adjusts a test server.
type Config struct {
	Engine engine.Options
	Net    netio.Options
	Admin  engine.AdminConfig
}

// Start runs a server on an ephemeral loopback port and stops it when the
// test ends. mod may adjust the defaults (2 loops, 2 shards).
func Start(t testing.TB, mod func(*Config)) *Server {
	t.Helper()
	log := zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.WarnLevel)
	cfg := Config{
		Engine: engine.Options{Shards: 2, HandlePrefix: "H:test", Log: log},
		Net:    netio.Options{Listen: "127.0.0.1", Loops: 2, Log: log},
		Admin:  engine.AdminConfig{Version: "test", PID: 1},
	}
	if mod != nil {
		mod(&cfg)
	}
	eng, err := engine.New(cfg.Engine)
	if err != nil {
		t.Fatalf("engine: %v", err)
	}
	srv := netio.New(eng, engine.NewAdmin(eng, cfg.Admin), cfg.Net)
	done := make(chan error, 1)
	go func() { done <- srv.Serve() }()
	addr := srv.WaitReady()
	if addr == nil {
		t.Fatalf("server did not start: %v", <-done)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = srv.Stop(ctx)
		select {
		case <-done:
		case <-ctx.Done():
			t.Errorf("server did not stop")
		}
		eng.Close()
	})
	return &Server{Addr: addr.String(), Engine: eng, Net: srv}
}

// Conn is a raw protocol connection with a read deadline on every read.
type Conn struct {
	t  testing.TB
	c  net.Conn
	r  *bufio.Reader
	TO time.Duration // per-read timeout; default 5 s
}

// Dial connects to addr; the connection is closed when the test ends.
func Dial(t testing.TB, addr string) *Conn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	t.Cleanup(func() { c.Close() })
	return &Conn{t: t, c: c, r: bufio.NewReader(c), TO: 5 * time.Second}
}

// Raw is the underlying connection.
func (c *Conn) Raw() net.Conn { return c.c }

// Write sends raw bytes.
func (c *Conn) Write(b []byte) {
	c.t.Helper()
	if _, err := c.c.Write(b); err != nil {
		c.t.Fatalf("write: %v", err)
	}
}

// Send sends one request packet with the given fields.
func (c *Conn) Send(typ wire.Type, fields ...string) {
	c.t.Helper()
	args := make([][]byte, len(fields))
	for i, f := range fields {
		args[i] = []byte(f)
	}
	c.Write(wire.AppendRequest(nil, typ, args...))
}

// Packet is a response as read back by a test.
type Packet struct {
	Type   wire.Type
	Fields []string
}

func (p Packet) String() string { return fmt.Sprintf("%s%q", p.Type, p.Fields) }

// Read reads the next response packet, splitting it into the type's fields.
func (c *Conn) Read() (Packet, error) {
	_ = c.c.SetReadDeadline(time.Now().Add(c.TO))
	var hdr [wire.HeaderSize]byte
	if _, err := io.ReadFull(c.r, hdr[:]); err != nil {
		return Packet{}, err
	}
	if !bytes.Equal(hdr[:4], []byte("\x00RES")) {
		return Packet{}, fmt.Errorf("bad magic %q", hdr[:4])
	}
	typ := wire.Type(binary.BigEndian.Uint32(hdr[4:8]))
	body := make([]byte, binary.BigEndian.Uint32(hdr[8:12]))
	if _, err := io.ReadFull(c.r, body); err != nil {
		return Packet{}, err
	}
	p := Packet{Type: typ}
	n := typ.Fields()
	if n == 0 {
		return p, nil
	}
	p.Fields = make([]string, 0, n)
	parts := bytes.SplitN(body, []byte{0}, n)
	for _, f := range parts {
		p.Fields = append(p.Fields, string(f))
	}
	return p, nil
}

// Expect reads the next packet and fails the test unless it has type typ
// (and, when given, exactly these fields). It returns the packet.
func (c *Conn) Expect(typ wire.Type, fields ...string) Packet {
	c.t.Helper()
	p, err := c.Read()
	if err != nil {
		c.t.Fatalf("reading %s: %v", typ, err)
	}
	if p.Type != typ {
		c.t.Fatalf("got %v, want %s", p, typ)
	}
	if len(fields) > 0 && fmt.Sprint(p.Fields) != fmt.Sprint(fields) {
		c.t.Fatalf("got %v, want %s%q", p, typ, fields)
	}
	return p
}

// ExpectClosed fails the test unless the server closes the connection
// (after any packets it still sends, which are returned).
func (c *Conn) ExpectClosed() []Packet {
	c.t.Helper()
	var got []Packet
	for {
		p, err := c.Read()
		if isReset(err) {
			return got
		}
		if err != nil {
			c.t.Fatalf("waiting for close: %v (after %v)", err, got)
		}
		got = append(got, p)
	}
}

// isReset reports a connection the server closed (as opposed to a timeout).
func isReset(err error) bool {
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return false
	}
	return err != nil
}

// ExpectSilence fails the test if a packet arrives within d.
func (c *Conn) ExpectSilence(d time.Duration) {
	c.t.Helper()
	_ = c.c.SetReadDeadline(time.Now().Add(d))
	if _, err := c.r.Peek(1); err == nil {
		p, _ := c.Read()
		c.t.Fatalf("unexpected packet %v", p)
	}
}

// Admin sends one admin line and reads the reply: up to a line ".\n" for
// listing commands, or one line otherwise.
func (c *Conn) Admin(line string) string {
	c.t.Helper()
	c.Write([]byte(line + "\n"))
	return c.ReadAdmin()
}

// ReadAdmin reads one admin reply (see Admin).
func (c *Conn) ReadAdmin() string {
	c.t.Helper()
	_ = c.c.SetReadDeadline(time.Now().Add(c.TO))
	var out bytes.Buffer
	for {
		line, err := c.r.ReadString('\n')
		out.WriteString(line)
		if err != nil {
			c.t.Fatalf("admin reply: %v (so far %q)", err, out.String())
		}
		if out.Len() == len(line) && (bytes.HasPrefix([]byte(line), []byte("OK")) || bytes.HasPrefix([]byte(line), []byte("ERR"))) {
			return out.String()
		}
		if line == ".\n" {
			return out.String()
		}
	}
}

// Eventually polls cond every few milliseconds until it holds or timeout
// passes, then fails the test with msg.
func Eventually(t testing.TB, timeout time.Duration, cond func() bool, msg string, args ...any) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out: "+msg, args...)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// Listen runs serve on an ephemeral loopback listener until the returned
// stop is called (or the test ends), and fails the test if serve returns an
// error or does not return within 10 s of being stopped. what names serve
// in those failures.
func Listen(t testing.TB, what string, serve func(ctx context.Context, l net.Listener) error) (addr string, stop func()) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen for %s: %v", what, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- serve(ctx, l) }()
	stop = sync.OnceFunc(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("%s: %v", what, err)
			}
		case <-time.After(10 * time.Second):
			t.Errorf("%s did not stop", what)
		}
	})
	t.Cleanup(stop)
	return l.Addr().String(), stop
}

// LockedBuffer is a buffer written by one goroutine (a process's output
// copier, a server's logger) and read by a test's polls.
type LockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *LockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *LockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
