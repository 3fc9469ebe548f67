package netio

import (
	"slices"
	"testing"

	"gearshard/engine"
)

// The connection whose input ran goes first among those to flush; the
// others keep their order, and a list without it is left alone.
func TestAnswerFirst(t *testing.T) {
	s := make([]*engine.Session, 5)
	for i := range s {
		s[i] = &engine.Session{ID: uint64(i)}
	}
	for _, c := range []struct {
		dirty []*engine.Session
		first *engine.Session
		want  []*engine.Session
	}{
		{[]*engine.Session{s[0], s[1], s[2], s[3]}, s[3], []*engine.Session{s[3], s[0], s[1], s[2]}},
		{[]*engine.Session{s[0], s[1], s[2], s[3]}, s[1], []*engine.Session{s[1], s[0], s[2], s[3]}},
		{[]*engine.Session{s[2], s[0]}, s[2], []*engine.Session{s[2], s[0]}},
		{[]*engine.Session{s[0], s[1]}, s[4], []*engine.Session{s[0], s[1]}},
		{nil, s[0], nil},
	} {
		got := slices.Clone(c.dirty)
		answerFirst(got, c.first)
		if !slices.Equal(got, c.want) {
			t.Errorf("answerFirst(%v, %d) = %v, want %v", ids(c.dirty), c.first.ID, ids(got), ids(c.want))
		}
	}
}

func ids(l []*engine.Session) []uint64 {
	var out []uint64
	for _, s := range l {
		out = append(out, s.ID)
	}
	return out
}
