// Package audit is the Audit service's domain: an append-only log of audit
// events in which every event is chained to the one before it by a SHA-256
// hash, so altering, removing or reordering any event is detectable.
//
// # The chain
//
// Every event gets the next sequence number (1, 2, 3, ... without gaps) and
//
//	hash = SHA-256(previous_hash || Canonical(event))
//
// where previous_hash is the hash of the event with the previous sequence, or
// 32 zero bytes for sequence 1. [Canonical] is, byte for byte (all integers
// big-endian; str(s) is u32(len(s)) followed by the UTF-8 bytes of s):
//
//	str("portcullis.audit.v1")       domain separator and encoding version
//	u64(sequence)
//	str(id)                          lower-case UUID text, 36 bytes
//	u64(time)                        Unix nanoseconds, signed (multiples of 1000:
//	u64(record_time)                 times are kept to the microsecond)
//	u32(actor_type)                  the contract's ActorType number
//	str(actor_id)
//	str(action)
//	str(target)
//	u32(outcome)                     the contract's Outcome number
//	str(source_ip)
//	str(user_agent)
//	str(request_id)
//	str(idempotency_key)
//	u32(number of metadata entries)
//	str(key) str(value)              per entry, keys in ascending byte order
//
// The lengths make the encoding unambiguous: no two different events encode
// the same. CHAIN.md in the module root says the same for auditors, with a
// worked example.
//
// # Appending
//
// [Service.Record] serialises appends with a transaction-scoped advisory lock
// keyed by the schema, so any number of replicas share one chain: each batch
// reads the chain's head, skips events whose idempotency key is already in
// the log (found by the unique index as the rows go in; only a batch that
// holds such keys is planned a second time with a lookup), and writes the
// rest with one COPY in the same transaction. Sequences come from the head,
// not from a PostgreSQL sequence, which would leave gaps when a transaction
// rolls back.
//
// The database keeps the log append-only: a trigger refuses UPDATE, DELETE and
// TRUNCATE, and at every start-up [Open] has the service's role revoke those
// privileges from itself ([RestrictOwnRole]).
package audit
