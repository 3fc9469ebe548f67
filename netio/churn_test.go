package netio_test

import (
	"net"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"gearshard/netio/gstest"
	"gearshard/wire"
)

// 100,000 connections opened and dropped, some mid-packet, leave no
// session, goroutine or memory behind, and the server keeps serving.
func TestConnectionChurnLeavesNothing(t *testing.T) {
	srv := gstest.Start(t, nil)
	probe := gstest.Dial(t, srv.Addr)
	probe.Admin("status") // the server is up and this connection counted

	settle := func() (goroutines int, heap uint64) {
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		return runtime.NumGoroutine(), ms.HeapInuse
	}
	g0, h0 := settle()

	const cycles, workers = 100_000, 8
	var wg sync.WaitGroup
	var failed sync.Once
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := w; i < cycles; i += workers {
				c, err := net.Dial("tcp", srv.Addr)
				if err != nil {
					failed.Do(func() { t.Errorf("dial %d: %v", i, err) })
					return
				}
				switch i % 4 {
				case 1: // a packet cut off, then gone
					_, _ = c.Write(wire.AppendRequest(nil, wire.SubmitJob, []byte("f"), []byte(""), []byte("data"))[:15])
				case 2: // a registered worker that disappears
					_, _ = c.Write(wire.AppendRequest(nil, wire.CanDo, []byte("churn")))
				}
				c.Close()
			}
		}(w)
	}
	wg.Wait()

	// Every dropped connection is gone from the server: only the probe
	// is listed by "workers", and "churn" has no registered worker.
	gstest.Eventually(t, 30*time.Second, func() bool {
		lines := strings.Count(probe.Admin("workers"), "\n")
		return lines == 2 && srv.Net.Connections() == 1
	}, "connections left after churn: %d", srv.Net.Connections())
	if got := probe.Admin("status"); got != "churn\t0\t0\t0\n.\n" {
		t.Fatalf("state left behind: %q, want churn with no worker and nothing else", got)
	}
	var g1 int
	var h1 uint64
	gstest.Eventually(t, 10*time.Second, func() bool {
		g1, h1 = settle()
		return g1 <= g0+2
	}, "goroutines: %d before, %d after", g0, g1)
	if h1 > h0+16<<20 {
		t.Fatalf("heap in use grew from %d to %d bytes over %d connections", h0, h1, cycles)
	}
	probe.Send(wire.EchoReq, "still serving")
	probe.Expect(wire.EchoRes, "still serving")
}
