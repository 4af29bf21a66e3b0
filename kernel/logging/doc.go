// Package logging builds the [log/slog] loggers of Portcullis services and
// carries request-scoped attributes through a [context.Context] into every
// line logged with that context.
//
// [New] returns a logger for a [Config]: coloured, human-readable lines with
// short times when writing to a terminal, JSON otherwise. Middleware stores
// a request's attributes in its context with [WithRequestID],
// [WithProcedure], [WithPrincipal] or [WithAttrs]; every record logged
// through the logger's *Context methods (InfoContext, ErrorContext, ...)
// then carries them at the top level of the line, even from a logger that
// opened groups:
//
//	ctx = logging.WithRequestID(ctx, "01J9Z...")
//	logger.WithGroup("db").InfoContext(ctx, "query", "rows", 3)
//	// {"time":...,"level":"INFO","msg":"query","request_id":"01J9Z...","db":{"rows":3}}
//
// # A nil logger discards
//
// Kernel packages that take a *slog.Logger treat nil as "log nothing", so
// callers and tests need not build one; they normalise it with [OrDiscard].
// [Discard] returns such a logger.
package logging
