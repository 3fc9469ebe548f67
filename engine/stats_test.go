package engine

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"
	"unsafe"

	"github.com/rs/zerolog"

	"gearshard/wire"
)

// Stats counts what happened to each function's jobs, per shard, and
// agrees with what status shows.
func TestStatsCountsOutcomes(t *testing.T) {
	e := newTestEngine(t, 2, func(o *Options) { o.JobRetries = 2 })
	var tr Turn
	fa, fb := names(e, 0, 1)[0], names(e, 1, 1)[0]
	c, w := clientAndWorker(e)
	e.NewSession(3, "127.0.0.1", nil) // connects and does nothing
	adm := e.NewSession(4, "127.0.0.1", nil)
	NewAdmin(e, AdminConfig{}).Run(&tr, adm, []byte("status"))

	submit := func(typ wire.Type, fn, unique, data string) []byte {
		e.Handle(&tr, c, req(typ, fn, unique, data))
		return expectOne(t, c, wire.JobCreated).Field[0]
	}
	grab := func() []byte {
		e.Handle(&tr, w, req(wire.GrabJob))
		return expectOne(t, w, wire.JobAssign).Field[0]
	}
	e.Handle(&tr, w, req(wire.CanDo, fa))
	submit(wire.SubmitJobBG, fa, "u1", "x")
	submit(wire.SubmitJobBG, fa, "u1", "x") // coalesced
	submit(wire.SubmitJobHighBG, fa, "", "y")
	submit(wire.SubmitJobLowBG, fa, "", "z")
	submit(wire.SubmitJobBG, fb, "", "b") // nobody can do fb: stays queued

	time.Sleep(2 * time.Millisecond) // a measurable queue wait
	tr.Reset()                       // a new read of a connection: the clock is read anew
	h := grab()                      // the high job
	e.Handle(&tr, w, req(wire.WorkComplete, string(h), "done"))
	h = grab()
	e.Handle(&tr, w, req(wire.WorkFail, string(h)))
	h = grab()
	e.Handle(&tr, w, req(wire.WorkException, string(h), "boom"))
	submit(wire.SubmitJobBG, fa, "", "r")
	grab()
	// The worker goes away holding a job: it is requeued (one retry of two).
	e.Disconnect(&tr, w)
	drain(t, c)

	st := e.Stats(nil)
	if len(st.Functions) != 2 || st.Functions[0].Name > st.Functions[1].Name {
		t.Fatalf("functions %+v: want two, sorted", st.Functions)
	}
	byName := map[string]FunctionStats{}
	for _, f := range st.Functions {
		byName[f.Name] = f
	}
	a := byName[fa]
	want := jobCounters{Submitted: 4, Coalesced: 1, Completed: 1, Failed: 1, Exceptions: 1, Retried: 1}
	if a.jobCounters != want {
		t.Errorf("%s counters %+v, want %+v", fa, a.jobCounters, want)
	}
	if a.Total != 1 || a.Queued != [numPriorities]int{0, 1, 0} || a.Running != 0 || a.Workers != 0 || a.Shard != 0 {
		t.Errorf("%s gauges %+v", fa, a)
	}
	if n := a.Wait.Count(); n != 4 {
		t.Errorf("%s wait observations %d, want 4 (one per assignment)", fa, n)
	}
	if n := a.Run.Count(); n != 3 {
		t.Errorf("%s run observations %d, want 3 (one per result)", fa, n)
	}
	if a.Wait.Sum < 0.002 {
		t.Errorf("%s wait sum %.6fs, want at least the 2 ms the first jobs waited", fa, a.Wait.Sum)
	}
	b := byName[fb]
	if b.Submitted != 1 || b.Total != 1 || b.Queued[Normal] != 1 || b.Shard != 1 {
		t.Errorf("%s %+v", fb, b)
	}
	if s0, s1 := st.Shards[0], st.Shards[1]; s0.Submitted != 4 || s0.Finished != 3 || s0.Queued != 1 ||
		s1.Submitted != 1 || s1.Finished != 0 || s1.Queued != 1 || s0.Functions != 1 || s1.Functions != 1 {
		t.Errorf("shards %+v", st.Shards)
	}
	// The worker is gone; one client, one admin, one idle connection remain.
	if got := st.Connections; got.Workers != 0 || got.Clients != 1 || got.Admins != 1 || got.Idle != 1 || got.Accepted != 4 {
		t.Errorf("connections %+v", got)
	}
}

