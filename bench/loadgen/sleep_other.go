//go:build !linux

package loadgen

import "time"

func precise() {}

func sleepUntil(at time.Time) { time.Sleep(time.Until(at)) }
