package pipeline

import (
	"fmt"
)

// Config is the hub config key `pipeline`.
type Config struct {
	// Workflows replace the shipped ones when given (the whole list).
	Workflows []Workflow `yaml:"workflows"`
	// Rules are validation rules: CEL expressions that must hold for an
	// event of the named type, or it becomes an exception. They replace the
	// shipped ones when given.
	Rules      []Rule     `yaml:"rules"`
	Crosswalks Crosswalks `yaml:"crosswalks"`
	// BatchSize bounds the events committed in one transaction (one fsync).
	BatchSize int `yaml:"batch_size"`
}

// Crosswalks names the CSV files that seed the crosswalk tables.
type Crosswalks struct {
	// Inbound maps a kind (plant, item, unit, supplier, work_center) to a
	// CSV file.
	Inbound map[string]string `yaml:"inbound"`
	// Outbound maps a destination to its kinds (plant, item, unit,
	// supplier, warehouse) and CSV files.
	Outbound map[string]map[string]string `yaml:"outbound"`
}

// Workflow lists what an event type turns into.
type Workflow struct {
	Event   string   `yaml:"event"`
	Actions []Action `yaml:"actions"`
}

// Action is one step of a workflow: an action performed at a destination.
type Action struct {
	Action      string `yaml:"action"`
	Destination string `yaml:"destination"`
	// When, a CEL bool expression, limits the step to some events.
	When string `yaml:"when,omitempty"`
	// OrderingKey, a CEL string expression, overrides the action's default
	// ordering key.
	OrderingKey string `yaml:"ordering_key,omitempty"`
	// Hold rules stop the action for approval when one holds.
	Hold []Hold `yaml:"hold,omitempty"`
}

// Hold is an approval threshold.
type Hold struct {
	Name   string `yaml:"name"`
	When   string `yaml:"when"`
	Reason string `yaml:"reason"`
}

// Rule is a validation rule.
type Rule struct {
	Name string `yaml:"name"`
	// Event is the event type the rule applies to; * for every type.
	Event   string `yaml:"event"`
	Expr    string `yaml:"expr"`
	Message string `yaml:"message"`
}

// Destination names of the shipped workflows.
const (
	DestERP            = "erp"
	DestSupplierPortal = "supplier_portal"
	DestPlanning       = "planning"
	DestReporting      = "reporting"
	DestAlerts         = "alerts"
)

// NewDefaultConfig is the shipped pipeline: the workflows of the issue's
// table, with the approval thresholds of schedule changes, and a few
// validation rules. docs/configuration.md shows them as YAML.
func NewDefaultConfig() Config {
	alert := func(when string) Action { return Action{Action: ActionAlertRaise, Destination: DestAlerts, When: when} }
	const sc = "event.schedule_change"
	return Config{
		BatchSize: 4000,
		Workflows: []Workflow{
			{Event: "material.shortage", Actions: []Action{
				{Action: ActionPurchaseRequisitionCreate, Destination: DestERP},
				alert(""),
			}},
			{Event: "production.completion", Actions: []Action{{Action: ActionProductionOrderConfirm, Destination: DestERP}}},
			{Event: "production.order.status", Actions: []Action{{Action: ActionProductionOrderUpdateStatus, Destination: DestERP}}},
			{Event: "schedule.change", Actions: []Action{{Action: ActionProductionOrderReschedule, Destination: DestERP, Hold: []Hold{
				{Name: "large-date-shift", Reason: "moves the start by more than 2 days",
					When: "has(" + sc + ".previous_start) && has(" + sc + ".new_start) && (" + sc + ".new_start - " + sc + ".previous_start).abs() > duration(\"48h\")"},
				{Name: "large-quantity-change", Reason: "changes the quantity by more than 10%",
					When: "has(" + sc + ".previous_quantity) && has(" + sc + ".new_quantity) && (decimal(" + sc + ".new_quantity) - decimal(" + sc + ".previous_quantity)).abs() * decimal(10) > decimal(" + sc + ".previous_quantity)"},
				{Name: "cross-plant-reallocation", Reason: "reallocates the order to another plant",
					When: sc + ".target_plant != \"\" && " + sc + ".target_plant != event.plant"},
			}}}},
			{Event: "po.approved", Actions: []Action{
				{Action: ActionPurchaseOrderPublish, Destination: DestSupplierPortal},
				{Action: ActionSupplyUpdate, Destination: DestPlanning},
			}},
			{Event: "supplier.confirmation", Actions: []Action{
				{Action: ActionPurchaseOrderUpdatePromise, Destination: DestERP},
				{Action: ActionSupplyUpdate, Destination: DestPlanning},
			}},
			{Event: "goods.receipt", Actions: []Action{
				{Action: ActionInventoryUpdate, Destination: DestPlanning},
				{Action: ActionReceiptRecord, Destination: DestReporting},
			}},
			{Event: "quality.hold", Actions: []Action{
				{Action: ActionInventoryBlock, Destination: DestERP},
				alert("!event.quality_hold.released"),
			}},
			{Event: "buffer.overflow", Actions: []Action{alert("")}},
			{Event: "source.error", Actions: []Action{alert("")}},
		},
		Rules: []Rule{
			{Name: "completion-reports-quantity", Event: "production.completion",
				Expr:    `decimal(event.production_completion.good) > decimal(0) || (has(event.production_completion.scrap) && decimal(event.production_completion.scrap) > decimal(0))`,
				Message: "a completion reports a good or scrap quantity above zero"},
			{Name: "shortage-quantity-positive", Event: "material.shortage",
				Expr: `decimal(event.material_shortage.quantity) > decimal(0)`, Message: "a shortage names a quantity above zero"},
			{Name: "receipt-quantity-positive", Event: "goods.receipt",
				Expr: `decimal(event.goods_receipt.quantity) > decimal(0)`, Message: "a goods receipt names a quantity above zero"},
			{Name: "schedule-change-changes-something", Event: "schedule.change",
				Expr:    `has(event.schedule_change.new_start) || has(event.schedule_change.new_quantity) || event.schedule_change.target_plant != ""`,
				Message: "a schedule change sets a new start, a new quantity or a target plant"},
			{Name: "confirmation-lines-have-dates-or-quantities", Event: "supplier.confirmation",
				Expr:    `event.supplier_confirmation.lines.all(l, has(l.promised_date) || decimal(l.quantity) > decimal(0))`,
				Message: "every confirmed line promises a date or a quantity"},
		},
	}
}

// Destination is what the pipeline knows of a configured destination.
type Destination struct {
	Name string
	// Type is "log", "alerts" or a connector type (delivery engine, #6).
	Type string
	// Actions the destination performs; nil means every known action.
	Actions []string
}

// supports reports whether d performs action.
func (d Destination) supports(action string) bool {
	if d.Actions == nil {
		return true
	}
	for _, a := range d.Actions {
		if a == action {
			return true
		}
	}
	return false
}

func (c *Config) batchSize() int {
	if c.BatchSize <= 0 {
		return 4000
	}
	return c.BatchSize
}

// Validate checks the pipeline config against the schemas and the
// destinations, compiling every CEL expression (no files, no network).
// Errors name the field path.
func (c *Config) Validate(prefix string, dests []Destination) []error {
	_, errs := compile(c, withAlerts(dests), newSchemas())
	if c.BatchSize < 0 || c.BatchSize > 100000 {
		errs = append(errs, fmt.Errorf("%s.batch_size: %d; want 1 to 100000 (0 for the default, 4000)", prefix, c.BatchSize))
	}
	for i, e := range errs {
		errs[i] = fmt.Errorf("%s.%w", prefix, e)
	}
	return errs
}
