package bench

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"time"
)

// SuiteConfig points the standard comparison at the two binaries.
type SuiteConfig struct {
	Gearmand  string // gearmand binary
	Gearshard string // gearshard binary
	Rounds    int
	Quick     bool      // shorter runs and queues: a smoke test of the suite itself
	Log       io.Writer // progress notes (one line per step)
}

// step is one comparison of the suite and the bars it is judged by.
type step struct {
	title    string
	scenario string
	cfg      Config
	a, b     Target
	rounds   int
	bars     []bar
	apart    bool // server on one CPU, load generator on the others (see affinity.go)
}

// bar is one performance target, read off a comparison row.
type bar struct {
	text   string
	metric string
	use    string // "ratio": the B/A median; "b": B's median value
	ok     func(v float64) bool
	unit   string
}

// RunSuite runs the standard scenarios, gearmand against gearshard, and
// writes a Markdown report with the machine's description, every table,
// and each performance bar with the figure measured for it.
func RunSuite(ctx context.Context, sc SuiteConfig, out io.Writer) error {
	dur, big, small := 10*time.Second, int64(1_000_000), int64(10_000)
	gdDrain := int64(100_000) // gearmand drains ~6k jobs/s: a million would take minutes per round
	if sc.Quick {
		dur, big, small, gdDrain = time.Second, 20_000, 2_000, 5_000
	}
	rounds := max(sc.Rounds, 1)
	// gearmand removes its pid file on exit: give it files of its own.
	tmp, err := os.MkdirTemp("", "gearshard-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	gd := func(threads string) Target {
		return Target{Label: "gearmand -t " + threads, Cmd: []string{sc.Gearmand, "-L", "127.0.0.1", "-p", "{port}",
			"-t", threads, "-l", filepath.Join(tmp, "gearmand-{port}.log"), "-P", filepath.Join(tmp, "gearmand-{port}.pid")}}
	}
	gs := func(args ...string) Target {
		label := "gearshard"
		if len(args) > 0 {
			label += " " + strings.Join(args, " ")
		}
		return Target{Label: label, Cmd: append([]string{sc.Gearshard, "-L", "127.0.0.1", "-p", "{port}", "-l", "none"}, args...)}
	}
	fg := Config{Clients: 8, InFlight: 16, Workers: 8, Size: 64, Funcs: 1, Duration: dur}
	fg64 := fg
	fg64.Funcs = 64
	lat := Config{Size: 64, Funcs: 1, Duration: dur / 2}
	queue := func(n int64, funcs int) Config {
		return Config{Clients: 8, InFlight: 64, Workers: 8, Size: 64, Funcs: funcs, Jobs: n, Duration: dur}
	}
	faster := func(min float64) func(float64) bool { return func(v float64) bool { return v >= min } }
	cheaper := func(max float64) func(float64) bool { return func(v float64) bool { return v <= max } }
	steps := []step{
		{title: "fg, 1 function", scenario: "fg", cfg: fg, a: gd("0"), b: gs(), rounds: rounds, bars: []bar{
			{"fg F=1: server CPU per job ≤ 0.5× gearmand -t 0", "CPU/job", "ratio", cheaper(0.5), "×"},
			{"fg F=1: jobs/s ≥ 1.15× gearmand -t 0", "jobs/s", "ratio", faster(1.15), "×"},
		}},
		{title: "fg, 1 function, gearmand's default threads", scenario: "fg", cfg: fg, a: gd("4"), b: gs(), rounds: rounds},
		{title: "fg, 64 functions", scenario: "fg", cfg: fg64, a: gd("0"), b: gs(), rounds: rounds, bars: []bar{
			{"fg F=64: server CPU per job ≤ 0.5× gearmand -t 0", "CPU/job", "ratio", cheaper(0.5), "×"},
			{"fg F=64: jobs/s ≥ 1.15× gearmand -t 0", "jobs/s", "ratio", faster(1.15), "×"},
			{"fg F=64: p99 latency ≤ 5 ms", "p99", "b", cheaper(5000), "µs"},
		}},
		{title: "fg, 64 functions, server and load generator on separate CPUs (as clients on other hosts), for reference",
			scenario: "fg", cfg: fg64, a: gd("0"), b: gs(), rounds: rounds, apart: true},
		{title: "latency (one job in flight)", scenario: "latency", cfg: lat, a: gd("0"), b: gs(), rounds: rounds, bars: []bar{
			{"latency: round trip p50 ≤ gearmand's", "p50", "ratio", cheaper(1), "×"},
		}},
		{title: "latency, server and load generator on separate CPUs (as a client on another host), for reference",
			scenario: "latency", cfg: lat, a: gd("0"), b: gs(), rounds: rounds, apart: true},
		{title: fmt.Sprintf("drain %d queued jobs", gdDrain), scenario: "drain", cfg: queue(gdDrain, 1), a: gd("0"), b: gs(), rounds: rounds},
		{title: fmt.Sprintf("drain %d vs %d queued jobs (gearshard)", small, big), scenario: "drain", cfg: queue(small, 1),
			a: gs(), b: gs(), rounds: rounds},
		{title: fmt.Sprintf("submit-only %d jobs", big), scenario: "submit-only", cfg: queue(big, 1), a: gd("0"), b: gs(), rounds: rounds, bars: []bar{
			{"submit-only: enqueue rate ≥ 1.5× gearmand's", "submit_per_sec", "ratio", faster(1.5), "×"},
			{"submit-only: memory per queued 64-byte job ≤ 300 bytes", "RSS/job", "b", cheaper(300), "bytes"},
		}},
		{title: fmt.Sprintf("status with %d jobs over 1000 functions, fg load running", big), scenario: "status",
			cfg: func() Config { c := queue(big, 1000); c.Duration = dur; return c }(), a: gd("0"), b: gs(), rounds: rounds, bars: []bar{
				{"status at 1M jobs / 1000 functions: p99 ≤ 1 ms under fg load", "p99", "b", cheaper(1000), "µs"},
			}},
		{title: "multi-core: gearshard -t 2 vs -t 1 (fg, 64 functions)", scenario: "fg", cfg: fg64, a: gs("-t", "1"), b: gs("-t", "2"),
			rounds: rounds, bars: []bar{
				{"-t 2 CPU per job within 10% of -t 1", "CPU/job", "ratio", cheaper(1.10), "×"},
			}},
		{title: "multi-core: gearmand -t 2 vs -t 1 (fg, 64 functions), for reference", scenario: "fg", cfg: fg64,
			a: gd("1"), b: gd("2"), rounds: rounds},
	}

	fmt.Fprintf(out, "# gearshard vs gearmand\n\n%s\n", describeMachine(sc.Gearmand))
	fmt.Fprintf(out, "Reproduce: `make bench-compare` (or `gearshard bench suite --rounds %d`). Every table: A is the baseline, "+
		"B the candidate; rounds alternate A B A B with a fresh server each round; ratios are B/A per round.\n\n", rounds)
	var verdicts []string
	for _, st := range steps {
		if sc.Log != nil {
			fmt.Fprintf(sc.Log, "bench suite: %s ...\n", st.title)
		}
		cfg := st.cfg
		var cmp *Comparison
		var err error
		switch {
		case st.a.Label == st.b.Label:
			// The same server at two queue sizes: drain per job must not slow down as the queue grows.
			cmp, err = drainScaling(ctx, st, big)
		case st.apart:
			cmp, err = compareApart(ctx, st)
		default:
			cmp, err = Compare(ctx, st.scenario, cfg, st.a, st.b, st.rounds)
		}
		fmt.Fprintf(out, "## %s\n\n", st.title)
		if cmp != nil {
			if werr := WriteComparison(out, cmp); werr != nil {
				return werr
			}
		}
		if err != nil {
			fmt.Fprintf(out, "\n**Failed:** %v\n", err)
		}
		fmt.Fprintln(out)
		if cmp == nil {
			continue
		}
		rows := cmp.Ratios()
		for _, b := range st.bars {
			verdicts = append(verdicts, judge(b, rows, cmp.A))
		}
		if st.a.Label == st.b.Label {
			verdicts = append(verdicts, drainVerdicts(rows, cmp.A)...)
		}
	}
	// An absolute bar (a rate, a p99, bytes) moves with the machine as much
	// as with the server: the baseline's figure from the same rounds shows
	// how fast the machine was while it was measured.
	fmt.Fprintf(out, "## Bars\n\n| bar | measured | baseline, same rounds | met |\n|:--|--:|--:|:-:|\n%s\n",
		strings.Join(verdicts, "\n"))
	return nil
}

