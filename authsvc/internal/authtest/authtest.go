// Package authtest builds the Auth domain for tests: on a PostgreSQL
// schema of the test's own, with a clock the test sets, and an Identity
// stand-in holding a small table of users. It is test support: the
// database is the real one.
package authtest

import (
	"context"
	"crypto/rand"
	"errors"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"entgo.io/ent/dialect"
	"google.golang.org/protobuf/proto"

	"portcullis.dev/authsvc/ent"
	"portcullis.dev/authsvc/internal/auth"
	"portcullis.dev/authsvc/internal/keys"
	"portcullis.dev/kernel/authn/authntest"
	kconfig "portcullis.dev/kernel/config"
	"portcullis.dev/kernel/database"
	"portcullis.dev/kernel/kerneltest"
	auditv1 "portcullis.dev/proto/audit/v1"
	identityv1 "portcullis.dev/proto/identity/v1"
	"portcullis.dev/proto/identity/v1/identityv1connect"
)

// The users every [Identity] starts with, all with password [Password].
const (
	Password      = "correct horse battery staple"
	ActiveEmail   = "alice@example.com"
	ActiveID      = "11111111-1111-4111-8111-111111111111"
	DisabledEmail = "dora@example.com"
	DisabledID    = "22222222-2222-4222-8222-222222222222"
	LockedEmail   = "lou@example.com"
	LockedID      = "33333333-3333-4333-8333-333333333333"
	// BusyEmail is answered as an Identity service too busy hashing
	// passwords answers (Unavailable), whatever the password.
	BusyEmail = "bea@example.com"
	BusyID    = "44444444-4444-4444-8444-444444444444"
	// AccessTTL is the access-token lifetime of [Config].
	AccessTTL = 15 * time.Minute
	// Leeway is the verifier leeway a keyring's retention allows for.
	Leeway = 30 * time.Second
)

// User is one row of the stand-in's table.
type User struct {
	ID, Password string
	Status       identityv1.UserStatus
	Locked       bool
	// Busy makes every check of this user fail as when Identity's
	// password-hashing slots stay full.
	Busy bool
}

// Identity implements VerifyCredentials like the Identity service does,
// over a table of users. It is safe for concurrent use.
type Identity struct {
	identityv1connect.UnimplementedIdentityServiceHandler
	mu    sync.Mutex
	users map[string]User
}

var _ auth.Identity = (*Identity)(nil)

// NewIdentity returns a stand-in with the four users of the constants.
func NewIdentity() *Identity {
	return &Identity{users: map[string]User{
		ActiveEmail:   {ID: ActiveID, Password: Password, Status: identityv1.UserStatus_USER_STATUS_ACTIVE},
		DisabledEmail: {ID: DisabledID, Password: Password, Status: identityv1.UserStatus_USER_STATUS_DISABLED},
		LockedEmail:   {ID: LockedID, Password: Password, Status: identityv1.UserStatus_USER_STATUS_ACTIVE, Locked: true},
		BusyEmail:     {ID: BusyID, Password: Password, Status: identityv1.UserStatus_USER_STATUS_ACTIVE, Busy: true},
	}}
}

// Add adds or replaces a user.
func (i *Identity) Add(email string, u User) {
	i.mu.Lock()
	defer i.mu.Unlock()
	i.users[email] = u
}

// VerifyCredentials implements identityv1connect.IdentityServiceHandler:
// as the contract says, an unknown email, a wrong password, a locked
// account and a disabled user all get the same Unauthenticated error.
func (i *Identity) VerifyCredentials(_ context.Context, req *connect.Request[identityv1.VerifyCredentialsRequest]) (*connect.Response[identityv1.VerifyCredentialsResponse], error) {
	i.mu.Lock()
	u, ok := i.users[req.Msg.GetEmail()]
	i.mu.Unlock()
	switch {
	case ok && u.Busy:
		return nil, connect.NewError(connect.CodeUnavailable, errors.New("busy: too many password checks in progress; retry later"))
	case !ok || u.Password != req.Msg.GetPassword() || u.Locked || u.Status != identityv1.UserStatus_USER_STATUS_ACTIVE:
		return nil, connect.NewError(connect.CodeUnauthenticated, errors.New("invalid credentials"))
	}
	return connect.NewResponse(&identityv1.VerifyCredentialsResponse{UserId: u.ID, Status: u.Status, EmailVerified: true}), nil
}

