package main

// TestDifferential runs the same scripted binary-protocol conversations
// against Debian's gearmand 1.1.20 and against gearshard, each on a fresh
// server per scenario, and compares what every connection received, packet
// by packet and in order.
//
// A script is a list of steps on named connections (c1, c2, ... clients;
// w1, w2, ... workers), dialed when first named: send a request, read the
// next N packets, expect nothing for a short while, settle (an ECHO_REQ
// round trip, so the server has run everything sent before on that
// connection), hang up (and wait until the server has dropped the
// connection), or list the admin "workers" output. After the last step
// every connection is read once more for a short while, so a transcript
// accounts for everything the server sent.
//
// Cross-connection order is only ever relied on through a reply: a step
// that depends on another connection's request comes after a read of that
// request's reply, or after settle / hangup on that connection.
//
// Where gearshard deliberately differs from gearmand (README, "Differences
// from gearmand 1.1.20"), the scenario names the item and gives each
// server's expected transcript for the connections that differ. Every
// other scenario asserts gearmand's behaviour: one that gearshard does not
// match fails until gearshard does, or the README documents the
// difference and the scenario says so.

import (
	"errors"
	"fmt"
	"maps"
	"net"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"gearshard/netio/gstest"
	"gearshard/wire"
)

const (
	diffPrefix  = "H:diff"               // job handle prefix on both servers
	diffTimeout = 3 * time.Second        // wait for one packet a step reads
	diffQuiet   = 200 * time.Millisecond // "nothing arrives" window
	adminConn   = "admin"                // transcript of the admin steps
	unasked     = "unasked "             // marks a packet no step read for
)

type diffOp uint8

const (
	opSend    diffOp = iota // send a request packet
	opRaw                   // write raw bytes
	opRecv                  // read the next n packets
	opQuiet                 // nothing may arrive for diffQuiet
	opSettle                // ECHO_REQ round trip (the ECHO_RES is not recorded)
	opHangup                // close; wait until the server has dropped the connection
	opWorkers               // admin "workers", recorded under adminConn
)

type diffStep struct {
	op     diffOp
	conn   string
	typ    wire.Type
	fields []string // "$H<n>" stands for the nth distinct handle received
	n      int
	raw    []byte
}

// Step constructors. Each returns a slice so that a script is one seq(...)
// of them.
func send(conn string, typ wire.Type, fields ...string) []diffStep {
	return []diffStep{{op: opSend, conn: conn, typ: typ, fields: fields}}
}
func rawBytes(conn string, b []byte) []diffStep {
	return []diffStep{{op: opRaw, conn: conn, raw: b}}
}
func recv(conn string, n int) []diffStep { return []diffStep{{op: opRecv, conn: conn, n: n}} }
func quiet(conn string) []diffStep       { return []diffStep{{op: opQuiet, conn: conn}} }
func settle(conn string) []diffStep      { return []diffStep{{op: opSettle, conn: conn}} }
func hangup(conn string) []diffStep      { return []diffStep{{op: opHangup, conn: conn}} }
func adminWorkers() []diffStep           { return []diffStep{{op: opWorkers, conn: adminConn}} }
func seq(parts ...[]diffStep) []diffStep { return slices.Concat(parts...) }

// submit sends a submit packet on conn and reads its reply.
func submit(conn string, typ wire.Type, fields ...string) []diffStep {
	return seq(send(conn, typ, fields...), recv(conn, 1))
}

// grab sends GRAB_JOB on conn and reads the reply.
func grab(conn string) []diffStep { return seq(send(conn, wire.GrabJob), recv(conn, 1)) }

// perServer is what each server must send on one connection, for a
// scenario that runs into a documented difference.
type perServer struct{ gearmand, gearshard []string }

type diffScenario struct {
	name  string
	steps []diffStep
	// readme is the item of the README's "Differences from gearmand
	// 1.1.20" the scenario runs into (0: none). Then differs gives, for
	// the connections concerned, each server's expected transcript; every
	// other connection must still be the same on both.
	readme  int
	differs map[string]perServer
}

// pkt formats a packet as it appears in a transcript (handles already
// normalised).
func pkt(typ wire.Type, fields ...string) string {
	return gstest.Packet{Type: typ, Fields: fields}.String()
}

