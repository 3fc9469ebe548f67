package netio_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/binary"
	"fmt"
	"io"
	"math/big"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"gearshard/engine"
	"gearshard/netio"
	"gearshard/netio/gstest"
	"gearshard/wire"
)

// startBudgetServer starts a server with a buffer budget (and what tune
// sets besides) and watches the peak of the budget's use.
func startBudgetServer(t *testing.T, budget int64, tune func(*gstest.Config)) (*gstest.Server, func() int64) {
	srv := gstest.Start(t, func(c *gstest.Config) {
		c.Net.MaxBuffered = budget
		tune(c)
	})
	return srv, watchPeak(t, srv.Net)
}

// watchPeak samples the server's buffer budget use until the test ends
// and returns a reader of the highest value seen.
func watchPeak(t *testing.T, srv *netio.Server) func() int64 {
	var peak atomic.Int64
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			if n := srv.BufferedBytes(); n > peak.Load() {
				peak.Store(n)
			}
			select {
			case <-stop:
				return
			case <-time.After(200 * time.Microsecond):
			}
		}
	}()
	t.Cleanup(func() { close(stop); <-done })
	return peak.Load
}

// partialEcho is the start of an ECHO_REQ announcing size bytes of which
// only sent follow.
func partialEcho(size, sent int) []byte {
	b := make([]byte, wire.HeaderSize, wire.HeaderSize+sent)
	copy(b, "\x00REQ")
	binary.BigEndian.PutUint32(b[4:], uint32(wire.EchoReq))
	binary.BigEndian.PutUint32(b[8:], uint32(size))
	return append(b, bytes.Repeat([]byte("p"), sent)...)
}

// writeAsync writes b on c from a goroutine: a connection the server cuts
// off mid-write fails it, which is no error here.
func writeAsync(c net.Conn, b []byte) <-chan error {
	done := make(chan error, 1)
	go func() {
		_, err := c.Write(b)
		done <- err
	}()
	return done
}

// expectBudgetError reads what the server sends until it closes c and
// fails the test unless that is the budget's ERROR alone.
func expectBudgetError(t *testing.T, c *gstest.Conn, who string) {
	t.Helper()
	got := c.ExpectClosed()
	if len(got) != 1 || got[0].Type != wire.Error || got[0].Fields[0] != "ARGUMENT_TOO_LARGE" {
		t.Fatalf("%s got %v before the close, want ERROR ARGUMENT_TOO_LARGE", who, got)
	}
}

// expectBudgetSettled fails unless exactly cutoffs connections were cut
// off for the budget, everything counted comes back, the budget's use
// never passed it, and served (if not nil) is still served.
func expectBudgetSettled(t *testing.T, srv *netio.Server, cutoffs uint64, budget int64, peak func() int64, served *gstest.Conn) {
	t.Helper()
	if n := srv.BufferCutoffs(); n != cutoffs {
		t.Fatalf("BufferCutoffs() = %d, want %d", n, cutoffs)
	}
	gstest.Eventually(t, 5*time.Second, func() bool { return srv.BufferedBytes() == 0 },
		"%d bytes still counted after the cut-offs", srv.BufferedBytes())
	if p := peak(); p > budget {
		t.Fatalf("the budget's use peaked at %d, past %d", p, budget)
	}
	if served != nil {
		served.Send(wire.EchoReq, "still")
		served.Expect(wire.EchoRes, "still")
	}
}

