package netio_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand"
	"net"
	"net/http"
	"net/http/httptrace"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"gearshard/engine"
	"gearshard/netio"
	"gearshard/netio/gstest"
	"gearshard/wire"
)

// End-to-end tests of the HTTP front end (issue 6): Go's HTTP client, raw
// TCP and curl against a real server, with workers speaking raw Gearman.
// The HTTP requests run in goroutines; the workers run on the test
// goroutine, so every protocol step is asserted in order.

// httpServer is a gstest server with the HTTP front end on its own port.
type httpServer struct {
	*gstest.Server
	HTTPAddr string // host:port of the HTTP front end
	Base     string // http://host:port
}

func startHTTP(t *testing.T, opts netio.HTTPOptions) *httpServer {
	t.Helper()
	return startHTTPWith(t, opts, nil)
}

// startHTTPWith is startHTTP with the server's configuration changed by mod.
func startHTTPWith(t *testing.T, opts netio.HTTPOptions, mod func(*gstest.Config)) *httpServer {
	t.Helper()
	srv := gstest.Start(t, mod)
	addr, _ := gstest.Listen(t, "ServeHTTPFrontEnd", func(ctx context.Context, l net.Listener) error {
		return srv.Net.ServeHTTPFrontEnd(ctx, l, opts)
	})
	return &httpServer{Server: srv, HTTPAddr: addr, Base: "http://" + addr}
}

// newClient is a Go HTTP client that ignores proxy settings.
func newClient(t *testing.T) *http.Client {
	tr := &http.Transport{Proxy: nil, MaxIdleConnsPerHost: 16}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 15 * time.Second}
}

type httpResult struct {
	code int
	body string
	hdr  http.Header
	clen int64
	err  error
}

func (r httpResult) String() string {
	if r.err != nil {
		return "error " + r.err.Error()
	}
	return fmt.Sprintf("%d %q %v", r.code, r.body, r.hdr)
}

