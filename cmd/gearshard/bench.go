package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"time"

	"github.com/mattn/go-isatty"

	"gearshard/bench"
)

// BenchCmd load-tests any Gearman server, or compares two.
type BenchCmd struct {
	Scenario  string        `arg:"" enum:"fg,bg,drain,submit-only,status,latency,suite,soak" help:"fg, bg, drain, submit-only, status, latency; suite: the standard comparison with gearmand, as Markdown; soak: mixed load with worker kills and client drops for -d, checking every job and the server's memory and threads, with a one-line verdict."`
	Host      []string      `short:"h" default:"127.0.0.1" help:"Server host or host:port; repeat for several servers."`
	Port      int           `short:"p" default:"4730" help:"Port for hosts given without one."`
	Clients   int           `short:"c" default:"8" help:"Client connections."`
	InFlight  int           `short:"P" default:"16" help:"Jobs each client keeps in flight."`
	Workers   int           `short:"w" default:"8" help:"Worker connections."`
	Size      int           `short:"s" default:"64" help:"Payload bytes (at least 8)."`
	Funcs     int           `short:"f" default:"1" help:"Distinct function names."`
	Duration  time.Duration `short:"d" default:"10s" help:"How long to run (fg, bg, status)."`
	Jobs      int64         `short:"n" default:"0" help:"fg/bg: stop after this many jobs; drain, submit-only, status: jobs to queue (default 1000000)."`
	PID       int           `help:"The server's PID, for its CPU per job and memory per queued job (local servers)."`
	Uniques   bool          `help:"Give every background job its own unique key, as libgearman does."`
	JSON      bool          `help:"Print results as JSON."`
	Compare   []string      `help:"Two targets to compare, each label=COMMAND (started per round, {port} = a free port) or label@host:port[/pid]; the first is the baseline."`
	Rounds    int           `default:"3" help:"Rounds of A B alternation with --compare."`
	Gearmand  string        `default:"gearmand" help:"suite: the gearmand binary to compare with."`
	Out       string        `short:"o" help:"suite: write the report here instead of stdout."`
	Quick     bool          `help:"suite: short runs and small queues (a smoke test of the suite)."`
	ServerCmd string        `help:"soak: start this server command line, {port} = a free port, and sample its memory and threads (else -h/-p, and --pid to sample)."`
	Seed      uint64        `default:"1" help:"soak: random seed (logged, to reproduce a run)."`
}

// Run executes the scenario once, or as a comparison.
func (c *BenchCmd) Run(std *stdio) error {
	if c.Size < 8 {
		return usagef("bench: --size must be at least 8")
	}
	cfg := bench.Config{
		Clients: c.Clients, InFlight: c.InFlight, Workers: c.Workers, Size: c.Size, Funcs: c.Funcs,
		Duration: c.Duration, Jobs: c.Jobs, PID: c.PID, Uniques: c.Uniques,
	}
	if f, ok := std.Err.(*os.File); ok && !c.JSON && isatty.IsTerminal(f.Fd()) {
		cfg.Progress = f
	}
	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt)
	defer cancel()
	if c.Scenario == "suite" {
		return c.suite(ctx, std)
	}
	if c.Scenario == "soak" {
		return c.soak(ctx, std)
	}
	if len(c.Compare) > 0 {
		if len(c.Compare) != 2 {
			return usagef("bench: --compare takes exactly two targets")
		}
		a, err := bench.ParseTarget(c.Compare[0])
		if err != nil {
			return usageError{err.Error()}
		}
		b, err := bench.ParseTarget(c.Compare[1])
		if err != nil {
			return usageError{err.Error()}
		}
		cmp, err := bench.Compare(ctx, c.Scenario, cfg, a, b, c.Rounds)
		if c.JSON {
			var all []*bench.Result
			for _, r := range cmp.Rounds {
				all = append(all, r[0], r[1])
			}
			bench.WriteJSON(std.Out, all)
		} else {
			bench.WriteComparison(std.Out, cmp)
		}
		return err
	}
	for _, h := range c.Host {
		if _, _, err := net.SplitHostPort(h); err != nil {
			h = net.JoinHostPort(h, strconv.Itoa(c.Port))
		}
		cfg.Servers = append(cfg.Servers, h)
	}
	cfg.Label = cfg.Servers[0]
	r, err := bench.Run(ctx, c.Scenario, cfg)
	if r != nil {
		if c.JSON {
			bench.WriteJSON(std.Out, []*bench.Result{r})
		} else {
			bench.WriteText(std.Out, r)
		}
	}
	if err != nil {
		return fmt.Errorf("bench: %w", err)
	}
	return nil
}

// suite runs the standard comparison against gearmand.
func (c *BenchCmd) suite(ctx context.Context, std *stdio) error {
	gd, err := exec.LookPath(c.Gearmand)
	if err != nil {
		if gd, err = exec.LookPath("/usr/sbin/" + c.Gearmand); err != nil {
			return fmt.Errorf("bench suite: gearmand not found (Debian package gearman-job-server): %w", err)
		}
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	out := std.Out
	if c.Out != "" {
		f, err := os.Create(c.Out)
		if err != nil {
			return err
		}
		defer f.Close()
		out = f
	}
	return bench.RunSuite(ctx, bench.SuiteConfig{Gearmand: gd, Gearshard: self, Rounds: c.Rounds, Quick: c.Quick, Log: std.Err}, out)
}

// soak runs the soak against --server-cmd, started here, or the first
// -h server, and prints its verdict; a FAIL is an error (exit status 1).
func (c *BenchCmd) soak(ctx context.Context, std *stdio) error {
	cfg := bench.SoakConfig{
		PID: c.PID, Duration: c.Duration, Clients: c.Clients, InFlight: c.InFlight, Workers: c.Workers,
		Seed: c.Seed, Log: std.Err,
	}
	if c.ServerCmd != "" {
		addr, pid, stop, err := bench.StartServer(ctx, c.ServerCmd)
		if err != nil {
			return fmt.Errorf("bench soak: %w", err)
		}
		defer stop()
		cfg.Addr, cfg.PID = addr, pid
	} else {
		cfg.Addr = c.Host[0]
		if _, _, err := net.SplitHostPort(cfg.Addr); err != nil {
			cfg.Addr = net.JoinHostPort(cfg.Addr, strconv.Itoa(c.Port))
		}
	}
	r, err := bench.Soak(ctx, cfg)
	if r != nil {
		fmt.Fprintln(std.Out, r.Verdict())
	}
	if err != nil {
		return fmt.Errorf("bench: %w", err)
	}
	return nil
}
