package authz

import (
	"context"
	"log/slog"
	"strconv"
	"strings"

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

// maxPermissionsMetadata bounds the "permissions" entry of an event's
// metadata. The Audit service refuses an event whose metadata keys and
// values add up to more than 8,192 bytes, and a refused event never reaches
// the log; a call may name 100 permissions of up to 200 bytes each. Half
// the limit leaves ample room for the role name and the other entries.
const maxPermissionsMetadata = 4096

// withPermissions adds perms to meta: "permissions" lists them, separated
// by spaces, and "permission_count" says how many there are. When the list
// would be longer than maxPermissionsMetadata it holds only the whole names
// that fit, and "permissions_truncated" is "true"; the role itself then
// shows the rest.
func withPermissions(meta map[string]string, perms []string) map[string]string {
	var (
		b         strings.Builder
		truncated bool
	)
	for _, p := range perms {
		n := len(p)
		if b.Len() > 0 {
			n++ // the separator
		}
		if b.Len()+n > maxPermissionsMetadata {
			truncated = true
			break
		}
		if b.Len() > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(p)
	}
	meta["permissions"] = b.String()
	meta["permission_count"] = strconv.Itoa(len(perms))
	if truncated {
		meta["permissions_truncated"] = "true"
	}
	return meta
}

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
	Record(ctx context.Context, tx Execer, events ...AuditEvent) error
}

// OutboxRecorder writes audit events to the service's outbox (kernel/outbox),
// whose relay delivers them to the Audit service. It is the recorder the
// service runs with.
type OutboxRecorder struct{}

// Record implements [AuditRecorder].
func (OutboxRecorder) Record(ctx context.Context, tx Execer, events ...AuditEvent) error {
	evs := make([]*auditv1.NewEvent, len(events))
	for i, e := range events {
		evs[i] = outbox.NewEvent(ctx, e.Action, e.Target, auditv1.Outcome_OUTCOME_SUCCESS, e.Metadata)
	}
	return outbox.Enqueue(ctx, tx, evs...)
}

// LogRecorder logs audit events instead of storing them, for tools and
// tests that have no Audit service. A nil Logger discards.
type LogRecorder struct {
	Logger *slog.Logger
}

// Record implements [AuditRecorder].
func (r LogRecorder) Record(ctx context.Context, _ Execer, events ...AuditEvent) error {
	for _, e := range events {
		logging.OrDiscard(r.Logger).InfoContext(ctx, "audit", "action", e.Action, "target", e.Target, "metadata", e.Metadata)
	}
	return nil
}
