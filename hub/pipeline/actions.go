package pipeline

import (
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/plantsync/plantsync/hub/alerts"
	"github.com/plantsync/plantsync/hub/crosswalk"
	"github.com/plantsync/plantsync/hub/decimal"
	"github.com/plantsync/plantsync/hub/schema"
	pb "github.com/plantsync/plantsync/proto/plantsync/v1"
)

// The actions workflows may route to. Connectors declare which of them
// they perform (their Configure answer); `validate` refuses a workflow that
// routes an action to a destination that does not perform it.
const (
	ActionPurchaseRequisitionCreate   = "purchase_requisition.create"
	ActionAlertRaise                  = alerts.Action
	ActionProductionOrderConfirm      = "production_order.confirm"
	ActionProductionOrderUpdateStatus = "production_order.update_status"
	ActionProductionOrderReschedule   = "production_order.reschedule"
	ActionPurchaseOrderPublish        = "purchase_order.publish"
	ActionSupplyUpdate                = "supply.update"
	ActionPurchaseOrderUpdatePromise  = "purchase_order.update_promise"
	ActionInventoryUpdate             = "inventory.update"
	ActionReceiptRecord               = "receipt.record"
	ActionInventoryBlock              = "inventory.block"
)

// actionDef builds an action's document from the canonical event.
type actionDef struct {
	name string
	// events the document can be built from; nil means any type.
	events []string
	build  func(b *builder) (doc any, orderingKey string)
}

func actionDefs() map[string]*actionDef {
	defs := []*actionDef{
		{name: ActionPurchaseRequisitionCreate, events: []string{"material.shortage"}, build: buildPurchaseRequisition},
		{name: ActionAlertRaise, build: buildAlert},
		{name: ActionProductionOrderConfirm, events: []string{"production.completion"}, build: buildConfirm},
		{name: ActionProductionOrderUpdateStatus, events: []string{"production.order.status"}, build: buildUpdateStatus},
		{name: ActionProductionOrderReschedule, events: []string{"schedule.change"}, build: buildReschedule},
		{name: ActionPurchaseOrderPublish, events: []string{"po.approved"}, build: buildPublish},
		{name: ActionSupplyUpdate, events: []string{"po.approved", "supplier.confirmation"}, build: buildSupplyUpdate},
		{name: ActionPurchaseOrderUpdatePromise, events: []string{"supplier.confirmation"}, build: buildUpdatePromise},
		{name: ActionInventoryUpdate, events: []string{"goods.receipt"}, build: buildInventoryUpdate},
		{name: ActionReceiptRecord, events: []string{"goods.receipt"}, build: buildReceiptRecord},
		{name: ActionInventoryBlock, events: []string{"quality.hold"}, build: buildInventoryBlock},
	}
	out := make(map[string]*actionDef, len(defs))
	for _, d := range defs {
		out[d.name] = d
	}
	return out
}

