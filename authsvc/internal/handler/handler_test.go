package handler_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/golang-jwt/jwt/v5"
	"github.com/pquerna/otp"
	"github.com/pquerna/otp/totp"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"portcullis.dev/authsvc/internal/auth"
	"portcullis.dev/authsvc/internal/authtest"
	"portcullis.dev/authsvc/internal/handler"
	"portcullis.dev/authsvc/internal/keys"
	"portcullis.dev/kernel/authn"
	"portcullis.dev/kernel/authn/authntest"
	"portcullis.dev/kernel/kerneltest"
	"portcullis.dev/kernel/registry"
	"portcullis.dev/kernel/rpc"
	"portcullis.dev/kernel/service"
	authv1 "portcullis.dev/proto/auth/v1"
	"portcullis.dev/proto/auth/v1/authv1connect"
	"portcullis.dev/proto/identity/v1/identityv1connect"
)

// fetchJWKS GETs the JWK Set at url.
func fetchJWKS(t *testing.T, url string) (map[string]any, *http.Response) {
	t.Helper()
	res, err := http.Get(url)
	require.NoError(t, err)
	defer res.Body.Close()
	require.Equal(t, http.StatusOK, res.StatusCode)
	var doc struct {
		Keys []struct{ Kty, Kid, Crv, X, Y, Alg, Use string }
	}
	require.NoError(t, json.NewDecoder(res.Body).Decode(&doc))
	keys := map[string]any{}
	for _, k := range doc.Keys {
		x, err := base64.RawURLEncoding.DecodeString(k.X)
		require.NoError(t, err)
		switch k.Kty {
		case "OKP":
			keys[k.Kid] = ed25519.PublicKey(x)
		case "EC":
			y, err := base64.RawURLEncoding.DecodeString(k.Y)
			require.NoError(t, err)
			pub, err := ecdsa.ParseUncompressedPublicKey(elliptic.P256(), append(append([]byte{4}, x...), y...))
			require.NoError(t, err)
			keys[k.Kid] = pub
		}
		assert.Equal(t, "sig", k.Use)
	}
	return keys, res
}

// verifyJWT verifies token with golang-jwt against set, an independent
// implementation of RFC 7519.
func verifyJWT(set map[string]any, token string, now time.Time, checkClaims bool) (jwt.MapClaims, error) {
	opts := []jwt.ParserOption{jwt.WithValidMethods([]string{"EdDSA", "ES256"}), jwt.WithTimeFunc(func() time.Time { return now })}
	if checkClaims {
		opts = append(opts, jwt.WithIssuer("portcullis"), jwt.WithAudience("portcullis"), jwt.WithExpirationRequired(), jwt.WithIssuedAt())
	} else {
		opts = append(opts, jwt.WithoutClaimsValidation())
	}
	claims := jwt.MapClaims{}
	_, err := jwt.ParseWithClaims(token, claims, func(tok *jwt.Token) (any, error) {
		kid, _ := tok.Header["kid"].(string)
		if k, ok := set[kid]; ok {
			return k, nil
		}
		return nil, fmt.Errorf("no key %q", kid)
	}, opts...)
	return claims, err
}

func TestAccessTokensVerifyAndRotatedKeysExpire(t *testing.T) {
	t.Parallel()
	for _, alg := range []string{keys.AlgEdDSA, keys.AlgES256} {
		t.Run(alg, func(t *testing.T) {
			t.Parallel()
			e := authtest.New(t, authtest.Options{Alg: alg})
			srv := httptest.NewServer(handler.NewJWKSHandler(e.Keyring, nil))
			t.Cleanup(srv.Close)
			url := srv.URL + handler.JWKSPath
			verifier, err := authn.NewVerifier(authn.Config{JWKSURL: url, Issuer: "portcullis", Audience: "portcullis"},
				authn.WithClock(e.Clock.Now), authn.WithHTTPClient(srv.Client()))
			require.NoError(t, err)

			login := func() string {
				p, err := e.Service.Login(t.Context(), loginInput())
				require.NoError(t, err)
				return p.AccessToken
			}
			old := login()
			set, res := fetchJWKS(t, url)
			assert.Equal(t, "public, max-age=60", res.Header.Get("Cache-Control"))
			claims, err := verifyJWT(set, old, e.Clock.Now(), true)
			require.NoError(t, err)
			assert.Equal(t, authtest.ActiveID, claims["sub"])
			for _, c := range []string{"iss", "sub", "aud", "exp", "iat", "nbf", "jti", "sid"} {
				assert.Contains(t, claims, c)
			}
			p, err := verifier.Verify(t.Context(), old)
			require.NoError(t, err)
			assert.Equal(t, authtest.ActiveID, p.Subject)
			assert.Equal(t, claims["sid"], p.SessionID)

			// Rotation: the old key stays published while its tokens live.
			_, err = e.Keyring.Rotate(t.Context())
			require.NoError(t, err)
			fresh := login()
			set, _ = fetchJWKS(t, url)
			assert.Len(t, set, 2)
			_, err = verifyJWT(set, old, e.Clock.Now(), true)
			require.NoError(t, err)
			// The verifier fetches the set again for the new kid once its
			// refresh interval has passed.
			e.Clock.Advance(6 * time.Second)
			_, err = verifier.Verify(t.Context(), fresh)
			require.NoError(t, err, "a new kid makes the verifier fetch the set again")

			// Another replica may sign with the old key until its cached
			// active key expires (keys.DefaultCacheTTL, 5s) after the
			// rotation: the key stays published that much longer.
			e.Clock.Advance(authtest.AccessTTL + authtest.Leeway - 2*time.Second) // the retention and 4s
			set, _ = fetchJWKS(t, url)
			assert.Len(t, set, 2, "a key other replicas signed with 4s after it retired left the set")

			// After the grace period the old key is gone: its tokens no
			// longer verify, whatever their claims say.
			e.Clock.Advance(3 * time.Second)
			set, _ = fetchJWKS(t, url)
			assert.Len(t, set, 1)
			_, err = verifyJWT(set, old, e.Clock.Now(), false)
			require.Error(t, err)
			_, err = verifyJWT(set, fresh, e.Clock.Now(), false)
			require.NoError(t, err)
			_, err = verifier.Verify(t.Context(), old)
			require.Error(t, err)
		})
	}
}

