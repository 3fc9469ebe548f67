package engine

import (
	"bytes"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"gearshard/wire"
)

// heldStore is a Store for engine tests: it records every call and holds
// each Add's acknowledgement until the test releases it, as a slow
// database would. The real stores are tested against real databases in
// engine/queue.
type heldStore struct {
	mu      sync.Mutex
	rows    map[string]Record
	pending []pendingAdd
	removed []string
	replay  []Record
	flush   func()
}

type pendingAdd struct {
	key  string
	rec  Record
	done func(error)
}

func newHeldStore() *heldStore { return &heldStore{rows: map[string]Record{}} }

func storeKey(fn, unique []byte) string { return string(fn) + "\x00" + string(unique) }

func (h *heldStore) Add(r Record, done func(error)) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.pending = append(h.pending, pendingAdd{storeKey(r.Function, r.Unique), r, done})
}

func (h *heldStore) Remove(fn, unique []byte) {
	h.mu.Lock()
	defer h.mu.Unlock()
	k := storeKey(fn, unique)
	delete(h.rows, k)
	h.removed = append(h.removed, k)
}

func (h *heldStore) Replay(fn func(Record)) error {
	for _, r := range h.replay {
		fn(r)
	}
	return nil
}

func (h *heldStore) Close() error { return nil }

func (h *heldStore) AfterDone(fn func()) { h.flush = fn }

// ack acknowledges every held Add, with err (nil: durable).
func (h *heldStore) ack(err error) {
	h.mu.Lock()
	batch := h.pending
	h.pending = nil
	for _, p := range batch {
		if err == nil {
			h.rows[p.key] = Record{Function: bytes.Clone(p.rec.Function), Unique: bytes.Clone(p.rec.Unique),
				Priority: p.rec.Priority, Data: bytes.Clone(p.rec.Data), When: p.rec.When}
		}
	}
	h.mu.Unlock()
	for _, p := range batch {
		p.done(err)
	}
	h.flush()
}

func TestPersistHoldsJobCreatedUntilDurable(t *testing.T) {
	st := newHeldStore()
	e := newTestEngine(t, 2, func(o *Options) { o.Store = st })
	var tr Turn
	c, w := clientAndWorker(e)
	e.Handle(&tr, w, req(wire.CanDo, "f"))

	e.Handle(&tr, c, req(wire.SubmitJobLowBG, "f", "", "payload"))
	e.Handle(&tr, c, req(wire.EchoReq, "after"))
	if got := drain(t, c); len(got) != 0 {
		t.Fatalf("client got %v before the job was durable", types(got))
	}
	e.Handle(&tr, w, req(wire.GrabJob))
	expectOne(t, w, wire.NoJob) // not runnable before it is stored

	st.ack(nil)
	got := drain(t, c)
	if fmt.Sprint(types(got)) != fmt.Sprint([]wire.Type{wire.JobCreated, wire.EchoRes}) {
		t.Fatalf("after the ack the client got %v, want JOB_CREATED then ECHO_RES", types(got))
	}
	handle := string(got[0].Field[0])
	if len(st.rows) != 1 {
		t.Fatalf("store holds %d rows, want 1", len(st.rows))
	}
	for _, r := range st.rows {
		if u, madeUp := uniqueOfStoredKey(r.Unique); string(r.Function) != "f" || !madeUp || len(u) != 0 || r.Priority != Low || string(r.Data) != "payload" {
			t.Fatalf("stored %q %q %d %q", r.Function, r.Unique, r.Priority, r.Data)
		}
	}
	e.Handle(&tr, w, req(wire.GrabJobUniq))
	p := expectOne(t, w, wire.JobAssignUniq)
	if string(p.Field[0]) != handle || len(p.Field[2]) != 0 {
		t.Fatalf("assigned %q unique %q: want %s with the client's empty unique", p.Field[0], p.Field[2], handle)
	}
	e.Handle(&tr, w, req(wire.WorkComplete, handle, "done"))
	if len(st.rows) != 0 || len(st.removed) != 1 {
		t.Fatalf("after WORK_COMPLETE the store holds %d rows (%d removals)", len(st.rows), len(st.removed))
	}
}

// Two background jobs with empty uniques must not share a stored key.
func TestPersistEmptyUniquesDoNotCollide(t *testing.T) {
	st := newHeldStore()
	e := newTestEngine(t, 1, func(o *Options) { o.Store = st })
	var tr Turn
	c := e.NewSession(1, "127.0.0.1", nil)
	for i := 0; i < 50; i++ {
		e.Handle(&tr, c, req(wire.SubmitJobBG, "f", "", "same data"))
	}
	st.ack(nil)
	if got := drain(t, c); len(got) != 50 || len(st.rows) != 50 {
		t.Fatalf("%d replies, %d rows; want 50 and 50", len(got), len(st.rows))
	}
}

