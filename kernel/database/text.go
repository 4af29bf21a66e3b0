package database

import (
	"strings"
	"time"
	"unicode/utf8"
)

// ValidText reports whether PostgreSQL can store s in a text column: it
// must be valid UTF-8 (the databases' encoding) and hold no NUL, which
// PostgreSQL refuses in text of any encoding. A value that is not fails
// the statement, which a service would otherwise answer as its own error:
// check client input with ValidText before it reaches a query.
func ValidText(s string) bool {
	return utf8.ValidString(s) && strings.IndexByte(s, 0) < 0
}

// CleanText returns s as PostgreSQL can store it: invalid UTF-8 replaced by
// U+FFFD and NULs removed. It is for values a service records as they came,
// such as a client's User-Agent, rather than refuses.
func CleanText(s string) string {
	if ValidText(s) {
		return s
	}
	return strings.ReplaceAll(strings.ToValidUTF8(s, "\uFFFD"), "\x00", "")
}

// TruncateText cuts s to at most n bytes without splitting a character, for
// a value kept to a bounded length, such as a client's User-Agent.
func TruncateText(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

// The range of PostgreSQL's timestamp and timestamptz: 4714-11-24 BC to
// 294276-12-31 AD.
var (
	minTime = time.Date(-4713, time.November, 24, 0, 0, 0, 0, time.UTC)
	maxTime = time.Date(294276, time.December, 31, 23, 59, 59, 999999000, time.UTC)
)

// ValidTime reports whether PostgreSQL can hold t in a timestamp: a time
// outside its range, from a page token a client made up or a filter, fails
// the statement ("timestamp out of range"), as ValidText's do.
func ValidTime(t time.Time) bool {
	return !t.Before(minTime) && !t.After(maxTime)
}
