package outbox

// LockKey exposes the relay's advisory lock to the tests, which hold it to
// make a relay a standby.
func (r *Relay) LockKey() int64 { return r.lockKey() }
