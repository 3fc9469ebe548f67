package queue

import (
	"context"
	"fmt"
	"syscall"
	"testing"

	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"

	"gearshard/engine"
	"gearshard/engine/queue/queuetest"
)

// redisStore is the Redis store for the tests all network stores share.
var redisStore = netStore{
	name: "redis",
	server: func(t testing.TB) (netServer, string) {
		srv := queuetest.NewRedis(t)
		return srv, srv.Addr
	},
	dial: func(addr, prefix string) (engine.Store, error) { return OpenRedis(addr, "", prefix, zerolog.Nop()) },
	dflt: "_gear_",
	// A crash of Redis: the fsync'ed AOF keeps what was acknowledged.
	crash: syscall.SIGKILL,
}

func redisClient(t testing.TB, addr string) *redis.Client {
	c := redis.NewClient(&redis.Options{Addr: addr, DisableIdentity: true})
	t.Cleanup(func() { c.Close() })
	return c
}

func TestRedisKey(t *testing.T) {
	for _, c := range []struct{ f, u, want string }{
		{"fn", "uniq", "_gear_-fn-uniq"}, // gearmand's key
		{"a-b", "c", "_gear_-a%2Db-c"},
		{"a", "b-c", "_gear_-a-b-c"},
		{"%2D", "%", "_gear_-%252D-%"},
		{"f", "8a3e0c7e-2b1f-4c55-9b0e-6a1d2f3c4b5a", "_gear_-f-8a3e0c7e-2b1f-4c55-9b0e-6a1d2f3c4b5a"}, // gearmand's made-up unique
		{"", "", "_gear_--"},
		{"\xff\x00", "\x00", "_gear_-\xff\x00-\x00"},
	} {
		if got := string(redisKey(nil, "_gear_", []byte(c.f), []byte(c.u))); got != c.want {
			t.Errorf("key of %q/%q = %q, want %q", c.f, c.u, got, c.want)
		}
	}
	if got := redisGlobEscape(`a*b?[c]\`); got != `a\*b\?\[c\]\\` {
		t.Errorf("glob escape: %q", got)
	}
}

// TestRedis runs the store against one Redis server, each part under a
// prefix of its own.
func TestRedis(t *testing.T) {
	addr := queuetest.StartRedis(t)
	cfg, err := redisClient(t, addr).ConfigGet(context.Background(), "append*").Result()
	if err != nil || cfg["appendonly"] != "yes" || cfg["appendfsync"] != "always" {
		t.Fatalf("test server not fsyncing every write: %v %v", cfg, err)
	}

	netConformance(t, redisStore, addr)

	t.Run("DefaultPrefix", func(t *testing.T) {
		netDefault(t, redisStore, addr, engine.Record{Function: []byte("epoch"), Unique: []byte("e1"), Priority: engine.Low, Data: []byte("later"), When: 2000000000})

		// gearmand's fields, at gearmand's key for a key without '-'.
		h, err := redisClient(t, addr).HGetAll(context.Background(), "_gear_-epoch-e1").Result()
		if err != nil || h["data"] != "later" || h["priority"] != "2" || h["when"] != "2000000000" {
			t.Errorf("hash as gearmand sees it: %q, %v", h, err)
		}
	})

	t.Run("GearmandKeys", func(t *testing.T) {
		// Hashes as gearmand writes them (HMSET data, priority), at keys
		// split at the first '-'.
		c := redisClient(t, addr)
		ctx := context.Background()
		for k, v := range map[string][]any{
			"gm-reverse-u1":      {"data", "abc", "priority", "0"},
			"gm-f-n-with-dashes": {"data", "\x00\xff", "priority", "2"},
			"gm-empty-":          {"data", "", "priority", "1"},
			"gm-nodash":          {"data", "x", "priority", "1"}, // not a job key: skipped
			"gmother-reverse-u1": {"data", "not ours", "priority", "1"},
			"gm-bad-pri":         {"data", "p", "priority", "9"},
			"gm-withwhen-w":      {"data", "w", "priority", "1", "when", "1700000000"},
		} {
			if err := c.HSet(ctx, k, v...).Err(); err != nil {
				t.Fatal(err)
			}
		}
		if err := c.Set(ctx, "gm-string-key", "not a hash", 0).Err(); err != nil {
			t.Fatal(err)
		}
		s := redisStore.open(t, addr, "gm")
		want := []engine.Record{
			{Function: []byte("reverse"), Unique: []byte("u1"), Priority: engine.High, Data: []byte("abc")},
			{Function: []byte("f"), Unique: []byte("n-with-dashes"), Priority: engine.Low, Data: []byte{0, 0xff}},
			{Function: []byte("empty"), Unique: []byte{}, Priority: engine.Normal, Data: []byte{}},
			{Function: []byte("bad"), Unique: []byte("pri"), Priority: engine.Normal, Data: []byte("p")},
			{Function: []byte("withwhen"), Unique: []byte("w"), Priority: engine.Normal, Data: []byte("w"), When: 1700000000},
		}
		wantSet(t, replayAll(t, s), want)
		// A Remove by the replayed key deletes gearmand's hash, a unique
		// with '-' in it too (as gearmand makes them up: UUIDs).
		s.Remove([]byte("reverse"), []byte("u1"))
		s.Remove([]byte("f"), []byte("n-with-dashes"))
		closeStore(t, s)
		if n, err := c.Exists(ctx, "gm-reverse-u1", "gm-f-n-with-dashes").Result(); err != nil || n != 0 {
			t.Errorf("gearmand's keys after Remove: %d exist, %v", n, err)
		}
	})

	t.Run("DashKeysDistinct", func(t *testing.T) { netDashKeys(t, redisStore, addr, "dash") })

	t.Run("BadOpen", func(t *testing.T) {
		netNoServer(t, redisStore, fmt.Sprintf("127.0.0.1:%d", queuetest.FreePort(t)))
	})
}

func TestRedisRestart(t *testing.T) { netRestart(t, redisStore) }
func TestRedisStall(t *testing.T)   { netStall(t, redisStore) }
func TestRedisCrash(t *testing.T)   { netCrash(t, redisStore) }

// BenchmarkRedisAdd: acknowledged Adds per second, many in flight, with
// an fsync per transaction (appendfsync always).
func BenchmarkRedisAdd(b *testing.B) { netBenchAdd(b, redisStore) }
