// Package api serves the Identity service's Connect API: it translates
// between protobuf and the identity domain and maps domain errors to
// Connect codes, in one place. Who may call what is decided before a
// handler runs, by the kernel, from the contract's access options.
package api

import (
	"context"
	"errors"
	"fmt"
	"net/http"

	"connectrpc.com/connect"
	"github.com/google/uuid"
	"google.golang.org/protobuf/types/known/timestamppb"

	"portcullis.dev/identitysvc/internal/identity"
	"portcullis.dev/kernel/authn"
	"portcullis.dev/kernel/rpc"
	"portcullis.dev/proto/access"
	identityv1 "portcullis.dev/proto/identity/v1"
	"portcullis.dev/proto/identity/v1/identityv1connect"
	optionsv1 "portcullis.dev/proto/options/v1"
)

// Handler implements identityv1connect.IdentityServiceHandler.
type Handler struct {
	svc *identity.Service
}

var _ identityv1connect.IdentityServiceHandler = (*Handler)(nil)

// NewServiceHandler returns the API over svc as a Connect handler and the
// path to mount it at, built with opts (the server's), and refusing every
// call of a user whose account is disabled or deleted (see
// [identity.Service.ConfirmActive]).
func NewServiceHandler(svc *identity.Service, opts ...connect.HandlerOption) (string, http.Handler) {
	h := &Handler{svc: svc}
	return identityv1connect.NewIdentityServiceHandler(h, append(opts[:len(opts):len(opts)], connect.WithInterceptors(activeCallers{h}))...)
}

// activeCallers refuses the calls of users who may no longer act. It runs
// after the kernel has verified the caller's token.
type activeCallers struct{ h *Handler }

func (a activeCallers) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		if err := a.h.confirmActiveCaller(ctx, req.Spec()); err != nil {
			return nil, err
		}
		return next(ctx, req)
	}
}

func (a activeCallers) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return next
}

func (a activeCallers) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return func(ctx context.Context, conn connect.StreamingHandlerConn) error {
		if err := a.h.confirmActiveCaller(ctx, conn.Spec()); err != nil {
			return err
		}
		return next(ctx, conn)
	}
}

// confirmActiveCaller refuses the call of a user who may no longer act.
// Public procedures need no token, so one sent along proves nothing and
// is not held against the caller: a client that keeps sending a stale one
// can still sign up again or reset a password.
func (h *Handler) confirmActiveCaller(ctx context.Context, spec connect.Spec) error {
	p, ok := authn.FromContext(ctx)
	if !ok || p.Kind != authn.KindUser || access.ForSpec(spec).Level == optionsv1.Access_ACCESS_PUBLIC {
		return nil
	}
	id, err := uuid.Parse(p.Subject)
	if err != nil {
		return connect.NewError(connect.CodeUnauthenticated, errors.New("the access token's subject is not a user ID"))
	}
	if err := h.svc.ConfirmActive(ctx, id); err != nil {
		return toConnect(ctx, err)
	}
	return nil
}

// CreateUser implements IdentityServiceHandler.
func (h *Handler) CreateUser(ctx context.Context, req *connect.Request[identityv1.CreateUserRequest]) (*connect.Response[identityv1.CreateUserResponse], error) {
	u, err := h.svc.CreateUser(ctx, req.Msg.GetEmail(), req.Msg.GetPassword(), req.Msg.GetDisplayName())
	if err != nil {
		return nil, toConnect(ctx, err)
	}
	return connect.NewResponse(&identityv1.CreateUserResponse{User: toProto(u)}), nil
}

// GetUser implements IdentityServiceHandler.
func (h *Handler) GetUser(ctx context.Context, req *connect.Request[identityv1.GetUserRequest]) (*connect.Response[identityv1.GetUserResponse], error) {
	id, err := subject(ctx, req.Msg.GetUserId())
	if err != nil {
		return nil, err
	}
	u, err := h.svc.GetUser(ctx, id)
	if err != nil {
		return nil, toConnect(ctx, err)
	}
	return connect.NewResponse(&identityv1.GetUserResponse{User: toProto(u)}), nil
}

