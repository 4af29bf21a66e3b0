package authn_test

import (
	"context"
	"testing"

	"github.com/stretchr/testify/assert"

	"portcullis.dev/kernel/authn"
)

func TestContext(t *testing.T) {
	t.Parallel()
	_, ok := authn.FromContext(context.Background())
	assert.False(t, ok, "no principal in a bare context")

	want := authn.Principal{Kind: authn.KindService, Subject: "identitysvc"}
	got, ok := authn.FromContext(authn.NewContext(context.Background(), want))
	assert.True(t, ok)
	assert.Equal(t, want, got)
}

func TestKindString(t *testing.T) {
	t.Parallel()
	tests := []struct {
		kind authn.Kind
		want string
	}{
		{authn.KindUser, "user"},
		{authn.KindService, "service"},
		{0, "none"},
		{9, "Kind(9)"},
	}
	for _, tt := range tests {
		assert.Equal(t, tt.want, tt.kind.String())
	}
}
