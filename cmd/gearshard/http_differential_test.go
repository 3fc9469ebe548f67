package main

// TestHTTPDifferential sends the same HTTP requests to the HTTP front ends
// of Debian's gearmand 1.1.20 and of gearshard (-r http), each a fresh
// server per scenario, with a worker speaking raw Gearman on each server's
// Gearman port where a job must run, and compares what every connection
// received.
//
// The HTTP side is a raw TCP client, so that the exact bytes are seen and
// the HTTP version is the script's: a step writes a request as written in
// the script, or reads one response. A response is recorded as its status
// line without the reason phrase (RFC 9112: clients ignore it), the headers
// that matter (X-Gearman-Job-Handle, Content-Length, Connection, and any
// the scenario adds) and the body. Job handles, in headers, bodies and
// packets alike, become H1, H2, ... in order of first appearance; a
// Content-Length that matches its body is recorded as the length of the
// normalised body. After the last step every HTTP connection is read for a
// short while: bytes nobody asked for are recorded ("unasked"), then
// whether the server closed the connection ("<closed>") or kept it
// ("<open>"). The Gearman side uses the steps of TestDifferential (worker
// connections w1, w2, ...), and the admin "status" reply is recorded last.
//
// Cross-connection order is only ever relied on through a reply or through
// the admin protocol: a worker grabs a job only after "status" (or
// GET_STATUS_UNIQUE) shows the HTTP request has become a job.
//
// Where gearshard deliberately differs from gearmand (README, "Differences
// from gearmand 1.1.20" or "HTTP front end"), the scenario cites the README
// and gives each server's expected transcript for the connections that
// differ. Every other scenario asserts gearmand's behaviour.
//
// gearmand's HTTP module loops forever on some malformed request lines
// ("AAA"): no scenario sends one, and every read has a deadline.

import (
	"bufio"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http/httputil"
	"net/textproto"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"gearshard/engine/queue/queuetest"
	"gearshard/netio/gstest"
	"gearshard/wire"
)

const (
	httpStatusConn = "status"    // transcript of the final admin "status"
	httpQuiet      = diffQuiet   // window of the final read of every connection
	httpWait       = diffTimeout // wait for one HTTP response
)

type httpOp uint8

const (
	hRequest  httpOp = iota // write raw request bytes on an HTTP connection
	hResponse               // read one response
	hQueued                 // poll admin "status" until a function has n jobs
	hClients                // poll GET_STATUS_UNIQUE until a unique has n clients
	hGearman                // a TestDifferential step on a Gearman connection
)

type httpStep struct {
	op      httpOp
	conn    string
	raw     string   // hRequest: the bytes
	methods []string // hRequest: the method of every request in raw
	name    string   // hQueued: function; hClients: unique
	n       int
	g       diffStep // hGearman
}

// hreq writes one request on an HTTP connection (dialed when first named).
func hreq(conn, raw string) []httpStep {
	method, _, _ := strings.Cut(raw, " ")
	return []httpStep{{op: hRequest, conn: conn, raw: raw, methods: []string{method}}}
}

// hpipe writes several requests in one write.
func hpipe(conn string, raws ...string) []httpStep {
	s := httpStep{op: hRequest, conn: conn, raw: strings.Join(raws, "")}
	for _, r := range raws {
		m, _, _ := strings.Cut(r, " ")
		s.methods = append(s.methods, m)
	}
	return []httpStep{s}
}

// hresp reads the response to the oldest unanswered request on conn.
func hresp(conn string) []httpStep { return []httpStep{{op: hResponse, conn: conn}} }

// hround sends a request and reads its response.
func hround(conn, raw string) []httpStep { return hseq(hreq(conn, raw), hresp(conn)) }

// hqueued waits until "status" shows n jobs (queued and running) of fn.
func hqueued(fn string, n int) []httpStep { return []httpStep{{op: hQueued, name: fn, n: n}} }

// hclients waits until the job with this unique has n clients waiting.
func hclients(unique string, n int) []httpStep { return []httpStep{{op: hClients, name: unique, n: n}} }

// hgear runs TestDifferential steps (send, recv, grab, settle, ...).
func hgear(parts ...[]diffStep) []httpStep {
	var out []httpStep
	for _, s := range slices.Concat(parts...) {
		out = append(out, httpStep{op: hGearman, conn: s.conn, g: s})
	}
	return out
}

func hseq(parts ...[]httpStep) []httpStep { return slices.Concat(parts...) }

// hgrabUniq sends GRAB_JOB_UNIQ on conn and reads the reply.
func hgrabUniq(conn string) []diffStep { return seq(send(conn, wire.GrabJobUniq), recv(conn, 1)) }

// hwork registers w1 for fn, grabs the one job and completes it with result.
func hwork(fn, result string) []httpStep {
	return hgear(send("w1", wire.CanDo, fn), grab("w1"), send("w1", wire.WorkComplete, "$H1", result))
}

