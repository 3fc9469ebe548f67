package queue

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"gearshard/engine"
	"gearshard/engine/queue/queuetest"
)

// mcStore is the memcached store for the tests all network stores share;
// addr is one server or a comma-separated list.
var mcStore = netStore{
	name: "memcached",
	server: func(t testing.TB) (netServer, string) {
		srv := queuetest.NewMemcached(t, "-I", "2m") // room for the 1.5 MB sample job
		return srv, srv.Addr
	},
	dial: func(addr, prefix string) (engine.Store, error) {
		return OpenMemcached(strings.Split(addr, ","), prefix, zerolog.Nop())
	},
	dflt:     DefaultMemcachedPrefix,
	crash:    syscall.SIGKILL,
	volatile: true,
	fits: func(r engine.Record) bool {
		return (&Memcached{prefix: "conformance99"}).keyLen(r.Function, r.Unique, mcOwnForm(&r)) <= mcMaxKey
	},
}

// mcClient is a bare text-protocol connection to a test's memcached.
type mcClient struct {
	t testing.TB
	c net.Conn
	r *bufio.Reader
}

func dialMC(t testing.TB, addr string) *mcClient {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(30 * time.Second))
	return &mcClient{t: t, c: c, r: bufio.NewReader(c)}
}

func (m *mcClient) line() string {
	m.t.Helper()
	l, err := m.r.ReadString('\n')
	if err != nil {
		m.t.Fatalf("memcached: %v", err)
	}
	return strings.TrimSuffix(l, "\r\n")
}

// set stores an item as libmemcached's memcached_set does.
func (m *mcClient) set(key string, flags uint32, value []byte) {
	m.t.Helper()
	fmt.Fprintf(m.c, "set %s %d 0 %d\r\n%s\r\n", key, flags, len(value), value)
	if l := m.line(); l != "STORED" {
		m.t.Fatalf("set %q: %q", key, l)
	}
}

// get returns the item at key: its flags and value, ok false when absent.
func (m *mcClient) get(key string) (flags uint32, value []byte, ok bool) {
	m.t.Helper()
	fmt.Fprintf(m.c, "get %s\r\n", key)
	l := m.line()
	if l == "END" {
		return 0, nil, false
	}
	f := strings.Fields(l)
	if len(f) != 4 || f[0] != "VALUE" || f[1] != key {
		m.t.Fatalf("get %q: %q", key, l)
	}
	fl, _ := strconv.ParseUint(f[2], 10, 32)
	n, _ := strconv.Atoi(f[3])
	value = make([]byte, n+2)
	if _, err := io.ReadFull(m.r, value); err != nil {
		m.t.Fatal(err)
	}
	if l := m.line(); l != "END" {
		m.t.Fatalf("get %q: then %q", key, l)
	}
	return uint32(fl), value[:n], true
}

func TestMemcachedKey(t *testing.T) {
	for _, c := range []struct {
		f, u string
		when int64
		want string
	}{
		{"fn", "uniq", 0, "gear_fn-uniq"}, // gearmand's key
		{"fn", "u-1%41", 0, "gear_fn-u-1%41"},
		{"a-b", "c", 0, "gear_a%2Db-c"},
		{"a", "b-c", 0, "gear_a-b-c"},
		{"%2D", "%", 0, "gear_%252D-%"},
		{"", "", 0, "gear_-"},
		{"\xff", "\x80", 0, "gear_\xff-\x80"},
		// gearshard's own form: a run-at time, or a unique a key cannot carry.
		{"fn", "u-1", 7, "gear_fn%@u%2D1"},
		{"sp ace", "\x00\r\n\x7f%", 0, "gear_sp%20ace%@%00%0D%0A%7F%25"},
		{"f", "a b", 0, "gear_f%@a%20b"},
	} {
		r := engine.Record{Function: []byte(c.f), Unique: []byte(c.u), When: c.when}
		own := mcOwnForm(&r)
		got := mcKey(nil, "gear_", r.Function, r.Unique, own)
		if string(got) != c.want {
			t.Errorf("key of %q/%q (when %d) = %q, want %q", c.f, c.u, c.when, got, c.want)
		}
		m := Memcached{prefix: "gear_"}
		if n := m.keyLen(r.Function, r.Unique, own); n != len(got) {
			t.Errorf("keyLen of %q/%q = %d, want %d", c.f, c.u, n, len(got))
		}
		if mcBadKeyBytes(got) {
			t.Errorf("key %q holds bytes the text protocol cannot carry", got)
		}
		if own && bytes.IndexByte(got, '-') >= 0 {
			t.Errorf("key %q of gearshard's form holds '-': gearmand's replay would read it", got)
		}
	}
	for in, want := range map[string]string{"%41%2d%zz%4": "A-%zz%4", "%": "%", "a%2": "a%2", "%%41": "%A"} {
		if got := string(mcUnescape(nil, in)); got != want {
			t.Errorf("unescape %q = %q, want %q", in, got, want)
		}
	}
}

