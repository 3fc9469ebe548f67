package monitor_test

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"gearshard/bench"
	"gearshard/netio/gstest"
	"gearshard/netio/monitor"
	"gearshard/wire"
)

// scrape fetches url+"metrics" and parses it with Prometheus's own parser.
func scrape(t *testing.T, url string) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := http.Get(url + "metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("/metrics: %s", resp.Status)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("/metrics does not parse: %v", err)
	}
	return fams
}

// value returns the sample of family name whose labels include want, and
// whether there is one.
func value(fams map[string]*dto.MetricFamily, name string, want ...string) (float64, bool) {
	f := fams[name]
	if f == nil {
		return 0, false
	}
next:
	for _, m := range f.Metric {
		for i := 0; i+1 < len(want); i += 2 {
			found := false
			for _, l := range m.Label {
				if l.GetName() == want[i] && l.GetValue() == want[i+1] {
					found = true
				}
			}
			if !found {
				continue next
			}
		}
		switch {
		case m.Gauge != nil:
			return m.Gauge.GetValue(), true
		case m.Counter != nil:
			return m.Counter.GetValue(), true
		case m.Histogram != nil:
			return float64(m.Histogram.GetSampleCount()), true
		}
	}
	return 0, false
}

// A scrape of a server that has run a load and holds queued and running
// jobs shows, per function and per shard, what status and prioritystatus
// show, and the counters add up to the jobs that ran.
func TestScrapeMatchesStatus(t *testing.T) {
	srv := gstest.Start(t, func(c *gstest.Config) { c.Engine.Shards = 4 })
	web, _ := startMonitor(t, srv.Engine, monitor.Options{Version: "test"})

	// Scrapes during the load must not disturb it (and -race watches).
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for ctx.Err() == nil {
			if resp, err := http.Get(web + "metrics"); err == nil {
				resp.Body.Close()
			}
		}
	}()
	const loadJobs = 3000
	res, err := bench.Run(context.Background(), "fg", bench.Config{
		Servers: []string{srv.Addr}, Clients: 2, InFlight: 4, Workers: 2, Size: 16, Funcs: 4, Jobs: loadJobs,
	})
	cancel()
	wg.Wait()
	if err != nil || !res.Clean {
		t.Fatalf("load: %v, clean %v", err, res != nil && res.Clean)
	}

	// A held state: queued jobs at each priority with no worker, and two
	// jobs held by workers that do not answer.
	for i := range 10 {
		fn := "queued-" + strconv.Itoa(i)
		submitBackground(t, srv.Addr, wire.SubmitJobBG, fn, i+1)
		submitBackground(t, srv.Addr, wire.SubmitJobHighBG, fn, 1)
	}
	submitBackground(t, srv.Addr, wire.SubmitJobLowBG, "held", 1)
	holdJobs(t, srv.Addr, "held", 2)

	adm := gstest.Dial(t, srv.Addr)
	adm.Admin("version") // an admin connection, for the connection kinds
	status := adminStatus(t, srv.Addr)
	fams := scrape(t, web)

	if len(status) != 4+10+1 {
		t.Fatalf("status lists %d functions: %v", len(status), status)
	}
	for name, cols := range status {
		for i, fam := range []string{"gearshard_function_jobs", "gearshard_function_running_jobs", "gearshard_function_workers",
			"gearshard_function_queued_jobs", "gearshard_function_queued_jobs", "gearshard_function_queued_jobs"} {
			labels := []string{"function", name}
			if i >= 3 {
				labels = append(labels, "priority", []string{"high", "normal", "low"}[i-3])
			}
			if v, ok := value(fams, fam, labels...); !ok || int(v) != cols[i] {
				t.Errorf("%s%v = %v (present %v), status/prioritystatus say %d", fam, labels, v, ok, cols[i])
			}
		}
	}
	// Per shard: the queued jobs of the functions it owns.
	wantShard := make([]int, 4)
	for name, cols := range status {
		wantShard[srv.Engine.ShardOf([]byte(name))] += cols[3] + cols[4] + cols[5]
	}
	for i, want := range wantShard {
		if v, ok := value(fams, "gearshard_shard_queued_jobs", "shard", strconv.Itoa(i)); !ok || int(v) != want {
			t.Errorf("shard %d queued %v, want %d", i, v, want)
		}
	}
	// Counters: every load job was submitted, completed and timed once.
	var submitted, completed, waits, runs float64
	for i := range 4 {
		fn := "bench-" + strconv.Itoa(i)
		s, _ := value(fams, "gearshard_jobs_submitted_total", "function", fn)
		c, _ := value(fams, "gearshard_jobs_completed_total", "function", fn)
		wn, _ := value(fams, "gearshard_job_queue_wait_seconds", "function", fn)
		rn, _ := value(fams, "gearshard_job_run_seconds", "function", fn)
		submitted, completed, waits, runs = submitted+s, completed+c, waits+wn, runs+rn
	}
	if ran := float64(res.Jobs); ran < loadJobs || submitted != ran || completed != ran || waits != ran || runs != ran {
		t.Errorf("load functions: submitted %v completed %v waits %v runs %v, want the %d jobs the load ran, each",
			submitted, completed, waits, runs, res.Jobs)
	}
	if v, _ := value(fams, "gearshard_job_queue_wait_seconds", "function", "held"); v != 2 {
		t.Errorf("held: %v wait observations, want 2", v)
	}
	var finished float64
	for i := range 4 {
		v, _ := value(fams, "gearshard_shard_jobs_finished_total", "shard", strconv.Itoa(i))
		finished += v
	}
	if finished != float64(res.Jobs) {
		t.Errorf("shards finished %v jobs, want %d", finished, res.Jobs)
	}
	// Connections: the two holding workers and the admin connection, once
	// the server has seen the submitting and polling connections close.
	wantKinds := map[string]float64{"client": 0, "worker": 2, "admin": 1}
	got := map[string]float64{}
	gstest.Eventually(t, 10*time.Second, func() bool {
		f := scrape(t, web)
		for kind := range wantKinds {
			got[kind], _ = value(f, "gearshard_connections", "kind", kind)
		}
		return maps.Equal(got, wantKinds)
	}, "connections by kind %v, want %v", got, wantKinds)
	for _, fam := range []string{"go_goroutines", "process_resident_memory_bytes", "gearshard_build_info"} {
		if fams[fam] == nil {
			t.Errorf("no %s", fam)
		}
	}
}

