package netio

import (
	"context"
	"errors"
	"fmt"
	"io"
	stdlog "log"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"gearshard/engine"
	"gearshard/wire"
)

// HTTPOptions configure the HTTP front end (gearmand's -r http).
type HTTPOptions struct {
	MaxBody     int64         // request body limit (the workload)
	MaxHeader   int           // request header limit
	ReadTimeout time.Duration // whole request, headers and body, must arrive within this
	IdleTimeout time.Duration // keep-alive connections idle longer are closed
}

// DefaultHTTPOptions are the limits used when a field is zero.
var DefaultHTTPOptions = HTTPOptions{
	MaxBody:     16 << 20,
	MaxHeader:   16 << 10,
	ReadTimeout: 30 * time.Second,
	IdleTimeout: 120 * time.Second,
}

// HTTP headers of gearmand's HTTP protocol module.
const (
	headerUnique     = "X-Gearman-Unique"
	headerBackground = "X-Gearman-Background"
	headerPriority   = "X-Gearman-Priority"
	headerHandle     = "X-Gearman-Job-Handle"
	headerCommand    = "X-Gearman-Command" // the packet that ended the request
)

// jobRequest is what an HTTP request asks for.
type jobRequest struct {
	function   string
	unique     string
	background bool
	priority   engine.Priority
	data       []byte
}

// errStatus is a request the front end refuses, with its HTTP status.
type errStatus struct {
	code int
	msg  string
}

func (e *errStatus) Error() string { return e.msg }

// mapRequest turns a request line and headers into a job. The function is
// the request target as sent, leading slashes stripped, nothing decoded
// (gearmand's names: "/a%20b?x" is "a%20b?x"). With no X-Gearman-Unique the
// unique is "-", gearmand's "the workload is the key": identical requests
// share one job. The body is read separately (bounded) by the caller: POST
// and PUT carry the workload, GET and HEAD have none.
func mapRequest(method, target string, h http.Header) (jobRequest, error) {
	var j jobRequest
	switch method {
	case http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut:
	default:
		return j, &errStatus{http.StatusMethodNotAllowed, "method not allowed: use GET, HEAD, POST or PUT"}
	}
	j.function = strings.TrimLeft(target, "/")
	if j.function == "" {
		return j, &errStatus{http.StatusNotFound, "no function: the path is /FUNCTION"}
	}
	if strings.IndexByte(j.function, 0) >= 0 { // the engine bounds the length (INVALID_FUNCTION_NAME → 400)
		return j, &errStatus{http.StatusBadRequest, "bad function name"}
	}
	j.unique = "-"
	if v := h.Values(headerUnique); len(v) > 0 {
		j.unique = v[0]
	}
	if len(j.unique) > engine.MaxUnique || strings.IndexByte(j.unique, 0) >= 0 {
		return j, &errStatus{http.StatusBadRequest, "bad " + headerUnique + ": at most 64 bytes, no NUL"}
	}
	switch bg := h.Get(headerBackground); asciiLower(bg) {
	case "", "false":
	case "true":
		j.background = true
	default:
		return j, &errStatus{http.StatusBadRequest, "bad " + headerBackground + ": true or false"}
	}
	switch p := h.Get(headerPriority); asciiLower(p) {
	case "", "normal":
		j.priority = engine.Normal
	case "high":
		j.priority = engine.High
	case "low":
		j.priority = engine.Low
	default:
		return j, &errStatus{http.StatusBadRequest, "bad " + headerPriority + ": high, normal or low"}
	}
	return j, nil
}

// asciiLower lower-cases ASCII letters only, so that no other spelling
// (Unicode case folding) passes for a header value.
func asciiLower(v string) string {
	b := []byte(v)
	for i, c := range b {
		if 'A' <= c && c <= 'Z' {
			b[i] = c + 'a' - 'A'
		}
	}
	return string(b)
}

