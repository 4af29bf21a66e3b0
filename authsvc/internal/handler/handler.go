// Package handler serves the Auth service's contract: it translates
// portcullis.auth.v1 messages to calls of the auth domain and back, and
// serves the JWK Set as plain JSON at /.well-known/jwks.json.
package handler

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/timestamppb"

	"portcullis.dev/authsvc/internal/auth"
	"portcullis.dev/authsvc/internal/keys"
	"portcullis.dev/kernel/authn"
	"portcullis.dev/kernel/logging"
	"portcullis.dev/kernel/rpc"
	authv1 "portcullis.dev/proto/auth/v1"
	"portcullis.dev/proto/auth/v1/authv1connect"
)

// Handler implements authv1connect.AuthServiceHandler over the domain.
type Handler struct {
	svc    *auth.Service
	logger *slog.Logger
}

var _ authv1connect.AuthServiceHandler = (*Handler)(nil)

// New returns the handler of svc; a nil logger discards.
func New(svc *auth.Service, logger *slog.Logger) *Handler {
	return &Handler{svc: svc, logger: logging.OrDiscard(logger)}
}

// caller returns the user the access token names. The kernel's access
// policy has already required one for AUTHENTICATED procedures.
func caller(ctx context.Context) (authn.Principal, error) {
	p, ok := authn.FromContext(ctx)
	if !ok || p.Kind != authn.KindUser {
		return p, connect.NewError(connect.CodeUnauthenticated, errors.New("unauthenticated"))
	}
	return p, nil
}

// target is the user a self-service request names: empty means the caller.
// The kernel has already checked the permission when it is someone else.
func target(p authn.Principal, userID string) string {
	if userID == "" {
		return p.Subject
	}
	return userID
}

func pairFields(p *auth.TokenPair) (access, refresh, typ string, exp, rexp int64, sid string) {
	return p.AccessToken, p.RefreshToken, "Bearer", int64(p.ExpiresIn / time.Second), int64(p.RefreshExpiresIn / time.Second), p.SessionID
}

// clientIP is the address of the client that logs in: the one the gateway
// says ([rpc.ClientIP]), or, on a call that did not come through it, the
// peer's.
func clientIP(ctx context.Context, peer string) string {
	if ip := rpc.ClientIP(ctx); ip != "" {
		return ip
	}
	if host, _, err := net.SplitHostPort(peer); err == nil {
		return host
	}
	return peer
}

// Login implements authv1connect.AuthServiceHandler.
func (h *Handler) Login(ctx context.Context, req *connect.Request[authv1.LoginRequest]) (*connect.Response[authv1.LoginResponse], error) {
	m := req.Msg
	pair, err := h.svc.Login(ctx, auth.LoginInput{
		Email: m.GetEmail(), Password: m.GetPassword(), TOTPCode: strings.TrimSpace(m.GetTotpCode()),
		SourceIP: clientIP(ctx, req.Peer().Addr), UserAgent: req.Header().Get("User-Agent"),
	})
	if err != nil {
		return nil, h.toConnect(ctx, err)
	}
	res := &authv1.LoginResponse{}
	res.AccessToken, res.RefreshToken, res.TokenType, res.ExpiresIn, res.RefreshExpiresIn, res.SessionId = pairFields(pair)
	return connect.NewResponse(res), nil
}

// Refresh implements authv1connect.AuthServiceHandler.
func (h *Handler) Refresh(ctx context.Context, req *connect.Request[authv1.RefreshRequest]) (*connect.Response[authv1.RefreshResponse], error) {
	pair, err := h.svc.Refresh(ctx, req.Msg.GetRefreshToken())
	if err != nil {
		return nil, h.toConnect(ctx, err)
	}
	res := &authv1.RefreshResponse{}
	res.AccessToken, res.RefreshToken, res.TokenType, res.ExpiresIn, res.RefreshExpiresIn, res.SessionId = pairFields(pair)
	return connect.NewResponse(res), nil
}

