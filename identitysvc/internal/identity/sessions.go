package identity

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"

	"portcullis.dev/identitysvc/ent"
)

// SessionEnder ends a user's sessions in the Auth service, all of them but
// exceptSession (if not empty), saying why. Ending them again must succeed,
// since [Service] retries. internal/authclient adapts the Auth service's
// client to it.
type SessionEnder interface {
	EndUserSessions(ctx context.Context, end SessionEnd) error
}

// SessionEnd is an end of a user's sessions to ask of the Auth service.
type SessionEnd struct {
	UserID string
	Reason string
	// ExceptSession, if not empty, is the session to keep.
	ExceptSession string
	// ChangedAt is when the change that ends them was made: an end that
	// reaches the Auth service late spares the sessions begun since.
	ChangedAt time.Time
}

// Why the Identity service ends a user's sessions, as the Auth service
// records it with each session and in its audit event.
const (
	ReasonUserDisabled    = "user_disabled"
	ReasonUserDeleted     = "user_deleted"
	ReasonPasswordReset   = "password_reset"
	ReasonPasswordChanged = "password_changed"
)

// How hard the service tries to end sessions. A few quick retries ride out
// an Auth instance restarting or a Consul hiccup; anything longer is an
// outage that an operator must see (the error log and the failure counter)
// rather than a goroutine that waits it out. Every try, and all of them
// together, are bounded, so that shutdown (see [Service.Drain]) never
// waits long.
const (
	sessionEndAttempts   = 3
	sessionEndBackoff    = 200 * time.Millisecond // doubled after each failed try
	sessionEndTryTimeout = 3 * time.Second
	sessionEndTimeout    = 8 * time.Second
	// sessionEndAnswerWait is how long the answer to a change waits for
	// its sessions to end: enough for a healthy Auth service and a quick
	// retry, short enough that an outage costs a caller little.
	sessionEndAnswerWait = time.Second
)

// WithSessionEnder sets how the service ends the sessions of a user who is
// disabled or deleted or whose password is reset or changed. Without it
// (nil, the default) sessions are left alone: that is for tests and tools
// that run the domain without an Auth service, never for the service.
func WithSessionEnder(e SessionEnder) Option { return func(s *Service) { s.sessions = e } }

// sessionEndLease is how long an instance owns a session end it is
// trying: past one round of tries (sessionEndTimeout), so that another
// instance takes it over only if this one is gone.
const sessionEndLease = 2 * sessionEndTimeout

// sessionEndBatch is how many due session ends one retry round takes, and
// sessionEndRoundLease how long it leases them: past the round's tries,
// one after another, so that no other instance tries one of them too.
const (
	sessionEndBatch      = 8
	sessionEndRoundLease = sessionEndBatch*(sessionEndTryTimeout+sessionEndBookkeeping) + sessionEndLease
)

// sessionEndBookkeeping bounds the writes that follow a try (see
// settleSessionEnd).
const sessionEndBookkeeping = 5 * time.Second

// maxSessionEndBackoff bounds the wait between two retries of one end.
const maxSessionEndBackoff = 5 * time.Minute

// newSessionEndFailures returns the counter of users whose sessions could
// not be ended at once, by reason.
func newSessionEndFailures() *prometheus.CounterVec {
	return prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "portcullis_identity_session_end_failures_total",
		Help: "Users whose sessions the Auth service could not be made to end at once after they were disabled, deleted, or their password reset or changed; " +
			"each is logged at error level with the user and reason, and retried until it succeeds (portcullis_identity_session_ends_pending).",
	}, []string{"reason"})
}

// newSessionEndsPending returns the gauge of session ends waiting for the
// Auth service.
func newSessionEndsPending() prometheus.Gauge {
	return prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "portcullis_identity_session_ends_pending",
		Help: "Users whose sessions are still to be ended in the Auth service, as of the last retry round: non-zero for long means they can still refresh tokens. Every replica counts them all: aggregate with max().",
	})
}

// Collectors expose the service's metrics to Prometheus.
func (s *Service) Collectors() []prometheus.Collector {
	return []prometheus.Collector{s.sessionEndFailures, s.sessionEndsPending}
}

// pendingEnd is one EndUserSessions call to make: a row of session_ends.
type pendingEnd struct {
	id             int
	userID         uuid.UUID
	reason, except string
	changedAt      time.Time
	attempts       int
}

func (p *pendingEnd) end() SessionEnd {
	return SessionEnd{UserID: p.userID.String(), Reason: p.reason, ExceptSession: p.except, ChangedAt: p.changedAt}
}

