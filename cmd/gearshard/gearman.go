package main

// The client and worker modes of libgearman's gearman(1) CLI, over the raw
// protocol, so that shell scripts can drop gearman-tools.

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"gearshard/wire"
)

// dialTimeout bounds connecting to the server in both modes.
const dialTimeout = 10 * time.Second

// gearmanConn is one binary-protocol connection: requests out, responses in.
type gearmanConn struct {
	c       net.Conn
	buf     []byte // received bytes not yet decoded: buf[off:]
	off     int
	out     []byte
	timeout time.Duration // per read; 0: none
}

// jobServers is where the client and worker connect: GEARMAN_SERVER when
// set (host[:port] separated by commas, as libgearman reads it; it
// overrides -h and -p, as in gearman), else -h and -p.
func jobServers(host string, port int) ([]string, error) {
	if port < 1 || port > 65535 {
		return nil, usagef("-p %d: must be 1..65535", port)
	}
	list, ok := os.LookupEnv("GEARMAN_SERVER")
	if !ok {
		return []string{net.JoinHostPort(host, strconv.Itoa(port))}, nil
	}
	var addrs []string
	for _, s := range strings.Split(list, ",") {
		h, p := s, "4730"
		if i := strings.LastIndexByte(s, ':'); i >= 0 && !strings.HasSuffix(s, "]") {
			h, p = s[:i], s[i+1:]
		}
		h = strings.TrimSuffix(strings.TrimPrefix(h, "["), "]")
		if h == "" {
			h = "localhost"
		}
		if p == "" {
			p = "4730"
		}
		if n, err := strconv.Atoi(p); err != nil || n < 1 || n > 65535 {
			return nil, usagef("GEARMAN_SERVER=%q: bad port in %q", list, s)
		}
		addrs = append(addrs, net.JoinHostPort(h, p))
	}
	return addrs, nil
}

func dialGearman(addr string, timeout time.Duration, tlsCfg *tls.Config) (*gearmanConn, error) {
	c, err := dialServer(addr, dialTimeout, tlsCfg)
	if err != nil {
		return nil, err
	}
	return &gearmanConn{c: c, timeout: timeout}, nil
}

func (g *gearmanConn) Close() error { return g.c.Close() }

// send writes one request packet.
func (g *gearmanConn) send(t wire.Type, args ...[]byte) error {
	g.out = wire.AppendRequest(g.out[:0], t, args...)
	_ = g.c.SetWriteDeadline(time.Now().Add(dialTimeout))
	if _, err := g.c.Write(g.out); err != nil {
		return fmt.Errorf("sending %v: %w", t, err)
	}
	return nil
}

// packet is a received response with its fields copied.
type packet struct {
	typ    wire.Type
	fields [][]byte
}

func (p packet) arg(i int) []byte {
	if i < len(p.fields) {
		return p.fields[i]
	}
	return nil
}

// recv reads the next response packet. An ERROR packet is returned as an
// error.
func (g *gearmanConn) recv() (packet, error) {
	for {
		if g.off < len(g.buf) {
			p, n, err := wire.Decode(g.buf[g.off:], wire.DefaultMaxPacket)
			if err != nil {
				return packet{}, fmt.Errorf("bad packet from server: %w", err)
			}
			if n > 0 {
				g.off += n
				if p.Magic != wire.Response {
					return packet{}, errors.New("bad packet from server: request magic")
				}
				pk := packet{typ: p.Type, fields: make([][]byte, p.NField)}
				for i := range p.NField {
					pk.fields[i] = bytes.Clone(p.Field[i])
				}
				if pk.typ == wire.Error {
					return pk, fmt.Errorf("server error %s: %s", pk.arg(0), pk.arg(1))
				}
				return pk, nil
			}
		}
		// Compact, then read more.
		if g.off > 0 {
			g.buf = append(g.buf[:0], g.buf[g.off:]...)
			g.off = 0
		}
		if cap(g.buf)-len(g.buf) < 4096 {
			g.buf = append(make([]byte, 0, 2*cap(g.buf)+8192), g.buf...)
		}
		if g.timeout > 0 {
			_ = g.c.SetReadDeadline(time.Now().Add(g.timeout))
		} else {
			_ = g.c.SetReadDeadline(time.Time{})
		}
		n, err := g.c.Read(g.buf[len(g.buf):cap(g.buf)])
		g.buf = g.buf[:len(g.buf)+n]
		if err != nil && n == 0 {
			if errors.Is(err, io.EOF) {
				return packet{}, errors.New("server closed the connection")
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				return packet{}, fmt.Errorf("%w after %v", errTimeout, g.timeout)
			}
			return packet{}, err
		}
	}
}