// Packets still arriving share --max-buffered-bytes: a connection whose
// packet grows past what is left, holding more than any other, gets an
// ERROR and is closed, everyone else is served, and a connection that
// leaves gives back what it held.
func TestBufferBudgetCutsOffPacketsInArrival(t *testing.T) {
	const budget = 8 << 20
	srv, peak := startBudgetServer(t, budget, func(c *gstest.Config) { c.Net.MaxPacket = 16 << 20 })
	const size, sent = 3 << 20, 2 << 20
	held := int64(wire.HeaderSize + sent - engine.BufferAllowance) // what a counts

	a := gstest.Dial(t, srv.Addr)
	if err := <-writeAsync(a.Raw(), partialEcho(size, sent)); err != nil {
		t.Fatalf("first partial packet: %v", err)
	}
	gstest.Eventually(t, 10*time.Second, func() bool { return srv.Net.BufferedBytes() == held },
		"the first partial packet is not counted: %d, want %d", srv.Net.BufferedBytes(), held)

	// Two larger ones: neither fits beside the first, and whichever meets
	// the line holds more than it by then (or is the larger of the two),
	// so both are cut off and the first stays.
	b, c := gstest.Dial(t, srv.Addr), gstest.Dial(t, srv.Addr)
	writeAsync(b.Raw(), partialEcho(12<<20, 7<<20))
	writeAsync(c.Raw(), partialEcho(12<<20, 7<<20))
	b.TO, c.TO = 10*time.Second, 10*time.Second
	expectBudgetError(t, b, "second connection")
	expectBudgetError(t, c, "third connection")
	gstest.Eventually(t, 5*time.Second, func() bool { return srv.Net.BufferedBytes() == held },
		"the connections cut off did not give back their share: %d counted, want %d", srv.Net.BufferedBytes(), held)
	if n := srv.Net.BufferCutoffs(); n != 2 {
		t.Fatalf("BufferCutoffs() = %d, want 2", n)
	}
	by := gstest.Dial(t, srv.Addr)
	by.Send(wire.EchoReq, "bystander")
	by.Expect(wire.EchoRes, "bystander")

	// The first leaves: its share comes back, and a new connection may
	// hold as much again, then complete its packet.
	a.Raw().Close()
	gstest.Eventually(t, 5*time.Second, func() bool { return srv.Net.BufferedBytes() == 0 },
		"a connection that closed kept %d bytes of the budget", srv.Net.BufferedBytes())
	const bigSize, bigSent = 7 << 20, 6 << 20 // as much as b and c were refused
	d := gstest.Dial(t, srv.Addr)
	if err := <-writeAsync(d.Raw(), partialEcho(bigSize, bigSent)); err != nil {
		t.Fatalf("partial packet after the release: %v", err)
	}
	bigHeld := int64(wire.HeaderSize + bigSent - engine.BufferAllowance)
	gstest.Eventually(t, 10*time.Second, func() bool { return srv.Net.BufferedBytes() == bigHeld },
		"the new partial packet is not counted: %d, want %d", srv.Net.BufferedBytes(), bigHeld)
	d.Write(bytes.Repeat([]byte("p"), bigSize-bigSent))
	d.TO = 10 * time.Second
	if p := d.Expect(wire.EchoRes); len(p.Fields[0]) != bigSize {
		t.Fatalf("echo of %d bytes, want %d", len(p.Fields[0]), bigSize)
	}
	expectBudgetSettled(t, srv.Net, 2, budget, peak, by) // the completed packet and its reply gave all back
}

