package authz

import (
	"context"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/lib/pq"
)

// Run keeps this replica's decision index in step with the database until
// ctx ends: it LISTENs for the changes every replica announces and drops
// what they touch. While the notification connection is down (and before
// it first comes up), or a ping of it goes unanswered, the index holds
// nothing and every check reads the database, since changes made
// meanwhile could go unheard. Run it for as long as the service serves
// (rpc.WithBackground).
func (s *Service) Run(ctx context.Context) error {
	live := &liveness{cache: s.cache}
	l := pq.NewListener(s.dsn, s.cfg.ListenerMinReconnect, s.cfg.ListenerMaxReconnect, func(ev pq.ListenerEventType, err error) {
		switch ev {
		case pq.ListenerEventDisconnected:
			live.update(func() { live.down = true })
			s.logger.WarnContext(ctx, "authz change notifications lost; answering from the database until they are back", "err", err)
		case pq.ListenerEventReconnected:
			// pq has LISTENed again; what changed while it was away was
			// dropped with the cache.
			live.update(func() { live.down, live.silent = false, false }) // a new connection
			s.logger.InfoContext(ctx, "authz change notifications back; caching decisions again")
		case pq.ListenerEventConnectionAttemptFailed:
			s.logger.WarnContext(ctx, "authz change notifications: cannot connect", "err", err)
		}
	})
	pings := make(chan error, 1)
	var pingSent time.Time // zero while no ping is in flight
	defer func() {
		if pingSent.IsZero() {
			_ = l.Close()
		} else {
			// Close waits for the ping, which a dead connection may hold
			// for as long as TCP retries: shutdown does not wait with it.
			go func() { _ = l.Close() }()
		}
	}()

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
	// Live unless pq reported a disconnection meanwhile.
	live.update(func() { live.listening = true })
	defer live.update(func() { live.listening = false })

	// A ping goes out from a goroutine of its own, while this loop keeps
	// reading notifications: pq reads the ping's answer on the connection
	// the notifications come in on, and stops reading while they wait to
	// be taken, so a ping made from here under a burst of changes would
	// wait for ever. One unanswered for pingTimeout stops the caching
	// until it is answered: a connection that died silently (a partition)
	// can keep a ping waiting for as long as TCP retries.
	pingTimeout := max(s.cfg.ListenerPingInterval, time.Second)
	ticker := time.NewTicker(s.cfg.ListenerPingInterval)
	defer ticker.Stop()
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
		case err := <-pings:
			pingSent = time.Time{}
			if err != nil {
				// pq reports the connection lost, and reconnects; until it
				// has, the cache stays as it is.
				continue
			}
			if live.unanswered() {
				s.logger.InfoContext(ctx, "authz change notifications answer again; caching decisions again")
			}
			live.update(func() { live.silent = false })
		case now := <-ticker.C:
			switch {
			case pingSent.IsZero():
				pingSent = now
				go func() { pings <- l.Ping() }()
			case now.Sub(pingSent) >= pingTimeout && !live.unanswered():
				live.update(func() { live.silent = true })
				s.logger.WarnContext(ctx, "authz change notifications: the connection does not answer; answering from the database until it does",
					"waited", now.Sub(pingSent).Round(time.Millisecond))
			}
		}
	}
}

// liveness decides whether the decision index may be used: while the
// notification connection listens, is up, and answers its pings.
type liveness struct {
	cache *decisionCache

	mu        sync.Mutex
	listening bool
	down      bool
	silent    bool // a ping went unanswered
}

// unanswered reports whether a ping went unanswered.
func (l *liveness) unanswered() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.silent
}

// update changes the state with f and sets the cache live, or not (which
// drops it), under one lock: pq's events and Run's own come from
// different goroutines, and a late "up" must not undo a "down".
func (l *liveness) update(f func()) {
	l.mu.Lock()
	defer l.mu.Unlock()
	was := l.listening && !l.down && !l.silent
	f()
	if now := l.listening && !l.down && !l.silent; now != was {
		l.cache.setLive(now)
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
