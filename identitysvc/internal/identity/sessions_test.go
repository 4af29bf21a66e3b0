package identity_test

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

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
	mu        sync.Mutex
	calls     []ended
	changedAt []time.Time // of each call
	failures  int
}

func (e *fakeAuth) EndUserSessions(_ context.Context, end identity.SessionEnd) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.calls = append(e.calls, ended{end.UserID, end.Reason, end.ExceptSession})
	e.changedAt = append(e.changedAt, end.ChangedAt)
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
			const help = "# HELP portcullis_identity_session_end_failures_total Users whose sessions the Auth service could not be made to end at once after they were disabled, deleted, or their password reset or changed; " +
				"each is logged at error level with the user and reason, and retried until it succeeds (portcullis_identity_session_ends_pending).\n" +
				"# TYPE portcullis_identity_session_end_failures_total counter\n"
			wantMetrics := ""
			if tt.wantCount != "" {
				wantMetrics = help + tt.wantCount + "\n"
			}
			require.Len(t, svc.Collectors(), 2)
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

// hangingAuth answers no EndUserSessions call until the call's context ends.
type hangingAuth struct{}

func (hangingAuth) EndUserSessions(ctx context.Context, _ identity.SessionEnd) error {
	<-ctx.Done()
	return ctx.Err()
}

// TestTheAnswerWaitsForTheSessionsToEnd: when a change is answered, its
// sessions have ended already, so a refresh made right after the answer
// cannot mint a new access token; an Auth service that does not answer
// holds the change's answer up only briefly.
func TestTheAnswerWaitsForTheSessionsToEnd(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := t.Context()

	ender := &fakeAuth{}
	svc, err := identity.NewService(f.db.Ent, f.cfg, &identity.DirMailer{Dir: f.mail, From: "test@example.com"}, identity.WithSessionEnder(ender))
	require.NoError(t, err)
	u, err := svc.CreateUser(ctx, "prompt@example.com", "correct horse battery", "")
	require.NoError(t, err)
	_, err = svc.SetStatus(ctx, u.ID, identity.StatusDisabled, "")
	require.NoError(t, err)
	assert.Equal(t, []ended{{u.ID.String(), identity.ReasonUserDisabled, ""}}, ender.Calls(), "answered before the sessions ended")

	hung, err := identity.NewService(f.db.Ent, f.cfg, &identity.DirMailer{Dir: f.mail, From: "test@example.com"},
		identity.WithSessionEnder(hangingAuth{}), identity.WithLogger(slog.New(slog.DiscardHandler)))
	require.NoError(t, err)
	// The tries outlive the answer; the test waits for them before the
	// database goes.
	t.Cleanup(func() { _ = hung.Drain(context.Background()) })
	v, err := hung.CreateUser(ctx, "patient@example.com", "correct horse battery", "")
	require.NoError(t, err)
	start := time.Now()
	_, err = hung.SetStatus(ctx, v.ID, identity.StatusDisabled, "")
	require.NoError(t, err, "the change stands without Auth")
	// A bound, not a speed: the tries take 8s.
	assert.Less(t, time.Since(start), 4*time.Second, "the answer waited for a hung Auth service")
}

// TestSessionEndsOutlastAuthOutages: an end of sessions the Auth service
// did not take at once stays queued in the database and is retried until
// Auth takes it; one leased to an instance that stopped is taken over by
// another once the lease is over, and never by two at once.
func TestSessionEndsOutlastAuthOutages(t *testing.T) {
	t.Parallel()
	f := newFixture(t, func(c *identity.Config) { c.SessionEndRetry = 20 * time.Millisecond })
	ctx := t.Context()
	pending := func() int {
		var n int
		require.NoError(t, f.db.DB.QueryRowContext(ctx, `SELECT count(*) FROM session_ends`).Scan(&n))
		return n
	}
	newService := func(ender identity.SessionEnder) *identity.Service {
		svc, err := identity.NewService(f.db.Ent, f.cfg, &identity.DirMailer{Dir: f.mail, From: "test@example.com"}, identity.WithSessionEnder(ender))
		require.NoError(t, err)
		return svc
	}
	// retrying runs svc's retry rounds until the returned stop is called,
	// or the test ends.
	retrying := func(svc *identity.Service) (stop func()) {
		runCtx, cancel := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() { done <- svc.RetrySessionEnds(runCtx) }()
		stop = sync.OnceFunc(func() { cancel(); require.NoError(t, <-done) })
		t.Cleanup(stop)
		return stop
	}

	// Auth is down for the first tries and two retry rounds.
	down := &fakeAuth{failures: 5}
	svc := newService(down)
	u := f.create(t, "outage@example.com")
	_, err := svc.SetStatus(ctx, u.ID, identity.StatusDisabled, "left")
	require.NoError(t, err)
	require.NoError(t, svc.Drain(ctx))
	require.Equal(t, 1, pending(), "the end was not kept after its first tries failed")
	stop := retrying(svc)
	require.Eventually(t, func() bool { return pending() == 0 }, 10*time.Second, 10*time.Millisecond)
	call := ended{u.ID.String(), identity.ReasonUserDisabled, ""}
	assert.Equal(t, []ended{call, call, call, call, call, call}, down.Calls())
	down.mu.Lock()
	for _, at := range down.changedAt {
		// The change's time, as stored (to the microsecond), however late
		// the call: Auth spares the sessions begun after it.
		assert.WithinDuration(t, down.changedAt[0], at, time.Microsecond, "a retry says when the change was made")
		assert.False(t, at.IsZero())
	}
	down.mu.Unlock()
	require.Eventually(t, func() bool {
		return testutil.ToFloat64(svc.Collectors()[1]) == 0
	}, 5*time.Second, 10*time.Millisecond, "portcullis_identity_session_ends_pending")
	stop()

	// An instance queued an end and stopped before trying it: its lease
	// holds it from the others until it is over.
	crashed := newService(&fakeAuth{failures: 1000})
	v := f.create(t, "crash@example.com")
	require.NoError(t, crashed.ChangePassword(ctx, v.ID, "correct horse battery", "a new good password", "kept-session"))
	require.NoError(t, crashed.Drain(ctx))
	_, err = f.db.DB.ExecContext(ctx, `UPDATE session_ends SET next_attempt_at = now() + interval '1 hour'`)
	require.NoError(t, err)
	up1, up2 := &fakeAuth{}, &fakeAuth{}
	retrying(newService(up1))
	retrying(newService(up2))
	time.Sleep(200 * time.Millisecond)
	assert.Empty(t, append(up1.Calls(), up2.Calls()...), "a leased end was taken")
	_, err = f.db.DB.ExecContext(ctx, `UPDATE session_ends SET next_attempt_at = now() - interval '1 second'`)
	require.NoError(t, err)
	require.Eventually(t, func() bool { return pending() == 0 }, 10*time.Second, 10*time.Millisecond)
	time.Sleep(100 * time.Millisecond)
	assert.Equal(t, []ended{{v.ID.String(), identity.ReasonPasswordChanged, "kept-session"}}, append(up1.Calls(), up2.Calls()...),
		"taken once, by one instance")
}
