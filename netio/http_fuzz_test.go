package netio

import (
	"errors"
	"net/http"
	"reflect"
	"strings"
	"testing"

	"gearshard/engine"
	"gearshard/wire"
)

// The seed corpus lives in testdata/fuzz/FuzzMapRequest/ (netio/testdata
// is a symlink to the top-level testdata/netio/, so crashers found by
// `go test -fuzz` land there too).

// FuzzMapRequest maps an arbitrary request line and X-Gearman-* headers to
// a job: no panic; an accepted request names a usable job; a refused one
// carries a 4xx status; mapping is deterministic.
func FuzzMapRequest(f *testing.F) {
	f.Add("POST", "/reverse", "", "", "")
	f.Add("POST", "/reverse", "", "true", "low")
	f.Add("GET", "/fn", "u1", "false", "HIGH")
	f.Add("AAA", "", "", "", "")
	f.Add("PUT", "/", "", "", "")
	f.Add("HEAD", "//a\x00b", strings.Repeat("u", 65), "yes", "urgent")

	f.Fuzz(func(t *testing.T, method, path, unique, background, priority string) {
		h := http.Header{}
		h.Set(headerUnique, unique)
		h.Set(headerBackground, background)
		h.Set(headerPriority, priority)
		j, err := mapRequest(method, path, h)
		j2, err2 := mapRequest(method, path, h)
		if !reflect.DeepEqual(j, j2) || (err == nil) != (err2 == nil) || (err != nil && err.Error() != err2.Error()) {
			t.Fatalf("not deterministic: %+v %v, then %+v %v", j, err, j2, err2)
		}
		if err != nil {
			var es *errStatus
			if !errors.As(err, &es) || es.code < 400 || es.code > 499 || es.msg == "" {
				t.Fatalf("error %#v, want an errStatus with a 4xx code and a message", err)
			}
			if es2 := err2.(*errStatus); es2.code != es.code {
				t.Fatalf("codes %d then %d", es.code, es2.code)
			}
			return
		}
		switch method {
		case http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut:
		default:
			t.Fatalf("method %q accepted", method)
		}
		if j.function == "" || strings.IndexByte(j.function, 0) >= 0 {
			t.Fatalf("function %q accepted", j.function)
		}
		if strings.TrimLeft(path, "/") != j.function {
			t.Fatalf("function %q from path %q", j.function, path)
		}
		if len(j.unique) > engine.MaxUnique || strings.IndexByte(j.unique, 0) >= 0 {
			t.Fatalf("unique %q accepted", j.unique)
		}
		if j.unique != h.Get(headerUnique) {
			t.Fatalf("unique %q from header %q", j.unique, h.Get(headerUnique))
		}
		if j.priority > engine.Low {
			t.Fatalf("priority %d out of range", j.priority)
		}
		if j.data != nil {
			t.Fatalf("mapRequest set data %q", j.data)
		}
		bg := strings.EqualFold(background, "true")
		if j.background != bg {
			t.Fatalf("background %v from %q", j.background, background)
		}
		want := map[string]engine.Priority{"": engine.Normal, "normal": engine.Normal, "high": engine.High, "low": engine.Low}
		if p, ok := want[strings.ToLower(priority)]; !ok || p != j.priority {
			t.Fatalf("priority %d from %q", j.priority, priority)
		}
		typ := j.submitType()
		valid := map[wire.Type]bool{
			wire.SubmitJob: !bg, wire.SubmitJobHigh: !bg, wire.SubmitJobLow: !bg,
			wire.SubmitJobBG: bg, wire.SubmitJobHighBG: bg, wire.SubmitJobLowBG: bg,
		}
		if ok, known := valid[typ]; !known || !ok {
			t.Fatalf("submit type %s for background %v", typ, bg)
		}
	})
}
