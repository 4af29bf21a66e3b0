package h2proxy

import (
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"portcullis.dev/gateway/internal/envelope"
)

// half is one end of an exchange: a stream on one connection.
type half struct {
	x  *exchange
	c  *conn // nil until the upstream stream is opened
	id uint32

	sendWin int32 // what the peer lets this side send on the stream
	recvWin int32 // what the peer may still send on it
	// recvUnacked: passed on, not yet given back to the peer (credit).
	recvUnacked int32

	// What waits for the peer's window, or for the stream to open: data,
	// then the end of the stream, with trailers if there are any.
	pend         []byte
	pendEnd      bool
	pendTrailers []hpack.HeaderField

	sentEnd bool // this side ended the stream
	recvEnd bool // the peer ended it
	reset   bool
	// credited: what waits here was credited to its sender already (a
	// request sent again after a refusal).
	credited bool
}

// exchange is one client stream and, once forwarded, the upstream stream
// that serves it. Its lock guards both halves.
type exchange struct {
	mu     sync.Mutex
	down   half  // the client's stream
	up     *half // the upstream's; replaced when a refused stream is sent again
	stream *Stream

	forwarded   bool // Forward opened the upstream stream
	local       bool // the handler answered itself
	respStarted bool // response headers went to the client
	extra       http.Header
	status      int
	grpcStatus  string
	body        envelope.Reader // the outcome in a gRPC-Web or Connect stream's body
	reqBytes    int64
	declared    int64 // the request's content-length; -1 when it has none
	maxBody     int64
	tooLarge    bool
	// replay is the request body so far, while it is small enough to send
	// again to another instance (see peerReset).
	replay     []byte
	replayable bool

	done     chan struct{}
	finished bool
	err      error
	retry    bool // finished as never sent: Forward may try again

	// A response held back by the client's window waits at most the
	// server's WriteTimeout without the client taking any of it (see
	// watchStall).
	stall      *time.Timer
	stallArmed bool
	progressAt time.Time
}

// bodyMalformed reports whether the request body so far, ended or not,
// contradicts its content-length: malformed (RFC 9113, 8.1.1), and not
// passed on, since the upstream would reset it and the client's doing
// would count against the upstream.
func (x *exchange) bodyMalformed(ended bool) bool {
	return x.declared >= 0 && (x.reqBytes > x.declared || ended && x.reqBytes != x.declared)
}

func (x *exchange) other(h *half) *half {
	if h == &x.down {
		return x.up
	}
	return &x.down
}

// source is the half whose peer sent what waits on h, to be credited when
// it is passed on or dropped; nil when nobody is owed credit for it: the
// proxy's own answer, or a request kept to be sent again.
func (x *exchange) source(h *half) *half {
	if (h == &x.down && x.local) || h.credited {
		return nil
	}
	if src := x.other(h); src.c != nil {
		return src
	}
	return nil
}

// finish ends the exchange for Forward's caller. Call with x.mu.
func (x *exchange) finish(err error) {
	if !x.finished {
		x.finished, x.err = true, err
		close(x.done)
	}
}

// onData passes data the peer of h sent on to the other half.
func (x *exchange) onData(h *half, f *http2.DataFrame, n int32, b *batch) {
	x.mu.Lock()
	defer x.mu.Unlock()
	data := f.Data()
	if h.reset || h.recvEnd {
		h.c.credit(nil, int(n), b)
		return
	}
	h.recvWin -= n
	if h.recvWin < 0 {
		h.c.credit(nil, int(n), b)
		x.abort(h, http2.ErrCodeFlowControl, b)
		return
	}
	if h == x.up && !x.respStarted {
		// Data before the response's headers is malformed (RFC 9113, 8.1).
		h.c.credit(nil, int(n), b)
		x.abort(h, http2.ErrCodeProtocol, b)
		return
	}
	h.recvEnd = f.StreamEnded()
	h.c.credit(h, int(n)-len(data), b) // padding is not passed on
	dst := x.other(h)
	kept := false // data is a copy of its own, which may wait as it is
	if h == &x.down {
		x.reqBytes += int64(len(data))
		if x.bodyMalformed(h.recvEnd) {
			h.c.credit(nil, len(data), b)
			x.abort(h, http2.ErrCodeProtocol, b)
			return
		}
		if x.replayable {
			if x.reqBytes <= maxReplay {
				x.replay = append(x.replay, data...)
				// The copy kept to send again is the one that waits for
				// the upstream stream to open, as a unary call's body
				// does: capped, so that what is added to the wait does
				// not write into it.
				end := len(x.replay)
				data, kept = x.replay[end-len(data):end:end], true
			} else {
				x.replayable, x.replay = false, nil
			}
		}
		if x.maxBody > 0 && x.reqBytes > x.maxBody {
			h.c.credit(nil, len(data), b)
			x.bodyTooLarge(b)
			return
		}
	}
	if x.local || dst.reset || dst.sentEnd {
		h.c.credit(nil, len(data), b) // nobody takes it
		return
	}
	if h == x.up && x.body.Active() {
		x.body.Write(data)
	}
	x.send(dst, data, kept, h.recvEnd, b)
	if h == x.up {
		x.closeUpIfDone()
	}
}