// queueSessionEnd records, in tx, that the sessions of user id but except
// (if not empty) are to end for reason, leased to this instance, which
// tries it as soon as tx commits (see endSessions). Without a
// [SessionEnder] it records nothing.
func (s *Service) queueSessionEnd(ctx context.Context, tx *ent.Tx, id uuid.UUID, reason, except string) (*pendingEnd, error) {
	if s.sessions == nil {
		return nil, nil
	}
	now := s.now()
	row, err := tx.SessionEnd.Create().SetUserID(id).SetReason(reason).SetExceptSession(except).
		SetCreatedAt(now).SetNextAttemptAt(now.Add(sessionEndLease)).Save(ctx)
	if err != nil {
		return nil, fmt.Errorf("identity: queue session end: %w", err)
	}
	return &pendingEnd{id: row.ID, userID: id, reason: reason, except: except, changedAt: now}, nil
}

// endSessions tries the session end p, queued by the change that has just
// committed, in the background, and waits for it up to
// sessionEndAnswerWait: once the change is answered, the sessions have
// normally ended, so a refresh made just after cannot mint a new access
// token. The change stands whatever happens here: a user must not stay
// enabled, or keep an old password, because the Auth service is down. So
// the caller's answer never waits longer, and a failure after a few tries
// is made loud instead: logged at error level with the user and the
// reason, and counted in portcullis_identity_session_end_failures_total.
// The end stays queued, and [Service.RetrySessionEnds] tries it until it
// succeeds. [Service.Drain] waits for tries in flight.
func (s *Service) endSessions(ctx context.Context, p *pendingEnd) {
	if p == nil {
		return
	}
	tried := make(chan struct{})
	// The request's values (request ID, log attributes) stay; its end does
	// not cancel the tries.
	bg := context.WithoutCancel(ctx)
	s.inBackground(func() {
		ctx, cancel := context.WithTimeout(bg, sessionEndTimeout)
		defer cancel()
		err := s.tryEndSessions(ctx, p.end())
		close(tried)
		wait, rerr := s.settleSessionEnd(ctx, p, err, sessionEndAttempts)
		if err != nil {
			s.sessionEndFailures.WithLabelValues(p.reason).Inc()
			s.logger.ErrorContext(ctx, "sessions not ended yet: the user can refresh tokens until the Auth service answers a retry",
				"user_id", p.userID.String(), "reason", p.reason, "retry_in", wait.String(), "err", errors.Join(err, rerr))
		}
	})
	timer := time.NewTimer(sessionEndAnswerWait)
	defer timer.Stop()
	select {
	case <-tried:
	case <-timer.C:
	case <-ctx.Done():
	}
}

// settleSessionEnd records how a try of p went: err is its last error, and
// failed the calls that failed if err is set. p is forgotten once the Auth service has done
// it, else given back for a retry round (see retryLater), whose wait it
// returns. It writes on a bounded context of its own: the try's may have
// run out, and a stop must not leave a delivered end queued, nor a write
// outlast a round's lease.
func (s *Service) settleSessionEnd(ctx context.Context, p *pendingEnd, err error, failed int) (time.Duration, error) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), sessionEndBookkeeping)
	defer cancel()
	if err == nil {
		s.forgetSessionEnd(ctx, p)
		return 0, nil
	}
	return s.retryLater(ctx, p, failed)
}

// forgetSessionEnd deletes p once the Auth service has done it. Should the
// delete fail, a retry ends the sessions again, which Auth allows.
func (s *Service) forgetSessionEnd(ctx context.Context, p *pendingEnd) {
	if _, err := s.db.ExecContext(ctx, `DELETE FROM session_ends WHERE id = $1`, p.id); err != nil {
		s.logger.WarnContext(ctx, "ended sessions still queued; they will be ended again", "user_id", p.userID.String(), "err", err)
	}
}

// tryEndSessions calls the Auth service up to sessionEndAttempts times,
// until ctx ends. Every error is retried: a permanent one costs a few cheap
// calls, and telling them apart would tie the domain to the transport's
// codes.
func (s *Service) tryEndSessions(ctx context.Context, end SessionEnd) error {
	backoff := sessionEndBackoff
	for attempt := 1; ; attempt++ {
		tryCtx, cancel := context.WithTimeout(ctx, sessionEndTryTimeout)
		err := s.sessions.EndUserSessions(tryCtx, end)
		cancel()
		if err == nil {
			return nil
		}
		if attempt == sessionEndAttempts {
			return fmt.Errorf("identity: end sessions: %d attempts: %w", attempt, err)
		}
		s.logger.WarnContext(ctx, "end sessions: retrying", "user_id", end.UserID, "reason", end.Reason, "attempt", attempt, "err", err)
		select {
		case <-time.After(backoff):
		case <-ctx.Done():
			return fmt.Errorf("identity: end sessions: %d attempts: %w", attempt, errors.Join(err, ctx.Err()))
		}
		backoff *= 2
	}
}

