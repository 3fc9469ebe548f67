package monitor_test

import (
	"encoding/json"
	"strconv"
	"strings"
	"testing"
	"time"

	"gearshard/netio/gstest"
	"gearshard/netio/monitor"
	"gearshard/wire"
)

// readDOM collects what the dashboard shows, from its data- attributes
// and the text of its cells (the text a person reads, not the JSON).
const readDOM = `(() => {
  const text = (id) => { const el = document.getElementById(id); return el ? el.textContent : ""; };
  const rows = (sel, key) => {
    const out = {};
    for (const tr of document.querySelectorAll(sel)) {
      const r = {};
      for (const td of tr.querySelectorAll("[data-field]")) r[td.dataset.field] = td.textContent;
      out[tr.dataset[key]] = r;
    }
    return out;
  };
  if (!document.body || !document.getElementById("functions")) return null;
  return {
    state: document.body.dataset.state || "",
    polls: Number(document.body.dataset.polls || 0),
    rate: text("rate"),
    error: document.getElementById("error").hidden ? "" : text("error"),
    workers: text("conn-workers"),
    queued: text("queued-total"),
    starved: text("starved-note"),
    functions: rows("#functions tbody tr[data-function]", "function"),
    shards: rows("#shards tbody tr[data-shard]", "shard"),
    elements: document.querySelectorAll("#functions tbody *:not(tr):not(td)").length,
  };
})()`

type dashboard struct {
	State     string                       `json:"state"`
	Polls     int                          `json:"polls"`
	Rate      string                       `json:"rate"`
	Error     string                       `json:"error"`
	Workers   string                       `json:"workers"`
	Queued    string                       `json:"queued"`  // the queued card
	Starved   string                       `json:"starved"` // functions with jobs and no worker
	Functions map[string]map[string]string `json:"functions"`
	Shards    map[string]map[string]string `json:"shards"`
	Elements  int                          `json:"elements"` // markup inside the functions table's cells
}

// num reads a figure as shown ("1,234", "12.5"); "—" and missing are -1.
func num(s string) float64 {
	v, err := strconv.ParseFloat(strings.ReplaceAll(s, ",", ""), 64)
	if err != nil {
		return -1
	}
	return v
}

func (d *dashboard) String() string {
	b, _ := json.MarshalIndent(d, "", "  ")
	return string(b)
}

