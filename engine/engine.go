package engine

import (
	"bytes"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cespare/xxhash/v2"
	"github.com/rs/zerolog"

	"gearshard/wire"
)

const wireNoop = wire.Noop

// Options configure an Engine. The zero value of each field is gearmand's
// default.
type Options struct {
	Shards       int    // number of shards; 0 means 1
	HandlePrefix string // job handle prefix; "" means "H:<hostname>"
	JobRetries   int    // -j: fail a job after this many worker losses; 0 = unlimited
	WorkerWakeup int    // -w: NOOPs per queued job; 0 = every sleeping worker
	Exceptions   bool   // --exceptions: forward WORK_EXCEPTION to every client
	Store        Store  // persistent queue for background jobs; nil = memory only
	// MaxQueueBytes bounds the memory held by jobs (their unique, data and
	// a per-job overhead); past it new submissions get an ERROR. 0 = none.
	MaxQueueBytes int64
	Log           zerolog.Logger
}

// Engine is the set of shards plus the coordinator state that spans them
// (the session registry used by admin commands).
type Engine struct {
	opts   Options
	log    zerolog.Logger
	shards []*shard
	prefix []byte // handle prefix including the trailing ':'

	// dispatch flushes a Turn produced off an event loop (timers); set by
	// the network layer before serving.
	dispatchFn atomic.Pointer[func(*Turn)]

	sessMu   sync.Mutex
	sessions map[uint64]*Session
	nextSess atomic.Uint64

	acks ackTurn // replies released by the persistent queue, until it flushes them

	started time.Time // origin of the job timings' clock
	debug   bool      // the log takes per-job debug lines

	lastCollect atomic.Int64 // unix nanoseconds of the last collection asked for by collectSlabs

	// A store that is down refuses every job; one log line a second says
	// so, with how many were refused since the last.
	storeErrLogged atomic.Int64 // unix nanoseconds of the last such line
	storeErrQuiet  atomic.Int64 // refusals not logged since
}

// MaxUnique is gearmand's limit on a unique key.
const MaxUnique = 64

// MaxFunctionName bounds a function name. Names are kept for the life of
// the server (as in gearmand; `drop function` forgets one), so their size
// must not be the client's to choose. gearmand 1.1.20 serves names up to
// 8191 bytes (CAN_DO up to 8192) and drops the connection past them, so
// every name it takes works here too; libgearman sends at most 512.
const MaxFunctionName = 8192

// checkFunctionName answers an empty or oversized name with an ERROR and
// reports whether the name is usable.
func checkFunctionName(t *Turn, sess *Session, name []byte) bool {
	switch {
	case len(name) == 0:
		t.sendError(sess, "INVALID_FUNCTION_NAME", "Function name is empty")
	case len(name) > MaxFunctionName:
		t.sendError(sess, "INVALID_FUNCTION_NAME", "Function name longer than 8192 bytes")
	default:
		return true
	}
	return false
}

// New builds an engine.
func New(opts Options) (*Engine, error) {
	if opts.Shards <= 0 {
		opts.Shards = 1
	}
	if opts.HandlePrefix == "" {
		host, err := os.Hostname()
		if err != nil || host == "" {
			host = "localhost"
		}
		opts.HandlePrefix = "H:" + host
	}
	// A handle must stay under gearmand's 64 bytes with a 20-digit number.
	if len(opts.HandlePrefix) > 40 || bytes.IndexByte([]byte(opts.HandlePrefix), 0) >= 0 {
		return nil, fmt.Errorf("engine: job handle prefix %q: at most 40 bytes, no NUL", opts.HandlePrefix)
	}
	if opts.JobRetries < 0 || opts.JobRetries > 255 {
		return nil, fmt.Errorf("engine: job retries %d: must be 0..255", opts.JobRetries)
	}
	e := &Engine{
		opts:     opts,
		log:      opts.Log,
		prefix:   []byte(opts.HandlePrefix + ":"),
		sessions: make(map[uint64]*Session),
		started:  time.Now(),
		debug:    opts.Log.GetLevel() <= zerolog.DebugLevel,
	}
	e.shards = make([]*shard, opts.Shards)
	for i := range e.shards {
		e.shards[i] = newShard(e, i)
	}
	if opts.Store != nil {
		opts.Store.AfterDone(e.flushAcks)
	}
	return e, nil
}

