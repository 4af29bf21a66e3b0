package identity

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/mail"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"

	"portcullis.dev/identitysvc/ent"
	"portcullis.dev/identitysvc/ent/onetimetoken"
	"portcullis.dev/identitysvc/ent/user"
	"portcullis.dev/kernel/database"
	"portcullis.dev/kernel/logging"
	"portcullis.dev/kernel/outbox"
	auditv1 "portcullis.dev/proto/audit/v1"
)

// Status is whether a user may log in.
type Status string

// Statuses of a user.
const (
	StatusActive   Status = "active"
	StatusDisabled Status = "disabled"
)

// User is an account as the rest of the service sees it: never its
// password hash.
type User struct {
	ID              uuid.UUID
	Email           string
	DisplayName     string
	Status          Status
	EmailVerifiedAt *time.Time
	CreatedAt       time.Time
	UpdatedAt       time.Time
}

// Input limits of the contract.
const (
	// MaxDisplayNameRunes bounds a display name.
	MaxDisplayNameRunes = 200
	// MaxReasonRunes bounds the reason given for disabling or enabling a
	// user.
	MaxReasonRunes = 500
)

// Service is the Identity domain. Create it with [NewService].
type Service struct {
	db     *ent.Client
	cfg    Config
	hasher *hasher
	mailer Mailer
	logger *slog.Logger
	now    func() time.Time
	// dummyHash is checked against for unknown emails, so they cost the
	// same time as known ones.
	dummyHash string
	// mailSlots bounds how many mails are sent at once, and mailWaiting
	// counts those waiting for a slot (see send).
	mailSlots   chan struct{}
	mailWaiting atomic.Int32
	// sessions ends users' sessions in the Auth service (see endSessions);
	// sessionEndFailures counts the calls that failed.
	sessions SessionEnder
	// authority says whether one user holds all another does (see
	// ConfirmEmailChangeBy).
	authority          Authority
	sessionEndFailures *prometheus.CounterVec
	sessionEndsPending prometheus.Gauge
	// background tracks work that outlives a request (mail, session
	// ending); once draining is set, no more starts in the background
	// (see inBackground).
	backgroundMu sync.Mutex
	draining     bool
	background   sync.WaitGroup
}

// Option configures a [Service].
type Option func(*Service)

// WithClock sets the clock (tests).
func WithClock(now func() time.Time) Option { return func(s *Service) { s.now = now } }

// WithLogger sets the logger. Nil, the default, discards.
func WithLogger(l *slog.Logger) Option { return func(s *Service) { s.logger = l } }

// NewService returns the domain over db, sending mail through mailer.
func NewService(db *ent.Client, cfg Config, mailer Mailer, opts ...Option) (*Service, error) {
	cfg = cfg.withDefaults()
	s := &Service{
		db: db, cfg: cfg, hasher: newHasher(cfg.Argon2, cfg.HashConcurrency), mailer: mailer, now: time.Now,
		mailSlots:          make(chan struct{}, mailConcurrency),
		sessionEndFailures: newSessionEndFailures(),
		sessionEndsPending: newSessionEndsPending(),
	}
	for _, opt := range opts {
		opt(s)
	}
	// PostgreSQL keeps microseconds: a time returned right after a write
	// must equal the one read back later (and the one in a page token).
	clock := s.now
	s.now = func() time.Time { return clock().UTC().Truncate(time.Microsecond) }
	s.logger = logging.OrDiscard(s.logger)
	dummy, err := s.hasher.hash(context.Background(), "dummy password for unknown emails")
	if err != nil {
		return nil, err
	}
	s.dummyHash = dummy
	return s, nil
}

// NormalizeEmail checks an address and returns the form it is stored and
// looked up in: trimmed and lower-case. An address with a character that
// shows as nothing or as a blank ([blank]) is refused: it would make a
// second account that looks like the first.
func NormalizeEmail(email string) (string, error) {
	email = strings.ToLower(strings.TrimSpace(email))
	if email == "" {
		return "", &ValidationError{Field: "email", Reason: "is required"}
	}
	if len(email) > 254 {
		return "", &ValidationError{Field: "email", Reason: "must be at most 254 bytes"}
	}
	if strings.ContainsFunc(email, blank) {
		return "", &ValidationError{Field: "email", Reason: "must not contain invisible, control or space characters"}
	}
	addr, err := mail.ParseAddress(email)
	if err != nil || addr.Address != email || !strings.Contains(email[strings.LastIndex(email, "@")+1:], ".") {
		return "", &ValidationError{Field: "email", Reason: "is not a valid address"}
	}
	return email, nil
}

