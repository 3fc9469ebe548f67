package queue

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"gearshard/engine"
)

// DefaultMemcachedPrefix is gearmand's default --libmemcached-prefix.
const DefaultMemcachedPrefix = "gear_"

// mcDefaultPort is memcached's port when a server is named without one.
const mcDefaultPort = "11211"

// mcMaxKey is the longest key memcached's text protocol takes. A longer
// one is answered with CLIENT_ERROR and the value that follows it is then
// read as a command, so no such key is ever sent.
const mcMaxKey = 250

// mcItemOverhead is what memcached adds to key and value in an item (its
// header, CAS, the value's CRLF), rounded up: an Add whose item would pass
// the server's item_size_max is refused before it is sent.
const mcItemOverhead = 96

// mcOwnSep joins function and unique in a key of gearshard's own form
// (see Memcached).
const mcOwnSep = "%@"

// Memcached is the memcached store (gearmand's -q libmemcached). A job
// is an item at key <prefix><function>-<unique> whose value is the job's
// data and whose flags are its priority (0 high, 1 normal, 2 low), as
// gearmand writes it; keys are spread over the servers as gearmand's
// libmemcached spreads them (Jenkins one-at-a-time hash of the key,
// modulo the number of servers, in the order given), so that gearmand and
// gearshard find each other's jobs.
//
// gearmand joins function and unique as they are, and its replay splits
// the key at the first '-' after the prefix: a function name with '-' in
// it comes back cut short. gearshard writes the function with '%', '-',
// space, control bytes and DEL escaped as %XX, and the unique as it is, so
// that distinct jobs never share a key and the key of every job whose
// function has none of those bytes is gearmand's key, byte for byte (a
// job gearmand wrote is deleted where gearmand wrote it, whatever its
// unique holds). Replay splits at the first '-' and undoes the function's
// escapes.
//
// Two kinds of job gearmand cannot keep here go under a key of
// gearshard's own form, <prefix><function>%@<unique> with both parts
// escaped and the run-at time as 8 bytes before the data: a job with a
// run-at time (gearmand refuses those on this queue) and a job whose
// unique holds a byte memcached's text protocol cannot carry in a key (a
// space, a control byte). Such a key holds no '-', so gearmand's replay
// skips it rather than run the job early or under a wrong name. Writing a
// job deletes its key of the other form, and a Remove deletes both.
//
// memcached is a cache: it keeps nothing across its own restart, and
// unless it runs with -M it evicts items, jobs among them, when its
// memory is full. Open logs a warning when it evicts. Replay lists the
// keys with "lru_crawler metadump hash" (memcached 1.6.9 and later), which
// walks the hash table and so reaches every item: gearmand's "stats
// cachedump" lists at most about 2 MB of keys per slab class, and a
// metadump of the LRUs misses items the LRU maintainer is moving (seen
// here: 31 of 150 jobs missing from one listing).
//
// One writer goroutine sends each batch as one pipeline per server and
// acknowledges its Adds when each server has answered STORED.
type Memcached struct {
	netQueue // the writer; Remove and AfterDone of engine.Store
	servers  []*mcServer
	prefix   string
	// itemMax is the smallest item_size_max of the servers.
	itemMax int
	log     zerolog.Logger
	// strays: the keys replay found on a server other than the one their
	// hash picks (the server list was reordered or grew since they were
	// written; gearmand wrote a unique memcached cut at a space), and that
	// server. A Remove deletes there too, or the job would run again at
	// every start. Written by Replay before any Add or Remove, then read
	// by the writer only.
	strays map[string]int
}

var _ engine.Store = (*Memcached)(nil)

// mcServer is one memcached server; conn is the writer's connection.
type mcServer struct {
	addr string
	conn *mcConn
}

type mcConn struct {
	c net.Conn
	r *bufio.Reader
	w *bufio.Writer
}

