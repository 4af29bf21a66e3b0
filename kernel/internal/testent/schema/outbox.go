package schema

import "portcullis.dev/kernel/outbox"

// OutboxEvent is an audit event waiting for delivery (kernel/outbox).
type OutboxEvent struct{ outbox.Schema }
