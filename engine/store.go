package engine

// Record is a background job as a persistent queue keeps it: the columns
// of gearmand's queue tables.
type Record struct {
	Function []byte
	// Unique is the stored key: the client's unique, or for an empty one a
	// key the engine makes up (StoredUniquePrefix + random hex), so that
	// jobs without a unique never overwrite each other.
	Unique   []byte
	Priority Priority // 0 high, 1 normal, 2 low, as gearmand stores it
	Data     []byte
	When     int64 // unix seconds before which the job must not run; 0 = now
}

// StoredUniquePrefix marks a stored key the engine made up for a job
// submitted with an empty unique; replay gives such a job its empty
// unique back.
const StoredUniquePrefix = "gs~"

// Store keeps background jobs across restarts and crashes. Implementations
// batch (group commit): Adds and Removes from every shard go into one
// transaction or pipeline, in the order they were called, and no call
// blocks on the database.
type Store interface {
	// Add persists r and calls done once r is durable, or with an error
	// (then r is not stored), from a goroutine of the store's. r's slices
	// stay valid until done is called.
	Add(r Record, done func(error))
	// Remove deletes the record of (function, unique), after any earlier
	// Add of the same key. The slices are valid only during the call.
	Remove(function, unique []byte)
	// Replay calls fn for every stored record; it runs before serving.
	// fn's slices are valid only during the call.
	Replay(fn func(Record)) error
	// Close writes what is pending and releases the store.
	Close() error
}