// VerifyPassword checks a user's password by ID as the Identity service
// does: PermissionDenied when wrong, ResourceExhausted when locked,
// NotFound for no such user.
func (i *Identity) VerifyPassword(_ context.Context, req *connect.Request[identityv1.VerifyPasswordRequest]) (*connect.Response[identityv1.VerifyPasswordResponse], error) {
	i.mu.Lock()
	defer i.mu.Unlock()
	for email, u := range i.users {
		if u.ID != req.Msg.GetUserId() {
			continue
		}
		switch {
		case u.Busy:
			return nil, connect.NewError(connect.CodeUnavailable, errors.New("busy: too many password checks in progress; retry later"))
		case u.Locked:
			return nil, connect.NewError(connect.CodeResourceExhausted, errors.New("account temporarily locked"))
		case u.Password != req.Msg.GetPassword():
			return nil, connect.NewError(connect.CodePermissionDenied, errors.New("wrong password"))
		}
		return connect.NewResponse(&identityv1.VerifyPasswordResponse{Email: email}), nil
	}
	return nil, connect.NewError(connect.CodeNotFound, errors.New("user not found"))
}

// Config is the domain configuration tests use.
func Config() auth.Config {
	return auth.Config{
		Issuer: "portcullis", Audience: "portcullis",
		AccessTTL: AccessTTL, RefreshIdleTTL: 24 * time.Hour, RefreshAbsoluteTTL: 72 * time.Hour,
		TOTPIssuer: "Portcullis Test",
	}
}

// Env is one test's Auth domain and what it stands on.
type Env struct {
	DB       *database.Client[*ent.Client]
	Clock    *authntest.Clock
	Sealer   *keys.Sealer
	Keyring  *keys.Keyring
	Identity *Identity
	Service  *auth.Service
}

// Options tune [New].
type Options struct {
	// Identity replaces the stand-in (a real client, say).
	Identity auth.Identity
	// Alg of the keys; empty means EdDSA.
	Alg string
	// MaxOpenConns of the pool; zero means the default.
	MaxOpenConns int
}

// New builds the domain on a fresh schema, its clock at a fixed time.
func New(t testing.TB, o Options) *Env {
	t.Helper()
	url, _ := kerneltest.Postgres(t)
	db, err := database.NewEntClient(t.Context(), database.Config{DSN: kconfig.DSN(url), Schema: kerneltest.SchemaName(t), MaxOpenConns: o.MaxOpenConns},
		ent.Migrations(), func(d dialect.Driver) *ent.Client { return ent.NewClient(ent.Driver(d)) })
	if err != nil {
		t.Fatalf("database: %v", err)
	}
	t.Cleanup(func() { _ = db.Close(context.Background()) })
	kek := make([]byte, 32)
	_, _ = rand.Read(kek)
	sealer, err := keys.NewSealer(kek)
	if err != nil {
		t.Fatal(err)
	}
	clock := authntest.NewClock(time.Now().Truncate(time.Second))
	alg := o.Alg
	if alg == "" {
		alg = keys.AlgEdDSA
	}
	keyring := keys.NewKeyring(db.Ent, sealer, keys.Config{Alg: alg, Retention: AccessTTL + Leeway}, clock.Now)
	if err := keyring.Init(t.Context()); err != nil {
		t.Fatalf("keyring: %v", err)
	}
	e := &Env{DB: db, Clock: clock, Sealer: sealer, Keyring: keyring, Identity: NewIdentity()}
	var identity auth.Identity = e.Identity
	if o.Identity != nil {
		identity = o.Identity
	}
	e.Service = auth.New(db.Ent, keyring, sealer, identity, Config(), auth.WithClock(clock.Now))
	return e
}

// Events returns the actions of the audit events in the outbox, oldest
// first, and the events themselves, leaving out key rotations (the first
// key is made by [New]).
func (e *Env) Events(t testing.TB) ([]string, []*auditv1.NewEvent) {
	t.Helper()
	rows, err := e.DB.Ent.OutboxEvent.Query().Order(ent.Asc("id")).All(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	var actions []string
	var events []*auditv1.NewEvent
	for _, r := range rows {
		ev := &auditv1.NewEvent{}
		if err := proto.Unmarshal(r.Payload, ev); err != nil {
			t.Fatal(err)
		}
		if ev.GetAction() == "auth.signing_key.rotated" {
			continue
		}
		actions = append(actions, ev.GetAction())
		events = append(events, ev)
	}
	return actions, events
}
