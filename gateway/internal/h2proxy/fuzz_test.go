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

	// Each seed is a program for sendFrames: see op* there.
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
		sendFrames(fr, program)
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

// The operations of a program for sendFrames, each followed by the bytes
// it reads; a program that runs out of bytes ends.
const (
	opHeaders      = iota // stream, flags, path, fields
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

// streamIDs are the streams a program names: client streams in order and
// out of it, a server's even one, the connection's 0 and the largest.
var streamIDs = [...]uint32{1, 3, 5, 7, 2, 0, 1<<31 - 1, 101}

// paths are where a stream goes: forwarded and echoed, answered by the
// proxy, waiting upstream, waiting in the handler, headers echoed, cut
// short upstream, a Connect procedure, and no path at all.
var paths = [...]string{"/echo", "/local", "/wait", "/slow", "/headers", "/die",
	identityv1connect.IdentityServiceCreateUserProcedure, ""}

// sendFrames writes the frames program describes. Header blocks are
// encoded with one encoder for the connection, as a client's are; a block
// the proxy never reads whole leaves the two tables apart, which the proxy
// must survive too.
func sendFrames(fr *http2.Framer, program []byte) {
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
	stream := func() uint32 { return streamIDs[int(next())%len(streamIDs)] }
	for len(program) > 0 {
		switch next() % opCount {
		case opHeaders:
			id, flags, path, fields := stream(), next(), paths[int(next())%len(paths)], next()
			block.Reset()
			method := "POST"
			if fields&1 != 0 {
				method = "GET"
			}
			for _, hf := range []hpack.HeaderField{
				{Name: ":method", Value: method}, {Name: ":scheme", Value: "http"},
				{Name: ":authority", Value: "proxy"}, {Name: ":path", Value: path},
			} {
				if fields&8 != 0 && hf.Name == ":path" {
					continue // a request without its path
				}
				_ = enc.WriteField(hf)
			}
			if fields&2 != 0 {
				_ = enc.WriteField(hpack.HeaderField{Name: "te", Value: "trailers"})
			}
			if fields&4 != 0 {
				_ = enc.WriteField(hpack.HeaderField{Name: "content-length", Value: "3"})
			}
			if fields&16 != 0 {
				_ = enc.WriteField(hpack.HeaderField{Name: "x-portcullis-service-token", Value: "forged", Sensitive: true})
			}
			if fields&32 != 0 {
				_ = enc.WriteField(hpack.HeaderField{Name: "x-big", Value: strings.Repeat("b", 5000)})
			}
			if fields&64 != 0 {
				_ = enc.WriteField(hpack.HeaderField{Name: "Upper", Value: "case"})
			}
			if path == identityv1connect.IdentityServiceCreateUserProcedure {
				_ = enc.WriteField(hpack.HeaderField{Name: "content-type", Value: "application/proto"})
			}
			b := block.Bytes()
			// Bit 0: the stream ends here; bit 1: the block is cut, the
			// rest left to a CONTINUATION that may never come.
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
	)
	bad := rawUpstreamTB(f, func(fr *http2.Framer, id uint32) {
		mu.Lock()
		p := program
		mu.Unlock()
		sendResponseFrames(fr, id, p)
	})
	good := upstream(f)
	tr := &h2proxy.Transport{}
	f.Cleanup(tr.Close)
	srv := &h2proxy.Server{Handler: func(st *h2proxy.Stream) {
		addr := bad
		if st.Path == "/echo" {
			addr = good
		}
		ctx, cancel := context.WithTimeout(st.Context(), time.Second)
		defer cancel()
		if res, err := st.Forward(ctx, tr, addr, st.Header.Clone(), nil); err != nil && !res.Started {
			st.ResponseWriter().WriteHeader(http.StatusBadGateway)
		}
	}}
	base := "http://" + h2proxy.ServeForTest(f, srv)
	client := h2cClient()

	// Each seed is a program for sendResponseFrames.
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

// rawUpstreamTB serves HTTP/2 on loopback until the test ends, as an
// upstream of raw frames: it sends its settings, acknowledges the peer's,
// and answers every request's headers with answer. Once it answered, it
// closes the connection when nothing more came for a moment, so that the
// proxy meets connections ending at any point of the answer too.
func rawUpstreamTB(t testing.TB, answer func(fr *http2.Framer, id uint32)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	go func() {
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer nc.Close()
				_ = nc.SetDeadline(time.Now().Add(3 * time.Second))
				if _, err := io.ReadFull(nc, make([]byte, len(http2.ClientPreface))); err != nil {
					return
				}
				fr := http2.NewFramer(nc, nc)
				fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
				_ = fr.WriteSettings()
				for {
					f, err := fr.ReadFrame()
					if err != nil {
						return
					}
					switch f := f.(type) {
					case *http2.SettingsFrame:
						if !f.IsAck() {
							_ = fr.WriteSettingsAck()
						}
					case *http2.MetaHeadersFrame:
						answer(fr, f.StreamID)
						_ = nc.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
					}
				}
			}()
		}
	}()
	return ln.Addr().String()
}

// sendResponseFrames writes the frames program describes as an upstream
// answering stream id: ops as for sendFrames, with headers that answer
// (a status, or none) rather than ask, on the stream, the next one, the
// connection's or a server's own.
func sendResponseFrames(fr *http2.Framer, id uint32, program []byte) {
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
	ids := [...]uint32{id, id + 2, 0, 2, 1<<31 - 1}
	stream := func() uint32 { return ids[int(next())%len(ids)] }
	statuses := [...]string{"200", "500", "100", "204", "", "abc", "200", "404"}
	for len(program) > 0 {
		switch next() % opCount {
		case opHeaders:
			sid, flags, fields := stream(), next(), next()
			block.Reset()
			if s := statuses[int(fields)%len(statuses)]; s != "" {
				_ = enc.WriteField(hpack.HeaderField{Name: ":status", Value: s})
			}
			if fields&8 != 0 {
				_ = enc.WriteField(hpack.HeaderField{Name: "grpc-status", Value: "13"})
			}
			if fields&16 != 0 {
				_ = enc.WriteField(hpack.HeaderField{Name: ":path", Value: "/not-in-a-response"})
			}
			if fields&32 != 0 {
				_ = enc.WriteField(hpack.HeaderField{Name: "content-length", Value: "3"})
			}
			if fields&64 != 0 {
				_ = enc.WriteField(hpack.HeaderField{Name: "connection", Value: "close"})
			}
			b := block.Bytes()
			if flags&2 != 0 {
				b = b[:len(b)/2]
			}
			_ = fr.WriteHeaders(http2.HeadersFrameParam{StreamID: sid, BlockFragment: b,
				EndStream: flags&1 != 0, EndHeaders: flags&2 == 0})
		case opData:
			sid, n, end := stream(), int(next()), next()&1 != 0
			_ = fr.WriteData(sid, end, bytes.Repeat([]byte{'u'}, n))
		case opWindowUpdate:
			sid := stream()
			incr := uint32(next())<<16 | uint32(next())<<8 | uint32(next())
			if incr == 0xffffff {
				incr = 1<<31 - 1
			}
			var p [4]byte
			binary.BigEndian.PutUint32(p[:], incr)
			_ = fr.WriteRawFrame(http2.FrameWindowUpdate, 0, sid, p[:])
		case opRSTStream:
			_ = fr.WriteRSTStream(stream(), http2.ErrCode(next()%14))
		case opSettings:
			sid := http2.SettingID(next() % 8)
			v := binary.BigEndian.Uint32([]byte{next(), next(), next(), next()})
			var p [6]byte
			binary.BigEndian.PutUint16(p[:2], uint16(sid))
			binary.BigEndian.PutUint32(p[2:], v)
			_ = fr.WriteRawFrame(http2.FrameSettings, 0, 0, p[:])
		case opPing:
			_ = fr.WritePing(false, [8]byte{4, 5, 6})
		case opPriority:
			_ = fr.WritePriority(stream(), http2.PriorityParam{StreamDep: stream(), Weight: 15})
		case opContinuation:
			sid, end := stream(), next()&1 != 0
			b := block.Bytes()
			_ = fr.WriteContinuation(sid, end, b[len(b)/2:])
		case opGoAway:
			_ = fr.WriteGoAway(stream(), http2.ErrCode(next()%14), nil)
		case opRaw:
			typ, flags, sid, n := http2.FrameType(next()), http2.Flags(next()), stream(), int(next())
			payload := make([]byte, 0, n)
			for range n {
				payload = append(payload, next())
			}
			_ = fr.WriteRawFrame(typ, flags, sid, payload)
		}
	}
}
