package wire_test

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"gearshard/wire"
)

// unhex turns the spaced hex dumps below into bytes.
func unhex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(strings.Join(strings.Fields(s), ""))
	if err != nil {
		t.Fatalf("bad hex %q: %v", s, err)
	}
	return b
}

func bs(ss ...string) [][]byte {
	out := make([][]byte, len(ss))
	for i, s := range ss {
		out[i] = []byte(s)
	}
	return out
}

// appendByMagic encodes a packet with the encoder matching its magic.
func appendByMagic(dst []byte, m wire.Magic, t wire.Type, args ...[]byte) []byte {
	if m == wire.Response {
		return wire.AppendResponse(dst, t, args...)
	}
	return wire.AppendRequest(dst, t, args...)
}

// The byte-by-byte "reverse" conversation of the Gearman protocol document
// (seeds/003, lines 375-505): header words, then payload, as printed there.
var seedConversation = []struct {
	name   string
	magic  wire.Magic
	typ    wire.Type
	fields []string
	hex    string
}{
	{"worker CAN_DO", wire.Request, wire.CanDo, []string{"reverse"},
		"00 52 45 51  00 00 00 01  00 00 00 07  72 65 76 65 72 73 65"},
	{"worker GRAB_JOB", wire.Request, wire.GrabJob, nil,
		"00 52 45 51  00 00 00 09  00 00 00 00"},
	{"server NO_JOB", wire.Response, wire.NoJob, nil,
		"00 52 45 53  00 00 00 0a  00 00 00 00"},
	{"worker PRE_SLEEP", wire.Request, wire.PreSleep, nil,
		"00 52 45 51  00 00 00 04  00 00 00 00"},
	{"client SUBMIT_JOB", wire.Request, wire.SubmitJob, []string{"reverse", "", "test"},
		"00 52 45 51  00 00 00 07  00 00 00 0d  72 65 76 65 72 73 65 00  00  74 65 73 74"},
	{"server JOB_CREATED", wire.Response, wire.JobCreated, []string{"H:lap:1"},
		"00 52 45 53  00 00 00 08  00 00 00 07  48 3a 6c 61 70 3a 31"},
	{"server NOOP", wire.Response, wire.Noop, nil,
		"00 52 45 53  00 00 00 06  00 00 00 00"},
	{"worker GRAB_JOB again", wire.Request, wire.GrabJob, nil,
		"00 52 45 51  00 00 00 09  00 00 00 00"},
	{"server JOB_ASSIGN", wire.Response, wire.JobAssign, []string{"H:lap:1", "reverse", "test"},
		"00 52 45 53  00 00 00 0b  00 00 00 14  48 3a 6c 61 70 3a 31 00  72 65 76 65 72 73 65 00  74 65 73 74"},
	{"worker WORK_COMPLETE", wire.Request, wire.WorkComplete, []string{"H:lap:1", "tset"},
		"00 52 45 51  00 00 00 0d  00 00 00 0c  48 3a 6c 61 70 3a 31 00  74 73 65 74"},
	{"server WORK_COMPLETE", wire.Response, wire.WorkComplete, []string{"H:lap:1", "tset"},
		"00 52 45 53  00 00 00 0d  00 00 00 0c  48 3a 6c 61 70 3a 31 00  74 73 65 74"},
}

func TestSeedConversationEncode(t *testing.T) {
	for _, tc := range seedConversation {
		want := unhex(t, tc.hex)
		got := appendByMagic(nil, tc.magic, tc.typ, bs(tc.fields...)...)
		if !bytes.Equal(got, want) {
			t.Errorf("%s: encoded\n% x\nwant\n% x", tc.name, got, want)
		}
		// Appending keeps what dst held.
		got = appendByMagic([]byte("keep"), tc.magic, tc.typ, bs(tc.fields...)...)
		if !bytes.Equal(got, append([]byte("keep"), want...)) {
			t.Errorf("%s: append to non-empty dst: % x", tc.name, got)
		}
	}
}

func TestSeedConversationDecode(t *testing.T) {
	for _, tc := range seedConversation {
		buf := unhex(t, tc.hex)
		p, n, err := wire.Decode(buf, wire.DefaultMaxPacket)
		if err != nil || n != len(buf) {
			t.Fatalf("%s: Decode = n %d, err %v; want n %d", tc.name, n, err, len(buf))
		}
		if p.Magic != tc.magic || p.Type != tc.typ || p.Len != len(buf) {
			t.Errorf("%s: magic %c type %v len %d", tc.name, p.Magic, p.Type, p.Len)
		}
		if got := fieldStrings(&p); fmt.Sprint(got) != fmt.Sprint(tc.fields) || len(got) != len(tc.fields) {
			t.Errorf("%s: fields %q, want %q", tc.name, got, tc.fields)
		}
	}
}

