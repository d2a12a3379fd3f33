package main

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// The update actions set values, so applying one twice is harmless. Each
// function below either applies its document (apply) or only checks
// whether Tryton holds its values (returning errDiffers when not), which
// is what Lookup answers for an update.

// production is the part of Tryton's production the updates need.
type production struct {
	ID               int     `json:"id"`
	Number           string  `json:"number"`
	Reference        string  `json:"reference"`
	State            string  `json:"state"`
	Quantity         float64 `json:"quantity"`
	PlannedDate      *date   `json:"planned_date"`
	PlannedStartDate *date   `json:"planned_start_date"`
}

var productionFields = []string{"id", "number", "reference", "state", "quantity", "planned_date", "planned_start_date"}

// findProduction finds a production by its number or reference.
func (c *Connector) findProduction(ctx context.Context, order string) (production, error) {
	if order == "" {
		return production{}, fmt.Errorf("%w: production_order is required", errDocument)
	}
	cfg, _, err := c.current()
	if err != nil {
		return production{}, err
	}
	var rows []production
	domain := []any{[]any{"company", "=", cfg.Company}, []any{"OR", []any{"number", "=", order}, []any{"reference", "=", order}}}
	if err := c.searchRead(ctx, "production", domain, productionFields, 2, &rows); err != nil {
		return production{}, err
	}
	switch len(rows) {
	case 0:
		return production{}, fmt.Errorf("%w: no production with number or reference %q", errNotFound, order)
	case 2:
		return production{}, fmt.Errorf("%w: production %q is ambiguous (several numbers or references match)", errNotFound, order)
	}
	return rows[0], nil
}

func productionRef(p production) string { return fmt.Sprintf("production,%d", p.ID) }

// forward is the order of production states and the button that leads to
// each from the one before.
var forward = []struct{ state, button string }{
	{"request", ""}, {"draft", "draft"}, {"waiting", "wait"}, {"assigned", "assign_force"}, {"running", "run"}, {"done", "done"},
}

func stateIndex(s string) int {
	for i, f := range forward {
		if f.state == s {
			return i
		}
	}
	return -1
}

// moveProduction presses the buttons that lead from the production's state
// to target, then reads the state back: Tryton's buttons ignore a
// transition they do not allow without an error.
func (c *Connector) moveProduction(ctx context.Context, p production, target string, apply bool) (string, error) {
	if p.State == target {
		return productionRef(p), nil
	}
	if !apply {
		return "", fmt.Errorf("%w: production %s is %s, not %s", errDiffers, p.Number, p.State, target)
	}
	var buttons []string
	switch from, to := stateIndex(p.State), stateIndex(target); {
	case target == "cancelled":
		buttons = []string{"cancel"}
	case from < 0 || to < 0 || to < from:
		return "", fmt.Errorf("%w: production %s cannot go from %s back to %s in tryton", errDocument, p.Number, p.State, target)
	default:
		for i := from + 1; i <= to; i++ {
			buttons = append(buttons, forward[i].button)
		}
	}
	_, rpc, err := c.current()
	if err != nil {
		return "", err
	}
	for _, b := range buttons {
		if err := rpc.call(ctx, "model.production."+b, []any{[]any{p.ID}, c.ctx()}, nil); err != nil {
			return "", err
		}
	}
	now, err := c.findProduction(ctx, orderOf(p))
	if err != nil {
		return "", err
	}
	if now.State != target {
		return "", fmt.Errorf("%w: tryton left production %s in state %s after %s; check it in tryton", errDocument, p.Number, now.State, strings.Join(buttons, ", "))
	}
	c.log.Info("production state set", "production", p.Number, "from", p.State, "to", target)
	return productionRef(now), nil
}

func orderOf(p production) string {
	if p.Number != "" {
		return p.Number
	}
	return p.Reference
}

// productionDoc holds the fields of the production documents (hub
// pipeline.ProductionConfirmation, ProductionStatus, Reschedule).
type productionDoc struct {
	ProductionOrder string     `json:"production_order"`
	Status          string     `json:"status"`
	NewStart        *time.Time `json:"new_start"`
	NewQuantity     string     `json:"new_quantity"`
}