var diffScenarios = []diffScenario{
	{
		// Every SUBMIT_JOB variant: FIFO within a priority, HIGH before
		// NORMAL before LOW, fg and bg alike; only fg submitters get the
		// result.
		name: "submit-all-priorities",
		steps: seq(
			submit("c1", wire.SubmitJobLow, "f", "", "low"),
			submit("c1", wire.SubmitJob, "f", "", "normal"),
			submit("c1", wire.SubmitJobHigh, "f", "", "high"),
			submit("c1", wire.SubmitJobLowBG, "f", "", "lowbg"),
			submit("c1", wire.SubmitJobBG, "f", "", "bg"),
			submit("c1", wire.SubmitJobHighBG, "f", "", "highbg"),
			send("w1", wire.CanDo, "f"),
			grab("w1"), send("w1", wire.WorkComplete, "$H3", "r-high"),
			grab("w1"), send("w1", wire.WorkComplete, "$H6", "r-highbg"),
			grab("w1"), send("w1", wire.WorkComplete, "$H2", "r-normal"),
			grab("w1"), send("w1", wire.WorkComplete, "$H5", "r-bg"),
			grab("w1"), send("w1", wire.WorkComplete, "$H1", "r-low"),
			grab("w1"), send("w1", wire.WorkComplete, "$H4", "r-lowbg"),
			grab("w1"),
			recv("c1", 3),
		),
	},
	{
		name: "priority-order",
		steps: seq(
			submit("c1", wire.SubmitJobLowBG, "f", "", "low"),
			submit("c2", wire.SubmitJobBG, "f", "", "normal"),
			submit("c3", wire.SubmitJobHighBG, "f", "", "high"),
			send("w1", wire.CanDo, "f"),
			send("w1", wire.GrabJob), send("w1", wire.GrabJob), send("w1", wire.GrabJob), send("w1", wire.GrabJob),
			recv("w1", 4),
		),
	},
	{
		// gearmand serves the newest CAN_DO with work first, whatever the
		// priorities; gearshard the highest priority across functions.
		name: "priority-across-functions",
		steps: seq(
			send("w1", wire.CanDo, "fa"),
			send("w1", wire.CanDo, "fb"),
			submit("c1", wire.SubmitJobHighBG, "fa", "", "a-high"),
			submit("c1", wire.SubmitJobLowBG, "fb", "", "b-low"),
			grab("w1"),
			grab("w1"),
		),
		readme: 1,
		differs: map[string]perServer{"w1": {
			gearmand:  []string{pkt(wire.JobAssign, "H2", "fb", "b-low"), pkt(wire.JobAssign, "H1", "fa", "a-high")},
			gearshard: []string{pkt(wire.JobAssign, "H1", "fa", "a-high"), pkt(wire.JobAssign, "H2", "fb", "b-low")},
		}},
	},
	{
		// Long function names: gearmand serves names of 8,000 bytes (more
		// than libgearman's 512), and so must gearshard. (gearmand takes
		// submissions up to 8191, but cannot send a JOB_ASSIGN whose
		// handle and name pass its 8 KiB send buffer: it closes the
		// worker's connection.)
		name: "long-function-name",
		steps: seq(
			send("w1", wire.CanDo, strings.Repeat("n", 8000)),
			submit("c1", wire.SubmitJob, strings.Repeat("n", 8000), "", "long"),
			send("w1", wire.GrabJob),
			recv("w1", 1),
			send("w1", wire.WorkComplete, "$H1", "done"),
			recv("c1", 1),
		),
	},
	{
		// Two fg clients on one unique key share the job and both get
		// every WORK_* packet; the same unique under another function is
		// another job, and a finished job frees its unique.
		name: "coalesce-fg-fg",
		steps: seq(
			submit("c1", wire.SubmitJob, "f", "u1", "first"),
			submit("c2", wire.SubmitJobHigh, "f", "u1", "second"),
			submit("c3", wire.SubmitJob, "g", "u1", "other function"),
			send("w1", wire.CanDo, "f"),
			grab("w1"),
			send("w1", wire.WorkData, "$H1", "d1"),
			send("w1", wire.WorkWarning, "$H1", "w1"),
			send("w1", wire.WorkStatus, "$H1", "1", "3"),
			send("w1", wire.WorkComplete, "$H1", "done"),
			recv("c1", 4), recv("c2", 4),
			submit("c1", wire.SubmitJob, "f", "u1", "again"),
			grab("w1"),
		),
	},
	{
		// fg onto bg: the fg client is attached and gets the result, the
		// bg submitter nothing; bg onto fg returns the fg job's handle.
		name: "coalesce-fg-bg",
		steps: seq(
			submit("c1", wire.SubmitJobBG, "f", "u2", "bgdata"),
			submit("c2", wire.SubmitJob, "f", "u2", "fgdata"),
			submit("c3", wire.SubmitJob, "f", "u3", "fg3"),
			submit("c1", wire.SubmitJobLowBG, "f", "u3", "bg3"),
			send("w1", wire.CanDo, "f"),
			grab("w1"),
			send("w1", wire.WorkData, "$H1", "x"),
			send("w1", wire.WorkStatus, "$H1", "1", "2"),
			send("w1", wire.WorkComplete, "$H1", "r1"),
			recv("c2", 3),
			grab("w1"),
			send("w1", wire.WorkWarning, "$H2", "warn"),
			send("w1", wire.WorkComplete, "$H2", "r2"),
			recv("c3", 2),
			quiet("c1"),
		),
	},
	{
		// Unique "-" means "the data is the key"; empty data or empty
		// unique never coalesce.
		name: "coalesce-dash-unique",
		steps: seq(
			submit("c1", wire.SubmitJobBG, "f", "-", "same"),
			submit("c2", wire.SubmitJobBG, "f", "-", "same"),
			submit("c2", wire.SubmitJobBG, "f", "-", "different"),
			submit("c1", wire.SubmitJobBG, "f", "-", ""),
			submit("c1", wire.SubmitJobBG, "f", "-", ""),
			submit("c1", wire.SubmitJobBG, "f", "", "same"),
			submit("c1", wire.SubmitJobBG, "f", "", "same"),
			send("w1", wire.CanDo, "f"),
			send("w1", wire.GrabJobUniq), recv("w1", 1),
		),
	},
	{
		// One connection submitting the same unique twice is attached
		// twice (two tasks waiting on one handle): it counts as two
		// clients and gets every WORK_* packet twice, one per task.
		// Undocumented divergence: gearshard attaches it once.
		name: "coalesce-same-connection",
		steps: seq(
			submit("c1", wire.SubmitJob, "f", "twice", "x"),
			submit("c1", wire.SubmitJob, "f", "twice", "x"),
			send("c2", wire.GetStatusUnique, "twice"), recv("c2", 1),
			send("w1", wire.CanDo, "f"),
			grab("w1"),
			send("w1", wire.WorkComplete, "$H1", "r"),
			recv("c1", 2),
		),
	},
	{
		// A unique held by jobs of two functions: GET_STATUS_UNIQUE
		// answers for the newest job (1 client for the foreground one, 0
		// for the background one), whichever was submitted first.
		name: "status-unique-newest",
		steps: seq(
			submit("c1", wire.SubmitJob, "f1", "u1", "x"),
			submit("c2", wire.SubmitJobBG, "f3", "u1", "d1"),
			send("c3", wire.GetStatusUnique, "u1"), recv("c3", 1),
			submit("c2", wire.SubmitJobBG, "g1", "u2", "d2"),
			submit("c1", wire.SubmitJob, "g3", "u2", "y"),
			send("c3", wire.GetStatusUnique, "u2"), recv("c3", 1),
		),
	},
	{
		// A sleeping worker that submits a job of its own function is
		// woken before it hears JOB_CREATED.
		name: "sleeping-worker-submits",
		steps: seq(
			send("w1", wire.CanDo, "f"),
			send("w1", wire.PreSleep),
			send("w1", wire.SubmitJob, "f", "", "x"), recv("w1", 2),
		),
	},
	{
		// A client joining a running job gets the WORK_* packets sent
		// after it joined, not the earlier ones.
		name: "coalesce-running",
		steps: seq(
			submit("c1", wire.SubmitJob, "f", "run", "x"),
			send("w1", wire.CanDo, "f"),
			grab("w1"),
			send("w1", wire.WorkData, "$H1", "d1"),
			recv("c1", 1),
			submit("c2", wire.SubmitJobLow, "f", "run", "y"),
			send("w1", wire.WorkData, "$H1", "d2"),
			send("w1", wire.WorkComplete, "$H1", "r"),
			recv("c1", 2), recv("c2", 2),
		),
	},
	{
		// A fg client that joined a bg job and left: gearmand drops the
		// job when a worker would take it, gearshard runs it.
		name: "coalesce-fg-onto-bg-then-leave",
		steps: seq(
			submit("c1", wire.SubmitJobBG, "f", "bgu", "x"),
			submit("c2", wire.SubmitJob, "f", "bgu", "y"),
			hangup("c2"),
			send("w1", wire.CanDo, "f"),
			grab("w1"),
		),
		readme: 4,
		differs: map[string]perServer{"w1": {
			gearmand:  []string{pkt(wire.NoJob)},
			gearshard: []string{pkt(wire.JobAssign, "H1", "f", "x")},
		}},
	},
	{
		// A unique of 64 bytes is accepted, 65 is not.
		name: "unique-limits",
		steps: seq(
			submit("c1", wire.SubmitJobBG, "f", strings.Repeat("u", 64), "x"),
			submit("c1", wire.SubmitJobBG, "f", strings.Repeat("u", 65), "x"),
			submit("c1", wire.SubmitJob, "f", strings.Repeat("v", 65), "x"),
			send("c1", wire.EchoReq, "still open"), recv("c1", 1),
		),
	},
	{
		name: "work-fail",
		steps: seq(
			submit("c1", wire.SubmitJob, "f", "", "x"),
			send("w1", wire.CanDo, "f"),
			grab("w1"),
			send("w1", wire.WorkFail, "$H1"),
			recv("c1", 1),
			send("c1", wire.GetStatus, "$H1"), recv("c1", 1),
		),
	},
	{
		// c1 asked for exceptions (OPTION_RES echoes the name as sent),
		// c2 did not and gets WORK_FAIL.
		name: "work-exception",
		steps: seq(
			send("c1", wire.OptionReq, "Exceptions"), recv("c1", 1),
			submit("c1", wire.SubmitJob, "f", "ex", "x"),
			submit("c2", wire.SubmitJob, "f", "ex", "x"),
			send("w1", wire.CanDo, "f"),
			grab("w1"),
			send("w1", wire.WorkException, "$H1", "boom"),
			recv("c1", 1), recv("c2", 1),
			send("c1", wire.GetStatus, "$H1"), recv("c1", 1),
		),
		readme: 8,
		differs: map[string]perServer{"c2": {
			gearmand:  []string{pkt(wire.JobCreated, "H1"), pkt(wire.WorkFail, "H1\x00")},
			gearshard: []string{pkt(wire.JobCreated, "H1"), pkt(wire.WorkFail, "H1")},
		}},
	},
	{
		// Known and running (with the worker's status), known and queued,
		// unknown with the server's prefix, unknown in another form.
		name: "get-status",
		steps: seq(
			submit("c1", wire.SubmitJobBG, "f", "", "run"),
			submit("c1", wire.SubmitJobBG, "f", "", "wait"),
			send("w1", wire.CanDo, "f"),
			grab("w1"),
			send("w1", wire.WorkStatus, "$H1", "1", "4"),
			settle("w1"),
			send("c2", wire.GetStatus, "$H1"),
			send("c2", wire.GetStatus, "$H2"),
			send("c2", wire.GetStatus, diffPrefix+":999999"),
			send("c2", wire.GetStatus, "nosuch"),
			recv("c2", 4),
		),
	},
	{
		name: "get-status-unique",
		steps: seq(
			submit("c1", wire.SubmitJob, "f", "gu", "x"),
			submit("c2", wire.SubmitJob, "f", "gu", "x"),
			submit("c3", wire.SubmitJobBG, "f", "gq", "y"),
			send("w1", wire.CanDo, "f"),
			grab("w1"),
			send("w1", wire.WorkStatus, "$H1", "2", "5"),
			recv("c1", 1), recv("c2", 1),
			send("c3", wire.GetStatusUnique, "gu"),
			send("c3", wire.GetStatusUnique, "gq"),
			send("c3", wire.GetStatusUnique, "nope"),
			recv("c3", 3),
		),
	},
	{
		// WORK_STATUS is forwarded verbatim; GET_STATUS reports the
		// numbers as parsed.
		name: "work-status-parsing",
		steps: seq(
			submit("c1", wire.SubmitJob, "f", "", "x"),
			send("w1", wire.CanDo, "f"),
			grab("w1"),
			send("w1", wire.WorkStatus, "$H1", "7x", "12y"),
			recv("c1", 1),
			send("c2", wire.GetStatus, "$H1"), recv("c2", 1),
			send("w1", wire.WorkStatus, "$H1", "", "abc"),
			recv("c1", 1),
			send("c2", wire.GetStatus, "$H1"), recv("c2", 1),
			send("w1", wire.WorkStatus, "$H1", "-3", "4294967296"),
			recv("c1", 1),
			send("c2", wire.GetStatus, "$H1"), recv("c2", 1),
		),
	},
	{
		// Empty workload, data and result are passed through as such.
		name: "empty-payloads",
		steps: seq(
			submit("c1", wire.SubmitJob, "f", "", ""),
			send("w1", wire.CanDo, "f"),
			grab("w1"),
			send("w1", wire.WorkData, "$H1", ""),
			send("w1", wire.WorkWarning, "$H1", ""),
			send("w1", wire.WorkComplete, "$H1", ""),
			recv("c1", 3),
		),
	},
	{
		// A bg job's WORK_* packets go nowhere and are not errors;
		// its status is kept for GET_STATUS.
		name: "background-work-packets",
		steps: seq(
			submit("c1", wire.SubmitJobBG, "f", "", "x"),
			submit("c1", wire.SubmitJobBG, "f", "", "y"),
			send("w1", wire.CanDo, "f"),
			grab("w1"),
			send("w1", wire.WorkData, "$H1", "d"),
			send("w1", wire.WorkWarning, "$H1", "w"),
			send("w1", wire.WorkStatus, "$H1", "3", "9"),
			settle("w1"),
			send("c1", wire.GetStatus, "$H1"), recv("c1", 1),
			send("w1", wire.WorkException, "$H1", "e"),
			grab("w1"),
			send("w1", wire.WorkFail, "$H2"),
			settle("w1"),
			send("c1", wire.GetStatus, "$H1"), send("c1", wire.GetStatus, "$H2"), recv("c1", 2),
		),
	},
	{
		// A 64-byte handle does not fit gearmand's 64-byte buffer (with
		// its NUL): it does not answer. (Whether gearmand then closes the
		// connection depends on a race between its threads, so the
		// script sends nothing more.) gearshard answers "unknown".
		name: "get-status-long-handle",
		steps: seq(
			send("c1", wire.GetStatus, diffPrefix+":"+strings.Repeat("9", 64-len(diffPrefix)-1)), quiet("c1"),
		),
		readme: 14,
		differs: map[string]perServer{"c1": {
			gearmand:  nil,
			gearshard: []string{unasked + pkt(wire.StatusRes, "H1", "0", "0", "0", "0")},
		}},
	},
	{
		// Likewise a 64-byte unique, although SUBMIT_JOB accepts one;
		// gearshard answers.
		name: "get-status-unique-long-unique",
		steps: seq(
			submit("c1", wire.SubmitJobBG, "f", strings.Repeat("u", 64), "x"),
			send("c1", wire.GetStatusUnique, strings.Repeat("u", 64)), quiet("c1"),
		),
		readme: 14,
		differs: map[string]perServer{"c1": {
			gearmand: []string{pkt(wire.JobCreated, "H1")},
			gearshard: []string{pkt(wire.JobCreated, "H1"),
				unasked + pkt(wire.StatusResUnique, strings.Repeat("u", 64), "1", "0", "0", "0", "0")},
		}},
	},
	{
		// gearmand checks a WORK_FAIL handle's length first: ERROR
		// ARGUMENT_TOO_LARGE; gearshard answers JOB_NOT_FOUND, as for any
		// handle it does not know.
		name: "work-fail-long-handle",
		steps: seq(
			send("w1", wire.WorkFail, strings.Repeat("h", 64)), recv("w1", 1),
		),
		readme: 14,
		differs: map[string]perServer{"w1": {
			gearmand:  []string{pkt(wire.Error, "ARGUMENT_TOO_LARGE", "Error occurred due to GEARMAND_JOB_HANDLE_SIZE being too small from snprintf")},
			gearshard: []string{pkt(wire.Error, "JOB_NOT_FOUND", "Job given in work result not found")},
		}},
	},
	{
		name: "option-req-long",
		steps: seq(
			send("c1", wire.OptionReq, strings.Repeat("o", 64)), recv("c1", 1),
		),
	},
	{
		// CAN_DO_TIMEOUT registers the function like CAN_DO (a timeout
		// that does not parse is no timeout).
		name: "can-do-timeout-register",
		steps: seq(
			send("w1", wire.CanDoTimeout, "fa", "60000"),
			send("w1", wire.CanDoTimeout, "fb", "abc"),
			settle("w1"),
			adminWorkers(),
			submit("c1", wire.SubmitJob, "fa", "", "x"),
			grab("w1"),
			send("w1", wire.WorkComplete, "$H1", "rx"),
			recv("c1", 1),
			submit("c1", wire.SubmitJob, "fb", "", "y"),
			grab("w1"),
			send("w1", wire.WorkComplete, "$H2", "ry"),
			recv("c1", 1),
		),
	},
	{
		// A job held past its CAN_DO_TIMEOUT (1000 ms): gearmand requeues
		// it silently and another worker gets it; gearshard fails it to
		// the client. The late result is an error on both.
		name: "can-do-timeout-expiry",
		steps: seq(
			send("w1", wire.CanDoTimeout, "f", "1000"),
			submit("c1", wire.SubmitJob, "f", "", "slow"),
			grab("w1"),
			recv("c1", 1), // within diffTimeout, well past the timeout
			send("w1", wire.WorkComplete, "$H1", "late"), recv("w1", 1),
			send("w2", wire.CanDo, "f"),
			grab("w2"),
		),
		readme: 7,
		differs: map[string]perServer{
			"c1": {
				gearmand:  []string{pkt(wire.JobCreated, "H1"), "<timeout>"},
				gearshard: []string{pkt(wire.JobCreated, "H1"), pkt(wire.WorkFail, "H1")},
			},
			"w2": {
				gearmand:  []string{pkt(wire.JobAssign, "H1", "f", "slow")},
				gearshard: []string{pkt(wire.NoJob)},
			},
		},
	},
	{
		// A function registered twice on one connection: the newest
		// registration's timeout applies (here none), so the job held past
		// the first one's 1000 ms is neither failed nor requeued.
		name: "can-do-timeout-newest-registration",
		steps: seq(
			send("w1", wire.CanDoTimeout, "f", "1000"),
			send("w1", wire.CanDo, "f"),
			submit("c1", wire.SubmitJob, "f", "", "slow"),
			grab("w1"),
			recv("c1", 1), // nothing within diffTimeout, well past 1000 ms
			send("w1", wire.WorkComplete, "$H1", "done"), recv("c1", 1),
		),
	},
	{
		// An epoch time outside 64 bits: gearmand drops the submission
		// without a word; gearshard answers ERROR. Neither queues a job.
		name: "epoch-out-of-range",
		steps: seq(
			send("c1", wire.SubmitJobEpoch, "f", "", "99999999999999999999", "x"), recv("c1", 1),
			send("w1", wire.CanDo, "f"), grab("w1"),
		),
		readme: 2,
		differs: map[string]perServer{"c1": {
			gearmand:  []string{"<timeout>"},
			gearshard: []string{pkt(wire.Error, "INVALID_ARGUMENT", "Epoch time out of range")},
		}},
	},
	{
		// A result for a job already finished is an error.
		name: "double-complete",
		steps: seq(
			submit("c1", wire.SubmitJob, "f", "", "x"),
			send("w1", wire.CanDo, "f"),
			grab("w1"),
			send("w1", wire.WorkComplete, "$H1", "r"),
			recv("c1", 1),
			send("w1", wire.WorkComplete, "$H1", "again"),
			send("w1", wire.WorkFail, "$H1"),
			recv("w1", 2),
		),
	},
	{
		name: "echo",
		steps: seq(
			send("c1", wire.EchoReq, "hello"),
			send("c1", wire.EchoReq, "with\x00nul"),
			send("c1", wire.EchoReq, ""),
			recv("c1", 3),
		),
	},
	{
		// No reply; the id shows in "workers".
		name: "set-client-id",
		steps: seq(
			send("w1", wire.SetClientID, "my-worker-id"),
			send("w1", wire.CanDo, "fa"),
			send("w1", wire.CanDo, "fb"),
			settle("w1"),
			adminWorkers(),
		),
	},
	{
		// gearmand keeps 127 bytes of an id, up to its first NUL.
		name: "set-client-id-long-and-nul",
		steps: seq(
			send("w1", wire.SetClientID, strings.Repeat("i", 200)),
			send("w1", wire.CanDo, "fa"),
			send("w2", wire.SetClientID, "ab\x00cd"),
			send("w2", wire.CanDo, "fb"),
			settle("w1"),
			settle("w2"),
			adminWorkers(),
		),
	},
	{
		name: "option-req",
		steps: seq(
			send("c1", wire.OptionReq, "nosuch"), recv("c1", 1),
			send("c1", wire.OptionReq, "exceptions"), recv("c1", 1),
			// Read as a C string: the NUL ends the option; all is echoed.
			send("c1", wire.OptionReq, "exceptions\x00junk"), recv("c1", 1),
		),
	},
	{
		name: "abilities",
		steps: seq(
			submit("c1", wire.SubmitJobBG, "fa", "", "a"),
			submit("c1", wire.SubmitJobBG, "fb", "", "b"),
			grab("w1"),
			send("w1", wire.CanDo, "fa"),
			send("w1", wire.CantDo, "fa"),
			send("w1", wire.CantDo, "nosuch"),
			grab("w1"),
			send("w1", wire.CanDo, "fa"),
			send("w1", wire.CanDo, "fb"),
			send("w1", wire.ResetAbilities),
			grab("w1"),
			send("w1", wire.CanDo, "fb"),
			grab("w1"),
			grab("w1"),
			send("w1", wire.CanDo, "fc"),
			send("w1", wire.CanDo, "fc"),
			settle("w1"),
			adminWorkers(),
			send("w1", wire.CantDo, "fc"),
			settle("w1"),
			adminWorkers(),
		),
	},
	{
		name: "grab-nothing",
		steps: seq(
			grab("w1"),
			send("w1", wire.CanDo, "f"),
			grab("w1"),
			send("w1", wire.GrabJobUniq), recv("w1", 1),
			send("w1", wire.GrabJobAll), recv("w1", 1),
		),
	},
	{
		// Both sleeping workers are woken once; a worker going to sleep
		// while work is queued is woken at once.
		name: "pre-sleep-noop",
		steps: seq(
			send("w1", wire.CanDo, "f"), send("w1", wire.PreSleep), settle("w1"),
			send("w2", wire.CanDo, "f"), send("w2", wire.PreSleep), settle("w2"),
			submit("c1", wire.SubmitJobBG, "f", "", "x"),
			recv("w1", 1), recv("w2", 1),
			submit("c1", wire.SubmitJobBG, "f", "", "y"),
			quiet("w1"), quiet("w2"),
			grab("w1"),
			send("w1", wire.PreSleep), recv("w1", 1),
			grab("w1"),
			send("w1", wire.PreSleep), quiet("w1"),
		),
	},
	{
		// JOB_ASSIGN_UNIQ carries the unique; GRAB_JOB_ALL on a job
		// without a reducer gets JOB_ASSIGN_UNIQ.
		name: "grab-uniq-all-layouts",
		steps: seq(
			submit("c1", wire.SubmitJobBG, "f", "uq1", "d1"),
			submit("c1", wire.SubmitJobBG, "f", "", "d2"),
			submit("c1", wire.SubmitJobBG, "f", "uq3", "d3"),
			submit("c1", wire.SubmitJobBG, "f", "uq4", "with\x00nul"),
			send("w1", wire.CanDo, "f"),
			send("w1", wire.GrabJobUniq), recv("w1", 1),
			send("w1", wire.GrabJobAll), recv("w1", 1),
			grab("w1"),
			send("w1", wire.GrabJobAll), recv("w1", 1),
		),
	},
	{
		name: "reduce",
		steps: seq(
			submit("c1", wire.SubmitReduceJob, "f", "ru", "reducer", "aggregator", "data"),
			submit("c2", wire.SubmitReduceJobBackground, "f", "rb", "red2", "agg2", "data2"),
			submit("c2", wire.SubmitReduceJobBackground, "f", "rc", "red3", "agg3", "data3"),
			send("w1", wire.CanDo, "f"),
			send("w1", wire.GrabJobAll), recv("w1", 1),
			grab("w1"),
			send("w1", wire.GrabJobUniq), recv("w1", 1),
			send("w1", wire.WorkData, "$H1", "part"),
			send("w1", wire.WorkComplete, "$H1", "r1"),
			send("w1", wire.WorkComplete, "$H2", "r2"),
			recv("c1", 2),
		),
	},
	{
		// A past epoch (and one that does not parse, = 0) runs now, wakes
		// the sleeping worker, and is a background job.
		name: "epoch-past",
		steps: seq(
			send("w1", wire.CanDo, "f"), send("w1", wire.PreSleep), settle("w1"),
			submit("c1", wire.SubmitJobEpoch, "f", "", "1000000000", "old"),
			recv("w1", 1),
			grab("w1"),
			submit("c1", wire.SubmitJobEpoch, "f", "", "notanumber", "garbage"),
			grab("w1"),
			send("w1", wire.WorkComplete, "$H1", "r"),
			send("w1", wire.WorkComplete, "$H2", "r"),
			settle("w1"),
		),
	},
	{
		// A future epoch is not handed out, nor does PRE_SLEEP see it.
		// gearmand wakes sleeping workers at the submit all the same (to
		// find nothing); gearshard wakes them at the job's time.
		name: "epoch-future",
		steps: seq(
			send("w1", wire.CanDo, "f"), send("w1", wire.PreSleep), settle("w1"),
			submit("c1", wire.SubmitJobEpoch, "f", "", "4102444800", "year 2100"),
			quiet("w1"),
			grab("w1"),
			send("w1", wire.PreSleep), quiet("w1"),
			send("c1", wire.GetStatus, "$H1"), recv("c1", 1),
		),
		readme: 2,
		differs: map[string]perServer{"w1": {
			gearmand:  []string{unasked + pkt(wire.Noop), pkt(wire.NoJob)},
			gearshard: []string{pkt(wire.NoJob)},
		}},
	},
	{
		// The job goes back to the queue (sleeping workers woken, status
		// reset) and another worker completes it for the waiting client,
		// which saw nothing of the loss.
		name: "worker-disconnect-requeue",
		steps: seq(
			submit("c1", wire.SubmitJob, "f", "", "payload"),
			send("w1", wire.CanDo, "f"),
			grab("w1"),
			send("w1", wire.WorkStatus, "$H1", "1", "2"),
			recv("c1", 1),
			send("w2", wire.CanDo, "f"), send("w2", wire.PreSleep), settle("w2"),
			send("c2", wire.GetStatus, "$H1"), recv("c2", 1),
			hangup("w1"),
			recv("w2", 1),
			send("c2", wire.GetStatus, "$H1"), recv("c2", 1),
			grab("w2"),
			send("w2", wire.WorkComplete, "$H1", "rescued"),
			recv("c1", 1),
		),
	},
	{
		// A requeued job goes to the tail of its priority: the job
		// submitted while it ran is handed out first.
		name: "requeue-at-tail",
		steps: seq(
			submit("c1", wire.SubmitJob, "f", "", "a"),
			send("w1", wire.CanDo, "f"),
			grab("w1"),
			submit("c1", wire.SubmitJob, "f", "", "b"),
			hangup("w1"),
			send("w2", wire.CanDo, "f"),
			grab("w2"),
			grab("w2"),
			send("w2", wire.WorkComplete, "$H1", "ra"),
			send("w2", wire.WorkComplete, "$H2", "rb"),
			recv("c1", 2),
		),
	},
	{
		// A worker holding two jobs leaves: both go back to the queue,
		// the last one it took first (gearmand requeues from the head of
		// the worker's job list); gearshard requeues them in the order
		// they were taken.
		name: "worker-disconnect-two-jobs",
		steps: seq(
			submit("c1", wire.SubmitJob, "f", "", "a"),
			submit("c1", wire.SubmitJob, "f", "", "b"),
			send("w1", wire.CanDo, "f"),
			send("w1", wire.GrabJob), send("w1", wire.GrabJob), recv("w1", 2),
			hangup("w1"),
			send("w2", wire.CanDo, "f"),
			send("w2", wire.GrabJob), send("w2", wire.GrabJob), send("w2", wire.GrabJob), recv("w2", 3),
		),
		readme: 15,
		differs: map[string]perServer{"w2": {
			gearmand:  []string{pkt(wire.JobAssign, "H2", "f", "b"), pkt(wire.JobAssign, "H1", "f", "a"), pkt(wire.NoJob)},
			gearshard: []string{pkt(wire.JobAssign, "H1", "f", "a"), pkt(wire.JobAssign, "H2", "f", "b"), pkt(wire.NoJob)},
		}},
	},
	{
		// CANT_DO / RESET_ABILITIES while holding a job of the function:
		// gearmand frees the registration and with it requeues the job
		// (at the tail); the worker's result is then an error. gearshard
		// leaves the job with the worker, whose result reaches the client.
		name: "cant-do-while-holding",
		steps: seq(
			submit("c1", wire.SubmitJob, "f", "", "x"),
			submit("c1", wire.SubmitJob, "f", "", "y"),
			send("w1", wire.CanDo, "f"),
			grab("w1"),
			send("w1", wire.CantDo, "f"),
			send("w1", wire.WorkComplete, "$H1", "r"), recv("w1", 1),
			send("w1", wire.CanDo, "f"),
			grab("w1"),
			send("w1", wire.ResetAbilities),
			send("w1", wire.WorkComplete, "$H2", "r"), recv("w1", 1),
			send("w2", wire.CanDo, "f"),
			grab("w2"), grab("w2"),
			send("w2", wire.WorkComplete, "$H1", "r1"),
			send("w2", wire.WorkComplete, "$H2", "r2"),
			recv("c1", 2),
		),
		readme: 16,
		differs: map[string]perServer{
			"c1": {
				gearmand: []string{pkt(wire.JobCreated, "H1"), pkt(wire.JobCreated, "H2"),
					pkt(wire.WorkComplete, "H1", "r1"), pkt(wire.WorkComplete, "H2", "r2")},
				gearshard: []string{pkt(wire.JobCreated, "H1"), pkt(wire.JobCreated, "H2"),
					pkt(wire.WorkComplete, "H1", "r"), pkt(wire.WorkComplete, "H2", "r")},
			},
			"w1": {
				gearmand: []string{pkt(wire.JobAssign, "H1", "f", "x"), pkt(wire.Error, "JOB_NOT_FOUND", "Job given in work result not found"),
					pkt(wire.JobAssign, "H2", "f", "y"), pkt(wire.Error, "JOB_NOT_FOUND", "Job given in work result not found")},
				gearshard: []string{pkt(wire.JobAssign, "H1", "f", "x"), "<timeout>", pkt(wire.JobAssign, "H2", "f", "y"), "<timeout>"},
			},
			"w2": {
				gearmand: []string{pkt(wire.JobAssign, "H1", "f", "x"), pkt(wire.JobAssign, "H2", "f", "y")},
				gearshard: []string{pkt(wire.NoJob), pkt(wire.NoJob),
					unasked + pkt(wire.Error, "JOB_NOT_FOUND", "Job given in work result not found"),
					unasked + pkt(wire.Error, "JOB_NOT_FOUND", "Job given in work result not found")},
			},
		},
	},
	{
		// A worker asleep before it could do anything is not woken by
		// registering a function that has work queued, only by the next
		// job. gearshard wakes it at the CAN_DO (and not again: it is
		// awake).
		name: "sleep-then-can-do",
		steps: seq(
			submit("c1", wire.SubmitJobBG, "f", "", "x"),
			send("w1", wire.PreSleep), settle("w1"),
			send("w1", wire.CanDo, "f"), quiet("w1"),
			submit("c1", wire.SubmitJobBG, "f", "", "y"),
			recv("w1", 1),
		),
		readme: 17,
		differs: map[string]perServer{"w1": {
			gearmand:  []string{pkt(wire.Noop)},
			gearshard: []string{unasked + pkt(wire.Noop), "<timeout>"},
		}},
	},
	{
		// Several requests in one write are all answered, in order.
		name: "pipelined-one-write",
		steps: seq(
			rawBytes("c1", slices.Concat(
				wire.AppendRequest(nil, wire.EchoReq, []byte("one")),
				wire.AppendRequest(nil, wire.SubmitJobBG, []byte("f"), []byte("p"), []byte("x")),
				wire.AppendRequest(nil, wire.GetStatusUnique, []byte("p")),
				wire.AppendRequest(nil, wire.OptionReq, []byte("nosuch")),
				wire.AppendRequest(nil, wire.EchoReq, []byte("two")),
			)),
			recv("c1", 5),
		),
	},
	{
		// A client that joins, by its unique, a fg job whose only client
		// left: gearmand attaches it to the abandoned job, which it then
		// drops instead of running (the client waits for ever);
		// gearshard has dropped that job already and runs a new one.
		name: "client-disconnect-then-rejoin",
		steps: seq(
			submit("c1", wire.SubmitJob, "f", "again", "x"),
			hangup("c1"),
			submit("c2", wire.SubmitJob, "f", "again", "y"),
			send("w1", wire.CanDo, "f"),
			grab("w1"),
		),
		readme: 6,
		differs: map[string]perServer{
			"c2": {
				gearmand:  []string{pkt(wire.JobCreated, "H1")},
				gearshard: []string{pkt(wire.JobCreated, "H2")},
			},
			"w1": {
				gearmand:  []string{pkt(wire.NoJob)},
				gearshard: []string{pkt(wire.JobAssign, "H2", "f", "y")},
			},
		},
	},
	{
		// The abandoned fg job never reaches a worker; gearmand keeps it
		// known to GET_STATUS until a worker would take it.
		name: "client-disconnect-queued",
		steps: seq(
			submit("c1", wire.SubmitJob, "f", "", "abandoned"),
			submit("c2", wire.SubmitJobBG, "f", "", "kept"),
			hangup("c1"),
			send("c2", wire.GetStatus, "$H1"), recv("c2", 1),
			send("w1", wire.CanDo, "f"),
			grab("w1"),
			grab("w1"),
			send("c2", wire.GetStatus, "$H1"), recv("c2", 1),
		),
		readme: 6,
		differs: map[string]perServer{"c2": {
			gearmand: []string{pkt(wire.JobCreated, "H2"),
				pkt(wire.StatusRes, "H1", "1", "0", "0", "0"), pkt(wire.StatusRes, "H1", "0", "0", "0", "0")},
			gearshard: []string{pkt(wire.JobCreated, "H2"),
				pkt(wire.StatusRes, "H1", "0", "0", "0", "0"), pkt(wire.StatusRes, "H1", "0", "0", "0", "0")},
		}},
	},
	{
		// One of two clients of a job leaves: the job runs for the other.
		name: "client-disconnect-shared",
		steps: seq(
			submit("c1", wire.SubmitJob, "f", "shared", "x"),
			submit("c2", wire.SubmitJob, "f", "shared", "x"),
			hangup("c1"),
			send("w1", wire.CanDo, "f"),
			grab("w1"),
			send("w1", wire.WorkComplete, "$H1", "r"),
			recv("c2", 1),
		),
	},
	{
		// The worker's results for a job whose client left are taken
		// without an error.
		name: "client-disconnect-running",
		steps: seq(
			submit("c1", wire.SubmitJob, "f", "", "x"),
			send("w1", wire.CanDo, "f"),
			grab("w1"),
			hangup("c1"),
			send("w1", wire.WorkData, "$H1", "d"),
			send("w1", wire.WorkStatus, "$H1", "1", "2"),
			send("w1", wire.WorkComplete, "$H1", "r"),
			settle("w1"),
			send("c2", wire.GetStatus, "$H1"), recv("c2", 1),
		),
	},
	{
		// WORK_* on unknown handles, on a queued job, and on a job another
		// worker holds: each an ERROR JOB_NOT_FOUND with its own text.
		name: "work-unknown-handle",
		steps: seq(
			send("w1", wire.WorkComplete, diffPrefix+":999999", "x"),
			send("w1", wire.WorkComplete, "bogus", "x"),
			send("w1", wire.WorkData, "bogus", "d"),
			send("w1", wire.WorkWarning, "bogus", "w"),
			send("w1", wire.WorkStatus, "bogus", "1", "2"),
			send("w1", wire.WorkFail, "bogus"),
			send("w1", wire.WorkException, "bogus", "e"),
			recv("w1", 7),
			submit("c1", wire.SubmitJob, "f", "", "x"),
			send("w1", wire.WorkComplete, "$H1", "queued"), recv("w1", 1),
			send("w2", wire.CanDo, "f"),
			grab("w2"),
			send("w1", wire.WorkComplete, "$H1", "not mine"),
			send("w1", wire.WorkFail, "$H1"),
			send("w1", wire.WorkData, "$H1", "d"),
			recv("w1", 3),
			send("w2", wire.WorkComplete, "$H1", "mine"),
			recv("c1", 1),
		),
	},
	{
		// Response types (and the unused 5, ALL_YOURS) sent as requests:
		// ERROR INVALID_COMMAND once the fields are complete, connection
		// kept. A packet with response magic: ERROR INVALID_MAGIC.
		name: "response-type-as-request",
		steps: seq(
			send("c1", wire.Noop),
			send("c1", wire.JobCreated, "H:x:1"),
			send("c1", wire.NoJob),
			send("c1", wire.EchoRes, "x"),
			send("c1", wire.Error, "CODE", "text"),
			send("c1", wire.StatusRes, "H:x:1", "1", "0", "0", "0"),
			send("c1", wire.JobAssign, "H:x:1", "f", "d"),
			send("c1", wire.OptionRes, "exceptions"),
			send("c1", wire.JobAssignUniq, "H:x:1", "f", "u", "d"),
			send("c1", wire.JobAssignAll, "H:x:1", "f", "u", "r", "d"),
			send("c1", wire.StatusResUnique, "u", "1", "0", "0", "0", "0"),
			send("c1", 5),
			send("c1", wire.AllYours),
			recv("c1", 13),
			rawBytes("c1", wire.AppendResponse(nil, wire.EchoReq, []byte("res magic"))),
			recv("c1", 1),
			send("c1", wire.EchoReq, "still open"), recv("c1", 1),
		),
	},
	{
		// SUBMIT_JOB_SCHED: gearmand does not implement it, gearshard runs
		// it at the next matching minute.
		name: "submit-job-sched",
		steps: seq(
			submit("c1", wire.SubmitJobSched, "f", "", "", "", "", "", "", "x"),
		),
		readme: 3,
		differs: map[string]perServer{"c1": {
			gearmand:  []string{pkt(wire.Error, "INVALID_COMMAND", "Command not expected")},
			gearshard: []string{pkt(wire.JobCreated, "H1")},
		}},
	},
	{
		name: "empty-function-name",
		steps: seq(
			submit("c1", wire.SubmitJobBG, "", "", "x"),
		),
		readme: 9,
		differs: map[string]perServer{"c1": {
			gearmand:  []string{pkt(wire.JobCreated, "H1")},
			gearshard: []string{pkt(wire.Error, "INVALID_FUNCTION_NAME", "Function name is empty")},
		}},
	},
	{
		// An unknown packet type: gearmand closes silently, gearshard
		// sends an ERROR first.
		name: "unknown-packet-type",
		steps: seq(
			rawBytes("c1", wire.AppendRequest(nil, 1000, []byte("x"))),
			recv("c1", 1),
		),
		readme: 5,
		differs: map[string]perServer{"c1": {
			gearmand:  []string{"<closed>"},
			gearshard: []string{pkt(wire.Error, "INVALID_COMMAND", "Invalid command"), "<closed>"},
		}},
	},
}

