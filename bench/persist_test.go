package bench_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"

	"gearshard/bench"
	"gearshard/engine/queue/queuetest"
)

// BenchmarkPersistedVsGearmand is issue 5's figure, with every server
// started here on loopback: persisted background submissions per second,
// Debian's gearmand -t 0 against gearshard with the same store (SQLite
// file, PostgreSQL, MariaDB, Redis, memcached), fresh servers each round, every job its own
// unique key and stored before its JOB_CREATED. It reports each store's
// median B/A ratio over PERSIST_ROUNDS rounds (5), and with PERSIST_OUT=FILE writes the Markdown table
// that bench/persist.md carries (make bench-persist):
//
//	go test -run '^$' -bench PersistedVsGearmand -benchtime 1x ./bench/
func BenchmarkPersistedVsGearmand(b *testing.B) {
	gearmand, err := exec.LookPath("gearmand")
	if err != nil {
		if gearmand, err = exec.LookPath("/usr/sbin/gearmand"); err != nil {
			b.Fatalf("gearmand not found: install the Debian package gearman-job-server (make deps)")
		}
	}
	rounds := 5
	if v := os.Getenv("PERSIST_ROUNDS"); v != "" {
		if rounds, err = strconv.Atoi(v); err != nil || rounds < 1 {
			b.Fatalf("PERSIST_ROUNDS=%q: want a positive number", v)
		}
	}
	dir := b.TempDir()
	gearshard := filepath.Join(dir, "gearshard")
	build := exec.Command(filepath.Join(runtime.GOROOT(), "bin", "go"), "build", "-o", gearshard, "gearshard/cmd/gearshard")
	if out, err := build.CombinedOutput(); err != nil {
		b.Fatalf("go build: %v\n%s", err, out)
	}
	pg := queuetest.StartPostgres(b)
	my := queuetest.NewMySQL(b)
	redisHost, redisPort, _ := strings.Cut(queuetest.StartRedis(b), ":")
	mc := queuetest.NewMemcached(b)

	stores := []struct {
		name  string
		flags func(who string) []string // who: "gd" or "gs", so the two never share a table
	}{
		{"libsqlite3", func(who string) []string {
			return []string{"-q", "libsqlite3", "--libsqlite3-db", filepath.Join(dir, who+"-{port}.db")}
		}},
		{"Postgres", func(who string) []string {
			return []string{"-q", "Postgres", "--libpq-conninfo", pg, "--libpq-table", who + "_{port}"}
		}},
		{"MySQL", func(who string) []string {
			return []string{"-q", "MySQL", "--mysql-host", my.Host, "--mysql-port", strconv.Itoa(my.Port), "--mysql-user", my.User,
				"--mysql-password", my.Password, "--mysql-db", my.DB, "--mysql-table", who + "_{port}"}
		}},
		{"redis", func(who string) []string {
			return []string{"-q", "redis", "--redis-server", redisHost, "--redis-port", redisPort, "--redis-prefix", who + "{port}"}
		}},
		{"libmemcached", func(who string) []string {
			return []string{"-q", "libmemcached", "--libmemcached-servers", mc.Addr, "--libmemcached-prefix", who + "{port}_"}
		}},
	}
	cfg := bench.Config{Clients: 8, InFlight: 16, Workers: 8, Size: 64, Funcs: 1, Jobs: 20000, Uniques: true}
	var table strings.Builder
	table.WriteString("| store | gearmand submissions/s | gearshard submissions/s | ratio (min–max) | jobs/s end to end (gearmand → gearshard) |\n|---|--:|--:|--:|---|\n")
	for range b.N {
		for _, st := range stores {
			a := bench.Target{Label: "gearmand", Cmd: append([]string{gearmand, "-L", "127.0.0.1", "-p", "{port}", "-t", "0",
				"-l", filepath.Join(dir, "gearmand-{port}.log"), "-P", filepath.Join(dir, "gearmand-{port}.pid")}, st.flags("gd")...)}
			g := bench.Target{Label: "gearshard", Cmd: append([]string{gearshard, "-L", "127.0.0.1", "-p", "{port}", "-l", "none"}, st.flags("gs")...)}
			cmp, err := bench.Compare(context.Background(), "bg", cfg, a, g, rounds)
			if err != nil {
				b.Fatalf("%s: %v", st.name, err)
			}
			rows := map[string]bench.RatioRow{}
			for _, r := range cmp.Ratios() {
				rows[r.Metric] = r
			}
			sub, e2e := rows["submit_per_sec"], rows["jobs/s"]
			if len(sub.Ratios) != rounds {
				b.Fatalf("%s: %d clean rounds of %d", st.name, len(sub.Ratios), rounds)
			}
			b.ReportMetric(sub.Median, st.name+"-x")
			fmt.Fprintf(&table, "| %s | %s | %s | %.1f× (%.1f–%.1f) | %s → %s (%.0f×) |\n", st.name,
				thousands(sub.AMedian), thousands(sub.BMedian), sub.Median, sub.Min, sub.Max,
				thousands(e2e.AMedian), thousands(e2e.BMedian), e2e.Median)
		}
	}
	b.Log("\n" + table.String())
	if out := os.Getenv("PERSIST_OUT"); out != "" {
		if err := os.WriteFile(out, []byte(table.String()), 0o644); err != nil {
			b.Fatal(err)
		}
	}
}

// thousands prints n rounded, with thousands separators.
func thousands(n float64) string {
	s := strconv.FormatInt(int64(n+0.5), 10)
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return s
}
