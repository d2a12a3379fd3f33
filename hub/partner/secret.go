package partner

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"
)

// ErrSecretFile marks a token or HMAC secret file that cannot be used.
var ErrSecretFile = errors.New("secret file")

// minSecretLen keeps guessable secrets out: 16 bytes is 128 bits only if
// random, but it stops "changeme".
const minSecretLen = 16

const hashPrefix = "sha256:"

// readSecret reads a secret file: its content without surrounding white
// space (editors add a final newline).
func readSecret(path string) ([]byte, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("%w: %s does not exist; check the path", ErrSecretFile, path)
		}
		return nil, fmt.Errorf("%w: %s: %v; check the path and the permissions", ErrSecretFile, path, errors.Unwrap(err))
	}
	return bytes.TrimSpace(raw), nil
}

// readTokenFile returns the SHA-256 of a partner's bearer token. The file
// holds the token itself or "sha256:<64 hex digits>" of it.
func readTokenFile(path string) ([sha256.Size]byte, error) {
	var sum [sha256.Size]byte
	secret, err := readSecret(path)
	if err != nil {
		return sum, err
	}
	if h, ok := strings.CutPrefix(string(secret), hashPrefix); ok {
		b, err := hex.DecodeString(h)
		if err != nil || len(b) != sha256.Size {
			return sum, fmt.Errorf("%w: %s starts with %q but the rest is not 64 hex digits; want sha256:<hex of printf %%s \"$TOKEN\" | sha256sum>", ErrSecretFile, path, hashPrefix)
		}
		copy(sum[:], b)
		return sum, nil
	}
	if len(secret) < minSecretLen {
		return sum, fmt.Errorf("%w: %s holds a token of %d bytes; want at least %d random characters, e.g. from openssl rand -base64 32", ErrSecretFile, path, len(secret), minSecretLen)
	}
	if bytes.ContainsAny(secret, " \t\r\n") {
		return sum, fmt.Errorf("%w: %s holds more than one word; want the token alone on one line", ErrSecretFile, path)
	}
	return sha256.Sum256(secret), nil
}

// readHMACFile returns the HMAC secret of a partner.
func readHMACFile(path string) ([]byte, error) {
	secret, err := readSecret(path)
	if err != nil {
		return nil, err
	}
	if len(secret) < minSecretLen {
		return nil, fmt.Errorf("%w: %s holds a secret of %d bytes; want at least %d random characters, e.g. from openssl rand -base64 32", ErrSecretFile, path, len(secret), minSecretLen)
	}
	return secret, nil
}
