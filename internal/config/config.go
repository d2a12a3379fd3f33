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
	"reflect"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

// ErrInvalid wraps every validation failure.
var ErrInvalid = errors.New("invalid config")

// Load reads path into out (which holds defaults already) strictly.
func Load(path string, out any) error {
	problems, err := LoadAll(path, out)
	if err != nil {
		return err
	}
	return Join(path, problems)
}

// LoadAll reads path into out like Load, but returns the problems with
// single keys or values separately (see DecodeAll), so a caller can report
// them together with its own validation.
func LoadAll(path string, out any) (problems []error, err error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	return decodeAll(path, raw, out)
}

// Decode decodes raw YAML strictly; name labels errors (usually the path).
func Decode(name string, raw []byte, out any) error {
	problems, err := decodeAll(name, raw, out)
	if err != nil {
		return err
	}
	return Join(name, problems)
}

// DecodeAll decodes raw YAML strictly into out. An unknown key, a value of
// the wrong type or a key given twice is a problem naming the field path and
// line ("agent.plnt (line 3): not a known key; ..."); decoding goes on past
// it, so every problem of a file can be reported at once. err is for YAML
// that does not parse at all.
func DecodeAll(raw []byte, out any) (problems []error, err error) {
	return decodeAll("config", raw, out)
}

func decodeAll(name string, raw []byte, out any) ([]error, error) {
	var root yaml.Node
	if err := yaml.Unmarshal(raw, &root); err != nil {
		return nil, fmt.Errorf("%w: %s: %v; check the indentation (spaces, not tabs) and quoting around that line", ErrInvalid, name, err)
	}
	if root.Kind == 0 || root.Kind == yaml.DocumentNode && len(root.Content) == 0 {
		return nil, nil // an empty file means defaults
	}
	problems, err := decodeNode("", &root, raw, out)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrInvalid, name, err)
	}
	return problems, nil
}

// DecodeNodeAll decodes one part of a config, n, strictly into out, like
// DecodeAll. prefix is n's field path (e.g. "sources[2]"); problems name
// the full path and the line in the file n came from. It serves config
// entries whose type is known only after the enclosing file is read. Its
// errors are problems of the enclosing file too, for the caller to Join.
func DecodeNodeAll(prefix string, n *yaml.Node, out any) (problems []error, err error) {
	problems, err = decodeNode(prefix, n, nil, out)
	if err != nil {
		return nil, fmt.Errorf("%s (line %d): %w", prefix, n.Line, err)
	}
	return problems, nil
}

// decodeNode decodes n strictly into out; raw, if known, is n's text.
// yaml.v3 skips a whole mapping that has a key twice, which would bury the
// real problem under "required" ones; so a copy of n keeps only the first
// of each key, and yaml.v3 decodes the copy's text unless raw can serve.
// Its messages count lines of the text it read: the field path is found
// there, and the line in the copy, which kept n's lines. (Custom
// UnmarshalYAML methods see the lines of that text, which differ from the
// file's only when a key was given twice.)
func decodeNode(prefix string, n *yaml.Node, raw []byte, out any) ([]error, error) {
	c := cloneNode(n)
	problems := dropDuplicateKeys(c, prefix)
	if len(problems) > 0 || raw == nil {
		var err error
		if raw, err = yaml.Marshal(c); err != nil {
			return nil, err
		}
	}
	dec := yaml.NewDecoder(bytes.NewReader(raw))
	dec.KnownFields(true)
	err := dec.Decode(out)
	if err == nil || errors.Is(err, errTypeEOF()) {
		return problems, nil
	}
	var te *yaml.TypeError
	if !errors.As(err, &te) {
		return nil, err
	}
	var text yaml.Node
	if yaml.Unmarshal(raw, &text) != nil {
		return append(problems, plainProblems(te)...), nil
	}
	return append(problems, newIndex(&text).problems(te, newIndex(c), prefix, reflect.TypeOf(out))...), nil
}

func errTypeEOF() error { return ioEOF }

func plainProblems(te *yaml.TypeError) []error {
	out := make([]error, 0, len(te.Errors))
	for _, e := range te.Errors {
		out = append(out, errors.New(e))
	}
	return out
}

func cloneNode(n *yaml.Node) *yaml.Node {
	c := *n
	c.Content = make([]*yaml.Node, len(n.Content))
	for i, ch := range n.Content {
		c.Content[i] = cloneNode(ch)
	}
	return &c
}

