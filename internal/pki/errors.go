package pki

import "errors"

var (
	// ErrCAExists is returned by Init when the directory already holds a CA
	// and InitOptions.Force is not set: replacing a CA invalidates every
	// agent certificate it issued.
	ErrCAExists = errors.New("CA already exists")

	// ErrNoIdentity means a certificate lacks the agent or plant URI SAN, so
	// it was not issued by IssueAgent and must not be accepted as an agent.
	ErrNoIdentity = errors.New("certificate carries no plantsync agent identity")

	// ErrInvalidIdentity means an agent id or plant name is not 1-64
	// characters of A-Z a-z 0-9 . _ -, or a certificate names two identities.
	ErrInvalidIdentity = errors.New("invalid agent identity")

	// ErrBadPEM means a file or buffer does not hold the PEM data expected.
	ErrBadPEM = errors.New("unparsable PEM")

	// ErrBadCSR means a certificate signing request was malformed, its
	// signature did not verify or its key is unacceptable.
	ErrBadCSR = errors.New("bad certificate signing request")

	// ErrExpired means a certificate's NotAfter has passed. Its text is
	// short because it is worded into "certificate <path> expired on <date>".
	ErrExpired = errors.New("expired")

	// ErrNotYetValid means a certificate's NotBefore lies in the future,
	// usually because a clock is wrong.
	ErrNotYetValid = errors.New("not yet valid")

	// ErrKeyMismatch means a private key is not the one a certificate was
	// issued for.
	ErrKeyMismatch = errors.New("key does not match certificate")

	// ErrKeyPermissions means a private key file is readable or writable by
	// users other than its owner.
	ErrKeyPermissions = errors.New("private key file is accessible to other users")

	// ErrNotCA means the certificate in a CA file cannot sign certificates.
	ErrNotCA = errors.New("not a CA certificate")
)
