package h2proxy_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"portcullis.dev/gateway/internal/h2proxy"
	"portcullis.dev/proto/identity/v1/identityv1connect"
)

// FuzzServerFrames sends the proxy a client's frames made from the input,
// valid and not, on streams that are forwarded, answered locally, waited
// on or cut short upstream, and checks that the proxy neither crashes nor
// stops serving: a panic in a connection's goroutines would end the
// gateway's process, a deadlock every client's calls. Run it with
//
//	go test -run '^$' -fuzz FuzzServerFrames ./internal/h2proxy
//
// Without -fuzz the seeds below run as a test.
func FuzzServerFrames(f *testing.F) {
	base := proxy(f, upstream(f), &h2proxy.Server{MaxHeaderBytes: 4 << 10})
	addr := strings.TrimPrefix(base, "http://")
	client := h2cClient()

	// Each seed is a program for writeFrames: see op* there.
	f.Add([]byte{opHeaders, 0, 0, 0, 0, opData, 0, 10, 1})                         // a forwarded POST with a body
	f.Add([]byte{opHeaders, 0, 1, 1, 0})                                           // a local answer, ended with its headers
	f.Add([]byte{opHeaders, 0, 0, 2, 0, opRSTStream, 0, 8})                        // a waiting stream, reset
	f.Add([]byte{opHeaders, 0, 0, 5, 0, opWindowUpdate, 0, 0, 0, 0})               // a response cut short; a zero update
	f.Add([]byte{opHeaders, 0, 0, 0, 3, opData, 0, 200, 0, opHeaders, 0, 1, 0, 0}) // trailers after data
	f.Add([]byte{opHeaders, 1, 2, 0, 0, opContinuation, 1, 1})                     // continuation on another stream
	f.Add([]byte{opSettings, 4, 0xff, 0xff, 0xff, 0xff, opData, 0, 1, 0})          // a window past 2^31-1; data on an idle stream
	f.Add([]byte{opHeaders, 0, 0, 0, 4, opData, 0, 50, 1})                         // content-length that does not match
	f.Add([]byte{opRaw, 0x1, 0x5, 0, 3, 'a', 'b', 'c', opGoAway, 0, 0})            // a garbage header block; GOAWAY
	f.Add([]byte{opHeaders, 6, 0, 0, 0, opPing, opPriority, 0, 0})                 // stream 0 headers; ping; priority
	f.Add([]byte{opHeaders, 0, 0, 6, 1, opData, 0, 20, 1})                         // a Connect call to the identity contract

	f.Fuzz(func(t *testing.T, program []byte) {
		nc, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer nc.Close()
		_ = nc.SetDeadline(time.Now().Add(2 * time.Second))
		if _, err := io.WriteString(nc, http2.ClientPreface); err != nil {
			t.Fatal(err)
		}
		fr := http2.NewFramer(nc, nc)
		_ = fr.WriteSettings()
		writeFrames(fr, program, clientStreams[:], clientFields)
		// Read what the proxy answers until it closes the connection or
		// stays quiet for a moment: the proxy then has handled every frame.
		for {
			_ = nc.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
			if _, err := fr.ReadFrame(); err != nil {
				break
			}
		}
		_ = nc.Close()

		// It still serves a well-formed call on a connection of its own.
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, base+"/echo", strings.NewReader("ping"))
		res, err := client.Do(req)
		if err != nil {
			t.Fatalf("the proxy stopped serving: %v", err)
		}
		body, err := io.ReadAll(res.Body)
		_ = res.Body.Close()
		if err != nil || string(body) != "ping" {
			t.Fatalf("the proxy stopped serving: %q, %v", body, err)
		}
	})
}

// The operations of a program for writeFrames, each followed by the bytes
// it reads; a program that runs out of bytes ends.
const (
	opHeaders      = iota // stream, flags, then what the fields read
	opData                // stream, length, end
	opWindowUpdate        // stream, 3 bytes of increment
	opRSTStream           // stream, code
	opSettings            // id, 4 bytes of value
	opPing                //
	opPriority            // stream, dependency
	opContinuation        // stream, end
	opGoAway              // last stream, code
	opRaw                 // type, flags, stream, length, payload
	opCount
)

// clientStreams are the streams a client's program names: client streams
// in order and out of it, a server's even one, the connection's 0 and the
// largest.
var clientStreams = [...]uint32{1, 3, 5, 7, 2, 0, 1<<31 - 1, 101}

// paths are where a stream goes: forwarded and echoed, answered by the
// proxy, waiting upstream, waiting in the handler, headers echoed, cut
// short upstream, a Connect procedure, and no path at all.
var paths = [...]string{"/echo", "/local", "/wait", "/slow", "/headers", "/die",
	identityv1connect.IdentityServiceCreateUserProcedure, ""}

