package identity

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"
)

// SessionEnder ends a user's sessions in the Auth service, all of them but
// exceptSession (if not empty), saying why. Ending them again must succeed,
// since [Service] retries. internal/authclient adapts the Auth service's
// client to it.
type SessionEnder interface {
	EndUserSessions(ctx context.Context, userID, reason, exceptSession string) error
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
)

// WithSessionEnder sets how the service ends the sessions of a user who is
// disabled or deleted or whose password is reset or changed. Without it
// (nil, the default) sessions are left alone: that is for tests and tools
// that run the domain without an Auth service, never for the service.
func WithSessionEnder(e SessionEnder) Option { return func(s *Service) { s.sessions = e } }

// newSessionEndFailures returns the counter of users whose sessions could
// not be ended, by reason.
func newSessionEndFailures() *prometheus.CounterVec {
	return prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "portcullis_identity_session_end_failures_total",
		Help: "Users whose sessions the Auth service could not be made to end after they were disabled, deleted, or their password reset or changed; " +
			"each is logged at error level with the user and reason.",
	}, []string{"reason"})
}

// Collectors expose the service's metrics to Prometheus.
func (s *Service) Collectors() []prometheus.Collector {
	return []prometheus.Collector{s.sessionEndFailures}
}

// endSessions ends the sessions of user id but except (if not empty) in
// the Auth service, in the background, once the change that calls for it
// has committed. The change stands whatever happens here: a user must not
// stay enabled, or keep an old password, because the Auth service is down.
// So the caller's answer never waits for it, and a failure after a few
// tries is made loud instead: logged at error level with the user and the
// reason, and counted in portcullis_identity_session_end_failures_total.
// Disabling or deleting the user again tries again. [Service.Drain] waits
// for calls in flight.
func (s *Service) endSessions(ctx context.Context, id uuid.UUID, reason, except string) {
	if s.sessions == nil {
		return
	}
	// The request's values (request ID, log attributes) stay; its end does
	// not cancel the call.
	ctx = context.WithoutCancel(ctx)
	s.inBackground(func() {
		ctx, cancel := context.WithTimeout(ctx, sessionEndTimeout)
		defer cancel()
		err := s.tryEndSessions(ctx, id.String(), reason, except)
		if err != nil {
			s.sessionEndFailures.WithLabelValues(reason).Inc()
			s.logger.ErrorContext(ctx, "sessions not ended: the user can keep refreshing tokens until they expire or are revoked",
				"user_id", id.String(), "reason", reason, "err", err)
		}
	})
}

// tryEndSessions calls the Auth service up to sessionEndAttempts times,
// until ctx ends. Every error is retried: a permanent one costs a few cheap
// calls, and telling them apart would tie the domain to the transport's
// codes.
func (s *Service) tryEndSessions(ctx context.Context, userID, reason, except string) error {
	backoff := sessionEndBackoff
	for attempt := 1; ; attempt++ {
		tryCtx, cancel := context.WithTimeout(ctx, sessionEndTryTimeout)
		err := s.sessions.EndUserSessions(tryCtx, userID, reason, except)
		cancel()
		if err == nil {
			return nil
		}
		if attempt == sessionEndAttempts {
			return fmt.Errorf("identity: end sessions: %d attempts: %w", attempt, err)
		}
		s.logger.WarnContext(ctx, "end sessions: retrying", "user_id", userID, "reason", reason, "attempt", attempt, "err", err)
		select {
		case <-time.After(backoff):
		case <-ctx.Done():
			return fmt.Errorf("identity: end sessions: %d attempts: %w", attempt, errors.Join(err, ctx.Err()))
		}
		backoff *= 2
	}
}
