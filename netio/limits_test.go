package netio_test

import (
	"bytes"
	"runtime"
	"testing"
	"time"

	"gearshard/netio/gstest"
	"gearshard/wire"
)

// A client that never reads its replies is cut off once its pending output
// passes the limit; the worker feeding it and other clients are not hurt.
func TestSlowReaderIsCutOff(t *testing.T) {
	srv := gstest.Start(t, func(c *gstest.Config) { c.Net.MaxOutput = 1 << 20 })
	slow := gstest.Dial(t, srv.Addr)
	w := gstest.Dial(t, srv.Addr)
	w.Send(wire.CanDo, "flood")
	slow.Send(wire.SubmitJob, "flood", "", "x")
	h := slow.Expect(wire.JobCreated).Fields[0]
	w.Send(wire.GrabJob)
	w.Expect(wire.JobAssign, h, "flood", "x")

	// 64 MiB of WORK_DATA for a client that stops reading: far past what
	// the socket buffers and the 1 MiB limit hold.
	chunk := bytes.Repeat([]byte("d"), 256<<10)
	for i := 0; i < 256; i++ {
		w.Write(wire.AppendRequest(nil, wire.WorkData, []byte(h), chunk))
	}
	// The server must close the slow client: reading now drains what the
	// kernel buffered, then ends.
	slow.TO = 20 * time.Second
	slow.ExpectClosed()

	// The worker and a new client still work.
	w.Send(wire.EchoReq, "worker alive")
	w.Expect(wire.EchoRes, "worker alive")
	c := gstest.Dial(t, srv.Addr)
	c.Send(wire.EchoReq, "others served")
	c.Expect(wire.EchoRes, "others served")
}

// A flood of background submissions with no worker meets --max-queue-bytes:
// past it every submission gets an ERROR, and the heap stays bounded.
func TestSubmissionFloodIsBounded(t *testing.T) {
	const limit = 32 << 20
	srv := gstest.Start(t, func(c *gstest.Config) { c.Engine.MaxQueueBytes = limit })
	c := gstest.Dial(t, srv.Addr)
	payload := bytes.Repeat([]byte("p"), 4096)
	const total = 20_000 // 80 MiB of workloads offered
	go func() {
		var batch []byte
		for i := 0; i < total; i++ {
			batch = wire.AppendRequest(batch, wire.SubmitJobBG, []byte("flood"), nil, payload)
			if i%64 == 63 {
				if _, err := c.Raw().Write(batch); err != nil {
					return
				}
				batch = batch[:0]
			}
		}
		_, _ = c.Raw().Write(batch)
	}()
	created, refused := 0, 0
	for created+refused < total {
		p, err := c.Read()
		if err != nil {
			t.Fatalf("after %d created, %d refused: %v", created, refused, err)
		}
		switch p.Type {
		case wire.JobCreated:
			created++
		case wire.Error:
			if p.Fields[0] != "QUEUE_ERROR" {
				t.Fatalf("error %v", p)
			}
			refused++
		default:
			t.Fatalf("got %v", p)
		}
	}
	if refused == 0 || created*4096 > limit {
		t.Fatalf("%d created, %d refused: the bound did not hold", created, refused)
	}
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	if ms.HeapInuse > 3*limit {
		t.Fatalf("heap in use %d MiB with a %d MiB queue bound", ms.HeapInuse>>20, limit>>20)
	}
}
