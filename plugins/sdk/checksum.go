package sdk

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"regexp"
	"strings"
)

var sha256Hex = regexp.MustCompile(`^[0-9a-f]{64}$`)

// FileSHA256 returns the hex SHA-256 of the file at path.
func FileSHA256(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", fmt.Errorf("plugin binary: %w", err)
	}
	defer func() { _ = f.Close() }()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", fmt.Errorf("plugin binary %s: %w", path, err)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// ParseSHA256 checks a configured checksum (64 hex digits; upper case is
// accepted) and returns it in lower case.
func ParseSHA256(s string) (string, error) {
	s = strings.ToLower(strings.TrimSpace(s))
	if !sha256Hex.MatchString(s) {
		return "", fmt.Errorf("%w: sha256 %q is not 64 hex digits; write `sha256sum PLUGIN` into the config", ErrConfig, s)
	}
	return s, nil
}

// VerifyChecksum checks the binary at path against the pinned hex SHA-256.
// A mismatch is ErrChecksumMismatch, naming both sums.
func VerifyChecksum(path, want string) error {
	want, err := ParseSHA256(want)
	if err != nil {
		return err
	}
	got, err := FileSHA256(path)
	if err != nil {
		return err
	}
	if got != want {
		return fmt.Errorf("%w: %s: expected sha256 %s, actual %s; if the binary was replaced on purpose, put the new sum into the config",
			ErrChecksumMismatch, path, want, got)
	}
	return nil
}
