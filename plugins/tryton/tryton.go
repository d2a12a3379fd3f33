package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/plantsync/plantsync/plugins/sdk"
)

// Version is the connector's version, reported by Configure.
const Version = "1.0.0"

// The actions this connector performs.
const (
	ActionPurchaseRequisitionCreate   = "purchase_requisition.create"
	ActionPurchaseOrderUpdatePromise  = "purchase_order.update_promise"
	ActionProductionOrderConfirm      = "production_order.confirm"
	ActionProductionOrderUpdateStatus = "production_order.update_status"
	ActionProductionOrderReschedule   = "production_order.reschedule"
)

var actions = []string{ActionPurchaseRequisitionCreate, ActionPurchaseOrderUpdatePromise, ActionProductionOrderConfirm,
	ActionProductionOrderUpdateStatus, ActionProductionOrderReschedule}

// marker is how an idempotency key sits in a document's text field. Keys
// are hex; the brackets keep a search from matching a longer key.
func marker(key string) string { return "[plantsync:" + key + "]" }

var markerRE = regexp.MustCompile(`\[plantsync:([0-9A-Za-z_-]+)\]`)

// Connector delivers to Tryton. It implements sdk.Destination.
type Connector struct {
	log *slog.Logger

	mu     sync.RWMutex
	cfg    Config
	status map[string]string
	rpc    *client
	ids    map[string]int // cached lookups: "product:200201" → id
}

// New returns an unconfigured connector logging to log.
func New(log *slog.Logger) *Connector {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Connector{log: log}
}

// Configure implements sdk.Destination. It logs in once, so a wrong
// password or database is reported when the hub starts.
func (c *Connector) Configure(ctx context.Context, req sdk.ConfigureRequest) (sdk.ConfigureResponse, error) {
	cfg := NewDefaultConfig()
	if err := req.Decode(&cfg); err != nil {
		return sdk.ConfigureResponse{}, err
	}
	if err := cfg.Validate(); err != nil {
		return sdk.ConfigureResponse{}, err
	}
	status := map[string]string{}
	for k, v := range defaultStatusMap {
		status[k] = v
	}
	for k, v := range cfg.StatusMap {
		status[strings.ToLower(k)] = v
	}
	rpc := newClient(cfg)
	version, err := rpc.version(ctx)
	if err == nil {
		err = rpc.login(ctx, 0)
	}
	if err != nil {
		// An ERP that is down or refuses the login must not keep the hub
		// from starting (agents would then buffer for nothing): deliveries
		// log in again themselves and fail retryably meanwhile, and Health
		// reports the problem.
		c.log.Warn("tryton not reachable at configure; deliveries will retry", "url", cfg.URL, "database", cfg.Database, "error", err)
		version = "unknown"
	}
	c.mu.Lock()
	old := c.rpc
	c.cfg, c.status, c.rpc, c.ids = cfg, status, rpc, map[string]int{}
	c.mu.Unlock()
	if old != nil {
		old.close()
	}
	c.log.Info("tryton configured", "name", req.Name, "url", cfg.URL, "database", cfg.Database, "server_version", version)
	return sdk.ConfigureResponse{Actions: slices.Clone(actions), Capabilities: []sdk.Capability{sdk.CapabilityLookup, sdk.CapabilityList, sdk.CapabilityChanges}, Version: Version}, nil
}

func (c *Connector) current() (Config, *client, error) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	if c.rpc == nil {
		return Config{}, nil, errors.New("tryton: not configured")
	}
	return c.cfg, c.rpc, nil
}

func (c *Connector) ctx() map[string]any {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return map[string]any{"company": c.cfg.Company, "language": c.cfg.Language}
}

// errNotFound is a reference (product, warehouse, order) Tryton lacks: the
// document cannot be applied until master data or the crosswalk is fixed.
var errNotFound = errors.New("not found in tryton")

// outcome turns an error of a delivery into the engine's terms.
func outcome(err error) sdk.DeliverResponse {
	var re *rpcError
	var te *transportError
	switch {
	case errors.Is(err, errNotFound), errors.Is(err, errDocument):
		return sdk.Permanent("%v", err)
	case errors.As(err, &re) && re.permanent():
		return sdk.Permanent("%v", err)
	case errors.Is(err, errLogin):
		// Credentials may be fixed without touching the entry.
		return sdk.Retryable(0, "%v", err)
	case errors.As(err, &te):
		res := sdk.Retryable(0, "%v", err)
		res.Uncertain = te.sent
		return res
	}
	// A server-side exception rolls its transaction back: nothing was
	// applied, and the server may be fine on the next attempt.
	return sdk.Retryable(0, "%v", err)
}

