package identity_test

import (
	"context"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"entgo.io/ent/dialect"
	"github.com/google/uuid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"portcullis.dev/identitysvc/ent"
	"portcullis.dev/identitysvc/ent/user"
	"portcullis.dev/identitysvc/internal/identity"
	"portcullis.dev/kernel/config"
	"portcullis.dev/kernel/database"
	"portcullis.dev/kernel/kerneltest"
)

// fastArgon2 keeps tests quick; the benchmark uses the real defaults.
var fastArgon2 = identity.Argon2Params{MemoryKiB: 1024, Iterations: 1, Parallelism: 1}

// clock is a settable time source.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

type fixture struct {
	svc   *identity.Service
	db    *database.Client[*ent.Client]
	clock *clock
	mail  string // the dir the mailer writes to
	cfg   identity.Config
}

func newBenchFixture(b *testing.B, params identity.Argon2Params) *fixture {
	dsn, _ := kerneltest.Postgres(b)
	db, err := database.NewEntClient(b.Context(), database.Config{DSN: config.DSN(dsn), Schema: kerneltest.SchemaName(b)},
		ent.Migrations(), func(d dialect.Driver) *ent.Client { return ent.NewClient(ent.Driver(d)) })
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = db.Close(context.Background()) })
	svc, err := identity.NewService(db.Ent, identity.Config{Argon2: params, PublicURL: "https://x"}, &identity.DirMailer{Dir: b.TempDir()})
	if err != nil {
		b.Fatal(err)
	}
	return &fixture{svc: svc, db: db}
}

func newFixture(t *testing.T, mutate ...func(*identity.Config)) *fixture {
	t.Helper()
	dsn, _ := kerneltest.Postgres(t)
	db, err := database.NewEntClient(t.Context(), database.Config{DSN: config.DSN(dsn), Schema: kerneltest.SchemaName(t)},
		ent.Migrations(), func(d dialect.Driver) *ent.Client { return ent.NewClient(ent.Driver(d)) })
	require.NoError(t, err)
	t.Cleanup(func() { _ = db.Close(context.Background()) })
	cfg := identity.Config{
		Argon2:    fastArgon2,
		Lockout:   identity.LockoutConfig{Threshold: 3, Window: time.Minute, Duration: 10 * time.Minute},
		PublicURL: "https://id.example.com/verify",
	}
	for _, m := range mutate {
		m(&cfg)
	}
	return newFixtureOn(t, db, cfg)
}

func newFixtureOn(t *testing.T, db *database.Client[*ent.Client], cfg identity.Config) *fixture {
	t.Helper()
	f := &fixture{db: db, clock: &clock{now: time.Now()}, mail: t.TempDir(), cfg: cfg}
	svc, err := identity.NewService(db.Ent, cfg, &identity.DirMailer{Dir: f.mail, From: "test@example.com"}, identity.WithClock(f.clock.Now))
	require.NoError(t, err)
	// Mail still being written when the test ends would make the removal
	// of f.mail fail; cleanups run last first, so this one runs before it.
	t.Cleanup(func() { _ = svc.Drain(context.Background()) })
	f.svc = svc
	return f
}

func (f *fixture) create(t *testing.T, email string) identity.User {
	t.Helper()
	u, err := f.svc.CreateUser(t.Context(), email, "correct horse battery", "Test User")
	require.NoError(t, err)
	return u
}

// lastToken returns the token of the newest mail sent to addr whose
// subject contains subject ("Verify" or "Reset").
func (f *fixture) lastToken(t *testing.T, addr, subject string) string {
	t.Helper()
	require.NoError(t, f.svc.Drain(t.Context()))
	entries, err := os.ReadDir(f.mail)
	require.NoError(t, err)
	var token string
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join(f.mail, e.Name()))
		require.NoError(t, err)
		if strings.Contains(string(b), "To: "+addr+"\r\n") && strings.Contains(string(b), "Subject: "+subject) {
			if m := regexp.MustCompile(`token=([A-Za-z0-9_-]+)&purpose=(\w+)`).FindStringSubmatch(string(b)); m != nil {
				token = m[1]
				want := map[string]string{"Verify": "verify_email", "Reset": "reset_password"}[subject]
				assert.Equal(t, want, m[2], "the link does not say what it is for")
			}
		}
	}
	require.NotEmpty(t, token, "no mail with a token to %s", addr)
	return token
}

func (f *fixture) mails(t *testing.T) int {
	t.Helper()
	require.NoError(t, f.svc.Drain(t.Context()))
	entries, err := os.ReadDir(f.mail)
	require.NoError(t, err)
	return len(entries)
}