// TestDifferential runs every scenario against gearmand and gearshard.
func TestDifferential(t *testing.T) {
	for _, sc := range diffScenarios {
		t.Run(sc.name, func(t *testing.T) {
			if (sc.readme == 0) != (sc.differs == nil) {
				t.Fatalf("scenario %s: readme and differs go together", sc.name)
			}
			if sc.readme != 0 {
				requireDifferenceListed(t, sc.readme)
			}
			gd := runDiff(t, startGearmand(t, "--job-handle-prefix", diffPrefix), sc.steps)
			gs := runDiff(t, startServer(t, func(c *ServeCmd) { c.JobHandlePrefix = diffPrefix }), sc.steps)
			compareDiff(t, sc, gd, gs)
		})
	}
}

// requireDifferenceListed checks that the README's "Differences from
// gearmand" list has an item n.
func requireDifferenceListed(t *testing.T, n int) {
	t.Helper()
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, list, _ := strings.Cut(string(readme), "## Differences from gearmand")
	list, _, _ = strings.Cut(list, "\n## ")
	if !strings.Contains(list, "\n"+strconv.Itoa(n)+". ") {
		t.Fatalf("the README's differences list has no item %d", n)
	}
}

// transcript is what each connection received, in order.
type transcript map[string][]string

// diffRun is one script run against one server.
type diffRun struct {
	t       *testing.T
	ts      *testServer
	conns   map[string]*gstest.Conn
	hungUp  map[string]bool // closed by the script
	closed  map[string]bool // closed by the server
	out     transcript
	handles map[string]string // real handle -> "H<n>"
	real    []string          // real handles by n-1
}

