package netio_test

// TestTranscripts replays the golden conversations in
// ../testdata/transcripts/*.txt against a real server (gstest.Start, handle
// prefix "H:test") and compares every byte the server sends.
//
// Transcript format, one directive per line:
//
//	# text          a comment
//	# shards: N     server option (engine shards; default 2), allowed
//	# loops: N      anywhere in the file (event loops; default 2)
//	NAME> BYTES     write BYTES on connection NAME (one write per line)
//	NAME< BYTES     the next bytes from NAME must be exactly BYTES
//	NAME! closed    the server must close NAME, sending nothing more
//	NAME! quiet     nothing may arrive on NAME for 100 ms
//	! sleep DUR     pause (time.ParseDuration), e.g. to make the server
//	                see a packet in two reads
//
// NAME is letters, digits and '_' and may be empty (the default
// connection). A connection is dialed when first named. The single space
// after '>' or '<' is syntax; BYTES is the rest of the line, taken
// literally except for the escapes \0 \n \r \t \\ and \xHH (exactly two hex
// digits; write a trailing space as \x20). Blank lines are ignored. After
// the last line every connection still open must stay silent, so a
// transcript accounts for everything the server sends.
//
// Reads wait at most 5 s. A mismatch reports the bytes received so far,
// quoted, next to the expected ones.

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"gearshard/netio/gstest"
)

const (
	transcriptDir     = "../testdata/transcripts"
	transcriptTimeout = 5 * time.Second
	quietWait         = 100 * time.Millisecond
)

type stepKind uint8

const (
	stepSend stepKind = iota
	stepExpect
	stepClosed
	stepQuiet
	stepSleep
)

type step struct {
	line  int
	kind  stepKind
	conn  string
	data  []byte
	sleep time.Duration
}

type transcript struct {
	shards, loops int // 0: gstest's default
	steps         []step
}

