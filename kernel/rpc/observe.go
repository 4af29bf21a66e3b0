package rpc

import (
	"context"
	"errors"
	"log/slog"
	"runtime/debug"
	"time"

	"connectrpc.com/connect"

	"portcullis.dev/kernel/logging"
)

// observer logs and counts every call with its outcome and duration.
type observer struct {
	logger  *slog.Logger
	metrics *metrics
}

func (o *observer) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		if req.Spec().IsClient {
			return next(ctx, req)
		}
		procedure := req.Spec().Procedure
		ctx = logging.WithProcedure(ctx, procedure)
		gauge := o.metrics.inFlight.WithLabelValues(procedure)
		gauge.Inc()
		start := time.Now()
		resp, err := next(ctx, req)
		gauge.Dec()
		o.done(ctx, procedure, req.Peer().Addr, err, time.Since(start))
		return resp, err
	}
}

func (o *observer) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return next
}

func (o *observer) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return func(ctx context.Context, conn connect.StreamingHandlerConn) error {
		procedure := conn.Spec().Procedure
		ctx = logging.WithProcedure(ctx, procedure)
		gauge := o.metrics.inFlight.WithLabelValues(procedure)
		gauge.Inc()
		start := time.Now()
		err := next(ctx, conn)
		gauge.Dec()
		o.done(ctx, procedure, conn.Peer().Addr, err, time.Since(start))
		return err
	}
}

func (o *observer) done(ctx context.Context, procedure, peer string, err error, elapsed time.Duration) {
	o.metrics.observe(procedure, err, elapsed)
	attrs := []slog.Attr{slog.String("peer", peer), slog.Duration("duration", elapsed)}
	if err == nil {
		o.logger.LogAttrs(ctx, slog.LevelInfo, "rpc", append(attrs, slog.String("code", "ok"))...)
		return
	}
	code := connect.CodeOf(err)
	level := slog.LevelInfo // the caller's mistake: not ours to alarm about
	switch code {
	case connect.CodeInternal, connect.CodeUnknown, connect.CodeDataLoss, connect.CodeUnavailable, connect.CodeDeadlineExceeded,
		connect.CodeAborted: // a lock-order bug shows as these
		level = slog.LevelWarn
	}
	attrs = append(attrs, slog.String("code", code.String()), slog.String("err", err.Error()))
	if cause, ok := errors.AsType[hiddenCause](err); ok && cause.err != nil {
		// What the answer hides: a bug of ours, or the database's error.
		if code == connect.CodeInternal {
			level = slog.LevelError
		}
		attrs = append(attrs, slog.String("cause", cause.err.Error()))
	}
	o.logger.LogAttrs(ctx, level, "rpc", attrs...)
}

func stack() string { return string(debug.Stack()) }
