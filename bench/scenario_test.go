package bench

import (
	"context"
	"os"
	"runtime"
	"slices"
	"testing"
	"time"

	"gearshard/netio/gstest"
	"gearshard/wire"
)

func smallConfig(addr string) Config {
	return Config{
		Servers: []string{addr}, Clients: 2, InFlight: 4, Workers: 2, Size: 64, Funcs: 3,
		Duration: 300 * time.Millisecond, Jobs: 2000, Label: "test",
	}
}

// Every scenario runs clean against a real server and measures something.
func TestScenariosRunClean(t *testing.T) {
	srv := gstest.Start(t, nil)
	for _, sc := range Scenarios {
		t.Run(sc, func(t *testing.T) {
			cfg := smallConfig(srv.Addr)
			cfg.PID = os.Getpid() // the server runs in this process
			r, err := Run(context.Background(), sc, cfg)
			if err != nil {
				t.Fatalf("%s: %v", sc, err)
			}
			if !r.Clean || r.Errors != 0 || r.Jobs <= 0 || r.JobsPerSec <= 0 {
				t.Fatalf("%s: %+v", sc, r)
			}
			switch sc {
			case "fg", "latency", "status":
				if r.LatencyP50 <= 0 || r.LatencyMax < r.LatencyP50 {
					t.Errorf("%s: latency p50 %v max %v", sc, r.LatencyP50, r.LatencyMax)
				}
			case "bg", "drain":
				if r.Jobs != cfg.Jobs || r.Extra["submit_per_sec"] <= 0 || r.Extra["drain_per_sec"] <= 0 {
					t.Errorf("%s: jobs %d, extra %v", sc, r.Jobs, r.Extra)
				}
			case "submit-only":
				if r.Jobs != cfg.Jobs || r.RSSPerJobBytes == 0 && r.Extra["submit_per_sec"] <= 0 {
					t.Errorf("%s: %+v", sc, r)
				}
			}
			if sc != "status" && sc != "submit-only" && r.CPUPerJobUS <= 0 {
				t.Errorf("%s: no CPU per job with a PID given", sc)
			}
		})
	}
}

// A worker that answers with the wrong workload is caught: the run counts
// errors and is not reported clean.
func TestWrongResultsAreCounted(t *testing.T) {
	srv := gstest.Start(t, nil)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		w, err := dial(srv.Addr)
		if err != nil {
			return
		}
		go func() { <-ctx.Done(); w.close() }()
		w.send(wire.CanDo, funcNames(1)[0])
		w.send(wire.GrabJob)
		for w.flush() == nil {
			p, err := w.next()
			if err != nil {
				return
			}
			switch p.Type {
			case wire.JobAssign:
				w.send(wire.WorkComplete, p.Field[0], []byte("not the workload"))
				w.send(wire.GrabJob)
			case wire.NoJob:
				w.send(wire.PreSleep)
			case wire.Noop:
				w.send(wire.GrabJob)
			}
		}
	}()
	cfg := smallConfig(srv.Addr)
	cfg.Workers, cfg.Funcs, cfg.Jobs = 0, 1, 50
	r, _ := Run(context.Background(), "fg", cfg)
	if r == nil || r.Clean || r.Errors == 0 {
		t.Fatalf("wrong results went unnoticed: %+v", r)
	}
}

// The fg loop allocates nothing per job, in the load generator or the
// (in-process) server: a load generator's GC pauses would land in the
// latencies it reports. Counted as mallocs per job beyond a short run's;
// one allocation per job anywhere would add 1.0, while the race detector's
// sync.Pool (which drops items on purpose) accounts for about 0.3.
func TestFGNoAllocationPerJob(t *testing.T) {
	srv := gstest.Start(t, nil)
	mallocs := func(jobs int64) uint64 {
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		cfg := smallConfig(srv.Addr)
		cfg.Duration, cfg.Jobs = 0, jobs
		r, err := Run(context.Background(), "fg", cfg)
		runtime.ReadMemStats(&after)
		if err != nil || !r.Clean {
			t.Fatalf("fg run: %v (clean %v)", err, r != nil && r.Clean)
		}
		return after.Mallocs - before.Mallocs
	}
	short, long := mallocs(2_000), mallocs(30_000)
	if perJob := float64(long-short) / 28_000; perJob > 0.5 {
		t.Fatalf("%.2f allocations per job (%d for 2,000 jobs, %d for 30,000)", perJob, short, long)
	}
}

// The jobs fg clients first put in flight spread evenly over the functions
// (no function gets more than one job more than another), and each client
// still cycles through every function in turn.
func TestFGFunctionsSpread(t *testing.T) {
	for _, c := range []struct{ clients, inFlight, funcs int }{
		{8, 16, 64}, {2000, 2, 64}, {3, 5, 7}, {1, 16, 64}, {8, 16, 1},
	} {
		counts := make([]int, c.funcs)
		for client := 0; client < c.clients; client++ {
			for job := uint64(1); job <= uint64(c.inFlight); job++ {
				counts[fgFunction(client, c.inFlight, job, c.funcs)]++
			}
			seen := make(map[int]bool)
			for job := uint64(1); job <= uint64(c.funcs); job++ {
				seen[fgFunction(client, c.inFlight, job, c.funcs)] = true
			}
			if len(seen) != c.funcs {
				t.Fatalf("%+v: client %d's %d jobs in a row reach %d functions", c, client, c.funcs, len(seen))
			}
		}
		if lo, hi := slices.Min(counts), slices.Max(counts); hi-lo > 1 {
			t.Errorf("%+v: first jobs per function range %d..%d: %v", c, lo, hi, counts)
		}
	}
}