func (f *fixture) events(t *testing.T) int {
	var n int
	require.NoError(t, f.db.DB.QueryRowContext(t.Context(), `SELECT count(*) FROM outbox_events`).Scan(&n))
	return n
}

func TestCreateUser(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	u := f.create(t, "  Alice@Example.COM ")
	assert.Equal(t, "alice@example.com", u.Email)
	assert.Equal(t, identity.StatusActive, u.Status)
	assert.Equal(t, 1, f.events(t), "no audit event for the new user")
	assert.Equal(t, 1, f.mails(t), "no verification mail for the new user")
	assert.NotEmpty(t, f.lastToken(t, "alice@example.com", "Verify"))

	tests := []struct {
		name, email, password, display string
		want                           error
		field                          string
	}{
		{"same email in other case", "ALICE@example.com", "long enough pw", "", identity.ErrEmailTaken, ""},
		{"password too short", "b@example.com", "short", "", nil, "password"},
		{"password of 11 runes in 22 bytes", "b@example.com", "ééééééééééé", "", nil, "password"},
		{"password too long", "b@example.com", strings.Repeat("x", 1025), "", nil, "password"},
		{"not an email", "not-an-email", "long enough pw", "", nil, "email"},
		{"no email", "", "long enough pw", "", nil, "email"},
		{"1 MiB display name", "b@example.com", "long enough pw", strings.Repeat("x", 1<<20), nil, "display_name"},
		{"display name with NUL", "b@example.com", "long enough pw", "a\x00b", nil, "display_name"},
		{"display name not UTF-8", "b@example.com", "long enough pw", "a\xffb", nil, "display_name"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := f.svc.CreateUser(t.Context(), tt.email, tt.password, tt.display)
			require.Error(t, err)
			if tt.want != nil {
				assert.ErrorIs(t, err, tt.want)
				return
			}
			var invalid *identity.ValidationError
			require.ErrorAs(t, err, &invalid)
			assert.Equal(t, tt.field, invalid.Field)
		})
	}
	// A 1024-byte password and a 12-rune one (the default minimum) are fine.
	_, err := f.svc.CreateUser(t.Context(), "max@example.com", strings.Repeat("x", 1024), "")
	require.NoError(t, err)
	_, err = f.svc.CreateUser(t.Context(), "min@example.com", "éééééééééééé", "")
	require.NoError(t, err)
	// The display name's limit is in characters, not bytes: 200 of two
	// bytes each are fine.
	u, err = f.svc.CreateUser(t.Context(), "name@example.com", "correct horse battery", strings.Repeat("é", 200))
	require.NoError(t, err)
	assert.Equal(t, strings.Repeat("é", 200), u.DisplayName)

	// The minimum is configurable down to NIST's 8 characters.
	g := newFixture(t, func(c *identity.Config) { c.MinPasswordLength = 8 })
	_, err = g.svc.CreateUser(t.Context(), "eight@example.com", "éééééééé", "")
	require.NoError(t, err)
	_, err = g.svc.CreateUser(t.Context(), "seven@example.com", "ééééééé", "")
	var invalid *identity.ValidationError
	require.ErrorAs(t, err, &invalid)
}

func TestVerifyCredentialsAndLockout(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	u := f.create(t, "bob@example.com")
	ctx := t.Context()

	got, err := f.svc.VerifyCredentials(ctx, "BOB@example.com", "correct horse battery")
	require.NoError(t, err)
	assert.Equal(t, u.ID, got.ID)

	// Three failures within the window lock the account: then even the
	// right password is refused, with the answer a wrong one gets.
	for range 3 {
		_, err = f.svc.VerifyCredentials(ctx, "bob@example.com", "wrong password!")
		assert.Equal(t, identity.ErrInvalidCredentials, err)
	}
	assert.Equal(t, 2, f.events(t), "user.created + login.locked")
	_, err = f.svc.VerifyCredentials(ctx, "bob@example.com", "correct horse battery")
	assert.Equal(t, identity.ErrInvalidCredentials, err, "a locked account is told apart")
	assert.True(t, f.locked(t, u.ID))

	// Attempts while locked neither extend the lock nor lock again.
	f.clock.Advance(9 * time.Minute)
	for range 3 {
		_, err = f.svc.VerifyCredentials(ctx, "bob@example.com", "wrong password!")
		assert.Equal(t, identity.ErrInvalidCredentials, err)
	}
	assert.Equal(t, 2, f.events(t), "a locked account was locked again")

	// The lock expires 10 minutes after it began.
	f.clock.Advance(time.Minute + time.Second)
	_, err = f.svc.VerifyCredentials(ctx, "bob@example.com", "correct horse battery")
	require.NoError(t, err, "the lock did not expire")
	assert.False(t, f.locked(t, u.ID), "a successful login left the lock behind")

	// Failures spread wider than the window never lock.
	for range 5 {
		_, err = f.svc.VerifyCredentials(ctx, "bob@example.com", "wrong password!")
		assert.Equal(t, identity.ErrInvalidCredentials, err)
		f.clock.Advance(40 * time.Second)
	}
	_, err = f.svc.VerifyCredentials(ctx, "bob@example.com", "correct horse battery")
	require.NoError(t, err)
}

