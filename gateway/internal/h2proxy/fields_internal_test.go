package h2proxy

import (
	"bytes"
	"errors"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// sensitiveNames returns the names of the fields sent as never-indexed
// literals.
func sensitiveNames(fields []hpack.HeaderField) []string {
	var names []string
	for _, f := range fields {
		if f.Sensitive {
			names = append(names, f.Name)
		}
	}
	return names
}

// encode is a header block of fields.
func encode(t *testing.T, fields ...hpack.HeaderField) []byte {
	t.Helper()
	var block bytes.Buffer
	enc := hpack.NewEncoder(&block)
	for _, f := range fields {
		require.NoError(t, enc.WriteField(f))
	}
	return block.Bytes()
}

// fieldsUpstream is an upstream that hands the fields of each request it
// gets to seen and answers with the fields of answer.
func fieldsUpstream(t *testing.T, seen chan<- []hpack.HeaderField, answer []byte) string {
	return RawUpstreamForTest(t, func(fr *http2.Framer, f http2.Frame) {
		if f, ok := f.(*http2.MetaHeadersFrame); ok {
			seen <- f.Fields
			_ = fr.WriteHeaders(http2.HeadersFrameParam{StreamID: f.StreamID, BlockFragment: answer, EndStream: true, EndHeaders: true})
		}
	})
}

// TestNeverIndexedFieldsStaySo: a field sent as a literal never to be
// indexed, a token a client keeps out of the peer's table, must go on so
// in both directions (RFC 7541, 6.2.3); the others may be indexed.
func TestNeverIndexedFieldsStaySo(t *testing.T) {
	seen := make(chan []hpack.HeaderField, 1)
	answer := encode(t,
		hpack.HeaderField{Name: ":status", Value: "200"},
		hpack.HeaderField{Name: "set-cookie", Value: "session=s3cret", Sensitive: true},
		hpack.HeaderField{Name: "x-answer", Value: "plain"})
	up := fieldsUpstream(t, seen, answer)
	tr := &Transport{}
	t.Cleanup(tr.Close)
	srv := &Server{Handler: func(st *Stream) {
		_, err := st.Forward(st.Context(), tr, up, st.Header, nil)
		assert.NoError(t, err)
	}}
	nc, fr := rawClient(t, ServeForTest(t, srv))
	require.NoError(t, fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, EndStream: true, EndHeaders: true, BlockFragment: encode(t,
		hpack.HeaderField{Name: ":method", Value: "GET"},
		hpack.HeaderField{Name: ":scheme", Value: "http"},
		hpack.HeaderField{Name: ":authority", Value: "x"},
		hpack.HeaderField{Name: ":path", Value: "/x"},
		hpack.HeaderField{Name: "authorization", Value: "Bearer t0ken", Sensitive: true},
		hpack.HeaderField{Name: "x-request", Value: "plain"})}))

	select {
	case fields := <-seen:
		assert.Equal(t, []string{"authorization"}, sensitiveNames(fields), "upstream got %v", fields)
	case <-time.After(5 * time.Second):
		t.Fatal("the request never reached the upstream")
	}

	rfr := http2.NewFramer(nil, nc)
	rfr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	require.NoError(t, nc.SetReadDeadline(time.Now().Add(5*time.Second)))
	for {
		f, err := rfr.ReadFrame()
		require.NoError(t, err)
		if h, ok := f.(*http2.MetaHeadersFrame); ok {
			assert.Equal(t, "200", h.PseudoValue("status"))
			assert.Equal(t, []string{"set-cookie"}, sensitiveNames(h.Fields), "client got %v", h.Fields)
			return
		}
	}
}

