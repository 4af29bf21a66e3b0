package identity_test

import (
	"context"
	"math"
	"strings"
	"sync"
	"testing"
	"time"

	"entgo.io/ent/dialect"
	entsql "entgo.io/ent/dialect/sql"
	"github.com/google/uuid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"portcullis.dev/identitysvc/ent"
	"portcullis.dev/identitysvc/internal/identity"
)

// listed returns the emails of every user q lists, page after page.
func (f *fixture) listed(t *testing.T, q identity.ListQuery) []string {
	t.Helper()
	var emails []string
	for {
		users, next, err := f.svc.ListUsers(t.Context(), q)
		require.NoError(t, err)
		for _, u := range users {
			emails = append(emails, u.Email)
		}
		if next == "" {
			return emails
		}
		q.PageToken = next
	}
}

func TestListUsersFilters(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := t.Context()
	people := []struct{ email, name string }{
		{"alice@example.com", "Alice Liddell"},
		{"alan@example.org", "Alan Turing"},
		{"al_x@example.com", "Under_score"},
		{"al%y@example.com", "Sure 100%"},
		{"bob@example.com", "Bob ALICEson"},
		{"carol@example.net", "Carol"},
	}
	ids := map[string]uuid.UUID{}
	for _, p := range people {
		u, err := f.svc.CreateUser(ctx, p.email, "correct horse battery", p.name)
		require.NoError(t, err)
		ids[p.email] = u.ID
		f.clock.Advance(time.Millisecond)
	}
	for _, email := range []string{"carol@example.net", "al_x@example.com"} {
		_, err := f.svc.SetStatus(ctx, ids[email], identity.StatusDisabled, "")
		require.NoError(t, err)
	}

	tests := []struct {
		name string
		q    identity.ListQuery
		want []string
	}{
		{"no filter", identity.ListQuery{}, []string{"alice@example.com", "alan@example.org", "al_x@example.com", "al%y@example.com", "bob@example.com", "carol@example.net"}},
		{"email prefix", identity.ListQuery{EmailPrefix: "al"}, []string{"alice@example.com", "alan@example.org", "al_x@example.com", "al%y@example.com"}},
		{"email prefix in other case", identity.ListQuery{EmailPrefix: "ALI"}, []string{"alice@example.com"}},
		{"email prefix up to the domain", identity.ListQuery{EmailPrefix: "alan@Example."}, []string{"alan@example.org"}},
		{"email prefix is not a substring", identity.ListQuery{EmailPrefix: "example"}, nil},
		{"email prefix _ is literal", identity.ListQuery{EmailPrefix: "al_"}, []string{"al_x@example.com"}},
		{"email prefix % is literal", identity.ListQuery{EmailPrefix: "al%"}, []string{"al%y@example.com"}},
		{"email prefix backslash is literal", identity.ListQuery{EmailPrefix: `al\`}, nil},
		{"name substring", identity.ListQuery{NameContains: "alice"}, []string{"alice@example.com", "bob@example.com"}},
		{"name substring in other case", identity.ListQuery{NameContains: "TURING"}, []string{"alan@example.org"}},
		{"name substring _ is literal", identity.ListQuery{NameContains: "_"}, []string{"al_x@example.com"}},
		{"name substring % is literal", identity.ListQuery{NameContains: "0%"}, []string{"al%y@example.com"}},
		{"name substring matches nothing", identity.ListQuery{NameContains: "zed"}, nil},
		{"status disabled", identity.ListQuery{Status: identity.StatusDisabled}, []string{"al_x@example.com", "carol@example.net"}},
		{"status active", identity.ListQuery{Status: identity.StatusActive}, []string{"alice@example.com", "alan@example.org", "al%y@example.com", "bob@example.com"}},
		{"prefix and substring", identity.ListQuery{EmailPrefix: "al", NameContains: "e"}, []string{"alice@example.com", "al_x@example.com", "al%y@example.com"}},
		{"prefix, substring and status", identity.ListQuery{EmailPrefix: "al", NameContains: "e", Status: identity.StatusActive}, []string{"alice@example.com", "al%y@example.com"}},
		{"query still matches email or name", identity.ListQuery{Query: "ALICE"}, []string{"alice@example.com", "bob@example.com"}},
		{"query with prefix", identity.ListQuery{Query: "alice", EmailPrefix: "b"}, []string{"bob@example.com"}},
		{"query % is literal", identity.ListQuery{Query: "%"}, []string{"al%y@example.com"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, size := range []int{0, 1} { // one page, and a page per user
				q := tt.q
				q.PageSize = size
				assert.Equal(t, tt.want, f.listed(t, q), "page size %d", size)
			}
		})
	}
}

func TestListUsersRefusals(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := t.Context()
	f.create(t, "a@example.com")
	f.create(t, "b@example.com")
	_, prefixed, err := f.svc.ListUsers(ctx, identity.ListQuery{PageSize: 1, EmailPrefix: "a"})
	require.NoError(t, err)
	require.Empty(t, prefixed, "one user has the prefix")
	_, token, err := f.svc.ListUsers(ctx, identity.ListQuery{PageSize: 1, NameContains: "user"})
	require.NoError(t, err)
	require.NotEmpty(t, token)

	tests := []struct {
		name  string
		q     identity.ListQuery
		field string
	}{
		{"negative page size", identity.ListQuery{PageSize: -1}, "page_size"},
		{"unknown status", identity.ListQuery{Status: "gone"}, "status"},
		{"forged page token", identity.ListQuery{PageToken: "not-a-token"}, "page_token"},
		{"page token of other filters", identity.ListQuery{NameContains: "user", EmailPrefix: "a", PageToken: token}, "page_token"},
		{"page token without its filter", identity.ListQuery{PageToken: token}, "page_token"},
		{"page token at the earliest Unix microsecond", identity.ListQuery{PageToken: identity.PageToken(identity.ListQuery{}, time.UnixMicro(math.MinInt64), uuid.New())}, "page_token"},
		{"query over 254 bytes", identity.ListQuery{Query: strings.Repeat("q", 255)}, "query"},
		{"email prefix over 254 bytes", identity.ListQuery{EmailPrefix: strings.Repeat("e", 255)}, "email_prefix"},
		{"name over 200 characters", identity.ListQuery{NameContains: strings.Repeat("é", 201)}, "name_contains"},
		{"name not UTF-8", identity.ListQuery{NameContains: "\xff"}, "name_contains"},
		{"email prefix with NUL", identity.ListQuery{EmailPrefix: "a\x00"}, "email_prefix"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := f.svc.ListUsers(ctx, tt.q)
			var invalid *identity.ValidationError
			require.ErrorAs(t, err, &invalid)
			assert.Equal(t, tt.field, invalid.Field)
		})
	}

	// At the limits, filters are fine.
	_, _, err = f.svc.ListUsers(ctx, identity.ListQuery{EmailPrefix: strings.Repeat("e", 254), NameContains: strings.Repeat("é", 200)})
	require.NoError(t, err)
	// And so are page tokens of any time PostgreSQL holds, up to the
	// latest the cursor's int64 microseconds can say.
	for _, at := range []time.Time{time.Date(-4713, 11, 24, 0, 0, 0, 0, time.UTC), time.UnixMicro(math.MaxInt64)} {
		_, _, err = f.svc.ListUsers(ctx, identity.ListQuery{PageToken: identity.PageToken(identity.ListQuery{}, at, uuid.Max)})
		require.NoError(t, err, "page token at %v", at)
	}
}

// TestListUsersFilteredPagesStayStableUnderInserts pages through filtered
// listings while matching and non-matching users are created between
// pages: no user is skipped or repeated, and the new ones come last.
func TestListUsersFilteredPagesStayStableUnderInserts(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		q     identity.ListQuery
		match func(i int) bool // whether user i (named below) matches q
	}{
		{"email prefix", identity.ListQuery{EmailPrefix: "Even"}, func(i int) bool { return i%2 == 0 }},
		{"name substring", identity.ListQuery{NameContains: "_3"}, func(i int) bool { return i%3 == 0 }},
		{"prefix and status", identity.ListQuery{EmailPrefix: "even", Status: identity.StatusActive}, func(i int) bool { return i%2 == 0 }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			f := newFixture(t)
			ctx := t.Context()
			var want []uuid.UUID
			n := 0
			create := func() {
				email := "odd" + uuid.NewString()[:8] + "@example.com"
				if n%2 == 0 {
					email = "even" + uuid.NewString()[:8] + "@example.com"
				}
				name := "User"
				if n%3 == 0 {
					name = "User_3"
				}
				u, err := f.svc.CreateUser(ctx, email, "correct horse battery", name)
				require.NoError(t, err)
				if tt.match(n) {
					want = append(want, u.ID)
				}
				n++
				f.clock.Advance(time.Millisecond)
			}
			for range 12 {
				create()
			}
			q := tt.q
			q.PageSize = 2
			var seen []uuid.UUID
			for page := 0; ; page++ {
				users, next, err := f.svc.ListUsers(ctx, q)
				require.NoError(t, err)
				assert.LessOrEqual(t, len(users), 2)
				for _, u := range users {
					seen = append(seen, u.ID)
				}
				if page < 2 {
					for range 3 {
						create()
					}
				}
				if next == "" {
					break
				}
				q.PageToken = next
			}
			assert.Equal(t, want, seen)
		})
	}
}

// recorder is an Ent driver that remembers the last query it ran, so a
// test can ask PostgreSQL how it plans exactly what ListUsers sends.
type recorder struct {
	dialect.Driver
	mu    sync.Mutex
	query string
	args  []any
}

func (r *recorder) Query(ctx context.Context, query string, args, v any) error {
	r.mu.Lock()
	r.query, r.args = query, args.([]any)
	r.mu.Unlock()
	return r.Driver.Query(ctx, query, args, v)
}

// TestListUsersFiltersUseTheirIndexes checks, on a table large enough for
// the planner to care, that each filter's query is planned on the index
// the schema gives it rather than on a scan of every live user.
func TestListUsersFiltersUseTheirIndexes(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := t.Context()
	_, err := f.db.DB.ExecContext(ctx, `
		INSERT INTO users (id, email, display_name, password_hash, status, created_at, updated_at)
		SELECT gen_random_uuid(), 'user' || i || '@example.com', 'Person ' || md5(i::text),
			'x', CASE WHEN i % 10 = 0 THEN 'disabled' ELSE 'active' END,
			now() + i * interval '1 ms', now()
		FROM generate_series(1, 20000) AS i`)
	require.NoError(t, err)
	for i := range 3 {
		_, err := f.svc.CreateUser(ctx, "zebulon"+string(rune('a'+i))+"@example.net", "correct horse battery", "Zebulon Quixote")
		require.NoError(t, err)
	}
	// VACUUM too, as autovacuum would after such a load: it moves the rows
	// from the GIN indexes' pending lists into the indexes proper, which
	// the planner prices far lower than the pending lists.
	_, err = f.db.DB.ExecContext(ctx, `VACUUM ANALYZE users`)
	require.NoError(t, err)

	rec := &recorder{Driver: entsql.OpenDB(dialect.Postgres, f.db.DB)}
	svc, err := identity.NewService(ent.NewClient(ent.Driver(rec)), f.cfg, &identity.DirMailer{Dir: t.TempDir()})
	require.NoError(t, err)

	tests := []struct {
		name    string
		q       identity.ListQuery
		indexes []string
	}{
		{"email prefix", identity.ListQuery{EmailPrefix: "Zebulon"}, []string{"user_email_prefix"}},
		{"name substring", identity.ListQuery{NameContains: "quixote"}, []string{"user_display_name_trgm"}},
		{"query", identity.ListQuery{Query: "zebulon"}, []string{"user_email_trgm", "user_display_name_trgm"}},
		{"prefix with status", identity.ListQuery{EmailPrefix: "zebulon", Status: identity.StatusActive}, []string{"user_email_prefix"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			users, _, err := svc.ListUsers(ctx, tt.q)
			require.NoError(t, err)
			require.Len(t, users, 3)
			rec.mu.Lock()
			query, args := rec.query, rec.args
			rec.mu.Unlock()
			var plan []string
			rows, err := f.db.DB.QueryContext(ctx, "EXPLAIN "+query, args...)
			require.NoError(t, err)
			for rows.Next() {
				var line string
				require.NoError(t, rows.Scan(&line))
				plan = append(plan, line)
			}
			require.NoError(t, rows.Err())
			require.NoError(t, rows.Close())
			t.Logf("%s\n%s", query, strings.Join(plan, "\n"))
			for _, index := range tt.indexes {
				assert.Contains(t, strings.Join(plan, "\n"), "Index Scan on "+index)
			}
		})
	}
}