// The whole conversation in one buffer decodes back into the same packets.
func TestSeedConversationStream(t *testing.T) {
	var stream []byte
	var want []frame
	for _, tc := range seedConversation {
		raw := unhex(t, tc.hex)
		stream = append(stream, raw...)
		want = append(want, frame{Magic: tc.magic, Type: tc.typ, Fields: tc.fields, Raw: string(raw)})
	}
	got, rest, err := decodeChunks(stream, len(stream))
	if err != nil || len(rest) != 0 {
		t.Fatalf("err %v, %d bytes left", err, len(rest))
	}
	compareFrames(t, got, want)
}

func TestAppendHelpers(t *testing.T) {
	got := wire.AppendError(nil, "INVALID_MAGIC", "Request magic expected")
	want := wire.AppendResponse(nil, wire.Error, []byte("INVALID_MAGIC"), []byte("Request magic expected"))
	if !bytes.Equal(got, want) {
		t.Errorf("AppendError = %q, want %q", got, want)
	}
	got = wire.AppendStatusRes(nil, []byte("H:vm:10"), true, true, []byte("1"), []byte("4"))
	if want := "\x00RES\x00\x00\x00\x14\x00\x00\x00\x0fH:vm:10\x001\x001\x001\x004"; string(got) != want {
		t.Errorf("AppendStatusRes = %q, want %q", got, want)
	}
	got = wire.AppendStatusRes(nil, []byte("H:nosuch:1"), false, false, []byte("0"), []byte("0"))
	if want := "H:nosuch:1\x000\x000\x000\x000"; string(got[wire.HeaderSize:]) != want {
		t.Errorf("AppendStatusRes unknown = %q, want payload %q", got, want)
	}
	got = wire.AppendStatusResUnique(nil, []byte("fgu"), true, false, []byte("0"), []byte("0"), 3)
	if want := "\x00RES\x00\x00\x00\x2a\x00\x00\x00\x0dfgu\x001\x000\x000\x000\x003"; string(got) != want {
		t.Errorf("AppendStatusResUnique = %q, want %q", got, want)
	}
	got = wire.AppendHeader([]byte("x"), wire.Noop, 0x01020304)
	if want := "x\x00RES\x00\x00\x00\x06\x01\x02\x03\x04"; string(got) != want {
		t.Errorf("AppendHeader = %q, want %q", got, want)
	}
}

// fieldCounts is the payload layout of every type as in the reference
// (gearman.md §1.2); SUBMIT_REDUCE_JOB carries 4 NULs as gearmand parses it.
var fieldCounts = [wire.NumTypes]int{
	1: 1, 2: 1, 3: 0, 4: 0, 5: 0, 6: 0, 7: 3, 8: 1, 9: 0, 10: 0,
	11: 3, 12: 3, 13: 2, 14: 1, 15: 1, 16: 1, 17: 1, 18: 3, 19: 2, 20: 5,
	21: 3, 22: 1, 23: 2, 24: 0, 25: 2, 26: 1, 27: 1, 28: 2, 29: 2, 30: 0,
	31: 4, 32: 3, 33: 3, 34: 3, 35: 8, 36: 4, 37: 5, 38: 5, 39: 0, 40: 5,
	41: 1, 42: 6,
}

func TestTypeTable(t *testing.T) {
	names := map[string]bool{}
	for ty := wire.Type(1); ty < wire.NumTypes; ty++ {
		if !ty.Valid() {
			t.Errorf("%d not valid", ty)
		}
		if got := ty.Fields(); got != fieldCounts[ty] {
			t.Errorf("%v (%d) has %d fields, want %d", ty, ty, got, fieldCounts[ty])
		}
		if ty.Fields() > wire.MaxFields {
			t.Errorf("%v: %d fields > MaxFields", ty, ty.Fields())
		}
		name := ty.String()
		if name == "UNKNOWN" || name == "" || names[name] {
			t.Errorf("type %d has name %q", ty, name)
		}
		names[name] = true
	}
	for _, ty := range []wire.Type{0, wire.NumTypes, 1000, 1<<32 - 1} {
		if ty.Valid() || ty.Fields() != 0 || ty.String() != "UNKNOWN" {
			t.Errorf("type %d: valid %v, fields %d, name %q", ty, ty.Valid(), ty.Fields(), ty.String())
		}
	}
	if wire.SubmitJobSched.Fields() != wire.MaxFields {
		t.Errorf("MaxFields %d, SUBMIT_JOB_SCHED has %d", wire.MaxFields, wire.SubmitJobSched.Fields())
	}
}

