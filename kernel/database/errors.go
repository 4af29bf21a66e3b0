package database

import (
	"errors"

	"github.com/lib/pq"
)

// IsConflict reports whether err is PostgreSQL giving up a transaction
// because of a concurrent one: a deadlock (40P01) or a serialization
// failure (40001). Nothing is wrong with the request, and the same call
// made again can succeed: rpc.TransientError answers it Aborted, not
// Internal.
func IsConflict(err error) bool {
	var pqErr *pq.Error
	if !errors.As(err, &pqErr) {
		return false
	}
	switch pqErr.Code {
	case "40P01", "40001":
		return true
	}
	return false
}

// isLockTimeout reports whether err is a statement that waited its
// lock_timeout for a lock (55P03).
func isLockTimeout(err error) bool {
	var pqErr *pq.Error
	return errors.As(err, &pqErr) && pqErr.Code == "55P03"
}
