package keys_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"portcullis.dev/authsvc/internal/authtest"
	"portcullis.dev/authsvc/internal/keys"
)

// TestScheduledRotationPublishesAhead: the next key is in the JWKS an
// hour before it signs (or, published late, an hour after it was), so that verifiers, which keep a key set for
// minutes, know it before its first token; then it takes over by itself,
// on every replica, and the old key stays published while its tokens live.
func TestScheduledRotationPublishesAhead(t *testing.T) {
	t.Parallel()
	e := authtest.New(t, authtest.Options{})
	ctx := t.Context()
	cfg := keys.Config{Alg: keys.AlgEdDSA, RotationInterval: 10 * time.Hour, PublishAhead: time.Hour, Retention: 20 * time.Minute}
	a := keys.NewKeyring(e.DB.Ent, e.Sealer, cfg, e.Clock.Now)
	b := keys.NewKeyring(e.DB.Ent, e.Sealer, cfg, e.Clock.Now) // another replica
	kids := func() []string { return publishedKids(t, a) }
	active := func(r *keys.Keyring) string {
		k, err := r.Active(ctx)
		require.NoError(t, err)
		return k.ID
	}
	first := active(a)
	require.Equal(t, []string{first}, kids())

	e.Clock.Advance(9*time.Hour - time.Minute)
	assert.Equal(t, first, active(a))
	assert.Equal(t, []string{first}, kids(), "published too early")

	e.Clock.Advance(time.Minute) // an hour before the interval is up
	assert.Equal(t, first, active(a), "the next key signs before verifiers can know it")
	assert.Equal(t, first, active(b))
	published := kids()
	require.Len(t, published, 2, "the next key is not published ahead")
	next := published[0]
	assert.NotEqual(t, first, next)

	e.Clock.Advance(time.Hour - time.Second)
	assert.Equal(t, first, active(a))
	e.Clock.Advance(time.Second) // the interval is up
	assert.Equal(t, next, active(a))
	assert.Equal(t, next, active(b))
	assert.Equal(t, []string{next, first}, kids(), "the old key's tokens still live")

	e.Clock.Advance(cfg.Retention + keys.DefaultCacheTTL + time.Second)
	assert.Equal(t, []string{next}, kids())

	// A rotation by hand signs at once, and retires a next key published
	// ahead with the current one.
	e.Clock.Advance(9*time.Hour + time.Minute)
	assert.Equal(t, next, active(a))
	require.Len(t, kids(), 2)
	now, err := a.Rotate(ctx)
	require.NoError(t, err)
	assert.Equal(t, now.ID, active(b))
	e.Clock.Advance(cfg.Retention + keys.DefaultCacheTTL + time.Second)
	assert.Equal(t, []string{now.ID}, kids())
	assert.Equal(t, now.ID, active(a), "the retired next key took over")
}

// TestNextKeyNotPublishedSignsOn: publishing the next key ahead can fail
// (the database refuses a write); the current key, still good for the
// hour, signs on, and publishing is tried again.
func TestNextKeyNotPublishedSignsOn(t *testing.T) {
	t.Parallel()
	e := authtest.New(t, authtest.Options{})
	ctx := t.Context()
	cfg := keys.Config{Alg: keys.AlgEdDSA, RotationInterval: 10 * time.Hour, PublishAhead: time.Hour, Retention: 20 * time.Minute}
	r := keys.NewKeyring(e.DB.Ent, e.Sealer, cfg, e.Clock.Now)
	first, err := r.Active(ctx)
	require.NoError(t, err)

	_, err = e.DB.Ent.ExecContext(ctx, `ALTER TABLE outbox_events RENAME TO outbox_events_away`)
	require.NoError(t, err)
	e.Clock.Advance(9 * time.Hour)
	k, err := r.Active(ctx)
	require.NoError(t, err, "logins fail an hour before they must")
	assert.Equal(t, first.ID, k.ID)

	_, err = e.DB.Ent.ExecContext(ctx, `ALTER TABLE outbox_events_away RENAME TO outbox_events`)
	require.NoError(t, err)
	e.Clock.Advance(keys.DefaultCacheTTL)
	_, err = r.Active(ctx)
	require.NoError(t, err)
	set, err := r.JWKS(ctx)
	require.NoError(t, err)
	assert.Len(t, set, 2, "the next key was not published when the database took writes again")
}

// TestRevokeDropsEveryOtherKey: after a compromise, the new key signs at
// once and every other key, retired or published ahead, leaves the JWKS
// (and the database) at once, instead of staying while its tokens live.
func TestRevokeDropsEveryOtherKey(t *testing.T) {
	t.Parallel()
	e := authtest.New(t, authtest.Options{})
	ctx := t.Context()
	cfg := keys.Config{Alg: keys.AlgEdDSA, RotationInterval: 10 * time.Hour, PublishAhead: time.Hour, Retention: 10 * time.Hour}
	a := keys.NewKeyring(e.DB.Ent, e.Sealer, cfg, e.Clock.Now)
	b := keys.NewKeyring(e.DB.Ent, e.Sealer, cfg, e.Clock.Now) // another replica
	kids := func() []string { return publishedKids(t, a) }
	first, err := b.Active(ctx)
	require.NoError(t, err)
	_, err = a.Rotate(ctx) // the first key retired, still published
	require.NoError(t, err)
	e.Clock.Advance(9 * time.Hour) // and the next key published ahead
	_, err = a.Active(ctx)
	require.NoError(t, err)
	require.Len(t, kids(), 3)

	fresh, err := a.Revoke(ctx)
	require.NoError(t, err)
	assert.Equal(t, []string{fresh.ID}, kids(), "a compromised key is still published")
	k, err := a.Active(ctx)
	require.NoError(t, err)
	assert.Equal(t, fresh.ID, k.ID)
	e.Clock.Advance(keys.DefaultCacheTTL + time.Second)
	k, err = b.Active(ctx)
	require.NoError(t, err)
	assert.Equal(t, fresh.ID, k.ID, "another replica still signs with a revoked key")
	assert.NotEqual(t, first.ID, k.ID)
}

// publishedKids returns the kids r's JWKS lists, newest first.
func publishedKids(t *testing.T, r *keys.Keyring) (out []string) {
	t.Helper()
	set, err := r.JWKS(t.Context())
	require.NoError(t, err)
	for _, k := range set {
		out = append(out, k.Kid)
	}
	return out
}
