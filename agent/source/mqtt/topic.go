package mqtt

import (
	"fmt"
	"strings"
)

// topicPattern is a subscription's topic filter with named captures:
// mes/{plant}/{line}/completion subscribes to mes/+/+/completion and
// captures the second and third levels as plant and line.
type topicPattern struct {
	filter string   // what is sent to the broker
	levels []string // filter levels
	names  []string // capture name per level, "" where none
}

// parseTopic checks a filter the way a broker would ([MQTT-4.7.1]) and
// turns {name} levels into + with a capture.
func parseTopic(s string) (topicPattern, error) {
	if s == "" {
		return topicPattern{}, fmt.Errorf("empty; want e.g. mes/{plant}/{line}/completion")
	}
	if strings.ContainsRune(s, 0) {
		return topicPattern{}, fmt.Errorf("%q contains a NUL character", s)
	}
	levels := strings.Split(s, "/")
	p := topicPattern{levels: make([]string, len(levels)), names: make([]string, len(levels))}
	seen := map[string]bool{}
	for i, l := range levels {
		switch {
		case l == "#":
			if i != len(levels)-1 {
				return topicPattern{}, fmt.Errorf("%q: # must be the last level", s)
			}
		case l == "+":
		case strings.HasPrefix(l, "{") && strings.HasSuffix(l, "}"):
			name := l[1 : len(l)-1]
			if !validCaptureName(name) {
				return topicPattern{}, fmt.Errorf("%q: capture %q: want a name of letters, digits and _, e.g. {line}", s, l)
			}
			if seen[name] {
				return topicPattern{}, fmt.Errorf("%q: capture {%s} appears twice", s, name)
			}
			seen[name] = true
			p.names[i] = name
			l = "+"
		case strings.ContainsAny(l, "+#{}"):
			return topicPattern{}, fmt.Errorf("%q: level %q mixes a wildcard or capture with text; a wildcard or {capture} must fill a whole level", s, l)
		}
		p.levels[i] = l
	}
	p.filter = strings.Join(p.levels, "/")
	return p, nil
}

func validCaptureName(s string) bool {
	if s == "" {
		return false
	}
	for i, r := range s {
		if !(r == '_' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || i > 0 && r >= '0' && r <= '9') {
			return false
		}
	}
	return true
}

// captureNames lists the names of the captures.
func (p topicPattern) captureNames() []string {
	var out []string
	for _, n := range p.names {
		if n != "" {
			out = append(out, n)
		}
	}
	return out
}

// match reports whether topic matches the filter and returns the captured
// levels. Topics starting with $ match no leading wildcard [MQTT-4.7.2-1].
func (p topicPattern) match(topic string) (map[string]string, bool) {
	var caps map[string]string
	rest := topic
	for i, l := range p.levels {
		if l == "#" {
			if i == 0 && strings.HasPrefix(topic, "$") {
				return nil, false
			}
			return caps, true
		}
		var level string
		last := false
		if j := strings.IndexByte(rest, '/'); j >= 0 {
			level, rest = rest[:j], rest[j+1:]
		} else {
			level, last = rest, true
		}
		switch {
		case l == "+":
			if i == 0 && strings.HasPrefix(level, "$") {
				return nil, false
			}
			if p.names[i] != "" {
				if caps == nil {
					caps = make(map[string]string, 4)
				}
				caps[p.names[i]] = level
			}
		case l != level:
			return nil, false
		}
		if last {
			// "a/#" also matches "a" [MQTT-4.7.1-2].
			if i == len(p.levels)-1 || i == len(p.levels)-2 && p.levels[i+1] == "#" {
				return caps, true
			}
			return nil, false
		}
	}
	return nil, false // topic has more levels than the filter
}
