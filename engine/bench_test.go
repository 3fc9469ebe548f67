package engine

import (
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"gearshard/wire"
)

// jobCycle runs one foreground job through submit, grab and complete, the
// way the event loops drive the engine, and discards the output as a writer
// would (taking and returning the buffers).
type jobCycle struct {
	e         *Engine
	tr        Turn
	c, w      *Session
	submit    *wire.Packet
	grab      *wire.Packet
	complete  wire.Packet
	handleBuf []byte
}

func newJobCycle(b *testing.B, e *Engine, fn string, payload int) *jobCycle {
	jc := &jobCycle{e: e}
	jc.c = e.NewSession(1, "127.0.0.1", nil)
	jc.w = e.NewSession(2, "127.0.0.1", nil)
	// As the network layer sets them up: the budget's check is on the path.
	budget := NewBufferBudget(1<<30, nil)
	jc.c.SetBufferBudget(budget, nil)
	jc.w.SetBufferBudget(budget, nil)
	e.Handle(&jc.tr, jc.w, req(wire.CanDo, fn))
	data := make([]byte, payload)
	jc.submit = req(wire.SubmitJob, fn, "", string(data))
	jc.grab = req(wire.GrabJob)
	jc.complete = *req(wire.WorkComplete, "H:t:1", string(data))
	return jc
}

// grabAndComplete has worker w take a job and answer it with complete, the
// way the event loops drive the engine; handle keeps its buffer between
// calls. It returns the type of the reply to the grab.
func grabAndComplete(e *Engine, tr *Turn, w *Session, grab, complete *wire.Packet, handle *[]byte) wire.Type {
	e.Handle(tr, w, grab)
	var got wire.Type
	w.WriteOutput(func(out []byte) int {
		p, _, _ := wire.Decode(out, wire.DefaultMaxPacket)
		got, *handle = p.Type, append((*handle)[:0], p.Field[0]...)
		return len(out)
	})
	complete.Field[0] = *handle
	e.Handle(tr, w, complete)
	return got
}

func (jc *jobCycle) run() {
	jc.e.Handle(&jc.tr, jc.c, jc.submit)
	grabAndComplete(jc.e, &jc.tr, jc.w, jc.grab, &jc.complete, &jc.handleBuf)
	jc.c.discardOutput()
	jc.tr.Reset()
}

// BenchmarkJobCycle is the engine's per-job cost with no sockets: the
// steady state must not allocate.
func BenchmarkJobCycle(b *testing.B) {
	for _, size := range []int{64, 1024} {
		b.Run(strconv.Itoa(size)+"B", func(b *testing.B) {
			e := newTestEngine(b, 1, nil)
			jc := newJobCycle(b, e, "fn", size)
			jc.run()
			b.ReportAllocs()
			b.SetBytes(int64(size))
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				jc.run()
			}
		})
	}
}

// BenchmarkGrabRotation is the job cycle of a worker of 64 functions over
// two shards, each function with jobs queued (the fg F=64 load): every GRAB
// picks the registration served least recently across the shards.
func BenchmarkGrabRotation(b *testing.B) {
	const funcs = 64
	e := newTestEngine(b, 2, nil)
	var tr Turn
	c, w := clientAndWorker(e)
	submits := make([]*wire.Packet, funcs)
	for i := range submits {
		name := "fn" + strconv.Itoa(i)
		e.Handle(&tr, w, req(wire.CanDo, name))
		submits[i] = req(wire.SubmitJob, name, "", strings.Repeat("x", 64))
	}
	for i := 0; i < 2*funcs; i++ { // a backlog of two jobs per function
		e.Handle(&tr, c, submits[i%funcs])
	}
	grab := req(wire.GrabJob)
	complete := *req(wire.WorkComplete, "H:t:1", strings.Repeat("x", 64))
	var handle []byte
	cycle := func(i int) {
		e.Handle(&tr, c, submits[i%funcs])
		grabAndComplete(e, &tr, w, grab, &complete, &handle)
		c.discardOutput()
		tr.Reset()
	}
	cycle(0)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		cycle(i)
	}
}

