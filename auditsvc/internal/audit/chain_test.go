package audit_test

import (
	"encoding/hex"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/assert"

	"portcullis.dev/auditsvc/internal/audit"
)

// exampleEvent is the worked example of CHAIN.md.
func exampleEvent() *audit.Event {
	return &audit.Event{
		ID:             uuid.MustParse("01936a2e-7c00-7000-8000-000000000001"),
		Sequence:       1,
		Time:           time.Date(2026, 11, 24, 12, 0, 0, 123456000, time.UTC),
		RecordTime:     time.Date(2026, 11, 24, 12, 0, 1, 0, time.UTC),
		ActorType:      audit.ActorUser,
		ActorID:        "u1",
		Action:         "auth.login.succeeded",
		Target:         "user:u1",
		Outcome:        audit.OutcomeSuccess,
		SourceIP:       "192.0.2.1",
		UserAgent:      "curl/8",
		RequestID:      "r1",
		Metadata:       map[string]string{"session_id": "s1", "method": "password"},
		IdempotencyKey: "authsvc:1",
		PreviousHash:   audit.GenesisHash(),
	}
}

// TestCanonicalEncoding pins the encoding CHAIN.md documents: changing it
// breaks every chain already recorded.
func TestCanonicalEncoding(t *testing.T) {
	t.Parallel()
	e := exampleEvent()
	assert.Equal(t, "00000013706f727463756c6c69732e61756469742e7631"+ // str("portcullis.audit.v1")
		"0000000000000001"+ // sequence
		"0000002430313933366132652d376330302d373030302d383030302d303030303030303030303031"+ // id
		"18eaf961d9e64a00"+ // time, Unix ns
		"18eaf9620e254a00"+ // record_time, Unix ns
		"00000001"+ // actor type
		"000000027531"+ // actor id
		"00000014617574682e6c6f67696e2e737563636565646564"+ // action
		"00000007757365723a7531"+ // target
		"00000001"+ // outcome
		"000000093139322e302e322e31"+ // source ip
		"000000066375726c2f38"+ // user agent
		"000000027231"+ // request id
		"00000009617574687376633a31"+ // idempotency key
		"00000002"+ // two metadata entries, keys sorted
		"000000066d6574686f64"+"0000000870617373776f7264"+
		"0000000a73657373696f6e5f6964"+"000000027331",
		hex.EncodeToString(audit.Canonical(e)))
	assert.Equal(t, "0cd4719f666e7ecc9385f6bbdcc7f3a93c067c09806c0ab74141eeb697272a3f", hex.EncodeToString(audit.ComputeHash(e.PreviousHash, e)))
}

func TestVerifier(t *testing.T) {
	t.Parallel()
	chain := make([]*audit.Event, 4)
	prev := audit.GenesisHash()
	for i := range chain {
		e := exampleEvent()
		e.Sequence, e.PreviousHash = int64(i+1), prev
		e.Hash = audit.ComputeHash(prev, e)
		chain[i], prev = e, e.Hash
	}
	run := func(evs []*audit.Event) audit.VerifyResult {
		v := audit.NewVerifier(0)
		for _, e := range evs {
			if !v.Add(e) {
				break
			}
		}
		return v.Result()
	}
	assert.Equal(t, audit.VerifyResult{OK: true, Checked: 4, LastHash: chain[3].Hash, LastSequence: 4}, run(chain))
	assert.Equal(t, audit.VerifyResult{OK: true, Checked: 2, LastHash: chain[3].Hash, LastSequence: 4}, run(chain[2:]), "a later start trusts its previous hash")
	assert.Equal(t, int64(2), run([]*audit.Event{chain[0], chain[2]}).FirstBroken, "a gap")
	assert.Equal(t, int64(3), run([]*audit.Event{chain[0], chain[1], chain[1], chain[3]}).FirstBroken, "a repeat")
	forged := *chain[0]
	forged.PreviousHash = chain[0].Hash
	forged.Hash = audit.ComputeHash(forged.PreviousHash, &forged)
	assert.Equal(t, int64(1), run([]*audit.Event{&forged}).FirstBroken, "sequence 1 starts from zeros")
}
