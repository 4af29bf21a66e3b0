package audit

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"slices"
	"time"
)

// GenesisHash is the previous hash of the first event: 32 zero bytes.
var genesisHash = make([]byte, sha256.Size)

// GenesisHash returns the previous hash of the first event: 32 zero bytes.
func GenesisHash() []byte { return slices.Clone(genesisHash) }

// encodingTag starts every canonical encoding; a new encoding gets a new tag.
const encodingTag = "portcullis.audit.v1"

// Canonical returns the canonical encoding of e that its hash covers, as
// documented in the package comment and CHAIN.md. PreviousHash and Hash are
// not part of it.
func Canonical(e *Event) []byte {
	b := make([]byte, 0, 256)
	str := func(s string) {
		b = binary.BigEndian.AppendUint32(b, uint32(len(s)))
		b = append(b, s...)
	}
	u64 := func(v int64) { b = binary.BigEndian.AppendUint64(b, uint64(v)) }
	u32 := func(v int64) { b = binary.BigEndian.AppendUint32(b, uint32(v)) }

	str(encodingTag)
	u64(e.Sequence)
	str(e.ID.String())
	u64(e.Time.UnixNano())
	u64(e.RecordTime.UnixNano())
	u32(int64(e.ActorType))
	str(e.ActorID)
	str(e.Action)
	str(e.Target)
	u32(int64(e.Outcome))
	str(e.SourceIP)
	str(e.UserAgent)
	str(e.RequestID)
	str(e.IdempotencyKey)
	keys := make([]string, 0, len(e.Metadata))
	for k := range e.Metadata {
		keys = append(keys, k)
	}
	slices.Sort(keys) // Go compares strings bytewise
	u32(int64(len(keys)))
	for _, k := range keys {
		str(k)
		str(e.Metadata[k])
	}
	return b
}

// hashable reports whether t survives the canonical encoding, in
// nanoseconds since 1970, unchanged.
func hashable(t time.Time) bool { return time.Unix(0, t.UnixNano()).Equal(t) }

// ComputeHash returns SHA-256(prev || Canonical(e)).
func ComputeHash(prev []byte, e *Event) []byte {
	h := sha256.New()
	h.Write(prev)
	h.Write(Canonical(e))
	return h.Sum(nil)
}

// VerifyResult is the outcome of checking a stretch of the chain.
type VerifyResult struct {
	// OK is true when every event checked verified.
	OK bool
	// Checked counts the events checked, up to and including the first
	// broken one.
	Checked int64
	// FirstBroken is the sequence of the first event that did not verify
	// (or that was missing); zero when OK.
	FirstBroken int64
	// LastHash is the hash of the last event checked, and LastSequence its
	// sequence, when OK: the anchor to keep, and to compare with the next
	// export, since removing the newest events leaves the rest intact.
	LastHash     []byte
	LastSequence int64
}

// Verifier checks events fed to it in sequence order. The first event's
// previous hash is trusted unless its sequence is 1 (then it must be the
// genesis hash); every later event must have the next sequence, link to the
// hash of the one before, and hash to its stored hash. The zero value starts
// at whatever sequence comes first; [NewVerifier] starts at a given one.
type Verifier struct {
	next     int64 // expected sequence; 0 means any
	prevHash []byte
	res      VerifyResult
	broken   bool
}

// NewVerifier returns a Verifier that expects the first event to have
// sequence first (0 means any), and trusts its previous hash.
func NewVerifier(first int64) *Verifier { return &Verifier{next: first} }

// NewVerifierAfter returns a Verifier that expects the first event to
// follow sequence after, whose hash is afterHash.
func NewVerifierAfter(after int64, afterHash []byte) *Verifier {
	return &Verifier{next: after + 1, prevHash: afterHash}
}

// Add checks e and reports whether verification should go on: false once
// an event is broken.
func (v *Verifier) Add(e *Event) bool {
	if v.broken {
		return false
	}
	v.res.Checked++
	ok := true
	switch {
	case v.next != 0 && e.Sequence != v.next:
		// A missing event breaks the chain at the sequence that is missing.
		v.res.FirstBroken = v.next
		ok = false
	case v.prevHash != nil && !bytes.Equal(e.PreviousHash, v.prevHash),
		e.Sequence == 1 && !bytes.Equal(e.PreviousHash, genesisHash),
		// The encoding holds times as nanoseconds since 1970, which wrap
		// outside 1677-2262: a time moved by a multiple of 2^64 ns would
		// hash the same.
		!hashable(e.Time), !hashable(e.RecordTime),
		!bytes.Equal(e.Hash, ComputeHash(e.PreviousHash, e)):
		v.res.FirstBroken = e.Sequence
		ok = false
	}
	if !ok {
		v.broken = true
		v.res.LastHash, v.res.LastSequence = nil, 0
		return false
	}
	v.next = e.Sequence + 1
	v.prevHash = e.Hash
	v.res.LastHash, v.res.LastSequence = e.Hash, e.Sequence
	return true
}

// Result returns the outcome so far.
func (v *Verifier) Result() VerifyResult {
	r := v.res
	r.OK = !v.broken
	return r
}
