// Package monitor is gearshard's operators' view: Prometheus metrics at
// /metrics, the same figures as JSON at /api/stats, and a live dashboard at
// / served from files embedded in the binary. It only reads the engine's
// Stats (copied shard by shard, like the admin commands), so scraping never
// holds up job traffic for longer than those copies.
package monitor

import (
	"context"
	"embed"
	"encoding/json"
	"errors"
	"io/fs"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"gearshard/engine"
)

// Other is the function label that stands for every function past the cap.
const Other = "_other_"

// DefaultMaxFunctions is how many function names get series of their own.
const DefaultMaxFunctions = 1000

// Options configure the monitor.
type Options struct {
	Version string
	// MaxFunctions caps the functions with series (and dashboard rows) of
	// their own; later names are summed under Other, so clients inventing
	// names cannot blow up the scrape. 0 means DefaultMaxFunctions.
	MaxFunctions int
	// Refused counts connections closed because the connection limit was
	// reached (netio.Server.Refused); nil leaves the series out.
	Refused func() uint64
	// BufferCutoffs counts connections cut off because the buffer budget
	// was spent (netio.Server.BufferCutoffs); nil leaves the series out.
	BufferCutoffs func() uint64
}

//go:embed web
var webFiles embed.FS

// Monitor serves /metrics, /api/stats and the dashboard.
type Monitor struct {
	e       *engine.Engine
	opts    Options
	started time.Time
	reg     *prometheus.Registry
	mux     *http.ServeMux

	mu      sync.Mutex
	labeled map[string]bool // names given their own series: sticky, at most MaxFunctions
}

// New builds the monitor of e.
func New(e *engine.Engine, opts Options) *Monitor {
	if opts.MaxFunctions <= 0 {
		opts.MaxFunctions = DefaultMaxFunctions
	}
	m := &Monitor{e: e, opts: opts, started: time.Now(), labeled: make(map[string]bool)}
	m.reg = prometheus.NewRegistry()
	m.reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		(*engineCollector)(m),
	)
	web, err := fs.Sub(webFiles, "web")
	if err != nil {
		panic(err) // the embedded tree is part of the build
	}
	m.mux = http.NewServeMux()
	m.mux.Handle("GET /metrics", promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{}))
	m.mux.HandleFunc("GET /api/stats", m.serveStats)
	m.mux.Handle("GET /", http.FileServerFS(web))
	return m
}

// ServeHTTP routes a request to /metrics, /api/stats or the dashboard.
func (m *Monitor) ServeHTTP(w http.ResponseWriter, r *http.Request) { m.mux.ServeHTTP(w, r) }

// Serve answers on l until ctx ends.
func (m *Monitor) Serve(ctx context.Context, l net.Listener) error {
	srv := &http.Server{
		Handler:           m,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      30 * time.Second,
		MaxHeaderBytes:    16 << 10,
	}
	go func() {
		<-ctx.Done()
		srv.Close()
	}()
	if err := srv.Serve(l); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// view is the engine's stats with functions past the cap folded into one
// Other row; the first MaxFunctions names seen keep their own rows for the
// life of the process, so a series never jumps between labels. Folding
// happens inside the engine's copy, so a scrape's memory follows the cap,
// not the number of names.
func (m *Monitor) view() engine.Stats {
	m.mu.Lock()
	defer m.mu.Unlock()
	st := m.e.Stats(func(name string) bool {
		if !m.labeled[name] && len(m.labeled) < m.opts.MaxFunctions {
			m.labeled[name] = true
		}
		return m.labeled[name]
	})
	if st.Folded > 0 {
		st.Other.Name = Other
		st.Functions = append(st.Functions, st.Other)
	}
	return st
}

// statsJSON is /api/stats: what the dashboard draws.
type statsJSON struct {
	Version         string         `json:"version"`
	UptimeSeconds   float64        `json:"uptime_seconds"`
	FoldedFunctions int            `json:"folded_functions"` // functions counted under "_other_"
	Functions       []functionJSON `json:"functions"`
	Shards          []shardJSON    `json:"shards"`
	Connections     connJSON       `json:"connections"`
}

type functionJSON struct {
	Name       string         `json:"name"`
	Shard      int            `json:"shard"` // -1 for "_other_"
	Total      int            `json:"total"`
	Queued     map[string]int `json:"queued"` // high, normal, low
	Running    int            `json:"running"`
	Workers    int            `json:"workers"`
	Submitted  uint64         `json:"submitted"`
	Coalesced  uint64         `json:"coalesced"`
	Completed  uint64         `json:"completed"`
	Failed     uint64         `json:"failed"`
	Exceptions uint64         `json:"exceptions"`
	Retried    uint64         `json:"retried"`
	WaitAvg    float64        `json:"wait_avg_seconds"` // mean queue wait since start
	RunAvg     float64        `json:"run_avg_seconds"`  // mean run time since start
}

type shardJSON struct {
	Index     int    `json:"index"`
	Functions int    `json:"functions"`
	Queued    int    `json:"queued"`
	Running   int    `json:"running"`
	Submitted uint64 `json:"submitted"`
	Finished  uint64 `json:"finished"`
}

type connJSON struct {
	Workers  int    `json:"workers"`
	Clients  int    `json:"clients"`
	Admins   int    `json:"admins"`
	Idle     int    `json:"idle"`
	Accepted uint64 `json:"accepted"`
}

func (m *Monitor) serveStats(w http.ResponseWriter, r *http.Request) {
	st := m.view()
	out := statsJSON{
		Version:         m.opts.Version,
		UptimeSeconds:   time.Since(m.started).Seconds(),
		FoldedFunctions: st.Folded,
		Functions:       make([]functionJSON, 0, len(st.Functions)),
		Connections: connJSON{Workers: st.Connections.Workers, Clients: st.Connections.Clients,
			Admins: st.Connections.Admins, Idle: st.Connections.Idle, Accepted: st.Connections.Accepted},
	}
	for _, f := range st.Functions {
		out.Functions = append(out.Functions, functionJSON{
			Name: f.Name, Shard: f.Shard, Total: f.Total, Running: f.Running, Workers: f.Workers,
			Queued:    map[string]int{"high": f.Queued[0], "normal": f.Queued[1], "low": f.Queued[2]},
			Submitted: f.Submitted, Coalesced: f.Coalesced, Completed: f.Completed, Failed: f.Failed,
			Exceptions: f.Exceptions, Retried: f.Retried,
			WaitAvg: mean(f.Wait), RunAvg: mean(f.Run),
		})
	}
	for _, s := range st.Shards {
		out.Shards = append(out.Shards, shardJSON(s))
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	json.NewEncoder(w).Encode(out)
}

func mean(h engine.Histogram) float64 {
	if n := h.Count(); n > 0 {
		return h.Sum / float64(n)
	}
	return 0
}