type httpScenario struct {
	name  string
	steps []httpStep
	// headers are recorded besides X-Gearman-Job-Handle, Content-Length
	// and Connection.
	headers []string
	// readme cites where the README documents the difference the scenario
	// runs into ("": none). Then differs gives, for the connections
	// concerned, each server's expected transcript; every other connection
	// must still be the same on both.
	readme  string
	differs map[string]perServer
}

// Response transcript lines.
func hHeader(name, value string) string { return name + ": " + value }
func hBody(b string) string             { return "body " + strconv.Quote(b) }

// A background job's reply (no body) as both servers send it to HTTP/1.0.
func hBgReply(h string) []string {
	return []string{"HTTP/1.0 200", hHeader("Content-Length", "0"), hHeader("X-Gearman-Job-Handle", h), hBody("")}
}

// A foreground job's reply to HTTP/1.0 with the result.
func hFgReply(h, result string) []string {
	return []string{"HTTP/1.0 200", hHeader("Content-Length", strconv.Itoa(len(result))),
		hHeader("X-Gearman-Job-Handle", h), hBody(result)}
}

// gearshard's error reply (http.Error) to HTTP/1.0: text body, closed.
func hGsError(code int, body string) []string {
	return []string{"HTTP/1.0 " + strconv.Itoa(code), hHeader("Content-Length", strconv.Itoa(len(body))),
		hBody(body), "<closed>"}
}

const (
	httpPost5 = "POST /f HTTP/1.0\r\nContent-Length: 5\r\n\r\nhello"
	// HTTP front end section of the README.
	httpReadmeMethods   = `HTTP front end: "Other methods get 405, a missing function 404, bad header values 400"`
	httpReadmeResults   = `HTTP front end: "WORK_FAIL → 500 "job H failed"; WORK_EXCEPTION → 500 with the exception text"`
	httpReadmeWorkData  = `HTTP front end: "WORK_COMPLETE → 200 with the result, preceded by any WORK_DATA chunks (collected, not streamed)"`
	httpReadmeKeepAlive = `HTTP front end: "HTTP/1.1 keep-alive and HTTP/1.0 both work"`
	httpReadmeHead      = `HTTP front end: "A HEAD reply has the result's headers and no body (gearmand sends the body anyway)"`
	httpReadmeErrorBody = `HTTP front end: "error replies carry a one-line text body"`
	httpReadmeHost      = `HTTP front end: "an HTTP/1.1 request without Host gets 400 (gearmand takes it)"`
)

