package queue

import "sync/atomic"

// afterDone holds the function of engine.Store's AfterDone. It is set once,
// before the engine submits anything, but the store's goroutines are
// already running, hence the atomic.
type afterDone struct{ fn atomic.Pointer[func()] }

func (a *afterDone) set(fn func()) { a.fn.Store(&fn) }

// call runs the function after a run of done calls.
func (a *afterDone) call() {
	if p := a.fn.Load(); p != nil {
		(*p)()
	}
}

// refuse reports a refused Add: done, then the after function.
func (a *afterDone) refuse(done func(error), err error) {
	done(err)
	a.call()
}