// compareApart runs a step with each server bound to one CPU and this
// process, the load generator, to the others.
func compareApart(ctx context.Context, st step) (*Comparison, error) {
	cpu, load, err := cpuSplit()
	if err != nil {
		return nil, err
	}
	a, err := st.a.onCPU(cpu)
	if err != nil {
		return nil, err
	}
	b, err := st.b.onCPU(cpu)
	if err != nil {
		return nil, err
	}
	restore, err := bindSelf(load)
	if err != nil {
		return nil, err
	}
	defer restore()
	cmp, err := Compare(ctx, st.scenario, st.cfg, a, b, st.rounds)
	if cmp != nil {
		cmp.A, cmp.B = fmt.Sprintf("%s on CPU %d", st.a.Label, cpu), fmt.Sprintf("%s on CPU %d", st.b.Label, cpu)
	}
	return cmp, err
}

// judge reads the row a bar is about and says whether it is met; for a
// bar on B's own figure it also gives the baseline's (labelled a).
func judge(b bar, rows []RatioRow, a string) string {
	for _, r := range rows {
		if r.Metric != b.metric {
			continue
		}
		v, baseline := r.Median, "—"
		if b.use == "b" {
			v = r.BMedian
			baseline = fmt.Sprintf("%s: %s %s", a, fmtSig(r.AMedian, 4), b.unit)
		}
		met := "no"
		if b.ok(v) {
			met = "yes"
		}
		// Four digits: a ratio of 1.149 against a bar of 1.15 must not print as 1.15.
		return fmt.Sprintf("| %s | %s %s | %s | %s |", b.text, fmtSig(v, 4), b.unit, baseline, met)
	}
	return fmt.Sprintf("| %s | not measured | — | no |", b.text)
}

