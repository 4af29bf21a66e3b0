package auth_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/google/uuid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"portcullis.dev/authsvc/internal/auth"
	"portcullis.dev/authsvc/internal/authtest"
	identityv1 "portcullis.dev/proto/identity/v1"
)

func TestEndUserSessions(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, userID, reason string
		keep                 bool   // the second session is the exception
		except               string // an exception of the test's own
		invalid              string
		wantEnded            int
	}{
		{name: "all", userID: authtest.ActiveID, reason: "user_disabled", wantEnded: 2},
		{name: "all but one", userID: authtest.ActiveID, reason: "password_changed", keep: true, wantEnded: 1},
		{name: "another spelling of the UUID", userID: strings.ToUpper(authtest.ActiveID), reason: "user_deleted", wantEnded: 2},
		{name: "a user without sessions", userID: authtest.DisabledID, reason: "user_disabled"},
		{name: "user_id not a UUID", userID: "alice@example.com", reason: "user_disabled", invalid: "user_id"},
		{name: "no user_id", reason: "user_disabled", invalid: "user_id"},
		{name: "no reason", userID: authtest.ActiveID, invalid: "reason"},
		{name: "reason not a word", userID: authtest.ActiveID, reason: "user disabled", invalid: "reason"},
		{name: "reason in capitals", userID: authtest.ActiveID, reason: "USER_DISABLED", invalid: "reason"},
		{name: "reason too long", userID: authtest.ActiveID, reason: strings.Repeat("x", 65), invalid: "reason"},
		{name: "except_session_id with NUL", userID: authtest.ActiveID, reason: "user_disabled", except: "\x00", invalid: "except_session_id"},
		{name: "except_session_id not a UUID", userID: authtest.ActiveID, reason: "user_disabled", except: "session-2", invalid: "except_session_id"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			e := authtest.New(t, authtest.Options{})
			pairs := []*auth.TokenPair{login(t, e, ""), login(t, e, "")}
			except := ""
			if tt.keep {
				except = pairs[1].SessionID
			}
			if tt.except != "" {
				except = tt.except
			}
			n, err := e.Service.EndUserSessions(t.Context(), tt.userID, tt.reason, except, 0)
			if tt.invalid != "" {
				var inv *auth.InvalidArgumentError
				require.ErrorAs(t, err, &inv)
				assert.Equal(t, tt.invalid, inv.Field)
				left, _, err := e.Service.ListSessions(t.Context(), authtest.ActiveID, 0, "")
				require.NoError(t, err)
				assert.Len(t, left, 2, "a refused call ended sessions")
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tt.wantEnded, n)
			for i, p := range pairs {
				_, err := e.Service.Refresh(t.Context(), p.RefreshToken)
				if tt.wantEnded == 0 || (tt.keep && i == 1) {
					require.NoError(t, err, "session %d ended", i)
				} else {
					require.ErrorIs(t, err, auth.ErrInvalidRefreshToken, "session %d still refreshes", i)
				}
			}
			if tt.wantEnded > 0 {
				var reason string
				require.NoError(t, e.DB.DB.QueryRowContext(t.Context(),
					"SELECT revoke_reason FROM sessions WHERE id = $1", pairs[0].SessionID).Scan(&reason))
				assert.Equal(t, tt.reason, reason)
			}
			_, events := e.Events(t)
			require.Greater(t, len(events), 2)
			ev := events[2] // after the two logins, before the refreshes
			assert.Equal(t, "auth.sessions.revoked_all", ev.GetAction())
			assert.Equal(t, "user:"+strings.ToLower(tt.userID), ev.GetTarget(), "not the canonical user ID")
			assert.Equal(t, tt.reason, ev.GetMetadata()["reason"])

			again, err := e.Service.EndUserSessions(t.Context(), tt.userID, tt.reason, except, 0)
			require.NoError(t, err, "a repeated call fails")
			assert.Zero(t, again, "a repeated call ended sessions")
		})
	}
}

