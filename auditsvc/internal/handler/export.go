package handler

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"

	"google.golang.org/protobuf/encoding/protojson"

	"portcullis.dev/auditsvc/internal/audit"
	auditv1 "portcullis.dev/proto/audit/v1"
)

// VerifyExport recomputes the chain of an export read from r: a sequence of
// JSON objects, each a protojson ExportEventsResponse ({"event": {...}}, as
// a Connect or `buf curl` client prints the stream) or a bare protojson
// Event, one per line (NDJSON) or merely separated by whitespace. The export
// must be contiguous — an unfiltered ExportEvents — and start right after
// sequence after, whose hash is afterHash: sequence 1 and the genesis hash
// for a whole export (after 0, afterHash nil), or an anchor the auditor
// kept from an earlier export for one resumed with after_sequence. An
// export that starts anywhere else, or holds no event, does not verify: a
// cut or empty file must not pass for a log. An error means r could not be
// read as an export; a broken chain is a result with OK false.
func VerifyExport(r io.Reader, after int64, afterHash []byte) (audit.VerifyResult, error) {
	switch {
	case after == 0:
		afterHash = audit.GenesisHash()
	case after < 0 || len(afterHash) == 0:
		return audit.VerifyResult{}, fmt.Errorf("an export resumed after sequence %d needs the hash of that sequence", after)
	}
	dec := json.NewDecoder(r)
	v := audit.NewVerifierAfter(after, afterHash)
	for n := 1; ; n++ {
		var raw json.RawMessage
		if err := dec.Decode(&raw); errors.Is(err, io.EOF) {
			if n == 1 {
				return audit.VerifyResult{}, errors.New("the export holds no event")
			}
			return v.Result(), nil
		} else if err != nil {
			return audit.VerifyResult{}, fmt.Errorf("object %d: %w", n, err)
		}
		ev, err := decodeEvent(raw)
		if err != nil {
			return audit.VerifyResult{}, fmt.Errorf("object %d: %w", n, err)
		}
		if !v.Add(eventFromProto(ev)) {
			return v.Result(), nil
		}
	}
}

func decodeEvent(raw []byte) (*auditv1.Event, error) {
	var wrapped auditv1.ExportEventsResponse
	if err := protojson.Unmarshal(raw, &wrapped); err == nil && wrapped.GetEvent() != nil {
		return wrapped.GetEvent(), nil
	}
	var ev auditv1.Event
	if err := protojson.Unmarshal(raw, &ev); err != nil {
		return nil, fmt.Errorf("not an audit event: %w", err)
	}
	return &ev, nil
}
