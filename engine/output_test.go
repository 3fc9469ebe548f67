package engine

// takeOutput returns a copy of everything queued for s (tests only).
func (s *Session) takeOutput() []byte {
	var out []byte
	s.WriteOutput(func(p []byte) int {
		out = append(out, p...)
		return len(p)
	})
	return out
}

// discardOutput drops what is queued for s, as a writer would after
// writing it, without copying.
func (s *Session) discardOutput() {
	s.WriteOutput(func(p []byte) int { return len(p) })
}
