package monitor_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"gearshard/bench"
	"gearshard/netio/gstest"
	"gearshard/netio/monitor"
	"gearshard/wire"
)

// scrape fetches /metrics and parses it with Prometheus's own parser.
func scrape(t *testing.T, url string) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := http.Get(url + "/metrics")
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

// statusRows parses "status" or "prioritystatus" into name -> columns.
func statusRows(t *testing.T, text string) map[string][]int {
	t.Helper()
	rows := map[string][]int{}
	for _, line := range strings.Split(strings.TrimSuffix(text, ".\n"), "\n") {
		if line == "" {
			continue
		}
		f := strings.Split(line, "\t")
		var nums []int
		for _, s := range f[1:] {
			n, err := strconv.Atoi(s)
			if err != nil {
				t.Fatalf("status line %q", line)
			}
			nums = append(nums, n)
		}
		rows[f[0]] = nums
	}
	return rows
}

// A scrape of a server that has run a load and holds queued and running
// jobs shows, per function and per shard, what status and prioritystatus
// show, and the counters add up to the jobs that ran.
func TestScrapeMatchesStatus(t *testing.T) {
	srv := gstest.Start(t, func(c *gstest.Config) { c.Engine.Shards = 4 })
	web := httptest.NewServer(monitor.New(srv.Engine, monitor.Options{Version: "test"}))
	defer web.Close()

	// Scrapes during the load must not disturb it (and -race watches).
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for ctx.Err() == nil {
			if resp, err := http.Get(web.URL + "/metrics"); err == nil {
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
	// jobs held by a worker that does not answer.
	c := gstest.Dial(t, srv.Addr)
	for i := range 10 {
		fn := "queued-" + strconv.Itoa(i)
		for range i + 1 {
			c.Send(wire.SubmitJobBG, fn, "", "x")
			c.Expect(wire.JobCreated)
		}
		c.Send(wire.SubmitJobHighBG, fn, "", "h")
		c.Expect(wire.JobCreated)
	}
	for range 3 {
		c.Send(wire.SubmitJobLowBG, "held", "", "y")
		c.Expect(wire.JobCreated)
	}
	w := gstest.Dial(t, srv.Addr)
	w.Send(wire.CanDo, "held")
	for range 2 {
		w.Send(wire.GrabJob)
		w.Expect(wire.JobAssign)
	}

	adm := gstest.Dial(t, srv.Addr)
	status := statusRows(t, adm.Admin("status"))
	prio := statusRows(t, adm.Admin("prioritystatus"))
	fams := scrape(t, web.URL)

	if len(status) != 4+10+1 {
		t.Fatalf("status lists %d functions: %v", len(status), status)
	}
	for name, cols := range status {
		for i, fam := range []string{"gearshard_function_jobs", "gearshard_function_running_jobs", "gearshard_function_workers"} {
			if v, ok := value(fams, fam, "function", name); !ok || int(v) != cols[i] {
				t.Errorf("%s{function=%q} = %v (present %v), status says %d", fam, name, v, ok, cols[i])
			}
		}
		for i, p := range []string{"high", "normal", "low"} {
			if v, ok := value(fams, "gearshard_function_queued_jobs", "function", name, "priority", p); !ok || int(v) != prio[name][i] {
				t.Errorf("queued{function=%q,priority=%s} = %v, prioritystatus says %d", name, p, v, prio[name][i])
			}
		}
	}
	// Per shard: the queued jobs of the functions it owns.
	wantShard := make([]int, 4)
	for name, cols := range prio {
		wantShard[srv.Engine.ShardOf([]byte(name))] += cols[0] + cols[1] + cols[2]
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
	// Connections: c submitted, w registered, adm ran commands.
	for kind, want := range map[string]float64{"client": 1, "worker": 1, "admin": 1} {
		if v, _ := value(fams, "gearshard_connections", "kind", kind); v != want {
			t.Errorf("connections{kind=%s} = %v, want %v", kind, v, want)
		}
	}
	for _, fam := range []string{"go_goroutines", "process_resident_memory_bytes", "gearshard_build_info"} {
		if fams[fam] == nil {
			t.Errorf("no %s", fam)
		}
	}
}

// Names past the cap are summed under one label, and which names keep
// their own series does not change as more arrive.
func TestMetricsCapFoldsFunctions(t *testing.T) {
	srv := gstest.Start(t, func(c *gstest.Config) { c.Engine.Shards = 2 })
	web := httptest.NewServer(monitor.New(srv.Engine, monitor.Options{MaxFunctions: 3}))
	defer web.Close()
	c := gstest.Dial(t, srv.Addr)
	submit := func(fn string) {
		c.Send(wire.SubmitJobBG, fn, "", "x")
		c.Expect(wire.JobCreated)
	}
	for _, fn := range []string{"m1", "m2", "m3", "m4", "m5"} {
		submit(fn)
	}
	check := func(own []string, other float64) {
		t.Helper()
		fams := scrape(t, web.URL)
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
	check([]string{"m1", "m2", "m3"}, 2)
	submit("a0") // sorts first, but arrived after the cap was reached
	check([]string{"m1", "m2", "m3"}, 3)
}

// The dashboard's JSON says the same as the metrics.
func TestStatsJSON(t *testing.T) {
	srv := gstest.Start(t, nil)
	web := httptest.NewServer(monitor.New(srv.Engine, monitor.Options{Version: "v-test"}))
	defer web.Close()
	c := gstest.Dial(t, srv.Addr)
	for range 3 {
		c.Send(wire.SubmitJobBG, "j", "", "x")
		c.Expect(wire.JobCreated)
	}
	resp, err := http.Get(web.URL + "/api/stats")
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