// TestLockoutHoldsAgainstABurst: guesses sent at once all read the user
// before they wait for a hashing slot. Once three have failed, the rest
// are judged against the lock, not the user as it was: they neither count
// from zero again (locking again, and again) nor let a right password in.
func TestLockoutHoldsAgainstABurst(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	u := f.create(t, "burst@example.com")
	var wg sync.WaitGroup
	for range 24 {
		wg.Go(func() {
			_, err := f.svc.VerifyCredentials(t.Context(), "burst@example.com", "wrong password!")
			assert.Equal(t, identity.ErrInvalidCredentials, err)
		})
	}
	wg.Wait()
	assert.Equal(t, 2, f.events(t), "user.created and one login.locked")
	assert.True(t, f.locked(t, u.ID))
	_, err := f.svc.VerifyCredentials(t.Context(), "burst@example.com", "correct horse battery")
	assert.Equal(t, identity.ErrInvalidCredentials, err)
	assert.True(t, f.locked(t, u.ID), "a right password cleared the lock")
}

// TestChangePasswordLosesToAResetMeanwhile: a change whose current
// password was checked before a reset committed does not undo the reset.
func TestChangePasswordLosesToAResetMeanwhile(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	u := f.create(t, "race@example.com")
	ctx := t.Context()
	// The reset commits while the change hashes its new password: here,
	// between the change's check of the current password and its write,
	// which the hook below runs in.
	reset := func() {
		_, err := f.db.DB.ExecContext(ctx, `UPDATE users SET password_hash = 'reset' WHERE id = $1`, u.ID)
		require.NoError(t, err)
	}
	f.db.Ent.User.Use(func(next ent.Mutator) ent.Mutator {
		return ent.MutateFunc(func(ctx context.Context, m ent.Mutation) (ent.Value, error) {
			if um, ok := m.(*ent.UserMutation); ok && um.Op().Is(ent.OpUpdate) {
				if _, set := um.PasswordHash(); set && reset != nil {
					reset()
					reset = nil
				}
			}
			return next.Mutate(ctx, m)
		})
	})
	err := f.svc.ChangePassword(ctx, u.ID, "correct horse battery", "another good password", "")
	assert.ErrorIs(t, err, identity.ErrWrongPassword)
	var hash string
	require.NoError(t, f.db.DB.QueryRowContext(ctx, `SELECT password_hash FROM users WHERE id = $1`, u.ID).Scan(&hash))
	assert.Equal(t, "reset", hash, "the change overwrote the reset")
}

// locked reports whether id is locked now, by the fixture's clock.
func (f *fixture) locked(t *testing.T, id uuid.UUID) bool {
	t.Helper()
	u := f.db.Ent.User.Query().Where(user.ID(id)).OnlyX(t.Context())
	return u.LockedUntil != nil && f.clock.Now().Before(*u.LockedUntil)
}

