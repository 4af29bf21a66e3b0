package edge_test

import (
	"context"
	"errors"
	"net/http"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"portcullis.dev/kernel/rpc"
	auditv1 "portcullis.dev/proto/audit/v1"
	"portcullis.dev/proto/audit/v1/auditv1connect"
)

// refusingAudit streams one event, and then ends the stream with
// PermissionDenied if the request asked for events after another.
type refusingAudit struct {
	auditv1connect.UnimplementedAuditServiceHandler
}

func (refusingAudit) ExportEvents(_ context.Context, req *connect.Request[auditv1.ExportEventsRequest], stream *connect.ServerStream[auditv1.ExportEventsResponse]) error {
	if err := stream.Send(&auditv1.ExportEventsResponse{Event: &auditv1.Event{Sequence: 1}}); err != nil {
		return err
	}
	if req.Msg.GetAfterSequence() == 0 {
		return nil
	}
	return connect.NewError(connect.CodePermissionDenied, errors.New("not yours"))
}

// TestStreamOutcomesInMetrics: gRPC-Web and Connect streams carry their
// outcome in the body, after an HTTP 200; the metrics and the access log
// count what the body says, on both of the gateway's paths, as they do for
// gRPC's trailers and for unary Connect's HTTP status.
func TestStreamOutcomesInMetrics(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.serve(t, "auditsvc", &instance{}, func(srv *rpc.Server) {
		srv.Handle(auditv1connect.NewAuditServiceHandler(refusingAudit{}, srv.HandlerOptions()...))
	})
	gw := e.startGateway(t, e.config(t))
	token := e.auth.Issue()
	const route = "/portcullis.audit.v1.AuditService/ExportEvents"
	h2c := h2cClient()
	for _, tc := range []struct {
		name  string
		proto protocol
		// The codes counted: the service's success and failure, and the
		// gateway's own refusal of a call without a token.
		success, failure, refusal string
	}{
		{"gRPC-Web over HTTP/1.1", protocol{"", nil, []connect.ClientOption{connect.WithGRPCWeb()}}, "grpc-0", "grpc-7", "grpc-16"},
		{"gRPC-Web over h2c", protocol{"", h2c, []connect.ClientOption{connect.WithGRPCWeb()}}, "grpc-0", "grpc-7", "grpc-16"},
		{"Connect over HTTP/1.1", protocol{"", nil, []connect.ClientOption{connect.WithProtoJSON()}}, "200", "403", "401"},
		{"Connect over h2c", protocol{"", h2c, nil}, "200", "403", "401"},
		{"gRPC over h2c", protocol{"", h2c, []connect.ClientOption{connect.WithGRPC()}}, "grpc-0", "grpc-7", "grpc-16"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			hc := tc.proto.client
			if hc == nil {
				hc = &http.Client{} // a connection of its own: the subtests' counts must not mix
			}
			c := auditv1connect.NewAuditServiceClient(hc, gw.url, tc.proto.opts...)
			for after, code := range []string{tc.success, tc.failure} {
				before := countRequests(t, gw.url, route, code)
				ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
				var stream *connect.ServerStreamForClient[auditv1.ExportEventsResponse]
				require.EventuallyWithT(t, func(ct *assert.CollectT) {
					var err error
					stream, err = c.ExportEvents(ctx, withToken(connect.NewRequest(&auditv1.ExportEventsRequest{AfterSequence: int64(after)}), token))
					require.NoError(ct, err)
					require.True(ct, stream.Receive(), "the first event: %v", stream.Err())
				}, 10*time.Second, 50*time.Millisecond)
				assert.False(t, stream.Receive())
				if after == 0 {
					assert.NoError(t, stream.Err())
				} else {
					assert.Equal(t, connect.CodePermissionDenied, connect.CodeOf(stream.Err()))
				}
				_ = stream.Close()
				cancel()
				assert.Eventually(t, func() bool { return countRequests(t, gw.url, route, code) == before+1 },
					5*time.Second, 20*time.Millisecond, "code %q not counted", code)
			}

			before := countRequests(t, gw.url, route, tc.refusal)
			stream, err := c.ExportEvents(t.Context(), connect.NewRequest(&auditv1.ExportEventsRequest{}))
			require.NoError(t, err)
			assert.False(t, stream.Receive())
			assert.Equal(t, connect.CodeUnauthenticated, connect.CodeOf(stream.Err()))
			_ = stream.Close()
			assert.Eventually(t, func() bool { return countRequests(t, gw.url, route, tc.refusal) == before+1 },
				5*time.Second, 20*time.Millisecond, "code %q not counted", tc.refusal)
		})
	}
}
