//go:build linux

package loadgen

import (
	"runtime"
	"syscall"
	"time"
)

// precise prepares the calling goroutine to wait with sleepUntil: it locks
// it to its OS thread and sets that thread's timer slack to 1 ns. The Go
// runtime's timers wake up late by up to about a millisecond when the
// process is otherwise idle (its poller waits in whole milliseconds), which
// at 1,000 requests/s would be charged to the server; nanosleep on a thread
// with no timer slack wakes up within tens of microseconds. The goroutine
// must not unlock: its thread exits with it.
func precise() {
	runtime.LockOSThread()
	const prSetTimerslack = 29
	syscall.RawSyscall(syscall.SYS_PRCTL, prSetTimerslack, 1, 0)
}

// sleepUntil blocks the thread until at.
func sleepUntil(at time.Time) {
	for {
		d := time.Until(at)
		if d <= 0 {
			return
		}
		ts := syscall.NsecToTimespec(int64(d))
		if err := syscall.Nanosleep(&ts, nil); err == nil {
			return
		}
	}
}