// errDocument is a document the connector cannot read.
var errDocument = errors.New("bad document")

// Deliver implements sdk.Destination.
func (c *Connector) Deliver(ctx context.Context, req sdk.DeliverRequest) (sdk.DeliverResponse, error) {
	if _, _, err := c.current(); err != nil {
		return sdk.DeliverResponse{}, err
	}
	var ref string
	var err error
	switch req.Action {
	case ActionPurchaseRequisitionCreate:
		ref, err = c.createRequisition(ctx, req)
	case ActionPurchaseOrderUpdatePromise:
		ref, err = c.updatePromise(ctx, req.Document, true)
	case ActionProductionOrderConfirm:
		ref, err = c.productionState(ctx, req.Document, "done", true)
	case ActionProductionOrderUpdateStatus:
		ref, err = c.updateStatus(ctx, req.Document, true)
	case ActionProductionOrderReschedule:
		ref, err = c.reschedule(ctx, req.Document, true)
	default:
		return sdk.Permanent("unsupported action %q; tryton performs %s", req.Action, strings.Join(actions, ", ")), nil
	}
	if err != nil {
		return outcome(err), nil
	}
	return sdk.OK(ref), nil
}

// Lookup implements sdk.Destination: a requisition is searched by its
// marker; an update is found when Tryton holds its values.
func (c *Connector) Lookup(ctx context.Context, req sdk.LookupRequest) (sdk.LookupResponse, error) {
	if _, _, err := c.current(); err != nil {
		return sdk.LookupResponse{}, err
	}
	var ref string
	var err error
	switch req.Action {
	case ActionPurchaseRequisitionCreate, "":
		var id int
		id, err = c.findRequisition(ctx, req.IdempotencyKey)
		if err == nil && id == 0 {
			return sdk.LookupResponse{Status: sdk.LookupNotFound}, nil
		}
		ref = fmt.Sprintf("purchase.request,%d", id)
	case ActionPurchaseOrderUpdatePromise:
		ref, err = c.updatePromise(ctx, req.Document, false)
	case ActionProductionOrderConfirm:
		ref, err = c.productionState(ctx, req.Document, "done", false)
	case ActionProductionOrderUpdateStatus:
		ref, err = c.updateStatus(ctx, req.Document, false)
	case ActionProductionOrderReschedule:
		ref, err = c.reschedule(ctx, req.Document, false)
	default:
		return sdk.LookupResponse{Status: sdk.LookupUnknown, Message: fmt.Sprintf("unsupported action %q", req.Action)}, nil
	}
	switch {
	case errors.Is(err, errDiffers):
		return sdk.LookupResponse{Status: sdk.LookupNotFound, Message: err.Error()}, nil
	case err != nil:
		return sdk.LookupResponse{Status: sdk.LookupUnknown, Message: err.Error()}, nil
	}
	return sdk.LookupResponse{Status: sdk.LookupFound, ExternalRef: ref}, nil
}

// errDiffers: Tryton does not (yet) hold an update's values.
var errDiffers = errors.New("tryton holds other values")

// searchRead runs model.search_read.
func (c *Connector) searchRead(ctx context.Context, model string, domain []any, fields []string, limit int, out any) error {
	_, rpc, err := c.current()
	if err != nil {
		return err
	}
	var lim any
	if limit > 0 {
		lim = limit
	}
	return rpc.call(ctx, "model."+model+".search_read", []any{domain, 0, lim, nil, fields, c.ctx()}, out)
}

// resolve finds the id of a record by code (cached: master data ids do not
// change under a running connector).
func (c *Connector) resolve(ctx context.Context, kind, model string, domain []any, what string) (int, error) {
	key := kind + ":" + what
	c.mu.RLock()
	id, ok := c.ids[key]
	c.mu.RUnlock()
	if ok {
		return id, nil
	}
	var rows []struct {
		ID int `json:"id"`
	}
	if err := c.searchRead(ctx, model, domain, []string{"id"}, 2, &rows); err != nil {
		return 0, err
	}
	switch len(rows) {
	case 0:
		return 0, fmt.Errorf("%w: no %s %q (%s)", errNotFound, kind, what, model)
	case 2:
		return 0, fmt.Errorf("%w: %s %q is ambiguous in %s", errNotFound, kind, what, model)
	}
	c.mu.Lock()
	c.ids[key] = rows[0].ID
	c.mu.Unlock()
	return rows[0].ID, nil
}