// send passes data (and the end of the stream) to dst, at once if nothing
// waits before it and the windows allow, else after what waits. Data that
// has to wait is copied, unless kept says it is a copy already that nothing
// writes to.
func (x *exchange) send(dst *half, data []byte, kept, end bool, b *batch) {
	progressed := false
	if dst.c != nil && len(dst.pend) == 0 && !dst.pendEnd {
		o := dst.c.out
		o.mu.Lock()
		n := o.writeData(dst.id, &dst.sendWin, data, end)
		o.mu.Unlock()
		b.touch(o)
		if src := x.source(dst); src != nil {
			src.c.credit(src, n, b)
		}
		if end && n == len(data) {
			x.sentEnd(dst, b)
			return
		}
		data = data[n:]
		progressed = n > 0
	}
	if kept && len(dst.pend) == 0 {
		dst.pend = data
	} else {
		dst.pend = append(dst.pend, data...)
	}
	dst.pendEnd = dst.pendEnd || end
	if dst == &x.down {
		x.watchStall(progressed)
	}
}

// pump sends what waits on h as far as the windows allow.
func (x *exchange) pump(h *half, b *batch) {
	if h.c == nil || h.reset || h.sentEnd || (len(h.pend) == 0 && !h.pendEnd) {
		return
	}
	o := h.c.out
	o.mu.Lock()
	endWithData := h.pendEnd && h.pendTrailers == nil
	n := o.writeData(h.id, &h.sendWin, h.pend, endWithData)
	ended := endWithData && n == len(h.pend)
	if !ended && n == len(h.pend) && h.pendEnd {
		o.writeHeaders(h.id, h.pendTrailers, true)
		ended = true
	}
	o.mu.Unlock()
	b.touch(o)
	if n > 0 {
		h.pend = h.pend[n:]
		if len(h.pend) == 0 {
			h.pend = nil
		}
		if src := x.source(h); src != nil {
			src.c.credit(src, n, b)
		}
	}
	if ended {
		h.pendEnd, h.pendTrailers = false, nil
		x.sentEnd(h, b)
	}
	if h == &x.down {
		x.watchStall(n > 0)
	}
}

// watchStall times the client's stream while its response waits for the
// client's window, from the last time the client took some of it: a
// client that opens no window would otherwise hold the stream, its
// connection and any drain for ever. The socket's own write deadline
// cannot see this, since nothing is written.
func (x *exchange) watchStall(progressed bool) {
	d := x.down.c.out.timeout
	if d <= 0 {
		return
	}
	switch {
	case !x.answerWaits():
		if x.stallArmed {
			x.stall.Stop()
			x.stallArmed = false
		}
	case !x.stallArmed || progressed:
		x.progressAt = time.Now()
		x.stallArmed = true
		if x.stall == nil {
			x.stall = time.AfterFunc(d, x.stalled)
		} else {
			x.stall.Reset(d)
		}
	}
}

// answerWaits reports whether some of the client's answer waits to be
// sent on its stream.
func (x *exchange) answerWaits() bool {
	down := &x.down
	return !down.reset && !down.sentEnd && (len(down.pend) > 0 || down.pendEnd)
}

// stalled resets the client's stream if its response has waited a whole
// WriteTimeout for the client's window.
func (x *exchange) stalled() {
	var b batch
	x.mu.Lock()
	down := &x.down
	if x.stallArmed && x.answerWaits() {
		if left := down.c.out.timeout - time.Since(x.progressAt); left > 0 {
			x.stall.Reset(left) // the client took some meanwhile
		} else {
			x.stallArmed = false
			x.abort(down, http2.ErrCodeCancel, &b)
		}
	}
	x.mu.Unlock()
	b.flush()
}

// sentEnd follows this side ending its stream on h.
func (x *exchange) sentEnd(h *half, b *batch) {
	h.sentEnd = true
	if h == &x.down {
		x.complete(b)
		return
	}
	x.closeUpIfDone()
}

// closeUpIfDone forgets the upstream stream once both sides ended it.
func (x *exchange) closeUpIfDone() {
	if up := x.up; up.c != nil && up.sentEnd && up.recvEnd {
		up.c.remove(up)
	}
}

