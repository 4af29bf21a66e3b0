package handler_test

import (
	"bytes"
	"context"
	"database/sql"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"entgo.io/ent/dialect"
	"github.com/lib/pq"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/timestamppb"

	"portcullis.dev/auditsvc/ent"
	"portcullis.dev/auditsvc/internal/audit"
	"portcullis.dev/auditsvc/internal/handler"
	"portcullis.dev/kernel/authn"
	"portcullis.dev/kernel/authn/authntest"
	kconfig "portcullis.dev/kernel/config"
	"portcullis.dev/kernel/database"
	"portcullis.dev/kernel/kerneltest"
	"portcullis.dev/kernel/rpc"
	auditv1 "portcullis.dev/proto/audit/v1"
	"portcullis.dev/proto/audit/v1/auditv1connect"
)

// grants is an Authorizer answering from a fixed table of user →
// permissions; the Authz service answers the same question for real.
type grants map[string][]string

func (g grants) Check(_ context.Context, subject, permission string) (bool, error) {
	for _, p := range g[subject] {
		if p == permission {
			return true, nil
		}
	}
	return false, nil
}

// env is a running Audit service on a fresh schema, and what a test needs
// to call it as a service, an auditor or a stranger.
type env struct {
	client  auditv1connect.AuditServiceClient
	admin   *sql.DB
	schema  string
	service string // a service token for auditsvc
	auditor string // an access token with every audit permission
	reader  string // an access token with audit.events.read only
	nobody  string // an access token with no permission
}

func newEnv(t *testing.T) *env {
	t.Helper()
	url, admin := kerneltest.Postgres(t)
	schema := kerneltest.SchemaName(t)
	db, err := database.NewEntClient(context.Background(), database.Config{DSN: kconfig.DSN(url), Schema: schema},
		ent.Migrations(), func(d dialect.Driver) *ent.Client { return ent.NewClient(ent.Driver(d)) })
	require.NoError(t, err)

	issuer := authntest.NewServer(t)
	svcCfg := authntest.ServiceConfig()
	services, err := authn.NewServiceVerifier("auditsvc", svcCfg)
	require.NoError(t, err)
	tokens, err := authn.NewServiceTokenSource("identitysvc", svcCfg)
	require.NoError(t, err)
	serviceToken, err := tokens.Token("auditsvc")
	require.NoError(t, err)
	policy := &rpc.AccessPolicy{
		Users:    issuer.NewVerifier(),
		Services: services,
		Authorizer: grants{
			"auditor": {"audit.events.read", "audit.chain.verify", "audit.events.export"},
			"reader":  {"audit.events.read"},
		},
	}

	srv := rpc.NewServer("auditsvc", "test", rpc.Config{DeregisterDelay: time.Millisecond},
		rpc.WithAccessPolicy(policy), rpc.WithReadiness("database", db.Ready), rpc.WithCloser(db.Close))
	svc := audit.NewService(db.DB, db.Ent, schema, audit.WithConfig(audit.Config{ReadChunk: 7}))
	srv.Handle(auditv1connect.NewAuditServiceHandler(handler.New(svc, nil), srv.HandlerOptions()...))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		require.NoError(t, <-done)
	})
	base := "http://" + ln.Addr().String()
	require.Eventually(t, func() bool {
		resp, err := http.Get(base + "/readyz")
		if err != nil {
			return false
		}
		_ = resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	}, 5*time.Second, 10*time.Millisecond)

	return &env{
		client:  auditv1connect.NewAuditServiceClient(http.DefaultClient, base),
		admin:   admin,
		schema:  schema,
		service: serviceToken,
		auditor: issuer.Issue(authntest.WithSubject("auditor")),
		reader:  issuer.Issue(authntest.WithSubject("reader")),
		nobody:  issuer.Issue(authntest.WithSubject("nobody")),
	}
}

func asService(token string) func(http.Header) {
	return func(h http.Header) { h.Set(rpc.ServiceTokenHeader, token) }
}

func asUser(token string) func(http.Header) {
	return func(h http.Header) { h.Set("Authorization", "Bearer "+token) }
}