// Logout implements authv1connect.AuthServiceHandler.
func (h *Handler) Logout(ctx context.Context, req *connect.Request[authv1.LogoutRequest]) (*connect.Response[authv1.LogoutResponse], error) {
	if err := h.svc.Logout(ctx, req.Msg.GetRefreshToken()); err != nil {
		return nil, h.toConnect(ctx, err)
	}
	return connect.NewResponse(&authv1.LogoutResponse{}), nil
}

// ListSessions implements authv1connect.AuthServiceHandler.
func (h *Handler) ListSessions(ctx context.Context, req *connect.Request[authv1.ListSessionsRequest]) (*connect.Response[authv1.ListSessionsResponse], error) {
	p, err := caller(ctx)
	if err != nil {
		return nil, err
	}
	sessions, next, err := h.svc.ListSessions(ctx, target(p, req.Msg.GetUserId()), int(req.Msg.GetPageSize()), req.Msg.GetPageToken())
	if err != nil {
		return nil, h.toConnect(ctx, err)
	}
	res := &authv1.ListSessionsResponse{NextPageToken: next}
	for _, s := range sessions {
		out := &authv1.Session{
			Id: s.ID, UserId: s.UserID, CreateTime: timestamppb.New(s.CreatedAt), ExpireTime: timestamppb.New(s.ExpiresAt),
			SourceIp: s.SourceIP, UserAgent: s.UserAgent, Current: s.ID == p.SessionID,
		}
		if s.LastRefreshAt != nil {
			out.LastRefreshTime = timestamppb.New(*s.LastRefreshAt)
		}
		res.Sessions = append(res.Sessions, out)
	}
	return connect.NewResponse(res), nil
}

// RevokeSession implements authv1connect.AuthServiceHandler.
func (h *Handler) RevokeSession(ctx context.Context, req *connect.Request[authv1.RevokeSessionRequest]) (*connect.Response[authv1.RevokeSessionResponse], error) {
	p, err := caller(ctx)
	if err != nil {
		return nil, err
	}
	if err := h.svc.RevokeSession(ctx, target(p, req.Msg.GetUserId()), req.Msg.GetSessionId()); err != nil {
		return nil, h.toConnect(ctx, err)
	}
	return connect.NewResponse(&authv1.RevokeSessionResponse{}), nil
}

// RevokeAllSessions implements authv1connect.AuthServiceHandler.
func (h *Handler) RevokeAllSessions(ctx context.Context, req *connect.Request[authv1.RevokeAllSessionsRequest]) (*connect.Response[authv1.RevokeAllSessionsResponse], error) {
	p, err := caller(ctx)
	if err != nil {
		return nil, err
	}
	user := target(p, req.Msg.GetUserId())
	keep := ""
	if req.Msg.GetKeepCurrent() && user == p.Subject {
		keep = p.SessionID
	}
	n, err := h.svc.RevokeAllSessions(ctx, user, keep)
	if err != nil {
		return nil, h.toConnect(ctx, err)
	}
	return connect.NewResponse(&authv1.RevokeAllSessionsResponse{RevokedCount: int32(n)}), nil
}

// EndUserSessions implements authv1connect.AuthServiceHandler. The
// kernel's access policy has already required a service token (the
// procedure is INTERNAL), so the caller is another Portcullis service.
func (h *Handler) EndUserSessions(ctx context.Context, req *connect.Request[authv1.EndUserSessionsRequest]) (*connect.Response[authv1.EndUserSessionsResponse], error) {
	m := req.Msg
	var age time.Duration
	if m.ChangeAge != nil {
		if err := m.GetChangeAge().CheckValid(); err != nil {
			return nil, connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("change_age: %w", err))
		}
		age = m.GetChangeAge().AsDuration()
	}
	n, err := h.svc.EndUserSessions(ctx, m.GetUserId(), m.GetReason(), m.GetExceptSessionId(), age)
	if err != nil {
		return nil, h.toConnect(ctx, err)
	}
	return connect.NewResponse(&authv1.EndUserSessionsResponse{Ended: int32(n)}), nil
}