// GetMe implements IdentityServiceHandler.
func (h *Handler) GetMe(ctx context.Context, _ *connect.Request[identityv1.GetMeRequest]) (*connect.Response[identityv1.GetMeResponse], error) {
	id, err := subject(ctx, "")
	if err != nil {
		return nil, err
	}
	u, err := h.svc.GetUser(ctx, id)
	if err != nil {
		return nil, toConnect(ctx, err)
	}
	return connect.NewResponse(&identityv1.GetMeResponse{User: toProto(u)}), nil
}

// UpdateUser implements IdentityServiceHandler.
func (h *Handler) UpdateUser(ctx context.Context, req *connect.Request[identityv1.UpdateUserRequest]) (*connect.Response[identityv1.UpdateUserResponse], error) {
	id, err := subject(ctx, req.Msg.GetUserId())
	if err != nil {
		return nil, err
	}
	if req.Msg.Email != nil {
		var err error
		if isCaller(ctx, id) {
			err = h.svc.ConfirmOwnEmailChange(ctx, id, req.Msg.GetEmail(), req.Msg.GetCurrentPassword())
		} else if caller, ok := otherUser(ctx, id); ok {
			err = h.svc.ConfirmEmailChangeBy(ctx, caller, id, req.Msg.GetEmail())
		}
		if err != nil {
			return nil, toConnect(ctx, err)
		}
	}
	u, err := h.svc.UpdateUser(ctx, id, req.Msg.DisplayName, req.Msg.Email)
	if err != nil {
		return nil, toConnect(ctx, err)
	}
	return connect.NewResponse(&identityv1.UpdateUserResponse{User: toProto(u)}), nil
}

// DeleteUser implements IdentityServiceHandler.
func (h *Handler) DeleteUser(ctx context.Context, req *connect.Request[identityv1.DeleteUserRequest]) (*connect.Response[identityv1.DeleteUserResponse], error) {
	id, err := parseID(req.Msg.GetUserId())
	if err != nil {
		return nil, err
	}
	if isCaller(ctx, id) {
		return nil, toConnect(ctx, identity.ErrSelf)
	}
	if err := h.confirmOutranks(ctx, id, "delete"); err != nil {
		return nil, err
	}
	if err := h.svc.DeleteUser(ctx, id); err != nil {
		return nil, toConnect(ctx, err)
	}
	return connect.NewResponse(&identityv1.DeleteUserResponse{}), nil
}

// ListUsers implements IdentityServiceHandler.
func (h *Handler) ListUsers(ctx context.Context, req *connect.Request[identityv1.ListUsersRequest]) (*connect.Response[identityv1.ListUsersResponse], error) {
	q := identity.ListQuery{
		PageSize:     int(req.Msg.GetPageSize()),
		PageToken:    req.Msg.GetPageToken(),
		Query:        req.Msg.GetQuery(),
		EmailPrefix:  req.Msg.GetEmailPrefix(),
		NameContains: req.Msg.GetNameContains(),
	}
	switch req.Msg.GetStatus() {
	case identityv1.UserStatus_USER_STATUS_ACTIVE:
		q.Status = identity.StatusActive
	case identityv1.UserStatus_USER_STATUS_DISABLED:
		q.Status = identity.StatusDisabled
	case identityv1.UserStatus_USER_STATUS_UNSPECIFIED:
	default:
		return nil, connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("status: %d is not a known status", req.Msg.GetStatus()))
	}
	users, next, err := h.svc.ListUsers(ctx, q)
	if err != nil {
		return nil, toConnect(ctx, err)
	}
	resp := &identityv1.ListUsersResponse{NextPageToken: next, Users: make([]*identityv1.User, len(users))}
	for i, u := range users {
		resp.Users[i] = toProto(u)
	}
	return connect.NewResponse(resp), nil
}