// TestEndUserSessionsEndsSessionsThisClockThinksOver: "expired" is one
// replica's clock, and a replica whose clock lags could refresh a session
// the one that ended them skipped; so sessions that ended in the last
// minutes (maxClockSkew) end too, uncounted.
func TestEndUserSessionsEndsSessionsThisClockThinksOver(t *testing.T) {
	t.Parallel()
	e := authtest.New(t, authtest.Options{})
	p := login(t, e, "")
	skew := p.RefreshExpiresIn + time.Second // the session is idle past its expiry, on this clock
	e.Clock.Advance(skew)
	login(t, e, "")
	n, err := e.Service.EndUserSessions(t.Context(), authtest.ActiveID, "password_changed", "", 0)
	require.NoError(t, err)
	assert.Equal(t, 1, n, "counted: the sessions active on this clock")
	e.Clock.Advance(-skew) // a replica whose clock lags
	_, err = e.Service.Refresh(t.Context(), p.RefreshToken)
	require.ErrorIs(t, err, auth.ErrInvalidRefreshToken)
}

// TestALateEndSparesTheSessionsBegunSince: an end that comes late (the
// Auth service was down, and Identity retried) ends the sessions there
// were at the change, not the ones the user began since, such as after
// being enabled again.
func TestALateEndSparesTheSessionsBegunSince(t *testing.T) {
	t.Parallel()
	e := authtest.New(t, authtest.Options{})
	before := login(t, e, "")
	e.Clock.Advance(10 * time.Minute)
	since := login(t, e, "")
	n, err := e.Service.EndUserSessions(t.Context(), authtest.ActiveID, "user_disabled", "", 10*time.Minute)
	require.NoError(t, err)
	assert.Equal(t, 1, n)
	_, err = e.Service.Refresh(t.Context(), before.RefreshToken)
	require.ErrorIs(t, err, auth.ErrInvalidRefreshToken, "a session there was at the change")
	_, err = e.Service.Refresh(t.Context(), since.RefreshToken)
	require.NoError(t, err, "a session begun since")

	// Within the clock skew tolerated between services, a session ends.
	e.Clock.Advance(time.Minute)
	recent := login(t, e, "")
	_, err = e.Service.EndUserSessions(t.Context(), authtest.ActiveID, "user_disabled", "", time.Minute)
	require.NoError(t, err)
	_, err = e.Service.Refresh(t.Context(), recent.RefreshToken)
	require.ErrorIs(t, err, auth.ErrInvalidRefreshToken)
}

func TestRevokeSessionArguments(t *testing.T) {
	t.Parallel()
	e := authtest.New(t, authtest.Options{})
	sid := login(t, e, "").SessionID
	tests := []struct {
		name, userID, sessionID string
		invalid                 string // the field refused
		want                    error
	}{
		{name: "no session_id", userID: authtest.ActiveID, invalid: "session_id"},
		{name: "session_id with NUL", userID: authtest.ActiveID, sessionID: "\x00", invalid: "session_id"},
		{name: "session_id not a UUID", userID: authtest.ActiveID, sessionID: "session-1", invalid: "session_id"},
		{name: "session_id without hyphens", userID: authtest.ActiveID, sessionID: strings.ReplaceAll(sid, "-", ""), invalid: "session_id"},
		{name: "user_id with NUL", userID: "\x00", sessionID: sid, invalid: "user_id"},
		{name: "user_id not a UUID", userID: authtest.ActiveEmail, sessionID: sid, invalid: "user_id"},
		{name: "unknown session", userID: authtest.ActiveID, sessionID: uuid.NewString(), want: auth.ErrSessionNotFound},
		{name: "another user's session", userID: authtest.DisabledID, sessionID: sid, want: auth.ErrSessionNotFound},
		{name: "own session", userID: authtest.ActiveID, sessionID: sid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := e.Service.RevokeSession(t.Context(), tt.userID, tt.sessionID)
			switch {
			case tt.invalid != "":
				var inv *auth.InvalidArgumentError
				require.ErrorAs(t, err, &inv)
				assert.Equal(t, tt.invalid, inv.Field)
			case tt.want != nil:
				require.ErrorIs(t, err, tt.want)
			default:
				require.NoError(t, err)
			}
		})
	}
	left, _, err := e.Service.ListSessions(t.Context(), authtest.ActiveID, 0, "")
	require.NoError(t, err)
	assert.Empty(t, left)
}

