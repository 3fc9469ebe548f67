// Package bench is gearshard's load generator. It speaks the Gearman binary
// protocol itself, so it measures any server — gearshard or gearmand — the
// same way, and checks every result it gets back.
package bench

import (
	"errors"
	"fmt"
	"io"
	"net"
	"time"

	"gearshard/wire"
)

// conn is one protocol connection: requests are appended to a write buffer
// and flushed in batches; responses are decoded in place from a read buffer.
type conn struct {
	c    net.Conn
	rbuf []byte
	r, w int // unread bytes are rbuf[r:w]
	wbuf []byte
}

func dial(addr string) (*conn, error) {
	c, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		return nil, err
	}
	return &conn{c: c, rbuf: make([]byte, 64<<10)}, nil
}

func (c *conn) close() { c.c.Close() }

// send queues one request packet.
func (c *conn) send(t wire.Type, args ...[]byte) {
	c.wbuf = wire.AppendRequest(c.wbuf, t, args...)
}

// sendLine queues one admin text line.
func (c *conn) sendLine(line string) {
	c.wbuf = append(append(c.wbuf, line...), '\n')
}

// flush writes what was queued.
func (c *conn) flush() error {
	if len(c.wbuf) == 0 {
		return nil
	}
	_, err := c.c.Write(c.wbuf)
	c.wbuf = c.wbuf[:0]
	return err
}

// buffered reports whether a complete response may already be waiting, so
// a reader can decide to flush before it blocks.
func (c *conn) buffered() bool { return c.w > c.r }

// next returns the next response packet. Its fields alias the read buffer
// and stay valid only until the following call.
func (c *conn) next() (wire.Packet, error) {
	for {
		if c.w > c.r {
			p, n, err := wire.Decode(c.rbuf[c.r:c.w], 1<<30)
			if err != nil {
				return p, err
			}
			if n > 0 {
				c.r += n
				if p.Magic != wire.Response {
					return p, errors.New("bench: request magic in a response")
				}
				return p, nil
			}
			if p.Len > len(c.rbuf) {
				c.grow(p.Len)
			}
		}
		if err := c.fill(); err != nil {
			return wire.Packet{}, err
		}
	}
}

// line returns the next admin text line, without its newline.
func (c *conn) line() ([]byte, error) {
	for {
		if line, n, err := wire.DecodeLine(c.rbuf[c.r:c.w]); err != nil {
			return nil, err
		} else if n > 0 {
			c.r += n
			return line, nil
		}
		if c.w-c.r == len(c.rbuf) {
			c.grow(2 * len(c.rbuf))
		}
		if err := c.fill(); err != nil {
			return nil, err
		}
	}
}

// fill reads more bytes, moving unread ones to the front first.
func (c *conn) fill() error {
	if c.r > 0 {
		c.w = copy(c.rbuf, c.rbuf[c.r:c.w])
		c.r = 0
	}
	if c.w == len(c.rbuf) {
		c.grow(2 * len(c.rbuf))
	}
	n, err := c.c.Read(c.rbuf[c.w:])
	c.w += n
	if n > 0 {
		return nil
	}
	if err == nil {
		err = io.ErrNoProgress
	}
	return err
}

func (c *conn) grow(size int) {
	nb := make([]byte, size)
	c.w = copy(nb, c.rbuf[c.r:c.w])
	c.r = 0
	c.rbuf = nb
}

// errUnexpected reports a packet a scenario did not expect.
func errUnexpected(p *wire.Packet) error {
	if p.Type == wire.Error {
		return fmt.Errorf("server error %s: %s", p.Arg(0), p.Arg(1))
	}
	return fmt.Errorf("unexpected %s", p.Type)
}

// workLoop runs the standard worker loop on c — CAN_DO each function, then
// GRAB_JOB, and PRE_SLEEP until NOOP when there is nothing — handing each
// job to onJob, which queues the job's answer on c and returns false to
// leave holding it. workLoop returns when the connection ends or onJob
// left (then left is true); packets no worker expects go to errs.
func workLoop(c *conn, funcs [][]byte, errs *errCounter, onJob func(handle, data []byte) bool) (left bool) {
	for _, f := range funcs {
		c.send(wire.CanDo, f)
	}
	c.send(wire.GrabJob)
	for {
		if err := c.flush(); err != nil {
			return false
		}
		p, err := c.next()
		if err != nil {
			return false
		}
		switch p.Type {
		case wire.JobAssign:
			if !onJob(p.Field[0], p.Field[2]) {
				return true
			}
			c.send(wire.GrabJob)
		case wire.NoJob:
			c.send(wire.PreSleep)
		case wire.Noop:
			c.send(wire.GrabJob)
		default:
			errs.add(errUnexpected(&p))
			c.send(wire.GrabJob)
		}
	}
}
