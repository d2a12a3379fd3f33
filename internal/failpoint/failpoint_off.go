//go:build !failpoints

package failpoint

// Inject does nothing in a build without the failpoints tag; being empty,
// it is inlined away.
func Inject(name string) {}

// Error returns nil in a build without the failpoints tag.
func Error(name string) error { return nil }

// Enabled reports whether this binary was built with -tags failpoints.
func Enabled() bool { return false }