var (
	// Handles are the only values that legitimately differ between the
	// servers (gearshard numbers them per shard, gearmand with one
	// counter): each distinct one becomes H<n>, in order of first
	// appearance, wherever it occurs in a field (gearmand's WORK_FAIL for
	// a WORK_EXCEPTION carries "handle\0").
	handleRe  = regexp.MustCompile(regexp.QuoteMeta(diffPrefix) + `:[0-9]+`)
	handleRef = regexp.MustCompile(`\$H([0-9]+)`)
)

// runDiff runs steps against ts and returns what each connection received.
func runDiff(t *testing.T, ts *testServer, steps []diffStep) transcript {
	t.Helper()
	r := &diffRun{t: t, ts: ts, conns: map[string]*gstest.Conn{}, hungUp: map[string]bool{},
		closed: map[string]bool{}, out: transcript{}, handles: map[string]string{}}
	for i, s := range steps {
		if r.hungUp[s.conn] {
			t.Fatalf("step %d: the script hung up %s before", i, s.conn)
		}
		if !r.closed[s.conn] { // else the transcript already ends "<closed>"
			r.step(s)
		}
	}
	// Everything left unread, within one shared quiet window.
	deadline := time.Now().Add(diffQuiet)
	for _, name := range slices.Sorted(maps.Keys(r.conns)) {
		for r.read(name, max(time.Until(deadline), time.Millisecond), unasked) {
		}
	}
	return r.out
}