// TestRevokedKeyTokensStopVerifying: RotateSigningKey with
// revoke_previous, after a compromise, drops the previous key from the
// JWKS at once, and the verifier refuses its tokens once it fetches the
// set again, long before they expire.
func TestRevokedKeyTokensStopVerifying(t *testing.T) {
	t.Parallel()
	e := authtest.New(t, authtest.Options{})
	srv := httptest.NewServer(handler.NewJWKSHandler(e.Keyring, nil))
	t.Cleanup(srv.Close)
	url := srv.URL + handler.JWKSPath
	verifier, err := authn.NewVerifier(authn.Config{JWKSURL: url, Issuer: "portcullis", Audience: "portcullis", CacheTTL: time.Minute},
		authn.WithClock(e.Clock.Now), authn.WithHTTPClient(srv.Client()))
	require.NoError(t, err)
	p, err := e.Service.Login(t.Context(), loginInput())
	require.NoError(t, err)
	_, err = verifier.Verify(t.Context(), p.AccessToken)
	require.NoError(t, err)

	res, err := handler.New(e.Service, nil).RotateSigningKey(t.Context(),
		connect.NewRequest(&authv1.RotateSigningKeyRequest{RevokePrevious: true}))
	require.NoError(t, err)
	set, _ := fetchJWKS(t, url)
	require.Len(t, set, 1, "the compromised key is still published")
	_, err = verifyJWT(set, p.AccessToken, e.Clock.Now(), false)
	require.Error(t, err)

	// The verifier's key set is due: the cached token's next use fetches
	// it again, in the background, and the token goes with its key.
	e.Clock.Advance(time.Minute + time.Second)
	require.Eventually(t, func() bool {
		_, err := verifier.Verify(t.Context(), p.AccessToken)
		return err != nil
	}, 5*time.Second, 10*time.Millisecond, "a token of the revoked key still verifies")
	fresh, err := e.Service.Login(t.Context(), loginInput())
	require.NoError(t, err)
	_, err = verifier.Verify(t.Context(), fresh.AccessToken)
	require.NoError(t, err)
	assert.Contains(t, set, res.Msg.GetKey().GetKid(), "the set holds the new key")
}

func TestKeysSealedAndSharedByReplicas(t *testing.T) {
	t.Parallel()
	e := authtest.New(t, authtest.Options{})
	// A second replica on the same schema signs with the same key.
	other := keys.NewKeyring(e.DB.Ent, e.Sealer, keys.Config{Alg: keys.AlgEdDSA, Retention: time.Minute}, e.Clock.Now)
	a, err := e.Keyring.Active(t.Context())
	require.NoError(t, err)
	b, err := other.Active(t.Context())
	require.NoError(t, err)
	assert.Equal(t, a.ID, b.ID)
	var sealed []byte
	require.NoError(t, e.DB.DB.QueryRowContext(t.Context(), "SELECT private_key_sealed FROM signing_keys").Scan(&sealed))
	seed := a.PublicKey().(ed25519.PublicKey)
	assert.NotContains(t, string(sealed), string(seed))
}

func loginInput() auth.LoginInput {
	return auth.LoginInput{Email: authtest.ActiveEmail, Password: authtest.Password}
}

func bearer[T any](msg *T, token string) *connect.Request[T] {
	req := connect.NewRequest(msg)
	req.Header().Set("Authorization", "Bearer "+token)
	return req
}