// do runs a request in a goroutine; the result arrives on the channel.
func do(c *http.Client, req *http.Request) <-chan httpResult {
	ch := make(chan httpResult, 1)
	go func() {
		resp, err := c.Do(req)
		if err != nil {
			ch <- httpResult{err: err}
			return
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		ch <- httpResult{code: resp.StatusCode, body: string(b), hdr: resp.Header, clen: resp.ContentLength, err: err}
	}()
	return ch
}

func newReq(t *testing.T, method, url, body string, hdr ...string) *http.Request {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		t.Fatalf("request: %v", err)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	return req
}

func wait(t *testing.T, ch <-chan httpResult) httpResult {
	t.Helper()
	select {
	case r := <-ch:
		if r.err != nil {
			t.Fatalf("HTTP request: %v", r.err)
		}
		return r
	case <-time.After(15 * time.Second):
		t.Fatalf("HTTP request did not finish")
	}
	return httpResult{}
}

// worker connects a raw worker that can do fns.
func worker(t *testing.T, srv *httpServer, fns ...string) *gstest.Conn {
	t.Helper()
	w := gstest.Dial(t, srv.Addr)
	for _, fn := range fns {
		w.Send(wire.CanDo, fn)
	}
	return w
}

// grabWait returns the next JOB_ASSIGN, sleeping (PRE_SLEEP/NOOP) while there
// is none.
func grabWait(t *testing.T, w *gstest.Conn) gstest.Packet {
	t.Helper()
	for {
		w.Send(wire.GrabJob)
		p, err := w.Read()
		if err != nil {
			t.Fatalf("grab: %v", err)
		}
		switch p.Type {
		case wire.JobAssign:
			return p
		case wire.NoJob:
			w.Send(wire.PreSleep)
			w.Expect(wire.Noop)
		default:
			t.Fatalf("grab: unexpected %v", p)
		}
	}
}

// grabExpect waits for the next job on w (see grabWait) and fails unless it
// is for fn with workload data. It returns the job's handle.
func grabExpect(t *testing.T, w *gstest.Conn, fn, data string) string {
	t.Helper()
	job := grabWait(t, w)
	if job.Fields[1] != fn || job.Fields[2] != data {
		t.Fatalf("worker got %v, want a job for %s with workload %q", job, fn, data)
	}
	return job.Fields[0]
}

func reverse(s string) string {
	b := []byte(s)
	for i, j := 0, len(b)-1; i < j; i, j = i+1, j-1 {
		b[i], b[j] = b[j], b[i]
	}
	return string(b)
}

// expectAdmin sends the admin command cmd on a and fails unless the reply
// is exactly want.
func expectAdmin(t *testing.T, a *gstest.Conn, cmd, want string) {
	t.Helper()
	if got := a.Admin(cmd); got != want {
		t.Fatalf("admin %s: got %q, want %q", cmd, got, want)
	}
}

// statusOf is the admin status line of fn without the name ("total
// running workers"), or "" when fn is not listed.
func statusOf(t *testing.T, a *gstest.Conn, cmd, fn string) string {
	t.Helper()
	for _, l := range strings.Split(a.Admin(cmd), "\n") {
		if rest, ok := strings.CutPrefix(l, fn+"\t"); ok {
			return rest
		}
	}
	return ""
}

func expectNoJobs(t *testing.T, srv *httpServer, fns ...string) {
	t.Helper()
	a := gstest.Dial(t, srv.Addr)
	for _, fn := range fns {
		if st := statusOf(t, a, "status", fn); st != "" && !strings.HasPrefix(st, "0\t") {
			t.Errorf("status of %s: %q, want no job", fn, st)
		}
	}
}

// The seed example: POST /reverse with "Hello world!".
func TestHTTPReverse(t *testing.T) {
	srv := startHTTP(t, netio.HTTPOptions{})
	c := newClient(t)
	w := worker(t, srv, "reverse")
	ch := do(c, newReq(t, "POST", srv.Base+"/reverse", "Hello world!"))
	h := grabExpect(t, w, "reverse", "Hello world!")
	w.Send(wire.WorkComplete, h, reverse("Hello world!"))
	r := wait(t, ch)
	if r.code != 200 || r.body != "!dlrow olleH" || r.clen != 12 {
		t.Fatalf("got %v (Content-Length %d), want 200 \"!dlrow olleH\"", r, r.clen)
	}
	if got := r.hdr.Get("X-Gearman-Job-Handle"); got != h {
		t.Errorf("X-Gearman-Job-Handle %q, want %q", got, h)
	}
}

// As in gearmand: the function is the request target as sent (leading
// slashes stripped, nothing decoded), a request without X-Gearman-Unique
// has the unique "-" (identical workloads share one job), and
// X-Gearman-Command names the packet that ended the request.
func TestHTTPGearmandNamingAndDefaultUnique(t *testing.T) {
	srv := startHTTP(t, netio.HTTPOptions{})
	c := newClient(t)
	bg := func(path, body string) httpResult {
		return wait(t, do(c, newReq(t, "POST", srv.Base+path, body, "X-Gearman-Background", "true")))
	}
	for _, path := range []string{"/f%20g", "//dbl", "/q?x=1"} {
		if r := bg(path, "x"); r.code != 200 || r.hdr.Get("X-Gearman-Command") != "JOB_CREATED" {
			t.Fatalf("%s: %v", path, r)
		}
	}
	a := gstest.Dial(t, srv.Addr)
	expectAdmin(t, a, "status", "dbl\t1\t0\t0\nf%20g\t1\t0\t0\nq?x=1\t1\t0\t0\n.\n")

	first, second := bg("/same", "payload"), bg("/same", "payload")
	if h1, h2 := first.hdr.Get("X-Gearman-Job-Handle"), second.hdr.Get("X-Gearman-Job-Handle"); h1 == "" || h1 != h2 {
		t.Fatalf("identical requests got handles %q and %q, want one job", h1, h2)
	}
	w := worker(t, srv, "same")
	w.Send(wire.GrabJobUniq)
	w.Expect(wire.JobAssignUniq, first.hdr.Get("X-Gearman-Job-Handle"), "same", "-", "payload")

	// The engine's bound on names holds here too.
	if r := bg("/"+strings.Repeat("n", engine.MaxFunctionName+1), "x"); r.code != http.StatusBadRequest || !strings.Contains(r.body, "INVALID_FUNCTION_NAME") {
		t.Fatalf("a name over the bound: %v, want 400", r)
	}
}

// The seed's background example: returns at once, with no worker
// connected, and queues the job at low priority.
func TestHTTPBackgroundLowPriority(t *testing.T) {
	srv := startHTTP(t, netio.HTTPOptions{})
	c := newClient(t)
	r := wait(t, do(c, newReq(t, "POST", srv.Base+"/reverse", "Hello world!",
		"X-Gearman-Background", "true", "X-Gearman-Priority", "low")))
	h := r.hdr.Get("X-Gearman-Job-Handle")
	if r.code != 200 || r.body != "" || r.clen != 0 || h == "" {
		t.Fatalf("got %v, want 200, empty body, a handle", r)
	}
	a := gstest.Dial(t, srv.Addr)
	expectAdmin(t, a, "prioritystatus", "reverse\t0\t0\t1\t0\n.\n") // one low job
	w := worker(t, srv, "reverse")
	if got := grabExpect(t, w, "reverse", "Hello world!"); got != h {
		t.Fatalf("worker got handle %s, want %s", got, h)
	}
	w.Send(wire.WorkComplete, h, "!dlrow olleH")
	gstest.Eventually(t, 5*time.Second, func() bool { return a.Admin("status") == "reverse\t0\t0\t1\n.\n" },
		"job not done")
}

func TestHTTPMethods(t *testing.T) {
	srv := startHTTP(t, netio.HTTPOptions{})
	c := newClient(t)
	w := worker(t, srv, "fn")

	// GET: empty workload.
	ch := do(c, newReq(t, "GET", srv.Base+"/fn", ""))
	h := grabExpect(t, w, "fn", "")
	w.Send(wire.WorkComplete, h, "got")
	if r := wait(t, ch); r.code != 200 || r.body != "got" || r.hdr.Get("X-Gearman-Job-Handle") != h {
		t.Fatalf("GET: %v", r)
	}

	// HEAD: a job, the result's length, no body.
	ch = do(c, newReq(t, "HEAD", srv.Base+"/fn", ""))
	h = grabExpect(t, w, "fn", "")
	w.Send(wire.WorkComplete, h, "three")
	if r := wait(t, ch); r.code != 200 || r.body != "" || r.clen != 5 || r.hdr.Get("X-Gearman-Job-Handle") != h {
		t.Fatalf("HEAD: %v, Content-Length %d", r, r.clen)
	}

	// PUT: the body is the workload.
	ch = do(c, newReq(t, "PUT", srv.Base+"/fn", "put-data"))
	h = grabExpect(t, w, "fn", "put-data")
	w.Send(wire.WorkComplete, h, "stored")
	if r := wait(t, ch); r.code != 200 || r.body != "stored" {
		t.Fatalf("PUT: %v", r)
	}

	// Other methods and the root path submit nothing.
	for _, m := range []string{"DELETE", "OPTIONS", "PATCH", "BREW"} {
		r := wait(t, do(c, newReq(t, m, srv.Base+"/fn", "x")))
		if r.code != 405 || !strings.Contains(r.body, "method not allowed") {
			t.Errorf("%s: %v, want 405", m, r)
		}
	}
	for _, m := range []string{"GET", "POST"} {
		r := wait(t, do(c, newReq(t, m, srv.Base+"/", "x")))
		if r.code != 404 || !strings.Contains(r.body, "/FUNCTION") {
			t.Errorf("%s /: %v, want 404", m, r)
		}
	}
	expectNoJobs(t, srv, "fn")
	expectNoJob(t, w)
}

// high, normal and low map to the three queues: a worker gets high first.
func TestHTTPPriorityOrder(t *testing.T) {
	srv := startHTTP(t, netio.HTTPOptions{})
	c := newClient(t)
	for _, p := range []string{"low", "", "normal", "HIGH", "Low", "high"} {
		r := wait(t, do(c, newReq(t, "POST", srv.Base+"/prio", "p="+p,
			"X-Gearman-Background", "TRUE", "X-Gearman-Priority", p)))
		if r.code != 200 || r.hdr.Get("X-Gearman-Job-Handle") == "" {
			t.Fatalf("priority %q: %v", p, r)
		}
	}
	a := gstest.Dial(t, srv.Addr)
	expectAdmin(t, a, "prioritystatus", "prio\t2\t2\t2\t0\n.\n") // 2 high, 2 normal, 2 low
	w := worker(t, srv, "prio")
	var order []string
	for range 6 {
		job := grabWait(t, w)
		order = append(order, job.Fields[2])
		w.Send(wire.WorkComplete, job.Fields[0], "")
	}
	want := []string{"p=HIGH", "p=high", "p=", "p=normal", "p=low", "p=Low"}
	if fmt.Sprint(order) != fmt.Sprint(want) {
		t.Fatalf("worker order %q, want %q", order, want)
	}

	// A foreground high job overtakes a queued normal one too.
	if r := wait(t, do(c, newReq(t, "POST", srv.Base+"/prio", "n", "X-Gearman-Background", "true"))); r.code != 200 {
		t.Fatalf("background normal: %v", r)
	}
	ch := do(c, newReq(t, "POST", srv.Base+"/prio", "h", "X-Gearman-Priority", "high"))
	gstest.Eventually(t, 5*time.Second, func() bool { return statusOf(t, a, "prioritystatus", "prio") == "1\t1\t0\t1" },
		"foreground high job not queued")
	h := grabExpect(t, w, "prio", "h") // the high job first
	w.Send(wire.WorkComplete, h, "H")
	if r := wait(t, ch); r.code != 200 || r.body != "H" {
		t.Fatalf("foreground high: %v", r)
	}
}

func TestHTTPBadHeaders(t *testing.T) {
	srv := startHTTP(t, netio.HTTPOptions{})
	c := newClient(t)
	for _, tc := range []struct{ hdr, val, want string }{
		{"X-Gearman-Background", "yes", "X-Gearman-Background"},
		{"X-Gearman-Background", "1", "X-Gearman-Background"},
		{"X-Gearman-Background", "truex", "X-Gearman-Background"},
		{"X-Gearman-Priority", "urgent", "X-Gearman-Priority"},
		{"X-Gearman-Priority", "0", "X-Gearman-Priority"},
		{"X-Gearman-Unique", strings.Repeat("u", 65), "X-Gearman-Unique"},
	} {
		for _, m := range []string{"GET", "POST"} {
			r := wait(t, do(c, newReq(t, m, srv.Base+"/bad", "w", tc.hdr, tc.val)))
			if r.code != 400 || !strings.Contains(r.body, tc.want) {
				t.Errorf("%s %s: %q: %v, want 400 naming the header", m, tc.hdr, tc.val, r)
			}
		}
	}
	expectNoJobs(t, srv, "bad")
	// The limits themselves are accepted.
	r := wait(t, do(c, newReq(t, "POST", srv.Base+"/bad", "w", "X-Gearman-Unique", strings.Repeat("u", 64),
		"X-Gearman-Background", "true")))
	if r.code != 200 {
		t.Fatalf("64-byte unique: %v", r)
	}
	expectAdmin(t, gstest.Dial(t, srv.Addr), "show unique jobs", strings.Repeat("u", 64)+"\n.\n")
}

func TestHTTPWorkFailExceptionData(t *testing.T) {
	srv := startHTTP(t, netio.HTTPOptions{})
	c := newClient(t)
	w := worker(t, srv, "f")

	ch := do(c, newReq(t, "POST", srv.Base+"/f", "x"))
	h := grabExpect(t, w, "f", "x")
	w.Send(wire.WorkFail, h)
	r := wait(t, ch)
	if r.code != 500 || !strings.Contains(r.body, "failed") || !strings.Contains(r.body, h) {
		t.Errorf("WORK_FAIL: %v, want 500 saying the job failed", r)
	}

	ch = do(c, newReq(t, "POST", srv.Base+"/f", "x"))
	h = grabExpect(t, w, "f", "x")
	w.Send(wire.WorkException, h, "boom: division by zero")
	r = wait(t, ch)
	if r.code != 500 || !strings.Contains(r.body, "boom: division by zero") {
		t.Errorf("WORK_EXCEPTION: %v, want 500 with the exception text", r)
	}

	ch = do(c, newReq(t, "POST", srv.Base+"/f", "x"))
	h = grabExpect(t, w, "f", "x")
	w.Send(wire.WorkData, h, "chunk1,")
	w.Send(wire.WorkStatus, h, "1", "3")
	w.Send(wire.WorkData, h, "chunk2,")
	w.Send(wire.WorkWarning, h, "careful")
	w.Send(wire.WorkData, h, "")
	w.Send(wire.WorkComplete, h, "end")
	r = wait(t, ch)
	if r.code != 200 || r.body != "chunk1,chunk2,end" || r.clen != int64(len("chunk1,chunk2,end")) {
		t.Errorf("WORK_DATA: %v, want 200 \"chunk1,chunk2,end\"", r)
	}
}

// A foreground result is collected before it is sent, so it is bounded
// like any output waiting for a reader (--max-output-bytes): past it the
// request gets 502, and the server goes on.
func TestHTTPResultBounded(t *testing.T) {
	srv := startHTTPWith(t, netio.HTTPOptions{}, func(c *gstest.Config) { c.Net.MaxOutput = 1 << 20 })
	c := newClient(t)
	w := worker(t, srv, "big")
	ch := do(c, newReq(t, "POST", srv.Base+"/big", "x"))
	h := grabExpect(t, w, "big", "x")
	chunk := strings.Repeat("d", 256<<10)
	for range 5 { // 1.25 MiB
		w.Send(wire.WorkData, h, chunk)
	}
	if r := wait(t, ch); r.code != http.StatusBadGateway || !strings.Contains(r.body, "--max-output-bytes") {
		t.Fatalf("a result over the limit: %v, want 502", r)
	}
	w.Send(wire.WorkComplete, h, "late") // the job ends; nobody waits for it

	expectResultServed(t, c, srv, w, "big", chunk)
}

// expectResultServed posts a job to fn, has worker w answer it with chunk
// as WORK_DATA and "!" to complete, and fails unless the request gets 200
// with the whole result.
func expectResultServed(t *testing.T, c *http.Client, srv *httpServer, w *gstest.Conn, fn, chunk string) {
	t.Helper()
	ch := do(c, newReq(t, "POST", srv.Base+"/"+fn, "y"))
	h := grabExpect(t, w, fn, "y")
	w.Send(wire.WorkData, h, chunk)
	w.Send(wire.WorkComplete, h, "!")
	if r := wait(t, ch); r.code != http.StatusOK || len(r.body) != len(chunk)+1 {
		t.Fatalf("a result that fits: %d, %d bytes", r.code, len(r.body))
	}
}

// HTTP requests share the buffer budget: a workload or a result that does
// not fit gets 503 and nothing is left counted or queued; one that fits is
// served; and a request's growth evicts a binary connection parked on more
// of the budget than it needs.
func TestHTTPBufferBudget(t *testing.T) {
	const budget = 1 << 20
	srv := startHTTPWith(t, netio.HTTPOptions{MaxBody: 4 << 20}, func(c *gstest.Config) {
		c.Net.MaxBuffered = budget
		c.Net.MaxPacket = 4 << 20
	})
	c := newClient(t)
	bg := []string{"X-Gearman-Background", "true"}
	r := wait(t, do(c, newReq(t, "POST", srv.Base+"/budget", strings.Repeat("b", 2<<20), bg...)))
	if r.code != http.StatusServiceUnavailable || !strings.Contains(r.body, "--max-buffered-bytes") {
		t.Fatalf("a body larger than the budget: %v, want 503", r)
	}
	if n := srv.Net.BufferCutoffs(); n != 1 {
		t.Fatalf("BufferCutoffs() = %d, want 1", n)
	}
	gstest.Eventually(t, 5*time.Second, func() bool { return srv.Net.BufferedBytes() == 0 },
		"%d bytes still counted after the refused body", srv.Net.BufferedBytes())
	expectNoJobs(t, srv, "budget")

	// A binary connection parks most of the budget in a packet it never
	// completes; a body that fits beside nothing else evicts it.
	hog := gstest.Dial(t, srv.Addr)
	hog.Write(partialEcho(1<<20, 900<<10))
	gstest.Eventually(t, 10*time.Second, func() bool { return srv.Net.BufferedBytes() > 800<<10 },
		"the parked packet is not counted: %d", srv.Net.BufferedBytes())
	r = wait(t, do(c, newReq(t, "POST", srv.Base+"/budget", strings.Repeat("b", 700<<10), bg...)))
	if r.code != http.StatusOK || r.hdr.Get("X-Gearman-Job-Handle") == "" {
		t.Fatalf("a body that fits once the hog goes: %v, want 200 with a handle", r)
	}
	hog.TO = 10 * time.Second
	expectBudgetError(t, hog, "the parked binary connection")
	if n := srv.Net.BufferCutoffs(); n != 2 {
		t.Fatalf("BufferCutoffs() = %d, want 2", n)
	}

	// A result is collected before it is sent: past the budget, 503.
	w := worker(t, srv, "budget_result")
	ch := do(c, newReq(t, "POST", srv.Base+"/budget_result", "x"))
	h := grabExpect(t, w, "budget_result", "x")
	chunk := strings.Repeat("d", 60<<10) // under a connection's free 64 KiB: the worker's input is never counted
	for range 25 {                       // 1.5 MiB
		w.Send(wire.WorkData, h, chunk)
	}
	if r := wait(t, ch); r.code != http.StatusServiceUnavailable || !strings.Contains(r.body, "result") {
		t.Fatalf("a result larger than the budget: %v, want 503", r)
	}
	w.Send(wire.WorkComplete, h, "") // the job ends; nobody waits for it
	gstest.Eventually(t, 5*time.Second, func() bool { return srv.Net.BufferedBytes() == 0 },
		"%d bytes still counted after the refused result", srv.Net.BufferedBytes())
	expectResultServed(t, c, srv, w, "budget_result", chunk)
}

// Two requests on one HTTP/1.1 connection.
func TestHTTPKeepAlive(t *testing.T) {
	srv := startHTTP(t, netio.HTTPOptions{})
	var dials atomic.Int32
	tr := &http.Transport{Proxy: nil, DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
		dials.Add(1)
		var d net.Dialer
		return d.DialContext(ctx, network, addr)
	}}
	t.Cleanup(tr.CloseIdleConnections)
	c := &http.Client{Transport: tr, Timeout: 15 * time.Second}
	w := worker(t, srv, "ka")
	for i := range 2 {
		var reused atomic.Bool
		req := newReq(t, "POST", srv.Base+"/ka", "req"+strconv.Itoa(i))
		req = req.WithContext(httptrace.WithClientTrace(req.Context(), &httptrace.ClientTrace{
			GotConn: func(info httptrace.GotConnInfo) { reused.Store(info.Reused) },
		}))
		ch := do(c, req)
		h := grabExpect(t, w, "ka", "req"+strconv.Itoa(i))
		want := reverse("req" + strconv.Itoa(i))
		w.Send(wire.WorkComplete, h, want)
		if r := wait(t, ch); r.code != 200 || r.body != want {
			t.Fatalf("request %d: %v, want %q", i, r, want)
		}
		if i == 1 && !reused.Load() {
			t.Errorf("second request did not reuse the connection")
		}
	}
	if n := dials.Load(); n != 1 {
		t.Errorf("%d dials for two requests, want 1", n)
	}
}