func decodeProduction(raw json.RawMessage) (productionDoc, error) {
	var d productionDoc
	if len(raw) == 0 {
		return d, fmt.Errorf("%w: empty document", errDocument)
	}
	if err := json.Unmarshal(raw, &d); err != nil {
		return d, fmt.Errorf("%w: %v", errDocument, err)
	}
	return d, nil
}

// productionState moves the document's production to state (confirm: done).
func (c *Connector) productionState(ctx context.Context, raw json.RawMessage, state string, apply bool) (string, error) {
	d, err := decodeProduction(raw)
	if err != nil {
		return "", err
	}
	p, err := c.findProduction(ctx, d.ProductionOrder)
	if err != nil {
		return "", err
	}
	return c.moveProduction(ctx, p, state, apply)
}

func (c *Connector) updateStatus(ctx context.Context, raw json.RawMessage, apply bool) (string, error) {
	d, err := decodeProduction(raw)
	if err != nil {
		return "", err
	}
	c.mu.RLock()
	target, ok := c.status[strings.ToLower(d.Status)]
	c.mu.RUnlock()
	if !ok {
		return "", fmt.Errorf("%w: status %q has no tryton state; add it to status_map", errDocument, d.Status)
	}
	p, err := c.findProduction(ctx, d.ProductionOrder)
	if err != nil {
		return "", err
	}
	return c.moveProduction(ctx, p, target, apply)
}

// reschedule sets the planned start (and the planned end when it would
// fall before the start) and the quantity.
func (c *Connector) reschedule(ctx context.Context, raw json.RawMessage, apply bool) (string, error) {
	d, err := decodeProduction(raw)
	if err != nil {
		return "", err
	}
	if d.NewStart == nil && d.NewQuantity == "" {
		return "", fmt.Errorf("%w: new_start or new_quantity is required", errDocument)
	}
	p, err := c.findProduction(ctx, d.ProductionOrder)
	if err != nil {
		return "", err
	}
	vals := map[string]any{}
	var diffs []string
	if d.NewStart != nil {
		start := d.NewStart.UTC()
		want := encodeDate(start)
		if p.PlannedStartDate == nil || !p.PlannedStartDate.time().Equal(want.time()) {
			vals["planned_start_date"] = want
			diffs = append(diffs, "planned_start_date")
		}
		if p.PlannedDate == nil || p.PlannedDate.time().Before(want.time()) {
			vals["planned_date"] = want
			diffs = append(diffs, "planned_date")
		}
	}
	if d.NewQuantity != "" {
		q, err := strconv.ParseFloat(d.NewQuantity, 64)
		if err != nil {
			return "", fmt.Errorf("%w: new_quantity %q", errDocument, d.NewQuantity)
		}
		if q != p.Quantity {
			vals["quantity"] = q
			diffs = append(diffs, "quantity")
		}
	}
	if len(vals) == 0 {
		return productionRef(p), nil
	}
	if !apply {
		return "", fmt.Errorf("%w: production %s differs in %s", errDiffers, p.Number, strings.Join(diffs, ", "))
	}
	_, rpc, err := c.current()
	if err != nil {
		return "", err
	}
	if err := rpc.call(ctx, "model.production.write", []any{[]any{p.ID}, vals, c.ctx()}, nil); err != nil {
		return "", err
	}
	c.log.Info("production rescheduled", "production", p.Number, "fields", diffs)
	return productionRef(p), nil
}

// promise is the document of purchase_order.update_promise (hub
// pipeline.PurchaseOrder with confirmation lines).
type promise struct {
	PurchaseOrder string `json:"purchase_order"`
	Lines         []struct {
		Line     string     `json:"line"`
		Item     string     `json:"item"`
		Quantity string     `json:"quantity"`
		Date     *time.Time `json:"date"`
	} `json:"lines"`
}