func request[T any](msg *T, header func(http.Header)) *connect.Request[T] {
	req := connect.NewRequest(msg)
	if header != nil {
		header(req.Header())
	}
	return req
}

var epoch = time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC)

func newEvents(prefix string, n int) []*auditv1.NewEvent {
	evs := make([]*auditv1.NewEvent, n)
	for i := range evs {
		evs[i] = &auditv1.NewEvent{
			IdempotencyKey: fmt.Sprintf("%s:%d", prefix, i),
			Time:           timestamppb.New(epoch.Add(time.Duration(i) * time.Millisecond)),
			Actor:          &auditv1.Actor{Type: auditv1.ActorType_ACTOR_TYPE_USER, Id: fmt.Sprintf("u%d", i%2)},
			Action:         []string{"auth.login.succeeded", "identity.user.created"}[i%2],
			Target:         fmt.Sprintf("user:%d", i),
			Outcome:        auditv1.Outcome_OUTCOME_SUCCESS,
			RequestId:      "req-1",
			Metadata:       map[string]string{"n": fmt.Sprint(i)},
		}
	}
	return evs
}

func (e *env) record(t *testing.T, evs []*auditv1.NewEvent) []*auditv1.RecordResult {
	t.Helper()
	resp, err := e.client.Record(context.Background(), request(&auditv1.RecordRequest{Events: evs}, asService(e.service)))
	require.NoError(t, err)
	require.Len(t, resp.Msg.GetResults(), len(evs))
	return resp.Msg.GetResults()
}

func TestAccess(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	e.record(t, newEvents("a", 2))
	record := func(h func(http.Header)) error {
		_, err := e.client.Record(ctx, request(&auditv1.RecordRequest{Events: newEvents("b", 1)}, h))
		return err
	}
	query := func(h func(http.Header)) error {
		_, err := e.client.QueryEvents(ctx, request(&auditv1.QueryEventsRequest{}, h))
		return err
	}
	verify := func(h func(http.Header)) error {
		_, err := e.client.VerifyChain(ctx, request(&auditv1.VerifyChainRequest{}, h))
		return err
	}
	export := func(h func(http.Header)) error {
		stream, err := e.client.ExportEvents(ctx, request(&auditv1.ExportEventsRequest{}, h))
		if err != nil {
			return err
		}
		for stream.Receive() {
		}
		return stream.Err()
	}
	tests := []struct {
		name   string
		call   func(func(http.Header)) error
		header func(http.Header)
		want   connect.Code // 0: success
	}{
		{"record without a token", record, nil, connect.CodeUnauthenticated},
		{"record with an access token", record, asUser(e.auditor), connect.CodeUnauthenticated},
		{"record with a service token", record, asService(e.service), 0},
		{"query without a token", query, nil, connect.CodeUnauthenticated},
		{"query without the permission", query, asUser(e.nobody), connect.CodePermissionDenied},
		{"query as a reader", query, asUser(e.reader), 0},
		{"verify as a reader", verify, asUser(e.reader), connect.CodePermissionDenied},
		{"verify as an auditor", verify, asUser(e.auditor), 0},
		{"export as a reader", export, asUser(e.reader), connect.CodePermissionDenied},
		{"export as an auditor", export, asUser(e.auditor), 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.call(tt.header)
			if tt.want == 0 {
				require.NoError(t, err)
				return
			}
			assert.Equal(t, tt.want, connect.CodeOf(err), "err: %v", err)
		})
	}
}

func TestRecordResentBatchAddsNothing(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	first := e.record(t, newEvents("svc", 5))
	// The answer was lost; the outbox sends the same batch again.
	again := e.record(t, newEvents("svc", 5))
	for i := range first {
		assert.False(t, first[i].GetDuplicate())
		assert.Equal(t, int64(i+1), first[i].GetSequence())
		assert.True(t, again[i].GetDuplicate())
		assert.Equal(t, first[i].GetEventId(), again[i].GetEventId())
		assert.Equal(t, first[i].GetSequence(), again[i].GetSequence())
		assert.Equal(t, first[i].GetIdempotencyKey(), again[i].GetIdempotencyKey())
	}
	resp, err := e.client.QueryEvents(context.Background(), request(&auditv1.QueryEventsRequest{}, asUser(e.reader)))
	require.NoError(t, err)
	assert.Len(t, resp.Msg.GetEvents(), 5)
}