// ChangePassword implements IdentityServiceHandler. The session the
// caller's access token belongs to survives the change; the user's others
// are ended.
func (h *Handler) ChangePassword(ctx context.Context, req *connect.Request[identityv1.ChangePasswordRequest]) (*connect.Response[identityv1.ChangePasswordResponse], error) {
	id, err := subject(ctx, "")
	if err != nil {
		return nil, err
	}
	p, _ := authn.FromContext(ctx) // a user's, as subject has checked
	if err := h.svc.ChangePassword(ctx, id, req.Msg.GetCurrentPassword(), req.Msg.GetNewPassword(), p.SessionID); err != nil {
		return nil, toConnect(ctx, err)
	}
	return connect.NewResponse(&identityv1.ChangePasswordResponse{}), nil
}

// RequestEmailVerification implements IdentityServiceHandler.
func (h *Handler) RequestEmailVerification(ctx context.Context, _ *connect.Request[identityv1.RequestEmailVerificationRequest]) (*connect.Response[identityv1.RequestEmailVerificationResponse], error) {
	id, err := subject(ctx, "")
	if err != nil {
		return nil, err
	}
	if err := h.svc.RequestEmailVerification(ctx, id); err != nil {
		return nil, toConnect(ctx, err)
	}
	return connect.NewResponse(&identityv1.RequestEmailVerificationResponse{}), nil
}

// VerifyEmail implements IdentityServiceHandler.
func (h *Handler) VerifyEmail(ctx context.Context, req *connect.Request[identityv1.VerifyEmailRequest]) (*connect.Response[identityv1.VerifyEmailResponse], error) {
	if err := h.svc.VerifyEmail(ctx, req.Msg.GetToken()); err != nil {
		return nil, toConnect(ctx, err)
	}
	return connect.NewResponse(&identityv1.VerifyEmailResponse{}), nil
}

// RequestPasswordReset implements IdentityServiceHandler.
func (h *Handler) RequestPasswordReset(ctx context.Context, req *connect.Request[identityv1.RequestPasswordResetRequest]) (*connect.Response[identityv1.RequestPasswordResetResponse], error) {
	if err := h.svc.RequestPasswordReset(ctx, req.Msg.GetEmail()); err != nil {
		return nil, toConnect(ctx, err)
	}
	return connect.NewResponse(&identityv1.RequestPasswordResetResponse{}), nil
}

// ResetPassword implements IdentityServiceHandler.
func (h *Handler) ResetPassword(ctx context.Context, req *connect.Request[identityv1.ResetPasswordRequest]) (*connect.Response[identityv1.ResetPasswordResponse], error) {
	if err := h.svc.ResetPassword(ctx, req.Msg.GetToken(), req.Msg.GetNewPassword()); err != nil {
		return nil, toConnect(ctx, err)
	}
	return connect.NewResponse(&identityv1.ResetPasswordResponse{}), nil
}

// DisableUser implements IdentityServiceHandler.
func (h *Handler) DisableUser(ctx context.Context, req *connect.Request[identityv1.DisableUserRequest]) (*connect.Response[identityv1.DisableUserResponse], error) {
	u, err := h.setStatus(ctx, req.Msg.GetUserId(), identity.StatusDisabled, req.Msg.GetReason())
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&identityv1.DisableUserResponse{User: toProto(u)}), nil
}

// EnableUser implements IdentityServiceHandler.
func (h *Handler) EnableUser(ctx context.Context, req *connect.Request[identityv1.EnableUserRequest]) (*connect.Response[identityv1.EnableUserResponse], error) {
	u, err := h.setStatus(ctx, req.Msg.GetUserId(), identity.StatusActive, req.Msg.GetReason())
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&identityv1.EnableUserResponse{User: toProto(u)}), nil
}

