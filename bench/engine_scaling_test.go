package bench

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// engine-scaling.sh pairs each 1-shard line with the 2-shard line of the
// same run and judges the median ratio. A stand-in for `go` prints known
// benchmark lines, one pair per call, so the arithmetic and the verdict
// are checked without timing anything.
func TestEngineScalingScript(t *testing.T) {
	for _, c := range []struct {
		name  string
		pairs [][2]float64 // ns/op for 1 shard, 2 shards, one pair per call
		want  string
	}{
		{"met", [][2]float64{{2000, 1000}, {1500, 1000}, {2100, 1000}},
			"2.00× median over 3 back-to-back pairs (1.50–2.10): met."},
		{"not met", [][2]float64{{1700, 1000}, {1900, 1000}, {1000, 1000}, {1750, 1000}},
			// Four ratios 1.00 1.70 1.75 1.90: the lower middle one.
			"1.70× median over 4 back-to-back pairs (1.00–1.90): not met."},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			var lines strings.Builder
			for _, p := range c.pairs {
				fmt.Fprintf(&lines, "BenchmarkShardsParallel/shards=1-2 \t 1000000\t %.0f ns/op\n", p[0])
				fmt.Fprintf(&lines, "BenchmarkShardsParallel/shards=2-2 \t 1000000\t %.0f ns/op\n", p[1])
			}
			data := filepath.Join(dir, "lines")
			if err := os.WriteFile(data, []byte(lines.String()), 0o644); err != nil {
				t.Fatal(err)
			}
			// Each call prints the next two lines, as one -count 1 run does.
			fakeGo := filepath.Join(dir, "go")
			script := fmt.Sprintf("#!/bin/sh\nn=$(cat %[1]s.n 2>/dev/null || echo 0)\necho $((n + 1)) > %[1]s.n\necho goos: linux\nsed -n \"$((2 * n + 1)),$((2 * n + 2))p\" %[1]s\necho PASS\n", data)
			if err := os.WriteFile(fakeGo, []byte(script), 0o755); err != nil {
				t.Fatal(err)
			}
			out, err := exec.Command("sh", "engine-scaling.sh", fakeGo, fmt.Sprint(len(c.pairs))).CombinedOutput()
			if err != nil {
				t.Fatalf("engine-scaling.sh: %v\n%s", err, out)
			}
			if !strings.Contains(string(out), c.want) {
				t.Errorf("output %q lacks %q", out, c.want)
			}
		})
	}
}