// blank reports whether r shows as nothing, or as a blank: a control or
// format character (a zero-width space, a direction mark), a space, one
// that Unicode says to ignore in display (a combining grapheme joiner, a
// Hangul filler), a variation selector, or the blank braille pattern.
func blank(r rune) bool {
	return !unicode.IsGraphic(r) || unicode.IsSpace(r) || r == '\u2800' ||
		unicode.In(r, unicode.Other_Default_Ignorable_Code_Point, unicode.Variation_Selector)
}

func checkDisplayName(name string) (string, error) {
	name = strings.TrimSpace(name)
	if !database.ValidText(name) {
		return "", &ValidationError{Field: "display_name", Reason: "must be UTF-8 text without NUL"}
	}
	if utf8.RuneCountInString(name) > MaxDisplayNameRunes {
		return "", &ValidationError{Field: "display_name", Reason: fmt.Sprintf("must be at most %d characters", MaxDisplayNameRunes)}
	}
	return name, nil
}

// CreateUser registers a user.
func (s *Service) CreateUser(ctx context.Context, email, password, displayName string) (User, error) {
	email, err := NormalizeEmail(email)
	if err != nil {
		return User{}, err
	}
	if displayName, err = checkDisplayName(displayName); err != nil {
		return User{}, err
	}
	if err := checkPasswordRules(password, s.cfg.MinPasswordLength); err != nil {
		return User{}, err
	}
	// A taken email is refused before the expensive hash; the unique index
	// still decides races.
	if taken, err := s.db.User.Query().Where(user.Email(email), user.DeletedAtIsNil()).Exist(ctx); err != nil {
		return User{}, err
	} else if taken {
		return User{}, ErrEmailTaken
	}
	hash, err := s.hasher.hash(ctx, password)
	if err != nil {
		return User{}, err
	}
	var (
		created *ent.User
		token   string
	)
	err = s.inTx(ctx, func(tx *ent.Tx) error {
		now := s.now()
		created, err = tx.User.Create().SetEmail(email).SetDisplayName(displayName).SetPasswordHash(hash).
			SetCreatedAt(now).SetUpdatedAt(now).Save(ctx)
		if ent.IsConstraintError(err) {
			return ErrEmailTaken
		}
		if err != nil {
			return err
		}
		if token, err = s.issueToken(ctx, tx, created.ID, onetimetoken.PurposeVerifyEmail); err != nil {
			return err
		}
		// One event: the verification mail is part of signing up.
		return s.audit(ctx, tx, "identity.user.created", created.ID, map[string]string{"verification_mail": "sent"})
	})
	if err != nil {
		return User{}, err
	}
	s.send(ctx, s.verificationMail(created.Email, token))
	return toUser(created), nil
}

// GetUser returns a user that is not deleted.
func (s *Service) GetUser(ctx context.Context, id uuid.UUID) (User, error) {
	u, err := s.liveUser(ctx, id)
	if err != nil {
		return User{}, err
	}
	return toUser(u), nil
}

// ConfirmActive checks that the user id, who is calling, may act at all:
// an account disabled or deleted after its access token was issued
// ([ErrCallerDisabled], [ErrCallerGone]). Disabling ends the account's
// sessions, but its last access token lives on until it expires; without
// this, a disabled administrator could enable themselves again with it,
// or disable the administrator who disabled them.
func (s *Service) ConfirmActive(ctx context.Context, id uuid.UUID) error {
	statuses, err := s.db.User.Query().Where(user.ID(id), user.DeletedAtIsNil()).Select(user.FieldStatus).Strings(ctx)
	switch {
	case err != nil:
		return err
	case len(statuses) == 0:
		return ErrCallerGone
	case Status(statuses[0]) == StatusDisabled:
		return ErrCallerDisabled
	}
	return nil
}

// liveUser reads the user id names, unless deleted ([ErrNotFound]).
func (s *Service) liveUser(ctx context.Context, id uuid.UUID) (*ent.User, error) {
	u, err := s.db.User.Query().Where(user.ID(id), user.DeletedAtIsNil()).Only(ctx)
	if ent.IsNotFound(err) {
		return nil, ErrNotFound
	}
	return u, err
}

// checkCurrentPassword checks the password a signed-in user gives to
// confirm a change: [ErrWrongPassword] when it is not theirs, counted
// towards the account's lockout as at login. A disabled user may still
// confirm with a token issued before being disabled: what needs it only
// keeps the account safer.
func (s *Service) checkCurrentPassword(ctx context.Context, u *ent.User, password string) (hash string, err error) {
	if len(password) > MaxPasswordBytes {
		return "", ErrWrongPassword
	}
	hash, err = s.authenticate(ctx, u, password, true)
	if errors.Is(err, ErrInvalidCredentials) {
		return "", ErrWrongPassword
	}
	return hash, err
}

