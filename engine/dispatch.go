package engine

import (
	"bytes"

	"gearshard/wire"
)

// Handle runs one decoded binary packet from sess. Replies, and packets for
// other sessions, are appended to their outboxes and listed on t.
// Event-loop only: the caller is the loop that owns sess.
func (e *Engine) Handle(t *Turn, sess *Session, p *wire.Packet) {
	if p.Magic != wire.Request {
		t.sendError(sess, "INVALID_MAGIC", "Request magic expected")
		return
	}
	switch p.Type {
	case wire.SubmitJob, wire.SubmitJobBG, wire.SubmitJobHigh, wire.SubmitJobHighBG,
		wire.SubmitJobLow, wire.SubmitJobLowBG, wire.SubmitJobEpoch, wire.SubmitJobSched,
		wire.SubmitReduceJob, wire.SubmitReduceJobBackground:
		e.Submit(t, sess, p)
	case wire.GrabJob:
		e.Grab(t, sess, GrabPlain)
	case wire.GrabJobUniq:
		e.Grab(t, sess, GrabUniq)
	case wire.GrabJobAll:
		e.Grab(t, sess, GrabAll)
	case wire.PreSleep:
		e.PreSleep(t, sess)
	case wire.WorkData, wire.WorkWarning, wire.WorkStatus, wire.WorkComplete, wire.WorkFail, wire.WorkException:
		e.WorkResult(t, sess, p)
	case wire.CanDo:
		if checkFunctionName(t, sess, p.Field[0]) {
			e.CanDo(t, sess, p.Field[0], 0)
		}
	case wire.CanDoTimeout:
		if !checkFunctionName(t, sess, p.Field[0]) {
			return
		}
		timeout, ok := parseTimeout(p.Field[1])
		if !ok {
			t.sendError(sess, "INVALID_ARGUMENT", "CAN_DO_TIMEOUT needs a function and a timeout in milliseconds")
			return
		}
		e.CanDo(t, sess, p.Field[0], timeout)
	case wire.CantDo:
		e.CantDo(sess, p.Field[0])
	case wire.ResetAbilities:
		e.ResetAbilities(sess)
	case wire.GetStatus:
		e.GetStatus(t, sess, p.Field[0])
	case wire.GetStatusUnique:
		e.GetStatusUnique(t, sess, p.Field[0])
	case wire.EchoReq:
		t.send(sess, wire.EchoRes, p.Field[0])
	case wire.SetClientID:
		id := string(clientID(p.Field[0]))
		sess.clientID.Store(&id)
	case wire.OptionReq:
		// gearmand reads the option as a C string: a NUL ends it.
		name, _, _ := bytes.Cut(p.Field[0], []byte{0})
		if bytes.EqualFold(name, []byte("exceptions")) {
			sess.exceptions.Store(true)
			t.send(sess, wire.OptionRes, p.Field[0])
			return
		}
		t.sendError(sess, "UNKNOWN_OPTION", "Server does not recognize given option")
	default:
		// Responses sent as requests, the unused type 5 and ALL_YOURS,
		// which gearmand does not implement either.
		t.sendError(sess, "INVALID_COMMAND", "Command not expected")
	}
}

// SendProtocolError appends the ERROR packet for a framing error; the
// caller then closes the connection.
func (t *Turn) SendProtocolError(sess *Session, err *wire.ProtocolError) {
	t.sendError(sess, err.Code, err.Text)
}

// maxClientID is gearmand's: it keeps an id in a 128-byte C string, so
// `workers` shows at most 127 bytes of it, up to its first NUL. Keeping the
// whole id would let one connection make every `workers` reply megabytes.
const maxClientID = 127

func clientID(id []byte) []byte {
	id = id[:min(len(id), maxClientID)]
	if i := bytes.IndexByte(id, 0); i >= 0 {
		id = id[:i]
	}
	return id
}
