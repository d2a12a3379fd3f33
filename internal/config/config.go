// Package config loads the YAML configs of agent and hub the same way:
// strict decoding (an unknown key is an error naming the line), every
// problem collected and reported together with its field path and the fix,
// and secrets read from files or the environment, never from the YAML.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strings"

	"gopkg.in/yaml.v3"
)

// ErrInvalid wraps every validation failure.
var ErrInvalid = errors.New("invalid config")

// Load reads path into out (which holds defaults already) strictly.
func Load(path string, out any) error {
	raw, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("read config: %w", err)
	}
	return Decode(path, raw, out)
}

// Decode decodes raw YAML strictly; name labels errors (usually the path).
func Decode(name string, raw []byte, out any) error {
	dec := yaml.NewDecoder(bytes.NewReader(raw))
	dec.KnownFields(true)
	if err := dec.Decode(out); err != nil {
		if errors.Is(err, errTypeEOF()) {
			return nil // empty file: defaults
		}
		return fmt.Errorf("%w: %s: %s", ErrInvalid, name, yamlMessage(err))
	}
	return nil
}

func errTypeEOF() error { return ioEOF }

// yamlMessage turns yaml.v3's messages into ones an operator can act on.
func yamlMessage(err error) string {
	var te *yaml.TypeError
	if errors.As(err, &te) {
		msgs := make([]string, 0, len(te.Errors))
		for _, e := range te.Errors {
			e = strings.Replace(e, "not found in type", "is not a known key in", 1)
			msgs = append(msgs, e+hint(e))
		}
		return strings.Join(msgs, "; ")
	}
	return err.Error()
}

func hint(msg string) string {
	if strings.Contains(msg, "is not a known key") {
		return " (check the spelling against configs/*.example.yaml and docs/configuration.md)"
	}
	return ""
}

// Join reports a list of validation problems as one error, one per line,
// prefixed by the file name.
func Join(name string, errs []error) error {
	if len(errs) == 0 {
		return nil
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%s: %d problem(s):", name, len(errs))
	for _, e := range errs {
		b.WriteString("\n  - ")
		b.WriteString(e.Error())
	}
	return fmt.Errorf("%w: %s", ErrInvalid, b.String())
}

// Secret resolves a secret given as "file:PATH" or "env:NAME". Plain values
// are refused so that secrets never sit in a config file.
func Secret(field, ref string) (string, error) {
	switch {
	case strings.HasPrefix(ref, "file:"):
		raw, err := os.ReadFile(strings.TrimPrefix(ref, "file:"))
		if err != nil {
			return "", fmt.Errorf("%s: %w", field, err)
		}
		return strings.TrimRight(string(raw), "\r\n"), nil
	case strings.HasPrefix(ref, "env:"):
		name := strings.TrimPrefix(ref, "env:")
		v, ok := os.LookupEnv(name)
		if !ok {
			return "", fmt.Errorf("%s: environment variable %s is not set", field, name)
		}
		return v, nil
	}
	return "", fmt.Errorf("%s: give the secret as file:/path/to/secret or env:VARIABLE, not inline", field)
}

// FileExists reports a missing referenced file as a validation problem.
func FileExists(field, path string) error {
	if path == "" {
		return nil
	}
	st, err := os.Stat(path)
	if err != nil {
		return fmt.Errorf("%s: %s does not exist or cannot be read (%v)", field, path, errors.Unwrap(err))
	}
	if st.IsDir() {
		return fmt.Errorf("%s: %s is a folder; want a file", field, path)
	}
	return nil
}
