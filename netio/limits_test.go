package netio_test

import (
	"bytes"
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