func (r *diffRun) step(s diffStep) {
	switch s.op {
	case opSend:
		r.conn(s.conn).Send(s.typ, r.expand(s.fields)...)
	case opRaw:
		r.conn(s.conn).Write(s.raw)
	case opRecv:
		for range s.n {
			if !r.read(s.conn, diffTimeout, "") && !r.closed[s.conn] {
				r.record(s.conn, "<timeout>")
			}
		}
	case opQuiet:
		r.read(s.conn, diffQuiet, unasked)
	case opSettle:
		r.settle(s.conn)
	case opHangup:
		_ = r.conn(s.conn).Raw().Close()
		r.hungUp[s.conn] = true
		waitFor(r.t, "the server to drop "+s.conn, func() (bool, string) {
			got := r.ts.admin("workers")
			for _, l := range strings.Split(got, "\n") {
				if f := strings.Fields(l); len(f) >= 3 && f[2] == s.conn {
					return false, got
				}
			}
			return true, got
		})
	case opWorkers:
		// File descriptors differ and gearmand lists in hash order.
		// Connections with no id and no function are left out: the admin
		// connection, and a readiness probe gearmand may still be closing
		// (then listed for a moment, with its fd or -1); the scenarios'
		// own connections all have ids.
		var lines []string
		for _, l := range strings.Split(r.ts.admin("workers"), "\n") {
			if strings.HasSuffix(l, " - :") {
				continue
			}
			if l = fdPrefix.ReplaceAllString(l, ""); l != "" && l != "." {
				lines = append(lines, l)
			}
		}
		slices.Sort(lines)
		r.out[adminConn] = append(r.out[adminConn], lines...)
	}
}

