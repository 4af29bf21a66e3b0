package outbox

import "time"

// LockKey exposes the relay's advisory lock to the tests, which hold it to
// make a relay a standby.
func (r *Relay) LockKey() int64 { return r.lockKey() }

// SetFirstBackoff sets the wait after a relay's first failure, so that a
// test can make it long.
func (r *Relay) SetFirstBackoff(d time.Duration) { r.firstBackoff = d }