// An HTTP/1.0 request, written by hand, gets an HTTP/1.x answer and the
// connection closes after it.
func TestHTTP10(t *testing.T) {
	srv := startHTTP(t, netio.HTTPOptions{})
	w := worker(t, srv, "f")
	conn := gstest.Dial(t, srv.HTTPAddr).Raw()
	if _, err := conn.Write([]byte("POST /f HTTP/1.0\r\nContent-Length: 5\r\n\r\nhello")); err != nil {
		t.Fatal(err)
	}
	h := grabExpect(t, w, "f", "hello")
	w.Send(wire.WorkComplete, h, "olleh")
	_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("response: %v", err)
	}
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != 200 || string(body) != "olleh" || resp.Header.Get("X-Gearman-Job-Handle") != h {
		t.Fatalf("got %d %q %v (%v)", resp.StatusCode, body, resp.Header, err)
	}
	if resp.ProtoMajor != 1 {
		t.Errorf("proto %s", resp.Proto)
	}
	if n, err := br.Read(make([]byte, 1)); n != 0 || err == nil || isTimeout(err) {
		t.Errorf("HTTP/1.0 connection still open after the response: %d, %v", n, err)
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// An HTTP client and a binary client with the same unique key share one
// job, counted once by status, and both get its result.
func TestHTTPCoalesceWithBinaryClient(t *testing.T) {
	srv := startHTTP(t, netio.HTTPOptions{})
	c := newClient(t)
	a := gstest.Dial(t, srv.Addr)
	ch := do(c, newReq(t, "POST", srv.Base+"/co", "from-http", "X-Gearman-Unique", "same"))
	gstest.Eventually(t, 5*time.Second, func() bool { return statusOf(t, a, "status", "co") == "1\t0\t0" },
		"status does not count the queued HTTP job")
	bin := gstest.Dial(t, srv.Addr)
	bin.Send(wire.SubmitJob, "co", "same", "from-binary")
	h := bin.Expect(wire.JobCreated).Fields[0]
	expectAdmin(t, a, "status", "co\t1\t0\t0\n.\n")  // one job after the binary submit
	expectAdmin(t, a, "jobs", "co\tsame\t-\t2\n.\n") // with two listeners
	w := worker(t, srv, "co")
	// The first submitter's workload.
	if got := grabExpect(t, w, "co", "from-http"); got != h {
		t.Fatalf("worker got handle %s, want %s", got, h)
	}
	w.Send(wire.WorkComplete, h, "shared result")
	bin.Expect(wire.WorkComplete, h, "shared result")
	r := wait(t, ch)
	if r.code != 200 || r.body != "shared result" || r.hdr.Get("X-Gearman-Job-Handle") != h {
		t.Fatalf("HTTP: %v, want 200 \"shared result\" with handle %s", r, h)
	}
	expectNoJob(t, w)
}

// The seed examples through curl.
func TestHTTPCurl(t *testing.T) {
	const curl = "/usr/bin/curl"
	if _, err := os.Stat(curl); err != nil {
		t.Fatalf("%s: %v (install the Debian package curl)", curl, err)
	}
	srv := startHTTP(t, netio.HTTPOptions{})
	run := func(hdrFile string, args ...string) <-chan string {
		ch := make(chan string, 1)
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			all := append([]string{"-sS", "--noproxy", "*", "--max-time", "10", "-D", hdrFile}, args...)
			cmd := exec.CommandContext(ctx, curl, all...)
			cmd.Env = append(os.Environ(), "http_proxy=", "HTTP_PROXY=", "all_proxy=", "ALL_PROXY=")
			out, err := cmd.Output()
			if err != nil {
				var ee *exec.ExitError
				if errors.As(err, &ee) {
					err = fmt.Errorf("%v: %s", err, ee.Stderr)
				}
				ch <- "curl failed: " + err.Error()
				return
			}
			ch <- string(out)
		}()
		return ch
	}
	headers := func(file string) (int, http.Header) {
		b, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := http.ReadResponse(bufio.NewReader(strings.NewReader(string(b))), nil)
		if err != nil {
			t.Fatalf("curl headers %q: %v", b, err)
		}
		return resp.StatusCode, resp.Header
	}
	recv := func(ch <-chan string) string {
		select {
		case s := <-ch:
			return s
		case <-time.After(15 * time.Second):
			t.Fatal("curl did not finish")
		}
		return ""
	}
	dir := t.TempDir()

	w := worker(t, srv, "reverse")
	hf := filepath.Join(dir, "fg")
	ch := run(hf, "--data-binary", "Hello world!", srv.Base+"/reverse")
	handle := grabExpect(t, w, "reverse", "Hello world!")
	w.Send(wire.WorkComplete, handle, reverse("Hello world!"))
	if out := recv(ch); out != "!dlrow olleH" {
		t.Fatalf("curl output %q, want \"!dlrow olleH\"", out)
	}
	if code, h := headers(hf); code != 200 || h.Get("X-Gearman-Job-Handle") != handle {
		t.Fatalf("curl: %d %v", code, h)
	}

	// Background, low priority: no worker asks for it yet.
	w.Send(wire.CantDo, "reverse")
	hf = filepath.Join(dir, "bg")
	out := recv(run(hf, "--data-binary", "Hello world!", "-H", "X-Gearman-Background: true",
		"-H", "X-Gearman-Priority: low", srv.Base+"/reverse"))
	code, h := headers(hf)
	if out != "" || code != 200 || h.Get("X-Gearman-Job-Handle") == "" {
		t.Fatalf("curl background: %d %q %v", code, out, h)
	}
	expectAdmin(t, gstest.Dial(t, srv.Addr), "prioritystatus", "reverse\t0\t0\t1\t0\n.\n") // one low job
}