// ClientCmd is gearman's client mode: submit jobs, print their results.
type ClientCmd struct {
	Function  []string `short:"f" required:"" sep:"none" placeholder:"FUNC" help:"Function name to use for jobs (repeat to send each job to several)."`
	Host      string   `short:"h" default:"localhost" help:"Job server host."`
	Port      int      `short:"p" default:"4730" help:"Job server port."`
	Timeout   int      `short:"t" default:"0" placeholder:"MS" help:"Give up waiting for the server after this many milliseconds (0: never)."`
	Verbose   bool     `short:"v" help:"Print diagnostic information (\"Task created: HANDLE\")."`
	Bg        bool     `short:"b" name:"background" help:"Run jobs in the background."`
	High      bool     `short:"I" help:"Run jobs as high priority."`
	Low       bool     `short:"L" help:"Run jobs as low priority."`
	Lines     bool     `short:"n" help:"Run one job per line of standard input."`
	LinesStrp bool     `short:"N" name:"lines-strip" help:"Same as -n, but strip off the newline."`
	Prefix    bool     `short:"P" help:"Prefix all output with the function name (\"FUNC: \")."`
	Suppress  bool     `short:"s" help:"Send a job with an empty workload without reading standard input."`
	Unique    string   `short:"u" placeholder:"UNIQUE" help:"Unique key to use for jobs."`
	TLS       toolTLS  `embed:""`
	Data      []string `arg:"" optional:"" help:"Workloads, one job each (default: standard input)."`
}

// submitType picks the SUBMIT_JOB variant for the priority and mode.
func (c *ClientCmd) submitType() wire.Type {
	switch {
	case c.High && c.Bg:
		return wire.SubmitJobHighBG
	case c.High:
		return wire.SubmitJobHigh
	case c.Low && c.Bg:
		return wire.SubmitJobLowBG
	case c.Low:
		return wire.SubmitJobLow
	case c.Bg:
		return wire.SubmitJobBG
	}
	return wire.SubmitJob
}

func (c *ClientCmd) Run(std *stdio) error {
	if c.High && c.Low {
		return usagef("client: -I and -L cannot be used together")
	}
	if c.Timeout < 0 {
		return usagef("client: -t %d: must be >= 0", c.Timeout)
	}
	for _, f := range c.Function {
		if f == "" {
			return usagef("client: -f: empty function name")
		}
	}
	servers, err := jobServers(c.Host, c.Port)
	if err != nil {
		return err
	}
	tlsCfg, err := c.TLS.config()
	if err != nil {
		return err
	}
	// The first server that answers takes every job.
	var g *gearmanConn
	for _, addr := range servers {
		if g, err = dialGearman(addr, time.Duration(c.Timeout)*time.Millisecond, tlsCfg); err == nil {
			break
		}
	}
	if err != nil {
		return err
	}
	defer g.Close()
	failed := 0
	runOne := func(workload []byte) error {
		n, err := c.runJob(g, std, workload)
		failed += n
		return err
	}
	switch {
	case len(c.Data) > 0:
		for _, d := range c.Data {
			if err := runOne([]byte(d)); err != nil {
				return err
			}
		}
	case c.Lines || c.LinesStrp:
		r := bufio.NewReader(os.Stdin)
		for {
			line, err := r.ReadBytes('\n')
			if len(line) > 0 {
				if c.LinesStrp {
					line = bytes.TrimSuffix(line, []byte{'\n'})
				}
				if err := runOne(line); err != nil {
					return err
				}
			}
			if err == io.EOF {
				break
			}
			if err != nil {
				return fmt.Errorf("reading standard input: %w", err)
			}
		}
	case c.Suppress:
		if err := runOne(nil); err != nil {
			return err
		}
	default:
		data, err := io.ReadAll(os.Stdin)
		if err != nil {
			return fmt.Errorf("reading standard input: %w", err)
		}
		if err := runOne(data); err != nil {
			return err
		}
	}
	switch failed {
	case 0:
		return nil
	case 1:
		return errors.New("Job failed")
	default:
		return fmt.Errorf("%d jobs failed", failed)
	}
}

