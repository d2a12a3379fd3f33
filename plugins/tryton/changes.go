package main

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/plantsync/plantsync/plugins/sdk"
)

// The change kinds this connector reports: the canonical event types they
// become at the hub (hub/capture).
const (
	KindPOApproved   = "po.approved"
	KindGoodsReceipt = "goods.receipt"
)

// purchaseApproved are the purchase states a confirmed order passes
// through; reaching any of them is one approval, however many of them a poll
// sees, because the change id names the purchase, not the state.
var purchaseApproved = []any{"confirmed", "processing", "done"}

// changeCursor is where the last page ended in each document stream. Both
// streams are ordered by (write_date, id), so a document written again
// later shows up again: with the same change id, which the hub's dedup
// absorbs.
type changeCursor struct {
	Purchase streamPos `json:"p"`
	Shipment streamPos `json:"s"`
}

// streamPos is where one stream goes on, and what it has reported lately.
//
// On PostgreSQL Tryton dates write_date at the start of the writing
// transaction, so a transaction that runs long commits records dated
// before records another one committed, and already read, meanwhile.
// Reading strictly after the last record would skip them for good. So once
// a stream has caught up it goes back the settle window (changes_settle)
// before the newest write_date it read, and reads that stretch again,
// reporting only the records it has not reported yet (Seen).
type streamPos struct {
	// At is write_date in UTC, RFC 3339 with microseconds; "" from the start.
	At string `json:"t,omitempty"`
	ID int    `json:"id,omitempty"`
	// Front is the newest write_date read (Unix microseconds).
	Front int64 `json:"f,omitempty"`
	// Seen are the records reported whose write_date is within the settle
	// window before Front: [id, write_date in Unix microseconds].
	Seen [][2]int64 `json:"s,omitempty"`
	// Waits is set once the stream has caught up while the other one still
	// has pages: it reads again only at the next poll, so that a poll reads
	// each settle window once.
	Waits bool `json:"w,omitempty"`
}

// maxSeen bounds the records a cursor remembers per stream. Beyond it the
// oldest are forgotten: read again, they are reported again, and the hub's
// dedup drops them.
const maxSeen = 2000

// rowKey is what a cursor needs of a record read.
type rowKey struct {
	ID int
	At time.Time
}

// read moves the position over rows (one page of at most limit, in
// (write_date, id) order) and reports which of them to report: those not
// reported before. more is set when the page was full. A stream that has
// caught up goes back the settle window (0: never).
func (p *streamPos) read(rows []rowKey, limit int, settle time.Duration) (report []bool, more bool) {
	seen := make(map[int]int64, len(p.Seen))
	for _, s := range p.Seen {
		seen[int(s[0])] = s[1]
	}
	report = make([]bool, len(rows))
	for i, r := range rows {
		at := r.At.UnixMicro()
		_, done := seen[r.ID]
		report[i] = !done
		if settle > 0 {
			seen[r.ID] = at
		}
		p.At, p.ID = r.At.UTC().Format(time.RFC3339Nano), r.ID
		p.Front = max(p.Front, at)
	}
	more = len(rows) == limit
	p.Seen = p.Seen[:0]
	if settle <= 0 {
		p.Seen = nil
		return report, more
	}
	from := p.Front - settle.Microseconds()
	for id, at := range seen {
		if at >= from {
			p.Seen = append(p.Seen, [2]int64{int64(id), at})
		}
	}
	// Oldest first, so that the cap forgets the oldest; stable encoding.
	sort.Slice(p.Seen, func(i, j int) bool {
		a, b := p.Seen[i], p.Seen[j]
		return a[1] < b[1] || a[1] == b[1] && a[0] < b[0]
	})
	if n := len(p.Seen); n > maxSeen {
		p.Seen = p.Seen[n-maxSeen:]
	}
	if len(p.Seen) == 0 {
		p.Seen = nil
	}
	if !more && p.Front > 0 {
		p.At, p.ID = time.UnixMicro(from).UTC().Format(time.RFC3339Nano), 0
	}
	return report, more
}

func decodeCursor(s string) (changeCursor, error) {
	var c changeCursor
	if s == "" {
		return c, nil
	}
	raw, err := base64.RawURLEncoding.DecodeString(s)
	if err == nil {
		err = json.Unmarshal(raw, &c)
	}
	if err != nil {
		return c, fmt.Errorf("%w: cursor %q is not one this connector wrote", errDocument, s)
	}
	return c, nil
}

func (c changeCursor) encode() string {
	raw, _ := json.Marshal(c)
	return base64.RawURLEncoding.EncodeToString(raw)
}