// TestVerifyCredentialsAnswersAlike checks the enumeration-safe answers:
// every refused login, whatever the reason, is the same error with the
// same message after exactly one argon2id hash, like a successful login.
func TestVerifyCredentialsAnswersAlike(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := t.Context()
	f.create(t, "active@example.com")
	disabled := f.create(t, "disabled@example.com")
	_, err := f.svc.SetStatus(ctx, disabled.ID, identity.StatusDisabled, "left")
	require.NoError(t, err)
	locked := f.create(t, "locked@example.com")
	for range 3 {
		_, err := f.svc.VerifyCredentials(ctx, "locked@example.com", "wrong password!")
		require.Equal(t, identity.ErrInvalidCredentials, err)
	}
	require.True(t, f.locked(t, locked.ID))

	tests := []struct {
		name, email, password string
		ok                    bool
	}{
		{name: "right password", email: "active@example.com", password: "correct horse battery", ok: true},
		{name: "wrong password", email: "active@example.com", password: "wrong password!"},
		{name: "unknown email", email: "nobody@example.com", password: "correct horse battery"},
		{name: "malformed email", email: "not an email", password: "correct horse battery"},
		{name: "locked, right password", email: "locked@example.com", password: "correct horse battery"},
		{name: "locked, wrong password", email: "locked@example.com", password: "wrong password!"},
		{name: "disabled, right password", email: "disabled@example.com", password: "correct horse battery"},
		{name: "disabled, wrong password", email: "disabled@example.com", password: "wrong password!"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := identity.HashCount(f.svc)
			got, err := f.svc.VerifyCredentials(ctx, tt.email, tt.password)
			assert.Equal(t, uint64(1), identity.HashCount(f.svc)-before, "argon2id hashes")
			if tt.ok {
				require.NoError(t, err)
				assert.Equal(t, identity.StatusActive, got.Status)
				return
			}
			// The very same error value: same code at the edge, same text.
			assert.Equal(t, identity.ErrInvalidCredentials, err)
			assert.Equal(t, identity.User{}, got)
		})
	}

	// A disabled user's right password changes nothing, and a wrong one
	// counts towards the lockout like anyone's.
	for range 2 {
		_, err = f.svc.VerifyCredentials(ctx, "disabled@example.com", "wrong password!")
		require.Equal(t, identity.ErrInvalidCredentials, err)
	}
	assert.True(t, f.locked(t, disabled.ID), "a disabled user's failures did not count")
	_, err = f.svc.SetStatus(ctx, disabled.ID, identity.StatusActive, "back")
	require.NoError(t, err)
	f.clock.Advance(11 * time.Minute)
	_, err = f.svc.VerifyCredentials(ctx, "disabled@example.com", "correct horse battery")
	require.NoError(t, err, "an enabled user cannot log in")
}

// TestBusyIsNotARefusal: when every hashing slot stays taken until the
// caller's deadline, VerifyCredentials says busy — never the answer of a
// refused login — and counts nothing against the account.
func TestBusyIsNotARefusal(t *testing.T) {
	t.Parallel()
	f := newFixture(t, func(c *identity.Config) { c.HashConcurrency = 2 })
	u := f.create(t, "busy@example.com")
	release := identity.HoldHashSlots(f.svc)
	for _, email := range []string{"busy@example.com", "nobody@example.com", "not an email"} {
		ctx, cancel := context.WithTimeout(t.Context(), 20*time.Millisecond)
		_, err := f.svc.VerifyCredentials(ctx, email, "wrong password!")
		cancel()
		require.ErrorIs(t, err, identity.ErrBusy, email)
		assert.NotErrorIs(t, err, identity.ErrInvalidCredentials, email)
		assert.NotErrorIs(t, err, identity.ErrLocked, email)
	}
	release()
	got := f.db.Ent.User.Query().Where(user.ID(u.ID)).OnlyX(t.Context())
	assert.Zero(t, got.FailedAttempts, "a login that was never checked counted as a failure")
	_, err := f.svc.VerifyCredentials(t.Context(), "busy@example.com", "correct horse battery")
	require.NoError(t, err)
}

func TestConcurrentFailuresAllCount(t *testing.T) {
	t.Parallel()
	f := newFixture(t, func(c *identity.Config) { c.Lockout.Threshold = 10 })
	u := f.create(t, "carol@example.com")
	var wg sync.WaitGroup
	for range 10 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, _ = f.svc.VerifyCredentials(context.Background(), "carol@example.com", "wrong password!")
		}()
	}
	wg.Wait()
	assert.True(t, f.locked(t, u.ID), "10 concurrent failures did not all count")
	_, err := f.svc.VerifyCredentials(t.Context(), "carol@example.com", "correct horse battery")
	assert.Equal(t, identity.ErrInvalidCredentials, err)
}

// withStrongerHashes returns a fixture on f's database whose argon2
// parameters are stronger: to it, every hash f made is stale.
func (f *fixture) withStrongerHashes(t *testing.T) *fixture {
	t.Helper()
	stronger := f.cfg
	stronger.Argon2 = identity.Argon2Params{MemoryKiB: 2048, Iterations: 2, Parallelism: 1}
	return newFixtureOn(t, f.db, stronger)
}

func TestHashParametersAreUpgradedOnLogin(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	u := f.create(t, "erin@example.com")
	g := f.withStrongerHashes(t)

	hash := func() string {
		return f.db.Ent.User.Query().Where(user.ID(u.ID)).OnlyX(t.Context()).PasswordHash
	}
	require.Contains(t, hash(), "m=1024,t=1,p=1")
	_, err := g.svc.VerifyCredentials(t.Context(), "erin@example.com", "correct horse battery")
	require.NoError(t, err)
	assert.Contains(t, hash(), "m=2048,t=2,p=1")
	_, err = g.svc.VerifyCredentials(t.Context(), "erin@example.com", "correct horse battery")
	require.NoError(t, err, "the upgraded hash does not verify")
}