// requisition is the document of purchase_requisition.create (hub
// pipeline.PurchaseRequisition), already in Tryton's codes.
type requisition struct {
	CorrelationID   string     `json:"correlation_id"`
	EventID         string     `json:"event_id"`
	Plant           string     `json:"plant"`
	Item            string     `json:"item"`
	Quantity        string     `json:"quantity"`
	Unit            string     `json:"unit"`
	RequiredBy      *time.Time `json:"required_by"`
	Warehouse       string     `json:"warehouse"`
	ProductionOrder string     `json:"production_order"`
	WorkCenter      string     `json:"work_center"`
}

func (c *Connector) findRequisition(ctx context.Context, key string) (int, error) {
	var rows []struct {
		ID int `json:"id"`
	}
	// Cancelled requests count too: the document existed, and creating it
	// again would undo someone's decision.
	if err := c.searchRead(ctx, "purchase.request", []any{[]any{"description", "like", "%" + marker(key) + "%"}}, []string{"id"}, 0, &rows); err != nil {
		return 0, err
	}
	if len(rows) == 0 {
		return 0, nil
	}
	if len(rows) > 1 {
		c.log.Warn("several purchase requests carry one idempotency key; keeping the first", "idempotency_key", key, "count", len(rows))
	}
	return rows[0].ID, nil
}

func (c *Connector) createRequisition(ctx context.Context, req sdk.DeliverRequest) (string, error) {
	var doc requisition
	if err := req.DecodeDocument(&doc); err != nil {
		return "", fmt.Errorf("%w: %v", errDocument, err)
	}
	if doc.Item == "" || doc.Quantity == "" {
		return "", fmt.Errorf("%w: item and quantity are required", errDocument)
	}
	// Search, then create: the hub delivers one ordering key at a time, so
	// nothing else creates this key in between.
	if id, err := c.findRequisition(ctx, req.IdempotencyKey); err != nil || id != 0 {
		return fmt.Sprintf("purchase.request,%d", id), err
	}
	cfg, rpc, err := c.current()
	if err != nil {
		return "", err
	}
	product, err := c.resolve(ctx, "product", "product.product", []any{[]any{"code", "=", doc.Item}}, doc.Item)
	if err != nil {
		return "", err
	}
	var uomRow []struct {
		ID     int `json:"id"`
		Digits int `json:"digits"`
	}
	var uomDomain []any
	if doc.Unit != "" {
		uomDomain = []any{"OR", []any{"symbol", "=", doc.Unit}, []any{"name", "=", doc.Unit}}
	} else {
		var prows []struct {
			UOM int `json:"default_uom"`
		}
		if err := c.searchRead(ctx, "product.product", []any{[]any{"id", "=", product}}, []string{"default_uom"}, 1, &prows); err != nil {
			return "", err
		}
		if len(prows) == 0 {
			return "", fmt.Errorf("%w: product %q", errNotFound, doc.Item)
		}
		uomDomain = []any{[]any{"id", "=", prows[0].UOM}}
	}
	if err := c.searchRead(ctx, "product.uom", uomDomain, []string{"id", "digits"}, 2, &uomRow); err != nil {
		return "", err
	}
	if len(uomRow) != 1 {
		return "", fmt.Errorf("%w: unit %q (product.uom by symbol or name)", errNotFound, doc.Unit)
	}
	qty, err := fitDecimal(doc.Quantity, uomRow[0].Digits, cfg.QuantityRounding)
	if err != nil {
		return "", fmt.Errorf("%w: quantity: %v", errDocument, err)
	}
	if qty != strings.TrimSpace(doc.Quantity) {
		c.log.Debug("quantity fitted to the unit's decimals", "from", doc.Quantity, "to", qty, "rounding", cfg.QuantityRounding)
	}
	whCode := doc.Warehouse
	if whCode == "" {
		whCode = cfg.DefaultWarehouse
	}
	warehouse, err := c.resolve(ctx, "warehouse", "stock.location",
		[]any{[]any{"type", "=", "warehouse"}, []any{"code", "=", whCode}}, whCode)
	if err != nil {
		return "", err
	}
	// purchase.request.quantity is a float field in Tryton 6.0; the value
	// has at most the unit's decimals, so it survives the conversion.
	qf, _ := strconv.ParseFloat(qty, 64)
	vals := map[string]any{
		"product": product, "quantity": qf, "uom": uomRow[0].ID, "warehouse": warehouse, "company": cfg.Company,
		"description": describe(doc, req.IdempotencyKey),
	}
	if doc.RequiredBy != nil {
		vals["supply_date"] = encodeDate(doc.RequiredBy.UTC())
	}
	var ids []int
	if err := rpc.call(ctx, "model.purchase.request.create", []any{[]any{vals}, c.ctx()}, &ids); err != nil {
		return "", err
	}
	if len(ids) != 1 {
		return "", fmt.Errorf("purchase.request.create answered %v", ids)
	}
	c.log.Info("purchase request created", "id", ids[0], "idempotency_key", req.IdempotencyKey, "correlation_id", doc.CorrelationID)
	return fmt.Sprintf("purchase.request,%d", ids[0]), nil
}