// datetime is Tryton's JSON encoding of a datetime (UTC on the server).
type datetime struct {
	Class       string `json:"__class__"`
	Year        int    `json:"year"`
	Month       int    `json:"month"`
	Day         int    `json:"day"`
	Hour        int    `json:"hour"`
	Minute      int    `json:"minute"`
	Second      int    `json:"second"`
	Microsecond int    `json:"microsecond"`
}

func (d *datetime) time() time.Time {
	if d == nil {
		return time.Time{}
	}
	return time.Date(d.Year, time.Month(d.Month), d.Day, d.Hour, d.Minute, d.Second, d.Microsecond*1000, time.UTC)
}

func encodeDatetime(t time.Time) datetime {
	t = t.UTC()
	return datetime{Class: "datetime", Year: t.Year(), Month: int(t.Month()), Day: t.Day(), Hour: t.Hour(), Minute: t.Minute(),
		Second: t.Second(), Microsecond: t.Nanosecond() / 1000}
}

// after is the domain of records written after pos, in (write_date, id)
// order.
func (p streamPos) after() []any {
	if p.At == "" {
		return []any{[]any{"write_date", "!=", nil}}
	}
	t, err := time.Parse(time.RFC3339Nano, p.At)
	if err != nil {
		return []any{[]any{"write_date", "!=", nil}}
	}
	at := encodeDatetime(t)
	return []any{"OR", []any{[]any{"write_date", ">", at}}, []any{[]any{"write_date", "=", at}, []any{"id", ">", p.ID}}}
}

// ChangeDocument is the document of a change (sdk.Change.Document), the
// contract hub/capture reads: a purchase order (po.approved) or an incoming
// shipment (goods.receipt) in Tryton's codes.
type ChangeDocument struct {
	// Document is the Tryton record, e.g. "purchase.purchase,12".
	Document      string `json:"document"`
	Number        string `json:"number"`
	Reference     string `json:"reference,omitempty"`
	State         string `json:"state"`
	PurchaseOrder string `json:"purchase_order,omitempty"`
	Supplier      string `json:"supplier"`
	SupplierName  string `json:"supplier_name,omitempty"`
	Warehouse     string `json:"warehouse,omitempty"`
	// CorrelationID and RequisitionKey are set when the purchase came
	// from a purchase request plantsync created (its description carries
	// the marker and the correlation id).
	CorrelationID  string       `json:"correlation_id,omitempty"`
	RequisitionKey string       `json:"requisition_key,omitempty"`
	Lines          []ChangeLine `json:"lines"`
}

// ChangeLine is one purchase line or one received move.
type ChangeLine struct {
	Line string `json:"line"`
	// Ref is the Tryton record of the line ("purchase.line,7",
	// "stock.move,9"), stable for the line's life.
	Ref           string `json:"ref"`
	Item          string `json:"item"`
	Quantity      string `json:"quantity"`
	Unit          string `json:"unit,omitempty"`
	DeliveryDate  string `json:"delivery_date,omitempty"` // YYYY-MM-DD
	PurchaseOrder string `json:"purchase_order,omitempty"`
	// CorrelationID of the plantsync requisition the line's purchase came
	// from, if any.
	CorrelationID string `json:"correlation_id,omitempty"`
}

type partyRef struct {
	Name string `json:"name"`
	Code string `json:"code"`
}

func (p *partyRef) code() string {
	if p == nil {
		return ""
	}
	if p.Code != "" {
		return p.Code
	}
	return p.Name
}

func (p *partyRef) name() string {
	if p == nil {
		return ""
	}
	return p.Name
}

type codeRef struct {
	Code   string `json:"code"`
	Symbol string `json:"symbol"`
}

func (c *codeRef) code() string {
	if c == nil {
		return ""
	}
	return c.Code
}

func (c *codeRef) symbol() string {
	if c == nil {
		return ""
	}
	return c.Symbol
}

func formatQty(q float64) string { return strconv.FormatFloat(q, 'f', -1, 64) }

func dateString(d *date) string {
	if d == nil {
		return ""
	}
	return d.time().Format(time.DateOnly)
}

