package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/timestamppb"

	"portcullis.dev/auditsvc/internal/audit"
	auditv1 "portcullis.dev/proto/audit/v1"
)

// exportOf writes n chained events as ExportEvents' NDJSON.
func exportOf(t *testing.T, n int) []string {
	t.Helper()
	prev := audit.GenesisHash()
	lines := make([]string, n)
	at := time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC)
	for i := range lines {
		e := &audit.Event{
			ID: uuid.New(), Sequence: int64(i + 1), Time: at, RecordTime: at, ActorType: audit.ActorService,
			ActorID: "authsvc", Action: "auth.key.rotated", Outcome: audit.OutcomeSuccess,
			IdempotencyKey: uuid.NewString(), PreviousHash: prev,
		}
		e.Hash = audit.ComputeHash(prev, e)
		prev = e.Hash
		b, err := protojson.Marshal(&auditv1.ExportEventsResponse{Event: &auditv1.Event{
			Id: e.ID.String(), Sequence: e.Sequence, Time: timestamppb.New(at), RecordTime: timestamppb.New(at),
			Actor:  &auditv1.Actor{Type: auditv1.ActorType_ACTOR_TYPE_SERVICE, Id: "authsvc"},
			Action: e.Action, Outcome: auditv1.Outcome_OUTCOME_SUCCESS, IdempotencyKey: e.IdempotencyKey,
			PreviousHash: e.PreviousHash, Hash: e.Hash,
		}})
		require.NoError(t, err)
		lines[i] = string(b)
	}
	return lines
}

func TestVerifyCommand(t *testing.T) {
	t.Parallel()
	lines := exportOf(t, 5)
	tampered := append([]string(nil), lines...)
	tampered[2] = strings.Replace(tampered[2], "auth.key.rotated", "auth.key.deleted", 1)
	dir := t.TempDir()
	write := func(name string, lines []string) string {
		p := filepath.Join(dir, name)
		require.NoError(t, os.WriteFile(p, []byte(strings.Join(lines, "\n")+"\n"), 0o600))
		return p
	}
	tests := []struct {
		name     string
		args     []string
		stdin    string
		wantCode int
		wantOut  string
	}{
		{"intact file", []string{"--file", write("ok.ndjson", lines)}, "", 0, "OK 5 events, sequences 1 to 5, last hash "},
		{"cut at its start", []string{"--file", write("cut.ndjson", lines[2:])}, "", 1, "BROKEN at sequence 1"},
		{"resumed without its anchor", []string{"--file", write("cut2.ndjson", lines[2:]), "--after-sequence", "2"}, "", 2, "usage"},
		{"resumed from a wrong anchor", []string{"--file", write("cut3.ndjson", lines[2:]), "--after-sequence", "2", "--after-hash", "00"}, "", 1, "BROKEN at sequence 3"},
		{"empty", nil, "", 1, ""},
		{"intact stdin", nil, strings.Join(lines, "\n"), 0, "OK 5 events"},
		{"tampered", []string{"--file", write("bad.ndjson", tampered)}, "", 1, "BROKEN at sequence 3 (3 events checked)"},
		{"missing file", []string{"--file", filepath.Join(dir, "nope")}, "", 1, ""},
		{"not an export", nil, `{"foo": 1}`, 1, ""},
		{"bad usage", []string{"extra"}, "", 2, "usage"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var out bytes.Buffer
			code, _ := verify(tt.args, strings.NewReader(tt.stdin), &out)
			assert.Equal(t, tt.wantCode, code)
			assert.Contains(t, out.String(), tt.wantOut)
		})
	}
}
