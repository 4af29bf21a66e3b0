package h2proxy

import (
	"errors"
	"fmt"
	"strings"

	"golang.org/x/net/http/httpguts"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// block decodes a connection's header blocks as x/net's framer does with
// ReadMetaHeaders set, and checks them alike, into one frame and one slice
// of fields it reuses: the framer appends every block's fields to a slice
// of its own, grown field by field, which was a fifth of all the gateway
// allocated per call. Only the connection's reading goroutine uses it; a
// block's frame and fields are valid until it is released, once handled,
// and whoever keeps any of them copies it (the strings may be kept).
type block struct {
	dec    *hpack.Decoder
	frame  http2.MetaHeadersFrame
	fields []hpack.HeaderField

	// The block being decoded: what the header list may still take, and
	// the first field that was not well formed.
	remain     uint32
	sawRegular bool
	invalid    error
}

func newBlock() *block {
	b := &block{}
	b.dec = hpack.NewDecoder(4096, b.emit)
	return b
}

var errPseudoAfterRegular = errors.New("pseudo-header field after a regular one")

func (b *block) emit(hf hpack.HeaderField) {
	if !httpguts.ValidHeaderFieldValue(hf.Value) {
		// The value stays out of the error: it may be a secret.
		b.invalid = fmt.Errorf("invalid header field value for %q", hf.Name)
	}
	if strings.HasPrefix(hf.Name, ":") {
		if b.sawRegular {
			b.invalid = errPseudoAfterRegular
		}
	} else {
		b.sawRegular = true
		if !validFieldName(hf.Name) {
			b.invalid = fmt.Errorf("invalid header field name %q", hf.Name)
		}
	}
	if b.invalid != nil {
		b.dec.SetEmitEnabled(false)
		return
	}
	size := hf.Size()
	if size > b.remain {
		b.dec.SetEmitEnabled(false)
		b.frame.Truncated = true
		b.remain = 0
		return
	}
	b.remain -= size
	b.fields = append(b.fields, hf)
}

// read decodes the header block f begins, reading the CONTINUATION frames
// that follow it from fr, with at most maxList bytes of fields kept (the
// frame says Truncated when there were more). Its errors are the framer's:
// a ConnectionError for a block that cannot be decoded or is far too
// large, a StreamError for one whose fields are not well formed.
func (b *block) read(fr *http2.Framer, f *http2.HeadersFrame) (*http2.MetaHeadersFrame, error) {
	maxList := fr.MaxHeaderListSize
	if maxList == 0 {
		maxList = 16 << 20 // the framer's default
	}
	b.fields = b.fields[:0] // whatever the last read left, released or not
	b.frame = http2.MetaHeadersFrame{HeadersFrame: f}
	b.remain, b.sawRegular, b.invalid = maxList, false, nil
	b.dec.SetEmitEnabled(true)
	b.dec.SetMaxStringLength(int(maxList))

	var hc interface {
		HeaderBlockFragment() []byte
		HeadersEnded() bool
	} = f
	for {
		frag := hc.HeaderBlockFragment()
		// A fragment of more than twice what the list may still take, or
		// one after a field that was not well formed, is not decoded:
		// the connection ends, as the framer has it.
		if int64(len(frag)) > 2*int64(b.remain) || b.invalid != nil {
			return nil, http2.ConnectionError(http2.ErrCodeProtocol)
		}
		if _, err := b.dec.Write(frag); err != nil {
			return nil, http2.ConnectionError(http2.ErrCodeCompression)
		}
		if hc.HeadersEnded() {
			break
		}
		next, err := fr.ReadFrame()
		if err != nil {
			return nil, err
		}
		// The framer lets only a CONTINUATION of this stream follow.
		hc = next.(*http2.ContinuationFrame)
	}
	if err := b.dec.Close(); err != nil {
		return nil, http2.ConnectionError(http2.ErrCodeCompression)
	}
	b.frame.Fields = b.fields
	if b.invalid != nil {
		return nil, http2.StreamError{StreamID: f.StreamID, Code: http2.ErrCodeProtocol, Cause: b.invalid}
	}
	if err := checkPseudos(b.frame.PseudoFields()); err != nil {
		return nil, http2.StreamError{StreamID: f.StreamID, Code: http2.ErrCodeProtocol, Cause: err}
	}
	return &b.frame, nil
}

// maxKeptFields is the most fields whose room a connection keeps between
// blocks: the usual request's and response's, not the most a peer ever
// sent (a block of one-byte references to one table entry makes tens of
// thousands).
const maxKeptFields = 64

// release lets go of the last block once it was handled: its fields, whose
// values may be secrets, and their room if a peer made it large.
func (b *block) release() {
	clear(b.fields)
	b.fields = b.fields[:0]
	if cap(b.fields) > maxKeptFields {
		b.fields = nil
	}
	b.frame = http2.MetaHeadersFrame{}
}

// validFieldName reports whether name may be a field's name on the wire:
// a token, in lower case (RFC 9113, 8.2.1).
func validFieldName(name string) bool {
	if name == "" {
		return false
	}
	for _, r := range name {
		if !httpguts.IsTokenRune(r) || 'A' <= r && r <= 'Z' {
			return false
		}
	}
	return true
}

// checkPseudos checks a block's pseudo-header fields: known ones, each
// once, of a request or of a response but not both (RFC 9113, 8.3).
func checkPseudos(pseudo []hpack.HeaderField) error {
	var request, response bool
	for i, hf := range pseudo {
		switch hf.Name {
		case ":method", ":path", ":scheme", ":authority", ":protocol":
			request = true
		case ":status":
			response = true
		default:
			return fmt.Errorf("invalid pseudo-header %q", hf.Name)
		}
		for _, before := range pseudo[:i] {
			if before.Name == hf.Name {
				return fmt.Errorf("duplicate pseudo-header %q", hf.Name)
			}
		}
	}
	if request && response {
		return errors.New("mix of request and response pseudo-headers")
	}
	return nil
}