func joinPath(prefix, p string) string {
	switch {
	case prefix == "":
		return p
	case p == "" || strings.HasPrefix(p, "["):
		return prefix + p
	}
	return prefix + "." + p
}

// dropDuplicateKeys removes every repeated key (and its value) from the
// mappings in n, keeping the first, and reports each.
func dropDuplicateKeys(n *yaml.Node, path string) []error {
	var errs []error
	switch n.Kind {
	case yaml.DocumentNode:
		for _, c := range n.Content {
			errs = append(errs, dropDuplicateKeys(c, path)...)
		}
	case yaml.MappingNode:
		first := map[string]int{}
		kept := n.Content[:0]
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			p := joinPath(path, k.Value)
			if line, dup := first[k.Value]; dup {
				errs = append(errs, fmt.Errorf("%s (line %d): given twice (first at line %d); keep one", p, k.Line, line))
				continue
			}
			first[k.Value] = k.Line
			kept = append(kept, k, v)
			errs = append(errs, dropDuplicateKeys(v, p)...)
		}
		n.Content = kept
	case yaml.SequenceNode:
		for i, c := range n.Content {
			errs = append(errs, dropDuplicateKeys(c, fmt.Sprintf("%s[%d]", path, i))...)
		}
	}
	return errs
}

// The messages of yaml.v3 v3.0.1 (decode.go) that problems rewrites.
var (
	reUnknownKey = regexp.MustCompile(`^line (\d+): field (.*) not found in type \S+$`)
	reWrongType  = regexp.MustCompile("^line (\\d+): cannot unmarshal (!!\\w+)(?: `(.*)`)? into (\\S+)$")
)

// index knows the field path of every key and value of a YAML tree.
type index struct {
	keys      map[lineName][]string // key nodes by line and name
	values    map[int][]located     // value nodes by line
	keyLine   map[string]int        // field path -> line of its key
	valueLine map[string]int        // field path -> line of its value
}

type lineName struct {
	line int
	name string
}

type located struct {
	path string
	node *yaml.Node
}

func newIndex(root *yaml.Node) *index {
	x := &index{keys: map[lineName][]string{}, values: map[int][]located{}, keyLine: map[string]int{}, valueLine: map[string]int{}}
	x.walk(root, "")
	return x
}

func (x *index) walk(n *yaml.Node, path string) {
	switch n.Kind {
	case yaml.DocumentNode:
		for _, c := range n.Content {
			x.walk(c, path)
		}
	case yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			p := joinPath(path, k.Value)
			ln := lineName{k.Line, k.Value}
			x.keys[ln] = append(x.keys[ln], p)
			x.keyLine[p], x.valueLine[p] = k.Line, v.Line
			x.values[v.Line] = append(x.values[v.Line], located{p, v})
			x.walk(v, p)
		}
	case yaml.SequenceNode:
		for i, c := range n.Content {
			p := fmt.Sprintf("%s[%d]", path, i)
			x.valueLine[p] = c.Line
			x.values[c.Line] = append(x.values[c.Line], located{p, c})
			x.walk(c, p)
		}
	}
}

// takeKey returns the first unused path of a key named name at line.
func (x *index) takeKey(line int, name string) (string, bool) {
	ps := x.keys[lineName{line, name}]
	if len(ps) == 0 {
		return "", false
	}
	x.keys[lineName{line, name}] = ps[1:]
	return ps[0], true
}

// takeValue returns the first unused value node at line with tag whose
// value matches what yaml.v3 quoted (its first 7 bytes and "..." when
// longer than 10).
func (x *index) takeValue(line int, tag, quoted string) (located, bool) {
	vs := x.values[line]
	for i, v := range vs {
		if v.node.ShortTag() != tag {
			continue
		}
		if v.node.Kind == yaml.ScalarNode && quoted != "" {
			short, cut := strings.CutSuffix(quoted, "...")
			if cut && len(v.node.Value) > 10 && !strings.HasPrefix(v.node.Value, short) || !cut && v.node.Value != quoted {
				continue
			}
		}
		x.values[line] = append(vs[:i:i], vs[i+1:]...)
		return v, true
	}
	return located{}, false
}