// Output waiting for clients that do not read shares --max-buffered-bytes
// too: far below their own --max-output-bytes, each is cut off once what
// they hold together passes the budget; a bystander is served throughout,
// and all of it is given back.
func TestBufferBudgetCutsOffSlowReaders(t *testing.T) {
	const budget = 8 << 20
	srv, peak := startBudgetServer(t, budget, func(c *gstest.Config) { c.Net.MaxOutput = 128 << 20 })
	req := wire.AppendRequest(nil, wire.EchoReq, bytes.Repeat([]byte("e"), 64<<10))
	const flooders, echoes = 3, 256 // 16 MiB of replies each: the kernel takes a few, the server must hold the rest
	var conns []*gstest.Conn
	var writers []<-chan error
	for range flooders {
		f := gstest.Dial(t, srv.Addr)
		conns = append(conns, f)
		done := make(chan error, 1)
		go func() {
			for range echoes {
				if _, err := f.Raw().Write(req); err != nil {
					done <- err
					return
				}
			}
			done <- nil
		}()
		writers = append(writers, done)
	}
	by := gstest.Dial(t, srv.Addr)
	for _, w := range writers { // the bystander is answered all along
		for finished := false; !finished; {
			select {
			case <-w:
				finished = true
			default:
			}
			by.Send(wire.EchoReq, "bystander")
			by.Expect(wire.EchoRes, "bystander")
		}
	}
	// A finished writer only means the kernel took its requests: the server
	// may still be answering them. Every flooder, unread, must be cut off
	// before any reads (one reading early would drain what it is owed).
	gstest.Eventually(t, 10*time.Second, func() bool {
		by.Send(wire.EchoReq, "bystander")
		by.Expect(wire.EchoRes, "bystander")
		return srv.Net.BufferCutoffs() >= flooders
	}, "not all %d flooders were cut off while none read", flooders)
	// Each flooder now reads: what the kernel holds, then the close (not a
	// timeout: the server would be holding the rest).
	buf := make([]byte, 1<<20)
	for i, f := range conns {
		got := 0
		for {
			_ = f.Raw().SetReadDeadline(time.Now().Add(10 * time.Second))
			n, err := f.Raw().Read(buf)
			got += n
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				t.Fatalf("flooder %d not cut off: %d bytes of replies read, then nothing (%d counted, %d cut off)",
					i, got, srv.Net.BufferedBytes(), srv.Net.BufferCutoffs())
			}
			if err != nil {
				break
			}
		}
		if got >= echoes*len(req) {
			t.Fatalf("flooder %d got all %d bytes of its replies", i, got)
		}
	}
	if n := srv.Net.BufferCutoffs(); n < flooders {
		t.Fatalf("BufferCutoffs() = %d, want %d", n, flooders)
	}
	gstest.Eventually(t, 5*time.Second, func() bool { return srv.Net.BufferedBytes() == 0 },
		"%d bytes still counted after the flooders were cut off", srv.Net.BufferedBytes())
	by.Send(wire.EchoReq, "still")
	by.Expect(wire.EchoRes, "still")
	if p := peak(); p > budget {
		t.Fatalf("the budget's use peaked at %d, past %d", p, budget)
	}
}

// When the budget is spent, the connection holding the most goes, not the
// one whose growth meets the line: a connection parked on most of the
// budget with a packet it never completes cannot make an honest client's
// large packet the one refused. The parked one gets the budget's ERROR
// and a close; the honest packet is run.
func TestBufferBudgetEvictsLargestInput(t *testing.T) {
	const budget = 8 << 20
	srv, peak := startBudgetServer(t, budget, func(c *gstest.Config) { c.Net.MaxPacket = 16 << 20 })
	const size, sent = 6 << 20, 5 << 20
	held := int64(wire.HeaderSize + sent - engine.BufferAllowance)
	hog := gstest.Dial(t, srv.Addr)
	if err := <-writeAsync(hog.Raw(), partialEcho(size, sent)); err != nil {
		t.Fatalf("the parked partial packet: %v", err)
	}
	gstest.Eventually(t, 10*time.Second, func() bool { return srv.Net.BufferedBytes() == held },
		"the parked packet is not counted: %d, want %d", srv.Net.BufferedBytes(), held)

	// 4 MiB arriving meets the line at about 3: the hog holds more.
	honest := gstest.Dial(t, srv.Addr)
	msg := bytes.Repeat([]byte("h"), 4<<20)
	writeAsync(honest.Raw(), wire.AppendRequest(nil, wire.EchoReq, msg))
	hog.TO, honest.TO = 10*time.Second, 10*time.Second
	expectBudgetError(t, hog, "the connection holding the most")
	if p := honest.Expect(wire.EchoRes); !bytes.Equal([]byte(p.Fields[0]), msg) {
		t.Fatalf("the honest echo came back as %d bytes", len(p.Fields[0]))
	}
	expectBudgetSettled(t, srv.Net, 1, budget, peak, honest)
}

