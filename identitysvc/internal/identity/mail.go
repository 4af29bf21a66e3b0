package identity

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/wneessen/go-mail"

	"portcullis.dev/kernel/config"
	"portcullis.dev/kernel/logging"
)

// Message is an email to one recipient.
type Message struct {
	To, Subject, Body string
}

// Mailer sends the service's emails.
type Mailer interface {
	Send(ctx context.Context, m Message) error
}

// MailConfig is the `mail:` section: how the service sends email.
type MailConfig struct {
	// Driver is smtp, or dir to write each message to Dir and the log
	// (development).
	Driver string `koanf:"driver" validate:"oneof=smtp dir"`
	// From is the sender address.
	From string `koanf:"from" validate:"required"`
	// Dir is where the dir driver writes messages.
	Dir  string     `koanf:"dir"`
	SMTP SMTPConfig `koanf:"smtp"`
}

// SMTPConfig is how to reach the SMTP server.
type SMTPConfig struct {
	Host     string        `koanf:"host"`
	Port     int           `koanf:"port" validate:"min=0,max=65535"`
	Username string        `koanf:"username"`
	Password config.Secret `koanf:"password"`
	// TLS is starttls (required), tls (implicit TLS) or none (a local relay).
	TLS     string        `koanf:"tls" validate:"oneof=starttls tls none"`
	Timeout time.Duration `koanf:"timeout" validate:"min=0"`
}

// mailConcurrency bounds the mails a [Service] sends at once.
const mailConcurrency = 8

// mailTimeout bounds one background send, its wait for a slot included.
const mailTimeout = time.Minute

// mailQueue bounds the mails waiting for a slot. While the mail server
// hangs, every request that mails would otherwise leave a goroutine
// waiting, without end; past the bound a mail is dropped and logged, and
// the user can ask for another. It is wide enough for a burst of sign-ups
// while the server answers (a waiting goroutine costs a few KiB).
const mailQueue = 1000

// send hands m to the Mailer in the background, after the change that
// issued its token has committed. The caller's answer then never waits for
// (or depends on) the mail server: RequestPasswordReset takes the same time
// whether or not it sends anything, and a slow relay cannot hold requests.
// A failure is logged; the user can ask for another mail. [Service.Drain]
// waits for sends in flight.
func (s *Service) send(ctx context.Context, m Message) {
	// The request's values (request ID, log attributes) stay; its end does
	// not cancel the send.
	ctx = context.WithoutCancel(ctx)
	if s.mailWaiting.Add(1) > mailQueue {
		s.mailWaiting.Add(-1)
		s.logger.ErrorContext(ctx, "send mail: too many mails waiting; dropped", "subject", m.Subject, "waiting", mailQueue)
		return
	}
	s.inBackground(func() {
		ctx, cancel := context.WithTimeout(ctx, mailTimeout)
		defer cancel()
		select {
		case s.mailSlots <- struct{}{}:
			s.mailWaiting.Add(-1)
		case <-ctx.Done():
			s.mailWaiting.Add(-1)
			s.logger.ErrorContext(ctx, "send mail: no slot free in time; dropped", "subject", m.Subject, "timeout", mailTimeout)
			return
		}
		defer func() { <-s.mailSlots }()
		if err := s.mailer.Send(ctx, m); err != nil {
			s.logger.ErrorContext(ctx, "send mail", "subject", m.Subject, "err", err)
		}
	})
}

// inBackground runs fn in a goroutine [Service.Drain] waits for. Once
// Drain has begun it runs fn in the caller instead: a request still in
// flight at shutdown finishes its work rather than starting some that
// Drain would not see (a WaitGroup must not grow while it is waited on).
func (s *Service) inBackground(fn func()) {
	s.backgroundMu.Lock()
	if s.draining {
		s.backgroundMu.Unlock()
		fn()
		return
	}
	s.background.Add(1)
	s.backgroundMu.Unlock()
	go func() {
		defer s.background.Done()
		fn()
	}()
}