// TestMalformedRequestsStopAtTheProxy: a body that is not as long as its
// content-length says, or trailers a request must not have, is malformed
// (RFC 9113, 8.1.1); the proxy resets the client's stream itself, so the
// upstream's reset cannot count against it.
func TestMalformedRequestsStopAtTheProxy(t *testing.T) {
	up := ServeH2CForTest(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.WriteHeader(http.StatusOK)
	}))
	tr := &Transport{}
	t.Cleanup(tr.Close)
	// Each case has a path of its own: a handler's error that comes late
	// is not taken for the next case's.
	type forwarded struct {
		path string
		err  error
	}
	results := make(chan forwarded, 32)
	srv := &Server{Handler: func(st *Stream) {
		_, err := st.Forward(st.Context(), tr, up, st.Header, nil)
		results <- forwarded{st.Path, err}
	}}
	addr := ServeForTest(t, srv)
	body := []byte(`{"email":"x@y.z"}`) // 17 bytes
	for _, tc := range []struct {
		name      string
		length    []string // content-length fields
		body      []byte
		trailers  []hpack.HeaderField
		malformed bool
	}{
		{name: "as declared", length: []string{"17"}, body: body},
		{name: "undeclared", body: body},
		{name: "declared twice alike", length: []string{"17", "17"}, body: body},
		{name: "longer than declared", length: []string{"1"}, body: body, malformed: true},
		{name: "shorter than declared", length: []string{"20"}, body: body, malformed: true},
		{name: "declared but none", length: []string{"5"}, malformed: true},
		{name: "not a number", length: []string{"seventeen"}, body: body, malformed: true},
		{name: "negative", length: []string{"-17"}, body: body, malformed: true},
		{name: "declared twice apart", length: []string{"17", "18"}, body: body, malformed: true},
		{name: "trailer", body: body, trailers: []hpack.HeaderField{{Name: "x-checksum", Value: "abc"}}},
		{name: "trailer short of declared", length: []string{"20"}, body: body,
			trailers: []hpack.HeaderField{{Name: "x-checksum", Value: "abc"}}, malformed: true},
		{name: "forbidden trailer", body: body, trailers: []hpack.HeaderField{{Name: "content-length", Value: "17"}}, malformed: true},
		{name: "pseudo-header trailer", body: body, trailers: []hpack.HeaderField{{Name: ":path", Value: "/y"}}, malformed: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := "/" + url.PathEscape(tc.name)
			nc, fr := rawClient(t, addr)
			fields := []hpack.HeaderField{
				{Name: ":method", Value: "POST"}, {Name: ":scheme", Value: "http"},
				{Name: ":authority", Value: "x"}, {Name: ":path", Value: path},
			}
			for _, v := range tc.length {
				fields = append(fields, hpack.HeaderField{Name: "content-length", Value: v})
			}
			var buf bytes.Buffer
			enc := hpack.NewEncoder(&buf) // one for the connection, as its peer's decoder is
			block := func(fields []hpack.HeaderField) []byte {
				buf.Reset()
				for _, f := range fields {
					require.NoError(t, enc.WriteField(f))
				}
				return bytes.Clone(buf.Bytes())
			}
			noBody := len(tc.body) == 0 && tc.trailers == nil
			require.NoError(t, fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: block(fields), EndStream: noBody, EndHeaders: true}))
			if len(tc.body) > 0 {
				require.NoError(t, fr.WriteData(1, tc.trailers == nil, tc.body))
			}
			if tc.trailers != nil {
				require.NoError(t, fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: block(tc.trailers), EndStream: true, EndHeaders: true}))
			}

			rfr := http2.NewFramer(nil, nc)
			rfr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
			require.NoError(t, nc.SetReadDeadline(time.Now().Add(5*time.Second)))
			var got string
			for got == "" {
				f, err := rfr.ReadFrame()
				require.NoError(t, err)
				switch f := f.(type) {
				case *http2.RSTStreamFrame:
					got = f.ErrCode.String()
				case *http2.MetaHeadersFrame:
					got = f.PseudoValue("status")
				}
			}
			var err error
			for waiting := true; waiting; {
				select {
				case r := <-results:
					if r.path == path {
						err, waiting = r.err, false
					}
				case <-time.After(200 * time.Millisecond):
					// Malformed headers are refused before any handler runs.
					require.True(t, tc.malformed, "the handler never ran")
					waiting = false
				}
			}
			if !tc.malformed {
				assert.Equal(t, "200", got)
				assert.NoError(t, err)
				return
			}
			assert.Equal(t, http2.ErrCodeProtocol.String(), got)
			var reset *ResetError
			assert.False(t, errors.As(err, &reset), "the upstream was not the one to reset: %v", err)
		})
	}
}

// TestHandlerPanicResetsItsStream: a handler that panics costs its stream,
// not the process nor the connection's other streams.
func TestHandlerPanicResetsItsStream(t *testing.T) {
	srv := &Server{Handler: func(st *Stream) {
		if st.Path == "/panic" {
			panic("a bug")
		}
		st.ResponseWriter().WriteHeader(http.StatusNoContent)
	}}
	nc, fr := rawClient(t, ServeForTest(t, srv))
	writeGet(t, fr, 1, "/panic")
	writeGet(t, fr, 3, "/fine")
	got := map[uint32]string{}
	rfr := http2.NewFramer(nil, nc)
	rfr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	require.NoError(t, nc.SetReadDeadline(time.Now().Add(5*time.Second)))
	for len(got) < 2 {
		f, err := rfr.ReadFrame()
		require.NoError(t, err)
		switch f := f.(type) {
		case *http2.RSTStreamFrame:
			got[f.StreamID] = f.ErrCode.String()
		case *http2.MetaHeadersFrame:
			got[f.StreamID] = f.PseudoValue("status")
		}
	}
	assert.Equal(t, map[uint32]string{1: http2.ErrCodeInternal.String(), 3: "204"}, got)
}

// TestStrippedTrailersStayBehind: request trailers pass by the handler,
// which picks the headers that go upstream; the ones the server strips
// stay behind, the others go on.
func TestStrippedTrailersStayBehind(t *testing.T) {
	got := make(chan http.Header, 1)
	up := ServeH2CForTest(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		got <- r.Trailer.Clone()
	}))
	tr := &Transport{}
	t.Cleanup(tr.Close)
	srv := &Server{
		StripTrailer: func(name string) bool { return name == "x-trusted" },
		Handler: func(st *Stream) {
			_, err := st.Forward(st.Context(), tr, up, st.Header, nil)
			assert.NoError(t, err)
		},
	}
	req, err := http.NewRequest(http.MethodPost, "http://"+ServeForTest(t, srv)+"/t", io.NopCloser(strings.NewReader("body")))
	require.NoError(t, err)
	req.Trailer = http.Header{"X-Trusted": {"forged"}, "X-Checksum": {"abc"}}
	res, err := H2CClient().Do(req)
	require.NoError(t, err)
	_ = res.Body.Close()
	select {
	case trailer := <-got:
		assert.Equal(t, "abc", trailer.Get("X-Checksum"))
		assert.Empty(t, trailer.Values("X-Trusted"), "a stripped trailer reached the upstream")
	case <-time.After(5 * time.Second):
		t.Fatal("the upstream never saw the request")
	}
}
