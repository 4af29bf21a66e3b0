package auth

import (
	"context"
	"database/sql"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"time"

	"github.com/google/uuid"

	"portcullis.dev/authsvc/ent"
	"portcullis.dev/authsvc/ent/predicate"
	"portcullis.dev/authsvc/ent/session"
	"portcullis.dev/kernel/outbox"
	auditv1 "portcullis.dev/proto/audit/v1"
)

// Page sizes of ListSessions (see the contract).
const (
	defaultPageSize = 50
	maxPageSize     = 1000
)

// Session is one active session as ListSessions shows it.
type Session struct {
	ID, UserID          string
	CreatedAt           time.Time
	LastRefreshAt       *time.Time
	ExpiresAt           time.Time
	SourceIP, UserAgent string
}

// pageToken is where the next page starts: after (CreatedAt, ID) in
// newest-first order, for user UserID.
type pageToken struct {
	UserID    string `json:"u"`
	CreatedAt int64  `json:"c"`
	ID        string `json:"i"`
}

// maxPageTokenSkew is how far past now the time of a page token may be:
// the session it names was created by a replica whose clock may be ahead.
const maxPageTokenSkew = time.Hour

// decodePageToken returns where token says userID's listing goes on. A
// client can make up a token as well as receive one, and its parts go into
// the query, so each is checked as the service writes it.
func decodePageToken(token, userID string, now time.Time) (pageToken, error) {
	var pt pageToken
	b, err := base64.RawURLEncoding.DecodeString(token)
	if err != nil || json.Unmarshal(b, &pt) != nil || pt.UserID != userID || !canonicalUUID(pt.ID) ||
		pt.CreatedAt <= 0 || time.Unix(0, pt.CreatedAt).After(now.Add(maxPageTokenSkew)) {
		return pageToken{}, invalid("page_token", "not a page token of this listing")
	}
	return pt, nil
}

// active selects sessions that can still be refreshed at now.
func active(now time.Time) predicate.Session {
	return session.And(session.RevokedAtIsNil(), session.IdleExpiresAtGT(now), session.ExpiresAtGT(now))
}

// ListSessions returns a page of userID's active sessions, newest first,
// and the token of the next page ("" on the last).
func (s *Service) ListSessions(ctx context.Context, userID string, pageSize int, token string) ([]Session, string, error) {
	switch {
	case pageSize < 0:
		return nil, "", invalid("page_size", "negative")
	case pageSize == 0:
		pageSize = defaultPageSize
	case pageSize > maxPageSize:
		pageSize = maxPageSize
	}
	if err := checkID("user_id", userID); err != nil {
		return nil, "", err
	}
	now := s.now()
	q := s.db.Session.Query().Where(session.UserID(userID), active(now))
	if token != "" {
		pt, err := decodePageToken(token, userID, now)
		if err != nil {
			return nil, "", err
		}
		c := time.Unix(0, pt.CreatedAt)
		q = q.Where(session.Or(session.CreatedAtLT(c), session.And(session.CreatedAt(c), session.IDLT(pt.ID))))
	}
	rows, err := q.Order(ent.Desc(session.FieldCreatedAt), ent.Desc(session.FieldID)).Limit(pageSize + 1).All(ctx)
	if err != nil {
		return nil, "", fmt.Errorf("auth: list sessions: %w", err)
	}
	next := ""
	if len(rows) > pageSize {
		rows = rows[:pageSize]
		last := rows[len(rows)-1]
		b, _ := json.Marshal(pageToken{UserID: userID, CreatedAt: last.CreatedAt.UnixNano(), ID: last.ID})
		next = base64.RawURLEncoding.EncodeToString(b)
	}
	out := make([]Session, len(rows))
	for i, r := range rows {
		out[i] = Session{
			ID: r.ID, UserID: r.UserID, CreatedAt: r.CreatedAt, LastRefreshAt: r.LastRefreshAt,
			ExpiresAt: r.ExpiresAt, SourceIP: r.SourceIP, UserAgent: r.UserAgent,
		}
	}
	return out, next, nil
}

// RevokeSession ends session sid of userID. It fails with
// [ErrSessionNotFound] when userID has no such session; revoking a revoked
// session succeeds.
func (s *Service) RevokeSession(ctx context.Context, userID, sid string) error {
	if err := checkID("user_id", userID); err != nil {
		return err
	}
	if sid == "" {
		return invalid("session_id", "required")
	}
	if err := checkID("session_id", sid); err != nil {
		return err
	}
	return s.withTx(ctx, func(tx *ent.Tx) error {
		sess, err := tx.Session.Query().Where(session.ID(sid), session.UserID(userID)).ForUpdate().Only(ctx)
		if ent.IsNotFound(err) {
			return ErrSessionNotFound
		}
		if err != nil {
			return fmt.Errorf("auth: revoke session: %w", err)
		}
		if sess.RevokedAt != nil {
			return nil
		}
		if err := sess.Update().SetRevokedAt(s.now()).SetRevokeReason(reasonRevoked).Exec(ctx); err != nil {
			return fmt.Errorf("auth: revoke session: %w", err)
		}
		return outbox.Enqueue(ctx, tx, outbox.NewEvent(ctx, "auth.session.revoked", "session:"+sid, auditv1.Outcome_OUTCOME_SUCCESS,
			map[string]string{"user_id": userID}))
	})
}

