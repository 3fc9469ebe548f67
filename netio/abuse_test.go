package netio_test

import (
	"encoding/binary"
	"math/rand/v2"
	"testing"
	"time"

	"gearshard/netio/gstest"
	"gearshard/wire"
)

// TestAbuse runs hostile or broken inputs, each on a connection of its
// own, and after each one a normal job (client, worker, result) must still
// go through on fresh connections.
func TestAbuse(t *testing.T) {
	srv := gstest.Start(t, func(c *gstest.Config) { c.Net.MaxPacket = 1 << 20 })
	seed := uint64(20261121)
	t.Logf("garbage seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, seed))
	header := func(magic string, typ, size uint32) []byte {
		b := []byte(magic)
		b = binary.BigEndian.AppendUint32(b, typ)
		return binary.BigEndian.AppendUint32(b, size)
	}
	garbage := func(n int, first byte) []byte {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(rng.IntN(256))
		}
		b[0] = first
		if first != 0 {
			// One admin line: no line break inside.
			for i, c := range b {
				if c == '\n' {
					b[i] = 'x'
				}
			}
		}
		return b
	}
	cases := []struct {
		name  string
		send  []byte
		close bool // the server must close the connection
	}{
		{"binary garbage", garbage(4096, 0), true},
		{"text garbage", append(garbage(4096, 'x'), '\n'), false},
		{"4 GiB body announced", header("\x00REQ", uint32(wire.SubmitJob), 0xFFFFFFFF), true},
		{"over the packet limit", header("\x00REQ", uint32(wire.SubmitJob), 2<<20), true},
		{"unknown type", header("\x00REQ", 1000, 0), true},
		{"type zero", header("\x00REQ", 0, 0), true},
		{"response magic", wire.AppendResponse(nil, wire.EchoReq, []byte("x")), false},
		{"fields missing", header("\x00REQ", uint32(wire.SubmitJob), 3), true},
		{"WORK_COMPLETE, no such job", wire.AppendRequest(nil, wire.WorkComplete, []byte("H:test:424242"), []byte("r")), false},
		{"WORK_FAIL, foreign handle", wire.AppendRequest(nil, wire.WorkFail, []byte("H:other:1")), false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			bad := gstest.Dial(t, srv.Addr)
			bad.Write(c.send)
			if c.name == "fields missing" {
				bad.Write([]byte("abc")) // body without the NULs SUBMIT_JOB needs
			}
			if c.close {
				got := bad.ExpectClosed()
				if len(got) != 1 || got[0].Type != wire.Error {
					t.Fatalf("before closing, the server sent %v; want one ERROR", got)
				}
			} else {
				if c.name == "text garbage" {
					if got := bad.ReadAdmin(); len(got) < 4 || got[:4] != "ERR " {
						t.Fatalf("text garbage got %q, want an ERR line", got)
					}
				}
				// The connection stays usable.
				bad.TO = 5 * time.Second
				bad.Send(wire.EchoReq, "still here")
				for {
					p, err := bad.Read()
					if err != nil {
						t.Fatalf("connection unusable after %s: %v", c.name, err)
					}
					if p.Type == wire.EchoRes {
						break
					}
				}
			}
			normalJob(t, srv.Addr, c.name)
		})
	}
	// A packet cut off mid-way, then the connection gone.
	cut := gstest.Dial(t, srv.Addr)
	cut.Write(wire.AppendRequest(nil, wire.SubmitJob, []byte("f"), nil, []byte("payload"))[:17])
	cut.Raw().Close()
	normalJob(t, srv.Addr, "cut off")
}

// normalJob runs one job end to end on new connections.
func normalJob(t *testing.T, addr, after string) {
	t.Helper()
	w := gstest.Dial(t, addr)
	c := gstest.Dial(t, addr)
	fn := "after " + after
	w.Send(wire.CanDo, fn)
	c.Send(wire.SubmitJob, fn, "", "ok?")
	h := c.Expect(wire.JobCreated).Fields[0]
	w.Send(wire.GrabJob)
	w.Expect(wire.JobAssign, h, fn, "ok?")
	w.Send(wire.WorkComplete, h, "ok")
	c.Expect(wire.WorkComplete, h, "ok")
}
