package engine

import (
	"bytes"
	"testing"

	"gearshard/wire"
)

// FuzzAdminCommand runs any admin line against an engine holding jobs and
// workers: no panic, and the reply is one whole answer — a line, or a
// listing that ends with ".".
func FuzzAdminCommand(f *testing.F) {
	for _, s := range []string{"status", "workers", "maxqueue f 1 2 3", "cancel job H:t:1", "show jobs",
		"show unique jobs", "create function x", "drop function f", "prioritystatus", "jobs", "clients",
		"", " ", "SHOW  UNIQUE   JOBS", "maxqueue f -5", "cancel job H:t:99999999999999999999", "verbose x y z w v u"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, line string) {
		e := newTestEngine(t, 2, nil)
		var tr Turn
		c := e.NewSession(1, "127.0.0.1", nil)
		w := e.NewSession(2, "127.0.0.1", nil)
		e.Handle(&tr, w, req(wire.CanDo, "f"))
		e.Handle(&tr, c, req(wire.SubmitJobBG, "f", "u", "data"))
		e.Handle(&tr, c, req(wire.SubmitJob, "g", "", "fg"))
		c.discardOutput()
		a := NewAdmin(e, AdminConfig{Version: "v", PID: 1, Shutdown: func(bool) {}})
		adm := e.NewSession(3, "127.0.0.1", nil)
		a.Run(&tr, adm, []byte(line))
		out := adm.takeOutput()
		if len(out) == 0 || out[len(out)-1] != '\n' {
			t.Fatalf("%q: reply %q is not whole", line, out)
		}
		if !bytes.HasPrefix(out, []byte("OK")) && !bytes.HasPrefix(out, []byte("ERR")) && !bytes.HasSuffix(out, []byte(".\n")) {
			t.Fatalf("%q: reply %q is neither a line nor a listing", line, out)
		}
	})
}