// RetrySessionEnds tries the session ends that are due, every
// identity.session_end_retry, until ctx ends: those whose first tries
// failed, and those of an instance that stopped before trying them (their
// lease over). Each is tried once a round, waiting twice as long after
// each failure, up to five minutes. Every instance may run it: a round
// takes only ends no other instance is trying.
func (s *Service) RetrySessionEnds(ctx context.Context) error {
	if s.sessions == nil {
		return nil
	}
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		full, err := s.retrySessionEnds(ctx)
		if err != nil && ctx.Err() == nil {
			s.logger.WarnContext(ctx, "retry session ends", "err", err)
		}
		if full {
			t.Reset(0) // more are due
		} else {
			t.Reset(s.cfg.SessionEndRetry)
		}
	}
}

// retrySessionEnds tries one batch of due session ends, and reports
// whether it was full.
func (s *Service) retrySessionEnds(ctx context.Context) (full bool, err error) {
	due, err := s.leaseSessionEnds(ctx)
	if err != nil {
		return false, err
	}
	for _, p := range due {
		tryCtx, cancel := context.WithTimeout(ctx, sessionEndTryTimeout)
		err := s.sessions.EndUserSessions(tryCtx, p.end())
		cancel()
		if err != nil && ctx.Err() != nil {
			return false, nil // stopping: the lease runs out and another instance takes it
		}
		wait, rerr := s.settleSessionEnd(ctx, p, err, 1)
		if err == nil {
			s.logger.InfoContext(ctx, "sessions ended on a retry", "user_id", p.userID.String(), "reason", p.reason, "attempts", p.attempts+1)
			continue
		}
		s.logger.WarnContext(ctx, "sessions not ended yet: retrying later", "user_id", p.userID.String(), "reason", p.reason,
			"attempts", p.attempts+1, "retry_in", wait.String(), "err", err)
		if rerr != nil {
			return false, rerr
		}
	}
	pending, err := s.db.SessionEnd.Query().Count(ctx)
	if err != nil {
		return false, fmt.Errorf("identity: count session ends: %w", err)
	}
	s.sessionEndsPending.Set(float64(pending))
	return len(due) == sessionEndBatch, nil
}

// retryLater adds failed to p's failed tries, and gives it back for a
// retry round: after identity.session_end_retry once its first tries
// failed, twice as long after each round that fails, up to five minutes.
// It returns the wait.
func (s *Service) retryLater(ctx context.Context, p *pendingEnd, failed int) (time.Duration, error) {
	attempts := p.attempts + failed
	rounds := max(attempts-sessionEndAttempts, 0)
	wait := min(s.cfg.SessionEndRetry<<min(rounds, 16), maxSessionEndBackoff)
	if _, err := s.db.ExecContext(ctx, `UPDATE session_ends SET attempts = $2, next_attempt_at = $3 WHERE id = $1`,
		p.id, attempts, s.now().Add(wait)); err != nil {
		return wait, fmt.Errorf("identity: reschedule session end: %w", err)
	}
	return wait, nil
}

// leaseSessionEnds takes up to sessionEndBatch due session ends that no
// other instance is trying, leasing them to this one.
func (s *Service) leaseSessionEnds(ctx context.Context) ([]*pendingEnd, error) {
	now := s.now()
	rows, err := s.db.QueryContext(ctx, `UPDATE session_ends SET next_attempt_at = $1 WHERE id IN (
			SELECT id FROM session_ends WHERE next_attempt_at <= $2 ORDER BY next_attempt_at LIMIT $3 FOR UPDATE SKIP LOCKED)
		RETURNING id, user_id, reason, except_session, created_at, attempts`, now.Add(sessionEndRoundLease), now, sessionEndBatch)
	if err != nil {
		return nil, fmt.Errorf("identity: lease session ends: %w", err)
	}
	defer rows.Close()
	var due []*pendingEnd
	for rows.Next() {
		p := &pendingEnd{}
		if err := rows.Scan(&p.id, &p.userID, &p.reason, &p.except, &p.changedAt, &p.attempts); err != nil {
			return nil, fmt.Errorf("identity: lease session ends: %w", err)
		}
		due = append(due, p)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("identity: lease session ends: %w", err)
	}
	return due, nil
}