var httpScenarios = []httpScenario{
	{
		// POST: the body is the workload; the reply the result.
		name: "post-complete",
		steps: hseq(
			hreq("h1", httpPost5), hqueued("f", 1),
			hwork("f", "result"),
			hresp("h1"),
		),
	},
	{
		// GET: empty workload.
		name: "get-empty-workload",
		steps: hseq(
			hreq("h1", "GET /f HTTP/1.0\r\n\r\n"), hqueued("f", 1),
			hwork("f", "got"),
			hresp("h1"),
		),
	},
	{
		name: "put",
		steps: hseq(
			hreq("h1", "PUT /f HTTP/1.0\r\nContent-Length: 3\r\n\r\nabc"), hqueued("f", 1),
			hwork("f", "put result"),
			hresp("h1"),
		),
	},
	{
		// HEAD: empty workload, the headers of the result, no body.
		// gearmand sends the body after all (bytes nobody may read as
		// part of this response).
		name: "head",
		steps: hseq(
			hreq("h1", "HEAD /f HTTP/1.0\r\n\r\n"), hqueued("f", 1),
			hwork("f", "result"),
			hresp("h1"),
		),
		readme: httpReadmeHead,
		differs: map[string]perServer{"h1": {
			gearmand: []string{"HTTP/1.0 200", hHeader("Content-Length", "6"), hHeader("X-Gearman-Job-Handle", "H1"),
				"unasked " + strconv.Quote("result"), "<closed>"},
			gearshard: []string{"HTTP/1.0 200", hHeader("Content-Length", "6"), hHeader("X-Gearman-Job-Handle", "H1"), "<closed>"},
		}},
	},
	{
		// The function is the request target as sent, query and escapes
		// included, without every leading slash.
		name: "function-from-path",
		steps: hseq(
			hround("h1", "GET /a/b HTTP/1.0\r\nX-Gearman-Background: true\r\n\r\n"),
			hround("h2", "GET /f%20g HTTP/1.0\r\nX-Gearman-Background: true\r\n\r\n"),
			hround("h3", "GET /q?x=1 HTTP/1.0\r\nX-Gearman-Background: true\r\n\r\n"),
			hround("h4", "GET //dbl HTTP/1.0\r\nX-Gearman-Background: true\r\n\r\n"),
		),
	},
	{
		// Header names and the values true/high/low in any case.
		name: "header-case",
		steps: hseq(
			hround("h1", "POST /f HTTP/1.0\r\nx-gearman-background: TRUE\r\ncontent-length: 1\r\n\r\nn"),
			hround("h2", "POST /f HTTP/1.0\r\nX-GEARMAN-BACKGROUND: True\r\nX-GEARMAN-PRIORITY: High\r\nContent-Length: 1\r\n\r\nh"),
			hgear(send("w1", wire.CanDo, "f"), grab("w1"), grab("w1")),
		),
	},
	{
		// X-Gearman-Unique is the job's unique: the worker sees it, and a
		// second request with it joins the job and gets the same reply.
		name: "unique-header",
		steps: hseq(
			hreq("h1", "POST /f HTTP/1.0\r\nX-Gearman-Unique: u1\r\nContent-Length: 5\r\n\r\nfirst"),
			hqueued("f", 1),
			hreq("h2", "POST /f HTTP/1.0\r\nX-Gearman-Unique: u1\r\nContent-Length: 6\r\n\r\nsecond"),
			hclients("u1", 2),
			hgear(send("w1", wire.CanDo, "f"), hgrabUniq("w1"), send("w1", wire.WorkComplete, "$H1", "shared"),
				hgrabUniq("w1")),
			hresp("h1"), hresp("h2"),
		),
	},
	{
		// An HTTP request and a binary client with one unique share the
		// job (README, HTTP front end: "an HTTP and a binary submission
		// with one unique key coalesce").
		name: "unique-shared-with-binary-client",
		steps: hseq(
			hgear(submit("c1", wire.SubmitJob, "f", "u2", "binary")),
			hreq("h1", "POST /f HTTP/1.0\r\nX-Gearman-Unique: u2\r\nContent-Length: 4\r\n\r\nhttp"),
			hclients("u2", 2),
			hgear(send("w1", wire.CanDo, "f"), hgrabUniq("w1"), send("w1", wire.WorkComplete, "$H1", "both"),
				recv("c1", 1)),
			hresp("h1"),
		),
	},
	{
		// A unique over 64 bytes: gearmand answers 200 with the ERROR
		// packet's code as the handle; gearshard 400.
		name:   "unique-too-long",
		steps:  hround("h1", "GET /f HTTP/1.0\r\nX-Gearman-Unique: "+strings.Repeat("u", 65)+"\r\n\r\n"),
		readme: httpReadmeMethods,
		differs: map[string]perServer{"h1": {
			gearmand: []string{"HTTP/1.0 200", hHeader("Content-Length", "0"),
				hHeader("X-Gearman-Job-Handle", "ARGUMENT_TOO_LARGE"), hBody(""), "<closed>"},
			gearshard: hGsError(400, "bad X-Gearman-Unique: at most 64 bytes, no NUL\n"),
		}},
	},
	{
		// Without X-Gearman-Unique gearmand submits the unique "-": the
		// workload is the key, so requests with the same body share a job
		// (empty workloads never do), and workers see "-".
		name: "default-unique",
		steps: hseq(
			hround("h1", "POST /f HTTP/1.0\r\nX-Gearman-Background: true\r\nContent-Length: 4\r\n\r\nsame"),
			hround("h2", "POST /f HTTP/1.0\r\nX-Gearman-Background: true\r\nContent-Length: 4\r\n\r\nsame"),
			hround("h3", "GET /f HTTP/1.0\r\nX-Gearman-Background: true\r\n\r\n"),
			hround("h4", "GET /f HTTP/1.0\r\nX-Gearman-Background: true\r\n\r\n"),
			hgear(send("w1", wire.CanDo, "f"), hgrabUniq("w1")),
		),
	},
	{
		// X-Gearman-Background: true answers at once with the handle; the
		// job runs later and its result goes nowhere.
		name: "background",
		steps: hseq(
			hround("h1", "POST /f HTTP/1.0\r\nX-Gearman-Background: true\r\nContent-Length: 2\r\n\r\nbg"),
			hwork("f", "lost"),
			hgear(settle("w1"), grab("w1")),
		),
	},
	{
		// Background jobs of every priority: the worker takes high,
		// normal, low.
		name: "priority-background",
		steps: hseq(
			hround("h1", "POST /f HTTP/1.0\r\nX-Gearman-Background: true\r\nX-Gearman-Priority: low\r\nContent-Length: 3\r\n\r\nlow"),
			hround("h2", "POST /f HTTP/1.0\r\nX-Gearman-Background: true\r\nContent-Length: 6\r\n\r\nnormal"),
			hround("h3", "POST /f HTTP/1.0\r\nX-Gearman-Background: true\r\nX-Gearman-Priority: high\r\nContent-Length: 4\r\n\r\nhigh"),
			hgear(send("w1", wire.CanDo, "f"), grab("w1"), grab("w1"), grab("w1"), grab("w1")),
		),
	},
	{
		// Foreground jobs of every priority: the worker takes high,
		// normal, low, and each request gets its own result.
		name: "priority-foreground",
		steps: hseq(
			hreq("h1", "POST /f HTTP/1.0\r\nX-Gearman-Priority: low\r\nContent-Length: 3\r\n\r\nlow"), hqueued("f", 1),
			hreq("h2", "POST /f HTTP/1.0\r\nContent-Length: 6\r\n\r\nnormal"), hqueued("f", 2),
			hreq("h3", "POST /f HTTP/1.0\r\nX-Gearman-Priority: high\r\nContent-Length: 4\r\n\r\nhigh"), hqueued("f", 3),
			hgear(send("w1", wire.CanDo, "f"),
				grab("w1"), send("w1", wire.WorkComplete, "$H1", "r-high"),
				grab("w1"), send("w1", wire.WorkComplete, "$H2", "r-normal"),
				grab("w1"), send("w1", wire.WorkComplete, "$H3", "r-low")),
			hresp("h1"), hresp("h2"), hresp("h3"),
		),
	},
	{
		// gearmand answers 200 with X-Gearman-Command: WORK_FAIL and a
		// handle one byte short; gearshard 500.
		name: "work-fail",
		steps: hseq(
			hreq("h1", "GET /f HTTP/1.0\r\n\r\n"), hqueued("f", 1),
			hgear(send("w1", wire.CanDo, "f"), grab("w1"), send("w1", wire.WorkFail, "$H1")),
			hresp("h1"),
		),
		readme: httpReadmeResults,
		differs: map[string]perServer{"h1": {
			gearmand: []string{"HTTP/1.0 200", hHeader("Content-Length", "0"),
				hHeader("X-Gearman-Job-Handle", diffPrefix+":"), hBody(""), "<closed>"},
			gearshard: []string{"HTTP/1.0 500", hHeader("Content-Length", "14"),
				hHeader("X-Gearman-Job-Handle", "H1"), hBody("job H1 failed\n"), "<closed>"},
		}},
	},
	{
		// The HTTP client has not asked for exceptions: gearmand turns
		// WORK_EXCEPTION into WORK_FAIL, answered 200 as above (the
		// handle whole this time: WORK_FAIL carries "handle\0", README
		// item 8); gearshard 500 with the text.
		name: "work-exception",
		steps: hseq(
			hreq("h1", "GET /f HTTP/1.0\r\n\r\n"), hqueued("f", 1),
			hgear(send("w1", wire.CanDo, "f"), grab("w1"), send("w1", wire.WorkException, "$H1", "boom")),
			hresp("h1"),
		),
		readme: httpReadmeResults,
		differs: map[string]perServer{"h1": {
			gearmand: []string{"HTTP/1.0 200", hHeader("Content-Length", "0"),
				hHeader("X-Gearman-Job-Handle", "H1"), hBody(""), "<closed>"},
			gearshard: []string{"HTTP/1.0 500", hHeader("Content-Length", "33"),
				hHeader("X-Gearman-Job-Handle", "H1"), hBody("job H1 raised an exception: boom\n"), "<closed>"},
		}},
	},
	{
		// WORK_DATA before WORK_COMPLETE: gearmand keeps each chunk but
		// its last byte and copies them over the start of its header
		// instead of after it, then sends as many bytes more as it
		// copied (the header's NUL and the byte after it, zero in a
		// fresh server); the Content-Length counts the result only. gearshard sends the chunks and the
		// result.
		name: "work-data",
		steps: hseq(
			hreq("h1", httpPost5), hqueued("f", 1),
			hgear(send("w1", wire.CanDo, "f"), grab("w1"),
				send("w1", wire.WorkData, "$H1", "d1"),
				send("w1", wire.WorkData, "$H1", "d2"),
				send("w1", wire.WorkComplete, "$H1", "result")),
			hresp("h1"),
		),
		readme: httpReadmeWorkData,
		differs: map[string]perServer{"h1": {
			gearmand: []string{`bad status line "ddTP/1.0 200 OK"`, hHeader("Content-Length", "6"),
				hHeader("X-Gearman-Job-Handle", "H1"), hBody("\x00\x00resu"), "unasked " + strconv.Quote("lt"), "<closed>"},
			gearshard: append(hFgReply("H1", "d1d2result"), "<closed>"),
		}},
	},
	{
		// Both name the reply's packet in X-Gearman-Command.
		name:    "x-gearman-command",
		headers: []string{"X-Gearman-Command"},
		steps: hseq(
			hreq("h1", httpPost5), hqueued("f", 1),
			hwork("f", "result"),
			hresp("h1"),
			hround("h2", "GET /f HTTP/1.0\r\nX-Gearman-Background: true\r\n\r\n"),
		),
	},
	{
		// No function name. The same code on both; gearshard's reply
		// has a text body, gearmand's none.
		name:   "missing-function",
		steps:  hround("h1", "GET / HTTP/1.0\r\n\r\n"),
		readme: httpReadmeErrorBody,
		differs: map[string]perServer{"h1": {
			gearmand:  []string{"HTTP/1.0 404", hHeader("Content-Length", "0"), hBody(""), "<closed>"},
			gearshard: hGsError(404, "no function: the path is /FUNCTION\n"),
		}},
	},
	{
		// HEAD / makes gearmand echo (ECHO_REQ) and answer 200 with a
		// handle "(null)"; gearshard 404 as for any method.
		name:   "missing-function-head",
		steps:  hround("h1", "HEAD / HTTP/1.0\r\n\r\n"),
		readme: httpReadmeMethods,
		differs: map[string]perServer{"h1": {
			gearmand: []string{"HTTP/1.0 200", hHeader("Content-Length", "0"),
				hHeader("X-Gearman-Job-Handle", "(null)"), "<closed>"},
			gearshard: []string{"HTTP/1.0 404", hHeader("Content-Length", "35"), "<closed>"},
		}},
	},
	{
		// DELETE: gearmand closes without a reply, gearshard 405.
		name:   "method-delete",
		steps:  hround("h1", "DELETE /f HTTP/1.0\r\n\r\n"),
		readme: httpReadmeMethods,
		differs: map[string]perServer{"h1": {
			gearmand:  []string{"<closed>"},
			gearshard: hGsError(405, "method not allowed: use GET, HEAD, POST or PUT\n"),
		}},
	},
	{
		// TRACE: gearmand's module means to echo the request but sends
		// nothing and keeps the connection; gearshard 405.
		name:   "method-trace",
		steps:  hround("h1", "TRACE /f HTTP/1.0\r\n\r\n"),
		readme: httpReadmeMethods,
		differs: map[string]perServer{"h1": {
			gearmand:  []string{"<timeout>", "<open>"},
			gearshard: hGsError(405, "method not allowed: use GET, HEAD, POST or PUT\n"),
		}},
	},
	{
		// An unknown priority: gearmand submits at normal priority,
		// gearshard refuses it.
		name:   "bad-priority",
		steps:  hround("h1", "POST /f HTTP/1.0\r\nX-Gearman-Background: true\r\nX-Gearman-Priority: urgent\r\nContent-Length: 1\r\n\r\nx"),
		readme: httpReadmeMethods,
		differs: map[string]perServer{
			"h1": {
				gearmand:  append(hBgReply("H1"), "<closed>"),
				gearshard: hGsError(400, "bad X-Gearman-Priority: high, normal or low\n"),
			},
			httpStatusConn: {gearmand: []string{"f\t1\t0\t0"}, gearshard: nil},
		},
	},
	{
		// HTTP/1.0 closes after the reply: a second request on the
		// connection is not answered.
		name: "http10-two-requests",
		steps: hseq(
			hround("h1", "GET /f HTTP/1.0\r\nX-Gearman-Background: true\r\n\r\n"),
			hround("h1", "GET /f HTTP/1.0\r\nX-Gearman-Background: true\r\n\r\n"),
		),
	},
	{
		// HTTP/1.0 asking for keep-alive: gearmand parses the header but
		// closes all the same (its keep-alive code is disabled);
		// gearshard keeps the connection.
		name: "http10-keep-alive",
		steps: hseq(
			hround("h1", "GET /f HTTP/1.0\r\nConnection: Keep-Alive\r\nX-Gearman-Background: true\r\n\r\n"),
			hround("h1", "GET /f HTTP/1.0\r\nConnection: Keep-Alive\r\nX-Gearman-Background: true\r\n\r\n"),
		),
		readme: httpReadmeKeepAlive,
		differs: map[string]perServer{
			"h1": {
				gearmand: append(hBgReply("H1"), "<closed>"),
				gearshard: slices.Concat(
					[]string{"HTTP/1.0 200", hHeader("Connection", "keep-alive"), hHeader("Content-Length", "0"),
						hHeader("X-Gearman-Job-Handle", "H1"), hBody("")},
					[]string{"HTTP/1.0 200", hHeader("Connection", "keep-alive"), hHeader("Content-Length", "0"),
						hHeader("X-Gearman-Job-Handle", "H2"), hBody("")},
					[]string{"<open>"}),
			},
			httpStatusConn: {gearmand: []string{"f\t1\t0\t0"}, gearshard: []string{"f\t2\t0\t0"}},
		},
	},
	{
		// HTTP/1.1: gearmand answers HTTP/1.0 and closes; gearshard keeps
		// the connection for the next request, whose job runs.
		name: "http11-keep-alive",
		steps: hseq(
			hreq("h1", "POST /f HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nfirst"), hqueued("f", 1),
			hwork("f", "r1"),
			hresp("h1"),
			hround("h1", "POST /f HTTP/1.1\r\nHost: x\r\nX-Gearman-Background: true\r\nContent-Length: 6\r\n\r\nsecond"),
			hgear(grab("w1")),
		),
		readme: httpReadmeKeepAlive,
		differs: map[string]perServer{
			"h1": {
				gearmand: append(hFgReply("H1", "r1"), "<closed>"),
				gearshard: slices.Concat(
					[]string{"HTTP/1.1 200", hHeader("Content-Length", "2"), hHeader("X-Gearman-Job-Handle", "H1"), hBody("r1")},
					[]string{"HTTP/1.1 200", hHeader("Content-Length", "0"), hHeader("X-Gearman-Job-Handle", "H2"), hBody("")},
					[]string{"<open>"}),
			},
			"w1": {
				gearmand:  []string{pkt(wire.JobAssign, "H1", "f", "first"), pkt(wire.NoJob)},
				gearshard: []string{pkt(wire.JobAssign, "H1", "f", "first"), pkt(wire.JobAssign, "H2", "f", "second")},
			},
			httpStatusConn: {gearmand: []string{"f\t0\t0\t1"}, gearshard: []string{"f\t1\t1\t1"}},
		},
	},
	{
		// HTTP/1.1 without Host: gearmand takes it; gearshard (Go's
		// net/http) answers 400 and closes.
		name:   "http11-no-host",
		steps:  hround("h1", "GET /f HTTP/1.1\r\nX-Gearman-Background: true\r\n\r\n"),
		readme: httpReadmeHost,
		differs: map[string]perServer{
			"h1": {
				gearmand: []string{"HTTP/1.0 200", hHeader("Content-Length", "0"), hHeader("X-Gearman-Job-Handle", "H1"),
					hBody(""), "<closed>"},
				gearshard: []string{"HTTP/1.1 400", hHeader("Connection", "close"),
					hBody("400 Bad Request: missing required Host header"), "<closed>"},
			},
			"status": {gearmand: []string{"f\t1\t0\t0"}, gearshard: nil},
		},
	},
	{
		// Two HTTP/1.1 requests in one write: gearmand submits both
		// jobs, answers the first and closes; gearshard answers both.
		name: "http11-pipelined",
		steps: hseq(
			hpipe("h1",
				"GET /f HTTP/1.1\r\nHost: x\r\nX-Gearman-Background: true\r\n\r\n",
				"GET /f HTTP/1.1\r\nHost: x\r\nX-Gearman-Background: true\r\n\r\n"),
			hresp("h1"), hresp("h1"),
		),
		readme: httpReadmeKeepAlive,
		differs: map[string]perServer{"h1": {
			gearmand: append(hBgReply("H1"), "<closed>"),
			gearshard: slices.Concat(
				[]string{"HTTP/1.1 200", hHeader("Content-Length", "0"), hHeader("X-Gearman-Job-Handle", "H1"), hBody("")},
				[]string{"HTTP/1.1 200", hHeader("Content-Length", "0"), hHeader("X-Gearman-Job-Handle", "H2"), hBody("")},
				[]string{"<open>"}),
		}},
	},
}

