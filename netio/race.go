//go:build race

package netio

import (
	"runtime"
	"unsafe"
)

// raceRead tells the race detector the kernel reads p, as unix.Write does;
// writeSocket's raw write would otherwise hide a race on an output buffer.
func raceRead(p []byte) {
	if len(p) > 0 {
		runtime.RaceReadRange(unsafe.Pointer(unsafe.SliceData(p)), len(p))
	}
}