// TestChangePasswordOverAStaleHash: checking the current password
// upgrades its hash first; the change is made over the upgraded one, not
// refused as if the password had changed meanwhile.
func TestChangePasswordOverAStaleHash(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	u := f.create(t, "stale@example.com")
	g := f.withStrongerHashes(t)
	require.NoError(t, g.svc.ChangePassword(t.Context(), u.ID, "correct horse battery", "a changed password", ""))
	_, err := g.svc.VerifyCredentials(t.Context(), "stale@example.com", "a changed password")
	require.NoError(t, err)
}

// TestLoginsRacingAnUpgrade: logins with the right password at once, the
// hash stale: the first to finish upgrades it under the others, which
// must not be refused for it.
func TestLoginsRacingAnUpgrade(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	f.create(t, "race-upgrade@example.com")
	g := f.withStrongerHashes(t)
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			_, err := g.svc.VerifyCredentials(t.Context(), "race-upgrade@example.com", "correct horse battery")
			assert.NoError(t, err)
		})
	}
	wg.Wait()
}

func TestPasswordReset(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	u := f.create(t, "frank@example.com")
	ctx := t.Context()

	// Enumeration-safe: the same answer, and no mail, for an unknown email.
	before := f.mails(t)
	require.NoError(t, f.svc.RequestPasswordReset(ctx, "nobody@example.com"))
	assert.Equal(t, before, f.mails(t))
	require.NoError(t, f.svc.RequestPasswordReset(ctx, "Frank@example.com"))
	assert.Equal(t, before+1, f.mails(t))
	token := f.lastToken(t, "frank@example.com", "Reset")
	// A second request within the cooldown answers the same and sends
	// nothing, so nobody can flood the mailbox; the first link still works.
	require.NoError(t, f.svc.RequestPasswordReset(ctx, "frank@example.com"))
	assert.Equal(t, before+1, f.mails(t))

	// Lock the account, then reset: the lock is gone.
	for range 3 {
		_, _ = f.svc.VerifyCredentials(ctx, "frank@example.com", "wrong password!")
	}
	require.NoError(t, f.svc.ResetPassword(ctx, token, "a brand new password"))
	_, err := f.svc.VerifyCredentials(ctx, "frank@example.com", "a brand new password")
	require.NoError(t, err)

	// Single use.
	assert.ErrorIs(t, f.svc.ResetPassword(ctx, token, "yet another password"), identity.ErrInvalidToken)
	// Expiry.
	f.clock.Advance(2 * time.Minute)
	require.NoError(t, f.svc.RequestPasswordReset(ctx, "frank@example.com"))
	expired := f.lastToken(t, "frank@example.com", "Reset")
	f.clock.Advance(2 * time.Hour)
	assert.ErrorIs(t, f.svc.ResetPassword(ctx, expired, "yet another password"), identity.ErrInvalidToken)
	// A newer link replaces older ones.
	require.NoError(t, f.svc.RequestPasswordReset(ctx, "frank@example.com"))
	older := f.lastToken(t, "frank@example.com", "Reset")
	f.clock.Advance(2 * time.Minute)
	require.NoError(t, f.svc.RequestPasswordReset(ctx, "frank@example.com"))
	newer := f.lastToken(t, "frank@example.com", "Reset")
	assert.ErrorIs(t, f.svc.ResetPassword(ctx, older, "yet another password"), identity.ErrInvalidToken)
	// Garbage and wrong-purpose tokens, none of them worth a hash: anyone
	// can send them, and the hashing slots are the logins'.
	hashes := identity.HashCount(f.svc)
	assert.ErrorIs(t, f.svc.ResetPassword(ctx, "garbage-"+strings.Repeat("x", 35), "yet another password"), identity.ErrInvalidToken)
	assert.Equal(t, hashes, identity.HashCount(f.svc), "a made-up token cost a hash")
	assert.ErrorIs(t, f.svc.ResetPassword(ctx, "garbage", "yet another password"), identity.ErrInvalidToken)
	assert.ErrorIs(t, f.svc.ResetPassword(ctx, strings.Repeat("x", 1<<20), "yet another password"), identity.ErrInvalidToken)
	require.NoError(t, f.svc.RequestEmailVerification(ctx, u.ID))
	assert.ErrorIs(t, f.svc.ResetPassword(ctx, f.lastToken(t, "frank@example.com", "Verify"), "yet another password"), identity.ErrInvalidToken)
	// A password change ends outstanding reset links.
	require.NoError(t, f.svc.ChangePassword(ctx, u.ID, "a brand new password", "changed by the user", ""))
	assert.ErrorIs(t, f.svc.ResetPassword(ctx, newer, "yet another password"), identity.ErrInvalidToken)
	// A weak new password is refused before the token is spent.
	f.clock.Advance(2 * time.Minute)
	require.NoError(t, f.svc.RequestPasswordReset(ctx, "frank@example.com"))
	fresh := f.lastToken(t, "frank@example.com", "Reset")
	var invalid *identity.ValidationError
	require.ErrorAs(t, f.svc.ResetPassword(ctx, fresh, "short"), &invalid)
	require.NoError(t, f.svc.ResetPassword(ctx, fresh, "yet another password"))

	// A disabled user gets no reset mail; the answer is the same. A link
	// mailed before the disable no longer works: it would set the password
	// the account has once enabled again.
	f.clock.Advance(2 * time.Minute)
	require.NoError(t, f.svc.RequestPasswordReset(ctx, "frank@example.com"))
	beforeDisable := f.lastToken(t, "frank@example.com", "Reset")
	_, err = f.svc.SetStatus(ctx, u.ID, identity.StatusDisabled, "")
	require.NoError(t, err)
	assert.ErrorIs(t, f.svc.ResetPassword(ctx, beforeDisable, "a password set while disabled"), identity.ErrInvalidToken)
	before = f.mails(t)
	require.NoError(t, f.svc.RequestPasswordReset(ctx, "frank@example.com"))
	assert.Equal(t, before, f.mails(t))
	// A malformed email is the one refusal, and it reveals nothing.
	var bad *identity.ValidationError
	assert.ErrorAs(t, f.svc.RequestPasswordReset(ctx, "not an email"), &bad)
	// The token is stored only hashed.
	var stored int
	require.NoError(t, f.db.DB.QueryRowContext(ctx, `SELECT count(*) FROM one_time_tokens WHERE encode(token_hash, 'escape') LIKE '%' || $1 || '%'`, token[:10]).Scan(&stored))
	assert.Zero(t, stored)
}

