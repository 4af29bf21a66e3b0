package logging

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"sync/atomic"
)

// contextHandler adds the attributes of a record's context to the record.
//
// They belong at the top level of a line, where every request's ID is found
// in the same place, even when the logger has opened groups. Attributes
// added to a record land in the innermost group, so for a logger with groups
// the handler rebuilds the chain from base, the handler before the first
// group: base.WithAttrs(context attrs), then each later WithGroup and
// WithAttrs again. That allocates, so the last chain built is kept for the
// next record with the same context attributes: the lines of one request
// usually come in a row. Without groups the attributes are appended to the
// record, which allocates nothing while a record holds five attributes or
// fewer.
type contextHandler struct {
	next slog.Handler // with every WithAttrs and WithGroup applied
	base slog.Handler // next before the first WithGroup
	ops  []handlerOp  // calls since the first WithGroup, to replay on base
	last atomic.Pointer[chain]
	// buffer, if not nil, holds lines back; a warning or an error is
	// written at once, as an operator needs it now.
	buffer *lineBuffer
}

// chain is a handler rebuilt for one set of context attributes. Those are
// never modified once stored in a context (see [WithAttrs]), so the address
// and length of the slice identify them.
type chain struct {
	attrs   *slog.Attr
	n       int
	handler slog.Handler
}

// handlerOp is one call of WithGroup (group set) or WithAttrs.
type handlerOp struct {
	group string
	attrs []slog.Attr
}

func newContextHandler(next slog.Handler, buffer *lineBuffer) *contextHandler {
	return &contextHandler{next: next, base: next, buffer: buffer}
}

func (h *contextHandler) Enabled(ctx context.Context, level slog.Level) bool {
	return h.next.Enabled(ctx, level)
}

func (h *contextHandler) Handle(ctx context.Context, r slog.Record) error {
	err := h.handle(ctx, r)
	if h.buffer != nil && r.Level >= slog.LevelWarn {
		err = errors.Join(err, h.buffer.Flush())
	}
	return err
}

func (h *contextHandler) handle(ctx context.Context, r slog.Record) error {
	attrs := contextAttrs(ctx)
	if len(attrs) == 0 {
		return h.next.Handle(ctx, r)
	}
	if len(h.ops) == 0 {
		// Without a group, the record's attributes sit beside the
		// context's, where a key may repeat.
		if repeatsKey(&r, attrs) {
			r = withoutKeys(&r, attrs)
		}
		r.AddAttrs(attrs...)
		return h.next.Handle(ctx, r)
	}
	if c := h.last.Load(); c != nil && c.attrs == &attrs[0] && c.n == len(attrs) {
		return c.handler.Handle(ctx, r)
	}
	next := h.base.WithAttrs(attrs)
	for _, op := range h.ops {
		if op.group != "" {
			next = next.WithGroup(op.group)
		} else {
			next = next.WithAttrs(op.attrs)
		}
	}
	h.last.Store(&chain{attrs: &attrs[0], n: len(attrs), handler: next})
	return next.Handle(ctx, r)
}

func (h *contextHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	if len(attrs) == 0 {
		return h
	}
	next := h.next.WithAttrs(attrs)
	if len(h.ops) == 0 {
		return newContextHandler(next, h.buffer)
	}
	return &contextHandler{
		next:   next,
		base:   h.base,
		ops:    append(slices.Clip(h.ops), handlerOp{attrs: attrs}),
		buffer: h.buffer,
	}
}

func (h *contextHandler) WithGroup(name string) slog.Handler {
	if name == "" {
		return h
	}
	return &contextHandler{
		next:   h.next.WithGroup(name),
		base:   h.base,
		ops:    append(slices.Clip(h.ops), handlerOp{group: name}),
		buffer: h.buffer,
	}
}

// repeatsKey reports whether r has an attribute whose key attrs, the
// context's, have too: a line that names its request ID or procedure
// itself would carry the key twice, which log stores refuse or resolve
// each their own way.
func repeatsKey(r *slog.Record, attrs []slog.Attr) bool {
	repeats := false
	r.Attrs(func(a slog.Attr) bool {
		repeats = hasKey(attrs, a.Key)
		return !repeats
	})
	return repeats
}

// withoutKeys returns a copy of r without the attributes whose keys attrs
// have.
func withoutKeys(r *slog.Record, attrs []slog.Attr) slog.Record {
	out := slog.NewRecord(r.Time, r.Level, r.Message, r.PC)
	r.Attrs(func(a slog.Attr) bool {
		if !hasKey(attrs, a.Key) {
			out.AddAttrs(a)
		}
		return true
	})
	return out
}
