package authz

import (
	"context"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/lib/pq"
)

// Run keeps this replica's decision index in step with the database until
// ctx ends: it LISTENs for the changes every replica announces and drops
// what they touch. While the notification connection is down (and before
// it first comes up) the index holds nothing and every check reads the
// database, since changes made meanwhile would go unheard. Run it for as
// long as the service serves (rpc.WithBackground).
func (s *Service) Run(ctx context.Context) error {
	l := pq.NewListener(s.dsn, s.cfg.ListenerMinReconnect, s.cfg.ListenerMaxReconnect, func(ev pq.ListenerEventType, err error) {
		switch ev {
		case pq.ListenerEventDisconnected:
			s.cache.setLive(false)
			s.logger.WarnContext(ctx, "authz change notifications lost; answering from the database until they are back", "err", err)
		case pq.ListenerEventReconnected:
			// pq has LISTENed again; what changed while it was away was
			// dropped with the cache.
			s.cache.setLive(true)
			s.logger.InfoContext(ctx, "authz change notifications back; caching decisions again")
		case pq.ListenerEventConnectionAttemptFailed:
			s.logger.WarnContext(ctx, "authz change notifications: cannot connect", "err", err)
		}
	})
	defer l.Close()

	listened := make(chan error, 1)
	go func() { listened <- l.Listen(s.channel) }()
	select {
	case err := <-listened:
		if err != nil {
			return err
		}
	case <-ctx.Done():
		return nil
	}
	s.cache.setLive(true)
	defer s.cache.setLive(false)

	ping := time.NewTicker(s.cfg.ListenerPingInterval)
	defer ping.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case n := <-l.Notify:
			if n == nil {
				// Sent after a reconnection: notifications may have been
				// lost, and the cache was dropped.
				s.cache.dropAll()
				continue
			}
			s.handle(n.Extra)
		case <-ping.C:
			// A connection that died without a word (a partition) is
			// found here; pq then reports it disconnected.
			_ = l.Ping()
		}
	}
}

// handle applies one announced change.
func (s *Service) handle(payload string) {
	kind, id, _ := strings.Cut(payload, ":")
	switch kind {
	case "user":
		s.cache.invalidateSubjects(id)
		return
	case "role":
		if rid, err := uuid.Parse(id); err == nil {
			s.cache.invalidateRole(rid)
			return
		}
	}
	// Unknown: be safe.
	s.cache.dropAll()
}