// Changes implements sdk.Destination (capability "changes"): purchases
// that reached confirmed (or later) as po.approved, incoming shipments that
// reached done as goods.receipt, each once per document. Documents
// plantsync created carry its marker and are not reported.
func (c *Connector) Changes(ctx context.Context, req sdk.ChangesRequest) (sdk.ChangesResponse, error) {
	cfg, _, err := c.current()
	if err != nil {
		return sdk.ChangesResponse{}, err
	}
	cur, err := decodeCursor(req.Cursor)
	if err != nil {
		return sdk.ChangesResponse{}, err
	}
	limit := req.Limit
	if limit <= 0 || limit > 500 {
		limit = 100
	}
	var out sdk.ChangesResponse
	var pch, sch []sdk.Change
	var pmore, smore bool
	if !cur.Purchase.Waits {
		if pch, pmore, err = c.purchaseChanges(ctx, cfg, &cur.Purchase, limit); err != nil {
			return sdk.ChangesResponse{}, fmt.Errorf("purchases: %w", err)
		}
	}
	if !cur.Shipment.Waits {
		if sch, smore, err = c.shipmentChanges(ctx, cfg, &cur.Shipment, limit); err != nil {
			return sdk.ChangesResponse{}, fmt.Errorf("incoming shipments: %w", err)
		}
	}
	// A stream that caught up waits while the other pages on; when both
	// have, the poll is over and both read at the next one.
	more := pmore || smore
	cur.Purchase.Waits, cur.Shipment.Waits = more && !pmore, more && !smore
	out.Changes = append(pch, sch...)
	sort.SliceStable(out.Changes, func(i, j int) bool { return out.Changes[i].ChangedAt.Before(out.Changes[j].ChangedAt) })
	out.NextCursor, out.More = cur.encode(), more
	return out, nil
}

type purchaseRow struct {
	ID          int       `json:"id"`
	Number      string    `json:"number"`
	Reference   string    `json:"reference"`
	Description string    `json:"description"`
	State       string    `json:"state"`
	WriteDate   *datetime `json:"write_date"`
	Party       *partyRef `json:"party."`
	Warehouse   *codeRef  `json:"warehouse."`
}

type lineRow struct {
	ID           int      `json:"id"`
	Purchase     int      `json:"purchase"`
	Sequence     *int     `json:"sequence"`
	Quantity     float64  `json:"quantity"`
	DeliveryDate *date    `json:"delivery_date"`
	Product      *codeRef `json:"product."`
	Unit         *codeRef `json:"unit."`
}

// ownMarked reports whether one of the texts carries plantsync's marker:
// the document is plantsync's own write and must not come back as an
// inbound event.
func ownMarked(texts ...string) bool {
	for _, s := range texts {
		if markerRE.MatchString(s) {
			return true
		}
	}
	return false
}

func (c *Connector) purchaseChanges(ctx context.Context, cfg Config, pos *streamPos, limit int) ([]sdk.Change, bool, error) {
	_, rpc, err := c.current()
	if err != nil {
		return nil, false, err
	}
	rows, more, err := changedRows(ctx, c, rpc, "purchase.purchase", []any{[]any{"state", "in", purchaseApproved}},
		[]string{"id", "number", "reference", "description", "state", "write_date", "party.name", "party.code", "warehouse.code"},
		cfg, pos, limit, func(r purchaseRow) rowKey { return rowKey{ID: r.ID, At: r.WriteDate.time()} })
	if err != nil || len(rows) == 0 {
		return nil, more, err
	}
	ids := make([]any, len(rows))
	for i, r := range rows {
		ids[i] = r.ID
	}
	var lines []lineRow
	if err := rpc.call(ctx, "model.purchase.line.search_read", []any{[]any{[]any{"purchase", "in", ids}, []any{"type", "=", "line"}}, 0, nil,
		[]any{[]any{"purchase", "ASC"}, []any{"sequence", "ASC"}, []any{"id", "ASC"}},
		[]string{"id", "purchase", "sequence", "quantity", "delivery_date", "product.code", "unit.symbol"}, c.ctx()}, &lines); err != nil {
		return nil, false, err
	}
	reqs, err := c.requisitionsOf(ctx, ids)
	if err != nil {
		return nil, false, err
	}
	byPurchase := map[int][]lineRow{}
	for _, l := range lines {
		byPurchase[l.Purchase] = append(byPurchase[l.Purchase], l)
	}
	var out []sdk.Change
	for _, r := range rows {
		if ownMarked(r.Reference, r.Description) {
			continue
		}
		doc := ChangeDocument{Document: fmt.Sprintf("purchase.purchase,%d", r.ID), Number: r.Number, Reference: r.Reference, State: r.State,
			PurchaseOrder: r.Number, Supplier: r.Party.code(), SupplierName: r.Party.name(), Warehouse: r.Warehouse.code()}
		if q, ok := reqs[r.ID]; ok {
			doc.CorrelationID, doc.RequisitionKey = q.correlation, q.key
		}
		for i, l := range byPurchase[r.ID] {
			doc.Lines = append(doc.Lines, ChangeLine{Line: strconv.Itoa(i + 1), Ref: fmt.Sprintf("purchase.line,%d", l.ID), Item: l.Product.code(),
				Quantity: formatQty(l.Quantity), Unit: l.Unit.symbol(), DeliveryDate: dateString(l.DeliveryDate), PurchaseOrder: r.Number})
		}
		raw, err := json.Marshal(doc)
		if err != nil {
			return nil, false, err
		}
		out = append(out, sdk.Change{ID: doc.Document + ":approved", Kind: KindPOApproved, ExternalRef: doc.Document,
			ChangedAt: r.WriteDate.time(), Document: raw})
	}
	return out, more, nil
}