// describe is the request's description: readable context for the buyer,
// then the marker Lookup searches for.
func describe(doc requisition, key string) string {
	var b strings.Builder
	b.WriteString("Material shortage reported by plantsync")
	if doc.Plant != "" {
		fmt.Fprintf(&b, " at plant %s", doc.Plant)
	}
	if doc.ProductionOrder != "" {
		fmt.Fprintf(&b, " for production order %s", doc.ProductionOrder)
	}
	if doc.WorkCenter != "" {
		fmt.Fprintf(&b, " (work center %s)", doc.WorkCenter)
	}
	b.WriteString(".\n")
	if doc.CorrelationID != "" {
		fmt.Fprintf(&b, "Correlation: %s\n", doc.CorrelationID)
	}
	b.WriteString(marker(key))
	return b.String()
}

// List implements sdk.Destination: the purchase requests plantsync created
// since a time (capability "list").
func (c *Connector) List(ctx context.Context, req sdk.ListRequest) (sdk.ListResponse, error) {
	if req.Action != "" && req.Action != ActionPurchaseRequisitionCreate {
		return sdk.ListResponse{}, fmt.Errorf("list of %s: %w", req.Action, sdk.ErrUnsupported)
	}
	limit := req.Limit
	if limit <= 0 || limit > 1000 {
		limit = 1000
	}
	after := 0
	if req.PageToken != "" {
		n, err := strconv.Atoi(req.PageToken)
		if err != nil {
			return sdk.ListResponse{}, fmt.Errorf("page token %q", req.PageToken)
		}
		after = n
	}
	domain := []any{[]any{"description", "like", "%[plantsync:%"}, []any{"id", ">", after}}
	if !req.Since.IsZero() {
		domain = append(domain, []any{"create_date", ">=", encodeDatetime(req.Since)})
	}
	_, rpc, err := c.current()
	if err != nil {
		return sdk.ListResponse{}, err
	}
	var rows []struct {
		ID          int       `json:"id"`
		Description string    `json:"description"`
		Quantity    float64   `json:"quantity"`
		State       string    `json:"state"`
		SupplyDate  *date     `json:"supply_date"`
		Created     *datetime `json:"create_date"`
	}
	err = rpc.call(ctx, "model.purchase.request.search_read", []any{domain, 0, limit, []any{[]any{"id", "ASC"}},
		[]string{"id", "description", "quantity", "state", "supply_date", "create_date"}, c.ctx()}, &rows)
	if err != nil {
		return sdk.ListResponse{}, err
	}
	var out sdk.ListResponse
	for _, r := range rows {
		m := markerRE.FindStringSubmatch(r.Description)
		if m == nil {
			continue
		}
		doc, _ := json.Marshal(map[string]any{"quantity": formatQty(r.Quantity), "state": r.State,
			"supply_date": r.SupplyDate.time()})
		out.Documents = append(out.Documents, sdk.Document{IdempotencyKey: m[1], Action: ActionPurchaseRequisitionCreate,
			ExternalRef: fmt.Sprintf("purchase.request,%d", r.ID), Document: doc,
			CreatedAt: r.Created.time()})
	}
	if len(rows) == limit {
		out.NextPageToken = strconv.Itoa(rows[len(rows)-1].ID)
	}
	return out, nil
}

// Health implements sdk.Destination: the server answers and the session
// works.
func (c *Connector) Health(ctx context.Context, _ sdk.HealthRequest) (sdk.HealthResponse, error) {
	_, rpc, err := c.current()
	if err != nil {
		return sdk.HealthResponse{Message: err.Error()}, nil
	}
	var prefs map[string]any
	if err := rpc.call(ctx, "model.res.user.get_preferences", []any{true, c.ctx()}, &prefs); err != nil {
		return sdk.HealthResponse{Message: err.Error()}, nil
	}
	return sdk.HealthResponse{Healthy: true}, nil
}