// problems rewrites yaml.v3's messages into "PATH (line N): what; fix".
// Paths are found in x, the tree the decoder read; lines in lines, the tree
// of the file. A message that cannot be placed is passed on as it is.
func (x *index) problems(te *yaml.TypeError, lines *index, prefix string, out reflect.Type) []error {
	errs := make([]error, 0, len(te.Errors))
	for _, msg := range te.Errors {
		if m := reUnknownKey.FindStringSubmatch(msg); m != nil {
			line, _ := strconv.Atoi(m[1])
			if p, ok := x.takeKey(line, m[2]); ok {
				hint := "check the spelling against configs/*.example.yaml and docs/configuration.md"
				if known := knownKeys(out, parentPath(p)); len(known) > 0 {
					hint = "known keys here: " + strings.Join(known, ", ") + "; " + hint
				}
				errs = append(errs, fmt.Errorf("%s (line %d): not a known key; %s", joinPath(prefix, p), lines.keyLine[p], hint))
				continue
			}
		}
		if m := reWrongType.FindStringSubmatch(msg); m != nil {
			line, _ := strconv.Atoi(m[1])
			if v, ok := x.takeValue(line, m[2], m[3]); ok {
				what, fix := describeType(m[4])
				errs = append(errs, fmt.Errorf("%s (line %d): %s is not %s; %s", joinPath(prefix, v.path), lines.valueLine[v.path], describeValue(v.node), what, fix))
				continue
			}
		}
		errs = append(errs, errors.New(msg))
	}
	return errs
}

// parentPath is the path of the mapping or list holding p.
func parentPath(p string) string {
	if i := strings.LastIndexAny(p, ".["); i >= 0 {
		return p[:i]
	}
	return ""
}

// knownKeys lists the YAML keys of the struct at path inside t, so an
// operator sees what was meant next to what was written.
func knownKeys(t reflect.Type, path string) []string {
	if path != "" {
		for _, seg := range strings.Split(strings.ReplaceAll(path, "[", ".["), ".") {
			t = deref(t)
			if strings.HasPrefix(seg, "[") {
				if t.Kind() != reflect.Slice && t.Kind() != reflect.Array {
					return nil
				}
				t = t.Elem()
				continue
			}
			ft, ok := fieldByKey(t, seg)
			if !ok {
				return nil
			}
			t = ft
		}
	}
	if t = deref(t); t.Kind() != reflect.Struct {
		return nil
	}
	var keys []string
	collectKeys(t, &keys)
	sort.Strings(keys)
	return keys
}

func deref(t reflect.Type) reflect.Type {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	return t
}

// yamlKey is the key yaml.v3 uses for a struct field.
func yamlKey(f reflect.StructField) (name string, inline bool) {
	name, opts, _ := strings.Cut(f.Tag.Get("yaml"), ",")
	if strings.Contains(opts, "inline") {
		return "", true
	}
	if name == "" {
		name = strings.ToLower(f.Name)
	}
	return name, false
}

func fieldByKey(t reflect.Type, key string) (reflect.Type, bool) {
	if t.Kind() != reflect.Struct {
		return nil, false
	}
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		if !f.IsExported() || f.Tag.Get("yaml") == "-" {
			continue
		}
		name, inline := yamlKey(f)
		if inline {
			if ft, ok := fieldByKey(deref(f.Type), key); ok {
				return ft, true
			}
			continue
		}
		if name == key {
			return f.Type, true
		}
	}
	return nil, false
}

func collectKeys(t reflect.Type, keys *[]string) {
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		if !f.IsExported() || f.Tag.Get("yaml") == "-" {
			continue
		}
		name, inline := yamlKey(f)
		if !inline {
			*keys = append(*keys, name)
		} else if ft := deref(f.Type); ft.Kind() == reflect.Struct {
			collectKeys(ft, keys)
		}
	}
}

func describeValue(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	}
	return strconv.Quote(n.Value)
}

// describeType says in an operator's words what a Go type wants.
func describeType(goType string) (what, fix string) {
	switch {
	case goType == "time.Duration":
		return "a duration", "want e.g. 250ms, 30s or 5m"
	case strings.HasPrefix(goType, "int") || strings.HasPrefix(goType, "uint"):
		return "a whole number", "want plain digits without units, e.g. 1048576"
	case strings.HasPrefix(goType, "float"):
		return "a number", "want e.g. 0.5"
	case goType == "bool":
		return "true or false", "want true or false"
	case goType == "string":
		return "a single value", "want one value; quote it if it contains : or #"
	case strings.HasPrefix(goType, "[]"):
		return "a list", `want [a, b] or one "- item" per line`
	}
	return "a mapping", `want "key: value" lines indented under it`
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
