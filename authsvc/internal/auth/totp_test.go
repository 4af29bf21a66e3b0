package auth_test

import (
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"portcullis.dev/authsvc/internal/auth"
	"portcullis.dev/authsvc/internal/authtest"
	auditv1 "portcullis.dev/proto/audit/v1"
	identityv1 "portcullis.dev/proto/identity/v1"
)

// totpUser is an environment whose active user has TOTP on, with the
// service built on lockout.
type totpUser struct {
	*authtest.Env
	secret string
}

func newTOTPUser(t *testing.T, lockout auth.TOTPLockout) *totpUser {
	t.Helper()
	e := authtest.New(t, authtest.Options{})
	cfg := authtest.Config()
	cfg.TOTPLockout = lockout
	e.Service = auth.New(e.DB.Ent, e.Keyring, e.Sealer, e.Identity, cfg, auth.WithClock(e.Clock.Now))
	en, err := e.Service.EnrollTOTP(t.Context(), authtest.ActiveID, authtest.Password)
	require.NoError(t, err)
	require.NoError(t, e.Service.ConfirmTOTP(t.Context(), authtest.ActiveID, code(t, en.Secret, e.Clock.Now())))
	// The confirming code's step is used; start on the next one.
	e.Clock.Advance(30 * time.Second)
	return &totpUser{Env: e, secret: en.Secret}
}

// wrongCode returns a code that no step in the window has now.
func (u *totpUser) wrongCode(t *testing.T) string {
	t.Helper()
	now := u.Clock.Now()
	valid := map[string]bool{}
	for _, d := range []time.Duration{-30 * time.Second, 0, 30 * time.Second} {
		valid[code(t, u.secret, now.Add(d))] = true
	}
	for i := 0; ; i++ {
		if c := strconv.Itoa(100000 + i); !valid[c] {
			return c
		}
	}
}

func (u *totpUser) login(t *testing.T, c string) error {
	t.Helper()
	_, err := u.Service.Login(t.Context(), auth.LoginInput{Email: authtest.ActiveEmail, Password: authtest.Password, TOTPCode: c})
	return err
}

// audit returns the reasons of the failed logins and the auth.totp.locked
// events, in order.
func (u *totpUser) audit(t *testing.T) (reasons []string, locks []*auditv1.NewEvent) {
	t.Helper()
	_, events := u.Events(t)
	for _, ev := range events {
		switch ev.GetAction() {
		case "auth.login.failed":
			reasons = append(reasons, ev.GetMetadata()["reason"])
		case "auth.totp.locked":
			locks = append(locks, ev)
		}
	}
	return reasons, locks
}