// Jobs with the unique "-" coalesce on their workload, so jobs with other
// workloads share the unique: each needs a row of its own, or the second
// overwrites the first and the first to finish deletes the other's.
// Replay gives them "-" back, so they coalesce as before.
func TestPersistDashUniques(t *testing.T) {
	st := newHeldStore()
	e := newTestEngine(t, 1, func(o *Options) { o.Store = st })
	var tr Turn
	c := e.NewSession(1, "127.0.0.1", nil)
	e.Handle(&tr, c, req(wire.SubmitJobBG, "f", "-", "A"))
	e.Handle(&tr, c, req(wire.SubmitJobBG, "f", "-", "B"))
	e.Handle(&tr, c, req(wire.SubmitJobBG, "f", "-", "A")) // coalesces onto the first
	st.ack(nil)
	got := drain(t, c)
	if len(got) != 3 || len(st.rows) != 2 || string(got[0].Field[0]) != string(got[2].Field[0]) {
		t.Fatalf("%d replies (%v), %d rows; want 3 replies (the first and third one job) and 2 rows", len(got), got, len(st.rows))
	}
	w := e.NewSession(2, "127.0.0.1", nil)
	e.Handle(&tr, w, req(wire.CanDo, "f"))
	e.Handle(&tr, w, req(wire.GrabJob))
	p := expectOne(t, w, wire.JobAssign)
	e.Handle(&tr, w, req(wire.WorkComplete, string(p.Field[0]), ""))
	if len(st.rows) != 1 {
		t.Fatalf("after one job finished the store holds %d rows, want 1", len(st.rows))
	}

	var left Record
	for _, r := range st.rows {
		left = r
	}
	if string(left.Data) != "B" {
		t.Fatalf("the row left holds %q, want B", left.Data)
	}
	st2 := newHeldStore()
	st2.replay = []Record{left}
	e2 := newTestEngine(t, 1, func(o *Options) { o.Store = st2 })
	if n, err := e2.Replay(); n != 1 || err != nil {
		t.Fatalf("Replay: %d, %v", n, err)
	}
	c2 := e2.NewSession(1, "127.0.0.1", nil)
	e2.Handle(&tr, c2, req(wire.SubmitJobBG, "f", "-", "B"))
	if p := expectOne(t, c2, wire.JobCreated); string(p.Field[0]) != "H:t:1" {
		t.Fatalf("resubmitted B got %s, want the replayed job H:t:1", p.Field[0])
	}
	w2 := e2.NewSession(2, "127.0.0.1", nil)
	e2.Handle(&tr, w2, req(wire.CanDo, "f"))
	e2.Handle(&tr, w2, req(wire.GrabJobUniq))
	if p := expectOne(t, w2, wire.JobAssignUniq); string(p.Field[2]) != "-" || string(p.Field[3]) != "B" {
		t.Fatalf("replayed job assigned with unique %q data %q, want - and B", p.Field[2], p.Field[3])
	}
}

func TestPersistFailureIsAnError(t *testing.T) {
	st := newHeldStore()
	e := newTestEngine(t, 1, func(o *Options) { o.Store = st })
	var tr Turn
	c := e.NewSession(1, "127.0.0.1", nil)
	e.Handle(&tr, c, req(wire.SubmitJobBG, "f", "u1", "x"))
	e.Handle(&tr, c, req(wire.SubmitJobBG, "f", "u1", "x")) // coalesces onto the job being stored
	e.Handle(&tr, c, req(wire.EchoReq, "after"))
	st.ack(errors.New("disk full"))
	got := drain(t, c)
	if fmt.Sprint(types(got)) != fmt.Sprint([]wire.Type{wire.Error, wire.Error, wire.EchoRes}) {
		t.Fatalf("got %v, want ERROR, ERROR, ECHO_RES", types(got))
	}
	if string(got[0].Field[0]) != "QUEUE_ERROR" {
		t.Fatalf("error code %q", got[0].Field[0])
	}
	if n := e.shards[0].jobs.len(); n != 0 {
		t.Fatalf("%d jobs left after the store failed", n)
	}
}

// A store that is down refuses every job; the log says so once, not once
// per job (a flood of 100k lines a second was seen with Postgres stopped).
func TestStoreRefusalsLoggedOnce(t *testing.T) {
	st := newHeldStore()
	var log bytes.Buffer
	e := newTestEngine(t, 1, func(o *Options) { o.Store = st; o.Log = zerolog.New(&log) })
	var tr Turn
	c := e.NewSession(1, "127.0.0.1", nil)
	for i := range 100 {
		e.Handle(&tr, c, req(wire.SubmitJobBG, "f", fmt.Sprint(i), "x"))
	}
	st.ack(errors.New("connection refused"))
	if got := drain(t, c); len(got) != 100 {
		t.Fatalf("%d replies, want 100 ERRORs", len(got))
	}
	if n := strings.Count(log.String(), "job not stored"); n != 1 {
		t.Fatalf("%d log lines for 100 refused jobs, want 1:\n%s", n, log.String())
	}
}

