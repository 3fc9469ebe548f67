package wire_test

import (
	"bytes"
	"slices"
	"testing"

	"gearshard/wire"
)

// The seed corpus lives in testdata/fuzz/<Fuzz…>/ (wire/testdata is a
// symlink to the top-level testdata/wire/, so crashers found by
// `go test -fuzz` land there too). The seeds added below in code cover the
// seed-003 conversation; the files cover every packet type, admin lines and
// malformed input. Keep seeds well under 8 KiB: with Go 1.26 a corpus
// entry past 8 KiB stalled the fuzz workers (0 execs/s for the whole run);
// the MaxLine boundary is covered by TestDecodeLine and TestSplitErrors.

// FuzzDecode feeds an input to the stream decoder whole, then cut in two at
// a fuzzer-chosen position. Both must give the same frames, error and
// leftover, and every binary packet must re-encode to exactly the bytes it
// took (except field-less types, which ignore a payload).
func FuzzDecode(f *testing.F) {
	for _, tc := range seedConversation {
		f.Add(unhex(f, tc.hex), uint(5))
	}
	f.Add(pipeline(f), uint(100))
	f.Add([]byte("status\r\nversion\n\x00REQ\x00\x00\x00\x10\x00\x00\x00\x02hi"), uint(9))
	f.Add([]byte("\x00RX"), uint(1))
	f.Add(header("\x00REQ", uint32(wire.SubmitJob), 1<<32-1), uint(6))
	f.Add(append(header("\x00REQ", uint32(wire.SubmitJob), 6), "fnonly"...), uint(13))

	f.Fuzz(func(t *testing.T, data []byte, cut uint) {
		checkStream(t, data, cut, wire.DefaultMaxPacket)
		checkStream(t, data, cut, 16) // small enough to reach ErrTooLarge
	})
}

func checkStream(t *testing.T, data []byte, cut uint, max int) {
	// The first frame, decoded directly: no panic, n within the buffer.
	if wire.IsText(data) {
		if _, n, err := wire.DecodeLine(data); n < 0 || n > len(data) || (err != nil && n != 0) {
			t.Fatalf("DecodeLine: n %d of %d, err %v", n, len(data), err)
		}
	} else if p, n, err := wire.Decode(data, max); n < 0 || n > len(data) || (err != nil && n != 0) ||
		(n > 0 && p.Len != n) || p.NField > wire.MaxFields {
		t.Fatalf("Decode: n %d of %d, Len %d, NField %d, err %v", n, len(data), p.Len, p.NField, err)
	}

	whole := streamDecoder{max: max}
	whole.feed(data)
	k := int(cut % uint(len(data)+1))
	split := streamDecoder{max: max}
	split.feed(data[:k])
	split.feed(data[k:])
	if !slices.EqualFunc(whole.frames, split.frames, frame.equal) {
		t.Fatalf("cut at %d: frames differ\nwhole %v\nsplit %v", k, whole.frames, split.frames)
	}
	if whole.err != split.err {
		t.Fatalf("cut at %d: whole err %v, split err %v", k, whole.err, split.err)
	}
	if whole.err == nil && !bytes.Equal(whole.buf, split.buf) {
		t.Fatalf("cut at %d: leftover %q vs %q", k, whole.buf, split.buf)
	}
	if whole.err != nil {
		if _, ok := whole.err.(*wire.ProtocolError); !ok {
			t.Fatalf("error %v", whole.err) // an invariant of streamDecoder broke
		}
	}

	consumed := 0
	for _, fr := range whole.frames {
		consumed += len(fr.Raw)
		if fr.Line {
			line := fr.Fields[0]
			if fr.Raw != line+"\n" && fr.Raw != line+"\r\n" {
				t.Fatalf("line %q took %q", line, fr.Raw)
			}
			if len(line) > wire.MaxLine || bytes.IndexByte([]byte(line), '\n') >= 0 {
				t.Fatalf("bad line %q", line)
			}
			continue
		}
		if len(fr.Raw) > wire.HeaderSize+max {
			t.Fatalf("%v: %d bytes over the limit %d", fr, len(fr.Raw), max)
		}
		if fr.Type.Fields() == 0 && len(fr.Raw) != wire.HeaderSize {
			continue // payload ignored: nothing to re-encode
		}
		if len(fr.Fields) != fr.Type.Fields() {
			t.Fatalf("%v: %d fields, type has %d", fr, len(fr.Fields), fr.Type.Fields())
		}
		again := appendByMagic(nil, fr.Magic, fr.Type, bs(fr.Fields...)...)
		if string(again) != fr.Raw {
			t.Fatalf("%v re-encodes to %q, took %q", fr, again, fr.Raw)
		}
	}
	if whole.err == nil && consumed+len(whole.buf) != len(data) {
		t.Fatalf("consumed %d + left %d != %d", consumed, len(whole.buf), len(data))
	}
}

// FuzzDecodeLine checks DecodeLine against its contract and against the
// same input arriving one byte short.
func FuzzDecodeLine(f *testing.F) {
	for _, s := range []string{
		"status\n", "status\r\n", "\n", "\r\n", "", "version", "a\r\r\n",
		"show unique jobs\nworkers\n", "bin\x00ary\n",
		string(bytes.Repeat([]byte("a"), 1000)) + "\r\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		line, n, err := wire.DecodeLine(data)
		nl := bytes.IndexByte(data, '\n')
		switch {
		case err != nil:
			if err != wire.ErrLineTooLong || n != 0 || line != nil {
				t.Fatalf("err %v with n %d line %q", err, n, line)
			}
			if nl >= 0 && nl <= wire.MaxLine || nl < 0 && len(data) <= wire.MaxLine {
				t.Fatalf("ErrLineTooLong for a line ending at %d of %d", nl, len(data))
			}
		case n == 0:
			if nl >= 0 || len(data) > wire.MaxLine || line != nil {
				t.Fatalf("incomplete with newline at %d of %d, line %q", nl, len(data), line)
			}
		default:
			if n != nl+1 || n > len(data) {
				t.Fatalf("n %d, newline at %d", n, nl)
			}
			want := data[:nl]
			if len(want) > 0 && want[len(want)-1] == '\r' {
				want = want[:len(want)-1]
			}
			if !bytes.Equal(line, want) || len(line) > wire.MaxLine {
				t.Fatalf("line %q, want %q", line, want)
			}
		}
		// With a byte less the answer is the same, or "incomplete" when
		// that byte was the newline.
		if len(data) == 0 {
			return
		}
		short := data[:len(data)-1]
		line2, n2, err2 := wire.DecodeLine(short)
		switch {
		case n > 0 && n == len(data): // the newline was the last byte
			if n2 != 0 || line2 != nil {
				t.Fatalf("without its newline: %q, %d, %v", line2, n2, err2)
			}
		case err != nil: // too long, unless a byte less is exactly MaxLine
			if err2 != err && !(err2 == nil && n2 == 0 && len(short) == wire.MaxLine) {
				t.Fatalf("a byte less: %q, %d, %v; full: too long", line2, n2, err2)
			}
		default:
			if n2 != n || err2 != nil || !bytes.Equal(line2, line) {
				t.Fatalf("a byte less: %q, %d, %v; full %q, %d, %v", line2, n2, err2, line, n, err)
			}
		}
	})
}
