package netio_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"io"
	"net"
	"net/http"
	"runtime"
	"strings"
	"testing"
	"time"

	"gearshard/netio"
	"gearshard/netio/gstest"
	"gearshard/wire"
)

// A client that never reads its replies is cut off once its pending output
// passes the limit; the worker feeding it and other clients are not hurt.
func TestSlowReaderIsCutOff(t *testing.T) {
	srv := gstest.Start(t, func(c *gstest.Config) { c.Net.MaxOutput = 1 << 20 })
	slow := gstest.Dial(t, srv.Addr)
	w := gstest.Dial(t, srv.Addr)
	w.Send(wire.CanDo, "flood")
	slow.Send(wire.SubmitJob, "flood", "", "x")
	h := slow.Expect(wire.JobCreated).Fields[0]
	w.Send(wire.GrabJob)
	w.Expect(wire.JobAssign, h, "flood", "x")

	// 64 MiB of WORK_DATA for a client that stops reading: far past what
	// the socket buffers and the 1 MiB limit hold.
	chunk := bytes.Repeat([]byte("d"), 256<<10)
	for i := 0; i < 256; i++ {
		w.Write(wire.AppendRequest(nil, wire.WorkData, []byte(h), chunk))
	}
	// The server must close the slow client: reading now drains what the
	// kernel buffered, then ends.
	slow.TO = 20 * time.Second
	slow.ExpectClosed()

	// The worker and a new client still work.
	w.Send(wire.EchoReq, "worker alive")
	w.Expect(wire.EchoRes, "worker alive")
	c := gstest.Dial(t, srv.Addr)
	c.Send(wire.EchoReq, "others served")
	c.Expect(wire.EchoRes, "others served")
}

// A client that pipelines requests and never reads its replies is cut off
// too, although no single turn's replies come near the limit: what gnet
// holds for the socket counts, not only the outbox.
func TestNonReaderOfOwnRepliesIsCutOff(t *testing.T) {
	srv := gstest.Start(t, func(c *gstest.Config) { c.Net.MaxOutput = 1 << 20 })
	slow := gstest.Dial(t, srv.Addr)
	req := wire.AppendRequest(nil, wire.EchoReq, bytes.Repeat([]byte("e"), 16<<10))
	done := make(chan struct{})
	go func() {
		defer close(done)
		// 64 MiB of echoes, far past the kernel's socket buffers; the
		// writes fail once the server has cut the connection.
		for range 4096 {
			if _, err := slow.Raw().Write(req); err != nil {
				return
			}
		}
	}()
	<-done
	// Reading now drains what the kernel buffered, then must meet the
	// close (not a timeout: the server would be holding the rest).
	buf := make([]byte, 1<<20)
	got := 0
	for {
		_ = slow.Raw().SetReadDeadline(time.Now().Add(20 * time.Second))
		n, err := slow.Raw().Read(buf)
		got += n
		if ne, ok := err.(net.Error); ok && ne.Timeout() {
			t.Fatalf("not cut off: %d bytes of replies read, then nothing", got)
		}
		if err != nil {
			break
		}
	}
	if got >= 32<<20 {
		t.Fatalf("cut off only after %d bytes of replies", got)
	}
	c := gstest.Dial(t, srv.Addr)
	c.Send(wire.EchoReq, "others served")
	c.Expect(wire.EchoRes, "others served")
}

// A flood of background submissions with no worker meets --max-queue-bytes:
// past it every submission gets an ERROR, and the heap stays bounded.
func TestSubmissionFloodIsBounded(t *testing.T) {
	const limit = 32 << 20
	// The heap is measured from here: servers of earlier tests may still be
	// in it (gnet keeps its last engine, and through it older ones, reachable
	// after Stop; with go test -count=N that includes this test's own floods).
	heapBefore := heapInUse()
	srv := gstest.Start(t, func(c *gstest.Config) { c.Engine.MaxQueueBytes = limit })
	c := gstest.Dial(t, srv.Addr)
	payload := bytes.Repeat([]byte("p"), 4096)
	const total = 20_000 // 80 MiB of workloads offered
	go func() {
		var batch []byte
		for i := 0; i < total; i++ {
			batch = wire.AppendRequest(batch, wire.SubmitJobBG, []byte("flood"), nil, payload)
			if i%64 == 63 {
				if _, err := c.Raw().Write(batch); err != nil {
					return
				}
				batch = batch[:0]
			}
		}
		_, _ = c.Raw().Write(batch)
	}()
	created, refused := 0, 0
	for created+refused < total {
		p, err := c.Read()
		if err != nil {
			t.Fatalf("after %d created, %d refused: %v", created, refused, err)
		}
		switch p.Type {
		case wire.JobCreated:
			created++
		case wire.Error:
			if p.Fields[0] != "QUEUE_ERROR" {
				t.Fatalf("error %v", p)
			}
			refused++
		default:
			t.Fatalf("got %v", p)
		}
	}
	if refused == 0 || created*4096 > limit {
		t.Fatalf("%d created, %d refused: the bound did not hold", created, refused)
	}
	if grown := heapInUse() - heapBefore; grown > 3*limit {
		t.Fatalf("heap in use grew by %d MiB with a %d MiB queue bound", grown>>20, limit>>20)
	}
}