// ConfirmOwnEmailChange checks the password users give to change their own
// email to email, before [Service.UpdateUser] does it. The email is where
// password resets go: an access token alone, stolen, would otherwise be
// enough to move it and then take the account over for good. An email
// that is the user's already needs no password. A wrong password counts
// towards the account's lockout, as at login.
func (s *Service) ConfirmOwnEmailChange(ctx context.Context, id uuid.UUID, email, password string) error {
	email, err := NormalizeEmail(email)
	if err != nil {
		return err
	}
	u, err := s.liveUser(ctx, id)
	if err != nil {
		return err
	}
	if email == u.Email {
		return nil
	}
	if password == "" {
		return &ValidationError{Field: "current_password", Reason: "is required to change your own email"}
	}
	_, err = s.checkCurrentPassword(ctx, u, password)
	return err
}

// VerifyPassword checks the password signed-in user id gives to confirm a
// sensitive change another service makes, such as enrolling in TOTP in the
// Auth service: [ErrWrongPassword] when it is not theirs, counted towards
// the lockout as at login; [ErrLocked] while locked; [ErrNotFound] for a
// user that is not there.
func (s *Service) VerifyPassword(ctx context.Context, id uuid.UUID, password string) (User, error) {
	if password == "" {
		return User{}, &ValidationError{Field: "password", Reason: "is required"}
	}
	u, err := s.liveUser(ctx, id)
	if err != nil {
		return User{}, err
	}
	if _, err = s.checkCurrentPassword(ctx, u, password); err != nil {
		return User{}, err
	}
	return toUser(u), nil
}

// Authority says whether subject holds every permission target holds: the
// Authz service's Covers, which the kernel's rpc.AuthzChecker asks.
type Authority interface {
	Covers(ctx context.Context, subject, target string) (bool, error)
}

// WithAuthority sets what [Service.ConfirmEmailChangeBy] asks. Without it
// (nil, the default) every change is allowed: that is for tests and tools
// that run the domain without an Authz service, never for the service.
func WithAuthority(a Authority) Option { return func(s *Service) { s.authority = a } }

// ConfirmEmailChangeBy checks that caller, a user, may change the email of
// user id, someone else, to email: only if caller holds every permission
// id holds ([ErrOutranked] if not). The email is where password resets
// go: otherwise a helpdesk administrator with identity.users.write could
// move an administrator's email to their own mailbox, reset the password,
// and be that administrator. An email that is the user's already needs no
// check.
func (s *Service) ConfirmEmailChangeBy(ctx context.Context, caller string, id uuid.UUID, email string) error {
	if s.authority == nil {
		return nil
	}
	email, err := NormalizeEmail(email)
	if err != nil {
		return err
	}
	u, err := s.liveUser(ctx, id)
	if err != nil || email == u.Email {
		return err
	}
	return s.ConfirmOutranks(ctx, caller, id, "email_change")
}

// ConfirmOutranks checks that caller, a user, holds every permission user
// id, someone else, holds ([ErrOutranked] if not), before caller does to
// id's account what action names: "email_change", "disable", "enable" or
// "delete". Otherwise anyone with identity.users.write could lock every
// administrator out, for good once their access tokens expire. A refusal
// is recorded in the audit log as identity.user.<action>_refused: an
// attempt on an account that holds more than the caller is what a
// takeover begins with.
func (s *Service) ConfirmOutranks(ctx context.Context, caller string, id uuid.UUID, action string) error {
	if s.authority == nil {
		return nil
	}
	covers, err := s.authority.Covers(ctx, caller, id.String())
	switch {
	case err != nil:
		return fmt.Errorf("%w: %v", ErrAuthorityUnavailable, err)
	case !covers:
		if err := s.inTx(ctx, func(tx *ent.Tx) error {
			return outbox.Enqueue(ctx, tx, outbox.NewEvent(ctx, "identity.user."+action+"_refused", "user:"+id.String(), auditv1.Outcome_OUTCOME_DENIED,
				map[string]string{"reason": "outranked", "by": caller}))
		}); err != nil {
			return err
		}
		return ErrOutranked
	}
	return nil
}

