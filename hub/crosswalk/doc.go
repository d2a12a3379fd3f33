// Package crosswalk holds the master-data tables central governance owns:
// inbound tables map plant-local codes to canonical ones (plant, item, unit
// with a conversion factor, supplier, work center); outbound tables, one set
// per destination, map canonical codes to that system's own (item, unit,
// supplier, warehouse, plant).
//
// Data path: journal ─▶ pipeline: canonicalize (inbound tables) ─▶ validate
// ─▶ route ─▶ documents (outbound tables) ─▶ outbox.
//
// Tables are seeded from CSV files named in the hub config and edited over
// the HTTP API. Every change is a new version with who, when and what
// changed; rows may carry an effective_from date so a change can be
// scheduled ahead. The pipeline maps each event with the immutable snapshot
// (Set) in force when it processes it and records the versions it used.
// A table that does not exist passes codes through unchanged; a table that
// exists but lacks a code makes the event an exception, never a drop.
package crosswalk
