// Package identity is the Identity service's domain: user accounts,
// argon2id passwords, lockout after repeated failures, and one-time tokens
// for email verification and password reset.
//
// [Service] holds the rules; it stores users through Ent in the service's
// own schema and writes an audit event through the kernel's outbox in the
// same transaction as every change. It knows nothing of protobuf or
// Connect: internal/api translates.
//
// Decisions worth knowing:
//   - Passwords are argon2id PHC strings; a hash made with other parameters
//     than the configured ones is replaced at the next successful check.
//     Hashing waits for one of Config.HashConcurrency slots, so a burst of
//     logins queues (until its caller's deadline) instead of exhausting
//     memory.
//   - Lockout counts failures with one atomic UPDATE, and the count is
//     committed even though the attempt fails. A wrong current password in
//     ChangePassword counts too.
//   - VerifyCredentials refuses an unknown email, a wrong password, a
//     locked account and a disabled user with one error after one argon2id
//     hash each, so neither its answer nor its timing says which. Only a
//     full hashing queue answers otherwise ([ErrBusy]), and that is about
//     the service, not the account.
//   - ListUsers' filters each have an index over live users: a
//     varchar_pattern_ops B-tree for the email prefix and pg_trgm GIN
//     indexes for substrings (pg_trgm is in schema public; see the
//     migration that adds them).
//   - One-time tokens are 32 random bytes, stored only as SHA-256 hashes. A
//     new token of a kind replaces the user's earlier ones; a new email,
//     a password change and deletion drop the tokens they make stale.
//   - Mail goes out in the background after the change commits (see
//     [Service.Drain]), so RequestPasswordReset answers alike, in similar
//     time, whether or not an account exists.
//   - Deleting a user erases everything personal and keeps a tombstone of
//     its ID and times.
//   - Disabling or deleting a user, or resetting or changing a password,
//     ends the user's sessions in the Auth service ([SessionEnder]): the
//     end is queued in the change's transaction and tried after it
//     commits, in the background like mail. The change never waits for or
//     depends on the Auth service; a failure after a few tries is logged
//     at error level and counted, and [Service.RetrySessionEnds] tries the
//     end again until Auth takes it, on any instance, after a restart too.
package identity