// Drain waits until the mails accepted so far have been handed to the
// Mailer and the calls that end users' sessions (see endSessions) are
// done, or until ctx ends, whichever is first. The server calls it on
// shutdown. While it waits, new work runs in its caller; once everything
// in flight is done, work goes to the background again, so the Service
// stays usable afterwards (tests drain between steps).
func (s *Service) Drain(ctx context.Context) error {
	s.backgroundMu.Lock()
	s.draining = true
	s.backgroundMu.Unlock()
	done := make(chan struct{})
	go func() {
		s.background.Wait()
		// Nothing is in flight and nothing new was counted meanwhile, so
		// the group may grow again.
		s.backgroundMu.Lock()
		s.draining = false
		s.backgroundMu.Unlock()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("identity: mail or session ending still in flight: %w", ctx.Err())
	}
}

// NewMailer returns the mailer cfg describes.
func NewMailer(cfg MailConfig, logger *slog.Logger) (Mailer, error) {
	switch cfg.Driver {
	case "dir":
		return &DirMailer{Dir: cfg.Dir, From: cfg.From, Logger: logging.OrDiscard(logger)}, nil
	case "smtp":
		return NewSMTPMailer(cfg)
	}
	return nil, fmt.Errorf("mail.driver: unknown driver %q (want smtp or dir)", cfg.Driver)
}

// DirMailer writes each message to a file in Dir and logs where: a
// development sink, so a developer can open the links. A nil Logger
// discards.
type DirMailer struct {
	Dir, From string
	Logger    *slog.Logger
}

// Send implements [Mailer].
func (d *DirMailer) Send(ctx context.Context, m Message) error {
	if err := os.MkdirAll(d.Dir, 0o700); err != nil {
		return fmt.Errorf("mail dir %s: %w", d.Dir, err)
	}
	var id [6]byte
	_, _ = rand.Read(id[:])
	// Fixed-width nanoseconds: the names sort in the order the messages
	// were written, so the newest is last in a directory listing.
	path := filepath.Join(d.Dir, time.Now().UTC().Format("20060102T150405.000000000")+"-"+hex.EncodeToString(id[:])+".eml")
	content := fmt.Sprintf("From: %s\r\nTo: %s\r\nSubject: %s\r\n\r\n%s", d.From, m.To, m.Subject, strings.ReplaceAll(m.Body, "\n", "\r\n"))
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		return fmt.Errorf("write mail: %w", err)
	}
	logging.OrDiscard(d.Logger).InfoContext(ctx, "mail written", "to", m.To, "subject", m.Subject, "file", path)
	return nil
}

// SMTPMailer sends through an SMTP server.
type SMTPMailer struct {
	client *mail.Client
	from   string
}

// NewSMTPMailer returns a mailer for cfg.SMTP.
func NewSMTPMailer(cfg MailConfig) (*SMTPMailer, error) {
	opts := []mail.Option{mail.WithPort(cfg.SMTP.Port), mail.WithTimeout(cmpDuration(cfg.SMTP.Timeout, 10*time.Second))}
	switch cfg.SMTP.TLS {
	case "tls":
		opts = append(opts, mail.WithSSL())
	case "none":
		opts = append(opts, mail.WithTLSPolicy(mail.NoTLS))
	default:
		opts = append(opts, mail.WithTLSPolicy(mail.TLSMandatory))
	}
	if cfg.SMTP.Username != "" {
		opts = append(opts, mail.WithSMTPAuth(mail.SMTPAuthAutoDiscover), mail.WithUsername(cfg.SMTP.Username), mail.WithPassword(cfg.SMTP.Password.Value()))
	}
	client, err := mail.NewClient(cfg.SMTP.Host, opts...)
	if err != nil {
		return nil, fmt.Errorf("mail.smtp: %w", err)
	}
	return &SMTPMailer{client: client, from: cfg.From}, nil
}

// Send implements [Mailer].
func (s *SMTPMailer) Send(ctx context.Context, m Message) error {
	msg := mail.NewMsg()
	if err := msg.From(s.from); err != nil {
		return fmt.Errorf("mail from: %w", err)
	}
	if err := msg.To(m.To); err != nil {
		return fmt.Errorf("mail to: %w", err)
	}
	msg.Subject(m.Subject)
	msg.SetBodyString(mail.TypeTextPlain, m.Body)
	if err := s.client.DialAndSendWithContext(ctx, msg); err != nil {
		return fmt.Errorf("send mail: %w", err)
	}
	return nil
}

func cmpDuration(d, def time.Duration) time.Duration {
	if d > 0 {
		return d
	}
	return def
}
