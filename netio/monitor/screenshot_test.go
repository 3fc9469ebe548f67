//go:build screenshot

package monitor_test

import (
	"math"
	"os"
	"testing"
	"time"

	"gearshard/netio/gstest"
	"gearshard/netio/monitor"
	"gearshard/wire"
)

// TestScreenshot regenerates dashboard.png, the README's picture of the
// dashboard, under a made-up but plausible load on four shards:
//
//	go test -tags screenshot ./netio/monitor -run Screenshot -v
//
// Behind a build tag: it takes a minute for the jobs/s sparkline to fill,
// and it writes into the source tree.
func TestScreenshot(t *testing.T) {
	srv := gstest.Start(t, func(c *gstest.Config) { c.Engine.Shards = 4 })
	url, _ := startMonitor(t, srv.Engine, monitor.Options{Version: "1.1.20+gearshard.0.1.0"})

	// Backlogs: one with no worker at all, one behind busy workers.
	submitBackground(t, srv.Addr, wire.SubmitJobLowBG, "reports.nightly", 120)
	submitBackground(t, srv.Addr, wire.SubmitJobHighBG, "search.reindex", 5)
	submitBackground(t, srv.Addr, wire.SubmitJobBG, "search.reindex", 37)
	holdJobs(t, srv.Addr, "video.transcode", 4)
	submitBackground(t, srv.Addr, wire.SubmitJobBG, "video.transcode", 18)

	// Traffic whose rate swells and ebbs, so the sparkline has a shape.
	start := time.Now()
	wave := func(base time.Duration, period, phase float64) func(int64) time.Duration {
		return func(int64) time.Duration {
			x := time.Since(start).Seconds()/period*2*math.Pi + phase
			return time.Duration(float64(base) * (1.1 + math.Sin(x) + 0.3*math.Sin(3.1*x)))
		}
	}
	every := func(n int64, typ wire.Type) func(int64) wire.Type {
		return func(i int64) wire.Type {
			if i%n == n-1 {
				return typ
			}
			return wire.WorkComplete
		}
	}
	fixed := func(d time.Duration) func(int64) time.Duration { return func(int64) time.Duration { return d } }
	for range 2 {
		startLoad(t, srv.Addr, "image.resize", loadSpec{pause: wave(2*time.Millisecond, 40, 0), run: fixed(3 * time.Millisecond)})
	}
	startLoad(t, srv.Addr, "email.send", loadSpec{pause: wave(4*time.Millisecond, 40, 1), run: fixed(6 * time.Millisecond), outcome: every(37, wire.WorkFail)})
	startLoad(t, srv.Addr, "webhook.deliver", loadSpec{pause: wave(3*time.Millisecond, 25, 2), run: fixed(time.Millisecond), outcome: every(23, wire.WorkException)})
	startLoad(t, srv.Addr, "thumbnail.render", loadSpec{pause: wave(5*time.Millisecond, 40, 0.5), run: fixed(2 * time.Millisecond)})
	startLoad(t, srv.Addr, "billing.invoice", loadSpec{pause: fixed(40 * time.Millisecond), run: fixed(12 * time.Millisecond)})

	b := startBrowser(t, 1280, 860)
	p := b.open(url)
	waitDashboard(t, p, 90*time.Second, "a full sparkline", func(d *dashboard) bool {
		return d.State == "ok" && d.Polls > 62
	})
	png, err := p.screenshot()
	if err != nil {
		b.fatal(err)
	}
	if err := os.WriteFile("dashboard.png", png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("wrote dashboard.png (%d bytes)", len(png))
}
