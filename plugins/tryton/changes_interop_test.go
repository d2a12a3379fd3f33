//go:build interop

package main

import (
	"encoding/json"
	"fmt"
	"testing"

	"github.com/plantsync/plantsync/plugins/sdk"
)

// buyer drives Tryton as a buyer would, through its JSON-RPC API.
type buyer struct {
	t   *testing.T
	s   *trytonServer
	ctx map[string]any
}

func (b buyer) call(method string, params []any, out any) {
	b.t.Helper()
	if err := b.s.rpc.call(ctx10(b.t), method, params, out); err != nil {
		b.t.Fatalf("%s: %v", method, err)
	}
}

func (b buyer) id(model string, domain []any) int {
	b.t.Helper()
	var rows []struct {
		ID int `json:"id"`
	}
	b.call("model."+model+".search_read", []any{domain, 0, 2, nil, []string{"id"}, b.ctx}, &rows)
	if len(rows) != 1 {
		b.t.Fatalf("%s %v: %d rows", model, domain, len(rows))
	}
	return rows[0].ID
}

// purchase creates a draft purchase of qty of product code from the seed's
// supplier and returns its id and its line's id.
func (b buyer) purchase(code string, qty float64, reference string) (int, int) {
	b.t.Helper()
	party := b.id("party.party", []any{[]any{"name", "=", "Acme Supplies"}})
	product := b.id("product.product", []any{[]any{"code", "=", code}})
	var prow []struct {
		UOM int `json:"purchase_uom"`
	}
	b.call("model.product.product.read", []any{[]int{product}, []string{"purchase_uom"}, b.ctx}, &prow)
	var addr []struct {
		ID int `json:"id"`
	}
	b.call("model.party.address.search_read", []any{[]any{[]any{"party", "=", party}}, 0, 1, nil, []string{"id"}, b.ctx}, &addr)
	vals := map[string]any{"party": party, "company": 1, "reference": reference,
		"lines": []any{[]any{"create", []any{map[string]any{"product": product, "quantity": qty, "unit": prow[0].UOM,
			"unit_price": encodeDecimal("8.00"), "description": "material"}}}}}
	if len(addr) == 0 {
		// The seed's supplier has no address; confirming needs an invoice
		// address.
		var ids []int
		b.call("model.party.address.create", []any{[]any{map[string]any{"party": party, "street": "1 Supply Road"}}, b.ctx}, &ids)
		addr = append(addr, struct {
			ID int `json:"id"`
		}{ids[0]})
	}
	vals["invoice_address"] = addr[0].ID
	var ids []int
	b.call("model.purchase.purchase.create", []any{[]any{vals}, b.ctx}, &ids)
	var lines []struct {
		ID int `json:"id"`
	}
	b.call("model.purchase.line.search_read", []any{[]any{[]any{"purchase", "=", ids[0]}}, 0, nil, nil, []string{"id"}, b.ctx}, &lines)
	return ids[0], lines[0].ID
}

func (b buyer) confirm(id int) {
	b.t.Helper()
	b.call("model.purchase.purchase.quote", []any{[]int{id}, b.ctx}, nil)
	b.call("model.purchase.purchase.confirm", []any{[]int{id}, b.ctx}, nil)
}

func (b buyer) purchaseState(id int) (string, string) {
	b.t.Helper()
	var rows []struct {
		State  string `json:"state"`
		Number string `json:"number"`
	}
	b.call("model.purchase.purchase.read", []any{[]int{id}, []string{"state", "number"}, b.ctx}, &rows)
	return rows[0].State, rows[0].Number
}

// receive makes an incoming shipment of the purchase's moves and posts it.
func (b buyer) receive(purchase int) int {
	b.t.Helper()
	var moves []struct {
		ID int `json:"id"`
	}
	b.call("model.stock.move.search_read", []any{[]any{[]any{"purchase", "=", purchase}}, 0, nil, nil, []string{"id"}, b.ctx}, &moves)
	if len(moves) == 0 {
		b.t.Fatalf("purchase %d has no moves (its processing failed; see the trytond log)", purchase)
	}
	party := b.id("party.party", []any{[]any{"name", "=", "Acme Supplies"}})
	wh := b.id("stock.location", []any{[]any{"type", "=", "warehouse"}, []any{"code", "=", "WH"}})
	ids := make([]int, len(moves))
	for i, m := range moves {
		ids[i] = m.ID
	}
	var sh []int
	b.call("model.stock.shipment.in.create", []any{[]any{map[string]any{"supplier": party, "warehouse": wh, "company": 1,
		"incoming_moves": []any{[]any{"add", ids}}}}, b.ctx}, &sh)
	b.call("model.stock.shipment.in.receive", []any{sh, b.ctx}, nil)
	b.call("model.stock.shipment.in.done", []any{sh, b.ctx}, nil)
	return sh[0]
}

