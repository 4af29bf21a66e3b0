package auth_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/pquerna/otp"
	"github.com/pquerna/otp/totp"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"portcullis.dev/authsvc/internal/auth"
	"portcullis.dev/authsvc/internal/authtest"
	"portcullis.dev/kernel/database"
	"portcullis.dev/kernel/kerneltest"
	auditv1 "portcullis.dev/proto/audit/v1"
	identityv1 "portcullis.dev/proto/identity/v1"

	"portcullis.dev/authsvc/ent"
	"portcullis.dev/authsvc/ent/migrate"
)

func login(t *testing.T, e *authtest.Env, code string) *auth.TokenPair {
	t.Helper()
	p, err := e.Service.Login(t.Context(), auth.LoginInput{Email: authtest.ActiveEmail, Password: authtest.Password, TOTPCode: code, SourceIP: "192.0.2.1", UserAgent: "test/1.0"})
	require.NoError(t, err)
	return p
}

func TestMigrations(t *testing.T) {
	t.Parallel()
	url, _ := kerneltest.Postgres(t)
	require.NoError(t, database.CheckMigrations(t.Context(), url, ent.Migrations(), migrate.Tables))
}

func TestLogin(t *testing.T) {
	t.Parallel()
	e := authtest.New(t, authtest.Options{})
	tests := []struct {
		name, email, password string
		want                  error
		invalid               bool
	}{
		{name: "ok", email: authtest.ActiveEmail, password: authtest.Password},
		{name: "wrong password", email: authtest.ActiveEmail, password: "nope", want: auth.ErrInvalidCredentials},
		{name: "unknown email", email: "who@example.com", password: authtest.Password, want: auth.ErrInvalidCredentials},
		{name: "locked", email: authtest.LockedEmail, password: authtest.Password, want: auth.ErrInvalidCredentials},
		{name: "disabled", email: authtest.DisabledEmail, password: authtest.Password, want: auth.ErrInvalidCredentials},
		{name: "identity busy", email: authtest.BusyEmail, password: authtest.Password, want: auth.ErrIdentityUnavailable},
		{name: "no email", password: authtest.Password, invalid: true},
		{name: "no password", email: authtest.ActiveEmail, invalid: true},
		// The email goes into the audit event of a failed login.
		{name: "email with NUL", email: "alice\x00@example.com", password: authtest.Password, invalid: true},
		{name: "email not UTF-8", email: "al\xefce@example.com", password: authtest.Password, invalid: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := e.Service.Login(t.Context(), auth.LoginInput{Email: tt.email, Password: tt.password})
			switch {
			case tt.invalid:
				var inv *auth.InvalidArgumentError
				require.ErrorAs(t, err, &inv)
			case tt.want != nil:
				require.ErrorIs(t, err, tt.want)
				assert.Nil(t, p)
				if tt.want == auth.ErrInvalidCredentials {
					assert.NotErrorIs(t, err, auth.ErrIdentityUnavailable)
				}
			default:
				require.NoError(t, err)
				assert.NotEmpty(t, p.AccessToken)
				assert.NotEmpty(t, p.RefreshToken)
				assert.Equal(t, authtest.AccessTTL, p.ExpiresIn)
				assert.Equal(t, 24*time.Hour, p.RefreshExpiresIn)
			}
		})
	}
	actions, events := e.Events(t)
	assert.Equal(t, []string{"auth.login.succeeded", "auth.login.failed", "auth.login.failed", "auth.login.failed", "auth.login.failed"}, actions)
	var reasons []string
	for _, ev := range events[1:] {
		reasons = append(reasons, ev.GetMetadata()["reason"])
	}
	// Identity does not say why, so neither can the audit log; a busy
	// Identity is no failed login.
	assert.Equal(t, []string{"invalid_credentials", "invalid_credentials", "invalid_credentials", "invalid_credentials"}, reasons)
}

