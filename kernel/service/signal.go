package service

import (
	"context"
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