// heapInUse is the heap's in-use bytes after a collection.
func heapInUse() int64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return int64(ms.HeapInuse)
}

// The Gearman port and the HTTP front end share one connection budget: at
// the limit, a new connection of either is closed unanswered; a connection
// that leaves makes room again.
func TestConnectionBudgetSharedWithHTTP(t *testing.T) {
	srv := gstest.Start(t, func(c *gstest.Config) { c.Net.MaxConns = 3 })
	httpAddr, _ := gstest.Listen(t, "HTTP front end", func(ctx context.Context, l net.Listener) error {
		return srv.Net.ServeHTTPFrontEnd(ctx, srv.Net.LimitHTTP(l), netio.HTTPOptions{})
	})
	get := func() (int, error) {
		tr := &http.Transport{Proxy: nil}
		defer tr.CloseIdleConnections()
		resp, err := (&http.Client{Transport: tr, Timeout: 10 * time.Second}).Post("http://"+httpAddr+"/", "text/plain", nil)
		if err != nil {
			return 0, err
		}
		resp.Body.Close()
		return resp.StatusCode, nil
	}

	a, b := gstest.Dial(t, srv.Addr), gstest.Dial(t, srv.Addr)
	for _, c := range []*gstest.Conn{a, b} {
		c.Send(wire.EchoReq, "in")
		c.Expect(wire.EchoRes, "in")
	}
	if code, err := get(); err != nil || code != http.StatusNotFound { // the third place: served (no function named)
		t.Fatalf("HTTP request within the budget: %d %v", code, err)
	}
	gstest.Eventually(t, 5*time.Second, func() bool { return srv.Net.Connections() == 2 }, "HTTP connection not given back")

	c := gstest.Dial(t, srv.Addr) // the third place
	c.Send(wire.EchoReq, "in")
	c.Expect(wire.EchoRes, "in")
	over := gstest.Dial(t, srv.Addr)
	over.Send(wire.EchoReq, "over")
	if got := over.ExpectClosed(); len(got) > 0 {
		t.Fatalf("connection over the budget got %v", got)
	}
	if code, err := get(); err == nil {
		t.Fatalf("HTTP request over the budget answered %d", code)
	}
	if n := srv.Net.Refused(); n != 2 {
		t.Fatalf("Refused() = %d, want 2", n)
	}

	c.Raw().Close()
	gstest.Eventually(t, 5*time.Second, func() bool {
		code, err := get()
		return err == nil && code == http.StatusNotFound
	}, "no room made by a connection that left")
	a.Send(wire.EchoReq, "still")
	a.Expect(wire.EchoRes, "still")
}

// LimitConns caps a listener (the metrics one) on a count of its own:
// past it a connection is closed unanswered; one that closes makes room.
func TestLimitConnsOwnCount(t *testing.T) {
	addr, _ := gstest.Listen(t, "limited", func(ctx context.Context, l net.Listener) error {
		hs := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {})}
		go func() { <-ctx.Done(); hs.Close() }()
		if err := hs.Serve(netio.LimitConns(l, 1)); err != http.ErrServerClosed {
			return err
		}
		return nil
	})
	client := func() (*http.Transport, *http.Client) {
		tr := &http.Transport{Proxy: nil}
		t.Cleanup(tr.CloseIdleConnections)
		return tr, &http.Client{Transport: tr, Timeout: 10 * time.Second}
	}
	get := func(c *http.Client) (int, error) {
		resp, err := c.Get("http://" + addr + "/")
		if err != nil {
			return 0, err
		}
		resp.Body.Close()
		return resp.StatusCode, nil
	}
	tr1, c1 := client()
	if code, err := get(c1); err != nil || code != http.StatusOK { // its connection stays open (keep-alive)
		t.Fatalf("first connection: %d %v", code, err)
	}
	_, c2 := client()
	if code, err := get(c2); err == nil {
		t.Fatalf("second connection while the first is open answered %d", code)
	}
	tr1.CloseIdleConnections()
	gstest.Eventually(t, 5*time.Second, func() bool {
		code, err := get(c2)
		return err == nil && code == http.StatusOK
	}, "no place after the first connection closed")
}