// changedRows reads the next rows of model in the company that match
// filter and were written after pos, oldest first, and keeps those not
// reported before (streamPos.read, which also steps back over the
// changes_settle window once the stream has caught up).
func changedRows[T any](ctx context.Context, c *Connector, rpc *client, model string, filter []any, fields []string,
	cfg Config, pos *streamPos, limit int, key func(T) rowKey) (rows []T, more bool, err error) {
	domain := append([]any{[]any{"company", "=", cfg.Company}}, filter...)
	domain = append(domain, pos.after())
	if err := rpc.call(ctx, "model."+model+".search_read", []any{domain, 0, limit, []any{[]any{"write_date", "ASC"}, []any{"id", "ASC"}},
		fields, c.ctx()}, &rows); err != nil {
		return nil, false, err
	}
	keys := make([]rowKey, len(rows))
	for i, r := range rows {
		keys[i] = key(r)
	}
	report, more := pos.read(keys, limit, cfg.ChangesSettle.D())
	return keep(rows, report), more, nil
}

// keep returns the rows whose report flag is set, in order.
func keep[T any](rows []T, report []bool) []T {
	out := rows[:0]
	for i, r := range rows {
		if report[i] {
			out = append(out, r)
		}
	}
	return out
}

// requisition is what a plantsync purchase request tells about a purchase.
type requisitionInfo struct{ key, correlation string }

var correlationRE = regexp.MustCompile(`(?m)^Correlation: (\S+)$`)

// requisitionsOf finds, per purchase id, the plantsync purchase request
// it was made from (through the request's purchase line).
func (c *Connector) requisitionsOf(ctx context.Context, purchaseIDs []any) (map[int]requisitionInfo, error) {
	_, rpc, err := c.current()
	if err != nil {
		return nil, err
	}
	var rows []struct {
		Description  string `json:"description"`
		PurchaseLine *struct {
			Purchase int `json:"purchase"`
		} `json:"purchase_line."`
	}
	if err := rpc.call(ctx, "model.purchase.request.search_read", []any{[]any{[]any{"purchase_line.purchase", "in", purchaseIDs},
		[]any{"description", "like", "%[plantsync:%"}}, 0, nil, []any{[]any{"id", "ASC"}}, []string{"description", "purchase_line.purchase"}, c.ctx()}, &rows); err != nil {
		return nil, err
	}
	out := map[int]requisitionInfo{}
	for _, r := range rows {
		m := markerRE.FindStringSubmatch(r.Description)
		if m == nil || r.PurchaseLine == nil {
			continue
		}
		if _, seen := out[r.PurchaseLine.Purchase]; seen {
			continue // several requests in one purchase: the first one's correlation
		}
		info := requisitionInfo{key: m[1]}
		if cm := correlationRE.FindStringSubmatch(r.Description); cm != nil {
			info.correlation = cm[1]
		}
		out[r.PurchaseLine.Purchase] = info
	}
	return out, nil
}

type shipmentRow struct {
	ID        int       `json:"id"`
	Number    string    `json:"number"`
	Reference string    `json:"reference"`
	State     string    `json:"state"`
	WriteDate *datetime `json:"write_date"`
	Supplier  *partyRef `json:"supplier."`
	Warehouse *codeRef  `json:"warehouse."`
}

type moveRow struct {
	ID       int      `json:"id"`
	Shipment string   `json:"shipment"`
	Quantity float64  `json:"quantity"`
	Origin   *string  `json:"origin"`
	Product  *codeRef `json:"product."`
	UOM      *codeRef `json:"uom."`
	Date     *date    `json:"effective_date"`
}