// complete follows the end of the response to the client: the rest of the
// request is refused without error (RFC 9113, 8.1), the upstream stream, if
// it is still open, cancelled, and the exchange finished.
func (x *exchange) complete(b *batch) {
	down := &x.down
	if !down.recvEnd && !down.reset {
		down.c.writeReset(down.id, http2.ErrCodeNo, b)
		down.recvEnd = true
	}
	x.dropPending(x.up, b)
	down.c.remove(down)
	x.cancelUp(b)
	x.finish(nil)
}

// cancelUp resets the upstream stream unless it ended both ways.
func (x *exchange) cancelUp(b *batch) {
	up := x.up
	x.dropPending(up, b) // request data that will not be sent now
	if up.c == nil || up.reset {
		return
	}
	if !up.sentEnd || !up.recvEnd {
		up.c.writeReset(up.id, http2.ErrCodeCancel, b)
	}
	up.reset = true
	x.dropPending(&x.down, b)
	up.c.remove(up)
}

// dropPending discards what waits on h, giving its source the credit.
func (x *exchange) dropPending(h *half, b *batch) {
	if len(h.pend) > 0 {
		if src := x.source(h); src != nil {
			src.c.credit(nil, len(h.pend), b)
		}
	}
	h.pend, h.pendEnd, h.pendTrailers = nil, false, nil
}

// maxReplay is the largest request body kept to be sent again.
const maxReplay = 64 << 10

// peerReset follows the peer of h resetting its stream, or its connection
// failing (code INTERNAL_ERROR).
func (x *exchange) peerReset(h *half, code http2.ErrCode, b *batch) {
	x.mu.Lock()
	defer x.mu.Unlock()
	if h.reset {
		return
	}
	if h == x.up && code == http2.ErrCodeNo && h.recvEnd {
		// The response is whole; the upstream only wants no more of the
		// request.
		h.reset = true
		x.dropPending(h, b)
		h.c.remove(h)
		return
	}
	if h == x.up && code == http2.ErrCodeRefusedStream && !x.respStarted && !x.finished &&
		x.replayable && x.down.recvEnd && !x.down.reset {
		// The upstream did not process the stream (RFC 9113, 8.7): it may go
		// to another instance, with the request kept for that.
		h.reset = true
		h.c.remove(h)
		x.dropPending(h, b) // credits what had not been sent yet
		x.dropPending(&x.down, b)
		// Every byte of the request has been credited now, sent or dropped:
		// the copy sent again owes the client nothing.
		x.up = &half{x: x, pend: slices.Clone(x.replay), pendEnd: true, credited: true}
		x.forwarded, x.retry = false, true
		x.finish(&NotSentError{Err: errors.New("upstream refused the stream")})
		return
	}
	h.reset = true
	x.dropPending(h, b)
	h.c.remove(h)
	if h == &x.down {
		x.stream.cancel()
		x.cancelUp(b)
		x.finish(errClientGone)
		return
	}
	if x.respStarted {
		x.resetDown(code, b)
	}
	x.finish(&ResetError{Code: code})
}

// resetDown resets the client's stream.
func (x *exchange) resetDown(code http2.ErrCode, b *batch) {
	down := &x.down
	if down.reset || down.sentEnd {
		return
	}
	if code == http2.ErrCodeNo || code == http2.ErrCodeRefusedStream {
		code = http2.ErrCodeInternal // the response is cut short
	}
	down.c.writeReset(down.id, code, b)
	down.reset = true
	x.dropPending(down, b)
	x.dropPending(x.up, b)
	down.c.remove(down)
	// The stream's context stays: the exchange finishes now, and its
	// caller tells an instance that failed from a client that left by it.
}

// abort ends the exchange after a stream error on h.
func (x *exchange) abort(h *half, code http2.ErrCode, b *batch) {
	h.c.writeReset(h.id, code, b)
	if h == &x.down {
		h.reset = true
		x.dropPending(h, b)
		h.c.remove(h)
		x.stream.cancel()
		x.cancelUp(b)
		x.finish(fmt.Errorf("client stream: %v", code))
		return
	}
	x.cancelUp(b)
	if x.respStarted {
		x.resetDown(http2.ErrCodeInternal, b)
	}
	x.finish(&ResetError{Code: code})
}

// bodyTooLarge ends an exchange whose request body passed the limit. If no
// response started, the handler answers.
func (x *exchange) bodyTooLarge(b *batch) {
	x.tooLarge = true
	x.dropPending(x.up, b)
	x.up.pendEnd = false
	x.cancelUp(b)
	if x.respStarted {
		x.resetDown(http2.ErrCodeCancel, b)
	}
	x.finish(ErrBodyTooLarge)
}