// Admin listings pipelined by a client that does not read stop at its
// output limit: the commands after the one that overflowed are not run.
func TestAdminListingsStopAtOutputLimit(t *testing.T) {
	srv := gstest.Start(t, func(c *gstest.Config) { c.Net.MaxOutput = 64 << 10 })
	c := gstest.Dial(t, srv.Addr)
	var batch []byte
	for range 2000 {
		batch = wire.AppendRequest(batch, wire.SubmitJobBG, []byte("listed"), nil, []byte("x"))
	}
	c.Write(batch)
	a := gstest.Dial(t, srv.Addr)
	gstest.Eventually(t, 10*time.Second, func() bool {
		return strings.Contains(a.Admin("status"), "listed\t2000\t")
	}, "2000 jobs not queued")

	flood := gstest.Dial(t, srv.Addr) // "show jobs" is ~100 KB here: over the limit at once
	flood.Write([]byte(strings.Repeat("show jobs\n", 20) + "create function after_the_limit\n"))
	flood.TO = 20 * time.Second
	buf := make([]byte, 64<<10)
	for {
		if _, err := flood.Raw().Read(buf); err != nil {
			break // cut off (a timeout would fail below: the function check)
		}
	}
	if st := a.Admin("status"); strings.Contains(st, "after_the_limit") {
		t.Fatalf("a command after the output limit was run:\n%s", st)
	}
}

// Large listings pipelined by a client that reads: each one yields the
// loop to other connections, and the commands after it are still run, on
// the loop's next turns (gnet's connections) or at once (TLS).
func TestAdminPipelinedLargeListingsAllAnswered(t *testing.T) {
	const jobs = 70_000 // "show jobs" is then about 1.3 MB, over the yield size
	// queue writes the submissions, then what follows them, in order.
	queue := func(c net.Conn, then string) {
		var batch []byte
		for range jobs {
			batch = wire.AppendRequest(batch, wire.SubmitJobBG, []byte("listed"), nil, []byte("x"))
		}
		writeAsync(c, append(batch, then...))
	}
	// readListings reads n "show jobs" replies then the "version" line.
	readListings := func(c net.Conn, n int) {
		t.Helper()
		_ = c.SetReadDeadline(time.Now().Add(30 * time.Second))
		r := bufio.NewReaderSize(c, 1<<16)
		for i := 0; i < n; i++ {
			lines := 0
			for {
				line, err := r.ReadString('\n')
				if err != nil {
					t.Fatalf("listing %d: %v after %d lines", i+1, err, lines)
				}
				if line == ".\n" {
					break
				}
				lines++
			}
			if lines != jobs {
				t.Fatalf("listing %d has %d lines, want %d", i+1, lines, jobs)
			}
		}
		if line, err := r.ReadString('\n'); err != nil || !strings.HasPrefix(line, "OK ") {
			t.Fatalf("after the listings: %q, %v; want the version", line, err)
		}
	}
	const pipelined = "show jobs\nshow jobs\nshow jobs\nversion\n"

	t.Run("event loop", func(t *testing.T) {
		srv := gstest.Start(t, nil)
		c := gstest.Dial(t, srv.Addr)
		queue(c.Raw(), "")
		a := gstest.Dial(t, srv.Addr)
		gstest.Eventually(t, 20*time.Second, func() bool {
			return strings.Contains(a.Admin("status"), "listed\t70000\t")
		}, "jobs not queued")
		a.Write([]byte(pipelined))
		readListings(a.Raw(), 3)
	})
	t.Run("TLS", func(t *testing.T) {
		_, dial := startTLS(t, 2, netio.Options{MaxPacket: 4 << 20, MaxConns: 100})
		c := dial()
		queue(c, pipelined)
		// The submissions' JOB_CREATEDs come first.
		_ = c.SetReadDeadline(time.Now().Add(30 * time.Second))
		hdr := make([]byte, wire.HeaderSize)
		for i := 0; i < jobs; i++ {
			if _, err := io.ReadFull(c, hdr); err != nil {
				t.Fatalf("JOB_CREATED %d: %v", i+1, err)
			}
			if _, err := io.ReadFull(c, make([]byte, binary.BigEndian.Uint32(hdr[8:]))); err != nil {
				t.Fatalf("JOB_CREATED %d: %v", i+1, err)
			}
		}
		readListings(c, 3)
	})
}