// runJob submits workload to every function and, in the foreground, prints
// what the workers send until each job ends. It returns how many failed.
func (c *ClientCmd) runJob(g *gearmanConn, std *stdio, workload []byte) (failed int, err error) {
	typ := c.submitType()
	for _, f := range c.Function {
		if err := g.send(typ, []byte(f), []byte(c.Unique), workload); err != nil {
			return 0, err
		}
	}
	// JOB_CREATED replies come in submission order. The same handle twice
	// (one function given twice with -u) is one job with two waiters.
	pending := map[string]int{}
	funcOf := map[string]string{}
	var handles []string
	for _, f := range c.Function {
		p, err := c.expect(g, wire.JobCreated)
		if err != nil {
			return 0, err
		}
		h := string(p.arg(0))
		pending[h]++
		funcOf[h] = f
		handles = append(handles, h)
	}
	verbose := func() {
		if c.Verbose {
			for _, h := range handles {
				fmt.Fprintf(std.Out, "Task created: %s\n", h)
			}
		}
	}
	if c.Bg {
		verbose()
		return 0, nil
	}
	write := func(h string, data []byte) error {
		if c.Prefix {
			if _, err := fmt.Fprintf(std.Out, "%s: ", funcOf[h]); err != nil {
				return err
			}
		}
		_, err := std.Out.Write(data)
		return err
	}
	left := len(c.Function)
	for left > 0 {
		p, err := g.recv()
		if err != nil {
			return failed, err
		}
		h := string(p.arg(0))
		n, ok := pending[h]
		if !ok {
			continue // not ours (cannot happen on a fresh connection)
		}
		switch p.typ {
		case wire.WorkData, wire.WorkWarning:
			for range n {
				if err := write(h, p.arg(1)); err != nil {
					return failed, err
				}
			}
			continue
		case wire.WorkComplete:
			for range n {
				if err := write(h, p.arg(1)); err != nil {
					return failed, err
				}
			}
		case wire.WorkFail, wire.WorkException:
			failed += n
		default:
			continue // WORK_STATUS and anything else: ignored, as gearman does without -v
		}
		delete(pending, h)
		left -= n
	}
	verbose()
	return failed, nil
}

// expect reads packets until one of type t (NOOPs are skipped).
func (c *ClientCmd) expect(g *gearmanConn, t wire.Type) (packet, error) {
	for {
		p, err := g.recv()
		if err != nil {
			return p, err
		}
		if p.typ == t {
			return p, nil
		}
		if p.typ != wire.Noop {
			return p, fmt.Errorf("server sent %v, expected %v", p.typ, t)
		}
	}
}

// WorkerCmd is gearman's worker mode (-w): run a command for each job.
type WorkerCmd struct {
	Function  []string `short:"f" required:"" sep:"none" placeholder:"FUNC" help:"Function name to register (repeat for several)."`
	Host      string   `short:"h" default:"localhost" help:"Job server host."`
	Port      int      `short:"p" default:"4730" help:"Job server port."`
	Timeout   int      `short:"t" default:"0" placeholder:"MS" help:"Exit when no job arrives for this many milliseconds (0: never)."`
	Count     int      `short:"c" default:"0" help:"Number of jobs to run before exiting (0: no limit)."`
	Lines     bool     `short:"n" help:"Send a data packet for each line of the command's output."`
	LinesStrp bool     `short:"N" name:"lines-strip" help:"Same as -n, but strip off the newline."`
	ID        string   `name:"id" help:"Client id to set (SET_CLIENT_ID), shown by admin workers."`
	TLS       toolTLS  `embed:""`
	Command   []string `arg:"" optional:"" passthrough:"partial" help:"Command to run per job, workload on stdin; without one the workload is printed."`
}