// BenchmarkShardsParallel runs job cycles from every core at once, each
// goroutine on its own function. With one shard they share a lock; with a
// shard per core they should not slow each other down.
func BenchmarkShardsParallel(b *testing.B) {
	for _, shards := range []int{1, 2} {
		b.Run("shards="+strconv.Itoa(shards), func(b *testing.B) {
			e := newTestEngine(b, shards, nil)
			var next atomic.Int64
			b.ReportAllocs()
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				i := int(next.Add(1) - 1)
				jc := newJobCycle(b, e, names(e, i%shards, i/shards+1)[i/shards], 64)
				for pb.Next() {
					jc.run()
				}
			})
		})
	}
}

// BenchmarkAdminStatus answers "status" while 1,000,000 jobs wait over
// 1,000 functions: the reply comes from counters, so its cost follows the
// number of functions, not of jobs.
func BenchmarkAdminStatus(b *testing.B) {
	e := newTestEngine(b, 2, nil)
	var tr Turn
	c := e.NewSession(1, "127.0.0.1", nil)
	for i := 0; i < 1_000_000; i++ {
		e.Handle(&tr, c, req(wire.SubmitJobBG, "fn"+strconv.Itoa(i%1000), "", "payload"))
		if i%1024 == 0 {
			c.discardOutput()
		}
	}
	a := NewAdmin(e, AdminConfig{})
	adm := e.NewSession(2, "127.0.0.1", nil)
	lat := make([]time.Duration, 0, b.N)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		start := time.Now()
		a.Run(&tr, adm, []byte("status"))
		size := 0
		adm.WriteOutput(func(out []byte) int { size = len(out); return size })
		lat = append(lat, time.Since(start))
		if size < 1000*10 {
			b.Fatalf("status reply too short: %d bytes", size)
		}
	}
	b.StopTimer()
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
}

// BenchmarkBacklog queues background jobs with no worker: the submit path
// of a growing queue. Records and their buffers come from slabs, so most
// submissions allocate nothing.
func BenchmarkBacklog(b *testing.B) {
	e := newTestEngine(b, 1, nil)
	var tr Turn
	c := e.NewSession(1, "127.0.0.1", nil)
	r := req(wire.SubmitJobBG, "fn", "", strings.Repeat("x", 64))
	b.ReportAllocs()
	b.SetBytes(64)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		e.Handle(&tr, c, r)
		if i%1024 == 0 {
			c.discardOutput()
		}
	}
}

// BenchmarkDrain is a worker's cycle (GRAB_JOB, JOB_ASSIGN, WORK_COMPLETE)
// over a backlog of background jobs at two depths. The bench suite's drain
// bar asks that a million queued jobs drain no slower per job than ten
// thousand; this measures that without sockets, so without the machine's
// scheduling noise. Refills are outside the timer.
func BenchmarkDrain(b *testing.B) {
	for _, depth := range []int{10_000, 1_000_000} {
		b.Run("depth="+strconv.Itoa(depth), func(b *testing.B) {
			e := newTestEngine(b, 1, nil)
			var tr Turn
			c, w := clientAndWorker(e)
			e.Handle(&tr, w, req(wire.CanDo, "fn"))
			submit := req(wire.SubmitJobBG, "fn", "", strings.Repeat("x", 64))
			grab := req(wire.GrabJob)
			complete := *req(wire.WorkComplete, "H:t:1", "")
			var handle []byte
			fill := func() {
				for i := 0; i < depth; i++ {
					e.Handle(&tr, c, submit)
					if i%1024 == 0 {
						c.discardOutput()
					}
				}
				c.discardOutput()
				tr.Reset()
			}
			fill()
			left := depth
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if left == 0 {
					b.StopTimer()
					fill()
					left = depth
					b.StartTimer()
				}
				if got := grabAndComplete(e, &tr, w, grab, &complete, &handle); got != wire.JobAssign {
					b.Fatalf("GRAB_JOB with %d queued: %v", left, got)
				}
				tr.Reset()
				left--
			}
		})
	}
}
