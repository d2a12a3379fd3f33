// Package buildinfo holds the version, commit and build date that the
// Makefile stamps into every binary with -ldflags -X.
package buildinfo

import "fmt"

// Set at build time; the defaults mark an unstamped `go build`.
var (
	Version = "dev"
	Commit  = "unknown"
	Date    = "unknown"
)

// String is the one-line form printed by the `version` subcommands.
func String(program string) string {
	return fmt.Sprintf("%s %s (commit %s, built %s)", program, Version, Commit, Date)
}