func TestInvalidArguments(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	bad := func(f func(*auditv1.NewEvent)) []*auditv1.NewEvent {
		evs := newEvents("x", 2)
		f(evs[1])
		return evs
	}
	for name, evs := range map[string][]*auditv1.NewEvent{
		"no events":          nil,
		"501 events":         newEvents("big", 501),
		"no action":          bad(func(e *auditv1.NewEvent) { e.Action = "" }),
		"no idempotency key": bad(func(e *auditv1.NewEvent) { e.IdempotencyKey = "" }),
		"no actor":           bad(func(e *auditv1.NewEvent) { e.Actor = nil }),
		"no time":            bad(func(e *auditv1.NewEvent) { e.Time = nil }),
		"no outcome":         bad(func(e *auditv1.NewEvent) { e.Outcome = auditv1.Outcome_OUTCOME_UNSPECIFIED }),
		"oversized metadata": bad(func(e *auditv1.NewEvent) { e.Metadata = map[string]string{"k": strings.Repeat("v", 9000)} }),
		// The outbox sets aside an event refused as invalid; any other
		// error would have it sent again, forever.
		"time out of range": bad(func(e *auditv1.NewEvent) { e.Time = &timestamppb.Timestamp{Seconds: 1e13} }),
		// Enums are open int32s: 65537 must not wrap into USER or SUCCESS.
		"actor type beyond int16": bad(func(e *auditv1.NewEvent) { e.Actor.Type = 65537 }),
		"outcome beyond int16":    bad(func(e *auditv1.NewEvent) { e.Outcome = 65537 }),
		// Not 1.5s later: nanos are under a second.
		"time with nanos beyond a second": bad(func(e *auditv1.NewEvent) { e.Time = &timestamppb.Timestamp{Seconds: 1.8e9, Nanos: 1.5e9} }),
		"time with negative nanos":        bad(func(e *auditv1.NewEvent) { e.Time = &timestamppb.Timestamp{Seconds: 1.8e9, Nanos: -1} }),
	} {
		_, err := e.client.Record(ctx, request(&auditv1.RecordRequest{Events: evs}, asService(e.service)))
		assert.Equal(t, connect.CodeInvalidArgument, connect.CodeOf(err), "%s: %v", name, err)
	}
	_, err := e.client.GetEvent(ctx, request(&auditv1.GetEventRequest{EventId: "not-a-uuid"}, asUser(e.reader)))
	assert.Equal(t, connect.CodeInvalidArgument, connect.CodeOf(err))
	_, err = e.client.GetEvent(ctx, request(&auditv1.GetEventRequest{EventId: "0190a0b0-0000-7000-8000-000000000000"}, asUser(e.reader)))
	assert.Equal(t, connect.CodeNotFound, connect.CodeOf(err))
	_, err = e.client.QueryEvents(ctx, request(&auditv1.QueryEventsRequest{PageToken: "garbage"}, asUser(e.reader)))
	assert.Equal(t, connect.CodeInvalidArgument, connect.CodeOf(err))
	_, err = e.client.VerifyChain(ctx, request(&auditv1.VerifyChainRequest{StartSequence: 5, EndSequence: 2}, asUser(e.auditor)))
	assert.Equal(t, connect.CodeInvalidArgument, connect.CodeOf(err))
	for name, f := range map[string]*auditv1.EventFilter{
		"NUL in actor_id":   {ActorId: "u\x00"},
		"time out of range": {StartTime: &timestamppb.Timestamp{Seconds: -1e13}},
		"end_time's nanos":  {EndTime: &timestamppb.Timestamp{Seconds: 1.8e9, Nanos: 1e9}},
	} {
		_, err = e.client.QueryEvents(ctx, request(&auditv1.QueryEventsRequest{Filter: f}, asUser(e.reader)))
		assert.Equal(t, connect.CodeInvalidArgument, connect.CodeOf(err), "query, %s: %v", name, err)
		stream, err := e.client.ExportEvents(ctx, request(&auditv1.ExportEventsRequest{Filter: f}, asUser(e.auditor)))
		require.NoError(t, err)
		for stream.Receive() {
		}
		assert.Equal(t, connect.CodeInvalidArgument, connect.CodeOf(stream.Err()), "export, %s: %v", name, stream.Err())
	}
}

