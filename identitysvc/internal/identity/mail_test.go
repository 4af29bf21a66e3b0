package identity_test

import (
	"context"
	"io"
	"log/slog"
	"mime/quotedprintable"
	"net"
	"net/textproto"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"portcullis.dev/identitysvc/internal/identity"
	"portcullis.dev/kernel/kerneltest"
)

// smtpServer is a minimal real SMTP server (RFC 5321: EHLO, MAIL, RCPT,
// DATA, QUIT) on loopback that keeps what it receives.
type smtpServer struct {
	addr string
	mu   sync.Mutex
	mail []string // each message's envelope and data
}

func startSMTP(t *testing.T) *smtpServer {
	s := &smtpServer{}
	s.addr = kerneltest.ServeTCP(t, s.serve)
	return s
}

func (s *smtpServer) serve(c net.Conn) {
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	tp := textproto.NewConn(c)
	_ = tp.PrintfLine("220 test ESMTP")
	var envelope strings.Builder
	for {
		line, err := tp.ReadLine()
		if err != nil {
			return
		}
		verb := strings.ToUpper(strings.Fields(line + " x")[0])
		switch verb {
		case "EHLO", "HELO":
			_ = tp.PrintfLine("250-test\r\n250 8BITMIME")
		case "MAIL", "RCPT":
			envelope.WriteString(line + "\n")
			_ = tp.PrintfLine("250 OK")
		case "DATA":
			_ = tp.PrintfLine("354 go ahead")
			data, err := tp.ReadDotBytes()
			if err != nil {
				return
			}
			s.mu.Lock()
			s.mail = append(s.mail, envelope.String()+string(data))
			s.mu.Unlock()
			envelope.Reset()
			_ = tp.PrintfLine("250 OK queued")
		case "RSET", "NOOP":
			_ = tp.PrintfLine("250 OK")
		case "QUIT":
			_ = tp.PrintfLine("221 bye")
			return
		default:
			_ = tp.PrintfLine("502 not implemented")
		}
	}
}

func (s *smtpServer) received() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.mail...)
}

func TestSMTPMailerSendsThroughARealServer(t *testing.T) {
	t.Parallel()
	srv := startSMTP(t)
	host, port, _ := net.SplitHostPort(srv.addr)
	p, _ := strconv.Atoi(port)
	mailer, err := identity.NewMailer(identity.MailConfig{
		Driver: "smtp",
		From:   "Portcullis <no-reply@portcullis.test>",
		SMTP:   identity.SMTPConfig{Host: host, Port: p, TLS: "none", Timeout: 5 * time.Second},
	}, nil)
	require.NoError(t, err)
	require.NoError(t, mailer.Send(t.Context(), identity.Message{To: "ann@example.com", Subject: "Reset your password", Body: "Open https://x/?token=abc\n"}))

	got := srv.received()
	require.Len(t, got, 1)
	assert.Contains(t, got[0], "RCPT TO:<ann@example.com>")
	assert.Contains(t, got[0], "Subject: Reset your password")
	_, body, _ := strings.Cut(got[0], "\n\n")
	decoded, err := io.ReadAll(quotedprintable.NewReader(strings.NewReader(body)))
	require.NoError(t, err)
	assert.Contains(t, string(decoded), "https://x/?token=abc")
}

// hangingMailer stands for a mail server that takes mails and never
// answers until released.
type hangingMailer struct {
	release chan struct{}
	mu      sync.Mutex
	sending int
	sent    int
}

func (m *hangingMailer) Send(ctx context.Context, _ identity.Message) error {
	m.mu.Lock()
	m.sending++
	m.mu.Unlock()
	select {
	case <-m.release:
	case <-ctx.Done():
		return ctx.Err()
	}
	m.mu.Lock()
	m.sent++
	m.mu.Unlock()
	return nil
}

func (m *hangingMailer) counts() (sending, sent int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.sending, m.sent
}

// TestMailWaitingIsBounded: while the mail server hangs, mails wait for a
// slot up to a bound, and those past it are dropped and logged rather than
// piling up without end.
func TestMailWaitingIsBounded(t *testing.T) {
	t.Parallel()
	mailer := &hangingMailer{release: make(chan struct{})}
	var logs kerneltest.Buffer
	svc, err := identity.NewService(nil, identity.Config{Argon2: fastArgon2, PublicURL: "https://x"}, mailer,
		identity.WithLogger(slog.New(slog.NewTextHandler(&logs, nil))))
	require.NoError(t, err)
	const extra = 5
	total := identity.MailConcurrency + identity.MailQueue + extra
	for i := range total {
		identity.Send(svc, t.Context(), identity.Message{To: "u@example.com", Subject: "mail " + strconv.Itoa(i)})
		if i < identity.MailConcurrency {
			// The first ones take the slots; the rest wait.
			require.Eventually(t, func() bool { s, _ := mailer.counts(); return s == i+1 }, 5*time.Second, time.Millisecond)
		}
	}
	assert.Equal(t, extra, strings.Count(logs.String(), "too many mails waiting; dropped"))

	close(mailer.release)
	require.NoError(t, svc.Drain(t.Context()))
	_, sent := mailer.counts()
	assert.Equal(t, total-extra, sent, "every mail that waited was sent")
}