// ParseMemcachedServers reads gearmand's --libmemcached-servers list:
// host[:port][:weight] entries separated by commas or spaces, an IPv6 host
// in brackets; the port is 11211 when not given. A weight does not change
// where keys go (it only does for consistent hashing, which gearmand does
// not use).
func ParseMemcachedServers(list string) ([]string, error) {
	var addrs []string
	for _, f := range strings.FieldsFunc(list, func(r rune) bool { return r == ',' || r == ' ' || r == '\t' }) {
		host, rest := f, ""
		if strings.HasPrefix(f, "[") {
			end := strings.IndexByte(f, ']')
			if end < 0 {
				return nil, fmt.Errorf("libmemcached queue: server %q: no closing ]", f)
			}
			host, rest = f[1:end], f[end+1:]
			if rest != "" && rest[0] != ':' {
				return nil, fmt.Errorf("libmemcached queue: server %q: want [host]:port", f)
			}
		} else if i := strings.IndexByte(f, ':'); i >= 0 {
			host, rest = f[:i], f[i:]
		}
		port := mcDefaultPort
		if rest != "" {
			parts := strings.Split(rest[1:], ":")
			if len(parts) > 2 {
				return nil, fmt.Errorf("libmemcached queue: server %q: want host:port[:weight]", f)
			}
			if parts[0] != "" {
				port = parts[0]
			}
			if n, err := strconv.Atoi(port); err != nil || n <= 0 || n > 65535 {
				return nil, fmt.Errorf("libmemcached queue: server %q: bad port %q", f, port)
			}
			if len(parts) == 2 {
				if _, err := strconv.ParseUint(parts[1], 10, 32); err != nil {
					return nil, fmt.Errorf("libmemcached queue: server %q: bad weight %q", f, parts[1])
				}
			}
		}
		if host == "" {
			return nil, fmt.Errorf("libmemcached queue: server %q: no host", f)
		}
		addrs = append(addrs, net.JoinHostPort(host, port))
	}
	if len(addrs) == 0 {
		return nil, errors.New("libmemcached queue: no servers: give --libmemcached-servers host[:port],...")
	}
	return addrs, nil
}

// OpenMemcached connects to the memcached servers at addrs (host:port, in
// the order that decides which server holds a key), checks that each
// answers and can list its keys, and starts the writer. prefix is the key
// prefix, DefaultMemcachedPrefix when empty.
func OpenMemcached(addrs []string, prefix string, log zerolog.Logger) (*Memcached, error) {
	if prefix == "" {
		prefix = DefaultMemcachedPrefix
	}
	if len(prefix) > mcMaxKey/2 || mcBadKeyBytes(prefix) {
		return nil, fmt.Errorf("libmemcached queue: prefix %q: want at most %d bytes, without spaces or control characters", prefix, mcMaxKey/2)
	}
	if len(addrs) == 0 {
		return nil, errors.New("libmemcached queue: no servers")
	}
	m := &Memcached{prefix: prefix, log: log}
	for _, addr := range addrs {
		s := &mcServer{addr: addr}
		settings, err := s.settings()
		if err != nil {
			m.closeConns()
			return nil, err
		}
		if settings["lru_crawler"] != "yes" {
			m.closeConns()
			return nil, fmt.Errorf("libmemcached queue: %s runs without its LRU crawler (-o no_lru_crawler), so its jobs could not be listed for replay", addr)
		}
		max, err := strconv.Atoi(settings["item_size_max"])
		if err != nil || max <= mcItemOverhead+2*mcMaxKey {
			m.closeConns()
			return nil, fmt.Errorf("libmemcached queue: %s: item_size_max %q", addr, settings["item_size_max"])
		}
		if m.itemMax == 0 || max < m.itemMax {
			m.itemMax = max
		}
		if settings["evictions"] != "off" {
			log.Warn().Str("server", addr).Msg("libmemcached queue: memcached evicts items when its memory is full, jobs among them; run it with -M so that it refuses new ones instead")
		}
		m.servers = append(m.servers, s)
	}
	log.Info().Strs("servers", addrs).Msg("libmemcached queue: memcached keeps nothing across its own restart: background jobs survive a restart of gearshard, not of memcached")
	m.netQueue.start(m, log)
	return m, nil
}

// Add implements engine.Store.
func (m *Memcached) Add(rec engine.Record, done func(error)) { m.add(rec, done, m.recordErr(rec)) }

// recordErr refuses what memcached could not hold or give back.
func (m *Memcached) recordErr(r engine.Record) error {
	if n := m.keyLen(r.Function, r.Unique, mcOwnForm(&r)); n > mcMaxKey {
		return fmt.Errorf("libmemcached queue: key of function and unique is %d bytes, more than memcached's %d", n, mcMaxKey)
	}
	if n := m.keyLen(r.Function, r.Unique, true) + len(r.Data) + 8 + mcItemOverhead; n > m.itemMax {
		return fmt.Errorf("libmemcached queue: job of %d bytes does not fit memcached's item_size_max of %d (memcached -I)", len(r.Data), m.itemMax)
	}
	return nil
}