// Replayed jobs land in their shards with their priority, unique and
// time; made-up keys give back the empty unique, and a client's unique that
// only begins like one stays what it is.
func TestReplay(t *testing.T) {
	st := newHeldStore()
	future := time.Now().Add(time.Hour).Unix()
	st.replay = []Record{
		{Function: []byte("a"), Unique: []byte("u-1"), Priority: High, Data: []byte("high")},
		{Function: []byte("a"), Unique: AppendMadeUpKey(nil, nil, 7), Priority: Low, Data: []byte("low")},
		{Function: []byte("a"), Unique: []byte("gs~abc"), Priority: Low, Data: []byte("client's")},
		{Function: []byte("a"), Unique: []byte("gs~8000000000000007x"), Priority: Low, Data: []byte("client's too")},
		{Function: []byte("b"), Unique: []byte("later"), Priority: Normal, Data: []byte("epoch"), When: future},
	}
	e := newTestEngine(t, 2, func(o *Options) { o.Store = st })
	if n, err := e.Replay(); n != 5 || err != nil {
		t.Fatalf("Replay: %d, %v", n, err)
	}
	var tr Turn
	w := e.NewSession(1, "127.0.0.1", nil)
	e.Handle(&tr, w, req(wire.CanDo, "a"))
	e.Handle(&tr, w, req(wire.CanDo, "b"))
	var order []string
	for i := 0; i < 5; i++ {
		e.Handle(&tr, w, req(wire.GrabJobUniq))
		for _, p := range drain(t, w) {
			if p.Type == wire.JobAssignUniq {
				order = append(order, string(p.Field[2])+"="+string(p.Field[3]))
			}
		}
	}
	if want := "[u-1=high =low gs~abc=client's gs~8000000000000007x=client's too]"; fmt.Sprint(order) != want {
		t.Fatalf("replayed jobs served as %v, want %s (the epoch job waits)", order, want)
	}
	c := e.NewSession(2, "127.0.0.1", nil)
	e.Handle(&tr, c, req(wire.GetStatusUnique, "later"))
	if p := expectOne(t, c, wire.StatusResUnique); string(p.Field[1]) != "1" {
		t.Fatalf("epoch job not known after replay: %v", p.String())
	}
}

// The JOB_CREATEDs a batch releases are dispatched together when the store
// says the batch is done: one flush per connection, not one per job.
func TestStoreBatchFlushesOncePerConnection(t *testing.T) {
	st := newHeldStore()
	e := newTestEngine(t, 2, func(o *Options) { o.Store = st })
	var flushes [][]uint64
	created := map[uint64]int{} // JOB_CREATEDs written, by session
	e.SetDispatcher(func(tr *Turn) {
		var ids []uint64
		for _, s := range tr.Dirty {
			ids = append(ids, s.ID)
			for _, p := range drain(t, s) { // as the network layer's flush would
				if p.Type == wire.JobCreated {
					created[s.ID]++
				}
			}
		}
		flushes = append(flushes, ids)
	})
	var tr Turn
	c1 := e.NewSession(1, "127.0.0.1", nil)
	c2 := e.NewSession(2, "127.0.0.1", nil)
	for i := range 10 {
		c := c1
		if i%2 == 1 {
			c = c2
		}
		e.Handle(&tr, c, req(wire.SubmitJobBG, "f"+strconv.Itoa(i), "", "x"))
	}
	for _, c := range []*Session{c1, c2} {
		if out := c.takeOutput(); len(out) != 0 { // as the event loop flushes its turn
			t.Fatalf("JOB_CREATED went out before the job was stored: %q", out)
		}
	}
	tr.Reset()
	if len(flushes) != 0 {
		t.Fatalf("dispatched %v before the store acknowledged anything", flushes)
	}
	st.ack(nil)
	if len(flushes) != 1 || len(flushes[0]) != 2 || flushes[0][0] == flushes[0][1] {
		t.Fatalf("one batch of 10 jobs from 2 connections dispatched as %v, want one flush of both", flushes)
	}
	if created[c1.ID] != 5 || created[c2.ID] != 5 {
		t.Fatalf("JOB_CREATEDs written %v, want 5 each", created)
	}
	st.ack(nil) // an empty batch: nothing to send
	if len(flushes) != 1 {
		t.Fatalf("an empty batch dispatched %v", flushes[1:])
	}
}

// Only a key of the exact made-up form is taken for one on replay.
func TestMadeUpKeys(t *testing.T) {
	for _, n := range []uint64{0, 1, 1<<63 - 1, 1<<64 - 1} {
		for _, unique := range []string{"", "-"} {
			key := AppendMadeUpKey(nil, []byte(unique), n)
			if u, madeUp := uniqueOfStoredKey(key); !madeUp || string(u) != unique || len(key) > madeUpKeyLen {
				t.Errorf("key %q for unique %q: read back %q, %v", key, unique, u, madeUp)
			}
		}
	}
	for _, key := range []string{"", "gs~", "gs~abc", "gs~7fffffffffffffff", "gs~8000000000000000x", "gs~800000000000000G",
		"gs~800000000000000A", "gs~e8000000000000000", "gs~d7000000000000000", "xs~8000000000000000"} {
		if u, madeUp := uniqueOfStoredKey([]byte(key)); madeUp || string(u) != key {
			t.Errorf("client unique %q read as made up (%q)", key, u)
		}
	}
}