func TestTOTPLockout(t *testing.T) {
	t.Parallel()
	// Codes of a step: a wrong one, the current one, the last one a login
	// accepted (a replay), the next step's (accepted for clock skew).
	const (
		wrong = "wrong"
		right = "right"
		used  = "used"
		next  = "next"
	)
	type attempt struct {
		wait time.Duration // clock advance before the attempt
		code string
		ok   bool
	}
	lockout := auth.TOTPLockout{Threshold: 3, Window: 15 * time.Minute, Duration: 10 * time.Minute}
	tests := []struct {
		name     string
		lockout  auth.TOTPLockout
		attempts []attempt
		reasons  []string
		locks    int
	}{{
		name:    "threshold wrong codes lock, and a right code is refused while locked",
		lockout: lockout,
		attempts: []attempt{
			{code: wrong}, {code: wrong}, {code: wrong},
			{code: right}, {wait: 9 * time.Minute, code: right}, {code: wrong},
		},
		reasons: []string{"totp_invalid", "totp_invalid", "totp_invalid", "totp_locked", "totp_locked", "totp_locked"},
		locks:   1,
	}, {
		name:    "the lock expires",
		lockout: lockout,
		attempts: []attempt{
			{code: wrong}, {code: wrong}, {code: wrong},
			{wait: 10 * time.Minute, code: right, ok: true},
		},
		reasons: []string{"totp_invalid", "totp_invalid", "totp_invalid"},
		locks:   1,
	}, {
		name:    "a right code resets the count",
		lockout: lockout,
		attempts: []attempt{
			{code: wrong}, {code: wrong}, {code: right, ok: true},
			{code: wrong}, {code: wrong}, {code: next, ok: true},
		},
		reasons: []string{"totp_invalid", "totp_invalid", "totp_invalid", "totp_invalid"},
	}, {
		name:    "wrong codes older than the window do not count",
		lockout: lockout,
		attempts: []attempt{
			{code: wrong}, {code: wrong},
			{wait: 15 * time.Minute, code: wrong}, {code: wrong}, {code: right, ok: true},
		},
		reasons: []string{"totp_invalid", "totp_invalid", "totp_invalid", "totp_invalid"},
	}, {
		name:    "a replayed code is refused but is no guess, so it does not count",
		lockout: lockout,
		attempts: []attempt{
			{code: right, ok: true}, {code: used}, {code: used}, {code: used},
			{code: wrong}, {code: wrong}, {code: next, ok: true},
		},
		reasons: []string{"totp_replayed", "totp_replayed", "totp_replayed", "totp_invalid", "totp_invalid"},
	}, {
		name:    "a used code stays refused after the lock ends",
		lockout: auth.TOTPLockout{Threshold: 3, Window: 15 * time.Minute, Duration: 20 * time.Second},
		attempts: []attempt{
			{code: right, ok: true}, {code: wrong}, {code: wrong}, {code: wrong}, {code: used},
			{wait: 20 * time.Second, code: used}, {code: next, ok: true},
		},
		reasons: []string{"totp_invalid", "totp_invalid", "totp_invalid", "totp_locked", "totp_replayed"},
		locks:   1,
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			u := newTOTPUser(t, tt.lockout)
			var last string
			for i, a := range tt.attempts {
				u.Clock.Advance(a.wait)
				var c string
				switch a.code {
				case wrong:
					c = u.wrongCode(t)
				case right:
					c = code(t, u.secret, u.Clock.Now())
				case next:
					c = code(t, u.secret, u.Clock.Now().Add(30*time.Second))
				case used:
					require.NotEmpty(t, last, "attempt %d: no code was accepted yet", i)
					c = last
				}
				err := u.login(t, c)
				if !a.ok {
					// The answer to a locked user is the wrong code's.
					require.ErrorIs(t, err, auth.ErrTOTPRequired, "attempt %d (%s)", i, a.code)
					continue
				}
				require.NoError(t, err, "attempt %d (%s)", i, a.code)
				last = c
			}
			reasons, locks := u.audit(t)
			assert.Equal(t, tt.reasons, reasons)
			require.Len(t, locks, tt.locks)
			for _, ev := range locks {
				assert.Equal(t, "user:"+authtest.ActiveID, ev.GetTarget())
				assert.Equal(t, auditv1.Outcome_OUTCOME_DENIED, ev.GetOutcome())
				assert.Equal(t, strconv.Itoa(tt.lockout.Threshold), ev.GetMetadata()["failures"])
				assert.NotEmpty(t, ev.GetMetadata()["locked_until"])
			}
		})
	}
}

// TestTOTPLockoutConcurrentFailures checks that wrong codes arriving at
// once all count (none is lost to another's update) and that exactly one
// of them locks.
func TestTOTPLockoutConcurrentFailures(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name             string
		threshold, codes int
	}{
		{"two at once, both needed to lock", 2, 2},
		{"more at once than the threshold", 4, 8},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			u := newTOTPUser(t, auth.TOTPLockout{Threshold: tt.threshold, Window: time.Hour, Duration: time.Hour})
			bad := u.wrongCode(t)
			start := make(chan struct{})
			errs := make([]error, tt.codes)
			var wg sync.WaitGroup
			for i := range tt.codes {
				wg.Go(func() {
					<-start
					_, errs[i] = u.Service.Login(t.Context(), auth.LoginInput{Email: authtest.ActiveEmail, Password: authtest.Password, TOTPCode: bad})
				})
			}
			close(start)
			wg.Wait()
			for _, err := range errs {
				require.ErrorIs(t, err, auth.ErrTOTPRequired)
			}
			require.ErrorIs(t, u.login(t, code(t, u.secret, u.Clock.Now())), auth.ErrTOTPRequired, "locked")
			reasons, locks := u.audit(t)
			assert.Len(t, locks, 1)
			assert.Len(t, reasons, tt.codes+1, "every refusal is audited")
		})
	}
}

