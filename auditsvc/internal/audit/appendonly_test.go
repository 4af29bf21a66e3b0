package audit_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"testing"

	"github.com/lib/pq"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"portcullis.dev/auditsvc/ent"
	"portcullis.dev/auditsvc/internal/audit"
	kconfig "portcullis.dev/kernel/config"
	"portcullis.dev/kernel/database"
	"portcullis.dev/kernel/kerneltest"
)

// TestLogIsAppendOnly changes the log directly, as the schema's owner (the
// test's superuser, even): the trigger refuses every change.
func TestLogIsAppendOnly(t *testing.T) {
	t.Parallel()
	s := newStore(t)
	ctx := context.Background()
	_, err := s.svc.Record(ctx, batch("svc", 0, 3))
	require.NoError(t, err)
	for _, stmt := range []string{
		`UPDATE audit_log SET action = 'forged' WHERE sequence = 2`,
		`UPDATE audit_log SET hash = previous_hash`,
		`DELETE FROM audit_log WHERE sequence = 3`,
		`DELETE FROM audit_log`,
		`TRUNCATE audit_log`,
	} {
		t.Run(stmt, func(t *testing.T) {
			_, err := s.db.DB.ExecContext(ctx, stmt)
			var pqErr *pq.Error
			require.True(t, errors.As(err, &pqErr), "%s succeeded: %v", stmt, err)
			assert.Equal(t, pq.ErrorCode("42501"), pqErr.Code)
			assert.Contains(t, pqErr.Message, "append-only")
		})
	}
	n, _ := s.count(t)
	assert.Equal(t, int64(3), n)

	// Nor can an event be added where no chain check looks: chains start
	// at 1.
	_, err = s.db.DB.ExecContext(ctx, `INSERT INTO audit_log (id, sequence, time, record_time, actor_type, actor_id, action, target, outcome,
		source_ip, user_agent, request_id, metadata, idempotency_key, previous_hash, hash)
		SELECT gen_random_uuid(), 0, time, record_time, actor_type, actor_id, action, target, outcome,
		source_ip, user_agent, request_id, metadata, 'forged', previous_hash, hash FROM audit_log WHERE sequence = 1`)
	var pqErr *pq.Error
	require.True(t, errors.As(err, &pqErr), "an event at sequence 0 was stored: %v", err)
	assert.Equal(t, pq.ErrorCode("23514"), pqErr.Code) // check_violation
}

// TestVerifyChainFindsTampering alters rows with the trigger disabled, as an
// admin could, and checks that VerifyChain names the first broken sequence.
func TestVerifyChainFindsTampering(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		tamper     string
		wantBroken int64
	}{
		{"altered action", `UPDATE %s.audit_log SET action = 'auth.login.forged' WHERE sequence = 4`, 4},
		{"altered metadata", `UPDATE %s.audit_log SET metadata = '{"reason":"other"}' WHERE sequence = 7`, 7},
		{"rehashed row", `UPDATE %s.audit_log SET action = 'x', hash = sha256(hash) WHERE sequence = 5`, 5},
		{"deleted row", `DELETE FROM %s.audit_log WHERE sequence = 6`, 6},
		{"deleted tail row", `DELETE FROM %s.audit_log WHERE sequence = 10`, 10},
		{"swapped times", `UPDATE %s.audit_log SET time = time + interval '1 microsecond' WHERE sequence = 1`, 1},
		// The schema's JSON is an object of strings: another shape cannot be
		// read, and is reported where it is rather than failing the check.
		{"metadata of another shape", `UPDATE %s.audit_log SET metadata = '{"reason": 5}' WHERE sequence = 7`, 7},
		// 125 * 2^64 ns later: the same nanoseconds modulo 2^64.
		{"time moved by a wrap", `UPDATE %s.audit_log SET time = time + make_interval(secs => 2305843009213.693952) WHERE sequence = 3`, 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := newStore(t)
			ctx := context.Background()
			_, err := s.svc.Record(ctx, batch("svc", 0, 10))
			require.NoError(t, err)
			end := int64(10) // fixed, so a deleted last row is noticed too
			Tamper(t, s, tt.tamper)
			res, err := s.svc.VerifyChain(ctx, 0, end)
			require.NoError(t, err)
			assert.False(t, res.OK)
			assert.Equal(t, tt.wantBroken, res.FirstBroken)
			assert.Equal(t, tt.wantBroken, res.Checked)
			assert.Nil(t, res.LastHash)
		})
	}
}

