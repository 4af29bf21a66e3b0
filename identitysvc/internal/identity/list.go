package identity

import (
	"context"
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"hash/fnv"
	"strings"
	"time"
	"unicode/utf8"

	"entgo.io/ent/dialect/sql"
	"github.com/google/uuid"

	"portcullis.dev/identitysvc/ent"
	"portcullis.dev/identitysvc/ent/predicate"
	"portcullis.dev/identitysvc/ent/user"
	"portcullis.dev/kernel/database"
)

// Page sizes of ListUsers.
const (
	DefaultPageSize = 50
	MaxPageSize     = 1000
)

// ListQuery filters and pages ListUsers. The filters combine with AND;
// all text filters ignore letter case and take % and _ literally.
type ListQuery struct {
	PageSize  int
	PageToken string
	// Query keeps users whose email or display name contains it.
	Query string
	// Status keeps users with that status; empty keeps all.
	Status Status
	// EmailPrefix keeps users whose email starts with it.
	EmailPrefix string
	// NameContains keeps users whose display name contains it.
	NameContains string
}

// Bounds of the text filters: none can match anything longer than the
// field it searches.
const (
	maxQueryBytes        = 254
	maxEmailPrefixBytes  = 254
	maxNameContainsRunes = MaxDisplayNameRunes
)

// ListUsers returns a page of live users in creation order and the token of
// the next page ("" on the last). Pages are keyed on (created_at, id), not
// offsets, so users created meanwhile never shift a page or repeat a user;
// each page is one index seek.
//
// Every filter has an index over live users (see the User schema):
// EmailPrefix is a LIKE 'prefix%' on the lower-case email, which a
// varchar_pattern_ops B-tree serves whatever the database's collation;
// NameContains and Query are ILIKE '%text%', which pg_trgm's GIN indexes
// serve once the text has three characters. Ent escapes % and _ in each
// pattern, so user input is never a wildcard.
func (s *Service) ListUsers(ctx context.Context, q ListQuery) ([]User, string, error) {
	size := q.PageSize
	switch {
	case size < 0:
		return nil, "", &ValidationError{Field: "page_size", Reason: "must not be negative"}
	case size == 0:
		size = DefaultPageSize
	case size > MaxPageSize:
		size = MaxPageSize
	}
	if err := q.validateText(); err != nil {
		return nil, "", err
	}
	preds := []predicate.User{user.DeletedAtIsNil()}
	if q.PageToken != "" {
		after, id, err := decodeCursor(q.PageToken, q.filterSum())
		if err != nil {
			return nil, "", err
		}
		// A row comparison, so PostgreSQL seeks the (created_at, id) index.
		preds = append(preds, func(s *sql.Selector) {
			s.Where(sql.CompositeGT([]string{s.C(user.FieldCreatedAt), s.C(user.FieldID)}, after, id))
		})
	}
	if q.Query != "" {
		preds = append(preds, user.Or(user.EmailContainsFold(q.Query), user.DisplayNameContainsFold(q.Query)))
	}
	if q.EmailPrefix != "" {
		// Emails are stored lower-case (NormalizeEmail), so lowering the
		// prefix the same way makes a case-sensitive LIKE, which a B-tree
		// can serve, match regardless of case; ILIKE could not use it.
		preds = append(preds, user.EmailHasPrefix(strings.ToLower(q.EmailPrefix)))
	}
	if q.NameContains != "" {
		preds = append(preds, user.DisplayNameContainsFold(q.NameContains))
	}
	switch q.Status {
	case "":
	case StatusActive, StatusDisabled:
		preds = append(preds, user.StatusEQ(user.Status(q.Status)))
	default:
		return nil, "", &ValidationError{Field: "status", Reason: "is not a known status"}
	}
	rows, err := s.db.User.Query().Where(preds...).Order(ent.Asc(user.FieldCreatedAt), ent.Asc(user.FieldID)).Limit(size + 1).All(ctx)
	if err != nil {
		return nil, "", fmt.Errorf("list users: %w", err)
	}
	next := ""
	if len(rows) > size {
		rows = rows[:size]
		last := rows[len(rows)-1]
		next = encodeCursor(last.CreatedAt, last.ID, q.filterSum())
	}
	users := make([]User, len(rows))
	for i, u := range rows {
		users[i] = toUser(u)
	}
	return users, next, nil
}

