package pipeline

import (
	"errors"
	"fmt"
	"time"

	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/plantsync/plantsync/hub/crosswalk"
	"github.com/plantsync/plantsync/hub/schema"
	pb "github.com/plantsync/plantsync/proto/plantsync/v1"
)

// Canonicalize translates an event's plant-local codes into canonical ones
// in place, through the inbound crosswalk tables of set in force at time
// at: the plant, every field the schema marks with a code (item, supplier,
// work center, target plant) and every quantity's unit with its factor.
// Tables that do not exist pass codes through. It returns the version of
// each table consulted and, joined, every code that was missing
// (*UnmappedError) or could not be converted.
func Canonicalize(ev *pb.Event, t *schema.Type, reg *schema.Registry, set *crosswalk.Set, at time.Time, used map[string]uint64) error {
	m := mapper{set: set, at: at, used: used, localPlant: ev.GetPlant()}
	msg := ev.ProtoReflect()
	m.fields(msg, reg.Envelope)
	if od := msg.Descriptor().Oneofs().ByName("payload"); od != nil {
		if fd := msg.WhichOneof(od); fd != nil && string(fd.Name()) == t.Payload {
			m.fields(msg.Mutable(fd).Message(), t.Fields)
		}
	}
	return errors.Join(m.errs...)
}

type mapper struct {
	set        *crosswalk.Set
	at         time.Time
	used       map[string]uint64
	localPlant string
	errs       []error
}

func (m *mapper) table(kind schema.Code) (*crosswalk.Table, bool) {
	name := crosswalk.InboundTable(kind)
	t, ok := m.set.Table(name)
	if ok && m.used != nil {
		m.used[name] = t.Version
	}
	return t, ok
}

func (m *mapper) fields(msg protoreflect.Message, fields []schema.Field) {
	for i := range fields {
		f := &fields[i]
		fd := f.Descriptor()
		if fd == nil || !msg.Has(fd) {
			continue
		}
		switch {
		case f.Kind == schema.Quantity:
			if q, ok := msg.Mutable(fd).Message().Interface().(*pb.Quantity); ok {
				m.quantity(q)
			}
		case f.Kind == schema.List:
			l := msg.Mutable(fd).List()
			for j := 0; j < l.Len(); j++ {
				m.fields(l.Get(j).Message(), f.Fields)
			}
		case f.Kind == schema.String && f.Code != "" && f.Code != schema.CodeWarehouse:
			if v, ok := m.code(f.Code, msg.Get(fd).String()); ok {
				msg.Set(fd, protoreflect.ValueOfString(v))
			}
		}
	}
}

// code maps one code; ok is false when it was left unchanged.
func (m *mapper) code(kind schema.Code, code string) (string, bool) {
	if code == "" {
		return "", false
	}
	t, ok := m.table(kind)
	if !ok {
		return "", false
	}
	var v []string
	var found bool
	if kind == schema.CodePlant {
		v, found = t.Lookup(m.at, code)
	} else {
		v, found = t.Lookup(m.at, m.localPlant, code)
	}
	if !found {
		m.errs = append(m.errs, &UnmappedError{Kind: kind, Code: code, Plant: m.localPlant, Table: t.Spec.Name})
		return "", false
	}
	return v[0], true
}

func (m *mapper) quantity(q *pb.Quantity) {
	if q.GetUnit() == "" {
		return
	}
	t, ok := m.table(schema.CodeUnit)
	if !ok {
		return
	}
	v, found := t.Lookup(m.at, m.localPlant, q.GetUnit())
	if !found {
		m.errs = append(m.errs, &UnmappedError{Kind: schema.CodeUnit, Code: q.GetUnit(), Plant: m.localPlant, Table: t.Spec.Name})
		return
	}
	out, err := convert(q.GetValue(), v[1], "")
	if err != nil {
		m.errs = append(m.errs, fmt.Errorf("%w: %s %s to %s at plant %q: %v", errConversion, q.GetValue(), q.GetUnit(), v[0], m.localPlant, err))
		return
	}
	q.Value, q.Unit = out, v[0]
}
