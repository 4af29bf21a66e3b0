// Package backoff computes the waits between retries of the kernel's
// loops that talk to another process (Consul, the Audit service), so that
// they back off alike.
package backoff

import (
	"math/rand/v2"
	"time"
)

// Wait returns the wait after the given number of consecutive failures:
// initial doubled failures-1 times, at most maxWait, less a random amount
// of up to half ("equal jitter"), so that replicas failing together do not
// retry in step.
func Wait(failures int, initial, maxWait time.Duration) time.Duration {
	d := initial
	for i := 1; i < failures && d < maxWait; i++ {
		d *= 2
	}
	d = min(d, maxWait)
	return d/2 + rand.N(d/2+1)
}
