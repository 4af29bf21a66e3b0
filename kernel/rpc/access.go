package rpc

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"

	"portcullis.dev/kernel/authn"
	"portcullis.dev/kernel/logging"
	"portcullis.dev/proto/access"
	optionsv1 "portcullis.dev/proto/options/v1"
)

// ServiceTokenHeader carries the calling service's token on internal calls.
// It is separate from Authorization so a service can forward a user's
// access token and prove its own identity on the same call.
const ServiceTokenHeader = "X-Portcullis-Service-Token"

// Authorizer decides whether a user holds a permission; in Portcullis it is
// the Authz service's Check ([NewAuthzChecker]).
type Authorizer interface {
	Check(ctx context.Context, subject, permission string) (bool, error)
}

// AccessPolicy enforces the access option of every procedure:
//
//   - PUBLIC passes (a valid access token, if sent, still names the caller);
//   - AUTHENTICATED needs a valid access token in Authorization, and the
//     rule's permission unless the call is self-service on the caller;
//   - INTERNAL needs a valid service token in [ServiceTokenHeader];
//   - a procedure without a rule is refused.
//
// Refusals are Unauthenticated or PermissionDenied with a fixed message: the
// reason is logged, never told to the caller.
type AccessPolicy struct {
	// Users verifies access tokens. Nil refuses AUTHENTICATED procedures.
	Users authn.Authenticator
	// Services verifies service tokens. Nil refuses INTERNAL procedures.
	Services authn.Authenticator
	// Authorizer checks permissions. Nil refuses procedures that need one.
	Authorizer Authorizer
}

var (
	errUnauthenticated  = connect.NewError(connect.CodeUnauthenticated, errors.New("a valid access token is required"))
	errServiceRequired  = connect.NewError(connect.CodeUnauthenticated, errors.New("this procedure is internal"))
	errPermissionDenied = connect.NewError(connect.CodePermissionDenied, errors.New("permission denied"))
	errNoRule           = connect.NewError(connect.CodePermissionDenied, errors.New("procedure has no access rule"))
	errAuthzUnavailable = connect.NewError(connect.CodeUnavailable, errors.New("permission check unavailable; retry later"))
	errKeysUnavailable  = connect.NewError(connect.CodeUnavailable, errors.New("token verification unavailable; retry later"))
)

// enforcer is the interceptor form of an AccessPolicy.
type enforcer struct {
	policy *AccessPolicy
	logger *slog.Logger
}

func (e *enforcer) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		if req.Spec().IsClient {
			return next(ctx, req)
		}
		msg, _ := req.Any().(proto.Message)
		ctx, err := e.authorize(ctx, req.Spec(), req.Header(), msg, true)
		if err != nil {
			return nil, err
		}
		return next(ctx, req)
	}
}

func (e *enforcer) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return next
}

func (e *enforcer) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return func(ctx context.Context, conn connect.StreamingHandlerConn) error {
		// The request message of a stream arrives after this point, so a
		// self-service rule cannot be judged here: the permission applies.
		ctx, err := e.authorize(ctx, conn.Spec(), conn.RequestHeader(), nil, false)
		if err != nil {
			return err
		}
		return next(ctx, conn)
	}
}

