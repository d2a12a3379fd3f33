// Package auth guards the hub's HTTP API (/api/v1) with bearer tokens read
// from a tokens file. Each token has a subject (recorded in audit trails)
// and a role: viewer reads; approver also decides approvals and
// acknowledges alerts; admin also edits crosswalks and replays exceptions.
// A missing or unknown token is 401, a role too low is 403. /healthz and
// /metrics are not under /api/v1 and stay open.
//
// The file holds SHA-256 hashes of the tokens, never the tokens:
//
//	tokens:
//	  - subject: alice@plant.example
//	    role: admin
//	    sha256: 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08
//
// It is re-read when it changes, so tokens can be added or revoked without
// a restart.
package auth