// TestHTTPDifferential runs every scenario against gearmand and gearshard.
func TestHTTPDifferential(t *testing.T) {
	for _, sc := range httpScenarios {
		t.Run(sc.name, func(t *testing.T) {
			if (sc.readme == "") != (sc.differs == nil) {
				t.Fatalf("scenario %s: readme and differs go together", sc.name)
			}
			if sc.readme != "" {
				requireReadmeSays(t, sc.readme)
			}
			gd := runHTTP(t, startGearmandHTTP(t), sc)
			gs := runHTTP(t, startServer(t, func(c *ServeCmd) {
				c.JobHandlePrefix = diffPrefix
				c.Protocol = []string{"http"}
				c.HTTPPort = 0
			}), sc)
			compareHTTP(t, sc, gd, gs)
		})
	}
}

// requireReadmeSays checks that the README still says the quoted part of
// cite (the text between its first and last double quote), line breaks,
// indentation and Markdown code marks aside.
func requireReadmeSays(t *testing.T, cite string) {
	t.Helper()
	quote := cite[strings.IndexByte(cite, '"')+1 : strings.LastIndexByte(cite, '"')]
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	flat := func(s string) string { return strings.Join(strings.Fields(strings.ReplaceAll(s, "`", "")), " ") }
	if !strings.Contains(flat(string(readme)), flat(quote)) {
		t.Fatalf("the README no longer says %q", quote)
	}
}