// drain reads every change after cursor.
func drain(t *testing.T, d *sdk.DestinationHost, cursor string) ([]sdk.Change, string) {
	t.Helper()
	var all []sdk.Change
	for range 100 {
		res, err := d.Changes(ctx10(t), sdk.ChangesRequest{Cursor: cursor, Limit: 2})
		if err != nil {
			t.Fatalf("changes: %v", err)
		}
		all = append(all, res.Changes...)
		cursor = res.NextCursor
		if !res.More {
			return all, cursor
		}
	}
	t.Fatal("changes: More never ended")
	return nil, ""
}

func decodeChange(t *testing.T, c sdk.Change) ChangeDocument {
	t.Helper()
	var doc ChangeDocument
	if err := json.Unmarshal(c.Document, &doc); err != nil {
		t.Fatalf("change %s: %v", c.ID, err)
	}
	return doc
}

// A purchase confirmed through the API (it then passes confirmed and
// processing) is reported once as po.approved, with its lines and
// supplier; draft purchases are not reported; reading again from the
// returned cursor finds nothing new.
func TestInteropTrytonChangesPurchase(t *testing.T) {
	s := startTryton(t, 0)
	d := openPlugin(t, s)
	if !d.Info().Has(sdk.CapabilityChanges) {
		t.Fatalf("capabilities = %v, want changes", d.Info().Capabilities)
	}
	b := buyer{t: t, s: s, ctx: map[string]any{"company": 1}}
	before, cursor := drain(t, d, "")
	if len(before) != 0 {
		t.Fatalf("a fresh seed reports %d changes: %+v", len(before), before)
	}
	po, _ := b.purchase("200201", 12.5, "BUYER-1")
	draft, _ := b.purchase("200202", 3, "BUYER-DRAFT")
	_ = draft
	b.confirm(po)
	state, number := b.purchaseState(po)
	if state != "processing" {
		t.Fatalf("purchase state %s after confirm, want processing", state)
	}
	changes, cursor := drain(t, d, cursor)
	if len(changes) != 1 {
		t.Fatalf("%d changes, want exactly one po.approved: %+v", len(changes), changes)
	}
	c := changes[0]
	doc := decodeChange(t, c)
	if c.Kind != KindPOApproved || c.ID != fmt.Sprintf("purchase.purchase,%d:approved", po) || c.ExternalRef != fmt.Sprintf("purchase.purchase,%d", po) ||
		c.IdempotencyKey != "" || c.ChangedAt.IsZero() {
		t.Errorf("change = %+v", c)
	}
	if doc.Number != number || doc.Reference != "BUYER-1" || doc.SupplierName != "Acme Supplies" || doc.Supplier == "" || doc.Warehouse != "WH" ||
		len(doc.Lines) != 1 || doc.Lines[0].Item != "200201" || doc.Lines[0].Quantity != "12.5" || doc.Lines[0].Unit != "kg" || doc.Lines[0].Line != "1" {
		t.Errorf("document = %+v", doc)
	}
	again, _ := drain(t, d, cursor)
	if len(again) != 0 {
		t.Errorf("after the cursor: %d changes, want none: %+v", len(again), again)
	}
	// From the start again, the same purchase is the same change id: the
	// hub's dedup relies on it.
	all, _ := drain(t, d, "")
	if len(all) != 1 || all[0].ID != c.ID {
		t.Errorf("from the start: %+v", all)
	}
}