// clientFields reads a path and a byte of flags and returns a request's
// header fields, well-formed or not.
func clientFields(next func() byte) []hpack.HeaderField {
	path, flags := paths[int(next())%len(paths)], next()
	method := "POST"
	if flags&1 != 0 {
		method = "GET"
	}
	fields := []hpack.HeaderField{{Name: ":method", Value: method}, {Name: ":scheme", Value: "http"},
		{Name: ":authority", Value: "proxy"}}
	if flags&8 == 0 { // else a request without its path
		fields = append(fields, hpack.HeaderField{Name: ":path", Value: path})
	}
	if flags&2 != 0 {
		fields = append(fields, hpack.HeaderField{Name: "te", Value: "trailers"})
	}
	if flags&4 != 0 {
		fields = append(fields, hpack.HeaderField{Name: "content-length", Value: "3"})
	}
	if flags&16 != 0 {
		fields = append(fields, hpack.HeaderField{Name: "x-portcullis-service-token", Value: "forged", Sensitive: true})
	}
	if flags&32 != 0 {
		fields = append(fields, hpack.HeaderField{Name: "x-big", Value: strings.Repeat("b", 5000)})
	}
	if flags&64 != 0 {
		fields = append(fields, hpack.HeaderField{Name: "Upper", Value: "case"})
	}
	if path == identityv1connect.IdentityServiceCreateUserProcedure {
		fields = append(fields, hpack.HeaderField{Name: "content-type", Value: "application/proto"})
	}
	return fields
}

// statuses are what an upstream's headers say: a status, a 1xx, none (as
// trailers have), or nonsense.
var statuses = [...]string{"200", "500", "100", "204", "", "abc", "200", "404"}

// responseFields reads a byte of flags and returns an upstream's header
// fields, well-formed or not.
func responseFields(next func() byte) []hpack.HeaderField {
	flags := next()
	var fields []hpack.HeaderField
	if s := statuses[int(flags)%len(statuses)]; s != "" {
		fields = append(fields, hpack.HeaderField{Name: ":status", Value: s})
	}
	if flags&8 != 0 {
		fields = append(fields, hpack.HeaderField{Name: "grpc-status", Value: "13"})
	}
	if flags&16 != 0 {
		fields = append(fields, hpack.HeaderField{Name: ":path", Value: "/not-in-a-response"})
	}
	if flags&32 != 0 {
		fields = append(fields, hpack.HeaderField{Name: "content-length", Value: "3"})
	}
	if flags&64 != 0 {
		fields = append(fields, hpack.HeaderField{Name: "connection", Value: "close"})
	}
	return fields
}

// writeFrames writes the frames program describes, on the streams ids
// names, with the header fields fields reads from it. Header blocks are
// encoded with one encoder for the connection, as a peer's are; a block
// the proxy never reads whole leaves the two tables apart, which the proxy
// must survive too.
func writeFrames(fr *http2.Framer, program []byte, ids []uint32, fields func(next func() byte) []hpack.HeaderField) {
	var block bytes.Buffer
	enc := hpack.NewEncoder(&block)
	next := func() byte {
		if len(program) == 0 {
			return 0
		}
		b := program[0]
		program = program[1:]
		return b
	}
	stream := func() uint32 { return ids[int(next())%len(ids)] }
	for len(program) > 0 {
		switch next() % opCount {
		case opHeaders:
			// Flag bit 0: the stream ends here; bit 1: the block is cut,
			// the rest left to a CONTINUATION that may never come.
			id, flags := stream(), next()
			block.Reset()
			for _, hf := range fields(next) {
				_ = enc.WriteField(hf)
			}
			b := block.Bytes()
			if flags&2 != 0 {
				b = b[:len(b)/2]
			}
			_ = fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: b,
				EndStream: flags&1 != 0, EndHeaders: flags&2 == 0})
		case opData:
			id, n, end := stream(), int(next()), next()&1 != 0
			_ = fr.WriteData(id, end, bytes.Repeat([]byte{'d'}, n))
		case opWindowUpdate:
			id := stream()
			incr := uint32(next())<<16 | uint32(next())<<8 | uint32(next())
			if incr == 0xffffff {
				incr = 1<<31 - 1
			}
			// x/net's framer refuses to write an increment of zero, which
			// the proxy must refuse itself.
			var p [4]byte
			binary.BigEndian.PutUint32(p[:], incr)
			_ = fr.WriteRawFrame(http2.FrameWindowUpdate, 0, id, p[:])
		case opRSTStream:
			_ = fr.WriteRSTStream(stream(), http2.ErrCode(next()%14))
		case opSettings:
			id := http2.SettingID(next() % 8)
			v := binary.BigEndian.Uint32([]byte{next(), next(), next(), next()})
			var p [6]byte
			binary.BigEndian.PutUint16(p[:2], uint16(id))
			binary.BigEndian.PutUint32(p[2:], v)
			_ = fr.WriteRawFrame(http2.FrameSettings, 0, 0, p[:])
		case opPing:
			_ = fr.WritePing(false, [8]byte{1, 2, 3})
		case opPriority:
			id, dep := stream(), stream()
			_ = fr.WritePriority(id, http2.PriorityParam{StreamDep: dep, Weight: 15})
		case opContinuation:
			id, end := stream(), next()&1 != 0
			b := block.Bytes()
			_ = fr.WriteContinuation(id, end, b[len(b)/2:])
		case opGoAway:
			_ = fr.WriteGoAway(stream(), http2.ErrCode(next()%14), nil)
		case opRaw:
			typ, flags, id, n := http2.FrameType(next()), http2.Flags(next()), stream(), int(next())
			payload := make([]byte, 0, n)
			for range n {
				payload = append(payload, next())
			}
			_ = fr.WriteRawFrame(typ, flags, id, payload)
		}
	}
}

