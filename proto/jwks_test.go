package proto_test

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/encoding/protojson"

	authv1 "portcullis.dev/proto/auth/v1"
)

// The Auth service serves GetJWKSResponse as /.well-known/jwks.json, so its protobuf JSON
// form must be a JWK Set (RFC 7517 section 5) with the RFC's member names.
func TestJWKSJSONIsAJWKSet(t *testing.T) {
	t.Parallel()
	set := &authv1.GetJWKSResponse{Keys: []*authv1.Jwk{{
		Kty: "EC",
		Kid: "k1",
		Use: "sig",
		Alg: "ES256",
		Crv: "P-256",
		X:   "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
		Y:   "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0",
	}}}
	got, err := protojson.Marshal(set)
	require.NoError(t, err)
	assert.JSONEq(t, `{"keys": [{
		"kty": "EC", "kid": "k1", "use": "sig", "alg": "ES256", "crv": "P-256",
		"x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
		"y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"
	}]}`, string(got))
}