func TestQueryAndGet(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	results := e.record(t, newEvents("svc", 9))

	var seqs []int64
	req := &auditv1.QueryEventsRequest{
		Filter:   &auditv1.EventFilter{Action: "auth.login.", ActorId: "u0", RequestId: "req-1"},
		PageSize: 2,
	}
	for {
		resp, err := e.client.QueryEvents(ctx, request(req, asUser(e.reader)))
		require.NoError(t, err)
		for _, ev := range resp.Msg.GetEvents() {
			seqs = append(seqs, ev.GetSequence())
		}
		if resp.Msg.GetNextPageToken() == "" {
			break
		}
		req.PageToken = resp.Msg.GetNextPageToken()
	}
	assert.Equal(t, []int64{9, 7, 5, 3, 1}, seqs)

	got, err := e.client.GetEvent(ctx, request(&auditv1.GetEventRequest{EventId: results[3].GetEventId()}, asUser(e.reader)))
	require.NoError(t, err)
	ev := got.Msg.GetEvent()
	assert.Equal(t, int64(4), ev.GetSequence())
	assert.Equal(t, "svc:3", ev.GetIdempotencyKey())
	assert.Equal(t, map[string]string{"n": "3"}, ev.GetMetadata())
	assert.Len(t, ev.GetHash(), 32)
	assert.Len(t, ev.GetPreviousHash(), 32)
}

// export streams the whole log (after a sequence) as NDJSON: one protojson
// ExportEventsResponse per line, what a client writes to a file.
func (e *env) export(t *testing.T, after int64) (*bytes.Buffer, int64) {
	t.Helper()
	stream, err := e.client.ExportEvents(context.Background(), request(&auditv1.ExportEventsRequest{AfterSequence: after}, asUser(e.auditor)))
	require.NoError(t, err)
	var (
		buf  bytes.Buffer
		last = after
	)
	for stream.Receive() {
		msg := stream.Msg()
		require.Equal(t, last+1, msg.GetEvent().GetSequence(), "sequences increase without gaps")
		last = msg.GetEvent().GetSequence()
		line, err := protojson.Marshal(msg)
		require.NoError(t, err)
		buf.Write(line)
		buf.WriteByte('\n')
	}
	require.NoError(t, stream.Err())
	return &buf, last
}