// waitDashboard polls the page's DOM until ready accepts it, failing after
// timeout with the last thing it showed.
func waitDashboard(t *testing.T, p *page, timeout time.Duration, what string, ready func(*dashboard) bool) *dashboard {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		var d *dashboard
		err := p.eval(readDOM, &d)
		if err == nil && d != nil && ready(d) {
			return d
		}
		if time.Now().After(deadline) {
			t.Fatalf("dashboard never showed %s in %v (last error %v); it showed:\n%v\nJS exceptions: %q\n%s",
				what, timeout, err, d, p.b.exceptions(), p.b.logTail())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestDashboard loads the dashboard in headless Chromium while jobs run and
// checks the numbers it renders against the server's own state and the
// admin protocol's status.
func TestDashboard(t *testing.T) {
	requireChromium(t) // fail before setting anything up
	const shards = 3
	srv := gstest.Start(t, func(c *gstest.Config) { c.Engine.Shards = shards })
	url, stopMonitor := startMonitor(t, srv.Engine, monitor.Options{Version: "9.9.9-test"})

	// A known state: a backlog nobody works on (its name is markup, which
	// must show as text), jobs held by silent workers, and steady traffic.
	const backlog, held, busy = `backlog<b>x</b>&amp;`, "held", "busy"
	submitBackground(t, srv.Addr, wire.SubmitJobBG, backlog, 37)
	holdJobs(t, srv.Addr, held, 3)
	ld := startLoad(t, srv.Addr, busy, loadSpec{pause: func(int64) time.Duration { return time.Millisecond }})

	b := startBrowser(t, 1280, 860)
	p := b.open(url)

	// Ready once it has drawn a rate (two good polls) with every row in.
	d := waitDashboard(t, p, 30*time.Second, "a rate and all functions", func(d *dashboard) bool {
		return d.State == "ok" && num(d.Rate) >= 0 && len(d.Functions) == 3 && len(d.Shards) == shards
	})
	st := adminStatus(t, srv.Addr)
	t.Logf("after %d polls: %.0f jobs/s shown, %d load jobs done", d.Polls, num(d.Rate), ld.done.Load())

	field := func(fn, f string) float64 {
		t.Helper()
		row, ok := d.Functions[fn]
		if !ok {
			t.Fatalf("no row for function %q:\n%v", fn, d)
		}
		return num(row[f])
	}
	want := func(fn, f string, w float64) {
		t.Helper()
		if got := field(fn, f); got != w {
			t.Errorf("%q %s: dashboard shows %v, want %v", fn, f, d.Functions[fn][f], w)
		}
	}

	// The backlog: 37 queued at normal priority, nothing running, no worker.
	want(backlog, "total", 37)
	want(backlog, "queued-normal", 37)
	want(backlog, "queued-high", 0)
	want(backlog, "queued-low", 0)
	want(backlog, "running", 0)
	want(backlog, "workers", 0)
	if name := d.Functions[backlog]["name"]; name != backlog {
		t.Errorf("backlog's name shows as %q, want %q", name, backlog)
	}
	if d.Elements != 0 {
		t.Errorf("the functions table holds %d elements besides rows and cells: a name was parsed as HTML", d.Elements)
	}
	// The held jobs: three workers with one job each.
	want(held, "total", 3)
	want(held, "running", 3)
	want(held, "workers", 3)
	want(held, "queued-normal", 0)
	want(held, "completed", 0)
	// The traffic: finished jobs and a rate.
	if got := field(busy, "completed"); got <= 0 {
		t.Errorf("%q completed: dashboard shows %q, want > 0", busy, d.Functions[busy]["completed"])
	}
	want(busy, "workers", 1)
	if r := num(d.Rate); r <= 0 {
		t.Errorf("jobs/s shows %q, want > 0", d.Rate)
	}
	// 3 holders and the busy worker.
	if d.Workers != "4" {
		t.Errorf("worker connections show %q, want 4", d.Workers)
	}

	// The static figures agree with status/prioritystatus right after.
	for _, fn := range []string{backlog, held} {
		s, ok := st[fn]
		if !ok {
			t.Errorf("status has no %q: %v", fn, st)
			continue
		}
		for i, f := range []string{"total", "running", "workers", "queued-high", "queued-normal", "queued-low"} {
			want(fn, f, float64(s[i]))
		}
	}

	// Shards: one row each; each shard's queued and running are the sums
	// of its functions' rows (one consistent snapshot), so all shards
	// together queue the backlog's 37 plus the busy job if it was waiting
	// for its worker at that instant.
	var queued, running float64
	for i := range shards {
		row, ok := d.Shards[strconv.Itoa(i)]
		if !ok {
			t.Fatalf("no row for shard %d:\n%v", i, d)
		}
		var fq, fr float64
		for fn, f := range d.Functions {
			if f["shard"] == strconv.Itoa(i) {
				fq += field(fn, "queued-high") + field(fn, "queued-normal") + field(fn, "queued-low")
				fr += field(fn, "running")
			}
		}
		if q := num(row["queued"]); q != fq {
			t.Errorf("shard %d queued shows %v, its functions %v", i, row["queued"], fq)
		}
		if r := num(row["running"]); r != fr {
			t.Errorf("shard %d running shows %v, its functions %v", i, row["running"], fr)
		}
		queued += num(row["queued"])
		running += num(row["running"])
	}
	busyQueued := field(busy, "queued-normal")
	if busyQueued < 0 || busyQueued > 1 {
		t.Errorf("%q queued %v: one client submits one job at a time", busy, busyQueued)
	}
	if queued != 37+busyQueued {
		t.Errorf("shards queue %v jobs in all, want 37 + %v", queued, busyQueued)
	}
	if num(d.Queued) != queued {
		t.Errorf("the queued card shows %q, the shards %v", d.Queued, queued)
	}
	if !strings.HasPrefix(d.Starved, "1 queued with no worker") {
		t.Errorf("the functions card says %q, want the backlog flagged as having no worker", d.Starved)
	}
	if running < 3 || running > 4 {
		t.Errorf("shards run %v jobs in all, want 3 held + at most 1 busy", running)
	}

	// The figures move: a later poll shows more finished jobs.
	before := field(busy, "completed")
	d = waitDashboard(t, p, 10*time.Second, "more completed jobs", func(d *dashboard) bool {
		return num(d.Functions[busy]["completed"]) > before
	})

	// Stopping the monitor turns the page to a visible error, not stale
	// figures shown as current.
	stopMonitor()
	d = waitDashboard(t, p, 15*time.Second, "the error state", func(d *dashboard) bool {
		return d.State == "error"
	})
	if !strings.Contains(d.Error, "Cannot read api/stats") {
		t.Errorf("error banner shows %q", d.Error)
	}
	if d.Rate != "—" {
		t.Errorf("jobs/s still shows %q with the server gone", d.Rate)
	}
	if ex := b.exceptions(); len(ex) > 0 {
		t.Errorf("JavaScript exceptions: %q", ex)
	}
	if t.Failed() {
		t.Logf("dashboard:\n%v", d)
	}
}
