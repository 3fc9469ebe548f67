package monitor_test

import (
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"gearshard/engine"
	"gearshard/netio/gstest"
	"gearshard/netio/monitor"
	"gearshard/wire"
)

// startMonitor serves m's pages for e on an ephemeral loopback port until
// the returned stop is called (or the test ends).
func startMonitor(t testing.TB, e *engine.Engine, opts monitor.Options) (url string, stop func()) {
	t.Helper()
	addr, stop := gstest.Listen(t, "monitor", monitor.New(e, opts).Serve)
	return "http://" + addr + "/", stop
}

// uniques keeps every submitted job's unique key distinct, so none
// coalesces with another.
var uniques atomic.Int64

// submitBackground queues n background jobs of fn at priority typ
// (SUBMIT_JOB_BG, _HIGH_BG or _LOW_BG) and waits for each JOB_CREATED.
func submitBackground(t testing.TB, addr string, typ wire.Type, fn string, n int) {
	t.Helper()
	c := gstest.Dial(t, addr)
	for range n {
		c.Send(typ, fn, fmt.Sprintf("job-%d", uniques.Add(1)), "payload")
		c.Expect(wire.JobCreated)
	}
	c.Raw().Close()
}

// holdJobs submits n background jobs of fn and has n workers take one
// each and never answer, so fn shows running n, workers n, until the
// test ends.
func holdJobs(t testing.TB, addr, fn string, n int) {
	t.Helper()
	submitBackground(t, addr, wire.SubmitJobBG, fn, n)
	for range n {
		w := gstest.Dial(t, addr)
		w.Send(wire.CanDo, fn)
		w.Send(wire.GrabJob)
		w.Expect(wire.JobAssign)
	}
}

// load is a client submitting foreground jobs one after another and a
// worker answering them, in goroutines, until stop.
type load struct {
	done   atomic.Int64 // jobs that got their result back
	stopCh chan struct{}
	conns  []net.Conn
	wg     sync.WaitGroup
	mu     sync.Mutex
	err    error
}

// loadSpec shapes a load: pause before each submission, the time a job
// runs in the worker and how each job ends (all may be nil).
type loadSpec struct {
	pause   func(i int64) time.Duration
	run     func(i int64) time.Duration
	outcome func(i int64) wire.Type // WORK_COMPLETE (default), WORK_FAIL or WORK_EXCEPTION
}

func startLoad(t testing.TB, addr, fn string, spec loadSpec) *load {
	t.Helper()
	l := &load{stopCh: make(chan struct{})}
	cl, wk := gstest.Dial(t, addr), gstest.Dial(t, addr)
	cl.TO, wk.TO = time.Minute, time.Minute // a pausing client leaves the worker asleep for a while
	l.conns = []net.Conn{cl.Raw(), wk.Raw()}
	l.wg.Add(2)
	go l.worker(wk, fn, spec)
	go l.client(cl, fn, spec)
	t.Cleanup(func() {
		if err := l.stop(); err != nil {
			t.Errorf("load on %s: %v", fn, err)
		}
	})
	// Wait for the first result so callers know jobs flow.
	deadline := time.Now().Add(10 * time.Second)
	for l.done.Load() == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("load on %s: no job finished in 10 s (%v)", fn, l.firstErr())
		}
		time.Sleep(5 * time.Millisecond)
	}
	return l
}

func (l *load) stopped() bool {
	select {
	case <-l.stopCh:
		return true
	default:
		return false
	}
}

// fail records the first error, unless the load was being stopped (closing
// the connections makes every read fail).
func (l *load) fail(err error) {
	if l.stopped() {
		return
	}
	l.mu.Lock()
	if l.err == nil {
		l.err = err
	}
	l.mu.Unlock()
}

func (l *load) firstErr() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.err
}

// stop ends the goroutines and reports what went wrong while they ran.
func (l *load) stop() error {
	if !l.stopped() {
		close(l.stopCh)
	}
	for _, c := range l.conns {
		c.Close()
	}
	l.wg.Wait()
	return l.firstErr()
}

func send(c *gstest.Conn, typ wire.Type, fields ...string) error {
	args := make([][]byte, len(fields))
	for i, f := range fields {
		args[i] = []byte(f)
	}
	_, err := c.Raw().Write(wire.AppendRequest(nil, typ, args...))
	return err
}

func (l *load) client(c *gstest.Conn, fn string, spec loadSpec) {
	defer l.wg.Done()
	for i := int64(0); !l.stopped(); i++ {
		if spec.pause != nil {
			select {
			case <-time.After(spec.pause(i)):
			case <-l.stopCh:
				return
			}
		}
		if err := send(c, wire.SubmitJob, fn, "", strconv.FormatInt(i, 10)); err != nil {
			l.fail(err)
			return
		}
	reply:
		for {
			p, err := c.Read()
			if err != nil {
				l.fail(fmt.Errorf("client: %w", err))
				return
			}
			switch p.Type {
			case wire.JobCreated:
			case wire.WorkComplete, wire.WorkFail, wire.WorkException:
				l.done.Add(1)
				break reply
			default:
				l.fail(fmt.Errorf("client: unexpected %v", p))
				return
			}
		}
	}
}

func (l *load) worker(c *gstest.Conn, fn string, spec loadSpec) {
	defer l.wg.Done()
	if send(c, wire.CanDo, fn) != nil || send(c, wire.GrabJob) != nil {
		l.fail(fmt.Errorf("worker: cannot register"))
		return
	}
	var n int64
	for {
		p, err := c.Read()
		if err != nil {
			l.fail(fmt.Errorf("worker: %w", err))
			return
		}
		next := wire.GrabJob
		switch p.Type {
		case wire.JobAssign:
			if spec.run != nil {
				time.Sleep(spec.run(n))
			}
			out := wire.WorkComplete
			if spec.outcome != nil {
				out = spec.outcome(n)
			}
			n++
			handle := p.Fields[0]
			switch out {
			case wire.WorkFail:
				err = send(c, out, handle)
			default:
				err = send(c, out, handle, "ok")
			}
		case wire.NoJob:
			next = wire.PreSleep
		case wire.Noop:
		default:
			l.fail(fmt.Errorf("worker: unexpected %v", p))
			return
		}
		if err == nil {
			err = send(c, next)
		}
		if err != nil {
			l.fail(fmt.Errorf("worker: %w", err))
			return
		}
	}
}

// adminStatus runs status and prioritystatus on the admin protocol and
// returns, by function, status's total, running, workers and
// prioritystatus's high, normal, low queued.
func adminStatus(t testing.TB, addr string) map[string][6]int {
	t.Helper()
	c := gstest.Dial(t, addr)
	defer c.Raw().Close()
	out := make(map[string][6]int)
	parse := func(reply string, at int) {
		for line := range strings.SplitSeq(strings.TrimSuffix(reply, ".\n"), "\n") {
			if line == "" {
				continue
			}
			f := strings.Split(line, "\t")
			if len(f) < 4 {
				t.Fatalf("admin line %q", line)
			}
			name, nums := f[0], f[1:]
			row := out[name]
			for i := range 3 {
				n, err := strconv.Atoi(nums[i])
				if err != nil {
					t.Fatalf("admin line %q: %v", line, err)
				}
				row[at+i] = n
			}
			out[name] = row
		}
	}
	parse(c.Admin("status"), 0)
	parse(c.Admin("prioritystatus"), 3)
	return out
}