// Shards returns the number of shards.
func (e *Engine) Shards() int { return len(e.shards) }

// SetDispatcher installs the function that flushes turns produced by timers.
func (e *Engine) SetDispatcher(fn func(*Turn)) { e.dispatchFn.Store(&fn) }

func (e *Engine) dispatch(t *Turn) {
	if len(t.Dirty) == 0 {
		return
	}
	if fn := e.dispatchFn.Load(); fn != nil {
		(*fn)(t)
	}
}

// shardOf routes a function name to its shard.
func (e *Engine) shardOf(fn []byte) *shard {
	if len(e.shards) == 1 {
		return e.shards[0]
	}
	return e.shards[xxhash.Sum64(fn)%uint64(len(e.shards))]
}

// ShardOf returns the shard index a function name routes to.
func (e *Engine) ShardOf(fn []byte) int { return e.shardOf(fn).idx }

// appendHandle writes the handle of job id.
func (e *Engine) appendHandle(dst []byte, id uint64) []byte {
	return strconv.AppendUint(append(dst, e.prefix...), id, 10)
}

// parseHandle finds the shard and job number a handle names. Handle numbers
// are idx+1+k*N, so the owning shard is (n-1) mod N: O(1), no lookup table.
func (e *Engine) parseHandle(h []byte) (*shard, uint64, bool) {
	if !bytes.HasPrefix(h, e.prefix) {
		return nil, 0, false
	}
	digits := h[len(e.prefix):]
	if len(digits) == 0 || len(digits) > 20 || digits[0] == '0' {
		return nil, 0, false
	}
	var n uint64
	for _, c := range digits {
		if c < '0' || c > '9' {
			return nil, 0, false
		}
		d := uint64(c - '0')
		if n > (^uint64(0)-d)/10 {
			return nil, 0, false
		}
		n = n*10 + d
	}
	return e.shards[(n-1)%uint64(len(e.shards))], n, true
}

// NewSession registers a connection. fd and addr are shown by "workers".
func (e *Engine) NewSession(fd int, addr string, owner any) *Session {
	s := &Session{
		ID:    e.nextSess.Add(1),
		FD:    fd,
		Addr:  addr,
		Owner: owner,
		per:   make([]sessShard, len(e.shards)),
	}
	if e.opts.Exceptions {
		s.exceptions.Store(true)
	}
	e.sessMu.Lock()
	e.sessions[s.ID] = s
	e.sessMu.Unlock()
	return s
}

// Close stops the shards' timers.
func (e *Engine) Close() {
	for _, s := range e.shards {
		s.mu.Lock()
		if s.timer != nil {
			s.timer.Stop()
		}
		s.mu.Unlock()
	}
}

// LiveJobs counts the jobs queued, waiting for their epoch or held by
// workers, over all shards: gearmand's job_count, which a graceful shutdown
// waits to see reach 0.
func (e *Engine) LiveJobs() int {
	n := 0
	for _, s := range e.shards {
		s.mu.Lock()
		for _, f := range s.funcs {
			n += f.total
		}
		s.mu.Unlock()
	}
	return n
}

// jobOverhead approximates a job's memory beyond its bytes (record, table
// slot), so that --max-queue-bytes bounds memory, not just workloads. The
// record's part is charged by the slab it comes from (see charge).
const jobOverhead = 256

// collectSlabs asks for a collection, at most every 10 s, when memory
// refuses a submission: slabs emptied by finished jobs stay charged until
// the collector finds them, and a server making little garbage may not
// collect for the runtime's two minutes.
func (e *Engine) collectSlabs() {
	now, last := time.Now().UnixNano(), e.lastCollect.Load()
	if now-last >= int64(10*time.Second) && e.lastCollect.CompareAndSwap(last, now) {
		go runtime.GC()
	}
}

// queuedBytes sums the shards' job memory; each shard keeps its own count
// so that the hot path touches no shared cache line.
func (e *Engine) queuedBytes() int64 {
	var n int64
	for _, s := range e.shards {
		n += s.bytes.Load()
	}
	return n
}