func (c *Connector) shipmentChanges(ctx context.Context, cfg Config, pos *streamPos, limit int) ([]sdk.Change, bool, error) {
	_, rpc, err := c.current()
	if err != nil {
		return nil, false, err
	}
	rows, more, err := changedRows(ctx, c, rpc, "stock.shipment.in", []any{[]any{"state", "=", "done"}},
		[]string{"id", "number", "reference", "state", "write_date", "supplier.name", "supplier.code", "warehouse.code"},
		cfg, pos, limit, func(r shipmentRow) rowKey { return rowKey{ID: r.ID, At: r.WriteDate.time()} })
	if err != nil || len(rows) == 0 {
		return nil, more, err
	}
	refs := make([]any, len(rows))
	for i, r := range rows {
		refs[i] = fmt.Sprintf("stock.shipment.in,%d", r.ID)
	}
	// The incoming moves (supplier → input) are what was received; the
	// inventory moves only put it away.
	var moves []moveRow
	if err := rpc.call(ctx, "model.stock.move.search_read", []any{[]any{[]any{"shipment", "in", refs}, []any{"from_location.type", "=", "supplier"},
		[]any{"state", "=", "done"}}, 0, nil, []any{[]any{"id", "ASC"}},
		[]string{"id", "shipment", "quantity", "origin", "product.code", "uom.symbol", "effective_date"}, c.ctx()}, &moves); err != nil {
		return nil, false, err
	}
	// Moves made from purchase lines name their purchase.
	lineIDs := []any{}
	for _, m := range moves {
		if id, ok := refID(m.Origin, "purchase.line"); ok {
			lineIDs = append(lineIDs, id)
		}
	}
	linePO := map[int]struct {
		number   string
		purchase int
	}{}
	purchaseIDs := []any{}
	if len(lineIDs) > 0 {
		var pl []struct {
			ID       int `json:"id"`
			Purchase *struct {
				ID     int    `json:"id"`
				Number string `json:"number"`
			} `json:"purchase."`
		}
		if err := rpc.call(ctx, "model.purchase.line.read", []any{lineIDs, []string{"id", "purchase.number"}, c.ctx()}, &pl); err != nil {
			return nil, false, err
		}
		for _, l := range pl {
			if l.Purchase != nil {
				linePO[l.ID] = struct {
					number   string
					purchase int
				}{l.Purchase.Number, l.Purchase.ID}
				purchaseIDs = append(purchaseIDs, l.Purchase.ID)
			}
		}
	}
	reqs := map[int]requisitionInfo{}
	if len(purchaseIDs) > 0 {
		if reqs, err = c.requisitionsOf(ctx, purchaseIDs); err != nil {
			return nil, false, err
		}
	}
	byShipment := map[string][]moveRow{}
	for _, m := range moves {
		byShipment[m.Shipment] = append(byShipment[m.Shipment], m)
	}
	var out []sdk.Change
	for _, r := range rows {
		if ownMarked(r.Reference) {
			continue
		}
		doc := ChangeDocument{Document: fmt.Sprintf("stock.shipment.in,%d", r.ID), Number: r.Number, Reference: r.Reference, State: r.State,
			Supplier: r.Supplier.code(), SupplierName: r.Supplier.name(), Warehouse: r.Warehouse.code()}
		for i, m := range byShipment[doc.Document] {
			l := ChangeLine{Line: strconv.Itoa(i + 1), Ref: fmt.Sprintf("stock.move,%d", m.ID), Item: m.Product.code(), Quantity: formatQty(m.Quantity),
				Unit: m.UOM.symbol(), DeliveryDate: dateString(m.Date)}
			if id, ok := refID(m.Origin, "purchase.line"); ok {
				if po, ok := linePO[id]; ok {
					l.PurchaseOrder = po.number
					if q, ok := reqs[po.purchase]; ok {
						l.CorrelationID = q.correlation
						if doc.CorrelationID == "" {
							doc.CorrelationID, doc.RequisitionKey = q.correlation, q.key
						}
					}
				}
			}
			if doc.PurchaseOrder == "" {
				doc.PurchaseOrder = l.PurchaseOrder
			}
			doc.Lines = append(doc.Lines, l)
		}
		raw, err := json.Marshal(doc)
		if err != nil {
			return nil, false, err
		}
		out = append(out, sdk.Change{ID: doc.Document + ":done", Kind: KindGoodsReceipt, ExternalRef: doc.Document,
			ChangedAt: r.WriteDate.time(), Document: raw})
	}
	return out, more, nil
}

// refID reads the id of a Tryton reference value "model,id" of model.
func refID(ref *string, model string) (int, bool) {
	if ref == nil {
		return 0, false
	}
	m, id, ok := strings.Cut(*ref, ",")
	if !ok || m != model {
		return 0, false
	}
	n, err := strconv.Atoi(id)
	return n, err == nil
}