// FuzzUpstreamFrames answers the proxy's streams with an upstream's frames
// made from the input, valid and not, and checks that the proxy neither
// crashes nor stops serving the other upstreams: one service that sends
// garbage, through a bug or worse, must not take the entry point of every
// service down with it. Run it with
//
//	go test -run '^$' -fuzz FuzzUpstreamFrames ./internal/h2proxy
func FuzzUpstreamFrames(f *testing.F) {
	var (
		mu      sync.Mutex
		program []byte
		badTr   = &h2proxy.Transport{} // one per input: each meets a new connection
	)
	f.Cleanup(func() {
		mu.Lock()
		defer mu.Unlock()
		badTr.Close()
	})
	bad := h2proxy.RawUpstreamForTest(f, func(fr *http2.Framer, fm http2.Frame) {
		if h, ok := fm.(*http2.MetaHeadersFrame); ok {
			mu.Lock()
			p := program
			mu.Unlock()
			// The stream asked about, the next, the connection's, a
			// server's own and the largest.
			id := h.StreamID
			writeFrames(fr, p, []uint32{id, id + 2, 0, 2, 1<<31 - 1}, responseFields)
		}
	})
	good := upstream(f)
	goodTr := &h2proxy.Transport{}
	f.Cleanup(goodTr.Close)
	srv := &h2proxy.Server{Handler: func(st *h2proxy.Stream) {
		addr, tr, timeout := good, goodTr, 5*time.Second
		if st.Path != "/echo" {
			mu.Lock()
			addr, tr, timeout = bad, badTr, 50*time.Millisecond // an answer that never ends; longer only slows the fuzzer
			mu.Unlock()
		}
		ctx, cancel := context.WithTimeout(st.Context(), timeout)
		defer cancel()
		if res, err := st.Forward(ctx, tr, addr, st.Header.Clone(), nil); err != nil && !res.Started {
			st.ResponseWriter().WriteHeader(http.StatusBadGateway)
		}
	}}
	base := "http://" + h2proxy.ServeForTest(f, srv)
	client := h2cClient()

	// Each seed is a program for writeFrames with responseFields.
	f.Add([]byte{opHeaders, 0, 0, 0, opData, 0, 10, 1})                     // an answer with a body
	f.Add([]byte{opHeaders, 0, 0, 0, opData, 0, 5, 0, opHeaders, 0, 1, 12}) // data, then gRPC trailers
	f.Add([]byte{opData, 0, 5, 1})                                          // data before any headers
	f.Add([]byte{opHeaders, 0, 0, 2, opRSTStream, 0, 2})                    // a 1xx, then a reset
	f.Add([]byte{opHeaders, 1, 1, 0, opGoAway, 0, 0})                       // headers on a stream never opened; GOAWAY
	f.Add([]byte{opSettings, 1, 0, 0, 0, 0, opWindowUpdate, 0, 0, 0, 0})    // a zero header table; a zero update
	f.Add([]byte{opRaw, 5, 4, 0, 4, 0, 0, 0, 2})                            // a PUSH_PROMISE
	f.Add([]byte{opHeaders, 0, 2, 3, opContinuation, 0, 1})                 // a cut block, continued

	f.Fuzz(func(t *testing.T, p []byte) {
		mu.Lock()
		program = p
		badTr.Close()
		badTr = &h2proxy.Transport{}
		mu.Unlock()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, base+"/bad", strings.NewReader("x"))
		if res, err := client.Do(req); err == nil {
			_, _ = io.Copy(io.Discard, res.Body)
			_ = res.Body.Close()
		}

		req, _ = http.NewRequestWithContext(ctx, http.MethodPost, base+"/echo", strings.NewReader("ping"))
		res, err := client.Do(req)
		if err != nil {
			t.Fatalf("the proxy stopped serving: %v", err)
		}
		body, err := io.ReadAll(res.Body)
		_ = res.Body.Close()
		if err != nil || string(body) != "ping" {
			t.Fatalf("the proxy stopped serving: %q, %v", body, err)
		}
	})
}
