package h2proxy

import (
	"net/url"
	"testing"

	"github.com/stretchr/testify/assert"
)

func TestParsePathMatchesParseRequestURI(t *testing.T) {
	for _, p := range []string{
		"/portcullis.identity.v1.IdentityService/CreateUser",
		"/a/b?c=d&e=%20f",
		"/a%2Fb/c",
		"/a b",
		"/%zz",
		"/?",
		"/a#b",
		"*",
		"relative",
		"",
	} {
		want, wantErr := url.ParseRequestURI(p)
		got, err := parsePath(p)
		if wantErr != nil {
			assert.Error(t, err, p)
			continue
		}
		if assert.NoError(t, err, p) {
			assert.Equal(t, want.Path, got.Path, p)
			assert.Equal(t, want.RawQuery, got.RawQuery, p)
			assert.Equal(t, want.EscapedPath(), got.EscapedPath(), p)
		}
	}
}