// RevokeAllSessions ends every active session of userID but keep (if not
// empty), and returns how many it ended.
func (s *Service) RevokeAllSessions(ctx context.Context, userID, keep string) (int, error) {
	if err := checkID("user_id", userID); err != nil {
		return 0, err
	}
	return s.revokeAll(ctx, userID, keep, reasonRevoked, false, time.Time{})
}

// maxReasonLen bounds an EndUserSessions reason (see the contract).
const maxReasonLen = 64

// EndUserSessions ends every active session of userID but except (if not
// empty), recording reason, and returns how many it ended. Another service
// calls it when something that proved who the user is has changed there
// (disabled, deleted, a new password): a refresh token must not outlive
// that. Ending them again ends none and succeeds, so the caller may retry.
//
// It also records when it did (the user's session cutoff), under a lock
// that each login's session takes too: a login that began before, whose
// credential check may have passed before the change, gets no session (see
// Login). Without it, such a login could create its session just after the
// revocation looked, and keep it.
//
// A positive age is how long ago the change was made, for a call that
// comes late: sessions begun more than maxClockSkew after it are the
// user's since, and stay, and the cutoff is no later than that. An age,
// measured by the caller on its own clock, needs no agreement between the
// services' clocks; this replica's and its peers' may differ by
// maxClockSkew.
func (s *Service) EndUserSessions(ctx context.Context, userID, reason, except string, age time.Duration) (int, error) {
	// Sessions hold the user ID as text, in the canonical form Identity
	// gives at login: any other spelling would match nothing and report
	// success while the sessions stay.
	id, err := uuid.Parse(userID)
	if err != nil {
		return 0, invalid("user_id", "must be a UUID")
	}
	userID = id.String()
	if !validReason(reason) {
		return 0, invalid("reason", fmt.Sprintf("must be a lower-case word of letters, digits and underscores of at most %d bytes", maxReasonLen))
	}
	if except != "" {
		if err := checkID("except_session_id", except); err != nil {
			return 0, err
		}
	}
	if age < 0 {
		return 0, invalid("change_age", "must not be negative")
	}
	var before time.Time
	if age > maxClockSkew {
		before = s.now().Add(-age).Add(maxClockSkew)
	}
	return s.revokeAll(ctx, userID, except, reason, true, before)
}

// validReason reports whether reason is a word such as "user_disabled":
// it is stored and audited as a value to filter on, not as free text.
func validReason(reason string) bool {
	if reason == "" || len(reason) > maxReasonLen || reason[0] < 'a' || reason[0] > 'z' {
		return false
	}
	for _, c := range []byte(reason) {
		if (c < 'a' || c > 'z') && (c < '0' || c > '9') && c != '_' {
			return false
		}
	}
	return true
}

// maxClockSkew is how far behind another replica's clock may be: a
// session ended by this one's clock no longer ago still ends everywhere.
const maxClockSkew = 5 * time.Minute

// revokeAll ends every active session of userID but keep (if not empty)
// for reason, and those that ended within maxClockSkew, audits it as one
// auth.sessions.revoked_all event, and returns how many active ones it
// ended. With cutoff, it also sets the user's session
// cutoff (see EndUserSessions). A non-zero before spares the sessions
// created from then on, and bounds the cutoff.
func (s *Service) revokeAll(ctx context.Context, userID, keep, reason string, cutoff bool, before time.Time) (int, error) {
	bound := sql.NullTime{Time: before, Valid: !before.IsZero()} // NULL: no bound
	var n int
	err := s.withTx(ctx, func(tx *ent.Tx) error {
		if cutoff {
			// Taken before the clock is read: a login holding it began
			// earlier and commits first, so the revocation below sees its
			// session.
			if _, err := tx.ExecContext(ctx, `SELECT pg_advisory_xact_lock($1, hashtext($2))`, cutoffLockClass, userID); err != nil {
				return fmt.Errorf("auth: lock session cutoff: %w", err)
			}
			// The database's clock, read after the lock, as Login reads it:
			// the replicas' clocks may differ. A later cutoff wins.
			if _, err := tx.ExecContext(ctx, `INSERT INTO session_cutoffs (id, ended_before) VALUES ($1, least(clock_timestamp(), $2::timestamptz))
				ON CONFLICT (id) DO UPDATE SET ended_before = EXCLUDED.ended_before WHERE session_cutoffs.ended_before < EXCLUDED.ended_before`,
				userID, bound); err != nil {
				return fmt.Errorf("auth: set session cutoff: %w", err)
			}
		}
		// The active sessions, counted, then those that ended lately too:
		// "ended" is this replica's clock, and a replica whose clock lags
		// could still refresh one of them.
		now := s.now()
		revoke := func(at time.Time) (int, error) {
			u := tx.Session.Update().Where(session.UserID(userID), active(at))
			if keep != "" {
				u = u.Where(session.IDNEQ(keep))
			}
			if !before.IsZero() {
				u = u.Where(session.CreatedAtLT(before))
			}
			return u.SetRevokedAt(now).SetRevokeReason(reason).Save(ctx)
		}
		var err error
		if n, err = revoke(now); err != nil {
			return fmt.Errorf("auth: revoke sessions: %w", err)
		}
		if _, err = revoke(now.Add(-maxClockSkew)); err != nil {
			return fmt.Errorf("auth: revoke sessions: %w", err)
		}
		return outbox.Enqueue(ctx, tx, outbox.NewEvent(ctx, "auth.sessions.revoked_all", "user:"+userID, auditv1.Outcome_OUTCOME_SUCCESS,
			map[string]string{"count": fmt.Sprint(n), "kept_current": fmt.Sprint(keep != ""), "reason": reason}))
	})
	return n, err
}
