package queue

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"

	"gearshard/engine"
)

// DefaultRedisPrefix is gearmand's default --redis-prefix.
const DefaultRedisPrefix = "_gear_"

// Redis is the Redis store (gearmand's -q redis). A job is a hash at key
// <prefix>-<function>-<unique>, with gearmand's fields data and priority
// ("0" high, "1" normal, "2" low), and gearshard's fields function, unique
// (the raw bytes) and when (decimal unix seconds).
//
// gearmand joins function and unique with '-' as they are, so function
// "a-b" with unique "c" and function "a" with unique "b-c" share a key.
// gearshard escapes '%' as %25 and '-' as %2D in the function and leaves
// the unique as it is, so distinct jobs never share a key and the key of
// every job whose function has neither character is gearmand's key, byte
// for byte: a job gearmand wrote (its made-up uniques are UUIDs, with
// '-') is deleted where gearmand wrote it. Replay reads function and
// unique from the hash fields; a hash without them (written by gearmand)
// is split after the prefix at the first '-', as gearmand's own replay
// does.
//
// One writer goroutine sends each batch of Adds (HSET) and Removes (DEL)
// as one MULTI/EXEC pipeline and acknowledges its Adds when EXEC has
// answered. That is durable only as far as the server's persistence is:
// with appendonly yes and appendfsync always, Redis fsyncs the AOF before
// it answers EXEC, so an acknowledged job survives a crash of Redis or of
// the machine; with appendfsync everysec up to a second of jobs can be
// lost, and without the AOF everything since the last snapshot. Open logs
// a warning when the server says it runs otherwise.
type Redis struct {
	netQueue // the writer; Remove and AfterDone of engine.Store
	client   *redis.Client
	prefix   string
	log      zerolog.Logger

	kbuf []byte // the writer's
}

var _ engine.Store = (*Redis)(nil)

// OpenRedis connects to the Redis server at addr (host:port) with
// password (none when empty), checks that it answers, and starts the
// writer. prefix is the key prefix, DefaultRedisPrefix when empty.
func OpenRedis(addr, password, prefix string, log zerolog.Logger) (*Redis, error) {
	if prefix == "" {
		prefix = DefaultRedisPrefix
	}
	r := &Redis{
		prefix: prefix,
		log:    log,
		client: redis.NewClient(&redis.Options{
			Addr:                  addr,
			Password:              password,
			DialTimeout:           netAttempt,
			ReadTimeout:           netAttempt,
			WriteTimeout:          netAttempt,
			ContextTimeoutEnabled: true,
			PoolSize:              4,
			DisableIdentity:       true,
		}),
	}
	ctx, cancel := context.WithTimeout(context.Background(), netAttempt)
	defer cancel()
	if err := r.client.Ping(ctx).Err(); err != nil {
		r.client.Close()
		return nil, fmt.Errorf("redis queue: %s: %w", addr, err)
	}
	if cfg, err := r.client.ConfigGet(ctx, "append*").Result(); err == nil {
		if cfg["appendonly"] != "yes" || cfg["appendfsync"] != "always" {
			log.Warn().Str("appendonly", cfg["appendonly"]).Str("appendfsync", cfg["appendfsync"]).
				Msg("redis queue: the server does not fsync every write (appendonly yes, appendfsync always): acknowledged background jobs can be lost when it crashes")
		}
	}
	r.netQueue.start(r, log)
	return r, nil
}

// Add implements engine.Store.
func (r *Redis) Add(rec engine.Record, done func(error)) { r.add(rec, done, nil) }

// Close implements engine.Store: it writes what is queued and closes the
// connections.
func (r *Redis) Close() error {
	err := r.netQueue.close()
	if cerr := r.client.Close(); cerr != nil && err == nil && !errors.Is(cerr, redis.ErrClosed) {
		err = cerr
	}
	return err
}

// redisKey appends the key of (function, unique) to dst.
func redisKey(dst []byte, prefix string, function, unique []byte) []byte {
	dst = append(dst, prefix...)
	dst = append(dst, '-')
	dst = redisEscape(dst, function)
	dst = append(dst, '-')
	return append(dst, unique...)
}

func redisEscape(dst, b []byte) []byte {
	for _, c := range b {
		switch c {
		case '%':
			dst = append(dst, "%25"...)
		case '-':
			dst = append(dst, "%2D"...)
		default:
			dst = append(dst, c)
		}
	}
	return dst
}

var redisPriority = [...]string{"0", "1", "2"}

func redisPriorityString(p engine.Priority) string {
	if int(p) < len(redisPriority) {
		return redisPriority[p]
	}
	return strconv.Itoa(int(p))
}