// submitType is the SUBMIT_* packet for a job request.
func (j *jobRequest) submitType() wire.Type {
	types := [2][3]wire.Type{
		{wire.SubmitJobHigh, wire.SubmitJob, wire.SubmitJobLow},
		{wire.SubmitJobHighBG, wire.SubmitJobBG, wire.SubmitJobLowBG},
	}
	bg := 0
	if j.background {
		bg = 1
	}
	return types[bg][j.priority]
}

// httpJob is the engine session of one HTTP request: the engine writes its
// packets into the session's outbox as to any client, and flush hands
// them to the waiting handler.
type httpJob struct {
	sess *engine.Session
	mu   sync.Mutex
	got  []packetCopy
	wake chan struct{} // 1 slot: something arrived
}

// packetCopy is a response packet the handler reads after the outbox
// buffer has been reused.
type packetCopy struct {
	typ    wire.Type
	fields [][]byte
}

// flush decodes what the engine queued for the request (any goroutine).
func (h *httpJob) flush() {
	h.sess.WriteOutput(func(p []byte) int {
		used := 0
		for used < len(p) {
			pk, n, err := wire.Decode(p[used:], 1<<31-1)
			if err != nil || n == 0 {
				break
			}
			c := packetCopy{typ: pk.Type}
			for i := 0; i < pk.NField; i++ {
				c.fields = append(c.fields, append([]byte(nil), pk.Field[i]...))
			}
			h.mu.Lock()
			h.got = append(h.got, c)
			h.mu.Unlock()
			used += n
		}
		select {
		case h.wake <- struct{}{}:
		default:
		}
		return used
	})
}

// next waits for the next packet, or the request's end.
func (h *httpJob) next(ctx context.Context) (packetCopy, error) {
	for {
		h.mu.Lock()
		if len(h.got) > 0 {
			p := h.got[0]
			h.got = h.got[1:]
			h.mu.Unlock()
			return p, nil
		}
		h.mu.Unlock()
		select {
		case <-h.wake:
		case <-ctx.Done():
			return packetCopy{}, ctx.Err()
		}
	}
}

func errBodyTooLarge(limit int64) error {
	return &errStatus{http.StatusRequestEntityTooLarge, fmt.Sprintf("body over %d bytes", limit)}
}