// Every type round-trips with both magics: plain fields, empty fields, and
// a last field holding NULs (it is "the rest").
func TestRoundTripEveryType(t *testing.T) {
	for ty := wire.Type(1); ty < wire.NumTypes; ty++ {
		for _, m := range []wire.Magic{wire.Request, wire.Response} {
			nf := ty.Fields()
			variants := [][]string{make([]string, nf), make([]string, nf), make([]string, nf)}
			for i := range nf {
				variants[0][i] = fmt.Sprintf("field%d", i)
				variants[1][i] = ""
				variants[2][i] = strings.Repeat("x", i)
			}
			if nf > 0 {
				variants[0][nf-1] = "last\x00with\x00NULs\x00"
				variants[2][nf-1] = "\x00\x00"
			}
			for _, fields := range variants {
				buf := appendByMagic(nil, m, ty, bs(fields...)...)
				wantLen := 0
				for _, f := range fields {
					wantLen += len(f)
				}
				if nf > 1 {
					wantLen += nf - 1
				}
				if got := binary.BigEndian.Uint32(buf[8:12]); int(got) != wantLen || len(buf) != wire.HeaderSize+wantLen {
					t.Fatalf("%v: header length %d, buffer %d, want %d", ty, got, len(buf), wantLen)
				}
				// Trailing bytes of a following packet must not leak into it.
				stream := append(append([]byte(nil), buf...), "\x00REQ"...)
				p, n, err := wire.Decode(stream, wire.DefaultMaxPacket)
				if err != nil || n != len(buf) {
					t.Fatalf("%v %c %q: n %d err %v, want n %d", ty, m, fields, n, err, len(buf))
				}
				if p.Magic != m || p.Type != ty || p.NField != nf || p.Len != len(buf) {
					t.Fatalf("%v: got magic %c type %v nfield %d len %d", ty, p.Magic, p.Type, p.NField, p.Len)
				}
				if got := fieldStrings(&p); fmt.Sprintf("%q", got) != fmt.Sprintf("%q", fields) {
					t.Fatalf("%v: fields %q, want %q", ty, got, fields)
				}
				for i := 0; i < wire.MaxFields; i++ {
					if i >= nf && (p.Arg(i) != nil || p.Field[i] != nil) {
						t.Fatalf("%v: field %d beyond NField is %q, want nil", ty, i, p.Field[i])
					}
				}
				if again := appendByMagic(nil, p.Magic, p.Type, p.Field[:p.NField]...); !bytes.Equal(again, buf) {
					t.Fatalf("%v: re-encoded %q, want %q", ty, again, buf)
				}
			}
		}
	}
}

// Field-less types ignore a payload, as gearmand does, but still consume it.
func TestFieldlessPayloadIgnored(t *testing.T) {
	for ty := wire.Type(1); ty < wire.NumTypes; ty++ {
		if ty.Fields() != 0 {
			continue
		}
		buf := wire.AppendRequest(nil, ty, []byte("junk\x00junk"))
		p, n, err := wire.Decode(buf, wire.DefaultMaxPacket)
		if err != nil || n != len(buf) || p.NField != 0 || p.Type != ty {
			t.Errorf("%v: n %d err %v nfield %d", ty, n, err, p.NField)
		}
	}
}

// Decoded fields alias the buffer; appending to one must not write into the
// bytes that follow it (the next field or the next packet, which may live
// in the network layer's read buffer). Every field, the last included, must
// therefore have cap == len.
func TestDecodeFieldsCapped(t *testing.T) {
	stream := wire.AppendRequest(nil, wire.SubmitJob, bs("fn", "uniq", "data")...)
	stream = wire.AppendRequest(stream, wire.EchoReq, []byte("next"))
	orig := string(stream)
	p, _, err := wire.Decode(stream, wire.DefaultMaxPacket)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < p.NField; i++ {
		if f := p.Field[i]; cap(f) != len(f) {
			t.Errorf("%v field %d %q: cap %d > len %d; append(p.Field[%d], ...) overwrites the following bytes",
				p.Type, i, f, cap(f), len(f), i)
		}
	}
	for i := 0; i < p.NField; i++ {
		_ = append(p.Field[i], "XXXXXXXXXXXXXXXX"...)
	}
	if string(stream) != orig {
		t.Errorf("appending to decoded fields changed the buffer:\n%q\nwas\n%q", stream, orig)
	}
}

func TestPacketString(t *testing.T) {
	p, _, _ := wire.Decode(unhex(t, seedConversation[8].hex), wire.DefaultMaxPacket)
	if got, want := p.String(), `JOB_ASSIGN("H:lap:1", "reverse", "test")`; got != want {
		t.Errorf("String = %s, want %s", got, want)
	}
	p, _, _ = wire.Decode(unhex(t, seedConversation[1].hex), wire.DefaultMaxPacket)
	if got, want := p.String(), `GRAB_JOB()`; got != want {
		t.Errorf("String = %s, want %s", got, want)
	}
}

// ---- errors and partial input ----