func TestEmailVerification(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	u := f.create(t, "gina@example.com")
	ctx := t.Context()
	signup := f.lastToken(t, "gina@example.com", "Verify")
	// Asking again right after sign-up is too soon.
	assert.ErrorIs(t, f.svc.RequestEmailVerification(ctx, u.ID), identity.ErrTooSoon)
	f.clock.Advance(2 * time.Minute)
	require.NoError(t, f.svc.RequestEmailVerification(ctx, u.ID))
	token := f.lastToken(t, "gina@example.com", "Verify")
	require.NotEqual(t, signup, token)
	assert.ErrorIs(t, f.svc.VerifyEmail(ctx, signup), identity.ErrInvalidToken, "an earlier link still works")
	require.NoError(t, f.svc.VerifyEmail(ctx, token))
	got, err := f.svc.GetUser(ctx, u.ID)
	require.NoError(t, err)
	assert.NotNil(t, got.EmailVerifiedAt)
	assert.ErrorIs(t, f.svc.VerifyEmail(ctx, token), identity.ErrInvalidToken, "token reused")
	assert.ErrorIs(t, f.svc.RequestEmailVerification(ctx, u.ID), identity.ErrAlreadyVerified)

	// A new email is unverified again, and gets its own mail; a link mailed
	// to the old address cannot verify it.
	f.clock.Advance(time.Hour)
	newEmail := "Gina2@example.com"
	got, err = f.svc.UpdateUser(ctx, u.ID, nil, &newEmail)
	require.NoError(t, err)
	assert.Nil(t, got.EmailVerifiedAt)
	assert.Equal(t, "gina2@example.com", got.Email)
	toNew := f.lastToken(t, "gina2@example.com", "Verify")
	require.NoError(t, f.svc.VerifyEmail(ctx, toNew))
	got, err = f.svc.GetUser(ctx, u.ID)
	require.NoError(t, err)
	assert.NotNil(t, got.EmailVerifiedAt)

	// Expired links do not verify.
	f.create(t, "hal@example.com")
	f.clock.Advance(73 * time.Hour)
	assert.ErrorIs(t, f.svc.VerifyEmail(ctx, f.lastToken(t, "hal@example.com", "Verify")), identity.ErrInvalidToken)
	assert.ErrorIs(t, f.svc.VerifyEmail(ctx, ""), identity.ErrInvalidToken)
	assert.ErrorIs(t, f.svc.RequestEmailVerification(ctx, uuid.New()), identity.ErrNotFound)
}

