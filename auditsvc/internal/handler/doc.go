// Package handler serves portcullis.audit.v1.AuditService over Connect: it
// turns protobuf messages into the audit package's domain values and back,
// and maps domain errors to Connect codes in one place ([connectError]).
// Access (who may call what) is enforced by the kernel's RPC server from the
// contract's options, not here.
//
// It also reads exports back: [VerifyExport] checks the chain of a stream of
// protojson Event (or ExportEventsResponse) objects, as ExportEvents
// produced them, without a database.
package handler
