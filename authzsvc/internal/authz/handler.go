package authz

import (
	"context"
	"errors"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/timestamppb"

	"portcullis.dev/kernel/authn"
	"portcullis.dev/kernel/rpc"
	authzv1 "portcullis.dev/proto/authz/v1"
	"portcullis.dev/proto/authz/v1/authzv1connect"
)

// Handler serves portcullis.authz.v1.AuthzService over a [Service]: it
// translates messages and errors and nothing else. Who may call what is
// the kernel's access policy, read from the contract.
type Handler struct {
	svc *Service
}

var _ authzv1connect.AuthzServiceHandler = (*Handler)(nil)

// NewHandler returns the handler over svc.
func NewHandler(svc *Service) *Handler {
	return &Handler{svc: svc}
}

// codes maps each domain error kind to its Connect code: the one place
// they meet.
var codes = map[Kind]connect.Code{
	KindInvalid:            connect.CodeInvalidArgument,
	KindNotFound:           connect.CodeNotFound,
	KindAlreadyExists:      connect.CodeAlreadyExists,
	KindFailedPrecondition: connect.CodeFailedPrecondition,
	KindPermissionDenied:   connect.CodePermissionDenied,
}

// toConnect turns a domain error into a Connect error with its message;
// any other error becomes a bare Internal (or the context's own code), so
// no internal detail reaches the caller, and the server's observer logs
// its cause. Not Unavailable, which tells clients to retry what would fail
// the same way again: a database out of reach is the one transient fault,
// and rpc.TransientError answers it so.
func toConnect(ctx context.Context, err error) error {
	var de *Error
	if errors.As(err, &de) {
		if code, ok := codes[de.Kind]; ok {
			return connect.NewError(code, errors.New(de.Msg))
		}
	}
	if cerr, ok := rpc.TransientError(ctx, err); ok {
		return cerr
	}
	return rpc.Internal(err)
}

// CreateRole implements [authzv1connect.AuthzServiceHandler].
func (h *Handler) CreateRole(ctx context.Context, req *connect.Request[authzv1.CreateRoleRequest]) (*connect.Response[authzv1.CreateRoleResponse], error) {
	m := req.Msg
	r, err := h.svc.CreateRole(ctx, NewRole{Name: m.GetName(), Description: m.GetDescription(), Permissions: m.GetPermissions()})
	if err != nil {
		return nil, toConnect(ctx, err)
	}
	return connect.NewResponse(&authzv1.CreateRoleResponse{Role: roleProto(r)}), nil
}

// GetRole implements [authzv1connect.AuthzServiceHandler].
func (h *Handler) GetRole(ctx context.Context, req *connect.Request[authzv1.GetRoleRequest]) (*connect.Response[authzv1.GetRoleResponse], error) {
	r, err := h.svc.GetRole(ctx, req.Msg.GetRoleId())
	if err != nil {
		return nil, toConnect(ctx, err)
	}
	return connect.NewResponse(&authzv1.GetRoleResponse{Role: roleProto(r)}), nil
}

// ListRoles implements [authzv1connect.AuthzServiceHandler].
func (h *Handler) ListRoles(ctx context.Context, req *connect.Request[authzv1.ListRolesRequest]) (*connect.Response[authzv1.ListRolesResponse], error) {
	roles, next, err := h.svc.ListRoles(ctx, Page{Size: int(req.Msg.GetPageSize()), Token: req.Msg.GetPageToken()})
	if err != nil {
		return nil, toConnect(ctx, err)
	}
	out := &authzv1.ListRolesResponse{NextPageToken: next, Roles: make([]*authzv1.Role, 0, len(roles))}
	for _, r := range roles {
		out.Roles = append(out.Roles, roleProto(r))
	}
	return connect.NewResponse(out), nil
}

