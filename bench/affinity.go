package bench

import (
	"fmt"
	"os"
	"os/exec"
	"strconv"

	"golang.org/x/sys/unix"
)

// A step run "apart" keeps the server and the load generator on different
// CPUs, as a client on another host would be. On one machine the kernel
// may otherwise run a single-threaded server on its client's CPU and spare
// it the cross-CPU wake-ups that every remote client costs.

// cpuSplit divides the CPUs this process may use: the first for the server,
// the rest for the load generator.
func cpuSplit() (server int, load unix.CPUSet, err error) {
	var allowed unix.CPUSet
	if err := unix.SchedGetaffinity(0, &allowed); err != nil {
		return 0, load, fmt.Errorf("bench: reading CPU affinity: %w", err)
	}
	if allowed.Count() < 2 {
		return 0, load, fmt.Errorf("bench: server and load generator apart needs 2 CPUs, have %d", allowed.Count())
	}
	server = -1
	for cpu := 0; cpu < len(allowed)*64; cpu++ {
		if !allowed.IsSet(cpu) {
			continue
		}
		if server < 0 {
			server = cpu
		} else {
			load.Set(cpu)
		}
	}
	return server, load, nil
}

// onCPU returns t started under taskset on the given CPU; a target that is
// already running cannot be moved.
func (t Target) onCPU(cpu int) (Target, error) {
	if t.Cmd == nil {
		return t, fmt.Errorf("bench: %s is already running; only a started server can be bound to a CPU", t.Label)
	}
	taskset, err := exec.LookPath("taskset")
	if err != nil {
		return t, fmt.Errorf("bench: taskset (util-linux) is needed to bind a server to a CPU: %w", err)
	}
	t.Cmd = append([]string{taskset, "-c", strconv.Itoa(cpu)}, t.Cmd...)
	return t, nil
}

// bindSelf binds every thread of this process to cpus (threads started
// later inherit it) and returns a function that restores the mask it had.
func bindSelf(cpus unix.CPUSet) (restore func(), err error) {
	var was unix.CPUSet
	if err := unix.SchedGetaffinity(0, &was); err != nil {
		return nil, fmt.Errorf("bench: reading CPU affinity: %w", err)
	}
	setAll := func(set unix.CPUSet) error {
		// Twice: a thread the runtime starts during the first pass copies
		// the mask of the thread that started it, which may not be set yet.
		for pass := 0; pass < 2; pass++ {
			tasks, err := os.ReadDir("/proc/self/task")
			if err != nil {
				return err
			}
			for _, task := range tasks {
				tid, err := strconv.Atoi(task.Name())
				if err != nil {
					continue
				}
				if err := unix.SchedSetaffinity(tid, &set); err != nil && err != unix.ESRCH {
					return fmt.Errorf("bench: setting CPU affinity of thread %d: %w", tid, err)
				}
			}
		}
		return nil
	}
	if err := setAll(cpus); err != nil {
		_ = setAll(was)
		return nil, err
	}
	return func() { _ = setAll(was) }, nil
}