func TestDecodeIncomplete(t *testing.T) {
	full := wire.AppendRequest(nil, wire.SubmitJob, bs("reverse", "", "test")...)
	for i := 0; i < len(full); i++ {
		p, n, err := wire.Decode(full[:i], wire.DefaultMaxPacket)
		if n != 0 || err != nil {
			t.Fatalf("prefix %d: n %d err %v", i, n, err)
		}
		// Once the header is in, Len announces the whole packet so the
		// caller can wait for it without re-decoding.
		if i >= wire.HeaderSize && p.Len != len(full) {
			t.Errorf("prefix %d: Len %d, want %d", i, p.Len, len(full))
		}
		if i < wire.HeaderSize && p.Len != 0 {
			t.Errorf("prefix %d: Len %d before the header is in", i, p.Len)
		}
	}
}

func TestDecodeBadMagic(t *testing.T) {
	for _, in := range []string{
		"X", "\x01", "\x00X", "\x00RX", "\x00R\x00", "\x00REX", "\x00REq",
		"REQ\x00", "\x00\x00\x00\x00", "\x00RX\x00",
		"\x00REX\x00\x00\x00\x01\x00\x00\x00\x00",
		"\x00RXQ\x00\x00\x00\x01\x00\x00\x00\x00",
	} {
		_, n, err := wire.Decode([]byte(in), wire.DefaultMaxPacket)
		if err != wire.ErrBadMagic || n != 0 {
			t.Errorf("Decode(%q) = n %d, err %v; want ErrBadMagic", in, n, err)
		}
	}
	for _, in := range []string{"", "\x00", "\x00R", "\x00RE", "\x00REQ", "\x00RES", "\x00REQQ"} {
		_, n, err := wire.Decode([]byte(in), wire.DefaultMaxPacket)
		if err != nil || n != 0 {
			t.Errorf("Decode(%q) = n %d, err %v; want incomplete", in, n, err)
		}
	}
}

func header(magic string, typ, size uint32) []byte {
	b := []byte(magic)
	b = binary.BigEndian.AppendUint32(b, typ)
	return binary.BigEndian.AppendUint32(b, size)
}

func TestDecodeUnknownType(t *testing.T) {
	for _, typ := range []uint32{0, 43, 1000, 1<<32 - 1} {
		for _, magic := range []string{"\x00REQ", "\x00RES"} {
			// Rejected from the header alone, body or not.
			for _, body := range []string{"", "abc"} {
				_, n, err := wire.Decode(append(header(magic, typ, 3), body...), wire.DefaultMaxPacket)
				if err != wire.ErrUnknownType || n != 0 {
					t.Errorf("type %d %q: n %d err %v; want ErrUnknownType", typ, magic, n, err)
				}
			}
		}
	}
	var perr *wire.ProtocolError
	if !errors.As(error(wire.ErrUnknownType), &perr) || perr.Code != "INVALID_COMMAND" {
		t.Errorf("ErrUnknownType is %#v", wire.ErrUnknownType)
	}
}

func TestDecodeTooLarge(t *testing.T) {
	// A header announcing 4 GiB is refused at once, before any body.
	_, n, err := wire.Decode(header("\x00REQ", uint32(wire.SubmitJob), 1<<32-1), wire.DefaultMaxPacket)
	if err != wire.ErrTooLarge || n != 0 {
		t.Errorf("4 GiB: n %d err %v; want ErrTooLarge", n, err)
	}
	_, n, err = wire.Decode(header("\x00REQ", uint32(wire.SubmitJobBG), wire.DefaultMaxPacket+1), wire.DefaultMaxPacket)
	if err != wire.ErrTooLarge || n != 0 {
		t.Errorf("max+1: n %d err %v; want ErrTooLarge", n, err)
	}
	// Exactly the limit is fine: wait for the body.
	p, n, err := wire.Decode(header("\x00REQ", uint32(wire.SubmitJobBG), wire.DefaultMaxPacket), wire.DefaultMaxPacket)
	if err != nil || n != 0 || p.Len != wire.HeaderSize+wire.DefaultMaxPacket {
		t.Errorf("max: n %d err %v len %d; want incomplete", n, err, p.Len)
	}
	// A small limit applies to field-less types too.
	_, _, err = wire.Decode(header("\x00REQ", uint32(wire.GrabJob), 11), 10)
	if err != wire.ErrTooLarge {
		t.Errorf("GRAB_JOB 11 > 10: err %v", err)
	}
	full := wire.AppendRequest(nil, wire.EchoReq, []byte("0123456789"))
	if _, n, err := wire.Decode(full, 10); err != nil || n != len(full) {
		t.Errorf("ECHO 10 <= 10: n %d err %v", n, err)
	}
	if _, _, err := wire.Decode(full, 9); err != wire.ErrTooLarge {
		t.Errorf("ECHO 10 > 9: err %v", err)
	}
	if _, _, err := wire.Decode(full, 0); err != wire.ErrTooLarge {
		t.Errorf("ECHO 10 > 0: err %v", err)
	}
}