// ServeHTTP maps the request to a job through the same shards as binary
// clients: a foreground job answers with its result, a background one
// with its handle at once.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if headerSize(r) > s.httpOpts.MaxHeader {
		w.Header().Set("Connection", "close") // the body, if any, is not read
		http.Error(w, fmt.Sprintf("request header over %d bytes", s.httpOpts.MaxHeader), http.StatusRequestHeaderFieldsTooLarge)
		return
	}
	// The workload while it arrives, then the result while it is
	// collected, count toward the buffer budget as a connection's buffers
	// do. An HTTP request is not evicted for others (it has its own time
	// limit), but its growth may evict a larger holder.
	var acct engine.BufferAccount
	acct.Bind(s.budget, nil)
	defer acct.Set(0)
	req, err := mapRequest(r.Method, r.RequestURI, r.Header)
	if err == nil && r.ContentLength > s.httpOpts.MaxBody {
		// Refused from the header, without waiting for a body that may
		// never come; the unread body rules out another request on it.
		w.Header().Set("Connection", "close")
		err = errBodyTooLarge(s.httpOpts.MaxBody)
	} else if err == nil {
		// The body is read to its end even where it is not the workload
		// (GET, HEAD): only then does net/http watch for the client
		// leaving, which is what releases a job nobody waits for.
		body := http.MaxBytesReader(w, r.Body, s.httpOpts.MaxBody)
		if r.Method == http.MethodPost || r.Method == http.MethodPut {
			req.data, err = readCounted(body, &acct)
		} else {
			_, err = io.Copy(io.Discard, body)
		}
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			err = errBodyTooLarge(tooBig.Limit)
		} else if errors.Is(err, errHTTPBudget) {
			// The rest is read and dropped (MaxBody bounds it), so that the
			// client gets the answer, not a reset.
			_, _ = io.Copy(io.Discard, body)
			err = s.httpBudgetCutoff(w, r, &acct, "the body")
		} else if err != nil {
			err = &errStatus{http.StatusBadRequest, "reading the body: " + err.Error()}
		}
	}
	if err != nil {
		var es *errStatus
		if !errors.As(err, &es) {
			es = &errStatus{http.StatusBadRequest, err.Error()}
		}
		http.Error(w, es.msg, es.code)
		return
	}
	ip, _, _ := net.SplitHostPort(r.RemoteAddr)
	job := &httpJob{wake: make(chan struct{}, 1)}
	job.sess = s.eng.NewSession(-1, ip, job)
	var t engine.Turn
	defer func() {
		// The client may be gone: its job stops waiting for it (a queued
		// foreground job nobody waits for is dropped).
		s.eng.Disconnect(&t, job.sess)
		s.dispatch(&t)
	}()
	submit := func(typ wire.Type, fields ...[]byte) {
		p, _, derr := wire.Decode(wire.AppendRequest(nil, typ, fields...), 1<<31-1)
		if derr != nil {
			return
		}
		s.eng.Handle(&t, job.sess, &p)
		s.dispatch(&t)
		t.Reset()
	}
	submit(wire.OptionReq, []byte("exceptions"))
	submit(req.submitType(), []byte(req.function), []byte(req.unique), req.data)
	req.data = nil // the request packet was built from a copy
	acct.Set(0)
	var body []byte
	var handle string
	for {
		p, err := job.next(r.Context())
		if err != nil {
			return // client gone
		}
		switch p.typ {
		case wire.OptionRes:
		case wire.Error:
			code := http.StatusServiceUnavailable
			if string(p.fields[0]) == "ARGUMENT_TOO_LARGE" || string(p.fields[0]) == "INVALID_FUNCTION_NAME" {
				code = http.StatusBadRequest
			}
			http.Error(w, string(p.fields[0])+": "+string(p.fields[1]), code)
			return
		case wire.JobCreated:
			handle = string(p.fields[0])
			w.Header().Set(headerHandle, handle)
			if req.background {
				w.Header().Set(headerCommand, "JOB_CREATED")
				w.WriteHeader(http.StatusOK)
				return
			}
		case wire.WorkData, wire.WorkComplete:
			// The result is collected before it is sent: bound it as the
			// output waiting for any reader is bounded.
			if m := s.opts.MaxOutput; m > 0 && len(body)+len(p.fields[1]) > m {
				http.Error(w, "job "+handle+": result larger than "+strconv.Itoa(m)+" bytes (--max-output-bytes)", http.StatusBadGateway)
				return
			}
			if !acct.Set(len(body) + len(p.fields[1])) {
				es := s.httpBudgetCutoff(w, r, &acct, "job "+handle+"'s result")
				http.Error(w, es.msg, es.code)
				return
			}
			if p.typ == wire.WorkData {
				body = append(body, p.fields[1]...)
				continue
			}
			w.Header().Set("Content-Length", strconv.Itoa(len(body)+len(p.fields[1])))
			w.Header().Set(headerCommand, "WORK_COMPLETE")
			w.WriteHeader(http.StatusOK)
			_, _ = w.Write(body)
			_, _ = w.Write(p.fields[1])
			return
		case wire.WorkFail:
			w.Header().Set(headerCommand, "WORK_FAIL")
			http.Error(w, "job "+handle+" failed", http.StatusInternalServerError)
			return
		case wire.WorkException:
			w.Header().Set(headerCommand, "WORK_EXCEPTION")
			http.Error(w, "job "+handle+" raised an exception: "+string(p.fields[1]), http.StatusInternalServerError)
			return
		}
	}
}

// errHTTPBudget is a request body the buffer budget has no room for.
var errHTTPBudget = errors.New("buffer budget spent")