// rawExchange writes req on a new connection and reads until the server
// closes it or timeout passes. closed is false on a timeout.
func rawExchange(addr string, req []byte, halfClose bool, timeout time.Duration) (got []byte, closed bool, err error) {
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return nil, false, err
	}
	defer conn.Close()
	_, _ = conn.Write(req) // the server may close early
	if halfClose {
		_ = conn.(*net.TCPConn).CloseWrite()
	}
	_ = conn.SetReadDeadline(time.Now().Add(timeout))
	got, err = io.ReadAll(conn)
	if isTimeout(err) {
		return got, false, nil
	}
	return got, true, nil // EOF or reset: closed
}

// statusCode is the code of a raw HTTP response, or 0.
func statusCode(resp []byte) int {
	line, _, _ := strings.Cut(string(resp), "\r\n")
	f := strings.Fields(line)
	if len(f) < 2 || !strings.HasPrefix(f[0], "HTTP/1.") {
		return 0
	}
	n, _ := strconv.Atoi(f[1])
	return n
}

// checkServes submits a foreground job and checks its result.
func checkServes(t *testing.T, srv *httpServer, c *http.Client) {
	t.Helper()
	w := worker(t, srv, "alive")
	ch := do(c, newReq(t, "POST", srv.Base+"/alive", "ping"))
	h := grabExpect(t, w, "alive", "ping")
	w.Send(wire.WorkComplete, h, "pong")
	if r := wait(t, ch); r.code != 200 || r.body != "pong" {
		t.Fatalf("normal job after the attack: %v", r)
	}
	w.Send(wire.CantDo, "alive")
}

