package database

import (
	"strings"
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
