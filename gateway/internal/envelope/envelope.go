// Package envelope reads how a gRPC-Web or Connect streaming response
// ended from its body, where those protocols put the outcome: in a last
// message flagged as trailers (gRPC-Web) or as the end of the stream
// (Connect). Their HTTP status is 200 whatever happened, so the gateway's
// logs and metrics would otherwise count every failed call as a success.
//
// A [Reader] is fed the body as it passes, message frame by message frame,
// and keeps only the last message; it costs nothing for other responses.
package envelope

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"strings"
)

// The flags of a message's first byte.
const (
	flagCompressed = 0x01
	flagEndStream  = 0x02 // Connect: the end-of-stream message
	flagTrailers   = 0x80 // gRPC-Web: the trailers
)

// maxEnd bounds how much of the last message is kept. An end message
// larger than this (error details, long metadata) is not read, and the
// outcome stays unknown.
const maxEnd = 4 << 10

// protocol is how a body says its outcome.
type protocol uint8

const (
	none protocol = iota
	grpcWeb
	connectStream
)

// Reader reads the outcome of one response body. The zero value reads
// nothing: call [Reader.Reset] with the response's Content-Type first.
type Reader struct {
	proto  protocol
	head   [5]byte
	inHead int    // bytes of head read so far
	remain uint32 // bytes of the current message still to come
	last   bool   // the current message is the outcome
	end    []byte // what came of it
	ended  bool   // the outcome came whole, and nothing after it
	broken bool   // an outcome came that this reader cannot read: it reads no more
}

// Reset makes r read a body of the given Content-Type: a gRPC-Web body
// (application/grpc-web, +proto, +json; not the base64 -text variant) or a
// Connect streaming one (application/connect+…). Any other reads nothing.
func (r *Reader) Reset(contentType string) {
	*r = Reader{end: r.end[:0]}
	switch {
	case strings.HasPrefix(contentType, "application/grpc-web-text"):
	case strings.HasPrefix(contentType, "application/grpc-web"):
		r.proto = grpcWeb
	case strings.HasPrefix(contentType, "application/connect+"):
		r.proto = connectStream
	}
}

// Active reports whether r reads the body, so that a caller may skip it.
func (r *Reader) Active() bool { return r.proto != none && !r.broken }

// Write reads the next part of the body. It never fails.
func (r *Reader) Write(p []byte) {
	for len(p) > 0 && r.Active() {
		if r.inHead < len(r.head) {
			r.ended = false
			n := copy(r.head[r.inHead:], p)
			r.inHead += n
			p = p[n:]
			if r.inHead < len(r.head) {
				return
			}
			r.remain = binary.BigEndian.Uint32(r.head[1:])
			flags := r.head[0]
			r.last = flags&(flagTrailers|flagEndStream) != 0 && flags&flagCompressed == 0 && r.remain <= maxEnd
			r.end = r.end[:0]
			if flags&(flagTrailers|flagEndStream) != 0 && !r.last {
				r.broken = true // an outcome this reader cannot read
				return
			}
		}
		n := min(uint32(len(p)), r.remain)
		if r.last {
			r.end = append(r.end, p[:n]...)
		}
		r.remain -= n
		p = p[n:]
		if r.remain == 0 {
			r.inHead, r.ended = 0, r.last
		}
	}
}

// Code returns the outcome as the gateway labels it — "grpc-<status>" for
// gRPC-Web, and for Connect the HTTP status its unary calls would have had
// ("200", "404", …) — or "" if the body has not ended with one it can read.
func (r *Reader) Code() string {
	if !r.Active() || !r.ended {
		return ""
	}
	switch r.proto {
	case grpcWeb:
		return grpcWebCode(r.end)
	case connectStream:
		return connectCode(r.end)
	}
	return ""
}

// grpcWebCode reads grpc-status from trailers written as HTTP/1 header
// lines.
func grpcWebCode(trailers []byte) string {
	for line := range bytes.Lines(trailers) {
		name, value, ok := bytes.Cut(line, []byte(":"))
		if !ok || !strings.EqualFold(string(bytes.TrimSpace(name)), "grpc-status") {
			continue
		}
		return GRPCLabel(string(bytes.TrimSpace(value)))
	}
	return ""
}

// grpcLabels are the labels of gRPC's status codes, 0 to 16.
var grpcLabels = [...]string{
	"grpc-0", "grpc-1", "grpc-2", "grpc-3", "grpc-4", "grpc-5", "grpc-6", "grpc-7", "grpc-8",
	"grpc-9", "grpc-10", "grpc-11", "grpc-12", "grpc-13", "grpc-14", "grpc-15", "grpc-16",
}

// GRPCLabel returns the label of a grpc-status value ("grpc-5"), or "" for
// one that is no gRPC code: a faulty upstream's "0007" or "999" must not
// make labels without end.
func GRPCLabel(status string) string {
	// Parsed by hand: most responses carry no grpc-status at all, and
	// strconv's error for "" would cost an allocation on every call.
	var n int
	switch {
	case len(status) == 1 && isDigit(status[0]):
		n = int(status[0] - '0')
	case len(status) == 2 && status[0] != '0' && isDigit(status[0]) && isDigit(status[1]):
		n = int(status[0]-'0')*10 + int(status[1]-'0')
	default:
		return "" // not a code, or one written with leading zeros
	}
	if n >= len(grpcLabels) {
		return ""
	}
	return grpcLabels[n]
}

func isDigit(c byte) bool { return '0' <= c && c <= '9' }

// connectCode reads the end-of-stream message's error code, and answers
// with the HTTP status the Connect protocol gives that code in a unary
// call.
func connectCode(end []byte) string {
	var msg struct {
		Error *struct {
			Code string `json:"code"`
		} `json:"error"`
	}
	if json.Unmarshal(end, &msg) != nil {
		return ""
	}
	if msg.Error == nil {
		return "200"
	}
	return connectHTTPStatus(msg.Error.Code)
}

// connectHTTPStatus is the Connect protocol's table of error codes to HTTP
// statuses (connectrpc.com/docs/protocol, "Error Codes"). A code it does
// not know is "unknown": 500.
func connectHTTPStatus(code string) string {
	switch code {
	case "canceled":
		return "499"
	case "invalid_argument", "failed_precondition", "out_of_range":
		return "400"
	case "deadline_exceeded":
		return "504"
	case "not_found":
		return "404"
	case "already_exists", "aborted":
		return "409"
	case "permission_denied":
		return "403"
	case "resource_exhausted":
		return "429"
	case "unimplemented":
		return "501"
	case "unavailable":
		return "503"
	case "unauthenticated":
		return "401"
	}
	return "500" // unknown, internal, data_loss, and codes this version does not know
}
