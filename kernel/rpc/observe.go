package rpc

import (
	"context"
	"log/slog"
	"net/http"
	"runtime/debug"
	"time"

	"connectrpc.com/connect"

	"portcullis.dev/kernel/logging"
)

// observer logs and counts every call with its outcome and duration.
type observer struct {
	logger  *slog.Logger
	metrics *metrics
	// recover answers a panic; connect.WithRecover's covers only the
	// handler, not the interceptors between it and the observer (the
	// enforcer, an Authenticator, an Authorizer, the server's own).
	recover func(ctx context.Context, spec connect.Spec, header http.Header, p any) error
}

func (o *observer) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (resp connect.AnyResponse, err error) {
		if req.Spec().IsClient {
			return next(ctx, req)
		}
		procedure := req.Spec().Procedure
		ctx = logging.WithProcedure(ctx, procedure)
		gauge := o.metrics.inFlight.WithLabelValues(procedure)
		gauge.Inc()
		start := time.Now()
		defer func() {
			if p := recover(); p != nil {
				if p == http.ErrAbortHandler { //nolint:errorlint // a sentinel panic value, compared as net/http does
					panic(p) // net/http's way to abort a response: not a failure to answer
				}
				resp, err = nil, o.recover(ctx, req.Spec(), req.Header(), p)
			}
			gauge.Dec()
			o.done(ctx, procedure, req.Peer().Addr, err, time.Since(start))
		}()
		return next(ctx, req)
	}
}

func (o *observer) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return next
}

func (o *observer) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return func(ctx context.Context, conn connect.StreamingHandlerConn) (err error) {
		procedure := conn.Spec().Procedure
		ctx = logging.WithProcedure(ctx, procedure)
		gauge := o.metrics.inFlight.WithLabelValues(procedure)
		gauge.Inc()
		start := time.Now()
		defer func() {
			if p := recover(); p != nil {
				if p == http.ErrAbortHandler { //nolint:errorlint // a sentinel panic value, compared as net/http does
					panic(p) // net/http's way to abort a response: not a failure to answer
				}
				err = o.recover(ctx, conn.Spec(), conn.RequestHeader(), p)
			}
			gauge.Dec()
			o.done(ctx, procedure, conn.Peer().Addr, err, time.Since(start))
		}()
		return next(ctx, conn)
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
	o.logger.LogAttrs(ctx, level, "rpc", append(attrs, slog.String("code", code.String()), slog.String("err", err.Error()))...)
}

func stack() string { return string(debug.Stack()) }