func TestDecodeMissingFields(t *testing.T) {
	for _, tc := range []struct {
		typ     wire.Type
		payload string
	}{
		{wire.SubmitJob, "fnonly"},
		{wire.SubmitJob, "fn\x00uniq"},
		{wire.SubmitJob, ""},
		{wire.Error, "CODE"},
		{wire.StatusResUnique, ""},
		{wire.StatusResUnique, "u\x001\x000\x000\x000"},
		{wire.SubmitJobSched, "f\x00u\x00\x00\x00\x00\x00"},
		{wire.WorkComplete, "H:x:1"},
	} {
		buf := append(header("\x00REQ", uint32(tc.typ), uint32(len(tc.payload))), tc.payload...)
		_, n, err := wire.Decode(buf, wire.DefaultMaxPacket)
		if err != wire.ErrMissingFields || n != 0 {
			t.Errorf("%v %q: n %d err %v; want ErrMissingFields", tc.typ, tc.payload, n, err)
		}
		// Missing fields are only known once the whole payload is in.
		if _, n, err := wire.Decode(buf[:len(buf)-min(1, len(tc.payload))], wire.DefaultMaxPacket); len(tc.payload) > 0 && (err != nil || n != 0) {
			t.Errorf("%v %q short: n %d err %v; want incomplete", tc.typ, tc.payload, n, err)
		}
	}
	// Exactly enough NULs (empty last field) is fine.
	buf := append(header("\x00REQ", uint32(wire.SubmitJob), 2), 0, 0)
	p, n, err := wire.Decode(buf, wire.DefaultMaxPacket)
	if err != nil || n != len(buf) || p.NField != 3 {
		t.Errorf("SUBMIT_JOB \\0\\0: n %d err %v nfield %d", n, err, p.NField)
	}
}

func TestDecodeResponseMagic(t *testing.T) {
	buf := []byte("\x00RES\x00\x00\x00\x10\x00\x00\x00\x02hi")
	p, n, err := wire.Decode(buf, wire.DefaultMaxPacket)
	if err != nil || n != len(buf) || p.Magic != wire.Response || p.Type != wire.EchoReq || string(p.Arg(0)) != "hi" {
		t.Errorf("RES ECHO_REQ: %v n %d err %v magic %c", &p, n, err, p.Magic)
	}
	buf[3] = 'Q'
	p, _, _ = wire.Decode(buf, wire.DefaultMaxPacket)
	if p.Magic != wire.Request {
		t.Errorf("REQ decoded with magic %c", p.Magic)
	}
}

func TestProtocolErrors(t *testing.T) {
	for _, tc := range []struct {
		err  *wire.ProtocolError
		code string
	}{
		{wire.ErrBadMagic, "INVALID_MAGIC"},
		{wire.ErrUnknownType, "INVALID_COMMAND"},
		{wire.ErrTooLarge, "ARGUMENT_TOO_LARGE"},
		{wire.ErrMissingFields, "INVALID_PACKET"},
		{wire.ErrLineTooLong, "ARGUMENT_TOO_LARGE"},
	} {
		if tc.err.Code != tc.code || tc.err.Text == "" || !strings.HasPrefix(tc.err.Error(), "wire: "+tc.code+": ") {
			t.Errorf("%#v: want code %s", tc.err, tc.code)
		}
		var perr *wire.ProtocolError
		if err := fmt.Errorf("wrapped: %w", tc.err); !errors.As(err, &perr) || perr != tc.err {
			t.Errorf("errors.As(%v) failed", err)
		}
	}
}

func TestIsText(t *testing.T) {
	for in, want := range map[string]bool{"": false, "\x00REQ": false, "\x00": false, "s": true, "\n": true, "\r\n": true, "\x01": true} {
		if got := wire.IsText([]byte(in)); got != want {
			t.Errorf("IsText(%q) = %v", in, got)
		}
	}
}

func TestDecodeLine(t *testing.T) {
	long := strings.Repeat("a", wire.MaxLine)
	for _, tc := range []struct {
		in   string
		line string
		n    int
		err  error
	}{
		{"status\n", "status", 7, nil},
		{"status\r\n", "status", 8, nil},
		{"status\r\nworkers\n", "status", 8, nil},
		{"status", "", 0, nil},
		{"status\r", "", 0, nil},
		{"\n", "", 1, nil},
		{"\r\n", "", 2, nil},
		{"a\rb\n", "a\rb", 4, nil},
		{"a\r\r\n", "a\r", 4, nil},
		{"\r\r\n", "\r", 3, nil},
		{"show  jobs \n", "show  jobs ", 12, nil},
		{"bin\x00ary\n", "bin\x00ary", 8, nil},
		{"", "", 0, nil},
		{long, "", 0, nil},                         // 8192 bytes, may still end
		{long + "\n", long, wire.MaxLine + 1, nil}, // 8192 bytes is the limit
		{long + "a", "", 0, wire.ErrLineTooLong},
		{long + "a\n", "", 0, wire.ErrLineTooLong},
		{long + "a\r\n", "", 0, wire.ErrLineTooLong},
		{strings.Repeat("b", 100000), "", 0, wire.ErrLineTooLong},
	} {
		line, n, err := wire.DecodeLine([]byte(tc.in))
		if string(line) != tc.line || n != tc.n || err != tc.err {
			name := tc.in
			if len(name) > 40 {
				name = fmt.Sprintf("%q...(%d bytes)", name[:20], len(name))
			}
			t.Errorf("DecodeLine(%q) = %q, %d, %v; want %q, %d, %v", name, trunc(line), n, err, trunc([]byte(tc.line)), tc.n, tc.err)
		}
	}
}