// Close implements engine.Store: it writes what is queued and closes the
// connections.
func (m *Memcached) Close() error {
	err := m.netQueue.close()
	m.closeConns()
	return err
}

func (m *Memcached) closeConns() {
	for _, s := range m.servers {
		s.drop()
	}
}

// mcOwnForm reports whether r goes under a key of gearshard's own form.
func mcOwnForm(r *engine.Record) bool { return r.When != 0 || mcBadKeyBytes(r.Unique) }

// mcKey appends the key of (function, unique) to dst: gearmand's form, or
// with own gearshard's own.
func mcKey(dst []byte, prefix string, function, unique []byte, own bool) []byte {
	dst = append(dst, prefix...)
	dst = mcEscape(dst, function)
	if own {
		return mcEscape(append(dst, mcOwnSep...), unique)
	}
	return append(append(dst, '-'), unique...)
}

// keyLen is len(mcKey(...)) without building it.
func (m *Memcached) keyLen(function, unique []byte, own bool) int {
	if own {
		return len(m.prefix) + mcEscapedLen(function) + len(mcOwnSep) + mcEscapedLen(unique)
	}
	return len(m.prefix) + mcEscapedLen(function) + 1 + len(unique)
}

func mcMustEscape(c byte) bool { return c <= ' ' || c == 0x7f || c == '%' || c == '-' }

func mcEscape(dst, b []byte) []byte {
	const hexDigits = "0123456789ABCDEF"
	for _, c := range b {
		if mcMustEscape(c) {
			dst = append(dst, '%', hexDigits[c>>4], hexDigits[c&15])
		} else {
			dst = append(dst, c)
		}
	}
	return dst
}

func mcEscapedLen(b []byte) int {
	n := len(b)
	for _, c := range b {
		if mcMustEscape(c) {
			n += 2
		}
	}
	return n
}

// mcUnescape appends s to dst with every %XX read as the byte XX; a '%'
// not followed by two hex digits stays as it is.
func mcUnescape(dst []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if s[i] == '%' && i+2 < len(s) {
			if hi, lo := unhex(s[i+1]), unhex(s[i+2]); hi >= 0 && lo >= 0 {
				dst = append(dst, byte(hi<<4|lo))
				i += 2
				continue
			}
		}
		dst = append(dst, s[i])
	}
	return dst
}

func unhex(c byte) int {
	switch {
	case c >= '0' && c <= '9':
		return int(c - '0')
	case c >= 'a' && c <= 'f':
		return int(c-'a') + 10
	case c >= 'A' && c <= 'F':
		return int(c-'A') + 10
	}
	return -1
}

// mcBadKeyBytes reports whether s holds a byte memcached's text protocol
// cannot carry in a key.
func mcBadKeyBytes[S string | []byte](s S) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c <= ' ' || c == 0x7f {
			return true
		}
	}
	return false
}

// mcHash is libmemcached's default key hash (MEMCACHED_HASH_DEFAULT,
// Jenkins one-at-a-time), which reads the key's bytes as signed chars.
func mcHash(key []byte) uint32 {
	var h uint32
	for _, c := range key {
		h += uint32(int32(int8(c)))
		h += h << 10
		h ^= h >> 6
	}
	h += h << 3
	h ^= h >> 11
	h += h << 15
	return h
}

// serverOf is the index of the server that holds key.
func (m *Memcached) serverOf(key []byte) int {
	if len(m.servers) == 1 {
		return 0
	}
	return int(mcHash(key) % uint32(len(m.servers)))
}

