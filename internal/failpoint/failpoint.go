package failpoint

import "errors"

// EnvVar is the environment variable a failpoints build reads its
// configuration from, e.g. "hub/delivery/after-deliver=kill@3".
const EnvVar = "PLANTSYNC_FAILPOINTS"

// ErrInjected is returned by Error when the named failpoint's action is
// "error". Callers treat it like any other failure of the step it stands in
// for; tests check for it with errors.Is.
var ErrInjected = errors.New("failpoint: injected error")