func TestATokenWorksOnceUnderConcurrency(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	f.create(t, "jo@example.com")
	require.NoError(t, f.svc.RequestPasswordReset(t.Context(), "jo@example.com"))
	token := f.lastToken(t, "jo@example.com", "Reset")
	var (
		wg sync.WaitGroup
		mu sync.Mutex
		ok int
	)
	for range 5 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if f.svc.ResetPassword(context.Background(), token, "a brand new password") == nil {
				mu.Lock()
				ok++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	assert.Equal(t, 1, ok)
}

func TestChangePassword(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	u := f.create(t, "ivan@example.com")
	ctx := t.Context()
	var invalid *identity.ValidationError
	require.ErrorAs(t, f.svc.ChangePassword(ctx, u.ID, "correct horse battery", "short", ""), &invalid)
	assert.ErrorIs(t, f.svc.ChangePassword(ctx, uuid.New(), "correct horse battery", "a new good password", ""), identity.ErrNotFound)
	before := f.events(t)
	require.NoError(t, f.svc.ChangePassword(ctx, u.ID, "correct horse battery", "a new good password", ""))
	assert.Equal(t, before+1, f.events(t), "no identity.password.changed")
	_, err := f.svc.VerifyCredentials(ctx, "ivan@example.com", "a new good password")
	require.NoError(t, err)

	// No current password is a malformed request, not a wrong guess.
	for range 5 {
		require.ErrorAs(t, f.svc.ChangePassword(ctx, u.ID, "", "another good password", ""), &invalid)
	}
	require.NoError(t, f.svc.ChangePassword(ctx, u.ID, "a new good password", "a new good password", ""), "empty ones locked the account")

	// Wrong current passwords count towards the lockout.
	for range 3 {
		assert.ErrorIs(t, f.svc.ChangePassword(ctx, u.ID, "not my password", "another good password", ""), identity.ErrWrongPassword)
	}
	// The owner of the account may be told it is locked; a login is not.
	assert.ErrorIs(t, f.svc.ChangePassword(ctx, u.ID, "a new good password", "another good password", ""), identity.ErrLocked)
	_, err = f.svc.VerifyCredentials(ctx, "ivan@example.com", "a new good password")
	assert.Equal(t, identity.ErrInvalidCredentials, err)
}

func TestUpdateDeleteAndStatus(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	a := f.create(t, "hank@example.com")
	f.create(t, "ivy@example.com")
	ctx := t.Context()

	name := "Hank"
	got, err := f.svc.UpdateUser(ctx, a.ID, &name, nil)
	require.NoError(t, err)
	assert.Equal(t, "Hank", got.DisplayName)
	taken := "IVY@example.com"
	_, err = f.svc.UpdateUser(ctx, a.ID, nil, &taken)
	assert.ErrorIs(t, err, identity.ErrEmailTaken)
	var invalid *identity.ValidationError
	for _, bad := range []string{strings.Repeat("x", 1<<20), strings.Repeat("é", 201), "a\x00b", "a\xffb"} {
		_, err = f.svc.UpdateUser(ctx, a.ID, &bad, nil)
		require.ErrorAs(t, err, &invalid, "display name %.20q", bad)
		assert.Equal(t, "display_name", invalid.Field)
	}
	long := strings.Repeat("é", 200)
	got, err = f.svc.UpdateUser(ctx, a.ID, &long, nil)
	require.NoError(t, err)
	assert.Equal(t, long, got.DisplayName)

	before := f.events(t)
	require.NoError(t, f.svc.DeleteUser(ctx, a.ID))
	require.NoError(t, f.svc.DeleteUser(ctx, a.ID), "delete is not idempotent")
	assert.Equal(t, before+1, f.events(t), "one identity.user.deleted")
	assert.ErrorIs(t, f.svc.DeleteUser(ctx, uuid.New()), identity.ErrNotFound)
	// Nothing personal is left: a tombstone of the ID and times, no tokens.
	row := f.db.Ent.User.Query().Where(user.ID(a.ID)).OnlyX(ctx)
	assert.Empty(t, row.Email)
	assert.Empty(t, row.DisplayName)
	assert.Empty(t, row.PasswordHash)
	assert.NotNil(t, row.DeletedAt)
	var tokens int
	require.NoError(t, f.db.DB.QueryRowContext(ctx, `SELECT count(*) FROM one_time_tokens WHERE user_id = $1`, a.ID).Scan(&tokens))
	assert.Zero(t, tokens)
	_, err = f.svc.UpdateUser(ctx, a.ID, &name, nil)
	assert.ErrorIs(t, err, identity.ErrNotFound)
	_, err = f.svc.GetUser(ctx, a.ID)
	assert.ErrorIs(t, err, identity.ErrNotFound)
	_, err = f.svc.VerifyCredentials(ctx, "hank@example.com", "correct horse battery")
	assert.ErrorIs(t, err, identity.ErrInvalidCredentials, "a deleted user can log in")
	// The email is free again.
	f.create(t, "hank@example.com")

	_, err = f.svc.SetStatus(ctx, uuid.New(), identity.StatusDisabled, "")
	assert.ErrorIs(t, err, identity.ErrNotFound)
	_, err = f.svc.SetStatus(ctx, a.ID, identity.StatusDisabled, "")
	assert.ErrorIs(t, err, identity.ErrNotFound, "a deleted user can be disabled")

	// Disable and enable are idempotent and audited once each.
	ivy, err := f.svc.VerifyCredentials(ctx, "ivy@example.com", "correct horse battery")
	require.NoError(t, err)
	before = f.events(t)
	for range 2 {
		got, err := f.svc.SetStatus(ctx, ivy.ID, identity.StatusDisabled, "left")
		require.NoError(t, err)
		assert.Equal(t, identity.StatusDisabled, got.Status)
	}
	for range 2 {
		got, err := f.svc.SetStatus(ctx, ivy.ID, identity.StatusActive, "back")
		require.NoError(t, err)
		assert.Equal(t, identity.StatusActive, got.Status)
	}
	assert.Equal(t, before+2, f.events(t))
	// A refused reason changes nothing: the reason is the audit event's,
	// which the Audit service would refuse to record.
	for _, bad := range []string{strings.Repeat("é", 501), "a\x00b", "a\xffb"} {
		_, err = f.svc.SetStatus(ctx, ivy.ID, identity.StatusDisabled, bad)
		require.ErrorAs(t, err, &invalid, "reason %.20q", bad)
		assert.Equal(t, "reason", invalid.Field)
		got, err := f.svc.GetUser(ctx, ivy.ID)
		require.NoError(t, err)
		assert.Equal(t, identity.StatusActive, got.Status, "reason %.20q", bad)
	}
	assert.Equal(t, before+2, f.events(t))
	_, err = f.svc.GetUser(ctx, uuid.New())
	assert.ErrorIs(t, err, identity.ErrNotFound)
}

func TestListUsersPagesStayStableUnderInserts(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := t.Context()
	var want []uuid.UUID
	for i := range 7 {
		want = append(want, f.create(t, "user"+string(rune('a'+i))+"@example.com").ID)
		f.clock.Advance(time.Millisecond)
	}
	var seen []uuid.UUID
	token := ""
	for page := 0; ; page++ {
		users, next, err := f.svc.ListUsers(ctx, identity.ListQuery{PageSize: 3, PageToken: token})
		require.NoError(t, err)
		for _, u := range users {
			seen = append(seen, u.ID)
		}
		if page == 0 {
			// Users created between pages come after everything listed so
			// far: they never shift a page.
			for i := range 2 {
				want = append(want, f.create(t, "late"+string(rune('a'+i))+"@example.com").ID)
				f.clock.Advance(time.Millisecond)
			}
		}
		if next == "" {
			break
		}
		token = next
	}
	assert.Equal(t, want, seen)

	// Filters.
	users, _, err := f.svc.ListUsers(ctx, identity.ListQuery{Query: "LATE"})
	require.NoError(t, err)
	assert.Len(t, users, 2)
	_, err = f.svc.SetStatus(ctx, want[0], identity.StatusDisabled, "")
	require.NoError(t, err)
	users, _, err = f.svc.ListUsers(ctx, identity.ListQuery{Status: identity.StatusDisabled})
	require.NoError(t, err)
	require.Len(t, users, 1)
	assert.Equal(t, want[0], users[0].ID)
	var invalid *identity.ValidationError
	_, _, err = f.svc.ListUsers(ctx, identity.ListQuery{PageToken: "not-a-token"})
	assert.ErrorAs(t, err, &invalid)
	_, _, err = f.svc.ListUsers(ctx, identity.ListQuery{PageSize: -1})
	assert.ErrorAs(t, err, &invalid)
	// A token is bound to its filters.
	_, next, err := f.svc.ListUsers(ctx, identity.ListQuery{PageSize: 1, Query: "example"})
	require.NoError(t, err)
	_, _, err = f.svc.ListUsers(ctx, identity.ListQuery{PageSize: 1, Query: "late", PageToken: next})
	assert.ErrorAs(t, err, &invalid)
	// Wildcards are literal, and sizes over the cap are capped.
	users, _, err = f.svc.ListUsers(ctx, identity.ListQuery{Query: "%"})
	require.NoError(t, err)
	assert.Empty(t, users)
	users, _, err = f.svc.ListUsers(ctx, identity.ListQuery{PageSize: 5000})
	require.NoError(t, err)
	assert.Len(t, users, 9)
}