// Actions lists every action the pipeline can build, sorted.
func Actions() []string {
	var out []string
	for n := range actionDefs() {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

func (d *actionDef) accepts(eventType string) bool {
	if d.events == nil {
		return true
	}
	for _, e := range d.events {
		if e == eventType {
			return true
		}
	}
	return false
}

// UnmappedError is a code a crosswalk table lacks.
type UnmappedError struct {
	Kind        schema.Code
	Code        string
	Plant       string // inbound: the plant as the producer sent it
	Destination string // outbound
	Table       string
}

func (e *UnmappedError) Error() string {
	if e.Destination != "" {
		if e.Kind == schema.CodeWarehouse {
			return fmt.Sprintf("unmapped warehouse %q at plant %q for destination %q (table %s)", e.Code, e.Plant, e.Destination, e.Table)
		}
		return fmt.Sprintf("unmapped %s %q for destination %q (table %s)", e.Kind, e.Code, e.Destination, e.Table)
	}
	if e.Kind == schema.CodePlant {
		return fmt.Sprintf("unmapped plant %q (table %s)", e.Code, e.Table)
	}
	return fmt.Sprintf("unmapped %s %q at plant %q", e.Kind, e.Code, e.Plant)
}

// builder gives document builders the canonical event and the outbound
// mappings of one destination.
type builder struct {
	ev    *pb.Event
	dest  string
	set   *crosswalk.Set
	at    time.Time
	used  map[string]uint64
	errs  []error
	plant string // canonical plant
}

func (b *builder) table(kind schema.Code) (*crosswalk.Table, bool) {
	name := crosswalk.OutboundTable(b.dest, kind)
	t, ok := b.set.Table(name)
	if ok {
		b.used[name] = t.Version
	}
	return t, ok
}

func (b *builder) code(kind schema.Code, code string) string {
	if code == "" {
		return ""
	}
	t, ok := b.table(kind)
	if !ok {
		return code
	}
	v, found := t.Lookup(b.at, code)
	if !found {
		b.errs = append(b.errs, &UnmappedError{Kind: kind, Code: code, Destination: b.dest, Table: t.Spec.Name})
		return code
	}
	return v[0]
}

func (b *builder) item(code string) string     { return b.code(schema.CodeItem, code) }
func (b *builder) supplier(code string) string { return b.code(schema.CodeSupplier, code) }
func (b *builder) plantCode() string           { return b.code(schema.CodePlant, b.plant) }

func (b *builder) warehouse(code string) string {
	t, ok := b.table(schema.CodeWarehouse)
	if !ok {
		return code
	}
	v, found := t.Lookup(b.at, b.plant, code)
	if !found {
		b.errs = append(b.errs, &UnmappedError{Kind: schema.CodeWarehouse, Code: code, Plant: b.plant, Destination: b.dest, Table: t.Spec.Name})
		return code
	}
	return v[0]
}

// quantity converts a canonical quantity into the destination's unit,
// rounding half up to the unit's decimals when the table gives them.
func (b *builder) quantity(q *pb.Quantity) (value, unit string) {
	if q == nil {
		return "", ""
	}
	t, ok := b.table(schema.CodeUnit)
	if !ok {
		return q.GetValue(), q.GetUnit()
	}
	v, found := t.Lookup(b.at, q.GetUnit())
	if !found {
		b.errs = append(b.errs, &UnmappedError{Kind: schema.CodeUnit, Code: q.GetUnit(), Destination: b.dest, Table: t.Spec.Name})
		return q.GetValue(), q.GetUnit()
	}
	out, err := convert(q.GetValue(), v[1], v[2])
	if err != nil {
		b.errs = append(b.errs, fmt.Errorf("%w: %s %s to %s for destination %q: %v", errConversion, q.GetValue(), q.GetUnit(), v[0], b.dest, err))
		return q.GetValue(), q.GetUnit()
	}
	return out, v[0]
}

var errConversion = errors.New("unit conversion failed")

// convert multiplies value by factor; decimals, when given, fixes the
// scale (half up). A factor of 1 keeps the value as sent; other products
// drop trailing zeros.
func convert(value, factor, decimals string) (string, error) {
	d, err := decimal.Parse(value)
	if err != nil {
		return "", err
	}
	if factor != "1" {
		f, err := decimal.Parse(factor)
		if err != nil {
			return "", err
		}
		if d, err = d.Mul(f); err != nil {
			return "", err
		}
		d = d.Normalize()
	}
	if decimals != "" {
		n, err := strconv.Atoi(decimals)
		if err != nil || n < 0 || n > decimal.MaxScale {
			return "", fmt.Errorf("decimals %q", decimals)
		}
		d = d.Round(int32(n), decimal.HalfUp)
	}
	return d.String(), nil
}

func ts(t interface{ AsTime() time.Time }, valid bool) *time.Time {
	if !valid {
		return nil
	}
	v := t.AsTime().UTC()
	return &v
}

// Common fields of every document: where it came from, so the correlation
// id travels into the target system (DESIGN.md rule 7).
type docHeader struct {
	CorrelationID string    `json:"correlation_id"`
	EventID       string    `json:"event_id"`
	Plant         string    `json:"plant"`
	OccurredAt    time.Time `json:"occurred_at"`
}

func (b *builder) header() docHeader {
	return docHeader{CorrelationID: correlationID(b.ev), EventID: b.ev.GetId(), Plant: b.plantCode(), OccurredAt: b.ev.GetOccurredAt().AsTime().UTC()}
}

func correlationID(ev *pb.Event) string {
	if c := ev.GetCorrelationId(); c != "" {
		return c
	}
	return ev.GetId()
}

func key(parts ...string) string { return strings.Join(parts, ":") }

// PurchaseRequisition is the document of purchase_requisition.create.
type PurchaseRequisition struct {
	docHeader
	Item            string     `json:"item"`
	Quantity        string     `json:"quantity"`
	Unit            string     `json:"unit"`
	RequiredBy      *time.Time `json:"required_by,omitempty"`
	Warehouse       string     `json:"warehouse,omitempty"`
	ProductionOrder string     `json:"production_order,omitempty"`
	WorkCenter      string     `json:"work_center,omitempty"`
}

func buildPurchaseRequisition(b *builder) (any, string) {
	s := b.ev.GetMaterialShortage()
	qty, unit := b.quantity(s.GetQuantity())
	return PurchaseRequisition{docHeader: b.header(), Item: b.item(s.GetItem()), Quantity: qty, Unit: unit,
			RequiredBy: ts(s.GetRequiredBy(), s.GetRequiredBy() != nil), Warehouse: b.warehouse(s.GetWarehouse()),
			ProductionOrder: s.GetOrder(), WorkCenter: s.GetWorkCenter()},
		key("shortage", b.plant, s.GetItem())
}

func buildAlert(b *builder) (any, string) {
	ev := b.ev
	d := alerts.Document{Severity: alerts.SeverityWarning, Plant: b.plant, EventType: ev.GetType(), EventID: ev.GetId(),
		CorrelationID: correlationID(ev), OccurredAt: ev.GetOccurredAt().AsTime().UTC(), Details: map[string]string{}}
	switch p := ev.GetPayload().(type) {
	case *pb.Event_MaterialShortage:
		s := p.MaterialShortage
		d.Title = fmt.Sprintf("Material shortage: %s at %s", s.GetItem(), b.plant)
		d.Message = fmt.Sprintf("%s %s of %s missing", s.GetQuantity().GetValue(), s.GetQuantity().GetUnit(), s.GetItem())
		if s.GetOrder() != "" {
			d.Message += " for order " + s.GetOrder()
		}
		if s.RequiredBy != nil {
			d.Message += ", required by " + s.GetRequiredBy().AsTime().UTC().Format(time.DateOnly)
		}
		d.Details["item"], d.Details["order"], d.Details["work_center"] = s.GetItem(), s.GetOrder(), s.GetWorkCenter()
	case *pb.Event_QualityHold:
		q := p.QualityHold
		d.Title = fmt.Sprintf("Quality hold: %s lot %s at %s", q.GetItem(), q.GetLot(), b.plant)
		d.Message = "Held: " + q.GetReason()
		d.Details["item"], d.Details["lot"] = q.GetItem(), q.GetLot()
	case *pb.Event_BufferOverflow:
		d.Severity = alerts.SeverityCritical
		n, ranges := droppedSummary(p.BufferOverflow)
		d.Title = fmt.Sprintf("Agent buffer overflow at %s: %d events dropped", b.plant, n)
		d.Message = fmt.Sprintf("The agent's buffer was full and dropped sequences %s under policy %s.", ranges, p.BufferOverflow.GetPolicy())
		d.Details["dropped"] = fmt.Sprint(n)
		d.Details["source"] = ev.GetSource().GetUri()
	case *pb.Event_SourceError:
		d.Title = fmt.Sprintf("Source error at %s: %s", b.plant, ev.GetSource().GetName())
		d.Message = p.SourceError.GetReason()
		d.Details["location"] = p.SourceError.GetLocation()
		d.Details["quarantine_id"] = p.SourceError.GetQuarantineId()
	default:
		d.Severity = alerts.SeverityInfo
		d.Title = fmt.Sprintf("%s at %s", ev.GetType(), b.plant)
		d.Message = fmt.Sprintf("Event %s of type %s.", ev.GetId(), ev.GetType())
	}
	for k, v := range d.Details {
		if v == "" {
			delete(d.Details, k)
		}
	}
	if len(d.Details) == 0 {
		d.Details = nil
	}
	return d, key("alert", b.plant, ev.GetType())
}

// ProductionConfirmation is the document of production_order.confirm.
type ProductionConfirmation struct {
	docHeader
	ProductionOrder string `json:"production_order"`
	Operation       string `json:"operation,omitempty"`
	Item            string `json:"item"`
	WorkCenter      string `json:"work_center,omitempty"`
	GoodQuantity    string `json:"good_quantity"`
	ScrapQuantity   string `json:"scrap_quantity,omitempty"`
	Unit            string `json:"unit"`
	Lot             string `json:"lot,omitempty"`
}

func buildConfirm(b *builder) (any, string) {
	c := b.ev.GetProductionCompletion()
	good, unit := b.quantity(c.GetGood())
	var scrap string
	if c.GetScrap() != nil {
		var scrapUnit string
		scrap, scrapUnit = b.quantity(c.GetScrap())
		if scrapUnit != unit {
			b.errs = append(b.errs, fmt.Errorf("%w: scrap in %s, good in %s; report both in one unit", errConversion, scrapUnit, unit))
		}
	}
	return ProductionConfirmation{docHeader: b.header(), ProductionOrder: c.GetOrder(), Operation: c.GetOperation(), Item: b.item(c.GetItem()),
		WorkCenter: c.GetWorkCenter(), GoodQuantity: good, ScrapQuantity: scrap, Unit: unit, Lot: c.GetLot()}, key("order", b.plant, c.GetOrder())
}

// ProductionStatus is the document of production_order.update_status.
type ProductionStatus struct {
	docHeader
	ProductionOrder string `json:"production_order"`
	Status          string `json:"status"`
	WorkCenter      string `json:"work_center,omitempty"`
}

func buildUpdateStatus(b *builder) (any, string) {
	s := b.ev.GetProductionOrderStatus()
	return ProductionStatus{docHeader: b.header(), ProductionOrder: s.GetOrder(), Status: s.GetStatus(), WorkCenter: s.GetWorkCenter()},
		key("order", b.plant, s.GetOrder())
}

// Reschedule is the document of production_order.reschedule.
type Reschedule struct {
	docHeader
	ProductionOrder  string     `json:"production_order"`
	Item             string     `json:"item,omitempty"`
	PreviousStart    *time.Time `json:"previous_start,omitempty"`
	NewStart         *time.Time `json:"new_start,omitempty"`
	PreviousQuantity string     `json:"previous_quantity,omitempty"`
	NewQuantity      string     `json:"new_quantity,omitempty"`
	Unit             string     `json:"unit,omitempty"`
	WorkCenter       string     `json:"work_center,omitempty"`
	TargetPlant      string     `json:"target_plant,omitempty"`
}

func buildReschedule(b *builder) (any, string) {
	s := b.ev.GetScheduleChange()
	prev, unit := b.quantity(s.GetPreviousQuantity())
	next, nunit := b.quantity(s.GetNewQuantity())
	if unit == "" {
		unit = nunit
	}
	doc := Reschedule{docHeader: b.header(), ProductionOrder: s.GetOrder(), Item: b.item(s.GetItem()),
		PreviousStart: ts(s.GetPreviousStart(), s.PreviousStart != nil), NewStart: ts(s.GetNewStart(), s.NewStart != nil),
		PreviousQuantity: prev, NewQuantity: next, Unit: unit, WorkCenter: s.GetWorkCenter()}
	if s.GetTargetPlant() != "" {
		doc.TargetPlant = b.code(schema.CodePlant, s.GetTargetPlant())
	}
	return doc, key("order", b.plant, s.GetOrder())
}

// OrderLine is a purchase order line in destination codes.
type OrderLine struct {
	Line     string     `json:"line"`
	Item     string     `json:"item,omitempty"`
	Quantity string     `json:"quantity"`
	Unit     string     `json:"unit"`
	Date     *time.Time `json:"date,omitempty"`
}

// PurchaseOrder is the document of purchase_order.publish.
type PurchaseOrder struct {
	docHeader
	PurchaseOrder string      `json:"purchase_order"`
	Supplier      string      `json:"supplier"`
	ERPReference  string      `json:"erp_reference,omitempty"`
	Lines         []OrderLine `json:"lines"`
}

func (b *builder) poLines(lines []*pb.PoLine) []OrderLine {
	out := make([]OrderLine, 0, len(lines))
	for _, l := range lines {
		q, u := b.quantity(l.GetQuantity())
		out = append(out, OrderLine{Line: l.GetLine(), Item: b.item(l.GetItem()), Quantity: q, Unit: u, Date: ts(l.GetDeliveryDate(), l.DeliveryDate != nil)})
	}
	return out
}

func (b *builder) confirmationLines(lines []*pb.ConfirmationLine) []OrderLine {
	out := make([]OrderLine, 0, len(lines))
	for _, l := range lines {
		q, u := b.quantity(l.GetQuantity())
		out = append(out, OrderLine{Line: l.GetLine(), Item: b.item(l.GetItem()), Quantity: q, Unit: u, Date: ts(l.GetPromisedDate(), l.PromisedDate != nil)})
	}
	return out
}

func buildPublish(b *builder) (any, string) {
	p := b.ev.GetPoApproved()
	return PurchaseOrder{docHeader: b.header(), PurchaseOrder: p.GetPurchaseOrder(), Supplier: b.supplier(p.GetSupplier()),
		ERPReference: p.GetErpReference(), Lines: b.poLines(p.GetLines())}, key("po", p.GetPurchaseOrder())
}

// SupplyUpdate is the document of supply.update: planned supply of a
// purchase order as ordered (po.approved) or as promised
// (supplier.confirmation).
type SupplyUpdate struct {
	docHeader
	Basis         string      `json:"basis"` // ordered or promised
	PurchaseOrder string      `json:"purchase_order"`
	Supplier      string      `json:"supplier,omitempty"`
	Lines         []OrderLine `json:"lines"`
}

func buildSupplyUpdate(b *builder) (any, string) {
	doc := SupplyUpdate{docHeader: b.header()}
	switch p := b.ev.GetPayload().(type) {
	case *pb.Event_PoApproved:
		doc.Basis, doc.PurchaseOrder, doc.Supplier, doc.Lines = "ordered", p.PoApproved.GetPurchaseOrder(), b.supplier(p.PoApproved.GetSupplier()), b.poLines(p.PoApproved.GetLines())
	case *pb.Event_SupplierConfirmation:
		c := p.SupplierConfirmation
		doc.Basis, doc.PurchaseOrder, doc.Supplier, doc.Lines = "promised", c.GetPurchaseOrder(), b.supplier(c.GetSupplier()), b.confirmationLines(c.GetLines())
	}
	return doc, key("po", doc.PurchaseOrder)
}

// PromiseUpdate is the document of purchase_order.update_promise: the
// supplier's promised dates and quantities set on the order lines. It
// never re-confirms the order.
type PromiseUpdate struct {
	docHeader
	PurchaseOrder string      `json:"purchase_order"`
	Supplier      string      `json:"supplier,omitempty"`
	Lines         []OrderLine `json:"lines"`
}

func buildUpdatePromise(b *builder) (any, string) {
	c := b.ev.GetSupplierConfirmation()
	return PromiseUpdate{docHeader: b.header(), PurchaseOrder: c.GetPurchaseOrder(), Supplier: b.supplier(c.GetSupplier()),
		Lines: b.confirmationLines(c.GetLines())}, key("po", c.GetPurchaseOrder())
}

// InventoryUpdate is the document of inventory.update.
type InventoryUpdate struct {
	docHeader
	Movement      string `json:"movement"` // receipt
	Item          string `json:"item"`
	Quantity      string `json:"quantity"`
	Unit          string `json:"unit"`
	Warehouse     string `json:"warehouse,omitempty"`
	Lot           string `json:"lot,omitempty"`
	PurchaseOrder string `json:"purchase_order,omitempty"`
}

func buildInventoryUpdate(b *builder) (any, string) {
	g := b.ev.GetGoodsReceipt()
	q, u := b.quantity(g.GetQuantity())
	return InventoryUpdate{docHeader: b.header(), Movement: "receipt", Item: b.item(g.GetItem()), Quantity: q, Unit: u,
		Warehouse: b.warehouse(g.GetWarehouse()), Lot: g.GetLot(), PurchaseOrder: g.GetPurchaseOrder()}, key("item", b.plant, g.GetItem())
}

// ReceiptRecord is the document of receipt.record.
type ReceiptRecord struct {
	docHeader
	PurchaseOrder string `json:"purchase_order"`
	Item          string `json:"item"`
	Quantity      string `json:"quantity"`
	Unit          string `json:"unit"`
	Supplier      string `json:"supplier,omitempty"`
	Lot           string `json:"lot,omitempty"`
	Warehouse     string `json:"warehouse,omitempty"`
	ERPReference  string `json:"erp_reference,omitempty"`
}

func buildReceiptRecord(b *builder) (any, string) {
	g := b.ev.GetGoodsReceipt()
	q, u := b.quantity(g.GetQuantity())
	return ReceiptRecord{docHeader: b.header(), PurchaseOrder: g.GetPurchaseOrder(), Item: b.item(g.GetItem()), Quantity: q, Unit: u,
		Supplier: b.supplier(g.GetSupplier()), Lot: g.GetLot(), Warehouse: b.warehouse(g.GetWarehouse()), ERPReference: g.GetErpReference()}, key("po", g.GetPurchaseOrder())
}

// InventoryBlock is the document of inventory.block; Blocked false lifts
// the block (the hold was released).
type InventoryBlock struct {
	docHeader
	Item     string `json:"item"`
	Lot      string `json:"lot,omitempty"`
	Quantity string `json:"quantity,omitempty"`
	Unit     string `json:"unit,omitempty"`
	Reason   string `json:"reason"`
	Blocked  bool   `json:"blocked"`
}

func buildInventoryBlock(b *builder) (any, string) {
	q := b.ev.GetQualityHold()
	qty, u := b.quantity(q.GetQuantity())
	return InventoryBlock{docHeader: b.header(), Item: b.item(q.GetItem()), Lot: q.GetLot(), Quantity: qty, Unit: u,
		Reason: q.GetReason(), Blocked: !q.GetReleased()}, key("item", b.plant, q.GetItem())
}

// marshalDoc encodes a document.
func marshalDoc(doc any) (json.RawMessage, error) { return json.Marshal(doc) }