// UpdateUser changes a user's display name and/or email; nil leaves a field
// alone. A new email is unverified until verified again.
func (s *Service) UpdateUser(ctx context.Context, id uuid.UUID, displayName, email *string) (User, error) {
	var err error
	if displayName != nil {
		name, err := checkDisplayName(*displayName)
		if err != nil {
			return User{}, err
		}
		displayName = &name
	}
	if email != nil {
		e, err := NormalizeEmail(*email)
		if err != nil {
			return User{}, err
		}
		email = &e
	}
	var (
		updated *ent.User
		token   string
	)
	err = s.inTx(ctx, func(tx *ent.Tx) error {
		current, err := lockLiveUser(ctx, tx, id)
		if err != nil {
			return err
		}
		upd := tx.User.UpdateOne(current).SetUpdatedAt(s.now())
		changed := map[string]string{}
		if displayName != nil && *displayName != current.DisplayName {
			upd.SetDisplayName(*displayName)
			changed["display_name"] = "changed"
		}
		if email != nil && *email != current.Email {
			upd.SetEmail(*email).ClearEmailVerifiedAt()
			changed["email"] = "changed"
		}
		if len(changed) == 0 {
			updated = current
			return nil
		}
		updated, err = upd.Save(ctx)
		if ent.IsConstraintError(err) {
			return ErrEmailTaken
		}
		if err != nil {
			return err
		}
		if changed["email"] != "" {
			// Links mailed to the old address stop working: a verification
			// link must not verify the new address, and a reset link belongs
			// to whoever reads the old mailbox. issueToken drops the
			// verification links; the reset links go here.
			if err := dropTokens(ctx, tx, id, onetimetoken.PurposeResetPassword); err != nil {
				return err
			}
			if token, err = s.issueToken(ctx, tx, id, onetimetoken.PurposeVerifyEmail); err != nil {
				return err
			}
			changed["verification_mail"] = "sent"
		}
		return s.audit(ctx, tx, "identity.user.updated", id, changed)
	})
	if err != nil {
		return User{}, err
	}
	if token != "" {
		s.send(ctx, s.verificationMail(updated.Email, token))
	}
	return toUser(updated), nil
}

// DeleteUser deletes a user: everything personal is erased and its tokens
// deleted, leaving a tombstone of the ID and times (see the User schema).
// Deleting a user that is gone already succeeds (the RPC is idempotent);
// one that never existed is [ErrNotFound]. Then the user's sessions are
// ended (see endSessions), again too.
func (s *Service) DeleteUser(ctx context.Context, id uuid.UUID) error {
	var end *pendingEnd
	err := s.inTx(ctx, func(tx *ent.Tx) error {
		u, err := tx.User.Query().Where(user.ID(id)).ForUpdate().Only(ctx)
		if ent.IsNotFound(err) {
			return ErrNotFound
		}
		if err != nil {
			return err
		}
		if end, err = s.queueSessionEnd(ctx, tx, id, ReasonUserDeleted, ""); err != nil || u.DeletedAt != nil {
			return err
		}
		now := s.now()
		if err := tx.User.UpdateOne(u).SetDeletedAt(now).SetUpdatedAt(now).
			SetEmail("").SetDisplayName("").SetPasswordHash("").ClearEmailVerifiedAt().
			SetFailedAttempts(0).ClearFailureWindowStart().ClearLockedUntil().Exec(ctx); err != nil {
			return err
		}
		if _, err := tx.OneTimeToken.Delete().Where(onetimetoken.UserID(id)).Exec(ctx); err != nil {
			return err
		}
		return s.audit(ctx, tx, "identity.user.deleted", id, nil)
	})
	if err != nil {
		return err
	}
	s.endSessions(ctx, end)
	return nil
}

// checkReason refuses a reason the audit event could not carry: the Audit
// service refuses NUL and invalid UTF-8, and the outbox would then set the
// event aside for good, leaving a status change without its record.
func checkReason(reason string) error {
	if !database.ValidText(reason) || utf8.RuneCountInString(reason) > MaxReasonRunes {
		return &ValidationError{Field: "reason", Reason: fmt.Sprintf("must be UTF-8 text without NUL of at most %d characters", MaxReasonRunes)}
	}
	return nil
}

