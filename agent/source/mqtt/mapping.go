package mqtt

import (
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/google/uuid"
	"google.golang.org/protobuf/types/known/timestamppb"

	pb "github.com/plantsync/plantsync/proto/plantsync/v1"
)

// idNamespace scopes derived event ids to MQTT message ids.
var idNamespace = uuid.MustParse("6f1c5a52-8b0e-4c55-9a53-6a2d3f5e0b11")

// EventID derives the event id from the plant, the source and the message's
// own id, so a redelivery yields the same id (DESIGN.md rule 2).
func EventID(plant, sourceName, messageID string) string {
	return uuid.NewSHA1(idNamespace, []byte(plant+"\x00"+sourceName+"\x00"+messageID)).String()
}

type mapper func(doc map[string]any, ev *pb.Event) error

var mappers = map[string]mapper{
	"production.completion": func(d map[string]any, ev *pb.Event) error {
		q, err := quantity(d, "quantity", "unit")
		ev.Payload = &pb.Event_ProductionCompletion{ProductionCompletion: &pb.ProductionCompletion{
			Order: str(d, "order"), Operation: str(d, "operation"), Item: str(d, "item"),
			WorkCenter: str(d, "work_center"), Good: q, Lot: str(d, "lot"),
		}}
		return err
	},
	"material.consumption": func(d map[string]any, ev *pb.Event) error {
		q, err := quantity(d, "quantity", "unit")
		ev.Payload = &pb.Event_MaterialConsumption{MaterialConsumption: &pb.MaterialConsumption{
			Order: str(d, "order"), Item: str(d, "item"), Quantity: q, Lot: str(d, "lot"), WorkCenter: str(d, "work_center"),
		}}
		return err
	},
	"material.shortage": func(d map[string]any, ev *pb.Event) error {
		q, err := quantity(d, "quantity", "unit")
		s := &pb.MaterialShortage{Item: str(d, "item"), Quantity: q, Order: str(d, "order"), WorkCenter: str(d, "work_center"), Warehouse: str(d, "warehouse")}
		if rb := str(d, "required_by"); rb != "" {
			t, perr := parseTime(rb)
			if perr != nil {
				err = errors.Join(err, fmt.Errorf("field required_by: %w", perr))
			}
			s.RequiredBy = timestamppb.New(t)
		}
		ev.Payload = &pb.Event_MaterialShortage{MaterialShortage: s}
		return err
	},
	"production.order.status": func(d map[string]any, ev *pb.Event) error {
		ev.Payload = &pb.Event_ProductionOrderStatus{ProductionOrderStatus: &pb.ProductionOrderStatus{
			Order: str(d, "order"), Status: str(d, "status"), WorkCenter: str(d, "work_center"),
		}}
		return nil
	},
}

func supportedTypes() []string {
	out := make([]string, 0, len(mappers))
	for k := range mappers {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func str(d map[string]any, key string) string {
	switch v := d[key].(type) {
	case string:
		return v
	case json.Number:
		return v.String()
	}
	return ""
}

// quantity reads a decimal quantity; JSON numbers are taken as their literal
// text (json.Number), never through a float.
func quantity(d map[string]any, valueKey, unitKey string) (*pb.Quantity, error) {
	v := str(d, valueKey)
	if v == "" {
		return nil, fmt.Errorf("field %s: missing; want a decimal such as \"12.5\"", valueKey)
	}
	if !isDecimal(v) {
		return nil, fmt.Errorf("field %s: %q is not a decimal", valueKey, v)
	}
	return &pb.Quantity{Value: v, Unit: str(d, unitKey)}, nil
}

func isDecimal(s string) bool {
	s = strings.TrimPrefix(s, "-")
	dot := false
	if s == "" {
		return false
	}
	for i, r := range s {
		switch {
		case r >= '0' && r <= '9':
		case r == '.' && !dot && i > 0 && i < len(s)-1:
			dot = true
		default:
			return false
		}
	}
	return true
}

func parseTime(s string) (time.Time, error) {
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t, nil
	}
	return time.Parse(time.DateOnly, s)
}

// decodeError locates a JSON syntax error by byte offset.
func decodeError(err error) string {
	var se *json.SyntaxError
	if errors.As(err, &se) {
		return fmt.Sprintf("invalid JSON at byte offset %d: %v", se.Offset, err)
	}
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		return fmt.Sprintf("invalid JSON at byte offset %d: want an object: %v", te.Offset, err)
	}
	return "invalid JSON: " + err.Error()
}
