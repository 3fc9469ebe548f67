package monitor

import (
	"strconv"

	"github.com/prometheus/client_golang/prometheus"

	"gearshard/engine"
)

func desc(name, help string, labels ...string) *prometheus.Desc {
	return prometheus.NewDesc("gearshard_"+name, help, labels, nil)
}

var (
	fnLabel = []string{"function"}

	descJobs    = desc("function_jobs", "Jobs of the function in the server: queued, waiting for their time and running (status's TOTAL).", fnLabel...)
	descQueued  = desc("function_queued_jobs", "Jobs waiting for a worker (or for their epoch time), by priority (prioritystatus).", "function", "priority")
	descRunning = desc("function_running_jobs", "Jobs of the function held by workers.", fnLabel...)
	descWorkers = desc("function_workers", "Workers registered for the function.", fnLabel...)

	descSubmitted  = desc("jobs_submitted_total", "New jobs submitted (coalesced submissions not included).", fnLabel...)
	descCoalesced  = desc("jobs_coalesced_total", "Submissions that joined an existing job with the same unique key.", fnLabel...)
	descCompleted  = desc("jobs_completed_total", "Jobs that ended with WORK_COMPLETE.", fnLabel...)
	descFailed     = desc("jobs_failed_total", "Jobs that ended with WORK_FAIL, a CAN_DO_TIMEOUT expiry or retries exhausted.", fnLabel...)
	descExceptions = desc("jobs_exceptions_total", "Jobs that ended with WORK_EXCEPTION.", fnLabel...)
	descRetried    = desc("jobs_retried_total", "Jobs requeued because their worker went away.", fnLabel...)
	descWait       = desc("job_queue_wait_seconds", "Time from a job being queued (or requeued, or due) to a worker taking it.", fnLabel...)
	descRun        = desc("job_run_seconds", "Time from a worker taking a job to its result.", fnLabel...)

	descFolded = desc("metrics_folded_functions", "Functions past --metrics-max-functions, counted under function=\""+Other+"\".")

	shardLabel          = []string{"shard"}
	descShardSubmitted  = desc("shard_jobs_submitted_total", "New jobs routed to the shard.", shardLabel...)
	descShardFinished   = desc("shard_jobs_finished_total", "Jobs of the shard that ended with a result.", shardLabel...)
	descShardQueued     = desc("shard_queued_jobs", "Runnable jobs waiting in the shard.", shardLabel...)
	descShardRunning    = desc("shard_running_jobs", "Jobs of the shard held by workers.", shardLabel...)
	descShardFunctions  = desc("shard_functions", "Function names owned by the shard.", shardLabel...)
	descConnections     = desc("connections", "Open connections by what they have done: worker (CAN_DO), client (submitted), admin (text commands), idle.", "kind")
	descConnectionsSeen = desc("connections_accepted_total", "Connections accepted since start (binary, admin and HTTP requests).")
	descRefused         = desc("connections_refused_total", "Connections closed at once because the connection limit (from the file-descriptor limit, -f) was reached.")
	descBufferCutoffs   = desc("buffer_budget_cutoffs_total", "Connections cut off because what all connections hold in buffers reached --max-buffered-bytes.")
	descBuild           = desc("build_info", "Always 1; the version is a label.", "version")
)

var priorityNames = [...]string{"high", "normal", "low"}

// engineCollector reads the engine at scrape time; nothing is counted twice
// and nothing runs between scrapes.
type engineCollector Monitor

func (c *engineCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descJobs, descQueued, descRunning, descWorkers,
		descSubmitted, descCoalesced, descCompleted, descFailed, descExceptions, descRetried, descWait, descRun,
		descFolded, descShardSubmitted, descShardFinished, descShardQueued, descShardRunning, descShardFunctions,
		descConnections, descConnectionsSeen, descRefused, descBufferCutoffs, descBuild} {
		ch <- d
	}
}

func (c *engineCollector) Collect(ch chan<- prometheus.Metric) {
	st := (*Monitor)(c).view()
	gauge := func(d *prometheus.Desc, v int, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, float64(v), labels...)
	}
	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	for _, f := range st.Functions {
		gauge(descJobs, f.Total, f.Name)
		for p, n := range f.Queued {
			gauge(descQueued, n, f.Name, priorityNames[p])
		}
		gauge(descRunning, f.Running, f.Name)
		gauge(descWorkers, f.Workers, f.Name)
		counter(descSubmitted, f.Submitted, f.Name)
		counter(descCoalesced, f.Coalesced, f.Name)
		counter(descCompleted, f.Completed, f.Name)
		counter(descFailed, f.Failed, f.Name)
		counter(descExceptions, f.Exceptions, f.Name)
		counter(descRetried, f.Retried, f.Name)
		ch <- histogram(descWait, f.Wait, f.Name)
		ch <- histogram(descRun, f.Run, f.Name)
	}
	gauge(descFolded, st.Folded)
	for _, s := range st.Shards {
		i := strconv.Itoa(s.Index)
		counter(descShardSubmitted, s.Submitted, i)
		counter(descShardFinished, s.Finished, i)
		gauge(descShardQueued, s.Queued, i)
		gauge(descShardRunning, s.Running, i)
		gauge(descShardFunctions, s.Functions, i)
	}
	cs := st.Connections
	gauge(descConnections, cs.Workers, "worker")
	gauge(descConnections, cs.Clients, "client")
	gauge(descConnections, cs.Admins, "admin")
	gauge(descConnections, cs.Idle, "idle")
	counter(descConnectionsSeen, cs.Accepted)
	if c.opts.Refused != nil {
		counter(descRefused, c.opts.Refused())
	}
	if c.opts.BufferCutoffs != nil {
		counter(descBufferCutoffs, c.opts.BufferCutoffs())
	}
	gauge(descBuild, 1, c.opts.Version)
}

// histogram turns the engine's per-bucket counts into Prometheus's
// cumulative ones.
func histogram(d *prometheus.Desc, h engine.Histogram, labels ...string) prometheus.Metric {
	buckets := make(map[float64]uint64, len(engine.LatencyBounds))
	var cum uint64
	for i, bound := range engine.LatencyBounds {
		cum += h.Counts[i]
		buckets[bound] = cum
	}
	return prometheus.MustNewConstHistogram(d, cum+h.Counts[len(engine.LatencyBounds)], h.Sum, buckets, labels...)
}