// Names past the cap are summed under one label, and which names keep
// their own series does not change as more arrive. A scrape meets names
// shard by shard, each shard's in name order.
func TestMetricsCapFoldsFunctions(t *testing.T) {
	srv := gstest.Start(t, func(c *gstest.Config) { c.Engine.Shards = 2 })
	web, _ := startMonitor(t, srv.Engine, monitor.Options{MaxFunctions: 3})
	submit := func(fn string) { submitBackground(t, srv.Addr, wire.SubmitJobBG, fn, 1) }
	names := []string{"m1", "m2", "m3", "m4", "m5"}
	for _, fn := range names {
		submit(fn)
	}
	slices.SortFunc(names, func(a, b string) int {
		return cmp.Or(cmp.Compare(srv.Engine.ShardOf([]byte(a)), srv.Engine.ShardOf([]byte(b))), strings.Compare(a, b))
	})
	first := names[:3]
	check := func(own []string, other float64) {
		t.Helper()
		fams := scrape(t, web)
		var labels []string
		for _, m := range fams["gearshard_function_jobs"].Metric {
			labels = append(labels, m.Label[0].GetValue())
		}
		want := append(append([]string(nil), own...), monitor.Other)
		slices.Sort(want) // as the exposition format lists them
		if fmt.Sprint(labels) != fmt.Sprint(want) {
			t.Fatalf("function labels %v, want %v", labels, want)
		}
		if v, _ := value(fams, "gearshard_function_jobs", "function", monitor.Other); v != other {
			t.Errorf("%s jobs %v, want %v", monitor.Other, v, other)
		}
		if v, _ := value(fams, "gearshard_metrics_folded_functions"); v != other {
			t.Errorf("folded functions %v, want %v", v, other)
		}
	}
	check(first, 2)
	submit("a0") // sorts first, but arrived after the cap was reached
	check(first, 3)
}

// Connections refused at the connection limit are counted.
func TestMetricsCountRefusedConnections(t *testing.T) {
	srv := gstest.Start(t, func(c *gstest.Config) { c.Net.MaxConns = 1 })
	web, _ := startMonitor(t, srv.Engine, monitor.Options{Refused: srv.Net.Refused})
	held := gstest.Dial(t, srv.Addr)
	held.Send(wire.EchoReq, "in")
	held.Expect(wire.EchoRes, "in")
	for range 2 {
		over := gstest.Dial(t, srv.Addr)
		over.ExpectClosed()
	}
	if v, ok := value(scrape(t, web), "gearshard_connections_refused_total"); !ok || v != 2 {
		t.Fatalf("gearshard_connections_refused_total = %v (present %v), want 2", v, ok)
	}
}

// Connections cut off for the buffer budget are counted.
func TestMetricsCountBufferCutoffs(t *testing.T) {
	srv := gstest.Start(t, func(c *gstest.Config) { c.Net.MaxBuffered, c.Net.MaxPacket = 1<<20, 4<<20 })
	web, _ := startMonitor(t, srv.Engine, monitor.Options{BufferCutoffs: srv.Net.BufferCutoffs})
	if v, ok := value(scrape(t, web), "gearshard_buffer_budget_cutoffs_total"); !ok || v != 0 {
		t.Fatalf("gearshard_buffer_budget_cutoffs_total = %v (present %v), want 0", v, ok)
	}
	hog := gstest.Dial(t, srv.Addr)
	// A header announcing 3 MiB, then 2 MiB of it: past the 1 MiB budget.
	hdr := wire.AppendRequest(nil, wire.EchoReq, make([]byte, 3<<20))
	go func() { _, _ = hog.Raw().Write(hdr[:2<<20]) }()
	hog.TO = 10 * time.Second
	hog.ExpectClosed()
	if v, ok := value(scrape(t, web), "gearshard_buffer_budget_cutoffs_total"); !ok || v != 1 {
		t.Fatalf("gearshard_buffer_budget_cutoffs_total = %v (present %v), want 1", v, ok)
	}
}

// The dashboard's JSON says the same as the metrics.
func TestStatsJSON(t *testing.T) {
	srv := gstest.Start(t, nil)
	web, _ := startMonitor(t, srv.Engine, monitor.Options{Version: "v-test"})
	c := gstest.Dial(t, srv.Addr)
	for range 3 {
		c.Send(wire.SubmitJobBG, "j", "", "x")
		c.Expect(wire.JobCreated)
	}
	resp, err := http.Get(web + "api/stats")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var got struct {
		Version   string
		Functions []struct {
			Name   string
			Total  int
			Queued map[string]int
		}
		Connections struct{ Clients int }
	}
	if err := json.NewDecoder(resp.Body).Decode(&got); err != nil {
		t.Fatal(err)
	}
	if got.Version != "v-test" || len(got.Functions) != 1 || got.Functions[0].Name != "j" ||
		got.Functions[0].Total != 3 || got.Functions[0].Queued["normal"] != 3 || got.Connections.Clients != 1 {
		t.Fatalf("/api/stats: %+v", got)
	}
}