// TestLoginClientInfo checks that what a client says about itself is kept
// as well as the database can store it, and never stops the login.
func TestLoginClientInfo(t *testing.T) {
	t.Parallel()
	e := authtest.New(t, authtest.Options{})
	tests := []struct {
		name, userAgent, wantUserAgent, sourceIP, wantSourceIP string
	}{
		{name: "ASCII", userAgent: "test/1.0", wantUserAgent: "test/1.0"},
		{name: "UTF-8", userAgent: "caf\u00e9/1.0", wantUserAgent: "caf\u00e9/1.0"},
		{name: "Latin-1", userAgent: "Mozilla/5.0 (caf\xe9)", wantUserAgent: "Mozilla/5.0 (caf\uFFFD)"},
		{name: "NUL", userAgent: "a\x00b", wantUserAgent: "ab"},
		{name: "long", userAgent: strings.Repeat("a", 600), wantUserAgent: strings.Repeat("a", 512)},
		{name: "long, a character across the cut", userAgent: strings.Repeat("a", 511) + "\u00e9", wantUserAgent: strings.Repeat("a", 511)},
		{name: "long, Latin-1 at the cut", userAgent: strings.Repeat("a", 510) + "\xe9\xe9\xe9", wantUserAgent: strings.Repeat("a", 510)},
		{name: "source IP with NUL", sourceIP: "192.0.2.1\x00", wantSourceIP: "192.0.2.1"},
		{name: "source IP not UTF-8", sourceIP: "192.0.2.\xff", wantSourceIP: "192.0.2.\uFFFD"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := e.Service.Login(t.Context(), auth.LoginInput{
				Email: authtest.ActiveEmail, Password: authtest.Password, SourceIP: tt.sourceIP, UserAgent: tt.userAgent,
			})
			require.NoError(t, err)
			sessions, _, err := e.Service.ListSessions(t.Context(), authtest.ActiveID, 0, "")
			require.NoError(t, err)
			require.NotEmpty(t, sessions)
			s := sessions[0]
			require.Equal(t, p.SessionID, s.ID)
			assert.Equal(t, tt.wantUserAgent, s.UserAgent)
			assert.Equal(t, tt.wantSourceIP, s.SourceIP)
			e.Clock.Advance(time.Second) // the next session is newest
		})
	}
	_, events := e.Events(t)
	require.Len(t, events, len(tests))
	for i, ev := range events {
		assert.Equal(t, "auth.login.succeeded", ev.GetAction())
		assert.Equal(t, tests[i].wantSourceIP, ev.GetMetadata()["source_ip"])
		assert.Equal(t, auditv1.ActorType_ACTOR_TYPE_USER, ev.GetActor().GetType(), "who logged in is who acted")
		assert.Equal(t, authtest.ActiveID, ev.GetActor().GetId())
	}
}

// identityAnswer is an Identity service that gives one fixed answer.
type identityAnswer struct {
	mu  sync.Mutex
	res *identityv1.VerifyCredentialsResponse
	err error
}

func (a *identityAnswer) set(res *identityv1.VerifyCredentialsResponse, err error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.res, a.err = res, err
}

func (a *identityAnswer) VerifyCredentials(context.Context, *connect.Request[identityv1.VerifyCredentialsRequest]) (*connect.Response[identityv1.VerifyCredentialsResponse], error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.err != nil {
		return nil, a.err
	}
	return connect.NewResponse(a.res), nil
}

func (a *identityAnswer) VerifyPassword(context.Context, *connect.Request[identityv1.VerifyPasswordRequest]) (*connect.Response[identityv1.VerifyPasswordResponse], error) {
	return nil, connect.NewError(connect.CodeUnimplemented, errors.New("not in this test"))
}