// TestDisableTOTPSpendsItsCode checks that the code that turns TOTP off is
// used up like a login's, and that DisableTOTP is no way around the
// lockout.
func TestDisableTOTPSpendsItsCode(t *testing.T) {
	t.Parallel()
	lockout := auth.TOTPLockout{Threshold: 3, Window: 15 * time.Minute, Duration: 10 * time.Minute}

	t.Run("a code a login used cannot turn TOTP off", func(t *testing.T) {
		t.Parallel()
		u := newTOTPUser(t, lockout)
		c := code(t, u.secret, u.Clock.Now())
		require.NoError(t, u.login(t, c))
		require.ErrorIs(t, u.Service.DisableTOTP(t.Context(), authtest.ActiveID, true, c), auth.ErrInvalidTOTPCode)
		require.ErrorIs(t, u.login(t, ""), auth.ErrTOTPRequired, "TOTP still on")
	})

	// A login and DisableTOTP with the same code, at once: whichever
	// comes first, the code is accepted once. A login that finds TOTP
	// already off needs no code (mfa=false), so it did not accept it.
	t.Run("a login racing DisableTOTP with its code", func(t *testing.T) {
		t.Parallel()
		u := newTOTPUser(t, lockout)
		for round := range 10 {
			if round > 0 {
				// A fresh secret for each round, whoever won the last.
				require.NoError(t, u.Service.DisableTOTP(t.Context(), authtest.ActiveID, false, ""))
				en, err := u.Service.EnrollTOTP(t.Context(), authtest.ActiveID, authtest.Password)
				require.NoError(t, err)
				require.NoError(t, u.Service.ConfirmTOTP(t.Context(), authtest.ActiveID, code(t, en.Secret, u.Clock.Now())))
				u.Clock.Advance(30 * time.Second)
				u.secret = en.Secret
			}
			_, before := u.Events(t)
			c := code(t, u.secret, u.Clock.Now())
			var loginErr, disableErr error
			var wg sync.WaitGroup
			start := make(chan struct{})
			wg.Go(func() { <-start; loginErr = u.login(t, c) })
			wg.Go(func() { <-start; disableErr = u.Service.DisableTOTP(t.Context(), authtest.ActiveID, true, c) })
			close(start)
			wg.Wait()
			if disableErr != nil {
				require.ErrorIs(t, disableErr, auth.ErrInvalidTOTPCode, "round %d", round)
			}
			if loginErr != nil {
				require.ErrorIs(t, loginErr, auth.ErrTOTPRequired, "round %d", round)
			}
			accepted := 0
			if disableErr == nil {
				accepted++
			}
			_, events := u.Events(t)
			for _, ev := range events[len(before):] {
				if ev.GetAction() == "auth.login.succeeded" && ev.GetMetadata()["mfa"] == "true" {
					accepted++
				}
			}
			require.Equal(t, 1, accepted, "round %d: login %v, disable %v", round, loginErr, disableErr)
		}
	})

	t.Run("wrong codes count toward the lockout", func(t *testing.T) {
		t.Parallel()
		u := newTOTPUser(t, lockout)
		for range lockout.Threshold {
			require.ErrorIs(t, u.Service.DisableTOTP(t.Context(), authtest.ActiveID, true, u.wrongCode(t)), auth.ErrInvalidTOTPCode)
		}
		right := code(t, u.secret, u.Clock.Now())
		require.ErrorIs(t, u.Service.DisableTOTP(t.Context(), authtest.ActiveID, true, right), auth.ErrInvalidTOTPCode, "locked")
		require.ErrorIs(t, u.login(t, right), auth.ErrTOTPRequired, "locked")
		_, locks := u.audit(t)
		require.Len(t, locks, 1)
		var refused []string
		actions, events := u.Events(t)
		for i, a := range actions {
			if a == "auth.totp.disable_refused" {
				refused = append(refused, events[i].GetMetadata()["reason"])
			}
		}
		assert.Equal(t, []string{"totp_invalid", "totp_invalid", "totp_invalid", "totp_locked"}, refused,
			"each refusal is in the audit log, not only the lockout")

		u.Clock.Advance(lockout.Duration)
		require.NoError(t, u.Service.DisableTOTP(t.Context(), authtest.ActiveID, true, code(t, u.secret, u.Clock.Now())))
		require.NoError(t, u.login(t, ""), "TOTP off")
	})
}

