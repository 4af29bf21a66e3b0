package auth_test

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"portcullis.dev/authsvc/internal/auth"
	"portcullis.dev/authsvc/internal/authtest"
)

func TestEndUserSessions(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, userID, reason string
		keep                 bool // the second session is the exception
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
			n, err := e.Service.EndUserSessions(t.Context(), tt.userID, tt.reason, except)
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

			again, err := e.Service.EndUserSessions(t.Context(), tt.userID, tt.reason, except)
			require.NoError(t, err, "a repeated call fails")
			assert.Zero(t, again, "a repeated call ended sessions")
		})
	}
}