// drainScaling runs the drain scenario on gearshard with a small and a
// big queue, st.rounds times: A is the small queue, B the big one.
func drainScaling(ctx context.Context, st step, big int64) (*Comparison, error) {
	cmp := &Comparison{Scenario: "drain", A: fmt.Sprintf("%s, %d jobs", st.a.Label, st.cfg.Jobs),
		B: fmt.Sprintf("%s, %d jobs", st.b.Label, big)}
	for range max(st.rounds, 1) {
		var pair [2]*Result
		for i, n := range []int64{st.cfg.Jobs, big} {
			srv, err := st.a.start(ctx)
			if err != nil {
				return nil, err
			}
			c := st.cfg
			c.Jobs, c.Servers, c.PID, c.Label = n, []string{srv.addr}, srv.pid, st.a.Label
			r, err := Run(ctx, "drain", c)
			srv.stop()
			if r == nil {
				return nil, err
			}
			pair[i] = r
		}
		cmp.Rounds = append(cmp.Rounds, pair)
	}
	return cmp, nil
}

func drainVerdicts(rows []RatioRow, a string) []string {
	return []string{
		judge(bar{"drain of 1M queued jobs ≥ 100k jobs/s", "drain_per_sec", "b", func(v float64) bool { return v >= 100_000 }, "jobs/s"}, rows, a),
		judge(bar{"drain 1M no slower per job than 10k (rate ratio ≥ 1)", "drain_per_sec", "ratio", func(v float64) bool { return v >= 1 }, "×"}, rows, a),
	}
}

// describeMachine says what the figures were measured on.
func describeMachine(gearmand string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "Measured %s on %d CPUs (%s), %s, Go %s.", time.Now().UTC().Format("2006-01-02"), runtime.NumCPU(),
		cpuModel(), kernel(), runtime.Version())
	if out, err := exec.Command(gearmand, "-V").Output(); err == nil {
		fmt.Fprintf(&b, " Baseline: %s.", strings.TrimSpace(string(out)))
	}
	b.WriteString(" The load generator runs on the same machine: on 2 CPUs it takes about one, so server CPU per job, " +
		"tail latency and behaviour as queues grow say more than raw jobs/s.\n")
	return b.String()
}

func cpuModel() string {
	data, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return "unknown CPU"
	}
	for _, line := range strings.Split(string(data), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return "unknown CPU"
}

func kernel() string {
	data, err := os.ReadFile("/proc/sys/kernel/osrelease")
	if err != nil {
		return runtime.GOOS
	}
	return "Linux " + strings.TrimSpace(string(data))
}
