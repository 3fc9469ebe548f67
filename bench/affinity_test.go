package bench

import (
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// threadMasks reads the CPU mask of every thread of this process.
func threadMasks(t *testing.T) map[int]unix.CPUSet {
	t.Helper()
	tasks, err := os.ReadDir("/proc/self/task")
	if err != nil {
		t.Fatal(err)
	}
	masks := make(map[int]unix.CPUSet)
	for _, task := range tasks {
		tid, err := strconv.Atoi(task.Name())
		if err != nil {
			continue
		}
		var set unix.CPUSet
		if err := unix.SchedGetaffinity(tid, &set); err == nil {
			masks[tid] = set
		}
	}
	return masks
}

// The load generator's threads all move to the load CPUs and all come back.
func TestBindSelfMovesEveryThreadAndRestores(t *testing.T) {
	server, load, err := cpuSplit()
	if err != nil {
		t.Fatalf("%v (the suite's apart step needs 2 CPUs)", err)
	}
	if load.IsSet(server) || load.Count() == 0 {
		t.Fatalf("split: server CPU %d, load CPUs %v overlap or are empty", server, load)
	}
	var was unix.CPUSet
	if err := unix.SchedGetaffinity(0, &was); err != nil {
		t.Fatal(err)
	}
	restore, err := bindSelf(load)
	if err != nil {
		t.Fatal(err)
	}
	// Goroutines that hold their threads make the runtime start new ones
	// while bound; those must inherit the load CPUs.
	before := len(threadMasks(t))
	held, release := make(chan struct{}), make(chan struct{})
	for i := 0; i < 4; i++ {
		go func() {
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			held <- struct{}{}
			<-release
		}()
		<-held
	}
	defer close(release)
	masks := threadMasks(t)
	t.Logf("threads: %d before binding, %d with 4 held", before, len(masks))
	for tid, set := range masks {
		if set != load {
			restore()
			t.Fatalf("thread %d bound to %d CPUs, want the %d load CPUs", tid, set.Count(), load.Count())
		}
	}
	restore()
	for tid, set := range threadMasks(t) {
		if set != was {
			t.Fatalf("thread %d still bound after restore (%d CPUs, want %d)", tid, set.Count(), was.Count())
		}
	}
}

// A server bound to a CPU runs there: the command is wrapped so that the
// kernel, not the server, enforces it.
func TestTargetOnCPU(t *testing.T) {
	server, _, err := cpuSplit()
	if err != nil {
		t.Fatalf("%v (the suite's apart step needs 2 CPUs)", err)
	}
	bound, err := Target{Label: "status", Cmd: []string{"grep", "Cpus_allowed_list", "/proc/self/status"}}.onCPU(server)
	if err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(bound.Cmd[0], bound.Cmd[1:]...).Output()
	if err != nil {
		t.Fatalf("%v: %v", bound.Cmd, err)
	}
	if got := strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(string(out)), "Cpus_allowed_list:")); got != strconv.Itoa(server) {
		t.Fatalf("bound command runs on CPUs %q, want %d", got, server)
	}
	if _, err := (Target{Label: "running", Addr: "127.0.0.1:4730"}).onCPU(server); err == nil {
		t.Fatal("a running target was accepted for binding")
	}
}
