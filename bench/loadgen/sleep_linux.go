//go:build linux

package loadgen

import (
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// A clock wakes the dispatcher at each send time. It waits by reading a
// timerfd through the Go runtime's poller, so that the waiting goroutine
// gives its processor up (a goroutine in nanosleep keeps it: the request
// goroutine the dispatcher has just started then waits until the runtime
// takes the processor back, ~150 µs here, which was charged to every
// request as send lag). The timerfd is a kernel high-resolution timer: it
// wakes the poller within tens of microseconds, where the runtime's own
// timers wake up late by up to about a millisecond when the process is
// otherwise idle (its poller waits in whole milliseconds).
type clock struct {
	f *os.File // nil: fall back to time.Sleep
}

func newClock() *clock {
	fd, err := unix.TimerfdCreate(unix.CLOCK_MONOTONIC, unix.TFD_NONBLOCK|unix.TFD_CLOEXEC)
	if err != nil {
		return &clock{}
	}
	return &clock{f: os.NewFile(uintptr(fd), "timerfd")}
}

// sleepUntil blocks the calling goroutine until at.
func (c *clock) sleepUntil(at time.Time) {
	d := time.Until(at)
	if d <= 0 {
		return
	}
	if c.f == nil {
		time.Sleep(d)
		return
	}
	spec := unix.ItimerSpec{Value: unix.NsecToTimespec(int64(d))}
	if err := unix.TimerfdSettime(int(c.f.Fd()), 0, &spec, nil); err != nil {
		time.Sleep(d)
		return
	}
	var buf [8]byte
	if _, err := c.f.Read(buf[:]); err != nil {
		time.Sleep(time.Until(at))
	}
}

func (c *clock) close() {
	if c.f != nil {
		c.f.Close()
	}
}