// startGearmandHTTP starts gearmand with its HTTP module on a free port. A
// port taken between FreePort and gearmand's bind leaves gearmand retrying
// the bind: then another gearmand is tried on another port (the first is
// killed when the test ends).
func startGearmandHTTP(t *testing.T) *testServer {
	t.Helper()
	for range 3 {
		port := queuetest.FreePort(t)
		ts := startGearmand(t, "--job-handle-prefix", diffPrefix, "-r", "http", "--http-port", strconv.Itoa(port))
		ts.httpAddr = net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		deadline := time.Now().Add(5 * time.Second)
		for time.Now().Before(deadline) {
			c, err := net.DialTimeout("tcp", ts.httpAddr, time.Second)
			if err == nil {
				c.Close()
				return ts
			}
			time.Sleep(5 * time.Millisecond)
		}
		t.Logf("gearmand's HTTP port %d did not open; trying another", port)
	}
	t.Fatal("gearmand's HTTP module did not listen on any of 3 ports")
	return nil
}

// httpConn is one HTTP client connection.
type httpConn struct {
	c       net.Conn
	r       *bufio.Reader
	pending []string // methods of requests not yet answered
}

// httpRun is one scenario run against one server: the Gearman side is a
// diffRun, whose handle numbering the HTTP side shares.
type httpRun struct {
	*diffRun
	sc   httpScenario
	hc   map[string]*httpConn
	poll *gstest.Conn // GET_STATUS_UNIQUE polling, not recorded
}