// TestLoginOtherIdentityAnswers covers what the stand-in does not: busy
// and slow Identity services, and the answers of an Identity service from
// before its contract refused locked and disabled users alike
// (ResourceExhausted for a lock, success for a disabled user), as during a
// rolling upgrade.
func TestLoginOtherIdentityAnswers(t *testing.T) {
	t.Parallel()
	identity := &identityAnswer{}
	e := authtest.New(t, authtest.Options{Identity: identity})
	tests := []struct {
		name   string
		res    *identityv1.VerifyCredentialsResponse
		err    error
		want   error
		reason string // of the auth.login.failed event; "" for none
	}{
		{name: "busy", err: connect.NewError(connect.CodeUnavailable, errors.New("busy")), want: auth.ErrIdentityUnavailable},
		{name: "deadline", err: connect.NewError(connect.CodeDeadlineExceeded, errors.New("slow")), want: auth.ErrIdentityUnavailable},
		{name: "older Identity, locked or busy", err: connect.NewError(connect.CodeResourceExhausted, errors.New("account temporarily locked")), want: auth.ErrIdentityUnavailable},
		{
			name:   "older Identity, disabled user",
			res:    &identityv1.VerifyCredentialsResponse{UserId: authtest.DisabledID, Status: identityv1.UserStatus_USER_STATUS_DISABLED, EmailVerified: true},
			want:   auth.ErrInvalidCredentials,
			reason: "disabled",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			identity.set(tt.res, tt.err)
			before, _ := e.Events(t)
			p, err := e.Service.Login(t.Context(), auth.LoginInput{Email: authtest.DisabledEmail, Password: authtest.Password})
			require.ErrorIs(t, err, tt.want)
			assert.Nil(t, p)
			actions, events := e.Events(t)
			if tt.reason == "" {
				assert.Equal(t, before, actions, "audited as a failed login")
				return
			}
			require.Len(t, actions, len(before)+1)
			ev := events[len(events)-1]
			assert.Equal(t, "auth.login.failed", ev.GetAction())
			assert.Equal(t, tt.reason, ev.GetMetadata()["reason"])
			assert.Equal(t, "user:"+authtest.DisabledID, ev.GetTarget())
		})
	}
}

func TestRefreshRotationAndReuse(t *testing.T) {
	t.Parallel()
	e := authtest.New(t, authtest.Options{})
	first := login(t, e, "")
	e.Clock.Advance(time.Minute)
	second, err := e.Service.Refresh(t.Context(), first.RefreshToken)
	require.NoError(t, err)
	assert.NotEqual(t, first.RefreshToken, second.RefreshToken)
	assert.Equal(t, first.SessionID, second.SessionID)
	third, err := e.Service.Refresh(t.Context(), second.RefreshToken)
	require.NoError(t, err)

	// The first token again: theft. The whole family goes.
	_, err = e.Service.Refresh(t.Context(), first.RefreshToken)
	require.ErrorIs(t, err, auth.ErrInvalidRefreshToken)
	_, err = e.Service.Refresh(t.Context(), third.RefreshToken)
	require.ErrorIs(t, err, auth.ErrInvalidRefreshToken, "the latest token of the family is revoked too")
	sessions, _, err := e.Service.ListSessions(t.Context(), authtest.ActiveID, 0, "")
	require.NoError(t, err)
	assert.Empty(t, sessions)

	actions, events := e.Events(t)
	assert.Equal(t, []string{"auth.login.succeeded", "auth.session.refreshed", "auth.session.refreshed", "auth.refresh.reuse_detected"}, actions)
	assert.Equal(t, authtest.ActiveID, events[1].GetActor().GetId(), "a refresh's actor is the session's user")

	for _, bad := range []string{"garbage", "", first.RefreshToken + "x"} {
		_, err = e.Service.Refresh(t.Context(), bad)
		require.Error(t, err, bad)
	}
}

