package wire

import (
	"bytes"
	"encoding/binary"
	"fmt"
)

// HeaderSize is the size of a binary packet header: magic, type, length.
const HeaderSize = 12

// MaxFields is the largest field count of any packet type (SUBMIT_JOB_SCHED).
const MaxFields = 8

// DefaultMaxPacket is the default payload limit. gearmand has none beyond
// the 32-bit length; 64 MiB keeps one client from pinning gigabytes while
// passing every workload seen in practice.
const DefaultMaxPacket = 64 << 20

// MaxLine is the longest admin text line accepted, as in gearmand (its
// receive buffer is 8 KiB).
const MaxLine = 8192

// Magic tells requests (client/worker to server) from responses.
type Magic uint8

const (
	Request  Magic = 'Q' // "\0REQ"
	Response Magic = 'S' // "\0RES"
)

// Packet is one decoded binary packet. Field slices alias the buffer given
// to Decode: copy whatever must outlive it.
type Packet struct {
	Magic  Magic
	Type   Type
	Len    int // whole packet length, header included; known once the header is
	NField int
	Field  [MaxFields][]byte
}

// Arg returns field i, or nil when the packet has fewer fields.
func (p *Packet) Arg(i int) []byte {
	if i < p.NField {
		return p.Field[i]
	}
	return nil
}

// ProtocolError is a framing error: the connection gets an ERROR packet
// with Code and Text, then is closed, because the byte stream can no longer
// be trusted to be at a packet boundary.
type ProtocolError struct {
	Code string
	Text string
}

func (e *ProtocolError) Error() string { return "wire: " + e.Code + ": " + e.Text }

// Framing errors returned by Decode and DecodeLine.
var (
	ErrBadMagic      = &ProtocolError{"INVALID_MAGIC", "Invalid packet magic"}
	ErrUnknownType   = &ProtocolError{"INVALID_COMMAND", "Invalid command"}
	ErrTooLarge      = &ProtocolError{"ARGUMENT_TOO_LARGE", "Packet exceeds the maximum packet size"}
	ErrMissingFields = &ProtocolError{"INVALID_PACKET", "Packet has too few arguments"}
	ErrLineTooLong   = &ProtocolError{"ARGUMENT_TOO_LARGE", "Admin line exceeds 8192 bytes"}
)

// IsText reports whether the bytes at a packet boundary start an admin text
// line rather than a binary packet: binary packets begin with NUL.
func IsText(buf []byte) bool { return len(buf) > 0 && buf[0] != 0 }

// Decode decodes the binary packet at the start of buf. It returns n == 0
// and a nil error while the packet is incomplete, and checks the announced
// length against maxPayload before waiting for the body. On success n is the
// number of bytes the packet took.
func Decode(buf []byte, maxPayload int) (p Packet, n int, err error) {
	if len(buf) < 4 {
		if len(buf) > 0 && !bytes.HasPrefix([]byte("\x00RE"), buf[:min(len(buf), 3)]) {
			return p, 0, ErrBadMagic
		}
		return p, 0, nil
	}
	switch {
	case buf[0] == 0 && buf[1] == 'R' && buf[2] == 'E' && buf[3] == 'Q':
		p.Magic = Request
	case buf[0] == 0 && buf[1] == 'R' && buf[2] == 'E' && buf[3] == 'S':
		p.Magic = Response
	default:
		return p, 0, ErrBadMagic
	}
	if len(buf) < HeaderSize {
		return p, 0, nil
	}
	p.Type = Type(binary.BigEndian.Uint32(buf[4:8]))
	if !p.Type.Valid() {
		return p, 0, ErrUnknownType
	}
	size := binary.BigEndian.Uint32(buf[8:12])
	if uint64(size) > uint64(maxPayload) {
		return p, 0, ErrTooLarge
	}
	end := HeaderSize + int(size)
	p.Len = end
	if len(buf) < end {
		return p, 0, nil
	}
	if err := splitFields(&p, buf[HeaderSize:end]); err != nil {
		return p, 0, err
	}
	return p, end, nil
}

// splitFields cuts payload into the type's fields; the last field is the
// remainder and may hold NULs.
func splitFields(p *Packet, payload []byte) error {
	want := p.Type.Fields()
	if want == 0 {
		// gearmand ignores a payload on field-less packets; so do we.
		return nil
	}
	for i := 0; i < want-1; i++ {
		j := bytes.IndexByte(payload, 0)
		if j < 0 {
			return ErrMissingFields
		}
		p.Field[i] = payload[:j:j]
		payload = payload[j+1:]
	}
	p.Field[want-1] = payload[:len(payload):len(payload)] // no append into the next packet
	p.NField = want
	return nil
}

// DecodeLine returns the admin line at the start of buf without its "\n" or
// "\r\n", and n, the bytes it took. n == 0 with a nil error means the line
// is incomplete.
func DecodeLine(buf []byte) (line []byte, n int, err error) {
	i := bytes.IndexByte(buf, '\n')
	if i < 0 {
		if len(buf) > MaxLine {
			return nil, 0, ErrLineTooLong
		}
		return nil, 0, nil
	}
	if i > MaxLine {
		return nil, 0, ErrLineTooLong
	}
	line = buf[:i]
	if len(line) > 0 && line[len(line)-1] == '\r' {
		line = line[:len(line)-1]
	}
	return line, i + 1, nil
}

// String renders a packet for logs and test failures.
func (p *Packet) String() string {
	s := fmt.Sprintf("%s(", p.Type)
	for i := 0; i < p.NField; i++ {
		if i > 0 {
			s += ", "
		}
		s += fmt.Sprintf("%q", p.Field[i])
	}
	return s + ")"
}