// The same for output: a client that asked for replies and reads none,
// parked on most of the budget, is cut off when an honest client's large
// reply needs the room, and the honest client gets its reply.
func TestBufferBudgetEvictsLargestOutput(t *testing.T) {
	const budget = 4 << 20
	srv, peak := startBudgetServer(t, budget, func(c *gstest.Config) { c.Net.MaxOutput = 64 << 20 })
	hog := gstest.Dial(t, srv.Addr)
	admin := gstest.Dial(t, srv.Addr)
	echo := wire.AppendRequest(nil, wire.EchoReq, bytes.Repeat([]byte("e"), 128<<10))
	// One echo at a time, each followed by a background job whose arrival
	// in the queue says the echo was answered, until the server holds
	// 2.5 MiB for the hog (the kernel's socket buffers take some first):
	// it then holds less than the budget by more than one echo.
	for i := 0; srv.Net.BufferedBytes() < 5<<19; i++ {
		if i == 400 {
			t.Fatalf("50 MiB of echoes unread and only %d bytes counted", srv.Net.BufferedBytes())
		}
		mark := fmt.Sprintf("hog_mark_%d", i)
		hog.Write(wire.AppendRequest(echo, wire.SubmitJobBG, []byte(mark), nil, nil))
		gstest.Eventually(t, 10*time.Second, func() bool {
			return strings.Contains(admin.Admin("status"), mark+"\t1\t")
		}, "echo %d was not answered", i)
	}
	if parked := srv.Net.BufferedBytes(); parked >= budget/4*3 {
		t.Fatalf("the hog holds %d, more than meant", parked)
	}

	honest := gstest.Dial(t, srv.Addr)
	msg := bytes.Repeat([]byte("h"), 2<<20)
	honest.TO = 10 * time.Second
	honest.Write(wire.AppendRequest(nil, wire.EchoReq, msg))
	if p := honest.Expect(wire.EchoRes); !bytes.Equal([]byte(p.Fields[0]), msg) {
		t.Fatalf("the honest echo came back as %d bytes", len(p.Fields[0]))
	}
	// The hog reads what the kernel holds for it, then the close.
	buf := make([]byte, 1<<20)
	for {
		_ = hog.Raw().SetReadDeadline(time.Now().Add(10 * time.Second))
		_, err := hog.Raw().Read(buf)
		if ne, ok := err.(net.Error); ok && ne.Timeout() {
			t.Fatalf("the hog was not cut off (%d counted, %d cut off)", srv.Net.BufferedBytes(), srv.Net.BufferCutoffs())
		}
		if err != nil {
			break
		}
	}
	expectBudgetSettled(t, srv.Net, 1, budget, peak, nil)
}

// Output counted while gnet holds it is given back once the reader has
// taken it, although the connection then sends nothing more: gnet tells
// nobody when it has written, so the server looks again.
func TestBufferBudgetGivenBackWhenOutputDrains(t *testing.T) {
	srv := gstest.Start(t, func(c *gstest.Config) { c.Net.MaxBuffered = 16 << 20 })
	c := gstest.Dial(t, srv.Addr)
	const echoes, size = 6, 1 << 20
	var batch []byte
	for range echoes {
		batch = wire.AppendRequest(batch, wire.EchoReq, bytes.Repeat([]byte("r"), size))
	}
	// A background job after the echoes: once it is queued, every echo
	// has been answered and flushed, and nothing more happens on c.
	batch = wire.AppendRequest(batch, wire.SubmitJobBG, []byte("after_the_echoes"), nil, []byte("x"))
	c.Write(batch)
	a := gstest.Dial(t, srv.Addr)
	gstest.Eventually(t, 10*time.Second, func() bool {
		return strings.Contains(a.Admin("status"), "after_the_echoes\t1\t")
	}, "the echoes were not all run")
	if n := srv.Net.BufferedBytes(); n <= 0 {
		t.Fatalf("6 MiB of replies to a client that does not read: %d bytes counted", n)
	}
	for range echoes {
		if p := c.Expect(wire.EchoRes); len(p.Fields[0]) != size {
			t.Fatalf("echo of %d bytes, want %d", len(p.Fields[0]), size)
		}
	}
	gstest.Eventually(t, 5*time.Second, func() bool { return srv.Net.BufferedBytes() == 0 },
		"%d bytes still counted after the client read every reply", srv.Net.BufferedBytes())
	c.Expect(wire.JobCreated)
	c.Send(wire.EchoReq, "after")
	c.Expect(wire.EchoRes, "after")
	if n := srv.Net.BufferCutoffs(); n != 0 {
		t.Fatalf("BufferCutoffs() = %d, want 0", n)
	}
}