// TestNothingCommitsWithoutTokens: when the access token cannot be
// signed (the keyring cannot read its keys), Login and Refresh change
// nothing. A refresh token rotated but never answered would be "reused"
// when the client tries again, and its session revoked as stolen.
func TestNothingCommitsWithoutTokens(t *testing.T) {
	t.Parallel()
	e := authtest.New(t, authtest.Options{})
	first := login(t, e, "")
	e.Clock.Advance(time.Minute) // the keyring's cached key is stale: it reads the keys again
	_, err := e.DB.Ent.ExecContext(t.Context(), `ALTER TABLE signing_keys RENAME TO signing_keys_away`)
	require.NoError(t, err)

	_, err = e.Service.Refresh(t.Context(), first.RefreshToken)
	require.Error(t, err)
	_, err = e.Service.Login(t.Context(), auth.LoginInput{Email: authtest.ActiveEmail, Password: authtest.Password})
	require.Error(t, err)

	_, err = e.DB.Ent.ExecContext(t.Context(), `ALTER TABLE signing_keys_away RENAME TO signing_keys`)
	require.NoError(t, err)
	second, err := e.Service.Refresh(t.Context(), first.RefreshToken)
	require.NoError(t, err, "the client's retry with the same token")
	assert.Equal(t, first.SessionID, second.SessionID)
	sessions, _, err := e.Service.ListSessions(t.Context(), authtest.ActiveID, 0, "")
	require.NoError(t, err)
	assert.Len(t, sessions, 1, "the failed login left a session")
	actions, _ := e.Events(t)
	assert.Equal(t, []string{"auth.login.succeeded", "auth.session.refreshed"}, actions)
}

func TestConcurrentRefreshExactlyOneWins(t *testing.T) {
	t.Parallel()
	e := authtest.New(t, authtest.Options{})
	p := login(t, e, "")
	const n = 8
	var wg sync.WaitGroup
	errs := make([]error, n)
	start := make(chan struct{})
	for i := range n {
		wg.Go(func() {
			<-start
			_, errs[i] = e.Service.Refresh(context.Background(), p.RefreshToken)
		})
	}
	close(start)
	wg.Wait()
	wins := 0
	for _, err := range errs {
		if err == nil {
			wins++
		} else {
			require.ErrorIs(t, err, auth.ErrInvalidRefreshToken)
		}
	}
	assert.Equal(t, 1, wins)
}

func TestRefreshExpiry(t *testing.T) {
	t.Parallel()
	cfg := authtest.Config()
	tests := []struct {
		name  string
		steps []time.Duration // refresh after each
		ok    bool
	}{
		{name: "within idle", steps: []time.Duration{cfg.RefreshIdleTTL - time.Second}, ok: true},
		{name: "idle expired", steps: []time.Duration{cfg.RefreshIdleTTL}},
		{name: "kept alive until absolute", steps: []time.Duration{20 * time.Hour, 20 * time.Hour, 20 * time.Hour, 20 * time.Hour}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			e := authtest.New(t, authtest.Options{})
			token := login(t, e, "").RefreshToken
			var err error
			for i, d := range tt.steps {
				e.Clock.Advance(d)
				var p *auth.TokenPair
				p, err = e.Service.Refresh(t.Context(), token)
				if i < len(tt.steps)-1 {
					require.NoError(t, err)
					token = p.RefreshToken
				}
			}
			if tt.ok {
				require.NoError(t, err)
			} else {
				require.ErrorIs(t, err, auth.ErrInvalidRefreshToken)
			}
		})
	}
}

func TestLogout(t *testing.T) {
	t.Parallel()
	e := authtest.New(t, authtest.Options{})
	p := login(t, e, "")
	require.NoError(t, e.Service.Logout(t.Context(), p.RefreshToken))
	require.NoError(t, e.Service.Logout(t.Context(), p.RefreshToken), "again")
	require.NoError(t, e.Service.Logout(t.Context(), "unknown-token"))
	_, err := e.Service.Refresh(t.Context(), p.RefreshToken)
	require.ErrorIs(t, err, auth.ErrInvalidRefreshToken)
	actions, events := e.Events(t)
	assert.Equal(t, []string{"auth.login.succeeded", "auth.logout"}, actions)
	assert.Equal(t, authtest.ActiveID, events[1].GetMetadata()["user_id"], "whose logout it was")
}