// A shipment received against the purchase is reported as goods.receipt
// with the purchase number; a purchase made from a requisition plantsync
// created carries that requisition's correlation id; a purchase whose
// reference carries plantsync's marker is not reported.
func TestInteropTrytonChangesReceiptAndRequisition(t *testing.T) {
	s := startTryton(t, 0)
	d := openPlugin(t, s)
	b := buyer{t: t, s: s, ctx: map[string]any{"company": 1}}
	const key = "0a1b2c3d4e5f60718293a4b5c6d7e8f9"
	res, err := d.Deliver(ctx10(t), sdk.DeliverRequest{IdempotencyKey: key, Action: ActionPurchaseRequisitionCreate, Document: requisitionDoc("200201", "8", "kg")})
	if err != nil || res.Outcome != sdk.OutcomeOK {
		t.Fatalf("requisition: %+v %v", res, err)
	}
	var reqID int
	if _, err := fmt.Sscanf(res.ExternalRef, "purchase.request,%d", &reqID); err != nil {
		t.Fatal(err)
	}
	po, line := b.purchase("200201", 8, "BUYER-2")
	// The buyer turns the request into this purchase (what the "create
	// purchase" wizard records).
	b.call("model.purchase.request.write", []any{[]int{reqID}, map[string]any{"purchase_line": line}, b.ctx}, nil)
	b.confirm(po)
	own, _ := b.purchase("200202", 1, "PO from "+marker("feedfacefeedface"))
	b.confirm(own)
	shipment := b.receive(po)
	changes, _ := drain(t, d, "")
	var approved, received []sdk.Change
	for _, c := range changes {
		switch c.Kind {
		case KindPOApproved:
			approved = append(approved, c)
		case KindGoodsReceipt:
			received = append(received, c)
		default:
			t.Errorf("unexpected kind %q", c.Kind)
		}
	}
	if len(approved) != 1 || approved[0].ExternalRef != fmt.Sprintf("purchase.purchase,%d", po) {
		t.Fatalf("po.approved changes = %+v (the marked purchase must not be reported)", approved)
	}
	if doc := decodeChange(t, approved[0]); doc.CorrelationID != "corr-shortage" || doc.RequisitionKey != key {
		t.Errorf("po.approved document = %+v, want the requisition's correlation", doc)
	}
	if len(received) != 1 || received[0].ID != fmt.Sprintf("stock.shipment.in,%d:done", shipment) {
		t.Fatalf("goods.receipt changes = %+v", received)
	}
	_, number := b.purchaseState(po)
	doc := decodeChange(t, received[0])
	if doc.PurchaseOrder != number || len(doc.Lines) != 1 || doc.Lines[0].Item != "200201" || doc.Lines[0].Quantity != "8" ||
		doc.Lines[0].PurchaseOrder != number || doc.Lines[0].DeliveryDate == "" || doc.CorrelationID != "corr-shortage" || doc.Warehouse != "WH" {
		t.Errorf("goods.receipt document = %+v", doc)
	}
}

// pollCalls reads one poll (until More ends) and counts its calls.
func pollCalls(t *testing.T, d *sdk.DestinationHost, cursor string, limit int) ([]sdk.Change, string, int) {
	t.Helper()
	var all []sdk.Change
	for calls := 1; calls <= 100; calls++ {
		res, err := d.Changes(ctx10(t), sdk.ChangesRequest{Cursor: cursor, Limit: limit})
		if err != nil {
			t.Fatalf("changes: %v", err)
		}
		all = append(all, res.Changes...)
		cursor = res.NextCursor
		if !res.More {
			return all, cursor, calls
		}
	}
	t.Fatal("changes: More never ended")
	return nil, "", 0
}

// With both settle windows longer than a page (5 purchases: 3 pages of 2,
// 3 shipments: 2 pages), every poll reads each window once: the stream
// that catches up first waits for the other, and nothing is reported twice.
func TestInteropTrytonChangesSettleWindowOncePerPoll(t *testing.T) {
	s := startTryton(t, 0)
	d := openPlugin(t, s)
	b := buyer{t: t, s: s, ctx: map[string]any{"company": 1}}
	var pos []int
	for i := range 5 {
		po, _ := b.purchase("200201", float64(i+1), fmt.Sprintf("BUYER-W%d", i))
		b.confirm(po)
		pos = append(pos, po)
	}
	for _, po := range pos[:3] {
		b.receive(po)
	}
	changes, cursor, _ := pollCalls(t, d, "", 2)
	if len(changes) != 8 {
		t.Fatalf("first poll: %d changes, want 8 (5 po.approved, 3 goods.receipt): %+v", len(changes), changes)
	}
	for poll := 2; poll <= 3; poll++ {
		again, next, calls := pollCalls(t, d, cursor, 2)
		if len(again) != 0 {
			t.Errorf("poll %d reported %d changes again: %+v", poll, len(again), again)
		}
		// Purchases take 3 pages, shipments 2: 3 calls, not the 6 of
		// re-reading the shorter window while the longer one pages.
		if calls != 3 {
			t.Errorf("poll %d took %d calls, want 3", poll, calls)
		}
		cursor = next
	}
}
