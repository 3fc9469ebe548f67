package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"gearshard/bench"
	"gearshard/netio/gstest"
	"gearshard/wire"
)

// Debian's Prometheus scrapes a gearshard that has run a load and holds
// queued and running jobs: what it stores per function and per shard is
// what status says, and promtool finds nothing wrong with the exposition.
func TestInteropPrometheusScrape(t *testing.T) {
	requirePeers(t, "prometheus", "promtool", "gearman")
	ts := startServer(t, func(c *ServeCmd) {
		c.MetricsListen = "127.0.0.1:0"
		c.Shards = 4
	})
	res, err := bench.Run(context.Background(), "fg", bench.Config{
		Servers: []string{ts.addr}, Clients: 2, InFlight: 4, Workers: 2, Size: 16, Funcs: 3, Jobs: 2000,
	})
	if err != nil || !res.Clean {
		t.Fatalf("load: %v (clean %v)", err, res != nil && res.Clean)
	}
	// Held state: background jobs queued by the gearman CLI, and a worker
	// holding two jobs of another function.
	for i, fn := range []string{"resize", "thumbnail", "email"} {
		for range i + 2 {
			if _, stderr, code := runPeer(t, str("x"), "gearman", ts.hp("-b", "-f", fn)...); code != 0 {
				t.Fatalf("gearman -b: exit %d: %s", code, stderr)
			}
		}
	}
	c := gstest.Dial(t, ts.addr)
	for range 2 {
		c.Send(wire.SubmitJobBG, "report", "", "r")
		c.Expect(wire.JobCreated)
	}
	w := gstest.Dial(t, ts.addr)
	w.Send(wire.CanDo, "report")
	for range 2 {
		w.Send(wire.GrabJob)
		w.Expect(wire.JobAssign)
	}
	status := ts.admin("status")

	// promtool's linter on the exposition as a scraper sees it.
	resp, err := http.Get("http://" + ts.metrics + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	exposition, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	if out, _, code := runPeer(t, str(string(exposition)), "promtool", "check", "metrics"); code != 0 {
		t.Fatalf("promtool check metrics: exit %d:\n%s", code, out)
	}

	prom := startPrometheus(t, ts.metrics)
	want := map[string]string{} // PromQL → value
	var queued int
	for _, line := range strings.Split(strings.TrimSuffix(status, ".\n"), "\n") {
		f := strings.Split(line, "\t")
		if len(f) != 4 {
			continue // the blank end of the listing
		}
		want[fmt.Sprintf(`gearshard_function_jobs{function=%q}`, f[0])] = f[1]
		want[fmt.Sprintf(`gearshard_function_running_jobs{function=%q}`, f[0])] = f[2]
		want[fmt.Sprintf(`gearshard_function_workers{function=%q}`, f[0])] = f[3]
		total, _ := strconv.Atoi(f[1])
		running, _ := strconv.Atoi(f[2])
		queued += total - running
	}
	want[`sum(gearshard_shard_queued_jobs)`] = strconv.Itoa(queued)
	want[`sum(gearshard_shard_running_jobs)`] = "2"
	want[`count(gearshard_shard_functions)`] = "4"
	want[`sum(gearshard_jobs_completed_total{function=~"bench-.*"})`] = strconv.FormatInt(res.Jobs, 10)
	want[`sum(gearshard_shard_jobs_finished_total)`] = strconv.FormatInt(res.Jobs, 10)
	want[`sum(gearshard_job_run_seconds_count)`] = strconv.FormatInt(res.Jobs, 10)
	want[`gearshard_function_queued_jobs{function="email",priority="normal"}`] = "4"
	want[`gearshard_connections{kind="worker"}`] = "1"
	if len(want) < 10 {
		t.Fatalf("status gave too little to compare:\n%s", status)
	}
	waitFor(t, "Prometheus to store what status shows", func() (bool, string) {
		var diff []string
		for q, v := range want {
			if got := prom.query(t, q); got != v {
				diff = append(diff, fmt.Sprintf("%s = %q, want %s", q, got, v))
			}
		}
		return len(diff) == 0, strings.Join(diff, "\n")
	})
}

type prometheus struct{ base string }

// startPrometheus runs Debian's prometheus on a free loopback port,
// scraping target every second, with its data in a temporary directory.
func startPrometheus(t *testing.T, target string) *prometheus {
	t.Helper()
	dir := t.TempDir()
	cfg := filepath.Join(dir, "prometheus.yml")
	conf := fmt.Sprintf("global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n  - job_name: gearshard\n    static_configs:\n      - targets: [%q]\n", target)
	if err := os.WriteFile(cfg, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close() // prometheus binds it next; nothing else here takes ephemeral ports by number
	p := background(t, nil, "prometheus", "--config.file="+cfg, "--storage.tsdb.path="+filepath.Join(dir, "data"),
		"--web.listen-address="+addr, "--log.level=warn")
	prom := &prometheus{base: "http://" + addr}
	waitFor(t, "prometheus to be ready", func() (bool, string) {
		resp, err := http.Get(prom.base + "/-/ready")
		if err != nil {
			return false, fmt.Sprintf("%v; stderr:\n%s", err, p.stderr.String())
		}
		resp.Body.Close()
		return resp.StatusCode == 200, resp.Status
	})
	return prom
}

// query runs an instant PromQL query; it returns the single sample's value
// as Prometheus prints it, or a description of what came back instead.
func (p *prometheus) query(t *testing.T, q string) string {
	t.Helper()
	client := http.Client{Timeout: 5 * time.Second}
	resp, err := client.Get(p.base + "/api/v1/query?query=" + url.QueryEscape(q))
	if err != nil {
		return err.Error()
	}
	defer resp.Body.Close()
	var body struct {
		Status string
		Data   struct {
			Result []struct{ Value [2]any }
		}
		Error string
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		return err.Error()
	}
	if body.Status != "success" || len(body.Data.Result) != 1 {
		return fmt.Sprintf("status %s, %d samples %s", body.Status, len(body.Data.Result), body.Error)
	}
	v, _ := body.Data.Result[0].Value[1].(string)
	return v
}