// SetStatus disables or enables a user; setting the status it has already
// succeeds without an event. Disabling ends the user's sessions (see
// endSessions), even when the user was disabled already, and the reset
// links mailed to them.
func (s *Service) SetStatus(ctx context.Context, id uuid.UUID, status Status, reason string) (User, error) {
	if err := checkReason(reason); err != nil {
		return User{}, err
	}
	var (
		out *ent.User
		end *pendingEnd
	)
	err := s.inTx(ctx, func(tx *ent.Tx) error {
		u, err := lockLiveUser(ctx, tx, id)
		if err != nil {
			return err
		}
		if status == StatusDisabled {
			if end, err = s.queueSessionEnd(ctx, tx, id, ReasonUserDisabled, ""); err != nil {
				return err
			}
			// A reset link mailed before would otherwise set the password
			// the account has once it is enabled again.
			if err := dropTokens(ctx, tx, id, onetimetoken.PurposeResetPassword); err != nil {
				return err
			}
		}
		if Status(u.Status) == status {
			out = u
			return nil
		}
		if out, err = tx.User.UpdateOne(u).SetStatus(user.Status(status)).SetUpdatedAt(s.now()).Save(ctx); err != nil {
			return err
		}
		action := "identity.user.disabled"
		if status == StatusActive {
			action = "identity.user.enabled"
		}
		return s.audit(ctx, tx, action, id, map[string]string{"reason": reason})
	})
	if err != nil {
		return User{}, err
	}
	s.endSessions(ctx, end)
	return toUser(out), nil
}

// ChangePassword replaces the password of id after checking the current
// one. A wrong current password is [ErrWrongPassword] and counts towards
// the lockout like a failed login (a stolen access token must not become
// an unlimited password oracle); while locked it is [ErrLocked].
// Outstanding password-reset tokens stop working, and so do the user's
// sessions but keepSession, the one the change was made in (see
// endSessions): whoever knew the old password, or holds a refresh token
// from before, is logged out everywhere else.
func (s *Service) ChangePassword(ctx context.Context, id uuid.UUID, current, next, keepSession string) error {
	if current == "" {
		// Refused before the check, which would count it as a wrong guess.
		return &ValidationError{Field: "current_password", Reason: "is required"}
	}
	if err := checkPasswordRules(next, s.cfg.MinPasswordLength); err != nil {
		return err
	}
	u, err := s.liveUser(ctx, id)
	if err != nil {
		return err
	}
	checked, err := s.checkCurrentPassword(ctx, u, current)
	if err != nil {
		return err
	}
	hash, err := s.hasher.hash(ctx, next)
	if err != nil {
		return err
	}
	var end *pendingEnd
	err = s.inTx(ctx, func(tx *ent.Tx) error {
		// Only over the password just checked: a reset that committed
		// while the new one was hashed must not be undone by a caller who
		// knew the old password.
		n, err := tx.User.Update().Where(user.ID(id), user.DeletedAtIsNil(), user.PasswordHash(checked)).
			SetPasswordHash(hash).SetUpdatedAt(s.now()).Save(ctx)
		if err != nil {
			return err
		}
		if n == 0 {
			if _, err := s.liveUser(ctx, id); err != nil {
				return err // deleted meanwhile
			}
			return ErrWrongPassword // changed meanwhile: current is no longer the password
		}
		if err := dropTokens(ctx, tx, id, onetimetoken.PurposeResetPassword); err != nil {
			return err
		}
		if end, err = s.queueSessionEnd(ctx, tx, id, ReasonPasswordChanged, keepSession); err != nil {
			return err
		}
		return s.audit(ctx, tx, "identity.password.changed", id, nil)
	})
	if err != nil {
		return err
	}
	s.endSessions(ctx, end)
	return nil
}

// inTx runs fn in a transaction, committing when it returns nil or an
// [errCommitThen], rolling back otherwise.
func (s *Service) inTx(ctx context.Context, fn func(*ent.Tx) error) error {
	tx, err := s.db.Tx(ctx)
	if err != nil {
		return err
	}
	err = fn(tx)
	var after errCommitThen
	switch {
	case errors.As(err, &after):
		if err := tx.Commit(); err != nil {
			return err
		}
		return after.err
	case err != nil:
		return errors.Join(err, tx.Rollback())
	}
	return tx.Commit()
}

// errCommitThen asks inTx to commit and then return err: a failed login
// must still record the failure.
type errCommitThen struct{ err error }

func (e errCommitThen) Error() string { return e.err.Error() }

// audit records action on the user id in tx, through the outbox.
func (s *Service) audit(ctx context.Context, tx *ent.Tx, action string, id uuid.UUID, metadata map[string]string) error {
	return outbox.Enqueue(ctx, tx, outbox.NewEvent(ctx, action, "user:"+id.String(), auditv1.Outcome_OUTCOME_SUCCESS, metadata))
}

func toUser(u *ent.User) User {
	return User{
		ID:              u.ID,
		Email:           u.Email,
		DisplayName:     u.DisplayName,
		Status:          Status(u.Status),
		EmailVerifiedAt: u.EmailVerifiedAt,
		CreatedAt:       u.CreatedAt,
		UpdatedAt:       u.UpdatedAt,
	}
}
