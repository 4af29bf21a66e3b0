package envelope_test

import (
	"bytes"
	"encoding/binary"
	"testing"

	"github.com/stretchr/testify/assert"

	"portcullis.dev/gateway/internal/envelope"
)

func frame(flags byte, payload string) []byte {
	b := make([]byte, 5, 5+len(payload))
	b[0] = flags
	binary.BigEndian.PutUint32(b[1:], uint32(len(payload)))
	return append(b, payload...)
}

func body(frames ...[]byte) []byte { return bytes.Join(frames, nil) }

func TestReaderCode(t *testing.T) {
	t.Parallel()
	event := frame(0, string(bytes.Repeat([]byte{'e'}, 300)))
	big := frame(0, string(bytes.Repeat([]byte{'b'}, 1<<20)))
	for _, tc := range []struct {
		name, contentType string
		body              []byte
		want              string
	}{
		{"gRPC-Web success", "application/grpc-web+proto", body(event, event, frame(0x80, "grpc-status: 0\r\ngrpc-message: \r\n")), "grpc-0"},
		{"gRPC-Web error, names in any case", "application/grpc-web", body(frame(0x80, "Grpc-Message: no\r\nGRPC-STATUS:5\r\n")), "grpc-5"},
		{"gRPC-Web after a large message", "application/grpc-web+json", body(big, frame(0x80, "grpc-status: 7\r\n")), "grpc-7"},
		{"gRPC-Web without a status", "application/grpc-web", body(event, frame(0x80, "grpc-message: x\r\n")), ""},
		{"gRPC-Web with a status that is no number", "application/grpc-web", body(frame(0x80, "grpc-status: ok\r\n")), ""},
		{"gRPC-Web with a status that is no code", "application/grpc-web", body(frame(0x80, "grpc-status: 17\r\n")), ""},
		{"gRPC-Web with a padded status", "application/grpc-web", body(frame(0x80, "grpc-status: 0007\r\n")), ""},
		{"gRPC-Web with a status of two digits", "application/grpc-web", body(frame(0x80, "grpc-status: 16\r\n")), "grpc-16"},
		{"gRPC-Web with a leading zero", "application/grpc-web", body(frame(0x80, "grpc-status: 07\r\n")), ""},
		{"gRPC-Web cut before its trailers", "application/grpc-web", body(event, event), ""},
		{"gRPC-Web trailers cut short", "application/grpc-web", body(event, frame(0x80, "grpc-status: 0\r\n"))[:len(event)+8], ""},
		{"gRPC-Web text is base64: not read", "application/grpc-web-text", body(frame(0x80, "grpc-status: 5\r\n")), ""},
		{"Connect success", "application/connect+proto", body(event, frame(0x02, `{}`)), "200"},
		{"Connect success with metadata", "application/connect+json", body(frame(0x02, `{"metadata":{"x":["y"]}}`)), "200"},
		{"Connect error", "application/connect+proto", body(event, frame(0x02, `{"error":{"code":"not_found","message":"no such user"}}`)), "404"},
		{"Connect resource exhausted", "application/connect+proto", body(frame(0x02, `{"error":{"code":"resource_exhausted"}}`)), "429"},
		{"Connect code unknown to this version", "application/connect+proto", body(frame(0x02, `{"error":{"code":"new_in_v2"}}`)), "500"},
		{"Connect compressed end: not read", "application/connect+proto", body(frame(0x03, `{}`)), ""},
		{"Connect end too large to keep", "application/connect+proto", body(frame(0x02, `{"x":"`+string(bytes.Repeat([]byte{'x'}, 5000))+`"}`)), ""},
		{"Connect end that is no JSON", "application/connect+proto", body(frame(0x02, `{`)), ""},
		{"unary Connect is not read", "application/proto", body(frame(0x02, `{}`)), ""},
		{"gRPC carries its status in trailers", "application/grpc", body(frame(0x80, "grpc-status: 5\r\n")), ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			for _, size := range []int{len(tc.body) + 1, 1, 3, 4096} {
				var r envelope.Reader
				r.Reset(tc.contentType)
				for p := tc.body; len(p) > 0; {
					n := min(size, len(p))
					r.Write(p[:n])
					p = p[n:]
				}
				assert.Equal(t, tc.want, r.Code(), "written %d bytes at a time", size)
			}
		})
	}
}

// TestReaderReset: a Reader is reused from one response to the next.
func TestReaderReset(t *testing.T) {
	t.Parallel()
	var r envelope.Reader
	assert.False(t, r.Active(), "the zero value reads nothing")
	r.Write(frame(0x80, "grpc-status: 5\r\n"))
	assert.Empty(t, r.Code())

	r.Reset("application/grpc-web")
	assert.True(t, r.Active())
	r.Write(frame(0x80, "grpc-status: 5\r\n"))
	assert.Equal(t, "grpc-5", r.Code())

	r.Reset("application/connect+proto")
	r.Write(frame(0x02, "{}")[:3])
	assert.Empty(t, r.Code(), "the last response's outcome is gone")
	r.Reset("application/json")
	assert.False(t, r.Active())
}

func BenchmarkReaderWrite(b *testing.B) {
	msg := frame(0, string(bytes.Repeat([]byte{'m'}, 1024)))
	end := frame(0x80, "grpc-status: 0\r\ngrpc-message: \r\n")
	b.ReportAllocs()
	var r envelope.Reader
	for b.Loop() {
		r.Reset("application/grpc-web+proto")
		r.Write(msg)
		r.Write(end)
		if r.Code() != "grpc-0" {
			b.Fatal(r.Code())
		}
	}
}

func TestGRPCLabel(t *testing.T) {
	for status, want := range map[string]string{
		"0":    "grpc-0",
		"5":    "grpc-5",
		"10":   "grpc-10",
		"16":   "grpc-16",
		"":     "",
		"17":   "",
		"99":   "",
		"05":   "",
		"00":   "",
		"0007": "",
		"999":  "",
		"-1":   "",
		"+5":   "",
		" 5":   "",
		"a":    "",
	} {
		assert.Equal(t, want, envelope.GRPCLabel(status), "status %q", status)
	}
	assert.Zero(t, testing.AllocsPerRun(100, func() { envelope.GRPCLabel("") }), "a response without grpc-status")
}