// write implements netBackend: one MULTI/EXEC with one command per op.
func (r *Redis) write(ops []netOp) error {
	ctx, cancel := context.WithTimeout(context.Background(), netAttempt)
	defer cancel()
	pipe := r.client.TxPipeline()
	for i := range ops {
		rec := &ops[i].rec
		r.kbuf = redisKey(r.kbuf[:0], r.prefix, rec.Function, rec.Unique)
		if ops[i].done == nil {
			pipe.Del(ctx, string(r.kbuf))
			continue
		}
		data := rec.Data
		if data == nil {
			data = []byte{}
		}
		pipe.HSet(ctx, string(r.kbuf),
			"data", data,
			"priority", redisPriorityString(rec.Priority),
			"function", rec.Function,
			"unique", rec.Unique,
			"when", strconv.FormatInt(rec.When, 10))
	}
	cmds, err := pipe.Exec(ctx)
	if err == nil {
		return nil
	}
	var rerr redis.Error
	if !errors.As(err, &rerr) || len(cmds) != len(ops) {
		return fmt.Errorf("redis queue: %w", err)
	}
	// EXEC answered: the error is one command's (or EXECABORT, set on all).
	for i, c := range cmds {
		if e := c.Err(); e != nil {
			ops[i].err = fmt.Errorf("redis queue: %w", e)
		}
	}
	return nil
}

// transient implements netBackend: anything but an error reply, or an
// error reply that says the server is not ready.
func (r *Redis) transient(err error) bool {
	var rerr redis.Error
	if !errors.As(err, &rerr) {
		return true
	}
	for _, p := range []string{"LOADING", "BUSY", "TRYAGAIN", "MASTERDOWN", "READONLY", "CLUSTERDOWN"} {
		if redis.HasErrorPrefix(err, p) {
			return true
		}
	}
	return false
}

// Replay implements engine.Store: SCAN over <prefix>-*, then HGETALL of
// each key, pipelined per SCAN page.
func (r *Redis) Replay(fn func(engine.Record)) error {
	ctx := context.Background()
	pattern := redisGlobEscape(r.prefix) + "-*"
	seen := map[string]struct{}{} // SCAN may return a key twice
	var cursor uint64
	var fresh []string
	for {
		keys, next, err := r.client.Scan(ctx, cursor, pattern, 1000).Result()
		if err != nil {
			return fmt.Errorf("redis queue: replay: %w", err)
		}
		fresh = fresh[:0]
		for _, k := range keys {
			if _, dup := seen[k]; !dup {
				seen[k] = struct{}{}
				fresh = append(fresh, k)
			}
		}
		if len(fresh) > 0 {
			pipe := r.client.Pipeline()
			cmds := make([]*redis.MapStringStringCmd, len(fresh))
			for i, k := range fresh {
				cmds[i] = pipe.HGetAll(ctx, k)
			}
			if _, err := pipe.Exec(ctx); err != nil {
				var rerr redis.Error
				if !errors.As(err, &rerr) {
					return fmt.Errorf("redis queue: replay: %w", err)
				}
			}
			for i, k := range fresh {
				h, err := cmds[i].Result()
				if err != nil {
					r.log.Warn().Err(err).Str("key", k).Msg("redis queue: replay: skipping key that is not a job hash")
					continue
				}
				if len(h) == 0 {
					continue // deleted since SCAN saw it
				}
				rec, ok := r.record(k, h)
				if !ok {
					continue
				}
				fn(rec)
			}
		}
		cursor = next
		if cursor == 0 {
			return nil
		}
	}
}

// record makes the job of hash h at key k.
func (r *Redis) record(k string, h map[string]string) (engine.Record, bool) {
	var rec engine.Record
	if f, ok := h["function"]; ok {
		rec.Function = []byte(f)
		rec.Unique = []byte(h["unique"])
	} else {
		// gearmand's: <prefix>-<function>-<unique>, split at the first '-'.
		rest := k[len(r.prefix)+1:]
		i := strings.IndexByte(rest, '-')
		if i < 0 {
			r.log.Warn().Str("key", k).Msg("redis queue: replay: skipping key without function and unique")
			return rec, false
		}
		rec.Function, rec.Unique = []byte(rest[:i]), []byte(rest[i+1:])
	}
	rec.Data = []byte(h["data"])
	rec.Priority = engine.Normal
	if s, ok := h["priority"]; ok {
		if p, err := strconv.ParseUint(s, 10, 8); err == nil && p <= uint64(engine.Low) {
			rec.Priority = engine.Priority(p)
		} else {
			r.log.Warn().Str("key", k).Str("priority", s).Msg("redis queue: replay: bad priority, using normal")
		}
	}
	if s, ok := h["when"]; ok {
		w, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			r.log.Warn().Str("key", k).Str("when", s).Msg("redis queue: replay: bad run-at time, running now")
		}
		rec.When = w
	}
	return rec, true
}

// redisGlobEscape quotes the glob characters of SCAN MATCH.
func redisGlobEscape(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '*', '?', '[', ']', '\\', '^':
			b.WriteByte('\\')
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
