package identity_test

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"portcullis.dev/identitysvc/internal/identity"
	"portcullis.dev/kernel/kerneltest"
)

// ended is one EndUserSessions call.
type ended struct{ UserID, Reason, Except string }

// fakeAuth records the EndUserSessions calls it gets and answers the first
// failures of them with an error, as an unreachable Auth service would.
type fakeAuth struct {
	mu       sync.Mutex
	calls    []ended
	failures int
}

func (e *fakeAuth) EndUserSessions(_ context.Context, userID, reason, except string) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.calls = append(e.calls, ended{userID, reason, except})
	if len(e.calls) <= e.failures {
		return errors.New("authsvc unavailable")
	}
	return nil
}

func (e *fakeAuth) Calls() []ended {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.calls
}

func TestChangesEndSessions(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := t.Context()
	tests := []struct {
		name     string
		failures int // of the Auth service, before it answers
		// change makes the change to u and returns the calls it expects
		// of the Auth service, and the change's error.
		change    func(t *testing.T, svc *identity.Service, u identity.User) ([]ended, error)
		wantCount string // of portcullis_identity_session_end_failures_total; empty for none
	}{
		{
			name: "disable",
			change: func(t *testing.T, svc *identity.Service, u identity.User) ([]ended, error) {
				_, err := svc.SetStatus(ctx, u.ID, identity.StatusDisabled, "left")
				return []ended{{u.ID.String(), identity.ReasonUserDisabled, ""}}, err
			},
		},
		{
			name: "disable a disabled user, to retry",
			change: func(t *testing.T, svc *identity.Service, u identity.User) ([]ended, error) {
				_, err := svc.SetStatus(ctx, u.ID, identity.StatusDisabled, "")
				require.NoError(t, err)
				_, err = svc.SetStatus(ctx, u.ID, identity.StatusDisabled, "")
				return []ended{{u.ID.String(), identity.ReasonUserDisabled, ""}, {u.ID.String(), identity.ReasonUserDisabled, ""}}, err
			},
		},
		{
			name: "enable",
			change: func(t *testing.T, svc *identity.Service, u identity.User) ([]ended, error) {
				_, err := svc.SetStatus(ctx, u.ID, identity.StatusActive, "")
				return nil, err
			},
		},
		{
			name: "delete",
			change: func(t *testing.T, svc *identity.Service, u identity.User) ([]ended, error) {
				return []ended{{u.ID.String(), identity.ReasonUserDeleted, ""}}, svc.DeleteUser(ctx, u.ID)
			},
		},
		{
			name: "delete a user who never was",
			change: func(t *testing.T, svc *identity.Service, u identity.User) ([]ended, error) {
				err := svc.DeleteUser(ctx, uuid.New())
				require.ErrorIs(t, err, identity.ErrNotFound)
				return nil, nil
			},
		},
		{
			name: "change the password, keeping the caller's session",
			change: func(t *testing.T, svc *identity.Service, u identity.User) ([]ended, error) {
				err := svc.ChangePassword(ctx, u.ID, "correct horse battery", "a new good password", "session-1")
				return []ended{{u.ID.String(), identity.ReasonPasswordChanged, "session-1"}}, err
			},
		},
		{
			name: "a wrong current password changes nothing",
			change: func(t *testing.T, svc *identity.Service, u identity.User) ([]ended, error) {
				err := svc.ChangePassword(ctx, u.ID, "not my password", "a new good password", "session-1")
				require.ErrorIs(t, err, identity.ErrWrongPassword)
				return nil, nil
			},
		},
		{
			name: "reset the password",
			change: func(t *testing.T, svc *identity.Service, u identity.User) ([]ended, error) {
				require.NoError(t, svc.RequestPasswordReset(ctx, u.Email))
				require.NoError(t, svc.Drain(ctx)) // the mail is written
				err := svc.ResetPassword(ctx, f.lastToken(t, u.Email, "Reset"), "a new good password")
				return []ended{{u.ID.String(), identity.ReasonPasswordReset, ""}}, err
			},
		},
		{
			name:     "Auth fails, then answers",
			failures: 2,
			change: func(t *testing.T, svc *identity.Service, u identity.User) ([]ended, error) {
				_, err := svc.SetStatus(ctx, u.ID, identity.StatusDisabled, "")
				call := ended{u.ID.String(), identity.ReasonUserDisabled, ""}
				return []ended{call, call, call}, err
			},
		},
		{
			name:     "Auth keeps failing",
			failures: 100,
			change: func(t *testing.T, svc *identity.Service, u identity.User) ([]ended, error) {
				err := svc.ChangePassword(ctx, u.ID, "correct horse battery", "a new good password", "")
				call := ended{u.ID.String(), identity.ReasonPasswordChanged, ""}
				return []ended{call, call, call}, err
			},
			wantCount: `portcullis_identity_session_end_failures_total{reason="password_changed"} 1`,
		},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ender := &fakeAuth{failures: tt.failures}
			var logs kerneltest.Buffer
			svc, err := identity.NewService(f.db.Ent, f.cfg, &identity.DirMailer{Dir: f.mail, From: "test@example.com"},
				identity.WithSessionEnder(ender), identity.WithLogger(slog.New(slog.NewJSONHandler(&logs, nil))))
			require.NoError(t, err)
			u, err := svc.CreateUser(ctx, "user"+string(rune('a'+i))+"@example.com", "correct horse battery", "")
			require.NoError(t, err)

			want, err := tt.change(t, svc, u)
			require.NoError(t, err, "the change failed")
			require.NoError(t, svc.Drain(ctx))
			assert.Equal(t, want, ender.Calls())
			const help = "# HELP portcullis_identity_session_end_failures_total Users whose sessions the Auth service could not be made to end after they were disabled, deleted, or their password reset or changed; each is logged at error level with the user and reason.\n" +
				"# TYPE portcullis_identity_session_end_failures_total counter\n"
			wantMetrics := ""
			if tt.wantCount != "" {
				wantMetrics = help + tt.wantCount + "\n"
			}
			require.Len(t, svc.Collectors(), 1)
			require.NoError(t, testutil.CollectAndCompare(svc.Collectors()[0], strings.NewReader(wantMetrics)))
			if tt.wantCount != "" {
				assert.Contains(t, logs.String(), `"level":"ERROR"`)
				assert.Contains(t, logs.String(), `"user_id":"`+u.ID.String()+`"`)
				assert.Contains(t, logs.String(), `"reason":"password_changed"`)
			} else {
				assert.NotContains(t, logs.String(), `"level":"ERROR"`)
			}
		})
	}
}
