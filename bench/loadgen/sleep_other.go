//go:build !linux

package loadgen

import "time"

// clock waits with the runtime's timers where there is no timerfd.
type clock struct{}

func newClock() *clock { return &clock{} }

func (*clock) sleepUntil(at time.Time) { time.Sleep(time.Until(at)) }

func (*clock) close() {}