// onResponseHeaders handles the upstream's response headers or trailers.
func (c *conn) onResponseHeaders(f *http2.MetaHeadersFrame, b *batch) error {
	h := c.stream(f.StreamID)
	if h == nil {
		return nil // a stream this side reset
	}
	x := h.x
	x.mu.Lock()
	defer x.mu.Unlock()
	if h.reset || h.recvEnd {
		return nil
	}
	down := &x.down
	if !x.respStarted {
		status := f.PseudoValue("status")
		if len(status) == 3 && status[0] == '1' {
			if f.StreamEnded() || status == "101" { // 101 has no place in HTTP/2 (RFC 9113, 8.6)
				return http2.StreamError{StreamID: f.StreamID, Code: http2.ErrCodeProtocol}
			}
			// Informational: a 100 is what a client that sent Expect:
			// 100-continue waits for before its body, and 103's hints
			// are for the client too.
			if !down.reset {
				var ignored string
				o := down.c.out
				o.mu.Lock()
				o.writeHeaders(down.id, forwardFields(nil, f.Fields, nil, &ignored), false)
				o.mu.Unlock()
				b.touch(o)
			}
			return nil
		}
		x.respStarted = true
		x.status, _ = strconv.Atoi(status)
		for _, hf := range f.RegularFields() {
			if hf.Name == "content-type" {
				x.body.Reset(hf.Value)
				break
			}
		}
		h.recvEnd = f.StreamEnded()
		if down.reset {
			x.closeUpIfDone()
			return nil
		}
		var room [32]hpack.HeaderField // encoded below, not kept
		fields := forwardFields(room[:0], f.Fields, x.extra, &x.grpcStatus)
		fields = appendHeader(fields, x.extra, nil)
		o := down.c.out
		o.mu.Lock()
		o.writeHeaders(down.id, fields, h.recvEnd)
		o.mu.Unlock()
		b.touch(o)
		if h.recvEnd {
			x.sentEnd(down, b)
		}
		x.closeUpIfDone()
		return nil
	}
	if !f.StreamEnded() {
		return http2.StreamError{StreamID: f.StreamID, Code: http2.ErrCodeProtocol}
	}
	h.recvEnd = true
	if !down.reset && !down.sentEnd {
		down.pendEnd = true
		down.pendTrailers = forwardFields(nil, f.Fields, nil, &x.grpcStatus)
		x.pump(down, b)
	}
	x.closeUpIfDone()
	return nil
}

// forwardFields appends the fields worth passing on, leaving out those
// that belong to one connection and those the proxy sets itself (own;
// Vary, a list, takes both), and notes a grpc-status.
func forwardFields(dst, fields []hpack.HeaderField, own http.Header, grpcStatus *string) []hpack.HeaderField {
	for _, f := range fields {
		switch f.Name {
		case "connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade":
			continue
		case "grpc-status":
			*grpcStatus = f.Value
		case "vary":
		default:
			if len(own) > 0 && own[canonicalHeader(f.Name)] != nil {
				continue
			}
		}
		f.Sensitive = f.Sensitive || neverIndexed(f.Name)
		dst = append(dst, f)
	}
	return dst
}

// appendHeader appends h's fields with lower-case names; those named in
// keep, which the client sent never indexed, stay so.
func appendHeader(dst []hpack.HeaderField, h http.Header, keep []string) []hpack.HeaderField {
	for k, vs := range h {
		name := lowerHeader(k)
		switch name {
		case "connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade":
			continue
		}
		for _, v := range vs {
			dst = append(dst, hpack.HeaderField{Name: name, Value: v, Sensitive: neverIndexed(name) || slices.Contains(keep, name)})
		}
	}
	return dst
}

// neverIndexed reports whether a field is sent as a literal the peer must
// not index (RFC 7541, 7.1.3): values unique to one request, which would
// only push the useful entries out of the table, at the cost of a copy of
// the table each time. A client's own never-indexed fields stay so. A
// bearer token is indexed, as the clients themselves do: a caller sends
// the same one many times, and the table it sits in is only seen on the
// link to the services.
func neverIndexed(name string) bool {
	switch name {
	case "x-request-id", "traceparent", "tracestate", "grpc-timeout", "connect-timeout-ms", "date",
		"ratelimit-remaining", "ratelimit-reset", "retry-after":
		return true
	}
	return false
}

// ErrBodyTooLarge is Forward's error for a request body over the server's
// MaxBodyBytes.
var ErrBodyTooLarge = errors.New("request body too large")

var errClientGone = errors.New("client reset the stream")

// ResetError is Forward's error when the upstream reset its stream or its
// connection failed.
type ResetError struct{ Code http2.ErrCode }

func (e *ResetError) Error() string { return "upstream stream reset: " + e.Code.String() }