// TestOverConsul runs the service as it is deployed: its Connect server
// and the Identity stand-in's registered in a real Consul, Login reaching
// Identity's internal VerifyCredentials through the kernel's client
// factory with a service token, and the kernel's access policy in front.
func TestOverConsul(t *testing.T) {
	t.Parallel()
	consul := kerneltest.StartConsul(t)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	svcAuth := authntest.ServiceConfig()
	regCfg := registry.Config{Addr: consul.Addr(), CheckInterval: time.Second}

	// The Identity stand-in, accepting only calls with a service token.
	reg, err := registry.New(regCfg)
	require.NoError(t, err)
	services, err := authn.NewServiceVerifier("identitysvc", svcAuth)
	require.NoError(t, err)
	idSrv := rpc.NewServer("identitysvc", "test", rpc.Config{DeregisterDelay: time.Millisecond}, rpc.WithRegistry(reg), rpc.WithAccessPolicy(&rpc.AccessPolicy{Services: services}))
	idSrv.Handle(identityv1connect.NewIdentityServiceHandler(authtest.NewIdentity(), idSrv.HandlerOptions()...))
	idDone := make(chan error, 1)
	go func() { idDone <- idSrv.Run(ctx) }()

	kit, err := service.New("authsvc", "test", service.Config{
		Registry:    regCfg,
		ServiceAuth: svcAuth,
		Server:      rpc.Config{DeregisterDelay: time.Millisecond},
		Tokens:      authn.Config{JWKSURL: "http://authsvc" + handler.JWKSPath, Issuer: "portcullis", Audience: "portcullis"},
	}, nil)
	require.NoError(t, err)
	defer kit.Close()
	e := authtest.New(t, authtest.Options{Identity: rpc.NewClient(kit.Clients, "identitysvc", identityv1connect.NewIdentityServiceClient)})
	srv := kit.Server()
	srv.Handle(authv1connect.NewAuthServiceHandler(handler.New(e.Service, nil), srv.HandlerOptions()...))
	srv.HandleHTTP(handler.JWKSPath, handler.NewJWKSHandler(e.Keyring, nil))
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	addr, err := srv.Addr(ctx)
	require.NoError(t, err)
	base := "http://" + addr.String()
	client := authv1connect.NewAuthServiceClient(http.DefaultClient, base)

	var login *authv1.LoginResponse
	require.Eventually(t, func() bool {
		res, err := client.Login(ctx, connect.NewRequest(&authv1.LoginRequest{Email: authtest.ActiveEmail, Password: authtest.Password}))
		if err != nil {
			require.Equal(t, connect.CodeUnavailable, connect.CodeOf(err), "%v", err)
			return false
		}
		login = res.Msg
		return true
	}, 20*time.Second, 100*time.Millisecond, "identitysvc never became reachable through Consul")
	assert.Equal(t, "Bearer", login.GetTokenType())
	assert.Equal(t, int64(authtest.AccessTTL/time.Second), login.GetExpiresIn())

	// golang-jwt against the served JWKS, and the kernel's verifier with
	// the JWKS found through Consul.
	set, _ := fetchJWKS(t, base+handler.JWKSPath)
	_, err = verifyJWT(set, login.GetAccessToken(), time.Now(), true)
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		_, err := kit.Policy.Users.Authenticate(ctx, login.GetAccessToken())
		return err == nil
	}, 20*time.Second, 100*time.Millisecond, "the kernel verifier never accepted the token")
	jwks, err := client.GetJWKS(ctx, connect.NewRequest(&authv1.GetJWKSRequest{}))
	require.NoError(t, err)
	require.Len(t, jwks.Msg.GetKeys(), len(set))
	assert.Equal(t, "public, max-age=60", jwks.Header().Get("Cache-Control"))

	// Errors as the contract names them: every refused login is the same
	// error, so it tells nothing about the account; a busy Identity is
	// Unavailable, never mistaken for a refusal.
	_, wrong := client.Login(ctx, connect.NewRequest(&authv1.LoginRequest{Email: authtest.ActiveEmail, Password: "wrong password"}))
	require.Equal(t, connect.CodeUnauthenticated, connect.CodeOf(wrong))
	tests := []struct {
		email string
		code  connect.Code
	}{
		{authtest.LockedEmail, connect.CodeUnauthenticated},
		{authtest.DisabledEmail, connect.CodeUnauthenticated},
		{"nobody@example.com", connect.CodeUnauthenticated},
		{authtest.BusyEmail, connect.CodeUnavailable},
	}
	for _, tt := range tests {
		_, err := client.Login(ctx, connect.NewRequest(&authv1.LoginRequest{Email: tt.email, Password: authtest.Password}))
		assert.Equal(t, tt.code, connect.CodeOf(err), tt.email)
		if tt.code == connect.CodeUnauthenticated {
			assert.Equal(t, wrong.Error(), err.Error(), "%s is told apart from a wrong password", tt.email)
		}
	}
	_, err = client.Login(ctx, connect.NewRequest(&authv1.LoginRequest{}))
	assert.Equal(t, connect.CodeInvalidArgument, connect.CodeOf(err))

	// Self-service with the access token, through the access policy.
	// The second login comes through the gateway, which says who the client is.
	viaGateway := connect.NewRequest(&authv1.LoginRequest{Email: authtest.ActiveEmail, Password: authtest.Password})
	viaGateway.Header().Set(rpc.ClientIPHeader, "203.0.113.7")
	second, err := client.Login(ctx, viaGateway)
	require.NoError(t, err)
	list, err := client.ListSessions(ctx, bearer(&authv1.ListSessionsRequest{}, login.GetAccessToken()))
	require.NoError(t, err)
	require.Len(t, list.Msg.GetSessions(), 2)
	for _, s := range list.Msg.GetSessions() {
		assert.Equal(t, s.GetId() == login.GetSessionId(), s.GetCurrent())
		if s.GetId() == second.Msg.GetSessionId() {
			assert.Equal(t, "203.0.113.7", s.GetSourceIp(), "the client the gateway named, not the gateway")
		} else {
			assert.Equal(t, "127.0.0.1", s.GetSourceIp(), "the peer, for a call not through the gateway")
		}
		assert.Contains(t, s.GetUserAgent(), "connect-go")
	}
	_, err = client.ListSessions(ctx, connect.NewRequest(&authv1.ListSessionsRequest{}))
	assert.Equal(t, connect.CodeUnauthenticated, connect.CodeOf(err))
	all, err := client.RevokeAllSessions(ctx, bearer(&authv1.RevokeAllSessionsRequest{KeepCurrent: true}, login.GetAccessToken()))
	require.NoError(t, err)
	assert.Equal(t, int32(1), all.Msg.GetRevokedCount())
	_, err = client.Refresh(ctx, connect.NewRequest(&authv1.RefreshRequest{RefreshToken: second.Msg.GetRefreshToken()}))
	assert.Equal(t, connect.CodeUnauthenticated, connect.CodeOf(err))
	refreshed, err := client.Refresh(ctx, connect.NewRequest(&authv1.RefreshRequest{RefreshToken: login.GetRefreshToken()}))
	require.NoError(t, err)

	// TOTP: a login that fails only on the code carries TotpRequired.
	token := refreshed.Msg.GetAccessToken()
	// Enrolling needs the caller's password: the token alone is not enough.
	_, err = client.EnrollTOTP(ctx, bearer(&authv1.EnrollTOTPRequest{}, token))
	assert.Equal(t, connect.CodeInvalidArgument, connect.CodeOf(err))
	_, err = client.EnrollTOTP(ctx, bearer(&authv1.EnrollTOTPRequest{CurrentPassword: "not the password"}, token))
	assert.Equal(t, connect.CodePermissionDenied, connect.CodeOf(err))
	en, err := client.EnrollTOTP(ctx, bearer(&authv1.EnrollTOTPRequest{CurrentPassword: authtest.Password}, token))
	require.NoError(t, err)
	code, err := totp.GenerateCodeCustom(en.Msg.GetSecret(), e.Clock.Now(), totp.ValidateOpts{Period: 30, Digits: otp.DigitsSix, Algorithm: otp.AlgorithmSHA1})
	require.NoError(t, err)
	_, err = client.ConfirmTOTP(ctx, bearer(&authv1.ConfirmTOTPRequest{Code: code}, token))
	require.NoError(t, err)
	_, err = client.Login(ctx, connect.NewRequest(&authv1.LoginRequest{Email: authtest.ActiveEmail, Password: authtest.Password}))
	var cerr *connect.Error
	require.True(t, errors.As(err, &cerr))
	assert.Equal(t, connect.CodeUnauthenticated, cerr.Code())
	assert.Equal(t, "invalid credentials", cerr.Message())
	require.Len(t, cerr.Details(), 1)
	detail, err := cerr.Details()[0].Value()
	require.NoError(t, err)
	assert.IsType(t, &authv1.TotpRequired{}, detail)
	_, err = client.Login(ctx, connect.NewRequest(&authv1.LoginRequest{Email: authtest.ActiveEmail, Password: "wrong"}))
	require.True(t, errors.As(err, &cerr))
	assert.Empty(t, cerr.Details(), "no TOTP hint without the password")

	_, err = client.Logout(ctx, connect.NewRequest(&authv1.LogoutRequest{RefreshToken: refreshed.Msg.GetRefreshToken()}))
	require.NoError(t, err)

	cancel()
	require.NoError(t, <-done)
	require.NoError(t, <-idDone)
}