// TestTamperingIsFound alters a row with the trigger disabled and checks
// that VerifyChain and the offline verifier of an export both name it.
func TestTamperingIsFound(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	e.record(t, newEvents("a", 20))
	e.record(t, newEvents("b", 15))

	verify, err := e.client.VerifyChain(ctx, request(&auditv1.VerifyChainRequest{}, asUser(e.auditor)))
	require.NoError(t, err)
	require.True(t, verify.Msg.GetOk())
	assert.Equal(t, int64(35), verify.Msg.GetCheckedCount())

	export, last := e.export(t, 0)
	assert.Equal(t, int64(35), last)
	offline, err := handler.VerifyExport(bytes.NewReader(export.Bytes()), 0, nil)
	require.NoError(t, err)
	assert.Equal(t, audit.VerifyResult{OK: true, Checked: 35, LastHash: verify.Msg.GetLastHash(), LastSequence: 35}, offline)

	// A resumed export is a chain too, from the anchor an earlier
	// verification kept: the hash of the sequence it resumes after.
	upTo30, err := handler.VerifyExport(strings.NewReader(strings.Join(strings.Split(export.String(), "\n")[:30], "\n")), 0, nil)
	require.NoError(t, err)
	require.Equal(t, int64(30), upTo30.LastSequence)
	resumed, _ := e.export(t, 30)
	offline, err = handler.VerifyExport(bytes.NewReader(resumed.Bytes()), 30, upTo30.LastHash)
	require.NoError(t, err)
	assert.True(t, offline.OK)
	assert.Equal(t, int64(5), offline.Checked)
	offline, err = handler.VerifyExport(bytes.NewReader(resumed.Bytes()), 30, upTo30.LastHash[1:])
	require.NoError(t, err)
	assert.False(t, offline.OK, "a resumed export verified against another anchor")
	// Read as a whole export, it is cut at its start.
	offline, err = handler.VerifyExport(bytes.NewReader(resumed.Bytes()), 0, nil)
	require.NoError(t, err)
	assert.False(t, offline.OK, "an export without its first events verified")
	assert.Equal(t, int64(1), offline.FirstBroken)
	_, err = handler.VerifyExport(strings.NewReader(""), 0, nil)
	assert.Error(t, err, "an empty export verified")
	_, err = handler.VerifyExport(bytes.NewReader(resumed.Bytes()), 30, nil)
	assert.Error(t, err, "a resumed export verified without its anchor")

	// Bare Event objects, pretty-printed, read as well as NDJSON.
	var pretty bytes.Buffer
	for line := range strings.SplitSeq(strings.TrimSpace(export.String()), "\n") {
		var msg auditv1.ExportEventsResponse
		require.NoError(t, protojson.Unmarshal([]byte(line), &msg))
		b, err := protojson.MarshalOptions{Multiline: true}.Marshal(msg.GetEvent())
		require.NoError(t, err)
		pretty.Write(b)
	}
	offline, err = handler.VerifyExport(&pretty, 0, nil)
	require.NoError(t, err)
	assert.True(t, offline.OK)
	assert.Equal(t, int64(35), offline.Checked)

	tbl := pq.QuoteIdentifier(e.schema) + ".audit_log"
	tx, err := e.admin.Begin()
	require.NoError(t, err)
	for _, stmt := range []string{
		`ALTER TABLE ` + tbl + ` DISABLE TRIGGER audit_log_append_only`,
		`UPDATE ` + tbl + ` SET outcome = 3 WHERE sequence = 23`,
		`ALTER TABLE ` + tbl + ` ENABLE TRIGGER audit_log_append_only`,
	} {
		_, err := tx.Exec(stmt)
		require.NoError(t, err)
	}
	require.NoError(t, tx.Commit())

	verify, err = e.client.VerifyChain(ctx, request(&auditv1.VerifyChainRequest{}, asUser(e.auditor)))
	require.NoError(t, err)
	assert.False(t, verify.Msg.GetOk())
	assert.Equal(t, int64(23), verify.Msg.GetFirstBrokenSequence())
	assert.Equal(t, int64(23), verify.Msg.GetCheckedCount())
	assert.Empty(t, verify.Msg.GetLastHash())

	tampered, _ := e.export(t, 0)
	offline, err = handler.VerifyExport(tampered, 0, nil)
	require.NoError(t, err)
	assert.False(t, offline.OK)
	assert.Equal(t, int64(23), offline.FirstBroken)

	// Editing the untouched export file is caught too: drop a line.
	lines := strings.Split(export.String(), "\n")
	dropped := strings.Join(append(lines[:9:9], lines[10:]...), "\n")
	offline, err = handler.VerifyExport(strings.NewReader(dropped), 0, nil)
	require.NoError(t, err)
	assert.Equal(t, int64(10), offline.FirstBroken)

	_, err = handler.VerifyExport(strings.NewReader(`{"event": {"sequence": "x"}}`), 0, nil)
	assert.Error(t, err)
}

// TestConcurrentRecordCalls sends batches from many goroutines at once:
// every event lands once, in one gap-free chain.
func TestConcurrentRecordCalls(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	var wg sync.WaitGroup
	for g := range 6 {
		wg.Go(func() {
			for b := range 5 {
				_, err := e.client.Record(context.Background(), request(&auditv1.RecordRequest{Events: newEvents(fmt.Sprintf("g%d-%d", g, b), 8)}, asService(e.service)))
				assert.NoError(t, err)
			}
		})
	}
	wg.Wait()
	verify, err := e.client.VerifyChain(context.Background(), request(&auditv1.VerifyChainRequest{}, asUser(e.auditor)))
	require.NoError(t, err)
	assert.True(t, verify.Msg.GetOk())
	assert.Equal(t, int64(240), verify.Msg.GetCheckedCount())
}