// TestVerifyChainFromAnAnchorPastTheEnd: an auditor who verified up to
// sequence 10 checks what came since with start 11. Nothing new is fine;
// a log that now ends before 10 lost what the auditor verified.
func TestVerifyChainFromAnAnchorPastTheEnd(t *testing.T) {
	t.Parallel()
	s := newStore(t)
	ctx := context.Background()
	_, err := s.svc.Record(ctx, batch("svc", 0, 10))
	require.NoError(t, err)
	res, err := s.svc.VerifyChain(ctx, 11, 0)
	require.NoError(t, err)
	assert.True(t, res.OK, "nothing new since the anchor")
	assert.Zero(t, res.Checked)

	Tamper(t, s, `DELETE FROM %s.audit_log WHERE sequence >= 9`)
	res, err = s.svc.VerifyChain(ctx, 11, 0)
	require.NoError(t, err)
	assert.False(t, res.OK, "the verified tail is gone")
	assert.Equal(t, int64(9), res.FirstBroken)
	assert.Zero(t, res.Checked)
}

// Tamper runs stmt (with %s for the schema) on the log with the append-only
// trigger disabled, as its owner or a superuser could.
// TestReadingATamperedLogSaysSo: an event changed into something the log
// cannot show as it is (metadata of another shape, a time beyond what its
// hash covers) fails a query, a lookup or an export with ErrCorrupt, not
// an internal error.
func TestReadingATamperedLogSaysSo(t *testing.T) {
	t.Parallel()
	for _, tamper := range []string{
		`UPDATE %s.audit_log SET metadata = '{"reason": 5}' WHERE sequence = 3`,
		`UPDATE %s.audit_log SET time = time + make_interval(secs => 2305843009213.693952) WHERE sequence = 3`,
	} {
		t.Run(tamper, func(t *testing.T) {
			t.Parallel()
			s := newStore(t)
			ctx := context.Background()
			res, err := s.svc.Record(ctx, batch("svc", 0, 5))
			require.NoError(t, err)
			Tamper(t, s, tamper)

			_, err = s.svc.QueryEvents(ctx, audit.Query{})
			assert.ErrorIs(t, err, audit.ErrCorrupt)
			_, err = s.svc.GetEvent(ctx, res[2].EventID)
			assert.ErrorIs(t, err, audit.ErrCorrupt)
			var exported int
			err = s.svc.ExportEvents(ctx, audit.Filter{}, 0, func(*audit.Event) error { exported++; return nil })
			assert.ErrorIs(t, err, audit.ErrCorrupt)
			assert.Equal(t, 2, exported, "the events before it, and none from it on")
			_, err = s.svc.GetEvent(ctx, res[1].EventID)
			assert.NoError(t, err, "the others read as before")
		})
	}
}

// TestAnEventBelowTheChainIsFound: a row below sequence 1, where no chain
// starts, put there by someone who may drop the table's check, breaks the
// chain and is not served as an event.
func TestAnEventBelowTheChainIsFound(t *testing.T) {
	t.Parallel()
	s := newStore(t)
	ctx := context.Background()
	_, err := s.svc.Record(ctx, batch("svc", 0, 3))
	require.NoError(t, err)
	Tamper(t, s, `ALTER TABLE %[1]s.audit_log DROP CONSTRAINT audit_log_sequence_positive;
		INSERT INTO %[1]s.audit_log (id, sequence, time, record_time, actor_type, actor_id, action, target, outcome,
			source_ip, user_agent, request_id, metadata, idempotency_key, previous_hash, hash)
		SELECT gen_random_uuid(), -1, time, record_time, actor_type, actor_id, 'identity.user.deleted', target, outcome,
			source_ip, user_agent, request_id, metadata, 'forged', previous_hash, hash FROM %[1]s.audit_log WHERE sequence = 1`)

	res, err := s.svc.VerifyChain(ctx, 0, 0)
	require.NoError(t, err)
	assert.False(t, res.OK)
	assert.Equal(t, int64(-1), res.FirstBroken)
	_, err = s.svc.QueryEvents(ctx, audit.Query{OldestFirst: true})
	assert.ErrorIs(t, err, audit.ErrCorrupt)
	res, err = s.svc.VerifyChain(ctx, 2, 0)
	require.NoError(t, err)
	assert.True(t, res.OK, "a range that starts later does not look below the chain")
}