type purchaseLine struct {
	ID           int     `json:"id"`
	Sequence     *int    `json:"sequence"`
	Quantity     float64 `json:"quantity"`
	Type         string  `json:"type"`
	DeliveryDate *date   `json:"delivery_date"`
	// Tryton answers a dotted field as a nested record under "product.".
	Product *struct {
		Code string `json:"code"`
	} `json:"product."`
}

func (l purchaseLine) productCode() string {
	if l.Product == nil {
		return ""
	}
	return l.Product.Code
}

// updatePromise writes the supplier's promised dates (and quantities) onto
// the purchase order's lines. It never confirms the order again. Lines are
// matched by product code when the document names one, else by position.
func (c *Connector) updatePromise(ctx context.Context, raw json.RawMessage, apply bool) (string, error) {
	var d promise
	if err := json.Unmarshal(raw, &d); err != nil || d.PurchaseOrder == "" {
		return "", fmt.Errorf("%w: want purchase_order and lines", errDocument)
	}
	cfg, rpc, err := c.current()
	if err != nil {
		return "", err
	}
	var purchases []struct {
		ID     int    `json:"id"`
		Number string `json:"number"`
		State  string `json:"state"`
	}
	domain := []any{[]any{"company", "=", cfg.Company}, []any{"OR", []any{"number", "=", d.PurchaseOrder}, []any{"reference", "=", d.PurchaseOrder}}}
	if err := c.searchRead(ctx, "purchase.purchase", domain, []string{"id", "number", "state"}, 2, &purchases); err != nil {
		return "", err
	}
	if len(purchases) != 1 {
		return "", fmt.Errorf("%w: purchase order %q (%d matches by number or reference)", errNotFound, d.PurchaseOrder, len(purchases))
	}
	po := purchases[0]
	var lines []purchaseLine
	if err := c.searchRead(ctx, "purchase.line", []any{[]any{"purchase", "=", po.ID}, []any{"type", "=", "line"}},
		[]string{"id", "sequence", "quantity", "type", "delivery_date", "product.code"}, 0, &lines); err != nil {
		return "", err
	}
	ref := fmt.Sprintf("purchase.purchase,%d", po.ID)
	var diffs []string
	type write struct {
		id   int
		vals map[string]any
	}
	var writes []write
	for i, l := range d.Lines {
		target := -1
		for j, pl := range lines {
			if (l.Item != "" && pl.productCode() == l.Item) || (l.Item == "" && strconv.Itoa(j+1) == l.Line) {
				target = j
				break
			}
		}
		if target < 0 {
			return "", fmt.Errorf("%w: purchase %s has no line for item %q (line %s)", errNotFound, po.Number, l.Item, l.Line)
		}
		pl := lines[target]
		vals := map[string]any{}
		if l.Date != nil {
			want := encodeDate(l.Date.UTC())
			if pl.DeliveryDate == nil || !pl.DeliveryDate.time().Equal(want.time()) {
				vals["delivery_date_edit"] = true
				vals["delivery_date_store"] = want
			}
		}
		if l.Quantity != "" {
			q, err := strconv.ParseFloat(l.Quantity, 64)
			if err != nil {
				return "", fmt.Errorf("%w: lines[%d].quantity %q", errDocument, i, l.Quantity)
			}
			if q != pl.Quantity {
				vals["quantity"] = q
			}
		}
		if len(vals) > 0 {
			diffs = append(diffs, fmt.Sprintf("line %d", target+1))
			writes = append(writes, write{pl.ID, vals})
		}
	}
	if len(writes) == 0 {
		return ref, nil
	}
	if !apply {
		return "", fmt.Errorf("%w: purchase %s differs in %s", errDiffers, po.Number, strings.Join(diffs, ", "))
	}
	for _, w := range writes {
		if err := rpc.call(ctx, "model.purchase.line.write", []any{[]any{w.id}, w.vals, c.ctx()}, nil); err != nil {
			return "", err
		}
	}
	c.log.Info("purchase promise updated", "purchase", po.Number, "lines", diffs)
	return ref, nil
}
