package edge_test

import (
	"bytes"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"

	"portcullis.dev/kernel/rpc"
	identityv1 "portcullis.dev/proto/identity/v1"
	"portcullis.dev/proto/identity/v1/identityv1connect"
)

// TestTrustedTrailersAreStripped: the headers the services trust from the
// gateway are stripped from request trailers as from headers, on both
// data paths; other trailers go on.
func TestTrustedTrailersAreStripped(t *testing.T) {
	e := newEnv(t)
	trailers := make(chan http.Header, 1)
	e.serve(t, "identitysvc", &instance{}, func(srv *rpc.Server) {
		path, h := identityv1connect.NewIdentityServiceHandler(&identityServer{name: "trailers"}, srv.HandlerOptions()...)
		srv.Handle(path, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			body, _ := io.ReadAll(r.Body) // trailers arrive after the body
			select {
			case trailers <- r.Trailer.Clone():
			default:
			}
			r.Body = io.NopCloser(bytes.NewReader(body))
			h.ServeHTTP(w, r)
		}))
	})
	gw := e.startGateway(t, e.config(t))
	msg, err := proto.Marshal(&identityv1.CreateUserRequest{Email: "t@example.com"})
	require.NoError(t, err)
	for _, client := range bothPaths() {
		t.Run(client.name, func(t *testing.T) {
			var got http.Header
			require.Eventually(t, func() bool {
				// Hiding the body's length makes the client send it chunked,
				// or in DATA frames, with the trailers after it.
				req, err := http.NewRequest(http.MethodPost, gw.url+identityv1connect.IdentityServiceCreateUserProcedure, io.NopCloser(bytes.NewReader(msg)))
				require.NoError(t, err)
				req.Header.Set("Content-Type", "application/proto")
				req.Trailer = http.Header{rpc.ServiceTokenHeader: {"forged"}, "X-Real-Ip": {"10.0.0.1"}, "X-Checksum": {"abc"}}
				res, err := client.c.Do(req)
				if err != nil {
					return false
				}
				_, _ = io.Copy(io.Discard, res.Body)
				_ = res.Body.Close()
				select {
				case got = <-trailers:
					return true
				case <-time.After(50 * time.Millisecond):
					return false // not routed yet
				}
			}, 10*time.Second, 20*time.Millisecond, "the instance never got the request")
			assert.Empty(t, got.Get(rpc.ServiceTokenHeader), "a client's service token reached the service as a trailer")
			assert.Empty(t, got.Get("X-Real-Ip"))
			assert.Equal(t, "abc", got.Get("X-Checksum"), "other trailers go on")
		})
	}
}
