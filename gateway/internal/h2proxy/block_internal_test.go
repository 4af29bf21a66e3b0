package h2proxy

import (
	"bytes"
	"errors"
	"fmt"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// FuzzBlockReadsAsTheFramer checks that block decodes and judges header
// blocks exactly as x/net's framer does with ReadMetaHeaders set: the same
// fields, the same truncation, the same error of the same kind and code,
// block after block on one connection, with its table carried over.
// The input is raw HPACK, split into HEADERS and CONTINUATION frames where
// its first bytes say, so that the blocks are well formed and not. Run it
// with
//
//	go test -run '^$' -fuzz FuzzBlockReadsAsTheFramer ./internal/h2proxy
//
// Without -fuzz the seeds below run as a test.
func FuzzBlockReadsAsTheFramer(f *testing.F) {
	enc := func(fields ...hpack.HeaderField) []byte {
		var buf bytes.Buffer
		e := hpack.NewEncoder(&buf)
		for _, hf := range fields {
			_ = e.WriteField(hf)
		}
		return buf.Bytes()
	}
	hf := func(name, value string) hpack.HeaderField { return hpack.HeaderField{Name: name, Value: value} }
	request := []hpack.HeaderField{hf(":method", "POST"), hf(":scheme", "http"), hf(":authority", "a"), hf(":path", "/p.S/M"), hf("content-type", "application/proto")}
	for _, seed := range [][]byte{
		enc(request...),
		enc(hf(":status", "200"), hf("grpc-status", "0")),
		enc(append(request, hf(":status", "200"))...),                          // request and response
		enc(hf(":method", "GET"), hf(":method", "GET")),                        // duplicate
		enc(hf(":unknown", "x")),                                               // unknown pseudo-header
		enc(hf("a", "b"), hf(":path", "/")),                                    // pseudo-header after a regular field
		enc(hf("Upper", "x")),                                                  // upper case
		enc(hf("bad name", "x")),                                               // not a token
		enc(hf("a", "line\nbreak")),                                            // bad value
		enc(hf("x-big", string(bytes.Repeat([]byte("v"), 300)))),               // over a small list limit
		enc(hf("a", string(bytes.Repeat([]byte("v"), 100))), hf("b", "after")), // under a small list limit
		enc(hf("a", string(bytes.Repeat([]byte("v"), 100))), hf("b", string(bytes.Repeat([]byte("w"), 100))), hf("c", "after")), // truncated midway
		{0x3f, 0xe1, 0x1f}, // a table size update out of range
		{0x82, 0x86, 0xff}, // an index cut short
	} {
		f.Add([]byte{0, 0, 0}, seed)   // one frame, the framer's default limit
		f.Add([]byte{3, 7, 1}, seed)   // split in three, a 256-byte limit
		f.Add([]byte{200, 1, 2}, seed) // split once
	}
	f.Fuzz(func(t *testing.T, shape, payload []byte) {
		if len(shape) < 3 {
			return
		}
		// The same frames twice, so the second block reads against the
		// table the first one left.
		var wire bytes.Buffer
		w := http2.NewFramer(&wire, nil)
		for stream := uint32(1); stream <= 3; stream += 2 {
			first, second := splitAt(payload, int(shape[0])), splitAt(payload, int(shape[0])+int(shape[1]))
			frags := [][]byte{payload[:first], payload[first:second], payload[second:]}
			if shape[0] == 0 {
				frags = [][]byte{payload}
			}
			require.NoError(t, w.WriteHeaders(http2.HeadersFrameParam{StreamID: stream, BlockFragment: frags[0], EndStream: true, EndHeaders: len(frags) == 1}))
			for i, frag := range frags[1:] {
				require.NoError(t, w.WriteContinuation(stream, i == len(frags)-2, frag))
			}
		}
		var limit uint32
		if shape[2]%2 == 1 {
			limit = 256
		}
		theirs := http2.NewFramer(nil, bytes.NewReader(wire.Bytes()))
		theirs.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
		theirs.MaxHeaderListSize = limit
		ours := http2.NewFramer(nil, bytes.NewReader(wire.Bytes()))
		ours.MaxHeaderListSize = limit
		b := newBlock()
		for range 2 {
			want, wantErr := theirs.ReadFrame()
			got, gotErr := readBlock(b, ours)
			require.Equal(t, errorKind(wantErr), errorKind(gotErr))
			if wantErr != nil {
				return // the connection or the stream ends: what follows differs
			}
			mh := want.(*http2.MetaHeadersFrame)
			require.Equal(t, mh.Truncated, got.Truncated)
			require.Equal(t, fmt.Sprint(mh.Fields), fmt.Sprint(got.Fields))
			require.Equal(t, mh.StreamID, got.StreamID)
			require.Equal(t, mh.StreamEnded(), got.StreamEnded())
			b.release() // as the connection does once the frame was handled
		}
	})
}

func splitAt(p []byte, n int) int { return min(n, len(p)) }

// readBlock reads a frame from fr as a connection does.
func readBlock(b *block, fr *http2.Framer) (*http2.MetaHeadersFrame, error) {
	f, err := fr.ReadFrame()
	if err != nil {
		return nil, err
	}
	return b.read(fr, f.(*http2.HeadersFrame))
}

// errorKind is what the proxy does with a frame's error: end the
// connection with a code, reset the stream with one, or neither.
func errorKind(err error) string {
	var ce http2.ConnectionError
	var se http2.StreamError
	switch {
	case err == nil:
		return "none"
	case errors.As(err, &ce):
		return fmt.Sprint("connection ", http2.ErrCode(ce))
	case errors.As(err, &se):
		return fmt.Sprint("stream ", se.StreamID, " ", se.Code)
	}
	return "other: " + err.Error()
}

// TestBlockKeepsNoLargeRoom: a block of tens of thousands of one-byte
// references to one table entry, well inside the limits, must not leave its
// connection holding room for as many fields, nor the last block's values
// (secrets, some) once it was handled.
func TestBlockKeepsNoLargeRoom(t *testing.T) {
	var first bytes.Buffer
	enc := hpack.NewEncoder(&first)
	require.NoError(t, enc.WriteField(hpack.HeaderField{Name: "a", Value: ""}))
	indexed := first.Len()                          // the entry's first use adds it to the table
	first.Write(bytes.Repeat([]byte{0xbe}, 30_000)) // index 62: the entry just added
	require.Greater(t, indexed, 0)
	var wire bytes.Buffer
	w := http2.NewFramer(&wire, nil)
	block := first.Bytes()
	require.NoError(t, w.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: block[:16_000], EndStream: true}))
	require.NoError(t, w.WriteContinuation(1, true, block[16_000:]))
	fr := http2.NewFramer(nil, &wire)
	fr.MaxHeaderListSize = 1 << 20
	b := newBlock()
	mh, err := readBlock(b, fr)
	require.NoError(t, err)
	require.Len(t, mh.Fields, 30_001)
	b.release()
	assert.LessOrEqual(t, cap(b.fields), maxKeptFields)
	assert.Empty(t, b.frame.Fields)
	assert.Nil(t, b.frame.HeadersFrame)
}
