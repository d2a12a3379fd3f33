//go:build !failpoints

package failpoint

import "testing"

// wantEnabled is what Enabled must report in the build under test.
const wantEnabled = false

func TestWithoutTagEnvironmentIsIgnored(t *testing.T) {
	t.Setenv(EnvVar, "test/off=error;test/kill=kill")
	if Enabled() {
		t.Fatal("Enabled() = true in a build without -tags failpoints")
	}
	if err := Error("test/off"); err != nil {
		t.Fatalf("Error = %v, want nil without the failpoints tag", err)
	}
	// Would SIGKILL the test binary if Inject did anything.
	Inject("test/kill")
}