func TestSessions(t *testing.T) {
	t.Parallel()
	e := authtest.New(t, authtest.Options{})
	var pairs []*auth.TokenPair
	for range 5 {
		pairs = append(pairs, login(t, e, ""))
		e.Clock.Advance(time.Second)
	}
	// Paging, newest first.
	var seen []string
	token := ""
	for {
		page, next, err := e.Service.ListSessions(t.Context(), authtest.ActiveID, 2, token)
		require.NoError(t, err)
		for _, s := range page {
			seen = append(seen, s.ID)
			assert.Equal(t, "192.0.2.1", s.SourceIP)
			assert.Equal(t, "test/1.0", s.UserAgent)
		}
		if next == "" {
			break
		}
		token = next
	}
	require.Len(t, seen, 5)
	assert.Equal(t, pairs[4].SessionID, seen[0])
	assert.Equal(t, pairs[0].SessionID, seen[4])
	_, _, err := e.Service.ListSessions(t.Context(), authtest.DisabledID, 2, token)
	require.Error(t, err, "a page token of another user's listing")

	require.ErrorIs(t, e.Service.RevokeSession(t.Context(), authtest.DisabledID, pairs[0].SessionID), auth.ErrSessionNotFound)
	require.NoError(t, e.Service.RevokeSession(t.Context(), authtest.ActiveID, pairs[0].SessionID))
	require.NoError(t, e.Service.RevokeSession(t.Context(), authtest.ActiveID, pairs[0].SessionID), "revoking again succeeds")

	n, err := e.Service.RevokeAllSessions(t.Context(), authtest.ActiveID, pairs[4].SessionID)
	require.NoError(t, err)
	assert.Equal(t, 3, n)
	left, _, err := e.Service.ListSessions(t.Context(), authtest.ActiveID, 0, "")
	require.NoError(t, err)
	require.Len(t, left, 1)
	assert.Equal(t, pairs[4].SessionID, left[0].ID)
	for _, p := range pairs[:4] {
		_, err := e.Service.Refresh(t.Context(), p.RefreshToken)
		require.ErrorIs(t, err, auth.ErrInvalidRefreshToken)
	}
	n, err = e.Service.RevokeAllSessions(t.Context(), authtest.ActiveID, "")
	require.NoError(t, err)
	assert.Equal(t, 1, n)
}

func code(t *testing.T, secret string, at time.Time) string {
	t.Helper()
	c, err := totp.GenerateCodeCustom(secret, at, totp.ValidateOpts{Period: 30, Digits: otp.DigitsSix, Algorithm: otp.AlgorithmSHA1})
	require.NoError(t, err)
	return c
}