func trunc(b []byte) string {
	if len(b) > 40 {
		return fmt.Sprintf("%s...(%d bytes)", b[:20], len(b))
	}
	return string(b)
}

// ---- stream decoding: split tests ----

// frame is one decoded unit of a connection's input, copied out of the
// buffer: an admin line or a binary packet.
type frame struct {
	Line   bool
	Magic  wire.Magic
	Type   wire.Type
	Fields []string // the line itself for admin lines
	Raw    string   // the bytes the frame took
}

func (f frame) String() string {
	if f.Line {
		return fmt.Sprintf("line%q", f.Fields)
	}
	return fmt.Sprintf("%c:%v%q", f.Magic, f.Type, f.Fields)
}

func fieldStrings(p *wire.Packet) []string {
	if p.NField == 0 {
		return nil
	}
	out := make([]string, p.NField)
	for i := range out {
		out[i] = string(p.Field[i])
	}
	return out
}

// streamDecoder emulates the network layer: each read is appended to the
// bytes the previous reads left unconsumed, every complete frame is
// decoded, and the rest is kept for the next read.
type streamDecoder struct {
	t      testing.TB // nil: report invariant breaks as err
	max    int
	buf    []byte
	frames []frame
	err    error
}

func (d *streamDecoder) feed(chunk []byte) {
	if d.err != nil {
		return
	}
	d.buf = append(d.buf, chunk...)
	for len(d.buf) > 0 {
		var f frame
		var n int
		var err error
		if wire.IsText(d.buf) {
			var line []byte
			line, n, err = wire.DecodeLine(d.buf)
			f = frame{Line: true, Fields: []string{string(line)}}
		} else {
			var p wire.Packet
			p, n, err = wire.Decode(d.buf, d.max)
			if err == nil && n > 0 && p.Len != n {
				err = fmt.Errorf("invariant: Len %d != n %d", p.Len, n)
			}
			f = frame{Magic: p.Magic, Type: p.Type, Fields: fieldStrings(&p)}
		}
		if err == nil && (n < 0 || n > len(d.buf)) {
			err = fmt.Errorf("invariant: n %d outside buffer of %d", n, len(d.buf))
		}
		if err != nil {
			d.err = err
			return
		}
		if n == 0 {
			return
		}
		f.Raw = string(d.buf[:n])
		d.frames = append(d.frames, f)
		d.buf = d.buf[n:]
	}
}

// decodeChunks feeds stream in chunks of at most size bytes.
func decodeChunks(stream []byte, size int) ([]frame, []byte, error) {
	d := streamDecoder{max: wire.DefaultMaxPacket}
	for len(stream) > 0 {
		k := min(size, len(stream))
		d.feed(stream[:k])
		stream = stream[k:]
	}
	return d.frames, d.buf, d.err
}

func (f frame) equal(g frame) bool {
	return f.Line == g.Line && f.Magic == g.Magic && f.Type == g.Type && f.Raw == g.Raw &&
		slices.Equal(f.Fields, g.Fields) && (f.Fields == nil) == (g.Fields == nil)
}

func compareFrames(t testing.TB, got, want []frame) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("got %d frames %v\nwant %d %v", len(got), got, len(want), want)
	}
	for i := range got {
		if !got[i].equal(want[i]) {
			t.Fatalf("frame %d: got %#v\nwant %#v", i, got[i], want[i])
		}
	}
}

// pipeline is a mixed binary/text input as one connection might send it.
func pipeline(t testing.TB) []byte {
	var b []byte
	b = append(b, unhex(t, seedConversation[0].hex)...)
	b = append(b, "status\n"...)
	b = wire.AppendRequest(b, wire.SubmitJob, bs("reverse", "uniq-1", "some\x00data")...)
	b = append(b, "version\r\n"...)
	b = append(b, "\n"...)
	b = wire.AppendRequest(b, wire.GrabJob)
	b = wire.AppendRequest(b, wire.SubmitJobSched, bs("f", "u", "1", "2", "3", "4", "5", "")...)
	b = append(b, "workers\n"...)
	b = wire.AppendResponse(b, wire.StatusResUnique, bs("u", "1", "0", "3", "4", "2")...)
	b = wire.AppendRequest(b, wire.EchoReq, []byte("\n\r\nstatus\n"))
	b = wire.AppendRequest(b, wire.GrabJobAll, []byte("ignored"))
	b = append(b, "show jobs\r\n"...)
	return b
}