// conn returns the named connection, dialing it (with its name as client
// id, so hangup can watch it leave "workers") when first used.
func (r *diffRun) conn(name string) *gstest.Conn {
	c, ok := r.conns[name]
	if !ok {
		c = gstest.Dial(r.t, r.ts.addr)
		c.Send(wire.SetClientID, name)
		r.conns[name] = c
	}
	return c
}

// read reads one packet from name within to and records it (with prefix).
// It reports false on a timeout or a closed connection (recorded once).
func (r *diffRun) read(name string, to time.Duration, prefix string) bool {
	if r.hungUp[name] || r.closed[name] {
		return false
	}
	c := r.conn(name)
	// A timeout mid-packet would lose bytes; on loopback a packet this
	// small arrives whole, so a quiet window ends between packets.
	c.TO = to
	p, err := c.Read()
	switch {
	case err == nil:
		r.record(name, prefix+r.format(p))
		return true
	case errText(err) == "closed":
		r.record(name, "<closed>")
		r.closed[name] = true
	}
	return false
}

// settle does an ECHO_REQ round trip on name: the server has then run all
// that name sent before. What arrives ahead of the ECHO_RES is recorded as
// unasked; the ECHO_RES is not.
func (r *diffRun) settle(name string) {
	const token = "settle"
	r.conn(name).Send(wire.EchoReq, token)
	for range 100 {
		c := r.conn(name)
		c.TO = diffTimeout
		p, err := c.Read()
		switch {
		case err != nil:
			r.record(name, "<settle: "+errText(err)+">")
			r.closed[name] = errText(err) == "closed"
			return
		case p.Type == wire.EchoRes && slices.Equal(p.Fields, []string{token}):
			return
		}
		r.record(name, unasked+r.format(p))
	}
	r.record(name, "<settle: no ECHO_RES in 100 packets>")
}

