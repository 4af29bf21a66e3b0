package handler

import (
	"context"
	"errors"
	"log/slog"

	"connectrpc.com/connect"

	"portcullis.dev/authsvc/internal/auth"
	"portcullis.dev/kernel/rpc"
	authv1 "portcullis.dev/proto/auth/v1"
)

// errorTable maps each domain error to its Connect code and the fixed
// message the caller sees. Every credential failure says the same thing.
var errorTable = []struct {
	err  error
	code connect.Code
	msg  string
}{
	{auth.ErrInvalidCredentials, connect.CodeUnauthenticated, "invalid credentials"},
	{auth.ErrTOTPRequired, connect.CodeUnauthenticated, "invalid credentials"},
	{auth.ErrEmailNotVerified, connect.CodeFailedPrecondition, "email not verified"},
	{auth.ErrInvalidRefreshToken, connect.CodeUnauthenticated, "invalid refresh token"},
	{auth.ErrSessionNotFound, connect.CodeNotFound, "session not found"},
	{auth.ErrTOTPAlreadyEnabled, connect.CodeFailedPrecondition, "TOTP is already enabled"},
	{auth.ErrTOTPNotPending, connect.CodeFailedPrecondition, "no TOTP enrollment is pending"},
	{auth.ErrInvalidTOTPCode, connect.CodeInvalidArgument, "invalid TOTP code"},
	{auth.ErrWrongPassword, connect.CodePermissionDenied, "wrong password"},
	{auth.ErrAccountLocked, connect.CodeResourceExhausted, "account temporarily locked"},
	{auth.ErrIdentityUnavailable, connect.CodeUnavailable, "the identity service is unavailable; try again"},
}

// toConnect turns a domain error into the error the caller sees, logging
// the ones that are the service's fault. Internal detail never leaves.
func (h *Handler) toConnect(ctx context.Context, err error) error {
	var inv *auth.InvalidArgumentError
	if errors.As(err, &inv) {
		return connect.NewError(connect.CodeInvalidArgument, errors.New(inv.Error()))
	}
	// First: a call that ended (the caller left, or its deadline passed)
	// while a dependency worked for it failed for that, not for the
	// dependency.
	if cerr, ok := rpc.TransientError(ctx, err); ok {
		return cerr
	}
	for _, e := range errorTable {
		if errors.Is(err, e.err) {
			cerr := connect.NewError(e.code, errors.New(e.msg))
			if e.err == auth.ErrTOTPRequired {
				// Sent only after the password was verified (see the
				// contract), so it tells nothing to a password guesser.
				if d, derr := connect.NewErrorDetail(&authv1.TotpRequired{}); derr == nil {
					cerr.AddDetail(d)
				}
			}
			if e.code == connect.CodeUnavailable {
				h.logger.LogAttrs(ctx, slog.LevelWarn, "dependency unavailable", slog.String("error", err.Error()))
			}
			return cerr
		}
	}
	return rpc.Internal(err)
}