func TestSplitPipeline(t *testing.T) {
	stream := pipeline(t)
	want, rest, err := decodeChunks(stream, len(stream))
	if err != nil || len(rest) != 0 || len(want) != 12 {
		t.Fatalf("whole: %d frames, %d left, err %v: %v", len(want), len(rest), err, want)
	}
	// Cut in two at every index.
	for i := 0; i <= len(stream); i++ {
		d := streamDecoder{max: wire.DefaultMaxPacket}
		d.feed(stream[:i])
		d.feed(stream[i:])
		if d.err != nil || len(d.buf) != 0 {
			t.Fatalf("split at %d: err %v, %d left", i, d.err, len(d.buf))
		}
		compareFrames(t, d.frames, want)
	}
	// Cut in three.
	for i := 0; i <= len(stream); i += 3 {
		for j := i; j <= len(stream); j += 7 {
			d := streamDecoder{max: wire.DefaultMaxPacket}
			d.feed(stream[:i])
			d.feed(stream[i:j])
			d.feed(stream[j:])
			if d.err != nil || len(d.buf) != 0 {
				t.Fatalf("split at %d,%d: err %v, %d left", i, j, d.err, len(d.buf))
			}
			compareFrames(t, d.frames, want)
		}
	}
	// One byte at a time, and in every chunk size.
	for size := 1; size <= len(stream); size++ {
		got, rest, err := decodeChunks(stream, size)
		if err != nil || len(rest) != 0 {
			t.Fatalf("chunks of %d: err %v, %d left", size, err, len(rest))
		}
		compareFrames(t, got, want)
	}
}

// A stream that ends in a framing error yields the same frames and the same
// error however it is cut.
func TestSplitErrors(t *testing.T) {
	good := pipeline(t)
	for _, tc := range []struct {
		name string
		tail string
		err  error
	}{
		{"bad magic", "\x00RX", wire.ErrBadMagic},
		{"bad magic 4", "\x00REX\x00\x00\x00\x01", wire.ErrBadMagic},
		{"type 0", string(header("\x00REQ", 0, 0)), wire.ErrUnknownType},
		{"type 43", string(header("\x00REQ", 43, 5)), wire.ErrUnknownType},
		{"type 1000", string(header("\x00RES", 1000, 0)), wire.ErrUnknownType},
		{"4 GiB", string(header("\x00REQ", uint32(wire.SubmitJob), 1<<32-1)), wire.ErrTooLarge},
		{"too few NULs", string(header("\x00REQ", uint32(wire.SubmitJob), 6)) + "fnonly", wire.ErrMissingFields},
		{"long line", strings.Repeat("x", wire.MaxLine+1), wire.ErrLineTooLong},
	} {
		stream := append(append([]byte(nil), good...), tc.tail...)
		want, _, err := decodeChunks(stream, len(stream))
		if err != tc.err {
			t.Fatalf("%s: whole: err %v, want %v", tc.name, err, tc.err)
		}
		for _, size := range []int{1, 2, 3, 5, 11, 12, 13, 64} {
			got, _, err := decodeChunks(stream, size)
			if err != tc.err {
				t.Fatalf("%s: chunks of %d: err %v, want %v", tc.name, size, err, tc.err)
			}
			compareFrames(t, got, want)
		}
		for i := 0; i <= len(stream); i++ {
			if i > len(good)+64 && i < len(stream)-64 && i%101 != 0 {
				continue // the long line: a sample of its cuts is enough
			}
			d := streamDecoder{max: wire.DefaultMaxPacket}
			d.feed(stream[:i])
			d.feed(stream[i:])
			if d.err != tc.err {
				t.Fatalf("%s: split at %d: err %v, want %v", tc.name, i, d.err, tc.err)
			}
			compareFrames(t, d.frames, want)
		}
	}
}

// ---- randomized round trip ----

var wireSeed = flag.Uint64("wire.seed", 0x6765617273686172, "PCG seed for TestRandomPipelines")

func randBytes(r *rand.Rand, n int, noNUL bool) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.IntN(256))
		if noNUL && b[i] == 0 {
			b[i] = 'z'
		}
	}
	return b
}

func randLen(r *rand.Rand) int {
	switch r.IntN(10) {
	case 0:
		return 0
	case 1:
		return 1000 + r.IntN(5000)
	default:
		return r.IntN(16)
	}
}