func TestParseMemcachedServers(t *testing.T) {
	for in, want := range map[string]string{
		"127.0.0.1":                      "127.0.0.1:11211",
		"a:1,b:2":                        "a:1 b:2",
		"a:1 b:2:5, c":                   "a:1 b:2 c:11211",
		"[::1]:11212,[::1]":              "[::1]:11212 [::1]:11211",
		"host:":                          "host:11211",
		"memcache.example.org:11211:100": "memcache.example.org:11211",
	} {
		got, err := ParseMemcachedServers(in)
		if err != nil || strings.Join(got, " ") != want {
			t.Errorf("%q: %q %v, want %q", in, got, err, want)
		}
	}
	for _, bad := range []string{"", " , ", "a:0", "a:x", "a:1:w", "a:1:2:3", "[::1", "[::1]x", ":11211"} {
		if got, err := ParseMemcachedServers(bad); err == nil {
			t.Errorf("%q: %q, want an error", bad, got)
		}
	}
}

// TestMemcached runs the store against one memcached, each part under a
// prefix of its own.
func TestMemcached(t *testing.T) {
	_, addr := mcStore.server(t)

	netConformance(t, mcStore, addr)

	t.Run("DefaultPrefix", func(t *testing.T) {
		netDefault(t, mcStore, addr, engine.Record{Function: []byte("reverse"), Unique: []byte("u1"), Priority: engine.Low, Data: []byte("olleh")})
		// gearmand's item: the data, the priority in the flags.
		flags, v, ok := dialMC(t, addr).get("gear_reverse-u1")
		if !ok || flags != 2 || string(v) != "olleh" {
			t.Errorf("item as gearmand reads it: %v %d %q", ok, flags, v)
		}
	})

	t.Run("Epoch", func(t *testing.T) {
		r := engine.Record{Function: []byte("later"), Unique: []byte("e-1"), Priority: engine.Normal, Data: []byte("d"), When: 2000000000}
		s := mcStore.open(t, addr, "ep_")
		addAll(t, s, []engine.Record{r})
		c := dialMC(t, addr)
		if _, _, ok := c.get("ep_later-e-1"); ok {
			t.Errorf("job with a run-at time at gearmand's key, which gearmand would run at once")
		}
		if _, v, ok := c.get("ep_later%@e%2D1"); !ok || len(v) != 9 {
			t.Errorf("job with a run-at time: %v %q", ok, v)
		}
		// The same job again without a run-at time moves to gearmand's key.
		now := r
		now.When = 0
		addAll(t, s, []engine.Record{now})
		if _, _, ok := c.get("ep_later%@e%2D1"); ok {
			t.Errorf("the run-at form stays after the job is written without one")
		}
		closeStore(t, s)
		s = mcStore.open(t, addr, "ep_")
		wantSet(t, replayAll(t, s), []engine.Record{now})
		// And back; a Remove deletes either form.
		addAll(t, s, []engine.Record{r})
		closeStore(t, s)
		s = mcStore.open(t, addr, "ep_")
		wantSet(t, replayAll(t, s), []engine.Record{r})
		s.Remove(r.Function, r.Unique)
		closeStore(t, s)
		s = mcStore.open(t, addr, "ep_")
		defer closeStore(t, s)
		wantSet(t, replayAll(t, s), nil)
	})

	t.Run("GearmandItems", func(t *testing.T) {
		// Items as gearmand's memcached_set writes them.
		c := dialMC(t, addr)
		c.set("gm_reverse-u1", 0, []byte("abc"))
		c.set("gm_f-n-with-dashes", 2, []byte("\x00\xff"))
		c.set("gm_empty-", 1, nil)
		c.set("gm_nodash", 1, []byte("x")) // not a job key: skipped
		c.set("gmother-reverse-u1", 1, []byte("not ours"))
		c.set("gm_bad-pri", 9, []byte("p"))
		s := mcStore.open(t, addr, "gm_")
		want := []engine.Record{
			{Function: []byte("reverse"), Unique: []byte("u1"), Priority: engine.High, Data: []byte("abc")},
			{Function: []byte("f"), Unique: []byte("n-with-dashes"), Priority: engine.Low, Data: []byte{0, 0xff}},
			{Function: []byte("empty"), Unique: []byte{}, Priority: engine.Normal, Data: []byte{}},
			{Function: []byte("bad"), Unique: []byte("pri"), Priority: engine.Normal, Data: []byte("p")},
		}
		wantSet(t, replayAll(t, s), want)
		// A Remove by the replayed job deletes gearmand's item, a unique
		// with '-' in it too (as gearmand makes them up: UUIDs).
		s.Remove([]byte("reverse"), []byte("u1"))
		s.Remove([]byte("f"), []byte("n-with-dashes"))
		closeStore(t, s)
		for _, k := range []string{"gm_reverse-u1", "gm_f-n-with-dashes"} {
			if _, _, ok := c.get(k); ok {
				t.Errorf("gearmand's item %q after Remove: still there", k)
			}
		}
	})

	t.Run("DashKeysDistinct", func(t *testing.T) {
		netDashKeys(t, mcStore, addr, "dash_", engine.Record{Function: []byte("a"), Unique: []byte("b c"), Priority: engine.Normal, Data: []byte("6")})
	})

	t.Run("Limits", func(t *testing.T) {
		s := mcStore.open(t, addr, "lim_").(*Memcached)
		defer closeStore(t, s)
		if s.itemMax != 2<<20 {
			t.Errorf("item_size_max read as %d, want %d (-I 2m)", s.itemMax, 2<<20)
		}
		// The longest keys: the prefix, 245 bytes of function and unique
		// joined by '-' (gearmand's form), or 244 joined by "%@"
		// (gearshard's, here for a run-at time); escapes count.
		f200 := bytes.Repeat([]byte{'f'}, 200)
		fits := engine.Record{Function: f200, Unique: bytes.Repeat([]byte{'u'}, 45), Priority: engine.Normal, Data: []byte("k")}
		fitsOwn := engine.Record{Function: f200, Unique: bytes.Repeat([]byte{'v'}, 44), Priority: engine.Normal, Data: []byte("k"), When: 1}
		long := engine.Record{Function: f200, Unique: bytes.Repeat([]byte{'u'}, 46), Priority: engine.Normal}
		longOwn := engine.Record{Function: f200, Unique: bytes.Repeat([]byte{'v'}, 45), Priority: engine.Normal, When: 1}
		escaped := engine.Record{Function: bytes.Repeat([]byte{'-'}, 67), Unique: bytes.Repeat([]byte{'u'}, 45), Priority: engine.Normal} // 201 bytes escaped
		bigOK := engine.Record{Function: []byte("big"), Unique: []byte("ok"), Priority: engine.Normal, Data: bytes.Repeat([]byte{0, 0xff}, (s.itemMax-1024)/2)}
		tooBig := engine.Record{Function: []byte("big"), Unique: []byte("no"), Priority: engine.Normal, Data: make([]byte, s.itemMax)}
		addAll(t, s, []engine.Record{fits, fitsOwn, bigOK})
		for _, r := range []engine.Record{long, longOwn, escaped, tooBig} {
			if err := addWait(t, s, r, 10*time.Second); err == nil {
				t.Errorf("%d-byte function, %d-byte unique, %d bytes of data: acknowledged", len(r.Function), len(r.Unique), len(r.Data))
			} else {
				t.Logf("refused: %v", err)
			}
		}
		// A Remove of a key too long to have been written is no error,
		// and the connection goes on.
		s.Remove(long.Function, long.Unique)
		wantSet(t, replayAll(t, s), []engine.Record{fits, fitsOwn, bigOK})
		s.Remove(fits.Function, fits.Unique)
		addAll(t, s, []engine.Record{{Function: []byte("after"), Unique: []byte("x"), Priority: engine.Normal}})
	})

	t.Run("Full", func(t *testing.T) {
		// With -M a full memcached refuses a set, and that Add alone
		// fails; the store goes on.
		srv := queuetest.NewMemcached(t, "-m", "2")
		s := mcStore.open(t, srv.Addr, "")
		defer closeStore(t, s)
		data := make([]byte, 100<<10)
		var err error
		n := 0
		for ; n < 200 && err == nil; n++ {
			err = addWait(t, s, engine.Record{Function: []byte("fill"), Unique: fmt.Appendf(nil, "%d", n), Priority: engine.Normal, Data: data}, 10*time.Second)
		}
		if err == nil || !strings.Contains(err.Error(), "out of memory") {
			t.Fatalf("after %d Adds of 100 KB into 2 MB: %v, want memcached's out of memory", n, err)
		}
		t.Logf("Add %d: %v", n, err)
		s.Remove([]byte("fill"), []byte("0"))
		addAll(t, s, []engine.Record{{Function: []byte("small"), Unique: []byte("after"), Priority: engine.Normal, Data: []byte("x")}})
	})

	t.Run("NoCrawler", func(t *testing.T) {
		srv := queuetest.NewMemcached(t, "-o", "no_lru_crawler")
		if s, err := OpenMemcached([]string{srv.Addr}, "", zerolog.Nop()); err == nil {
			s.Close()
			t.Errorf("opened a memcached that cannot list its keys for replay")
		} else if !strings.Contains(err.Error(), "crawler") {
			t.Errorf("error does not say why: %v", err)
		}
	})

	t.Run("BadOpen", func(t *testing.T) {
		netNoServer(t, mcStore, fmt.Sprintf("127.0.0.1:%d", queuetest.FreePort(t)))
		if _, err := OpenMemcached([]string{addr}, "bad prefix", zerolog.Nop()); err == nil {
			t.Errorf("a prefix with a space opened")
		}
	})
}