func (h *Handler) setStatus(ctx context.Context, rawID string, status identity.Status, reason string) (identity.User, error) {
	id, err := parseID(rawID)
	if err != nil {
		return identity.User{}, err
	}
	action := "disable"
	if status == identity.StatusActive {
		action = "enable"
	} else if isCaller(ctx, id) {
		return identity.User{}, toConnect(ctx, identity.ErrSelf)
	}
	if err := h.confirmOutranks(ctx, id, action); err != nil {
		return identity.User{}, err
	}
	u, err := h.svc.SetStatus(ctx, id, status, reason)
	if err != nil {
		return identity.User{}, toConnect(ctx, err)
	}
	return u, nil
}

// confirmOutranks checks, when the caller is a user acting on someone
// else's account, that the caller holds every permission id holds (see
// [identity.Service.ConfirmOutranks]).
func (h *Handler) confirmOutranks(ctx context.Context, id uuid.UUID, action string) error {
	caller, ok := otherUser(ctx, id)
	if !ok {
		return nil
	}
	if err := h.svc.ConfirmOutranks(ctx, caller, id, action); err != nil {
		return toConnect(ctx, err)
	}
	return nil
}

// otherUser returns the calling user's ID when the caller is a user other
// than id; services and the user themselves are not asked to outrank.
func otherUser(ctx context.Context, id uuid.UUID) (string, bool) {
	p, ok := authn.FromContext(ctx)
	if !ok || p.Kind != authn.KindUser || p.Subject == id.String() {
		return "", false
	}
	return p.Subject, true
}

// VerifyCredentials implements IdentityServiceHandler.
func (h *Handler) VerifyCredentials(ctx context.Context, req *connect.Request[identityv1.VerifyCredentialsRequest]) (*connect.Response[identityv1.VerifyCredentialsResponse], error) {
	u, err := h.svc.VerifyCredentials(ctx, req.Msg.GetEmail(), req.Msg.GetPassword())
	if err != nil {
		return nil, toConnect(ctx, err)
	}
	return connect.NewResponse(&identityv1.VerifyCredentialsResponse{
		UserId:        u.ID.String(),
		Status:        toProtoStatus(u.Status),
		EmailVerified: u.EmailVerifiedAt != nil,
	}), nil
}

// VerifyPassword implements [identityv1connect.IdentityServiceHandler].
func (h *Handler) VerifyPassword(ctx context.Context, req *connect.Request[identityv1.VerifyPasswordRequest]) (*connect.Response[identityv1.VerifyPasswordResponse], error) {
	id, err := parseID(req.Msg.GetUserId())
	if err != nil {
		return nil, err
	}
	u, err := h.svc.VerifyPassword(ctx, id, req.Msg.GetPassword())
	if err != nil {
		return nil, toConnect(ctx, err)
	}
	return connect.NewResponse(&identityv1.VerifyPasswordResponse{Email: u.Email}), nil
}

// subject is the user a self-service call acts on: rawID, or the caller
// when rawID is empty — never "everyone".
func subject(ctx context.Context, rawID string) (uuid.UUID, error) {
	if rawID != "" {
		return parseID(rawID)
	}
	p, ok := authn.FromContext(ctx)
	if !ok || p.Kind != authn.KindUser {
		return uuid.UUID{}, connect.NewError(connect.CodeUnauthenticated, errors.New("a user's access token is required"))
	}
	return parseID(p.Subject)
}

// isCaller reports whether id is the calling user's own.
func isCaller(ctx context.Context, id uuid.UUID) bool {
	p, ok := authn.FromContext(ctx)
	return ok && p.Kind == authn.KindUser && p.Subject == id.String()
}