func (w *WorkerCmd) Run(std *stdio) error {
	if len(w.Command) > 0 && w.Command[0] == "--" {
		w.Command = w.Command[1:] // passthrough keeps the separator
	}
	if w.Count < 0 {
		return usagef("worker: -c %d: must be >= 0", w.Count)
	}
	if w.Timeout < 0 {
		return usagef("worker: -t %d: must be >= 0", w.Timeout)
	}
	for _, f := range w.Function {
		if f == "" {
			return usagef("worker: -f: empty function name")
		}
	}
	servers, err := jobServers(w.Host, w.Port)
	if err != nil {
		return err
	}
	tlsCfg, err := w.TLS.config()
	if err != nil {
		return err
	}
	p := &workerPool{cmd: w, std: std, tls: tlsCfg, quit: make(chan struct{})}
	p.lastJob.Store(time.Now().UnixNano())
	var links sync.WaitGroup
	for _, addr := range servers {
		links.Go(func() { p.serve(addr) })
	}
	idle := time.Duration(w.Timeout) * time.Millisecond
	var idleTimer <-chan time.Time
	if idle > 0 {
		t := time.NewTimer(idle)
		defer t.Stop()
		idleTimer = t.C
	}
	for waiting := true; waiting; {
		select {
		case <-p.quit:
			waiting = false
		case <-std.Stop:
			p.stop(nil)
		case <-idleTimer:
			// Jobs run under turn, so holding it means none is running.
			p.turn.Lock()
			since := time.Since(time.Unix(0, p.lastJob.Load()))
			if since >= idle {
				p.stop(nil)
			}
			p.turn.Unlock()
			idleTimer = time.After(idle - min(since, idle))
		}
	}
	links.Wait()
	return p.err
}

// workerPool is a worker's connections, one per job server, as libgearman's
// worker keeps one to each server it was given. Each connection grabs and
// sleeps on its own; jobs run one at a time, whichever server they come
// from. A lost connection is made again (and its functions registered
// again) until the worker stops, as gearman -w keeps retrying.
type workerPool struct {
	cmd  *WorkerCmd
	std  *stdio
	tls  *tls.Config // nil: plaintext
	turn sync.Mutex  // held to grab and run a job: one at a time
	done int         // jobs run, under turn

	lastJob  atomic.Int64 // unix nanoseconds when the last job ended (or the worker started)
	quit     chan struct{}
	quitOnce sync.Once
	err      error // why the worker stopped, if not by -c, -t or Stop; set before quit closes
}

func (p *workerPool) stop(err error) {
	p.quitOnce.Do(func() {
		p.err = err
		close(p.quit)
	})
}

// Reconnection waits this long after the first failure, doubling up to the
// cap while the server stays away.
const (
	reconnectFirst = 100 * time.Millisecond
	reconnectCap   = 2 * time.Second
)

// serve keeps a connection to one server working until the pool stops.
func (p *workerPool) serve(addr string) {
	wait := reconnectFirst
	down := false
	for {
		g, err := dialGearman(addr, 0, p.tls)
		if err == nil {
			if down {
				fmt.Fprintf(p.std.Err, "gearshard: connected to %s again\n", addr)
			}
			down, wait = false, reconnectFirst
			err = p.work(g)
			g.Close()
			var local localError
			if errors.As(err, &local) {
				p.stop(local.error)
				return
			}
			err = fmt.Errorf("lost connection to %s: %w", addr, err)
		}
		select {
		case <-p.quit:
			return
		default:
		}
		if !down {
			fmt.Fprintf(p.std.Err, "gearshard: %v; retrying\n", err)
			down = true
		}
		select {
		case <-p.quit:
			return
		case <-time.After(wait):
		}
		wait = min(2*wait, reconnectCap)
	}
}

