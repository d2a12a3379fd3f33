package capture

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/google/uuid"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/plantsync/plantsync/plugins/sdk"
	pb "github.com/plantsync/plantsync/proto/plantsync/v1"
)

// Change kinds a connector reports (sdk.Change.Kind): the canonical event
// type each becomes.
const (
	KindPOApproved   = "po.approved"
	KindGoodsReceipt = "goods.receipt"
)

// ErrDocument is a change whose document cannot become an event; it is
// counted and logged, and the cursor moves on (the change stays in the
// ERP, where reconciliation finds it).
var ErrDocument = errors.New("unreadable change document")

// Document is what a connector puts in sdk.Change.Document (plugins/tryton
// ChangeDocument writes it): one ERP document in the ERP's codes.
type Document struct {
	// Document is the ERP record, e.g. "purchase.purchase,12".
	Document      string `json:"document"`
	Number        string `json:"number"`
	Reference     string `json:"reference"`
	PurchaseOrder string `json:"purchase_order"`
	Supplier      string `json:"supplier"`
	Warehouse     string `json:"warehouse"`
	// Plant, when the ERP knows it; else the destination's configured one.
	Plant          string `json:"plant"`
	CorrelationID  string `json:"correlation_id"`
	RequisitionKey string `json:"requisition_key"`
	Lines          []Line `json:"lines"`
}

// Line is one order line or one received move.
type Line struct {
	Line          string `json:"line"`
	Ref           string `json:"ref"`
	Item          string `json:"item"`
	Quantity      string `json:"quantity"`
	Unit          string `json:"unit"`
	DeliveryDate  string `json:"delivery_date"` // YYYY-MM-DD or RFC 3339
	PurchaseOrder string `json:"purchase_order"`
	CorrelationID string `json:"correlation_id"`
	Lot           string `json:"lot"`
}

// idNamespace scopes event ids derived from ERP changes.
var idNamespace = uuid.MustParse("3f1c7c1e-5b52-4d0e-9a43-6f0b8f3d2c11")

// EventID is the id of the event a change becomes: the same destination,
// change and part give the same id on every poll, after any crash. part
// is "" for one event per change, a line's ref otherwise.
func EventID(destination, changeID, part string) string {
	name := destination + "\x00" + changeID
	if part != "" {
		name += "\x00" + part
	}
	return uuid.NewSHA1(idNamespace, []byte(name)).String()
}

// Producer is the journal producer of a destination's changes.
func Producer(destination string) string { return "erp:" + destination }

func parseDate(s string) (*timestamppb.Timestamp, error) {
	if s == "" {
		return nil, nil
	}
	for _, layout := range []string{time.DateOnly, time.RFC3339Nano} {
		if t, err := time.Parse(layout, s); err == nil {
			return timestamppb.New(t), nil
		}
	}
	return nil, fmt.Errorf("date %q; want YYYY-MM-DD or RFC 3339", s)
}

// Events turns one change of destination into canonical events: one
// po.approved per purchase order, one goods.receipt per received line.
// plant is used when the document names none; now is the observation time.
func Events(destination, plant string, c sdk.Change, now time.Time) ([]*pb.Event, error) {
	var doc Document
	if err := json.Unmarshal(c.Document, &doc); err != nil {
		return nil, fmt.Errorf("%w: change %s: %v", ErrDocument, c.ID, err)
	}
	if doc.Plant != "" {
		plant = doc.Plant
	}
	ref := c.ExternalRef
	if ref == "" {
		ref = doc.Document
	}
	base := func(id, correlation string) *pb.Event {
		if correlation == "" {
			correlation = doc.CorrelationID
		}
		if correlation == "" {
			correlation = id
		}
		attrs := map[string]string{"erp_document": ref, "erp_change": c.ID}
		if doc.RequisitionKey != "" {
			attrs["requisition_key"] = doc.RequisitionKey
		}
		if doc.Reference != "" {
			attrs["erp_reference"] = doc.Reference
		}
		occurred := c.ChangedAt
		if occurred.IsZero() {
			occurred = now
		}
		return &pb.Event{Id: id, Plant: plant, Type: c.Kind, SchemaVersion: 1, CorrelationId: correlation, Attributes: attrs,
			Source:     &pb.Source{Name: destination, Kind: "erp", Uri: "erp://" + destination + "/" + ref},
			OccurredAt: timestamppb.New(occurred), ObservedAt: timestamppb.New(now)}
	}
	switch c.Kind {
	case KindPOApproved:
		po := doc.PurchaseOrder
		if po == "" {
			po = doc.Number
		}
		p := &pb.PoApproved{PurchaseOrder: po, Supplier: doc.Supplier, ErpReference: ref}
		for i, l := range doc.Lines {
			d, err := parseDate(l.DeliveryDate)
			if err != nil {
				return nil, fmt.Errorf("%w: change %s: lines[%d].delivery_date: %v", ErrDocument, c.ID, i, err)
			}
			p.Lines = append(p.Lines, &pb.PoLine{Line: l.Line, Item: l.Item, Quantity: &pb.Quantity{Value: l.Quantity, Unit: l.Unit}, DeliveryDate: d})
		}
		ev := base(EventID(destination, c.ID, ""), "")
		ev.Payload = &pb.Event_PoApproved{PoApproved: p}
		return []*pb.Event{ev}, nil
	case KindGoodsReceipt:
		var out []*pb.Event
		for i, l := range doc.Lines {
			part := l.Ref
			if part == "" {
				part = "line:" + l.Line
			}
			if strings.TrimSpace(part) == "line:" {
				return nil, fmt.Errorf("%w: change %s: lines[%d] has neither ref nor line", ErrDocument, c.ID, i)
			}
			po := l.PurchaseOrder
			if po == "" {
				po = doc.PurchaseOrder
			}
			ev := base(EventID(destination, c.ID, part), l.CorrelationID)
			ev.Payload = &pb.Event_GoodsReceipt{GoodsReceipt: &pb.GoodsReceipt{PurchaseOrder: po, Item: l.Item, Lot: l.Lot,
				Quantity: &pb.Quantity{Value: l.Quantity, Unit: l.Unit}, Warehouse: doc.Warehouse, Supplier: doc.Supplier, ErpReference: ref}}
			out = append(out, ev)
		}
		return out, nil
	}
	return nil, fmt.Errorf("%w: change %s: kind %q; want %s or %s", ErrDocument, c.ID, c.Kind, KindPOApproved, KindGoodsReceipt)
}