// runHTTP runs sc against ts and returns what each connection received.
func runHTTP(t *testing.T, ts *testServer, sc httpScenario) transcript {
	t.Helper()
	if ts.httpAddr == "" {
		t.Fatal("the server has no HTTP front end address")
	}
	r := &httpRun{
		diffRun: &diffRun{t: t, ts: ts, conns: map[string]*gstest.Conn{}, hungUp: map[string]bool{},
			closed: map[string]bool{}, out: transcript{}, handles: map[string]string{}},
		sc: sc, hc: map[string]*httpConn{},
	}
	for i, s := range sc.steps {
		switch s.op {
		case hGearman:
			if r.hungUp[s.conn] {
				t.Fatalf("step %d: the script hung up %s before", i, s.conn)
			}
			if !r.closed[s.conn] {
				r.step(s.g)
			}
		case hRequest:
			if !r.closed[s.conn] {
				r.request(s)
			}
		case hResponse:
			if !r.closed[s.conn] {
				r.response(s.conn)
			}
		case hQueued:
			r.waitQueued(s.name, s.n)
		case hClients:
			r.waitClients(s.name, s.n)
		}
	}
	// Everything left unread, within one shared quiet window.
	deadline := time.Now().Add(httpQuiet)
	for _, name := range slices.Sorted(maps.Keys(r.hc)) {
		if !r.closed[name] {
			r.drainHTTP(name, deadline)
		}
	}
	for _, name := range slices.Sorted(maps.Keys(r.conns)) {
		for r.read(name, max(time.Until(deadline), time.Millisecond), unasked) {
		}
	}
	for _, l := range strings.Split(ts.admin("status"), "\n") {
		if l != "" && l != "." {
			r.out[httpStatusConn] = append(r.out[httpStatusConn], l)
		}
	}
	slices.Sort(r.out[httpStatusConn])
	return r.out
}