// errText names a read error as a transcript shows it.
func errText(err error) string {
	if ne, ok := errors.AsType[net.Error](err); ok && ne.Timeout() {
		return "timeout"
	}
	return "closed"
}

func (r *diffRun) record(name, line string) { r.out[name] = append(r.out[name], line) }

// format prints p with its handles normalised.
func (r *diffRun) format(p gstest.Packet) string {
	fields := make([]string, len(p.Fields))
	for i, f := range p.Fields {
		fields[i] = handleRe.ReplaceAllStringFunc(f, func(h string) string {
			if n, ok := r.handles[h]; ok {
				return n
			}
			r.real = append(r.real, h)
			r.handles[h] = "H" + strconv.Itoa(len(r.real))
			return r.handles[h]
		})
	}
	return pkt(p.Type, fields...)
}

// expand replaces $H<n> in fields by the nth handle received.
func (r *diffRun) expand(fields []string) []string {
	out := make([]string, len(fields))
	for i, f := range fields {
		out[i] = handleRef.ReplaceAllStringFunc(f, func(ref string) string {
			n, _ := strconv.Atoi(ref[2:])
			if n < 1 || n > len(r.real) {
				r.t.Fatalf("script uses %s, but only %d handles were received", ref, len(r.real))
			}
			return r.real[n-1]
		})
	}
	return out
}