// UpdateRole implements [authzv1connect.AuthzServiceHandler].
func (h *Handler) UpdateRole(ctx context.Context, req *connect.Request[authzv1.UpdateRoleRequest]) (*connect.Response[authzv1.UpdateRoleResponse], error) {
	r, err := h.svc.UpdateRole(ctx, req.Msg.GetRoleId(), RoleChange{Name: req.Msg.Name, Description: req.Msg.Description})
	if err != nil {
		return nil, toConnect(ctx, err)
	}
	return connect.NewResponse(&authzv1.UpdateRoleResponse{Role: roleProto(r)}), nil
}

// DeleteRole implements [authzv1connect.AuthzServiceHandler].
func (h *Handler) DeleteRole(ctx context.Context, req *connect.Request[authzv1.DeleteRoleRequest]) (*connect.Response[authzv1.DeleteRoleResponse], error) {
	n, err := h.svc.DeleteRole(ctx, req.Msg.GetRoleId(), req.Msg.GetCascade())
	if err != nil {
		return nil, toConnect(ctx, err)
	}
	return connect.NewResponse(&authzv1.DeleteRoleResponse{RemovedBindingCount: int32(n)}), nil
}

// GrantPermissions implements [authzv1connect.AuthzServiceHandler].
func (h *Handler) GrantPermissions(ctx context.Context, req *connect.Request[authzv1.GrantPermissionsRequest]) (*connect.Response[authzv1.GrantPermissionsResponse], error) {
	r, err := h.svc.GrantPermissions(ctx, req.Msg.GetRoleId(), req.Msg.GetPermissions())
	if err != nil {
		return nil, toConnect(ctx, err)
	}
	return connect.NewResponse(&authzv1.GrantPermissionsResponse{Role: roleProto(r)}), nil
}

// RevokePermissions implements [authzv1connect.AuthzServiceHandler].
func (h *Handler) RevokePermissions(ctx context.Context, req *connect.Request[authzv1.RevokePermissionsRequest]) (*connect.Response[authzv1.RevokePermissionsResponse], error) {
	r, err := h.svc.RevokePermissions(ctx, req.Msg.GetRoleId(), req.Msg.GetPermissions())
	if err != nil {
		return nil, toConnect(ctx, err)
	}
	return connect.NewResponse(&authzv1.RevokePermissionsResponse{Role: roleProto(r)}), nil
}

// AssignRole implements [authzv1connect.AuthzServiceHandler].
func (h *Handler) AssignRole(ctx context.Context, req *connect.Request[authzv1.AssignRoleRequest]) (*connect.Response[authzv1.AssignRoleResponse], error) {
	b, err := h.svc.AssignRole(ctx, req.Msg.GetUserId(), req.Msg.GetRoleId(), req.Msg.GetResource())
	if err != nil {
		return nil, toConnect(ctx, err)
	}
	return connect.NewResponse(&authzv1.AssignRoleResponse{Binding: bindingProto(b)}), nil
}

// UnassignRole implements [authzv1connect.AuthzServiceHandler].
func (h *Handler) UnassignRole(ctx context.Context, req *connect.Request[authzv1.UnassignRoleRequest]) (*connect.Response[authzv1.UnassignRoleResponse], error) {
	if err := h.svc.UnassignRole(ctx, req.Msg.GetUserId(), req.Msg.GetRoleId(), req.Msg.GetResource()); err != nil {
		return nil, toConnect(ctx, err)
	}
	return connect.NewResponse(&authzv1.UnassignRoleResponse{}), nil
}

// ListUserRoles implements [authzv1connect.AuthzServiceHandler].
func (h *Handler) ListUserRoles(ctx context.Context, req *connect.Request[authzv1.ListUserRolesRequest]) (*connect.Response[authzv1.ListUserRolesResponse], error) {
	bs, next, err := h.svc.ListUserRoles(ctx, subjectOrCaller(ctx, req.Msg.GetUserId()),
		Page{Size: int(req.Msg.GetPageSize()), Token: req.Msg.GetPageToken()})
	if err != nil {
		return nil, toConnect(ctx, err)
	}
	out := &authzv1.ListUserRolesResponse{NextPageToken: next, Bindings: make([]*authzv1.RoleBinding, 0, len(bs))}
	for _, b := range bs {
		out.Bindings = append(out.Bindings, bindingProto(b))
	}
	return connect.NewResponse(out), nil
}

