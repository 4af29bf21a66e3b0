package identity_test

import (
	"io"
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
)

// smtpServer is a minimal real SMTP server (RFC 5321: EHLO, MAIL, RCPT,
// DATA, QUIT) on loopback that keeps what it receives.
type smtpServer struct {
	ln   net.Listener
	mu   sync.Mutex
	mail []string // each message's envelope and data
}

func startSMTP(t *testing.T) *smtpServer {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	s := &smtpServer{ln: ln}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go s.serve(c)
		}
	}()
	t.Cleanup(func() { _ = ln.Close() })
	return s
}

func (s *smtpServer) serve(c net.Conn) {
	defer c.Close()
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
	host, port, _ := net.SplitHostPort(srv.ln.Addr().String())
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