// compareDiff checks the two transcripts and prints them side by side on a
// mismatch.
func compareDiff(t *testing.T, sc diffScenario, gd, gs transcript) {
	t.Helper()
	var names []string
	for _, s := range sc.steps {
		if !slices.Contains(names, s.conn) {
			names = append(names, s.conn)
		}
	}
	cite := ""
	if sc.readme != 0 {
		cite = fmt.Sprintf("README difference %d", sc.readme)
	}
	compareTranscripts(t, names, sc.differs, cite, gd, gs)
}

// compareTranscripts checks, for each named connection, that both servers
// sent the same — or, where differs documents a difference (cite says
// where), that each sent what is expected of it — and prints both side by
// side on a mismatch.
func compareTranscripts(t *testing.T, names []string, differs map[string]perServer, cite string, gd, gs transcript) {
	t.Helper()
	ok := true
	for _, n := range names {
		if d, documented := differs[n]; documented {
			ok = ok && slices.Equal(gd[n], d.gearmand) && slices.Equal(gs[n], d.gearshard)
		} else {
			ok = ok && slices.Equal(gd[n], gs[n])
		}
	}
	if ok {
		return
	}
	var b strings.Builder
	fmt.Fprintf(&b, "transcripts differ (| marks a differing line)\n")
	if cite != "" {
		fmt.Fprintf(&b, "%s: for %v each server must match its own expectation\n", cite, slices.Sorted(maps.Keys(differs)))
	}
	for _, n := range names {
		sideBySide(&b, n, "gearmand", "gearshard", gd[n], gs[n])
		if d, documented := differs[n]; documented {
			sideBySide(&b, n+" expected", "gearmand", "gearshard", d.gearmand, d.gearshard)
		}
	}
	t.Error(b.String())
}

func sideBySide(b *strings.Builder, title, left, right string, l, r []string) {
	const w = 60
	fmt.Fprintf(b, "--- %s\n    %-*s    %s\n", title, w, left, right)
	for i := range max(len(l), len(r)) {
		var a, c string
		if i < len(l) {
			a = l[i]
		}
		if i < len(r) {
			c = r[i]
		}
		mark := " "
		if i >= len(l) || i >= len(r) || a != c {
			mark = "|"
		}
		fmt.Fprintf(b, "  %s %-*s    %s\n", mark, w, a, c)
	}
}
