package database

import (
	"database/sql"
	"database/sql/driver"
	"errors"
	"io"
	"net"

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

// IsUnavailable reports whether err is the database out of reach, for now:
// a connection that could not be made or that broke (refused, reset,
// closed under a query), or PostgreSQL refusing work while it shuts down,
// starts or recovers (57P01 to 57P03), out of connection slots (53300) or
// with a lost connection (08000, 08001, 08003, 08004, 08006). Nothing is
// wrong with the request, and the same call made later can succeed:
// rpc.TransientError answers it Unavailable, not Internal. Errors that
// waiting will not mend (a full disk, a protocol violation) are not.
func IsUnavailable(err error) bool {
	if err == nil {
		return false
	}
	if pqErr, ok := errors.AsType[*pq.Error](err); ok {
		switch pqErr.Code {
		case "08000", "08001", "08003", "08004", "08006", "53300", "57P01", "57P02", "57P03":
			return true
		}
		return false
	}
	if _, ok := errors.AsType[*net.OpError](err); ok {
		return true
	}
	return errors.Is(err, driver.ErrBadConn) || errors.Is(err, sql.ErrConnDone) || errors.Is(err, io.ErrUnexpectedEOF)
}