// TestEnrollTOTPConcurrently enrols one user several times at once (a
// double click, a retrying client): each call ends as it would one after
// the other, the last replacing the pending secret of the one before.
func TestEnrollTOTPConcurrently(t *testing.T) {
	t.Parallel()
	const rounds = 10
	tests := []struct {
		name    string
		state   string // the user's TOTP before: "none", "pending" or "on"
		callers int
		want    error
	}{
		{name: "double click, nothing enrolled yet", state: "none", callers: 2},
		{name: "many at once, nothing enrolled yet", state: "none", callers: 8},
		{name: "many at once, one pending", state: "pending", callers: 8},
		{name: "many at once, TOTP on", state: "on", callers: 8, want: auth.ErrTOTPAlreadyEnabled},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			e := authtest.New(t, authtest.Options{})
			for round := range rounds {
				user := uuid.NewString()
				e.Identity.Add(user+"@example.com", authtest.User{ID: user, Password: authtest.Password, Status: identityv1.UserStatus_USER_STATUS_ACTIVE})
				before := ""
				if tt.state != "none" {
					en, err := e.Service.EnrollTOTP(t.Context(), user, authtest.Password)
					require.NoError(t, err)
					before = en.Secret
				}
				if tt.state == "on" {
					require.NoError(t, e.Service.ConfirmTOTP(t.Context(), user, code(t, before, e.Clock.Now())))
				}
				secrets := map[string]bool{}
				var mu sync.Mutex
				errs := make([]error, tt.callers)
				start := make(chan struct{})
				var wg sync.WaitGroup
				for i := range tt.callers {
					wg.Go(func() {
						<-start
						en, err := e.Service.EnrollTOTP(t.Context(), user, authtest.Password)
						errs[i] = err
						if err == nil {
							mu.Lock()
							secrets[en.Secret] = true
							mu.Unlock()
						}
					})
				}
				close(start)
				wg.Wait()
				for i, err := range errs {
					if tt.want != nil {
						require.ErrorIs(t, err, tt.want, "round %d, caller %d", round, i)
					} else {
						require.NoError(t, err, "round %d, caller %d", round, i)
					}
				}
				var stored []byte
				require.NoError(t, e.DB.DB.QueryRowContext(t.Context(),
					"SELECT secret_sealed FROM totp_credentials WHERE id = $1", user).Scan(&stored))
				plain, err := e.Sealer.Open(stored, "totp:"+user)
				require.NoError(t, err)
				if tt.want != nil {
					assert.Equal(t, before, string(plain), "round %d: the secret in use was replaced", round)
					continue
				}
				require.Len(t, secrets, tt.callers, "round %d", round)
				require.True(t, secrets[string(plain)], "round %d: the pending secret is none of those returned", round)
				require.NoError(t, e.Service.ConfirmTOTP(t.Context(), user, code(t, string(plain), e.Clock.Now())), "round %d", round)
			}
		})
	}
}

// TestDisableTOTPUserID checks the user_id an administrator names.
func TestDisableTOTPUserID(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, userID string
		invalid      bool
	}{
		{name: "canonical", userID: authtest.ActiveID},
		{name: "with NUL", userID: "\x00", invalid: true},
		{name: "not a UUID", userID: authtest.ActiveEmail, invalid: true},
		// Turning off nothing would succeed while TOTP stays on.
		{name: "without hyphens", userID: strings.ReplaceAll(authtest.ActiveID, "-", ""), invalid: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			u := newTOTPUser(t, auth.TOTPLockout{})
			err := u.Service.DisableTOTP(t.Context(), tt.userID, false, "")
			if !tt.invalid {
				require.NoError(t, err)
				require.NoError(t, u.login(t, ""), "TOTP still on")
				return
			}
			var inv *auth.InvalidArgumentError
			require.ErrorAs(t, err, &inv)
			assert.Equal(t, "user_id", inv.Field)
			require.ErrorIs(t, u.login(t, ""), auth.ErrTOTPRequired, "TOTP turned off")
		})
	}
}

// TestEnrollTOTPNeedsThePassword: a stolen access token alone cannot turn
// TOTP on with the thief's app; the Identity service checks the password.
func TestEnrollTOTPNeedsThePassword(t *testing.T) {
	t.Parallel()
	e := authtest.New(t, authtest.Options{})
	for _, tt := range []struct {
		name, user, password string
		want                 error
	}{
		{"no password", authtest.ActiveID, "", &auth.InvalidArgumentError{}},
		{"a wrong one", authtest.ActiveID, "not the password", auth.ErrWrongPassword},
		{"a locked account", authtest.LockedID, authtest.Password, auth.ErrAccountLocked},
		{"Identity too busy", authtest.BusyID, authtest.Password, auth.ErrIdentityUnavailable},
		{"a user deleted since", uuid.NewString(), authtest.Password, auth.ErrInvalidCredentials},
	} {
		t.Run(tt.name, func(t *testing.T) {
			en, err := e.Service.EnrollTOTP(t.Context(), tt.user, tt.password)
			assert.Nil(t, en)
			if inv, ok := tt.want.(*auth.InvalidArgumentError); ok {
				require.ErrorAs(t, err, &inv)
				assert.Equal(t, "current_password", inv.Field)
				return
			}
			require.ErrorIs(t, err, tt.want)
		})
	}
	var pending int
	require.NoError(t, e.DB.DB.QueryRowContext(t.Context(), `SELECT count(*) FROM totp_credentials`).Scan(&pending))
	assert.Zero(t, pending, "a refused enrolment left a secret")
}
