package schema

import (
	"bytes"
	"fmt"
	"strings"
)

// Markdown renders the registry as docs/events.md, so the document people
// read is the schema the pipeline validates against (a test keeps them
// equal).
func (r *Registry) Markdown() []byte {
	var b bytes.Buffer
	b.WriteString(`# Event types

Generated from hub/schema (the schemas ` + "`GET /api/v1/schemas`" + ` serves and the
pipeline validates against); ` + "`go test ./hub/schema -run TestEventsDoc -update`" + `
rewrites it.

Every event travels in the ` + "`plantsync.v1.Event`" + ` envelope
(proto/plantsync/v1/event.proto) with its data in the payload member named
below. Field names are the proto names, as in JSON and in CEL rules
(` + "`event.material_shortage.quantity`" + `).

- **Quantities** are ` + "`{value, unit}`" + ` with the value a decimal string
  (` + "`\"12.5\"`" + `; no exponent, no thousands separator, not negative). The hub
  converts them to the canonical unit with the ` + "`unit`" + ` crosswalk (exactly)
  and rounds only when a destination's unit table gives ` + "`decimals`" + `.
- **Codes** (column *code*) are plant-local and translated by the crosswalk
  table of that kind; a code a table lacks makes the event an exception.
- **Versions**: a field is required from the version in *since* on; an
  event with ` + "`schema_version`" + ` 0 is read as version 1. A hub refuses (as an
  exception) a version newer than it knows.
- **Operational** types report on plantsync itself and always reach
  exceptions and alerts, even when malformed.

## Envelope

`)
	fieldTable(&b, r.Envelope)
	for _, t := range r.Types() {
		fmt.Fprintf(&b, "\n## `%s`\n\n%s\n\nVersion %d; payload `%s`", t.Name, t.Description, t.Version, t.Payload)
		if t.Operational {
			b.WriteString("; operational")
		}
		b.WriteString(".\n\n")
		fieldTable(&b, t.Fields)
	}
	return b.Bytes()
}

func fieldTable(b *bytes.Buffer, fields []Field) {
	b.WriteString("| field | kind | required | code | since | meaning |\n| --- | --- | --- | --- | --- | --- |\n")
	var walk func(prefix string, fs []Field)
	walk = func(prefix string, fs []Field) {
		for _, f := range fs {
			req := ""
			if f.Required {
				req = "yes"
			}
			if f.MinItems > 0 {
				req = fmt.Sprintf("≥ %d", f.MinItems)
			}
			desc := strings.ReplaceAll(f.Description, "|", "\\|")
			fmt.Fprintf(b, "| `%s%s` | %s | %s | %s | %d | %s |\n", prefix, f.Name, f.Kind, req, f.Code, f.Since, desc)
			switch f.Kind {
			case List:
				walk(prefix+f.Name+"[].", f.Fields)
			case Message:
				walk(prefix+f.Name+".", f.Fields)
			case Oneof:
				walk(prefix, f.Fields)
			}
		}
	}
	walk("", fields)
}