func TestTranscripts(t *testing.T) {
	files, err := filepath.Glob(filepath.Join(transcriptDir, "*.txt"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no transcripts in %s (%v)", transcriptDir, err)
	}
	for _, file := range files {
		t.Run(strings.TrimSuffix(filepath.Base(file), ".txt"), func(t *testing.T) {
			t.Parallel()
			tr, err := parseTranscript(file)
			if err != nil {
				t.Fatal(err)
			}
			srv := gstest.Start(t, func(c *gstest.Config) {
				if tr.shards > 0 {
					c.Engine.Shards = tr.shards
				}
				if tr.loops > 0 {
					c.Net.Loops = tr.loops
				}
			})
			replay(t, file, srv.Addr, tr)
		})
	}
}

func parseTranscript(file string) (*transcript, error) {
	src, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	tr := &transcript{}
	for i, text := range strings.Split(string(src), "\n") {
		ln := i + 1
		text = strings.TrimSuffix(text, "\r")
		fail := func(format string, args ...any) error {
			return fmt.Errorf("%s:%d: %s", file, ln, fmt.Sprintf(format, args...))
		}
		if strings.TrimSpace(text) == "" {
			continue
		}
		if strings.HasPrefix(text, "#") {
			key, val, ok := strings.Cut(strings.TrimSpace(text[1:]), ":")
			var dst *int
			switch strings.TrimSpace(key) {
			case "shards":
				dst = &tr.shards
			case "loops":
				dst = &tr.loops
			}
			if ok && dst != nil {
				n, err := strconv.Atoi(strings.TrimSpace(val))
				if err != nil || n < 1 {
					return nil, fail("bad %s value %q", key, val)
				}
				*dst = n
			}
			continue
		}
		j := strings.IndexAny(text, "<>!")
		if j < 0 {
			return nil, fail("no directive in %q", text)
		}
		name, op, rest := text[:j], text[j], text[j+1:]
		for _, c := range name {
			if c != '_' && !('a' <= c && c <= 'z') && !('A' <= c && c <= 'Z') && !('0' <= c && c <= '9') {
				return nil, fail("bad connection name %q", name)
			}
		}
		if name == "" {
			name = "c"
		}
		st := step{line: ln, conn: name}
		switch op {
		case '>', '<':
			if !strings.HasPrefix(rest, " ") {
				return nil, fail("want a space after %q", op)
			}
			st.data, err = unescape(rest[1:])
			if err != nil {
				return nil, fail("%v", err)
			}
			st.kind = stepSend
			if op == '<' {
				st.kind = stepExpect
			}
		case '!':
			word, arg, _ := strings.Cut(strings.TrimSpace(rest), " ")
			switch word {
			case "closed":
				st.kind = stepClosed
			case "quiet":
				st.kind = stepQuiet
			case "sleep":
				st.kind = stepSleep
				if st.sleep, err = time.ParseDuration(strings.TrimSpace(arg)); err != nil {
					return nil, fail("%v", err)
				}
			default:
				return nil, fail("unknown directive %q", word)
			}
		}
		tr.steps = append(tr.steps, st)
	}
	if len(tr.steps) == 0 {
		return nil, fmt.Errorf("%s: empty transcript", file)
	}
	return tr, nil
}

func unescape(s string) ([]byte, error) {
	var b []byte
	for i := 0; i < len(s); i++ {
		if s[i] != '\\' {
			b = append(b, s[i])
			continue
		}
		if i+1 == len(s) {
			return nil, errors.New("trailing backslash")
		}
		i++
		switch s[i] {
		case '0':
			b = append(b, 0)
		case 'n':
			b = append(b, '\n')
		case 'r':
			b = append(b, '\r')
		case 't':
			b = append(b, '\t')
		case '\\':
			b = append(b, '\\')
		case 'x':
			if i+2 >= len(s) {
				return nil, fmt.Errorf("short \\x escape at %d", i)
			}
			v, err := strconv.ParseUint(s[i+1:i+3], 16, 8)
			if err != nil {
				return nil, fmt.Errorf("bad \\x escape %q", s[i-1:i+3])
			}
			b = append(b, byte(v))
			i += 2
		default:
			return nil, fmt.Errorf("unknown escape \\%c", s[i])
		}
	}
	return b, nil
}

type tconn struct {
	c      net.Conn
	r      *bufio.Reader
	closed bool
}

func replay(t *testing.T, file, addr string, tr *transcript) {
	conns := map[string]*tconn{}
	var order []string
	get := func(name string) *tconn {
		if c := conns[name]; c != nil {
			return c
		}
		nc, err := net.DialTimeout("tcp", addr, transcriptTimeout)
		if err != nil {
			t.Fatalf("dial %s: %v", name, err)
		}
		t.Cleanup(func() { nc.Close() })
		c := &tconn{c: nc, r: bufio.NewReader(nc)}
		conns[name] = c
		order = append(order, name)
		return c
	}
	for _, st := range tr.steps {
		where := fmt.Sprintf("%s:%d (%s)", filepath.Base(file), st.line, st.conn)
		if st.kind == stepSleep {
			time.Sleep(st.sleep)
			continue
		}
		c := get(st.conn)
		if c.closed {
			t.Fatalf("%s: connection already closed by the server", where)
		}
		switch st.kind {
		case stepSend:
			_ = c.c.SetWriteDeadline(time.Now().Add(transcriptTimeout))
			if _, err := c.c.Write(st.data); err != nil {
				t.Fatalf("%s: write: %v", where, err)
			}
		case stepExpect:
			_ = c.c.SetReadDeadline(time.Now().Add(transcriptTimeout))
			got := make([]byte, len(st.data))
			n, err := io.ReadFull(c.r, got)
			got = got[:n]
			if err != nil || !bytes.Equal(got, st.data) {
				if err == nil {
					got = append(got, drain(c, 20*time.Millisecond)...)
				}
				t.Fatalf("%s: read error %v\n got: %q\nwant: %q", where, err, got, st.data)
			}
		case stepClosed:
			_ = c.c.SetReadDeadline(time.Now().Add(transcriptTimeout))
			extra, err := io.ReadAll(c.r)
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				t.Fatalf("%s: connection still open after %v (got %q)", where, transcriptTimeout, extra)
			}
			if len(extra) > 0 {
				t.Fatalf("%s: %q before the close", where, extra)
			}
			c.closed = true
		case stepQuiet:
			if extra := drain(c, quietWait); len(extra) > 0 {
				t.Fatalf("%s: unexpected %q", where, extra)
			}
		}
	}
	// Nothing may be left unaccounted for on any open connection.
	deadline := time.Now().Add(quietWait)
	for _, name := range order {
		c := conns[name]
		if c.closed {
			continue
		}
		_ = c.c.SetReadDeadline(deadline)
		if extra, _ := io.ReadAll(c.r); len(extra) > 0 {
			t.Errorf("%s: after the last line, connection %s got %q", filepath.Base(file), name, extra)
		}
	}
}

// drain returns whatever arrives on c within d.
func drain(c *tconn, d time.Duration) []byte {
	_ = c.c.SetReadDeadline(time.Now().Add(d))
	extra, _ := io.ReadAll(c.r)
	return extra
}