// Observing a duration lands it in the first bucket whose bound holds it.
func TestHistogramBuckets(t *testing.T) {
	var lh latencyHist
	lh.observe(50e3)        // 50 µs: first bucket
	lh.observe(1e6)         // exactly 1 ms: the 1 ms bucket (bounds are inclusive)
	lh.observe(int64(1e12)) // past the last bound: overflow
	h := lh.export()
	if h.Counts[0] != 1 || h.Counts[3] != 1 || h.Counts[len(LatencyBounds)] != 1 || h.Count() != 3 {
		t.Fatalf("counts %v", h.Counts)
	}
	if want := (50e3 + 1e6 + 1e12) / 1e9; h.Sum != want {
		t.Fatalf("sum %v, want %v", h.Sum, want)
	}
}

// At debug level every job event is one structured line, keyed by handle
// and connection id; below it, nothing is written.
func TestDebugLogPerJobEvent(t *testing.T) {
	for _, level := range []zerolog.Level{zerolog.DebugLevel, zerolog.InfoLevel} {
		var buf bytes.Buffer
		e := newTestEngine(t, 2, func(o *Options) { o.Log = zerolog.New(&buf).Level(level) })
		var tr Turn
		c, w := clientAndWorker(e)
		e.Handle(&tr, w, req(wire.CanDo, "f"))
		e.Handle(&tr, c, req(wire.SubmitJob, "f", "u", "x"))
		h := string(expectOne(t, c, wire.JobCreated).Field[0])
		e.Handle(&tr, c, req(wire.SubmitJob, "f", "u", "x"))
		drain(t, c)
		e.Handle(&tr, w, req(wire.GrabJob))
		drain(t, w)
		e.Handle(&tr, w, req(wire.WorkComplete, h, "done"))

		var msgs []string
		for _, line := range strings.Split(strings.TrimSpace(buf.String()), "\n") {
			if line == "" {
				continue
			}
			var rec struct {
				Message, Handle, Function string
				Conn, Worker              uint64
			}
			if err := json.Unmarshal([]byte(line), &rec); err != nil {
				t.Fatalf("log line %q: %v", line, err)
			}
			if rec.Handle != h || rec.Function != "f" {
				t.Errorf("line %q: want handle %s, function f", line, h)
			}
			msgs = append(msgs, rec.Message)
		}
		want := []string{"job submitted", "submission joined job", "job assigned", "job completed"}
		if level != zerolog.DebugLevel {
			want = nil
		}
		if fmt.Sprint(msgs) != fmt.Sprint(want) {
			t.Errorf("level %s: messages %q, want %q", level, msgs, want)
		}
	}
}

// Functions that keep refuses are summed into Other, not copied one by one.
func TestStatsFoldsWhatKeepRefuses(t *testing.T) {
	e := newTestEngine(t, 2, nil)
	var tr Turn
	c := e.NewSession(1, "127.0.0.1", nil)
	for i := range 50 {
		for range i%3 + 1 {
			e.Handle(&tr, c, req(wire.SubmitJobBG, "fn"+strconv.Itoa(i), "", "x"))
		}
	}
	drain(t, c)
	st := e.Stats(func(name string) bool { return name == "fn7" || name == "fn8" })
	if len(st.Functions) != 2 || st.Functions[0].Name != "fn7" || st.Functions[1].Name != "fn8" {
		t.Fatalf("kept %+v, want fn7 and fn8", st.Functions)
	}
	// 50 functions with 1, 2, 3, 1, 2, ... jobs: 99 in all; fn7 has 2, fn8 has 3.
	if st.Folded != 48 || st.Other.Total != 99-2-3 || st.Other.Submitted != 99-2-3 || st.Other.Queued[Normal] != 94 || st.Other.Shard != -1 {
		t.Fatalf("other %+v folded %d, want 48 functions with 94 jobs", st.Other, st.Folded)
	}
}

// A function only registered (CAN_DO, no job yet) carries no histograms:
// names are kept for good, as gearmand keeps them, and any peer can
// register many, so each must stay small.
func TestRegisteredFunctionStaysSmall(t *testing.T) {
	e := newTestEngine(t, 1, nil)
	var tr Turn
	w := e.NewSession(1, "127.0.0.1", nil)
	e.Handle(&tr, w, req(wire.CanDo, "only-registered"))
	s := e.shards[0]
	s.mu.Lock()
	f := s.funcs["only-registered"]
	s.mu.Unlock()
	if f == nil || f.lat != nil {
		t.Fatalf("registered function %+v: want one without histograms", f)
	}
	if size := unsafe.Sizeof(*f); size > 320 {
		t.Errorf("function record is %d bytes, want at most 320", size)
	}
}
