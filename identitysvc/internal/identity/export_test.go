package identity

import (
	"context"
	"time"

	"github.com/google/uuid"
)

// HashCount is how many argon2id hashes s has computed.
func HashCount(s *Service) uint64 { return s.hasher.derived.Load() }

// HoldHashSlots takes every password-hashing slot of s, as a burst of
// logins would, until release is called.
func HoldHashSlots(s *Service) (release func()) {
	n := cap(s.hasher.slots)
	for range n {
		s.hasher.slots <- struct{}{}
	}
	return func() {
		for range n {
			<-s.hasher.slots
		}
	}
}

// PageToken is the page token ListUsers would issue for q after the user
// id created at t: what a caller who read the code could forge.
func PageToken(q ListQuery, t time.Time, id uuid.UUID) string {
	return encodeCursor(t, id, q.filterSum())
}

// Send hands m to the mailer in the background, as the service does after
// a change that mails commits.
func Send(s *Service, ctx context.Context, m Message) { s.send(ctx, m) }

// MailQueue is how many mails may wait for a free slot.
const MailQueue, MailConcurrency = mailQueue, mailConcurrency
