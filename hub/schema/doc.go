// Package schema holds the canonical model's per-type schemas: for every
// event type the payload it carries, its required fields, value rules, the
// master-data codes the hub translates through crosswalks, and a version.
// The pipeline validates every journaled event against them, partner
// ingestion validates against the same Registry, and the HTTP API serves
// them at GET /api/v1/schemas.
//
// Data path: journal ─▶ pipeline (schema.Validate) ─▶ crosswalks ─▶ rules.
//
// Evolving a schema: a field added in version N carries Since: N and is
// required only of events that declare schema_version >= N, so older agents
// keep working; the golden fixtures under testdata/v1 pin that every v1
// event still validates.
package schema