// Seed 000: gearmand looped on the request line "AAA".
func TestHTTPMalformedRequestLine(t *testing.T) {
	srv := startHTTP(t, netio.HTTPOptions{})
	for _, req := range []string{"AAA\r\n\r\n", "AAA\n\n", "GET\r\n\r\n", "GET /f\r\n\r\n", "GET /f HTTP/9.9\r\n\r\n", "\r\n\r\n"} {
		resp, closed, err := rawExchange(srv.HTTPAddr, []byte(req), false, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if code := statusCode(resp); code != 400 && code != 505 || !closed {
			t.Errorf("%q: got %q, closed %v; want 400 and a closed connection", req, resp, closed)
		}
	}
	checkServes(t, srv, newClient(t))
	expectNoJobs(t, srv, "f")
}

// 200 connections of random garbage, then 2,000 requests: every garbage
// connection gets a 4xx or a close, the server still serves jobs and its
// heap stays bounded.
func TestHTTPGarbageFloodAndHeap(t *testing.T) {
	srv := startHTTP(t, netio.HTTPOptions{MaxHeader: 4096, MaxBody: 64 << 10, ReadTimeout: 2 * time.Second})
	const seed = 20261121 // fixed, so a failure can be replayed
	t.Logf("garbage seed %d", seed)
	rng := rand.New(rand.NewSource(seed))
	const conns = 200
	reqs := make([][]byte, conns)
	for i := range reqs {
		b := make([]byte, 1+rng.Intn(12<<10))
		switch i % 4 {
		case 0, 1: // any bytes
			rng.Read(b)
		case 2: // printable lines
			for j := range b {
				b[j] = byte(' ' + rng.Intn(95))
				if rng.Intn(40) == 0 {
					b[j] = '\n'
				}
			}
		case 3: // a plausible start, then garbage
			rng.Read(b)
			b = append([]byte([]string{"GET /", "POST /x HTTP/1.1\r\n", "AAA", "HEAD / HTTP/1.0\r\nX"}[rng.Intn(4)]), b...)
		}
		reqs[i] = b
	}
	type outcome struct {
		resp   []byte
		closed bool
		err    error
	}
	outs := make([]outcome, conns)
	var wg sync.WaitGroup
	sem := make(chan struct{}, 50)
	for i := range reqs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			r, closed, err := rawExchange(srv.HTTPAddr, reqs[i], true, 5*time.Second)
			outs[i] = outcome{r, closed, err}
		}()
	}
	wg.Wait()
	var responses, closes int
	for i, o := range outs {
		switch code := statusCode(o.resp); {
		case o.err != nil:
			t.Errorf("connection %d: %v", i, o.err)
		case !o.closed:
			t.Errorf("connection %d (%q...): not closed within 5 s, got %q", i, reqs[i][:min(40, len(reqs[i]))], o.resp)
		case len(o.resp) == 0:
			closes++
		case code >= 400 && code < 500:
			responses++
		default:
			t.Errorf("connection %d (%q...): got %q, want a 4xx or a close", i, reqs[i][:min(40, len(reqs[i]))], o.resp)
		}
	}
	t.Logf("%d garbage connections: %d got a 4xx, %d were closed without one", conns, responses, closes)
	c := newClient(t)
	checkServes(t, srv, c)

	// 2,000 requests: background jobs with 1 KiB workloads, and refusals.
	body := strings.Repeat("w", 1024)
	errs := make(chan string, 2000)
	var next atomic.Int32
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= 2000 {
					return
				}
				var req *http.Request
				want := 200
				switch i % 4 {
				case 0, 1:
					req, _ = http.NewRequest("POST", srv.Base+"/heap", strings.NewReader(body))
					req.Header.Set("X-Gearman-Background", "true")
					req.Header.Set("X-Gearman-Unique", "heap-"+strconv.Itoa(i)) // else the same body is the same job
				case 2:
					req, _ = http.NewRequest("DELETE", srv.Base+"/heap", nil)
					want = 405
				case 3:
					req, _ = http.NewRequest("POST", srv.Base+"/heap", strings.NewReader(body))
					req.Header.Set("X-Gearman-Priority", "bogus")
					want = 400
				}
				resp, err := c.Do(req)
				if err != nil {
					errs <- err.Error()
					continue
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != want {
					errs <- fmt.Sprintf("request %d: %d, want %d", i, resp.StatusCode, want)
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
	a := gstest.Dial(t, srv.Addr)
	if got := statusOf(t, a, "status", "heap"); got != "1000\t0\t0" {
		t.Errorf("status heap %q, want 1000 queued", got)
	}
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	t.Logf("HeapInuse %d MiB after the flood and 2,000 requests", ms.HeapInuse>>20)
	if ms.HeapInuse > 200<<20 {
		t.Errorf("HeapInuse %d MiB, want under 200 MiB", ms.HeapInuse>>20)
	}
	checkServes(t, srv, c)
}

// --http-max-header bounds the request line and headers exactly, below
// and above net/http's own 4 KiB of read-ahead slack: a header a few bytes
// over the limit gets 431 and a close, one a few bytes under is served.
func TestHTTPOversizedHeader(t *testing.T) {
	for _, limit := range []int{1024, 8192} {
		srv := startHTTP(t, netio.HTTPOptions{MaxHeader: limit})
		request := func(pad int) string {
			return "POST /big HTTP/1.1\r\nHost: x\r\nX-Gearman-Background: true\r\nX-Pad: " + strings.Repeat("p", pad) + "\r\nContent-Length: 1\r\n\r\nx"
		}
		// The request without the pad's bytes and the body's "x".
		base := len(request(0)) - 1
		for _, c := range []struct {
			pad  int
			code int
		}{{limit - base + 8, 431}, {limit - base - 8, 200}, {16 << 10, 431}} {
			// Served: the client's half-close ends the connection at once.
			resp, closed, err := rawExchange(srv.HTTPAddr, []byte(request(c.pad)), c.code == 200, 5*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			if statusCode(resp) != c.code || (c.code == 431 && !closed) {
				t.Fatalf("limit %d, header of %d bytes: got %q, closed %v; want %d", limit, base+c.pad, resp, closed, c.code)
			}
		}
		a := gstest.Dial(t, srv.Addr)
		if got := statusOf(t, a, "status", "big"); got != "1\t0\t0" {
			t.Fatalf("limit %d: status big %q, want only the accepted job", limit, got)
		}
	}
}

func TestHTTPOversizedBody(t *testing.T) {
	srv := startHTTP(t, netio.HTTPOptions{MaxBody: 1024})
	c := newClient(t)
	for _, n := range []int{1025, 64 << 10} {
		r := wait(t, do(c, newReq(t, "POST", srv.Base+"/big", strings.Repeat("b", n), "X-Gearman-Background", "true")))
		if r.code != 413 || !strings.Contains(r.body, "1024") {
			t.Errorf("%d-byte body: %v, want 413", n, r)
		}
	}
	// Chunked, no Content-Length.
	req := newReq(t, "PUT", srv.Base+"/big", "", "X-Gearman-Background", "true")
	req.Body = io.NopCloser(strings.NewReader(strings.Repeat("c", 4096)))
	req.ContentLength = -1
	if r := wait(t, do(c, req)); r.code != 413 {
		t.Errorf("chunked 4 KiB body: %v, want 413", r)
	}
	// A Content-Length over the limit is refused from the header, before
	// any body (here none comes, and the server's body timeout is 30 s).
	resp, closed, err := rawExchange(strings.TrimPrefix(srv.Base, "http://"),
		[]byte("POST /big HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999\r\n\r\n"), false, 10*time.Second)
	if err != nil || statusCode(resp) != 413 || !closed {
		t.Errorf("announced 99999999999-byte body: %q, closed %v, %v; want 413 and a close", resp, closed, err)
	}
	expectNoJobs(t, srv, "big")
	r := wait(t, do(c, newReq(t, "POST", srv.Base+"/big", strings.Repeat("b", 1024), "X-Gearman-Background", "true")))
	if r.code != 200 {
		t.Fatalf("1024-byte body: %v, want 200", r)
	}
}

// Slow senders are cut off after ReadTimeout.
func TestHTTPSlowSender(t *testing.T) {
	const readTimeout = 300 * time.Millisecond
	srv := startHTTP(t, netio.HTTPOptions{ReadTimeout: readTimeout})
	for _, tc := range []struct{ name, part string }{
		{"headers", "POST /slow HTTP/1.1\r\nHost: x\r\nContent-Le"},
		{"body", "POST /slow HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n0123456789"},
		{"trickle", ""},
	} {
		conn := gstest.Dial(t, srv.HTTPAddr).Raw()
		start := time.Now()
		if tc.part != "" {
			if _, err := conn.Write([]byte(tc.part)); err != nil {
				t.Fatal(err)
			}
		} else {
			// One header byte every 50 ms: each write is "activity", but
			// the whole request must still arrive within ReadTimeout.
			go func() {
				msg := "GET /slow HTTP/1.1\r\nHost: x\r\nX-Long: " + strings.Repeat("z", 60)
				for i := range len(msg) {
					if _, err := conn.Write([]byte{msg[i]}); err != nil {
						return
					}
					time.Sleep(50 * time.Millisecond)
				}
			}()
		}
		_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		got, err := io.ReadAll(conn)
		elapsed := time.Since(start)
		if isTimeout(err) {
			t.Errorf("%s: connection still open after %v (got %q)", tc.name, elapsed, got)
			continue
		}
		if code := statusCode(got); len(got) > 0 && (code < 400 || code >= 500) {
			t.Errorf("%s: got %q, want a 4xx or a close", tc.name, got)
		}
		if elapsed < readTimeout-50*time.Millisecond || elapsed > 3*time.Second {
			t.Errorf("%s: cut off after %v, want about %v", tc.name, elapsed, readTimeout)
		}
		t.Logf("%s: %q, closed after %v", tc.name, got, elapsed.Round(time.Millisecond))
	}
	expectNoJobs(t, srv, "slow")
	checkServes(t, srv, newClient(t))
}

// A foreground request whose client leaves before any worker exists: the
// job loses its only listener and is dropped.
func TestHTTPClientGoneReleasesJob(t *testing.T) {
	clientGone(t, []string{
		"POST /gone HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc",
		"GET /gone HTTP/1.1\r\nHost: x\r\n\r\n",
		"PUT /gone HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
		"POST /gone HTTP/1.0\r\nContent-Length: 3\r\n\r\nabc",
	})
}

// GET and HEAD ignore a request body, but must still notice the client
// leaving. net/http watches for the client closing only once the handler
// has read the body to its end; a handler that never reads it never sees
// the request's context end.
func TestHTTPClientGoneIgnoredBody(t *testing.T) {
	clientGone(t, []string{
		"GET /gone HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc",
		"HEAD /gone HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
	})
}

func clientGone(t *testing.T, reqs []string) {
	srv := startHTTP(t, netio.HTTPOptions{})
	a := gstest.Dial(t, srv.Addr)
	for _, req := range reqs {
		conn, err := net.Dial("tcp", srv.HTTPAddr)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := conn.Write([]byte(req)); err != nil {
			t.Fatal(err)
		}
		gstest.Eventually(t, 5*time.Second, func() bool { return statusOf(t, a, "status", "gone") == "1\t0\t0" },
			"%q: job not queued", req)
		conn.Close()
		gstest.Eventually(t, 3*time.Second, func() bool {
			st := statusOf(t, a, "status", "gone")
			return st == "" || strings.HasPrefix(st, "0\t")
		}, "%q: job still queued 3 s after its HTTP client left", req)
		expectAdmin(t, a, "jobs", ".\n") // no job left after the client went
	}
	expectNoJob(t, worker(t, srv, "gone"))
}

// A foreground job that runs longer than ReadTimeout still answers: the
// timeout bounds reading the request, not the job.
func TestHTTPJobLongerThanReadTimeout(t *testing.T) {
	const readTimeout = 300 * time.Millisecond
	srv := startHTTP(t, netio.HTTPOptions{ReadTimeout: readTimeout})
	c := newClient(t)
	w := worker(t, srv, "long")
	for _, m := range []string{"POST", "GET"} {
		ch := do(c, newReq(t, m, srv.Base+"/long", "x"))
		job := grabWait(t, w)
		time.Sleep(2 * readTimeout) // the job takes a while
		w.Send(wire.WorkComplete, job.Fields[0], "late result")
		if r := wait(t, ch); r.code != 200 || r.body != "late result" {
			t.Errorf("%s job running %v with ReadTimeout %v: got %v, want 200 \"late result\"", m, 2*readTimeout, readTimeout, r)
		}
	}
}

// linesWith is how many of log's lines hold every one of parts.
func linesWith(log string, parts ...string) int {
	n := 0
	for _, line := range strings.Split(log, "\n") {
		all := line != ""
		for _, p := range parts {
			all = all && strings.Contains(line, p)
		}
		if all {
			n++
		}
	}
	return n
}

// Every front end logs one line at INFO when a connection opens and one
// when it closes, with the peer: the Gearman port, HTTP and TLS alike.
func TestConnectionsLogged(t *testing.T) {
	var logs gstest.LockedBuffer
	srv := startHTTPWith(t, netio.HTTPOptions{}, func(c *gstest.Config) {
		c.Net.Log = zerolog.New(&logs).Level(zerolog.InfoLevel)
	})
	_, dialTLS := startTLS(t, 1, netio.Options{MaxConns: 10}, &logs)

	gearman, err := net.Dial("tcp", srv.Addr)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := gearman.Write([]byte("version\n")); err != nil {
		t.Fatal(err)
	}
	if _, err := bufio.NewReader(gearman).ReadString('\n'); err != nil {
		t.Fatal(err)
	}
	gearman.Close()
	resp, closed, err := rawExchange(srv.HTTPAddr, []byte("GET /f HTTP/1.1\r\nHost: x\r\nX-Gearman-Background: true\r\n\r\n"), true, 5*time.Second)
	if err != nil || statusCode(resp) != 200 || !closed {
		t.Fatalf("HTTP request: %q, closed %v, %v", resp, closed, err)
	}
	tc := dialTLS()
	if _, err := tc.Write([]byte("version\n")); err != nil {
		t.Fatal(err)
	}
	if _, err := bufio.NewReader(tc).ReadString('\n'); err != nil {
		t.Fatal(err)
	}
	tc.Close()

	peer := `"peer":"127.0.0.1"`
	for _, kind := range []struct{ name, mark string }{{"Gearman", `"fd":`}, {"HTTP", `"http":true`}, {"TLS", `"tls":true`}} {
		for _, msg := range []string{"connection opened", "connection closed"} {
			gstest.Eventually(t, 10*time.Second, func() bool { return linesWith(logs.String(), kind.mark, peer, msg) == 1 },
				"%s: want one %q line with the peer; log:\n%s", kind.name, msg, logs.String())
		}
	}
}

// During a graceful shutdown the HTTP front end, like the Gearman port,
// closes new connections at once and still serves the open ones.
func TestHTTPDuringDrain(t *testing.T) {
	srv := startHTTP(t, netio.HTTPOptions{})
	req := "GET /drainfn HTTP/1.1\r\nHost: x\r\nX-Gearman-Background: true\r\n\r\n"
	open, err := net.Dial("tcp", srv.HTTPAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer open.Close()
	r := bufio.NewReader(open)
	exchange := func() {
		t.Helper()
		if _, err := open.Write([]byte(req)); err != nil {
			t.Fatal(err)
		}
		resp, err := http.ReadResponse(r, nil)
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("open connection: %v, %v; want 200", resp, err)
		}
		resp.Body.Close()
	}
	exchange()
	a := gstest.Dial(t, srv.Addr) // open before the drain: new ones are closed
	if got := statusOf(t, a, "status", "drainfn"); got != "1\t0\t0" {
		t.Fatalf("status drainfn %q, want the first job", got)
	}
	srv.Net.Drain()
	resp, closed, err := rawExchange(srv.HTTPAddr, []byte(req), false, 5*time.Second)
	if err != nil || len(resp) != 0 || !closed {
		t.Fatalf("new connection while draining: %q, closed %v, %v; want closed with no reply", resp, closed, err)
	}
	exchange()
	if got := statusOf(t, a, "status", "drainfn"); got != "2\t0\t0" {
		t.Fatalf("status drainfn %q, want the open connection's two jobs", got)
	}
}