func TestTOTP(t *testing.T) {
	t.Parallel()
	e := authtest.New(t, authtest.Options{})
	ctx := t.Context()
	user := authtest.ActiveID

	require.ErrorIs(t, e.Service.ConfirmTOTP(ctx, user, "123456"), auth.ErrTOTPNotPending)
	en, err := e.Service.EnrollTOTP(ctx, user, authtest.Password)
	require.NoError(t, err)
	assert.Contains(t, en.URI, "otpauth://totp/")
	key, err := otp.NewKeyFromURL(en.URI)
	require.NoError(t, err)
	assert.Equal(t, authtest.ActiveEmail, key.AccountName(), "the app's entry is named so its owner knows it")
	// Enrolling again before confirming replaces the secret.
	en2, err := e.Service.EnrollTOTP(ctx, user, authtest.Password)
	require.NoError(t, err)
	assert.NotEqual(t, en.Secret, en2.Secret)
	require.ErrorIs(t, e.Service.ConfirmTOTP(ctx, user, code(t, en.Secret, e.Clock.Now())), auth.ErrInvalidTOTPCode)
	// Pending TOTP does not affect login yet.
	login(t, e, "")
	require.NoError(t, e.Service.ConfirmTOTP(ctx, user, code(t, en2.Secret, e.Clock.Now())))
	_, err = e.Service.EnrollTOTP(ctx, user, authtest.Password)
	require.ErrorIs(t, err, auth.ErrTOTPAlreadyEnabled)

	e.Clock.Advance(30 * time.Second)
	try := func(c string) error {
		_, err := e.Service.Login(ctx, auth.LoginInput{Email: authtest.ActiveEmail, Password: authtest.Password, TOTPCode: c})
		return err
	}
	now := e.Clock.Now()
	require.ErrorIs(t, try(""), auth.ErrTOTPRequired, "missing")
	require.ErrorIs(t, try("000000"), auth.ErrTOTPRequired, "wrong")
	require.ErrorIs(t, try(code(t, en2.Secret, now.Add(-5*time.Minute))), auth.ErrTOTPRequired, "old")
	_, err = e.Service.Login(ctx, auth.LoginInput{Email: authtest.ActiveEmail, Password: "nope", TOTPCode: code(t, en2.Secret, now)})
	require.ErrorIs(t, err, auth.ErrInvalidCredentials, "a wrong password with a right code says nothing about TOTP")
	require.NoError(t, try(code(t, en2.Secret, now)))
	require.ErrorIs(t, try(code(t, en2.Secret, now)), auth.ErrTOTPRequired, "replayed")
	// The previous step is inside the window but older than the used one.
	require.ErrorIs(t, try(code(t, en2.Secret, now.Add(-30*time.Second))), auth.ErrTOTPRequired, "earlier step")
	// The next step (clock skew) is accepted once.
	require.NoError(t, try(code(t, en2.Secret, now.Add(30*time.Second))))

	// Turning it off needs a fresh code from the user, none from an admin.
	e.Clock.Advance(90 * time.Second)
	require.Error(t, e.Service.DisableTOTP(ctx, user, true, ""))
	require.ErrorIs(t, e.Service.DisableTOTP(ctx, user, true, "000000"), auth.ErrInvalidTOTPCode)
	require.NoError(t, e.Service.DisableTOTP(ctx, user, true, code(t, en2.Secret, e.Clock.Now())))
	require.NoError(t, e.Service.DisableTOTP(ctx, user, true, ""), "off already")
	login(t, e, "")

	actions, events := e.Events(t)
	assert.Contains(t, actions, "auth.totp.enabled")
	assert.Contains(t, actions, "auth.totp.disabled")
	var reasons []string
	for _, ev := range events {
		if ev.GetAction() == "auth.login.failed" {
			reasons = append(reasons, ev.GetMetadata()["reason"])
		}
	}
	assert.Equal(t, []string{"totp_missing", "totp_invalid", "totp_invalid", "invalid_credentials", "totp_replayed", "totp_replayed"}, reasons)
}

func TestTOTPSecretSealedAtRest(t *testing.T) {
	t.Parallel()
	e := authtest.New(t, authtest.Options{})
	en, err := e.Service.EnrollTOTP(t.Context(), authtest.ActiveID, authtest.Password)
	require.NoError(t, err)
	var stored []byte
	require.NoError(t, e.DB.DB.QueryRowContext(t.Context(), "SELECT secret_sealed FROM totp_credentials").Scan(&stored))
	assert.NotContains(t, string(stored), en.Secret)
	plain, err := e.Sealer.Open(stored, "totp:"+authtest.ActiveID)
	require.NoError(t, err)
	assert.Equal(t, en.Secret, string(plain))
	_, err = e.Sealer.Open(stored, "totp:someone-else")
	require.Error(t, err, "bound to its user")
}

func TestAdminDisablesTOTP(t *testing.T) {
	t.Parallel()
	e := authtest.New(t, authtest.Options{})
	en, err := e.Service.EnrollTOTP(t.Context(), authtest.ActiveID, authtest.Password)
	require.NoError(t, err)
	require.NoError(t, e.Service.ConfirmTOTP(t.Context(), authtest.ActiveID, code(t, en.Secret, e.Clock.Now())))
	require.NoError(t, e.Service.DisableTOTP(t.Context(), authtest.ActiveID, false, ""))
	login(t, e, "")
}
