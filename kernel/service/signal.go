package service

import (
	"context"
	"errors"
	"os"
	"os/signal"
	"syscall"
)

// SignalContext returns a context that ends on the first SIGINT or SIGTERM,
// for the process to drain, and gives both signals back their default then:
// a second one ends the process at once, drain or not, as an operator who
// signals twice means (a drain can take gateway.drain_delay and a
// shutdown_timeout). stop releases the signals earlier.
func SignalContext(parent context.Context) (ctx context.Context, stop context.CancelFunc) {
	ctx, stop = signal.NotifyContext(parent, os.Interrupt, syscall.SIGTERM)
	go func() {
		<-ctx.Done()
		stop()
	}()
	return ctx, stop
}

// ExitCode is the status a service exits with when its run returned err,
// non-nil, under ctx, the [SignalContext]: 0 when the stop was asked for and
// err is only what stopping cut short (waiting for the database, say), so
// that a unit stopped while it starts is not marked failed; 1 for any other
// failure, a drain that failed included.
func ExitCode(ctx context.Context, err error) int {
	if ctx.Err() != nil && errors.Is(err, context.Canceled) {
		return 0
	}
	return 1
}