// write implements netBackend: each server gets its commands of the batch
// in call order, pipelined, while its answers are read. Writing a job
// deletes the key of its other form; a Remove deletes both forms.
func (m *Memcached) write(ops []netOp) error {
	// mcCmd is one command of the batch: a set of op's data at key, or a
	// delete of key.
	type mcCmd struct {
		op  int // index in ops
		set bool
		key []byte
	}
	per := make([][]mcCmd, len(m.servers))
	var kbuf []byte
	for i := range ops {
		rec := &ops[i].rec
		own := mcOwnForm(rec)
		for _, form := range [2]bool{false, true} {
			if !form && mcBadKeyBytes(rec.Unique) {
				continue // (no Add writes such a key)
			}
			start := len(kbuf)
			kbuf = mcKey(kbuf, m.prefix, rec.Function, rec.Unique, form)
			key := kbuf[start:len(kbuf):len(kbuf)]
			if len(key) > mcMaxKey {
				continue // (nor one this long)
			}
			s := m.serverOf(key)
			per[s] = append(per[s], mcCmd{op: i, set: ops[i].done != nil && form == own, key: key})
			if stray, ok := m.strays[string(key)]; ok && stray != s {
				per[stray] = append(per[stray], mcCmd{op: i, key: key})
			}
		}
	}
	deadline := time.Now().Add(netAttempt)
	errs := make([]error, len(m.servers))
	// refused[s][k]: the server refused command k alone (the two commands
	// of one op can be on two servers, so ops[].err is set after Wait).
	refused := make([][]error, len(m.servers))
	var wg sync.WaitGroup
	for si, cmds := range per {
		if len(cmds) == 0 {
			continue
		}
		refused[si] = make([]error, len(cmds))
		wg.Go(func() {
			s := m.servers[si]
			errs[si] = s.pipeline(deadline, len(cmds), func(w *bufio.Writer, k int) {
				c := cmds[k]
				rec := &ops[c.op].rec
				if !c.set {
					w.WriteString("delete ")
					w.Write(c.key)
					w.WriteString("\r\n")
					return
				}
				n, own := len(rec.Data), mcOwnForm(rec)
				if own {
					n += 8
				}
				// set <key> <flags: priority> 0 <bytes>; no fmt: this runs per job.
				var num [20]byte
				w.WriteString("set ")
				w.Write(c.key)
				w.WriteByte(' ')
				w.Write(strconv.AppendUint(num[:0], uint64(rec.Priority), 10))
				w.WriteString(" 0 ")
				w.Write(strconv.AppendInt(num[:0], int64(n), 10))
				w.WriteString("\r\n")
				if own {
					var when [8]byte
					binary.BigEndian.PutUint64(when[:], uint64(rec.When))
					w.Write(when[:])
				}
				w.Write(rec.Data)
				w.WriteString("\r\n")
			}, func(k int, reply string) error {
				if k == 0 {
					clear(refused[si]) // (a new attempt)
				}
				c := cmds[k]
				switch {
				case c.set && reply == "STORED", !c.set && (reply == "DELETED" || reply == "NOT_FOUND"):
					return nil
				case strings.HasPrefix(reply, "SERVER_ERROR "):
					// This command alone failed (out of memory, too large).
					refused[si][k] = &mcReplyError{fmt.Sprintf("libmemcached queue: %s: %s", s.addr, reply)}
					return nil
				}
				verb := "delete"
				if c.set {
					verb = "set"
				}
				return &mcReplyError{fmt.Sprintf("libmemcached queue: %s: %q to %s of %q", s.addr, reply, verb, c.key)}
			})
		})
	}
	wg.Wait()
	for si, cmds := range per {
		for k, err := range refused[si] {
			if op := &ops[cmds[k].op]; err != nil && op.err == nil {
				op.err = err
			}
		}
	}
	return errors.Join(errs...)
}

// pipeline sends n commands (send writes the k-th) on the writer's
// connection while another goroutine reads their n answer lines (check
// takes the k-th), all within deadline. After any error the connection is
// dropped: its answers can no longer be matched to commands. A connection
// that had been idle may have been closed by the server meanwhile; the
// batch goes once more on a new one, which is safe because running its
// sets and deletes again in order leaves the same items.
func (s *mcServer) pipeline(deadline time.Time, n int, send func(w *bufio.Writer, k int), check func(k int, reply string) error) error {
	for attempt := 0; ; attempt++ {
		fresh := s.conn == nil
		if fresh {
			c, err := mcDial(s.addr, deadline)
			if err != nil {
				return err
			}
			s.conn = c
		}
		c := s.conn
		c.c.SetDeadline(deadline)
		readErr := make(chan error, 1)
		go func() {
			for k := range n {
				line, err := c.readLine()
				if err != nil {
					readErr <- err
					return
				}
				if err := check(k, line); err != nil {
					c.c.Close() // ends the writer
					readErr <- err
					return
				}
			}
			readErr <- nil
		}()
		for k := range n {
			send(c.w, k) // bufio flushes as it fills; its error sticks
		}
		werr := c.w.Flush()
		if werr != nil {
			c.c.Close() // ends the reader
		}
		rerr := <-readErr
		err := rerr
		if err == nil {
			err = werr
		}
		if err == nil {
			return nil
		}
		s.drop()
		var ne net.Error
		var re *mcReplyError
		retryable := !errors.As(err, &re) && !(errors.As(err, &ne) && ne.Timeout())
		if fresh || attempt > 0 || !retryable || time.Now().After(deadline) {
			return err
		}
	}
}