func Tamper(t testing.TB, s *store, stmt string) {
	t.Helper()
	tbl := pq.QuoteIdentifier(s.schema) + ".audit_log"
	tx, err := s.admin.Begin()
	require.NoError(t, err)
	defer func() { _ = tx.Rollback() }()
	_, err = tx.Exec(`ALTER TABLE ` + tbl + ` DISABLE TRIGGER USER`)
	require.NoError(t, err)
	_, err = tx.Exec(sprintf(stmt, pq.QuoteIdentifier(s.schema)))
	require.NoError(t, err)
	_, err = tx.Exec(`ALTER TABLE ` + tbl + ` ENABLE TRIGGER USER`)
	require.NoError(t, err)
	require.NoError(t, tx.Commit())
}

// TestStartUpRestrictsOwnRole starts the service's database the way
// auditsvc does, as its own role (not a superuser, owner of its schema and
// so of the log), and checks that the role may then append to and read the
// log but is refused UPDATE, DELETE and TRUNCATE by privileges, before the
// trigger is even asked.
func TestStartUpRestrictsOwnRole(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	dbURL, admin := kerneltest.Postgres(t)
	role := kerneltest.RoleName(t) // before SchemaName: the schema is dropped first
	schema := kerneltest.SchemaName(t)
	require.NoError(t, database.EnsureRole(ctx, admin, role, "pw-"+role, schema))
	u, err := url.Parse(dbURL)
	require.NoError(t, err)
	u.User = url.UserPassword(role, "pw-"+role)
	cfg := database.Config{DSN: kconfig.DSN(u.String()), Schema: schema, MaxOpenConns: 4}

	var logs kerneltest.Buffer
	logger := slog.New(slog.NewTextHandler(&logs, nil))
	db := startUp(t, cfg, logger)
	startUp(t, cfg, logger) // a second replica, or a restart: harmless
	assert.NotContains(t, logs.String(), "superuser")
	assert.NotContains(t, logs.String(), "level=WARN")

	svc := audit.NewService(db.DB, db.Ent, schema)
	_, err = svc.Record(ctx, batch("svc", 0, 3))
	require.NoError(t, err)
	v, err := svc.VerifyChain(ctx, 0, 0)
	require.NoError(t, err)
	assert.True(t, v.OK)

	tests := []struct {
		stmt string
		priv string
	}{
		{`UPDATE audit_log SET action = 'forged' WHERE sequence = 2`, "UPDATE"},
		{`DELETE FROM audit_log WHERE sequence = 3`, "DELETE"},
		{`TRUNCATE audit_log`, "TRUNCATE"},
	}
	for _, tt := range tests {
		t.Run(tt.priv, func(t *testing.T) {
			var has bool
			require.NoError(t, admin.QueryRow(`SELECT has_table_privilege($1, $2, $3)`, role, schema+".audit_log", tt.priv).Scan(&has))
			assert.False(t, has, "role still has %s", tt.priv)

			_, err := db.DB.ExecContext(ctx, tt.stmt)
			var pqErr *pq.Error
			require.True(t, errors.As(err, &pqErr), "%s succeeded: %v", tt.stmt, err)
			assert.Equal(t, pq.ErrorCode("42501"), pqErr.Code)
			assert.Contains(t, pqErr.Message, "permission denied", "refused by the trigger, not by privileges")
		})
	}
	for _, priv := range []string{"INSERT", "SELECT"} {
		var has bool
		require.NoError(t, admin.QueryRow(`SELECT has_table_privilege($1, $2, $3)`, role, schema+".audit_log", priv).Scan(&has))
		assert.True(t, has, "role lost %s", priv)
	}
	n, _ := (&store{admin: admin, schema: schema}).count(t)
	assert.Equal(t, int64(3), n)
}

// TestStartUpAsSuperuserSaysSo starts the service as the test's superuser,
// which privileges cannot restrict: start-up goes on and says so.
func TestStartUpAsSuperuserSaysSo(t *testing.T) {
	t.Parallel()
	dbURL, _ := kerneltest.Postgres(t)
	var logs kerneltest.Buffer
	logger := slog.New(slog.NewTextHandler(&logs, nil))
	startUp(t, database.Config{DSN: kconfig.DSN(dbURL), Schema: kerneltest.SchemaName(t), MaxOpenConns: 2}, logger)
	assert.Contains(t, logs.String(), "level=INFO")
	assert.Contains(t, logs.String(), "superuser, which bypasses privileges")
}

// startUp runs the service's start-up on cfg and closes the pool when the
// test ends.
func startUp(t *testing.T, cfg database.Config, logger *slog.Logger) *database.Client[*ent.Client] {
	t.Helper()
	db, err := audit.Open(context.Background(), cfg, logger)
	require.NoError(t, err)
	t.Cleanup(func() { _ = db.Close(context.Background()) })
	return db
}

func sprintf(format string, args ...any) string { return fmt.Sprintf(format, args...) }
