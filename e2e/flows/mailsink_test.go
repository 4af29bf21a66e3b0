package flows_test

import (
	"io"
	"net/mail"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// mailLink is a link with a token on a line of its own, ended by a line
// break: a mail file caught half-written never yields a cut-off token.
var mailLink = regexp.MustCompile(`(\S+\?token=\S+)\r?\n`)

// mailedLink waits for the newest mail to the address to with the
// subject in dir, where Identity's development mailer (mail.driver dir)
// writes one .eml file per message, and returns its link.
func mailedLink(t *testing.T, dir, to, subject string) *url.URL {
	t.Helper()
	var found *url.URL
	require.EventuallyWithT(t, func(c *assert.CollectT) {
		found = nil
		entries, err := os.ReadDir(dir) // sorted by name: the order written
		require.NoError(c, err)
		for _, e := range entries {
			if !strings.HasSuffix(e.Name(), ".eml") {
				continue
			}
			f, err := os.Open(filepath.Join(dir, e.Name()))
			require.NoError(c, err)
			msg, err := mail.ReadMessage(f)
			if err != nil || msg.Header.Get("To") != to || msg.Header.Get("Subject") != subject {
				_ = f.Close()
				continue
			}
			body, err := io.ReadAll(msg.Body)
			_ = f.Close()
			require.NoError(c, err)
			if m := mailLink.FindSubmatch(body); m != nil {
				link, err := url.Parse(string(m[1]))
				require.NoError(c, err)
				found = link
			}
		}
		if assert.NotNil(c, found, "no mail %q to %s in %s", subject, to, dir) {
			assert.NotEmpty(c, found.Query().Get("token"), "a link without a token")
		}
	}, 30*time.Second, 50*time.Millisecond)
	return found
}