func (s *mcServer) drop() {
	if s.conn != nil {
		s.conn.c.Close()
		s.conn = nil
	}
}

func mcDial(addr string, deadline time.Time) (*mcConn, error) {
	c, err := net.DialTimeout("tcp", addr, time.Until(deadline))
	if err != nil {
		return nil, fmt.Errorf("libmemcached queue: %w", err)
	}
	return &mcConn{c: c, r: bufio.NewReaderSize(c, 64<<10), w: bufio.NewWriterSize(c, 64<<10)}, nil
}

// readLine reads one answer line, without its CRLF.
func (c *mcConn) readLine() (string, error) {
	line, err := c.r.ReadSlice('\n')
	if err != nil {
		if errors.Is(err, bufio.ErrBufferFull) {
			return "", errors.New("libmemcached queue: answer line too long")
		}
		return "", fmt.Errorf("libmemcached queue: %w", err)
	}
	return string(bytes.TrimRight(line, "\r\n")), nil
}

// command sends one command on a connection of its own use and returns
// the lines of its answer up to and including the one for which last is
// true.
func (c *mcConn) command(cmd string, each func(line string) (last bool, err error)) error {
	if _, err := c.w.WriteString(cmd + "\r\n"); err != nil {
		return err
	}
	if err := c.w.Flush(); err != nil {
		return fmt.Errorf("libmemcached queue: %w", err)
	}
	for {
		line, err := c.readLine()
		if err != nil {
			return err
		}
		if last, err := each(line); err != nil || last {
			return err
		}
	}
}

// settings reads the server's "stats settings".
func (s *mcServer) settings() (map[string]string, error) {
	deadline := time.Now().Add(netAttempt)
	c, err := mcDial(s.addr, deadline)
	if err != nil {
		return nil, err
	}
	defer c.c.Close()
	c.c.SetDeadline(deadline)
	settings := map[string]string{}
	err = c.command("stats settings", func(line string) (bool, error) {
		if line == "END" {
			return true, nil
		}
		f := strings.Fields(line)
		if len(f) != 3 || f[0] != "STAT" {
			return false, fmt.Errorf("libmemcached queue: %s: %q to stats settings: not memcached?", s.addr, line)
		}
		settings[f[1]] = f[2]
		return false, nil
	})
	return settings, err
}

// mcReplyError is an answer of the server that refuses a command or that
// the command does not expect.
type mcReplyError struct{ msg string }

func (e *mcReplyError) Error() string { return e.msg }

// transient implements netBackend: anything but an answer of the server's.
func (m *Memcached) transient(err error) bool {
	var re *mcReplyError
	return !errors.As(err, &re)
}

// mcReplayGets is how many keys one get asks for during replay.
const mcReplayGets = 100

// Replay implements engine.Store: for each server, the keys under the
// prefix from "lru_crawler metadump hash", then their items by get, a
// hundred keys per command.
func (m *Memcached) Replay(fn func(engine.Record)) error {
	for i, s := range m.servers {
		if err := m.replayServer(i, s, fn); err != nil {
			return err
		}
	}
	return nil
}

