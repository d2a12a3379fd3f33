package partner

import (
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"os"
	"slices"
	"strings"
)

// SignatureHeader carries "sha256=<hex HMAC-SHA256 of the raw body>" for
// partners with auth.hmac_secret_file.
const SignatureHeader = "X-Plantsync-Signature"

// ErrClientCA marks an http.tls.client_ca file that cannot be used.
var ErrClientCA = errors.New("client CA file")

// ServerTLS is the HTTP listener's TLS configuration when partners may
// authenticate by client certificate: it asks every client for one and
// verifies what is presented against the CAs in clientCAFile, but lets
// clients without one through, so operators keep using bearer tokens.
// Which certificate a partner must present is checked per request.
func ServerTLS(clientCAFile string) (*tls.Config, error) {
	raw, err := os.ReadFile(clientCAFile)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrClientCA, err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(raw) {
		return nil, fmt.Errorf("%w: %s holds no PEM certificate", ErrClientCA, clientCAFile)
	}
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		ClientAuth: tls.VerifyClientCertIfGiven,
		ClientCAs:  pool,
	}, nil
}

// credentials is what one partner must present.
type credentials struct {
	tokenHash *[sha256.Size]byte // nil: no bearer token
	certName  string             // "": no client certificate
	hmacKey   []byte             // nil: no signature
}

func loadCredentials(a Auth) (credentials, error) {
	var c credentials
	if a.TokenFile != "" {
		sum, err := readTokenFile(a.TokenFile)
		if err != nil {
			return c, fmt.Errorf("auth.token_file: %w", err)
		}
		c.tokenHash = &sum
	}
	c.certName = a.ClientCert
	if a.HMACSecretFile != "" {
		key, err := readHMACFile(a.HMACSecretFile)
		if err != nil {
			return c, fmt.Errorf("auth.hmac_secret_file: %w", err)
		}
		c.hmacKey = key
	}
	return c, nil
}

// authError is a refused request: reason labels the metric, msg is what
// the partner reads.
type authError struct {
	reason, msg string
}

// checkHeaders checks the bearer token and the client certificate, which
// need no body.
func (c credentials) checkHeaders(r *http.Request) *authError {
	if c.tokenHash != nil {
		scheme, token, _ := strings.Cut(r.Header.Get("Authorization"), " ")
		token = strings.TrimSpace(token)
		if !strings.EqualFold(scheme, "Bearer") || token == "" {
			return &authError{authMissing, "missing bearer token; send Authorization: Bearer <the partner's token>"}
		}
		sum := sha256.Sum256([]byte(token))
		if subtle.ConstantTimeCompare(sum[:], c.tokenHash[:]) != 1 {
			return &authError{authToken, "credentials not accepted"}
		}
	}
	if c.certName != "" {
		if r.TLS == nil || len(r.TLS.VerifiedChains) == 0 || len(r.TLS.VerifiedChains[0]) == 0 {
			return &authError{authMissing, "missing client certificate; connect over HTTPS with the certificate issued to this partner"}
		}
		if !certNames(r.TLS.VerifiedChains[0][0], c.certName) {
			return &authError{authCertificate, "credentials not accepted"}
		}
	}
	return nil
}

// certNames reports whether a certificate carries name as its subject
// common name or one of its SANs.
func certNames(cert *x509.Certificate, name string) bool {
	if cert.Subject.CommonName == name || slices.Contains(cert.DNSNames, name) || slices.Contains(cert.EmailAddresses, name) {
		return true
	}
	for _, u := range cert.URIs {
		if u.String() == name {
			return true
		}
	}
	return false
}

// checkSignature verifies the HMAC of the raw body.
func (c credentials) checkSignature(r *http.Request, body []byte) *authError {
	if c.hmacKey == nil {
		return nil
	}
	got := r.Header.Get(SignatureHeader)
	if got == "" {
		return &authError{authMissing, "missing " + SignatureHeader + " header; send sha256=<hex HMAC-SHA256 of the body with the partner's secret>"}
	}
	h, ok := strings.CutPrefix(got, "sha256=")
	sig, err := hex.DecodeString(h)
	if !ok || err != nil {
		return &authError{authSignature, SignatureHeader + " is not sha256=<hex>"}
	}
	mac := hmac.New(sha256.New, c.hmacKey)
	mac.Write(body)
	if !hmac.Equal(sig, mac.Sum(nil)) {
		return &authError{authSignature, "signature does not match the body; sign the exact bytes sent with the partner's secret"}
	}
	return nil
}