func TestRevokeAllSessionsUserID(t *testing.T) {
	t.Parallel()
	e := authtest.New(t, authtest.Options{})
	login(t, e, "")
	for _, userID := range []string{"", "\x00", authtest.ActiveEmail, strings.ReplaceAll(authtest.ActiveID, "-", "")} {
		_, err := e.Service.RevokeAllSessions(t.Context(), userID, "")
		var inv *auth.InvalidArgumentError
		require.ErrorAs(t, err, &inv, "%q", userID)
		assert.Equal(t, "user_id", inv.Field)
	}
	left, _, err := e.Service.ListSessions(t.Context(), authtest.ActiveID, 0, "")
	require.NoError(t, err)
	assert.Len(t, left, 1, "a refused call ended sessions")
}

// TestListSessionsPageToken checks that a page token a client made up
// rather than received is refused as one, whatever it holds.
func TestListSessionsPageToken(t *testing.T) {
	t.Parallel()
	e := authtest.New(t, authtest.Options{})
	for range 3 {
		login(t, e, "")
		e.Clock.Advance(time.Second)
	}
	first, next, err := e.Service.ListSessions(t.Context(), authtest.ActiveID, 1, "")
	require.NoError(t, err)
	require.Len(t, first, 1)
	require.NotEmpty(t, next)
	made := func(u string, c int64, i string) string {
		b, err := json.Marshal(map[string]any{"u": u, "c": c, "i": i})
		require.NoError(t, err)
		return base64.RawURLEncoding.EncodeToString(b)
	}
	at := first[0].CreatedAt.UnixNano()
	tests := []struct {
		name, userID, token string
		invalid             string // the field refused
	}{
		{name: "issued", userID: authtest.ActiveID, token: next},
		{name: "issued, remade", userID: authtest.ActiveID, token: made(authtest.ActiveID, at, first[0].ID)},
		{name: "of another user's listing", userID: authtest.DisabledID, token: next, invalid: "page_token"},
		{name: "not base64", userID: authtest.ActiveID, token: "not a token!", invalid: "page_token"},
		{name: "not JSON", userID: authtest.ActiveID, token: base64.RawURLEncoding.EncodeToString([]byte("nope")), invalid: "page_token"},
		{name: "session ID with NUL", userID: authtest.ActiveID, token: made(authtest.ActiveID, 0, "\x00"), invalid: "page_token"},
		{name: "session ID with NUL, real time", userID: authtest.ActiveID, token: made(authtest.ActiveID, at, "\x00"), invalid: "page_token"},
		{name: "session ID not a UUID", userID: authtest.ActiveID, token: made(authtest.ActiveID, at, "zzz"), invalid: "page_token"},
		{name: "session ID without hyphens", userID: authtest.ActiveID, token: made(authtest.ActiveID, at, strings.ReplaceAll(first[0].ID, "-", "")), invalid: "page_token"},
		{name: "no session ID", userID: authtest.ActiveID, token: made(authtest.ActiveID, at, ""), invalid: "page_token"},
		{name: "time zero", userID: authtest.ActiveID, token: made(authtest.ActiveID, 0, first[0].ID), invalid: "page_token"},
		{name: "time before 1970", userID: authtest.ActiveID, token: made(authtest.ActiveID, -1, first[0].ID), invalid: "page_token"},
		{name: "time in the future", userID: authtest.ActiveID, token: made(authtest.ActiveID, e.Clock.Now().Add(48*time.Hour).UnixNano(), first[0].ID), invalid: "page_token"},
		{name: "user_id with NUL", userID: "\x00", invalid: "user_id"},
		{name: "user_id not a UUID", userID: authtest.ActiveEmail, invalid: "user_id"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			page, _, err := e.Service.ListSessions(t.Context(), tt.userID, 1, tt.token)
			if tt.invalid == "" {
				require.NoError(t, err)
				require.Len(t, page, 1)
				assert.True(t, page[0].CreatedAt.Before(first[0].CreatedAt), "not the next page")
				return
			}
			var inv *auth.InvalidArgumentError
			require.ErrorAs(t, err, &inv)
			assert.Equal(t, tt.invalid, inv.Field)
		})
	}
}