// TLS connections decode their input through the same code, from a buffer
// of their own: a packet in arrival past the budget gets the ERROR and a
// close there too, and gives its share back.
func TestBufferBudgetTLSInput(t *testing.T) {
	srv, dial := startTLS(t, 1, netio.Options{MaxPacket: 4 << 20, MaxBuffered: 1 << 20, MaxConns: 100})
	c := dial()
	writeAsync(c, partialEcho(3<<20, 2<<20))
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	reply := make([]byte, 0, 256)
	buf := make([]byte, 256)
	for {
		n, err := c.Read(buf)
		reply = append(reply, buf[:n]...)
		if ne, ok := err.(net.Error); ok && ne.Timeout() {
			t.Fatalf("TLS connection not cut off (%d counted); got %q", srv.BufferedBytes(), reply)
		}
		if err != nil {
			break
		}
	}
	if len(reply) < wire.HeaderSize || !bytes.HasPrefix(reply, []byte("\x00RES")) ||
		binary.BigEndian.Uint32(reply[4:]) != uint32(wire.Error) || !bytes.HasPrefix(reply[wire.HeaderSize:], []byte("ARGUMENT_TOO_LARGE\x00")) {
		t.Fatalf("TLS connection got %q before the close, want ERROR ARGUMENT_TOO_LARGE", reply)
	}
	gstest.Eventually(t, 5*time.Second, func() bool { return srv.BufferedBytes() == 0 },
		"%d bytes still counted after the TLS connection was cut off", srv.BufferedBytes())
	if n := srv.BufferCutoffs(); n != 1 {
		t.Fatalf("BufferCutoffs() = %d, want 1", n)
	}

	// Within the budget a large packet arrives whole.
	ok := dial()
	msg := bytes.Repeat([]byte("k"), 900<<10)
	writeAsync(ok, wire.AppendRequest(nil, wire.EchoReq, msg))
	_ = ok.SetReadDeadline(time.Now().Add(10 * time.Second))
	want := wire.AppendResponse(nil, wire.EchoRes, msg)
	got := make([]byte, len(want))
	for n := 0; n < len(got); {
		m, err := ok.Read(got[n:])
		if err != nil {
			t.Fatalf("echo over TLS after %d bytes: %v", n, err)
		}
		n += m
	}
	if !bytes.Equal(got, want) {
		t.Fatal("echo over TLS differs")
	}
	gstest.Eventually(t, 5*time.Second, func() bool { return srv.BufferedBytes() == 0 },
		"%d bytes still counted after a TLS echo", srv.BufferedBytes())
}

func selfSigned(t *testing.T) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "127.0.0.1"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// startTLS serves TLS on a loopback port, for an engine of its own with
// the given shards, until the test ends; dial connects to it. The server
// logs to the test at WARN, or to logTo at INFO when given.
func startTLS(t *testing.T, shards int, opts netio.Options, logTo ...io.Writer) (srv *netio.Server, dial func() *tls.Conn) {
	t.Helper()
	log := zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.WarnLevel)
	if len(logTo) > 0 {
		log = zerolog.New(logTo[0]).Level(zerolog.InfoLevel)
	}
	eng, err := engine.New(engine.Options{Shards: shards, HandlePrefix: "H:test", Log: log})
	if err != nil {
		t.Fatal(err)
	}
	opts.Log = log
	srv = netio.New(eng, engine.NewAdmin(eng, engine.AdminConfig{Version: "test"}), opts)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cert := selfSigned(t)
	done := make(chan error, 1)
	go func() { done <- srv.ServeTLS(l, &tls.Config{Certificates: []tls.Certificate{cert}}) }()
	addr := srv.WaitReady()
	t.Cleanup(func() {
		_ = srv.Stop(context.Background())
		if err := <-done; err != nil {
			t.Errorf("ServeTLS: %v", err)
		}
		eng.Close()
	})
	return srv, func() *tls.Conn {
		c, err := tls.Dial("tcp", addr.String(), &tls.Config{InsecureSkipVerify: true})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
}