// TestMemcachedServers: with several servers each key is on the server
// libmemcached's hash gives it, replay reads them all, and Removes reach
// the server that holds the job.
func TestMemcachedServers(t *testing.T) {
	var addrs []string
	for range 3 {
		addrs = append(addrs, queuetest.NewMemcached(t).Addr)
	}
	list := strings.Join(addrs, ",")
	s := mcStore.open(t, list, "")
	var rs []engine.Record
	for i := range 300 {
		rs = append(rs, engine.Record{Function: fmt.Appendf(nil, "fn%d", i%5), Unique: fmt.Appendf(nil, "job-%d", i), Priority: engine.Priority(i % 3), Data: fmt.Appendf(nil, "%d", i), When: int64(i%2) * 1700000000})
	}
	addAll(t, s, rs)
	closeStore(t, s)
	clients := make([]*mcClient, len(addrs))
	for i, a := range addrs {
		clients[i] = dialMC(t, a)
	}
	per := make([]int, len(addrs))
	for _, r := range rs {
		key := mcKey(nil, DefaultMemcachedPrefix, r.Function, r.Unique, mcOwnForm(&r))
		want := int(mcHash(key) % uint32(len(addrs)))
		per[want]++
		for i, c := range clients {
			if _, _, ok := c.get(string(key)); ok != (i == want) {
				t.Fatalf("%q on server %d: %v (its hash says server %d)", key, i, ok, want)
			}
		}
	}
	for i, n := range per {
		if n < 50 {
			t.Errorf("server %d holds %d of 300 jobs", i, n)
		}
	}
	s = mcStore.open(t, list, "")
	wantSet(t, replayAll(t, s), rs)
	for _, r := range rs[:150] {
		s.Remove(r.Function, r.Unique)
	}
	closeStore(t, s)
	s = mcStore.open(t, list, "")
	wantSet(t, replayAll(t, s), rs[150:])
	closeStore(t, s)

	// The same servers listed in another order: most jobs are now on a
	// server their hash does not pick. Replay finds them, and a Remove
	// reaches the server that holds each, or the job would come back at
	// every start (gearmand replays none of them: it looks where the hash
	// says).
	slices.Reverse(addrs)
	reordered := strings.Join(addrs, ",")
	s = mcStore.open(t, reordered, "")
	wantSet(t, replayAll(t, s), rs[150:])
	for _, r := range rs[150:] {
		s.Remove(r.Function, r.Unique)
	}
	closeStore(t, s)
	for _, at := range []string{reordered, list} {
		s = mcStore.open(t, at, "")
		wantSet(t, replayAll(t, s), nil)
		closeStore(t, s)
	}
}

// TestMemcachedRestart: memcached keeps nothing across its own restart;
// the store comes back by itself and keeps what it acknowledges then.
func TestMemcachedRestart(t *testing.T) { netRestart(t, mcStore) }
func TestMemcachedStall(t *testing.T)   { netStall(t, mcStore) }
func TestMemcachedCrash(t *testing.T)   { netCrash(t, mcStore) }

// BenchmarkMemcachedAdd: acknowledged Adds per second, many in flight.
func BenchmarkMemcachedAdd(b *testing.B) { netBenchAdd(b, mcStore) }
