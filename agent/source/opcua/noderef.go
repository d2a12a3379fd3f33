package opcua

import (
	"errors"
	"fmt"
	"strings"

	"github.com/gopcua/opcua/ua"
)

// ErrNamespaceUnknown means a nsu= NodeId names a namespace the server does
// not have.
var ErrNamespaceUnknown = errors.New("namespace not on the server")

// nodeRef is a configured NodeId. Besides the usual ns=<index>;... form it
// accepts nsu=<namespace URI>;..., which is resolved against the server's
// namespace array at every session, because namespace indexes may change
// when a server is reconfigured.
type nodeRef struct {
	text  string
	nsURI string     // set for the nsu= form
	rest  string     // identifier part of the nsu= form, e.g. s=Press3.State
	id    *ua.NodeID // set for the ns= form
}

func parseNodeRef(s string) (nodeRef, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return nodeRef{}, fmt.Errorf("required, e.g. ns=2;s=Press3.State")
	}
	if strings.HasPrefix(s, "nsu=") {
		uri, rest, ok := strings.Cut(strings.TrimPrefix(s, "nsu="), ";")
		if !ok || uri == "" || rest == "" {
			return nodeRef{}, fmt.Errorf("%q is not a NodeId; want e.g. nsu=urn:example:machines;s=Press3.State", s)
		}
		if _, err := ua.ParseNodeID("ns=1;" + rest); err != nil || !validIdentifier(rest) {
			return nodeRef{}, fmt.Errorf("%q is not a NodeId; want e.g. nsu=urn:example:machines;s=Press3.State", s)
		}
		return nodeRef{text: s, nsURI: uri, rest: rest}, nil
	}
	rest := s
	if strings.HasPrefix(s, "ns=") {
		_, rest, _ = strings.Cut(s, ";")
	}
	id, err := ua.ParseNodeID(s)
	if err != nil || !validIdentifier(rest) {
		return nodeRef{}, fmt.Errorf("%q is not a NodeId; want e.g. ns=2;s=Press3.State or i=2253", s)
	}
	return nodeRef{text: s, id: id}, nil
}

// resolve returns the NodeId for the server's namespace array.
func (r nodeRef) resolve(namespaces []string) (*ua.NodeID, error) {
	if r.id != nil {
		return r.id, nil
	}
	for i, ns := range namespaces {
		if ns == r.nsURI {
			return ua.ParseNodeID(fmt.Sprintf("ns=%d;%s", i, r.rest))
		}
	}
	return nil, fmt.Errorf("%s: %w %q", r.text, ErrNamespaceUnknown, r.nsURI)
}

// validIdentifier checks the identifier type, which gopcua's parser
// guesses at when it is misspelt.
func validIdentifier(rest string) bool {
	for _, p := range []string{"i=", "s=", "g=", "b="} {
		if strings.HasPrefix(rest, p) && len(rest) > len(p) {
			return true
		}
	}
	return false
}