// work registers on a fresh connection, then grabs and runs jobs until the
// connection fails or the pool stops (which closes it).
func (p *workerPool) work(g *gearmanConn) error {
	closed := make(chan struct{})
	defer close(closed)
	go func() {
		select {
		case <-p.quit:
			g.Close()
		case <-closed:
		}
	}()
	w := p.cmd
	if w.ID != "" {
		if err := g.send(wire.SetClientID, []byte(w.ID)); err != nil {
			return err
		}
	}
	for _, f := range w.Function {
		if err := g.send(wire.CanDo, []byte(f)); err != nil {
			return err
		}
	}
	for {
		ran, err := p.grabAndRun(g)
		if err != nil {
			return err
		}
		if ran {
			continue
		}
		// No job: sleep until the server says there is one.
		if err := g.send(wire.PreSleep); err != nil {
			return err
		}
		for {
			pk, err := g.recv()
			if err != nil {
				return err
			}
			if pk.typ == wire.Noop {
				break
			}
		}
	}
}

// grabAndRun takes the turn, asks this server for a job and runs it.
func (p *workerPool) grabAndRun(g *gearmanConn) (ran bool, err error) {
	p.turn.Lock()
	defer p.turn.Unlock()
	select {
	case <-p.quit:
		return false, errors.New("stopped")
	default:
	}
	if err := g.send(wire.GrabJob); err != nil {
		return false, err
	}
	for {
		pk, err := g.recv()
		if err != nil {
			return false, err
		}
		switch pk.typ {
		case wire.JobAssign:
			err := p.cmd.runJob(g, p.std, pk.arg(0), pk.arg(2))
			p.done++
			p.lastJob.Store(time.Now().UnixNano())
			if p.cmd.Count > 0 && p.done >= p.cmd.Count {
				p.stop(nil)
			}
			return true, err
		case wire.NoJob:
			return false, nil
		case wire.Noop:
			continue // a late wake-up from an earlier sleep
		default:
			return false, fmt.Errorf("server sent %v, expected JOB_ASSIGN or NO_JOB", pk.typ)
		}
	}
}

// localError is a failure of the worker itself (its standard output, say),
// which stops it; any other error is the connection's, which is made again.
type localError struct{ error }

var errTimeout = errors.New("timed out waiting for the server")

// runJob runs one job and reports its outcome to the server.
func (w *WorkerCmd) runJob(g *gearmanConn, std *stdio, handle, workload []byte) error {
	if len(w.Command) == 0 {
		// As gearman -w: print the workload, return an empty result.
		if _, err := std.Out.Write(workload); err != nil {
			return localError{err}
		}
		return g.send(wire.WorkComplete, handle, nil)
	}
	cmd := exec.Command(w.Command[0], w.Command[1:]...)
	cmd.Stdin = bytes.NewReader(workload)
	cmd.Stderr = std.Err
	lines := w.Lines || w.LinesStrp
	var out bytes.Buffer
	var runErr error
	if lines {
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			return localError{err}
		}
		if err := cmd.Start(); err != nil {
			fmt.Fprintf(std.Err, "gearshard: %s: %v\n", w.Command[0], err)
			return g.send(wire.WorkFail, handle)
		}
		r := bufio.NewReader(stdout)
		var sendErr error
		for {
			line, err := r.ReadBytes('\n')
			if len(line) > 0 && sendErr == nil {
				if w.LinesStrp {
					line = bytes.TrimSuffix(line, []byte{'\n'})
				}
				sendErr = g.send(wire.WorkData, handle, line)
			}
			if err != nil {
				break
			}
		}
		runErr = cmd.Wait()
		if sendErr != nil {
			return sendErr
		}
	} else {
		cmd.Stdout = &out
		runErr = cmd.Run()
	}
	if runErr != nil {
		var ee *exec.ExitError
		if !errors.As(runErr, &ee) {
			fmt.Fprintf(std.Err, "gearshard: %s: %v\n", w.Command[0], runErr)
		}
		// gearman -w passes on what the command printed, then fails the job.
		if out.Len() > 0 {
			if err := g.send(wire.WorkData, handle, out.Bytes()); err != nil {
				return err
			}
		}
		return g.send(wire.WorkFail, handle)
	}
	return g.send(wire.WorkComplete, handle, out.Bytes())
}
