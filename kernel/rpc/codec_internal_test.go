package rpc

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	identityv1 "portcullis.dev/proto/identity/v1"
	"portcullis.dev/proto/identity/v1/identityv1connect"
)

func TestJSONCodec(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, in string
		want     *identityv1.ListUsersRequest // nil: refused
	}{
		{"enum by name", `{"status":"USER_STATUS_DISABLED"}`, &identityv1.ListUsersRequest{Status: identityv1.UserStatus_USER_STATUS_DISABLED}},
		{"misspelt enum name", `{"status":"USER_STATUS_DISABLD"}`, nil},
		{"unknown field", `{"pageSize":5,"sortBy":{"field":"email"}}`, &identityv1.ListUsersRequest{PageSize: 5}},
		{"unknown field and a known enum", `{"sortBy":"email","status":"USER_STATUS_ACTIVE"}`, &identityv1.ListUsersRequest{Status: identityv1.UserStatus_USER_STATUS_ACTIVE}},
		// The service refuses a number it does not know itself.
		{"enum number", `{"status":7}`, &identityv1.ListUsersRequest{Status: 7}},
		{"an enum name that names the other error", `{"status":"x): unknown field \"y"}`, nil},
		{"not JSON", `{`, nil},
		{"empty", ``, nil},
	}
	codec := jsonCodec{name: "json"}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := &identityv1.ListUsersRequest{}
			err := codec.Unmarshal([]byte(tt.in), got)
			if tt.want == nil {
				assert.Error(t, err)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tt.want.String(), got.String())
		})
	}
}

// TestJSONCodecServes: the server's handlers answer a misspelt enum name
// InvalidArgument, in both JSON content types.
func TestJSONCodecServes(t *testing.T) {
	t.Parallel()
	srv := NewServer("identitysvc", "test", Config{})
	path, h := identityv1connect.NewIdentityServiceHandler(identityv1connect.UnimplementedIdentityServiceHandler{}, srv.HandlerOptions()...)
	mux := http.NewServeMux()
	mux.Handle(path, h)
	ts := httptest.NewServer(mux)
	t.Cleanup(ts.Close)
	for _, contentType := range []string{"application/json", "application/json; charset=utf-8"} {
		res, err := http.Post(ts.URL+identityv1connect.IdentityServiceListUsersProcedure, contentType, strings.NewReader(`{"status":"USER_STATUS_DISABLD"}`))
		require.NoError(t, err)
		_ = res.Body.Close()
		assert.Equal(t, http.StatusBadRequest, res.StatusCode, contentType)
	}
}