// RotateSigningKey implements authv1connect.AuthServiceHandler.
func (h *Handler) RotateSigningKey(ctx context.Context, req *connect.Request[authv1.RotateSigningKeyRequest]) (*connect.Response[authv1.RotateSigningKeyResponse], error) {
	rotate := h.svc.Keyring().Rotate
	if req.Msg.GetRevokePrevious() {
		rotate = h.svc.Keyring().Revoke
	}
	k, err := rotate(ctx)
	if err != nil {
		return nil, h.toConnect(ctx, err)
	}
	return connect.NewResponse(&authv1.RotateSigningKeyResponse{Key: toProto(k.Public)}), nil
}

// EnrollTOTP implements authv1connect.AuthServiceHandler.
func (h *Handler) EnrollTOTP(ctx context.Context, req *connect.Request[authv1.EnrollTOTPRequest]) (*connect.Response[authv1.EnrollTOTPResponse], error) {
	p, err := caller(ctx)
	if err != nil {
		return nil, err
	}
	e, err := h.svc.EnrollTOTP(ctx, p.Subject, req.Msg.GetCurrentPassword())
	if err != nil {
		return nil, h.toConnect(ctx, err)
	}
	return connect.NewResponse(&authv1.EnrollTOTPResponse{Secret: e.Secret, OtpauthUri: e.URI}), nil
}

// ConfirmTOTP implements authv1connect.AuthServiceHandler.
func (h *Handler) ConfirmTOTP(ctx context.Context, req *connect.Request[authv1.ConfirmTOTPRequest]) (*connect.Response[authv1.ConfirmTOTPResponse], error) {
	p, err := caller(ctx)
	if err != nil {
		return nil, err
	}
	if err := h.svc.ConfirmTOTP(ctx, p.Subject, strings.TrimSpace(req.Msg.GetCode())); err != nil {
		return nil, h.toConnect(ctx, err)
	}
	return connect.NewResponse(&authv1.ConfirmTOTPResponse{}), nil
}

// DisableTOTP implements authv1connect.AuthServiceHandler.
func (h *Handler) DisableTOTP(ctx context.Context, req *connect.Request[authv1.DisableTOTPRequest]) (*connect.Response[authv1.DisableTOTPResponse], error) {
	p, err := caller(ctx)
	if err != nil {
		return nil, err
	}
	user := target(p, req.Msg.GetUserId())
	if err := h.svc.DisableTOTP(ctx, user, user == p.Subject, strings.TrimSpace(req.Msg.GetCode())); err != nil {
		return nil, h.toConnect(ctx, err)
	}
	return connect.NewResponse(&authv1.DisableTOTPResponse{}), nil
}

// GetJWKS implements authv1connect.AuthServiceHandler.
func (h *Handler) GetJWKS(ctx context.Context, _ *connect.Request[authv1.GetJWKSRequest]) (*connect.Response[authv1.GetJWKSResponse], error) {
	set, err := h.svc.Keyring().JWKS(ctx)
	if err != nil {
		return nil, h.toConnect(ctx, err)
	}
	res := &authv1.GetJWKSResponse{}
	for _, k := range set {
		res.Keys = append(res.Keys, toProto(k))
	}
	out := connect.NewResponse(res)
	out.Header().Set("Cache-Control", cacheControl)
	return out, nil
}

func toProto(k keys.JWK) *authv1.Jwk {
	return &authv1.Jwk{Kty: k.Kty, Kid: k.Kid, Use: k.Use, Alg: k.Alg, Crv: k.Crv, X: k.X, Y: k.Y}
}

// Interface check for the HTTP handler.
var _ http.Handler = (*JWKSHandler)(nil)
