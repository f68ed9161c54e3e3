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
//
// Even so, waking an idle virtual CPU and the goroutine behind the poller
// takes ~110–150 µs p50 here: the generator's own delay, not the server's.
// So the timer is set early (wakeEarly before the send time) and the
// dispatcher spins on the clock for the rest. A send that is late all the
// same (the wake-up took longer, or the processors were busy) still counts
// its lateness in the request's latency.
type clock struct {
	f *os.File // nil: fall back to time.Sleep
}

// wakeEarly is how long before a send time the dispatcher wakes up to spin:
// above the p90 of this machine's wake-up delay, at the cost of about a
// quarter of a processor at 1,000 sends/s.
const wakeEarly = 250 * time.Microsecond

func newClock() *clock {
	fd, err := unix.TimerfdCreate(unix.CLOCK_MONOTONIC, unix.TFD_NONBLOCK|unix.TFD_CLOEXEC)
	if err != nil {
		return &clock{}
	}
	return &clock{f: os.NewFile(uintptr(fd), "timerfd")}
}

// sleepUntil blocks the calling goroutine until at.
func (c *clock) sleepUntil(at time.Time) {
	if d := time.Until(at) - wakeEarly; d > 0 {
		c.sleep(d)
	}
	for time.Now().Before(at) {
	}
}

// sleep blocks the calling goroutine for about d.
func (c *clock) sleep(d time.Duration) {
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
		time.Sleep(d)
	}
}

func (c *clock) close() {
	if c.f != nil {
		c.f.Close()
	}
}