// authorize applies the procedure's rule and returns the context carrying
// the caller's principal.
func (e *enforcer) authorize(ctx context.Context, spec connect.Spec, header http.Header, req proto.Message, haveMessage bool) (context.Context, error) {
	rule := access.ForSpec(spec)
	p := e.policy
	if p == nil {
		p = &AccessPolicy{}
	}
	switch rule.Level {
	case optionsv1.Access_ACCESS_PUBLIC:
		if token, ok := bearer(header); ok && p.Users != nil {
			if principal, err := p.Users.Authenticate(ctx, token); err == nil {
				ctx = withPrincipal(ctx, principal)
			}
		}
		return ctx, nil

	case optionsv1.Access_ACCESS_INTERNAL:
		token := header.Get(ServiceTokenHeader)
		if token == "" || p.Services == nil {
			e.refuse(ctx, "no service token")
			return ctx, errServiceRequired
		}
		principal, err := p.Services.Authenticate(ctx, token)
		if err != nil {
			e.refuse(ctx, "service token rejected", "err", err)
			return ctx, errServiceRequired
		}
		return withPrincipal(ctx, principal), nil

	case optionsv1.Access_ACCESS_AUTHENTICATED:
		token, ok := bearer(header)
		if !ok || p.Users == nil {
			e.refuse(ctx, "no access token")
			return ctx, errUnauthenticated
		}
		principal, err := p.Users.Authenticate(ctx, token)
		if errors.Is(err, authn.ErrKeysUnavailable) {
			// Not the caller's fault: the Auth service's keys could not be
			// fetched at all. Retrying later can succeed.
			e.logger.WarnContext(ctx, "cannot verify access tokens", "err", err)
			return ctx, errKeysUnavailable
		}
		if err != nil {
			e.refuse(ctx, "access token rejected", "err", err)
			return ctx, errUnauthenticated
		}
		ctx = withPrincipal(ctx, principal)
		needs := rule.Permission != ""
		if haveMessage {
			needs = rule.NeedsPermission(principal.Subject, req)
		}
		if !needs {
			return ctx, nil
		}
		if p.Authorizer == nil {
			e.refuse(ctx, "no authorizer configured", "permission", rule.Permission)
			return ctx, errPermissionDenied
		}
		allowed, err := p.Authorizer.Check(ctx, principal.Subject, rule.Permission)
		if ctx.Err() != nil {
			if cerr, ok := ContextError(ctx, err); ok {
				return ctx, cerr // the caller left, or its deadline passed: Authz is not to blame
			}
		}
		if err != nil {
			e.logger.WarnContext(ctx, "permission check failed", "permission", rule.Permission, "err", err)
			return ctx, errAuthzUnavailable
		}
		if !allowed {
			e.refuse(ctx, "permission not held", "permission", rule.Permission)
			return ctx, errPermissionDenied
		}
		return ctx, nil
	}
	e.refuse(ctx, "no access rule", "rule", rule.String())
	return ctx, errNoRule
}

// refuse logs a refusal; the observer, outside the enforcer, has put the
// procedure in ctx's log attributes already.
func (e *enforcer) refuse(ctx context.Context, reason string, attrs ...any) {
	e.logger.InfoContext(ctx, "access refused", append([]any{"reason", reason}, attrs...)...)
}

func withPrincipal(ctx context.Context, p authn.Principal) context.Context {
	ctx = authn.NewContext(ctx, p)
	return logging.WithPrincipal(ctx, p.Kind.String(), p.Subject)
}

// bearer returns the token of an `Authorization: Bearer <token>` header.
func bearer(h http.Header) (string, bool) {
	scheme, token, ok := strings.Cut(h.Get("Authorization"), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	token = strings.TrimSpace(token)
	return token, token != ""
}

// CachedAuthorizer remembers an Authorizer's decisions for a short time, so
// a busy procedure does not ask the Authz service on every call. Denials
// are cached too; errors are not. The zero value is not usable: call
// [NewCachedAuthorizer].
type CachedAuthorizer struct {
	next Authorizer
	ttl  time.Duration
	max  int
	now  func() time.Time

	mu        sync.Mutex
	decisions map[decisionKey]decision
}

type decisionKey struct{ subject, permission string }

type decision struct {
	allowed bool
	expires time.Time
}

// NewCachedAuthorizer caches next's decisions for ttl (a grant or a
// revocation takes at most that long to reach this service), holding at
// most maxEntries; zero values mean 500ms and 10000.
func NewCachedAuthorizer(next Authorizer, ttl time.Duration, maxEntries int) *CachedAuthorizer {
	if ttl <= 0 {
		ttl = 500 * time.Millisecond
	}
	if maxEntries <= 0 {
		maxEntries = 10000
	}
	return &CachedAuthorizer{next: next, ttl: ttl, max: maxEntries, now: time.Now, decisions: map[decisionKey]decision{}}
}

// Check implements [Authorizer].
func (c *CachedAuthorizer) Check(ctx context.Context, subject, permission string) (bool, error) {
	key := decisionKey{subject, permission}
	now := c.now()
	c.mu.Lock()
	d, ok := c.decisions[key]
	c.mu.Unlock()
	if ok && now.Before(d.expires) {
		return d.allowed, nil
	}
	allowed, err := c.next.Check(ctx, subject, permission)
	if err != nil {
		return false, err
	}
	c.mu.Lock()
	if len(c.decisions) >= c.max {
		for k, d := range c.decisions { // drop what has expired, else everything
			if !now.Before(d.expires) {
				delete(c.decisions, k)
			}
		}
		if len(c.decisions) >= c.max {
			clear(c.decisions)
		}
	}
	c.decisions[key] = decision{allowed: allowed, expires: now.Add(c.ttl)}
	c.mu.Unlock()
	return allowed, nil
}