// httpConn returns the named HTTP connection, dialing it when first used.
func (r *httpRun) httpConn(name string) *httpConn {
	hc, ok := r.hc[name]
	if !ok {
		c, err := net.DialTimeout("tcp", r.ts.httpAddr, 5*time.Second)
		if err != nil {
			r.t.Fatalf("dial HTTP %s: %v", r.ts.httpAddr, err)
		}
		r.t.Cleanup(func() { c.Close() })
		hc = &httpConn{c: c, r: bufio.NewReader(c)}
		r.hc[name] = hc
	}
	return hc
}

func (r *httpRun) request(s httpStep) {
	hc := r.httpConn(s.conn)
	_ = hc.c.SetWriteDeadline(time.Now().Add(httpWait))
	if _, err := hc.c.Write([]byte(s.raw)); err != nil {
		// The server closed the connection (a reset): as a read would
		// find it.
		r.record(s.conn, "<closed>")
		r.closed[s.conn] = true
		return
	}
	hc.pending = append(hc.pending, s.methods...)
}

// endRead records how a read ended early: the server closed the
// connection, or nothing (more) came in time.
func (r *httpRun) endRead(name string, err error) {
	if errText(err) == "closed" {
		r.record(name, "<closed>")
		r.closed[name] = true
		return
	}
	r.record(name, "<timeout>")
}