// readCounted reads r to its end, charging what it holds to acct.
func readCounted(r io.Reader, acct *engine.BufferAccount) ([]byte, error) {
	data := make([]byte, 0, 512)
	for {
		if len(data) == cap(data) {
			data = append(data, 0)[:len(data)]
		}
		n, err := r.Read(data[len(data):cap(data)])
		data = data[:len(data)+n]
		if !acct.Set(len(data)) {
			return nil, errHTTPBudget
		}
		if err == io.EOF {
			return data, nil
		}
		if err != nil {
			return nil, err
		}
	}
}

// httpBudgetCutoff counts and logs a request the buffer budget has no
// room for, and returns its answer: 503, and the connection closes.
func (s *Server) httpBudgetCutoff(w http.ResponseWriter, r *http.Request, acct *engine.BufferAccount, what string) *errStatus {
	acct.Cutoff()
	w.Header().Set("Connection", "close")
	s.log.Info().Str("peer", r.RemoteAddr).Msg("buffer budget exceeded by an HTTP request, refusing it")
	return &errStatus{http.StatusServiceUnavailable, what + " does not fit in the server's buffer budget (--max-buffered-bytes)"}
}

// drainingListener closes the connections it accepts during a graceful
// shutdown, as the Gearman port does; the open ones are still served.
type drainingListener struct {
	net.Listener
	s *Server
}

func (l drainingListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil || !l.s.draining.Load() {
			return c, err
		}
		c.Close()
	}
}

// headerSize is the size of r's request line and header lines as sent, but
// for the white space net/http trims: what --http-max-header bounds.
func headerSize(r *http.Request) int {
	n := len(r.Method) + 1 + len(r.RequestURI) + 1 + len(r.Proto) + 2 + 2
	if r.Host != "" { // net/http moves Host out of r.Header
		n += len("Host: \r\n") + len(r.Host)
	}
	for k, vs := range r.Header {
		for _, v := range vs {
			n += len(k) + len(": \r\n") + len(v)
		}
	}
	return n
}

// ServeHTTPFrontEnd serves the HTTP front end on l until ctx ends.
func (s *Server) ServeHTTPFrontEnd(ctx context.Context, l net.Listener, opts HTTPOptions) error {
	if opts.MaxBody <= 0 {
		opts.MaxBody = DefaultHTTPOptions.MaxBody
	}
	if opts.MaxHeader <= 0 {
		opts.MaxHeader = DefaultHTTPOptions.MaxHeader
	}
	if opts.ReadTimeout <= 0 {
		opts.ReadTimeout = DefaultHTTPOptions.ReadTimeout
	}
	if opts.IdleTimeout <= 0 {
		opts.IdleTimeout = DefaultHTTPOptions.IdleTimeout
	}
	s.httpOpts = opts
	hs := &http.Server{
		Handler:           s,
		ReadHeaderTimeout: opts.ReadTimeout,
		ReadTimeout:       opts.ReadTimeout,
		IdleTimeout:       opts.IdleTimeout,
		// net/http answers 431 itself only past MaxHeaderBytes + 4 KiB
		// (its buffer's read-ahead); ServeHTTP holds the header to the
		// limit exactly.
		MaxHeaderBytes: opts.MaxHeader,
		ConnState: func(c net.Conn, state http.ConnState) {
			msg := "connection opened"
			switch state {
			case http.StateNew:
			case http.StateClosed, http.StateHijacked:
				msg = "connection closed"
			default:
				return
			}
			ip, _, _ := net.SplitHostPort(c.RemoteAddr().String())
			s.log.Info().Str("peer", ip).Bool("http", true).Msg(msg)
		},
		ErrorLog: stdlog.New(s.log.With().Str("component", "http").Logger(), "", 0),
	}
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = hs.Shutdown(sctx)
	}()
	if err := hs.Serve(drainingListener{l, s}); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