// slowIdentity holds every credential check until release is closed,
// saying when one has begun.
type slowIdentity struct {
	auth.Identity
	begun, release chan struct{}
}

func (s *slowIdentity) VerifyCredentials(ctx context.Context, req *connect.Request[identityv1.VerifyCredentialsRequest]) (*connect.Response[identityv1.VerifyCredentialsResponse], error) {
	s.begun <- struct{}{}
	<-s.release
	return s.Identity.VerifyCredentials(ctx, req)
}

// TestLoginRacingEndUserSessions: a login that checked the credentials
// before the user was disabled, and goes on after Identity had the Auth
// service end the user's sessions, gets no session.
func TestLoginRacingEndUserSessions(t *testing.T) {
	t.Parallel()
	slow := &slowIdentity{Identity: authtest.NewIdentity(), begun: make(chan struct{}, 1), release: make(chan struct{})}
	e := authtest.New(t, authtest.Options{Identity: slow})
	type result struct {
		pair *auth.TokenPair
		err  error
	}
	done := make(chan result, 1)
	go func() {
		p, err := e.Service.Login(t.Context(), auth.LoginInput{Email: authtest.ActiveEmail, Password: authtest.Password})
		done <- result{p, err}
	}()
	<-slow.begun // Identity disables the user meanwhile
	_, err := e.Service.EndUserSessions(t.Context(), authtest.ActiveID, "user_disabled", "", 0)
	require.NoError(t, err)
	close(slow.release)
	res := <-done
	require.ErrorIs(t, res.err, auth.ErrInvalidCredentials, "the racing login got a session")
	_, events := e.Events(t)
	last := events[len(events)-1]
	assert.Equal(t, "auth.login.failed", last.GetAction())
	assert.Equal(t, "sessions_ended", last.GetMetadata()["reason"])

	// Logins that begin after the end are not refused.
	slow.begun = make(chan struct{}, 10)
	kept, other := login(t, e, ""), login(t, e, "")

	_, err = e.Service.EndUserSessions(t.Context(), authtest.ActiveID, "password_changed", kept.SessionID, 0)
	require.NoError(t, err)
	_, err = e.Service.Refresh(t.Context(), other.RefreshToken)
	require.ErrorIs(t, err, auth.ErrInvalidRefreshToken)
	_, err = e.Service.Refresh(t.Context(), kept.RefreshToken)
	assert.NoError(t, err, "the kept session was ended")

	// A cutoff never moves back (one set by a primary whose clock ran
	// ahead, say).
	var ahead time.Time
	require.NoError(t, e.DB.DB.QueryRowContext(t.Context(),
		"UPDATE session_cutoffs SET ended_before = clock_timestamp() + interval '1 hour' WHERE id = $1 RETURNING ended_before", authtest.ActiveID).Scan(&ahead))
	_, err = e.Service.EndUserSessions(t.Context(), authtest.ActiveID, "user_disabled", "", 0)
	require.NoError(t, err)
	var after time.Time
	require.NoError(t, e.DB.DB.QueryRowContext(t.Context(), "SELECT ended_before FROM session_cutoffs WHERE id = $1", authtest.ActiveID).Scan(&after))
	assert.True(t, after.Equal(ahead), "the cutoff moved back from %s to %s", ahead, after)
}
