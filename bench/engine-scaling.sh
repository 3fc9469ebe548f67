#!/bin/sh
# The engine-scaling bar: BenchmarkShardsParallel (the engine alone, no
# sockets, b.RunParallel on every core), 2 shards against 1, measured as
# back-to-back pairs so that a machine whose speed drifts between runs
# compares like with like. Usage: bench/engine-scaling.sh [GO] [PAIRS]
set -e
go=${1:-go}
pairs=${2:-5}
i=0
while [ "$i" -lt "$pairs" ]; do
	"$go" test -run '^$' -bench 'ShardsParallel' -count 1 ./engine/
	i=$((i + 1))
done |
	awk '/^BenchmarkShardsParallel\/shards=1/ { one = $3 }
	     /^BenchmarkShardsParallel\/shards=2/ && one { printf "%.3f\n", one / $3; one = 0 }' |
	sort -n |
	awk -v cores="$(nproc)" '{ r[NR] = $1 }
	END {
		if (NR == 0) { print "engine scaling: not measured"; exit 1 }
		m = r[int((NR + 1) / 2)]
		printf "Engine scaling bar (2 shards against 1 on %d cores, ≥ 1.8×): %.2f× median over %d back-to-back pairs (%.2f–%.2f): %s.\n", cores, m, NR, r[1], r[NR], (m >= 1.8 ? "met" : "not met")
	}'
