package engine

import "strconv"

// Record is a background job as a persistent queue keeps it: the columns
// of gearmand's queue tables.
type Record struct {
	Function []byte
	// Unique is the stored key: the client's unique, or a key the engine
	// made up (AppendMadeUpKey) for a unique that names no single job.
	Unique   []byte
	Priority Priority // 0 high, 1 normal, 2 low, as gearmand stores it
	Data     []byte
	When     int64 // unix seconds before which the job must not run; 0 = now
}

// AppendMadeUpKey appends the key a job is stored under when its unique
// names no single job: an empty unique (never coalesces) or "-" (coalesces
// on the workload, so jobs with other workloads share the unique). Filed
// under their unique, such jobs would overwrite each other's row, and the
// first to finish would delete the others'. The key is "gs~" and 16 hex
// digits, the first 8 or more ("gs~d" and the digits for "-"): printable,
// so that gearmand reads and deletes it if a queue goes back to it, and
// exact, so that replay takes no other unique for one (a client's unique
// is never told such a key). n makes it the job's own.
func AppendMadeUpKey(dst, unique []byte, n uint64) []byte {
	dst = append(dst, "gs~"...)
	if len(unique) > 0 {
		dst = append(dst, 'd')
	}
	return strconv.AppendUint(dst, n|1<<63, 16)
}

// madeUpKeyLen bounds a made-up key: "gs~", "d", 16 hex digits.
const madeUpKeyLen = 20

// uniqueOfStoredKey is the unique a job stored under key was submitted
// with, and whether key was made up (by AppendMadeUpKey).
func uniqueOfStoredKey(key []byte) (unique []byte, madeUp bool) {
	digits, dash := key, false
	switch {
	case len(key) == 19 && string(key[:3]) == "gs~":
		digits = key[3:]
	case len(key) == 20 && string(key[:4]) == "gs~d":
		digits, dash = key[4:], true
	default:
		return key, false
	}
	if digits[0] < '8' {
		return key, false
	}
	for _, c := range digits {
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return key, false
		}
	}
	if dash {
		return []byte("-"), true
	}
	return nil, true
}

// Store keeps background jobs across restarts and crashes. Implementations
// batch (group commit): Adds and Removes from every shard go into one
// transaction or pipeline, in the order they were called, and no call
// blocks on the database.
type Store interface {
	// Add persists r and calls done once r is durable, or with an error
	// (then r is not stored), from a goroutine of the store's (or, for an
	// Add refused at once, possibly the caller's). r's slices stay valid
	// until done is called.
	Add(r Record, done func(error))
	// AfterDone sets fn, which the store calls after each run of done
	// calls (a batch's, or a refused Add's), on the goroutine that made
	// them. The engine holds the replies that done produces until then,
	// so that a batch's JOB_CREATEDs leave in one write per connection.
	AfterDone(fn func())
	// Remove deletes the record of (function, unique), after any earlier
	// Add of the same key. The slices are valid only during the call.
	Remove(function, unique []byte)
	// Replay calls fn for every stored record; it runs before serving.
	// fn's slices are valid only during the call.
	Replay(fn func(Record)) error
	// Close writes what is pending and releases the store.
	Close() error
}

// Replay loads the store's jobs into their shards, as background jobs with
// new handles; epoch jobs keep their time and made-up keys give back the
// unique. Call it before serving.
func (e *Engine) Replay() (int, error) {
	if e.opts.Store == nil {
		return 0, nil
	}
	n := 0
	var t Turn // no session exists yet: nothing is sent
	err := e.opts.Store.Replay(func(r Record) {
		if len(r.Function) == 0 {
			return
		}
		s := e.shardOf(r.Function)
		s.mu.Lock()
		defer s.mu.Unlock()
		f := s.function(r.Function, true)
		unique, stored := r.Unique, []byte(nil)
		if u, madeUp := uniqueOfStoredKey(r.Unique); madeUp {
			unique, stored = u, r.Unique
		}
		j := s.newJob(f, unique, nil, r.Data, stored)
		j.pri, j.background, j.persisted = r.Priority, true, true
		if j.pri >= numPriorities {
			j.pri = Normal
		}
		if key, ok := coalesceKey(unique, r.Data); ok {
			s.indexUnique(j, key)
		}
		s.start(&t, j, r.When)
		n++
	})
	return n, err
}