// ListUserPermissions implements [authzv1connect.AuthzServiceHandler].
func (h *Handler) ListUserPermissions(ctx context.Context, req *connect.Request[authzv1.ListUserPermissionsRequest]) (*connect.Response[authzv1.ListUserPermissionsResponse], error) {
	perms, err := h.svc.ListUserPermissions(ctx, subjectOrCaller(ctx, req.Msg.GetUserId()), req.Msg.GetResource())
	if err != nil {
		return nil, toConnect(ctx, err)
	}
	return connect.NewResponse(&authzv1.ListUserPermissionsResponse{Permissions: perms}), nil
}

// Check implements [authzv1connect.AuthzServiceHandler].
func (h *Handler) Check(ctx context.Context, req *connect.Request[authzv1.CheckRequest]) (*connect.Response[authzv1.CheckResponse], error) {
	m := req.Msg
	ok, err := h.svc.Check(ctx, Question{Subject: m.GetSubject(), Permission: m.GetPermission(), Resource: m.GetResource()})
	if err != nil {
		return nil, toConnect(ctx, err)
	}
	return connect.NewResponse(&authzv1.CheckResponse{Allowed: ok}), nil
}

// Covers implements [authzv1connect.AuthzServiceHandler].
func (h *Handler) Covers(ctx context.Context, req *connect.Request[authzv1.CoversRequest]) (*connect.Response[authzv1.CoversResponse], error) {
	ok, err := h.svc.Covers(ctx, req.Msg.GetSubject(), req.Msg.GetTarget())
	if err != nil {
		return nil, toConnect(ctx, err)
	}
	return connect.NewResponse(&authzv1.CoversResponse{Covers: ok}), nil
}

// CheckBatch implements [authzv1connect.AuthzServiceHandler].
func (h *Handler) CheckBatch(ctx context.Context, req *connect.Request[authzv1.CheckBatchRequest]) (*connect.Response[authzv1.CheckBatchResponse], error) {
	qs := make([]Question, len(req.Msg.GetChecks()))
	for i, c := range req.Msg.GetChecks() {
		qs[i] = Question{Subject: c.GetSubject(), Permission: c.GetPermission(), Resource: c.GetResource()}
	}
	answers, err := h.svc.CheckBatch(ctx, qs)
	if err != nil {
		return nil, toConnect(ctx, err)
	}
	out := &authzv1.CheckBatchResponse{Results: make([]*authzv1.CheckResult, len(answers))}
	for i, a := range answers {
		out.Results[i] = &authzv1.CheckResult{Allowed: a}
	}
	return connect.NewResponse(out), nil
}

// subjectOrCaller is the contract's "empty user_id means the caller". The
// kernel has already let a self-service call through without a permission
// only because the request names the caller, or nobody.
func subjectOrCaller(ctx context.Context, userID string) string {
	if userID != "" {
		return userID
	}
	if p, ok := authn.FromContext(ctx); ok && p.Kind == authn.KindUser {
		return p.Subject
	}
	return "" // refused as invalid by the domain
}

func roleProto(r Role) *authzv1.Role {
	return &authzv1.Role{
		Id:          r.ID.String(),
		Name:        r.Name,
		Description: r.Description,
		BuiltIn:     r.BuiltIn,
		Permissions: r.Permissions,
		CreateTime:  timestamppb.New(r.CreatedAt),
		UpdateTime:  timestamppb.New(r.UpdatedAt),
	}
}

func bindingProto(b Binding) *authzv1.RoleBinding {
	return &authzv1.RoleBinding{
		UserId:     b.UserID,
		RoleId:     b.RoleID.String(),
		RoleName:   b.RoleName,
		Resource:   b.Resource,
		CreateTime: timestamppb.New(b.CreatedAt),
	}
}