// validateText checks the text filters' sizes, and that PostgreSQL can
// take them as text (valid UTF-8 without NUL): otherwise it would refuse
// the query with an error of its own, which is not the caller's to read.
func (q ListQuery) validateText() error {
	switch {
	case len(q.Query) > maxQueryBytes:
		return &ValidationError{Field: "query", Reason: fmt.Sprintf("must be at most %d bytes", maxQueryBytes)}
	case len(q.EmailPrefix) > maxEmailPrefixBytes:
		return &ValidationError{Field: "email_prefix", Reason: fmt.Sprintf("must be at most %d bytes", maxEmailPrefixBytes)}
	case utf8.RuneCountInString(q.NameContains) > maxNameContainsRunes:
		return &ValidationError{Field: "name_contains", Reason: fmt.Sprintf("must be at most %d characters", maxNameContainsRunes)}
	}
	for _, f := range [...]struct{ field, value string }{{"query", q.Query}, {"email_prefix", q.EmailPrefix}, {"name_contains", q.NameContains}} {
		if !database.ValidText(f.value) {
			return &ValidationError{Field: f.field, Reason: "must be UTF-8 text without NUL"}
		}
	}
	return nil
}

// filterSum identifies the filters a page token was issued for: the
// contract says they must not change between pages, and a token replayed
// with other filters is refused rather than silently mixing two listings.
// The filters added later are summed only when set, so a token issued
// before they existed still continues its listing.
func (q ListQuery) filterSum() uint32 {
	h := fnv.New32a()
	_, _ = h.Write([]byte(q.Query))
	_, _ = h.Write([]byte{0})
	_, _ = h.Write([]byte(q.Status))
	if q.EmailPrefix != "" || q.NameContains != "" {
		_, _ = h.Write([]byte{0})
		_, _ = h.Write([]byte(q.EmailPrefix))
		_, _ = h.Write([]byte{0})
		_, _ = h.Write([]byte(q.NameContains))
	}
	return h.Sum32()
}

// A cursor is opaque to callers: the creation time (Unix microseconds,
// PostgreSQL's precision) and ID of the last user of a page, and the
// filters' sum, base64url-encoded.
const cursorLen = 8 + 16 + 4

func encodeCursor(t time.Time, id uuid.UUID, filters uint32) string {
	b := make([]byte, 8, cursorLen)
	binary.BigEndian.PutUint64(b, uint64(t.UnixMicro()))
	b = append(b, id[:]...)
	b = binary.BigEndian.AppendUint32(b, filters)
	return base64.RawURLEncoding.EncodeToString(b)
}

func decodeCursor(s string, filters uint32) (time.Time, uuid.UUID, error) {
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil || len(b) != cursorLen {
		return time.Time{}, uuid.UUID{}, errBadCursor
	}
	if binary.BigEndian.Uint32(b[24:]) != filters {
		return time.Time{}, uuid.UUID{}, errCursorFilters
	}
	id, err := uuid.FromBytes(b[8:24])
	if err != nil {
		return time.Time{}, uuid.UUID{}, errBadCursor
	}
	// The filter sum is no seal (anyone can recompute it): a forged time
	// PostgreSQL cannot hold must be refused here, not fail the query.
	// In UTC: lib/pq writes a local time's offset, which PostgreSQL's
	// oldest dates cannot take in every zone.
	t := time.UnixMicro(int64(binary.BigEndian.Uint64(b[:8]))).UTC()
	if !database.ValidTime(t) {
		return time.Time{}, uuid.UUID{}, errBadCursor
	}
	return t, id, nil
}

var (
	errBadCursor     = &ValidationError{Field: "page_token", Reason: "is not a token this service issued"}
	errCursorFilters = &ValidationError{Field: "page_token", Reason: "was issued for other filters"}
)
