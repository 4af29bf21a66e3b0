package authz

import (
	"context"
	"log/slog"

	"portcullis.dev/kernel/logging"
	"portcullis.dev/kernel/outbox"
	auditv1 "portcullis.dev/proto/audit/v1"
)

// Audit actions of the Authz service.
const (
	ActionRoleCreated        = "authz.role.created"
	ActionRoleUpdated        = "authz.role.updated"
	ActionRoleDeleted        = "authz.role.deleted"
	ActionPermissionsGranted = "authz.permission.granted"
	ActionPermissionsRevoked = "authz.permission.revoked"
	ActionRoleAssigned       = "authz.role.assigned"
	ActionRoleUnassigned     = "authz.role.unassigned"
)

// Execer runs a statement in the transaction of the change being audited.
type Execer = outbox.Execer

// AuditEvent is one change to roles, grants or bindings. The actor and the
// request ID come from the context the event is recorded with.
type AuditEvent struct {
	// Action is one of the Action constants.
	Action string
	// Target is what changed: `role:<id>` or `user:<id>`.
	Target string
	// Metadata adds detail (role name, permissions, resource); never
	// secrets.
	Metadata map[string]string
}

// AuditRecorder records audit events in the transaction of the change they
// describe, so that either both commit or neither does.
type AuditRecorder interface {
	Record(ctx context.Context, tx Execer, e AuditEvent) error
}

// OutboxRecorder writes audit events to the service's outbox (kernel/outbox),
// whose relay delivers them to the Audit service. It is the recorder the
// service runs with.
type OutboxRecorder struct{}

// Record implements [AuditRecorder].
func (OutboxRecorder) Record(ctx context.Context, tx Execer, e AuditEvent) error {
	return outbox.Enqueue(ctx, tx, outbox.NewEvent(ctx, e.Action, e.Target, auditv1.Outcome_OUTCOME_SUCCESS, e.Metadata))
}

// LogRecorder logs audit events instead of storing them, for tools and
// tests that have no Audit service. A nil Logger discards.
type LogRecorder struct {
	Logger *slog.Logger
}

// Record implements [AuditRecorder].
func (r LogRecorder) Record(ctx context.Context, _ Execer, e AuditEvent) error {
	logging.OrDiscard(r.Logger).InfoContext(ctx, "audit", "action", e.Action, "target", e.Target, "metadata", e.Metadata)
	return nil
}