// response reads one response on name and records it.
func (r *httpRun) response(name string) {
	hc := r.httpConn(name)
	method := ""
	if len(hc.pending) > 0 {
		method, hc.pending = hc.pending[0], hc.pending[1:]
	}
	_ = hc.c.SetReadDeadline(time.Now().Add(httpWait))
	line, err := hc.r.ReadString('\n')
	if err != nil {
		if line != "" {
			r.record(name, "partial "+strconv.Quote(line))
		}
		r.endRead(name, err)
		return
	}
	line = strings.TrimRight(line, "\r\n")
	code := 0
	if v, rest, ok := strings.Cut(line, " "); ok && strings.HasPrefix(v, "HTTP/") && len(rest) >= 3 {
		code, _ = strconv.Atoi(rest[:3])
		if code >= 100 {
			r.record(name, v+" "+rest[:3])
		}
	}
	if code < 100 {
		r.record(name, "bad status line "+strconv.Quote(line))
	}
	var lines []string
	headers := map[string]string{}
	for {
		l, err := hc.r.ReadString('\n')
		if err != nil {
			slices.Sort(lines)
			r.out[name] = append(r.out[name], lines...)
			if l != "" {
				r.record(name, "partial "+strconv.Quote(l))
			}
			r.endRead(name, err)
			return
		}
		l = strings.TrimRight(l, "\r\n")
		if l == "" {
			break
		}
		k, v, _ := strings.Cut(l, ":")
		k, v = textproto.CanonicalMIMEHeaderKey(strings.TrimSpace(k)), strings.TrimSpace(v)
		headers[k] = v
		if slices.Contains([]string{"X-Gearman-Job-Handle", "Content-Length", "Connection", "Transfer-Encoding"}, k) ||
			slices.Contains(r.sc.headers, k) {
			lines = append(lines, hHeader(k, r.normaliseHandles(v)))
		}
	}
	// Body: none for HEAD; else by Transfer-Encoding, Content-Length, or
	// up to the close.
	var body []byte
	switch {
	case method == "HEAD" || code/100 == 1 || code == 204 || code == 304:
	case strings.EqualFold(headers["Transfer-Encoding"], "chunked"):
		body, err = io.ReadAll(httputil.NewChunkedReader(hc.r))
	case headers["Content-Length"] != "":
		n, perr := strconv.Atoi(headers["Content-Length"])
		if perr != nil || n < 0 || n > 1<<20 {
			r.t.Fatalf("%s: Content-Length %q", name, headers["Content-Length"])
		}
		body = make([]byte, n)
		var got int
		got, err = io.ReadFull(hc.r, body)
		body = body[:got]
	default:
		body, err = io.ReadAll(hc.r)
	}
	normBody := r.normaliseHandles(string(body))
	// A Content-Length that counts the body is recorded as the
	// normalised body's (handles differ in length between servers).
	if cl := headers["Content-Length"]; cl == strconv.Itoa(len(body)) && method != "HEAD" {
		for i, l := range lines {
			if l == hHeader("Content-Length", cl) {
				lines[i] = hHeader("Content-Length", strconv.Itoa(len(normBody)))
			}
		}
	}
	slices.Sort(lines)
	r.out[name] = append(r.out[name], lines...)
	if method != "HEAD" {
		r.record(name, hBody(normBody))
	}
	if err != nil {
		r.endRead(name, err)
	}
}

// drainHTTP records what else arrives on name before deadline, then
// whether the server closed the connection or kept it.
func (r *httpRun) drainHTTP(name string, deadline time.Time) {
	hc := r.hc[name]
	_ = hc.c.SetReadDeadline(deadline)
	got, err := io.ReadAll(hc.r)
	if len(got) > 0 {
		r.record(name, "unasked "+strconv.Quote(r.normaliseHandles(string(got))))
	}
	if errText(err) == "timeout" {
		r.record(name, "<open>")
		return
	}
	r.record(name, "<closed>")
	r.closed[name] = true
}

// normaliseHandles replaces job handles in s by H<n>, as diffRun.format does for
// packet fields.
func (r *diffRun) normaliseHandles(s string) string {
	return handleRe.ReplaceAllStringFunc(s, func(h string) string {
		if n, ok := r.handles[h]; ok {
			return n
		}
		r.real = append(r.real, h)
		r.handles[h] = "H" + strconv.Itoa(len(r.real))
		return r.handles[h]
	})
}

// waitQueued polls "status" until fn has n jobs, queued and running.
func (r *httpRun) waitQueued(fn string, n int) {
	waitFor(r.t, fmt.Sprintf("%d jobs of %s in status", n, fn), func() (bool, string) {
		got := r.ts.admin("status")
		for _, l := range strings.Split(got, "\n") {
			if f := strings.Split(l, "\t"); len(f) == 4 && f[0] == fn {
				return f[1] == strconv.Itoa(n), got
			}
		}
		return false, got
	})
}

// waitClients polls GET_STATUS_UNIQUE until the job has n clients waiting.
func (r *httpRun) waitClients(unique string, n int) {
	if r.poll == nil {
		r.poll = gstest.Dial(r.t, r.ts.addr)
	}
	waitFor(r.t, fmt.Sprintf("%d clients of unique %q", n, unique), func() (bool, string) {
		r.poll.Send(wire.GetStatusUnique, unique)
		p := r.poll.Expect(wire.StatusResUnique)
		return len(p.Fields) == 6 && p.Fields[5] == strconv.Itoa(n), p.String()
	})
}

// compareHTTP checks the two transcripts and prints them side by side on
// a mismatch.
func compareHTTP(t *testing.T, sc httpScenario, gd, gs transcript) {
	t.Helper()
	var names []string
	for _, s := range sc.steps {
		if s.conn != "" && !slices.Contains(names, s.conn) {
			names = append(names, s.conn)
		}
	}
	names = append(names, httpStatusConn)
	cite := ""
	if sc.readme != "" {
		cite = "README, " + sc.readme
	}
	compareTranscripts(t, names, sc.differs, cite, gd, gs)
}