// randFrame appends one random frame to b and returns its expected decoding.
func randFrame(r *rand.Rand, b []byte) ([]byte, frame) {
	if r.IntN(4) == 0 {
		const alphabet = "abcdefghijklmnopqrstuvwxyz0123456789 \t:.-+"
		n := r.IntN(40)
		if r.IntN(50) == 0 {
			n = wire.MaxLine - 2
		}
		line := make([]byte, n)
		for i := range line {
			line[i] = alphabet[r.IntN(len(alphabet))]
		}
		end := "\n"
		if r.IntN(2) == 0 {
			end = "\r\n"
		}
		raw := string(line) + end
		return append(b, raw...), frame{Line: true, Fields: []string{string(line)}, Raw: raw}
	}
	ty := wire.Type(1 + r.IntN(wire.NumTypes-1))
	m := wire.Request
	if r.IntN(3) == 0 {
		m = wire.Response
	}
	nf := ty.Fields()
	args := make([][]byte, nf)
	for i := range args {
		args[i] = randBytes(r, randLen(r), i < nf-1)
	}
	start := len(b)
	b = appendByMagic(b, m, ty, args...)
	f := frame{Magic: m, Type: ty, Raw: string(b[start:])}
	for _, a := range args {
		f.Fields = append(f.Fields, string(a))
	}
	return b, f
}

func TestRandomPipelines(t *testing.T) {
	seed := *wireSeed
	t.Logf("PCG seed %#x (rerun with -args -wire.seed=%d)", seed, seed)
	r := rand.New(rand.NewPCG(seed, seed^0x5eed))
	rounds := 300
	if testing.Short() {
		rounds = 50
	}
	for round := 0; round < rounds; round++ {
		var stream []byte
		var want []frame
		for range 1 + r.IntN(40) {
			var f frame
			stream, f = randFrame(r, stream)
			want = append(want, f)
		}
		d := streamDecoder{max: wire.DefaultMaxPacket}
		for rest := stream; len(rest) > 0; {
			k := min(len(rest), r.IntN(64)+1)
			if r.IntN(8) == 0 {
				k = min(len(rest), r.IntN(4096)+1)
			}
			d.feed(rest[:k])
			rest = rest[k:]
		}
		if d.err != nil || len(d.buf) != 0 {
			t.Fatalf("round %d: err %v, %d bytes left", round, d.err, len(d.buf))
		}
		compareFrames(t, d.frames, want)
	}
}

// ---- benchmarks ----

func BenchmarkDecodeSubmit(b *testing.B) {
	buf := wire.AppendRequest(nil, wire.SubmitJob, bs("reverse", "0123456789abcdef", strings.Repeat("d", 100))...)
	b.ReportAllocs()
	b.SetBytes(int64(len(buf)))
	for b.Loop() {
		p, n, err := wire.Decode(buf, wire.DefaultMaxPacket)
		if err != nil || n != len(buf) || p.NField != 3 {
			b.Fatal(n, err)
		}
	}
}

func BenchmarkAppendJobAssign(b *testing.B) {
	handle, fn, data := []byte("H:test:12345"), []byte("reverse"), []byte(strings.Repeat("d", 100))
	dst := make([]byte, 0, 512)
	b.ReportAllocs()
	b.SetBytes(int64(len(wire.AppendResponse(nil, wire.JobAssign, handle, fn, data))))
	for b.Loop() {
		dst = wire.AppendResponse(dst[:0], wire.JobAssign, handle, fn, data)
	}
	if len(dst) == 0 {
		b.Fatal("empty")
	}
}

// The decoder and encoder stay allocation-free (the benchmarks only report).
func TestZeroAllocs(t *testing.T) {
	if testing.CoverMode() != "" {
		t.Skip("coverage instrumentation allocates")
	}
	sub := wire.AppendRequest(nil, wire.SubmitJob, bs("reverse", "", "test")...)
	handle, fn, data := []byte("H:test:1"), []byte("reverse"), []byte("test")
	dst := make([]byte, 0, 512)
	line := []byte("status\r\n")
	for name, f := range map[string]func(){
		"Decode":          func() { _, _, _ = wire.Decode(sub, wire.DefaultMaxPacket) },
		"Decode partial":  func() { _, _, _ = wire.Decode(sub[:2], wire.DefaultMaxPacket) },
		"DecodeLine":      func() { _, _, _ = wire.DecodeLine(line) },
		"AppendResponse":  func() { dst = wire.AppendResponse(dst[:0], wire.JobAssign, handle, fn, data) },
		"AppendRequest":   func() { dst = wire.AppendRequest(dst[:0], wire.JobAssign, handle, fn, data) },
		"AppendError":     func() { dst = wire.AppendError(dst[:0], "CODE", "text") },
		"AppendStatusRes": func() { dst = wire.AppendStatusRes(dst[:0], handle, true, false, fn, fn) },
		"AppendStatusResUnique": func() {
			dst = wire.AppendStatusResUnique(dst[:0], handle, true, false, fn, fn, 12345)
		},
	} {
		if n := testing.AllocsPerRun(100, f); n != 0 {
			t.Errorf("%s: %v allocs/op, want 0", name, n)
		}
	}
}