func (m *Memcached) replayServer(si int, s *mcServer, fn func(engine.Record)) error {
	keys, err := m.listKeys(s)
	if err != nil {
		return err
	}
	c, err := mcDial(s.addr, time.Now().Add(netAttempt))
	if err != nil {
		return err
	}
	defer c.c.Close()
	var fbuf, ubuf []byte
	for len(keys) > 0 {
		n := min(len(keys), mcReplayGets)
		batch := keys[:n]
		keys = keys[n:]
		c.c.SetDeadline(time.Now().Add(netAttempt))
		err := c.command("get "+strings.Join(batch, " "), func(line string) (bool, error) {
			if line == "END" {
				return true, nil
			}
			f := strings.Fields(line)
			if len(f) != 4 || f[0] != "VALUE" {
				return false, fmt.Errorf("libmemcached queue: replay: %s: %q to get", s.addr, line)
			}
			flags, err1 := strconv.ParseUint(f[2], 10, 32)
			size, err2 := strconv.Atoi(f[3])
			if err1 != nil || err2 != nil || size < 0 {
				return false, fmt.Errorf("libmemcached queue: replay: %s: %q to get", s.addr, line)
			}
			value := make([]byte, size+2)
			if _, err := io.ReadFull(c.r, value); err != nil {
				return false, fmt.Errorf("libmemcached queue: replay: %s: %w", s.addr, err)
			}
			rec, ok := m.record(f[1], uint32(flags), value[:size], &fbuf, &ubuf)
			if ok {
				if m.serverOf([]byte(f[1])) != si {
					if m.strays == nil {
						m.strays = map[string]int{}
					}
					m.strays[f[1]] = si
				}
				fn(rec)
			}
			return false, nil
		})
		if err != nil {
			return err
		}
	}
	return nil
}

// listKeys gives the keys under the prefix that s holds. The crawler runs
// one metadump at a time and walks the hash table only while it is not
// being resized; the server says so (BUSY, ERROR locked) and listKeys
// tries again for up to a minute.
func (m *Memcached) listKeys(s *mcServer) ([]string, error) {
	giveUp := time.Now().Add(time.Minute)
	for {
		var keys []string
		busy := false
		c, err := mcDial(s.addr, time.Now().Add(netAttempt))
		if err != nil {
			return nil, err
		}
		// The dump is read as it comes; the deadline is per line.
		err = c.command("lru_crawler metadump hash", func(line string) (bool, error) {
			c.c.SetDeadline(time.Now().Add(netAttempt))
			switch {
			case line == "END":
				return true, nil
			case strings.HasPrefix(line, "BUSY"), strings.HasPrefix(line, "ERROR locked"):
				busy = true
				return true, nil
			case !strings.HasPrefix(line, "key="):
				return false, fmt.Errorf("libmemcached queue: replay: %s: %q to lru_crawler metadump hash (memcached 1.6.9 or later lists its keys so)", s.addr, line)
			}
			enc, _, _ := strings.Cut(line[len("key="):], " ")
			key := string(mcUnescape(nil, enc)) // metadump's URL encoding
			if strings.HasPrefix(key, m.prefix) {
				if mcBadKeyBytes(key) {
					m.log.Warn().Str("server", s.addr).Str("key", enc).Msg("libmemcached queue: replay: skipping a key memcached's text protocol cannot ask for")
				} else {
					keys = append(keys, key)
				}
			}
			return false, nil
		})
		c.c.Close()
		if err != nil {
			return nil, err
		}
		if !busy {
			return keys, nil
		}
		if time.Now().After(giveUp) {
			return nil, fmt.Errorf("libmemcached queue: replay: %s: its LRU crawler stayed busy for a minute", s.addr)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// record makes the job of the item at key, or reports why it is not one.
// Its slices are in *fbuf, *ubuf and value.
func (m *Memcached) record(key string, flags uint32, value []byte, fbuf, ubuf *[]byte) (engine.Record, bool) {
	rest := key[len(m.prefix):]
	own := false
	f, u, ok := strings.Cut(rest, "-")
	if !ok {
		if f, u, ok = strings.Cut(rest, mcOwnSep); !ok {
			m.log.Warn().Str("key", key).Msg("libmemcached queue: replay: skipping key without function and unique")
			return engine.Record{}, false
		}
		own = true
	}
	*fbuf = mcUnescape((*fbuf)[:0], f)
	if own {
		*ubuf = mcUnescape((*ubuf)[:0], u)
	} else {
		*ubuf = append((*ubuf)[:0], u...)
	}
	rec := engine.Record{Function: *fbuf, Unique: *ubuf, Priority: engine.Normal, Data: value}
	if flags <= uint32(engine.Low) {
		rec.Priority = engine.Priority(flags)
	} else {
		m.log.Warn().Str("key", key).Uint32("flags", flags).Msg("libmemcached queue: replay: priority out of range, using normal")
	}
	if own {
		if len(value) < 8 {
			m.log.Warn().Str("key", key).Msg("libmemcached queue: replay: skipping item of gearshard's form without its run-at time")
			return engine.Record{}, false
		}
		rec.When = int64(binary.BigEndian.Uint64(value))
		rec.Data = value[8:]
	}
	return rec, true
}