// parseID reads a user ID, in the one spelling IDs have everywhere: the
// canonical form, as tokens carry it in sub and the other services store
// it. Another spelling of one's own ID would not be recognised as the
// caller's by the access policy, which compares the text.
func parseID(raw string) (uuid.UUID, error) {
	id, err := uuid.Parse(raw)
	if err != nil || id.String() != raw {
		return uuid.UUID{}, connect.NewError(connect.CodeInvalidArgument, errors.New("user_id must be a UUID in canonical form (lower case, with hyphens)"))
	}
	return id, nil
}

// toConnect maps domain errors to Connect codes; anything unexpected is
// Internal with a fixed message (the kernel logs the call's error).
func toConnect(ctx context.Context, err error) error {
	var invalid *identity.ValidationError
	switch {
	case errors.As(err, &invalid):
		return connect.NewError(connect.CodeInvalidArgument, invalid)
	case errors.Is(err, identity.ErrNotFound):
		return connect.NewError(connect.CodeNotFound, identity.ErrNotFound)
	case errors.Is(err, identity.ErrEmailTaken):
		return connect.NewError(connect.CodeAlreadyExists, identity.ErrEmailTaken)
	case errors.Is(err, identity.ErrInvalidCredentials):
		return connect.NewError(connect.CodeUnauthenticated, identity.ErrInvalidCredentials)
	case errors.Is(err, identity.ErrWrongPassword):
		return connect.NewError(connect.CodePermissionDenied, identity.ErrWrongPassword)
	case errors.Is(err, identity.ErrTooSoon):
		return connect.NewError(connect.CodeResourceExhausted, identity.ErrTooSoon)
	case errors.Is(err, identity.ErrLocked):
		return connect.NewError(connect.CodeResourceExhausted, identity.ErrLocked)
	case errors.Is(err, identity.ErrInvalidToken):
		return connect.NewError(connect.CodeInvalidArgument, identity.ErrInvalidToken)
	case errors.Is(err, identity.ErrAlreadyVerified):
		return connect.NewError(connect.CodeFailedPrecondition, identity.ErrAlreadyVerified)
	case errors.Is(err, identity.ErrSelf):
		return connect.NewError(connect.CodePermissionDenied, identity.ErrSelf)
	case errors.Is(err, identity.ErrCallerDisabled):
		return connect.NewError(connect.CodePermissionDenied, identity.ErrCallerDisabled)
	case errors.Is(err, identity.ErrCallerGone):
		return connect.NewError(connect.CodeUnauthenticated, identity.ErrCallerGone)
	case errors.Is(err, identity.ErrOutranked):
		return connect.NewError(connect.CodePermissionDenied, identity.ErrOutranked)
	case errors.Is(err, identity.ErrAuthorityUnavailable):
		return connect.NewError(connect.CodeUnavailable, identity.ErrAuthorityUnavailable)
	case errors.Is(err, identity.ErrBusy):
		// Unavailable, not ResourceExhausted: it is transient and safe to
		// retry, and an Auth service that predates the current contract
		// reads ResourceExhausted from VerifyCredentials as a locked
		// account.
		return connect.NewError(connect.CodeUnavailable, identity.ErrBusy)
	}
	if cerr, ok := rpc.TransientError(ctx, err); ok {
		return cerr
	}
	return rpc.Internal(err)
}

func toProto(u identity.User) *identityv1.User {
	p := &identityv1.User{
		Id:          u.ID.String(),
		Email:       u.Email,
		DisplayName: u.DisplayName,
		Status:      toProtoStatus(u.Status),
		CreateTime:  timestamppb.New(u.CreatedAt),
		UpdateTime:  timestamppb.New(u.UpdatedAt),
	}
	if u.EmailVerifiedAt != nil {
		p.EmailVerifiedTime = timestamppb.New(*u.EmailVerifiedAt)
	}
	return p
}

func toProtoStatus(s identity.Status) identityv1.UserStatus {
	if s == identity.StatusDisabled {
		return identityv1.UserStatus_USER_STATUS_DISABLED
	}
	return identityv1.UserStatus_USER_STATUS_ACTIVE
}
