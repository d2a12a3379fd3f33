package schema

// The schemas of schema version 1. Field names are the proto field names of
// proto/plantsync/v1/event.proto; docs/events.md describes the same types
// for people.

func envelope() []Field {
	return []Field{
		{Name: "id", Kind: String, Required: true, Since: 1, Description: "Event id, fixed where the event entered plantsync; derived from the source's own id where it has one."},
		{Name: "type", Kind: String, Required: true, Since: 1, Description: "Canonical event type, e.g. production.completion."},
		{Name: "plant", Kind: String, Required: true, Code: CodePlant, Since: 1, Description: "Plant code as the producer knows it; translated by the plant crosswalk."},
		{Name: "occurred_at", Kind: Timestamp, Required: true, Since: 1, Description: "When it happened at the source."},
		{Name: "observed_at", Kind: Timestamp, Since: 1, Description: "When plantsync first saw it."},
		{Name: "correlation_id", Kind: String, Since: 1, Description: "Travels from the source event to the ERP document and back; the event id when empty."},
		{Name: "schema_version", Kind: Uint, Since: 1, Description: "Version of the payload schema; 0 is read as 1."},
		{Name: "source", Kind: Message, Since: 1, Description: "Where the event entered plantsync.", Fields: []Field{
			{Name: "name", Kind: String, Since: 1, Description: "Configured source name."},
			{Name: "uri", Kind: String, Since: 1, Description: "Node, topic or record inside the source."},
			{Name: "kind", Kind: String, Since: 1, Description: "opcua, mqtt, plugin, partner or erp."},
		}},
	}
}

func qty(name, desc string, required bool) Field {
	return Field{Name: name, Kind: Quantity, Required: required, Code: CodeUnit, Since: 1, Description: desc + " Decimal string value with its unit; the unit crosswalk converts it to the canonical unit."}
}

func str(name, desc string, required bool, code Code) Field {
	return Field{Name: name, Kind: String, Required: required, Code: code, Since: 1, Description: desc}
}

func ts(name, desc string, required bool) Field {
	return Field{Name: name, Kind: Timestamp, Required: required, Since: 1, Description: desc}
}

func types() []*Type {
	return []*Type{
		{Name: "machine.state", Version: 1, Payload: "machine_state", Description: "A machine changed state (running, idle, down, ...).", Fields: []Field{
			str("work_center", "Work center of the machine.", false, CodeWorkCenter),
			str("machine", "Machine id inside the work center.", true, ""),
			str("state", "New state.", true, ""),
			str("reason", "Reason code given by the source.", false, ""),
		}},
		{Name: "machine.alarm", Version: 1, Payload: "machine_alarm", Description: "An alarm or condition of a machine was raised, changed or cleared.", Fields: []Field{
			str("work_center", "Work center of the machine.", false, CodeWorkCenter),
			str("machine", "Machine id.", true, ""),
			str("alarm_id", "Alarm id at the source.", true, ""),
			str("condition", "Condition name.", false, ""),
			{Name: "severity", Kind: Uint, Since: 1, Description: "Severity 1 (low) to 1000 (high), as OPC UA defines it."},
			str("message", "Alarm text.", false, ""),
			{Name: "active", Kind: Bool, Since: 1, Description: "Whether the alarm is active."},
			{Name: "acknowledged", Kind: Bool, Since: 1, Description: "Whether an operator acknowledged it."},
		}},
		{Name: "production.completion", Version: 1, Payload: "production_completion", Description: "Good (and scrap) quantity reported against a production order operation.", Fields: []Field{
			str("order", "Production order number (shared by MES and ERP).", true, ""),
			str("operation", "Operation or routing step.", false, ""),
			str("item", "Item produced, plant-local code.", true, CodeItem),
			str("work_center", "Work center, plant-local code.", false, CodeWorkCenter),
			qty("good", "Good quantity.", true),
			qty("scrap", "Scrap quantity.", false),
			str("lot", "Lot or batch produced.", false, ""),
		}},
		{Name: "production.order.status", Version: 1, Payload: "production_order_status", Description: "A production order changed status at the plant (released, running, done, ...).", Fields: []Field{
			str("order", "Production order number.", true, ""),
			str("status", "New status.", true, ""),
			str("work_center", "Work center, plant-local code.", false, CodeWorkCenter),
		}},
		{Name: "material.consumption", Version: 1, Payload: "material_consumption", Description: "Material consumed by a production order.", Fields: []Field{
			str("order", "Production order number.", false, ""),
			str("item", "Item consumed, plant-local code.", true, CodeItem),
			qty("quantity", "Quantity consumed.", true),
			str("lot", "Lot consumed.", false, ""),
			str("work_center", "Work center, plant-local code.", false, CodeWorkCenter),
		}},
		{Name: "material.shortage", Version: 1, Payload: "material_shortage", Description: "Material is missing for production; becomes a purchase requisition in ERP and an alert.", Fields: []Field{
			str("item", "Item short, plant-local code.", true, CodeItem),
			qty("quantity", "Quantity missing.", true),
			ts("required_by", "When the material is needed.", false),
			str("order", "Production order waiting for it.", false, ""),
			str("work_center", "Work center, plant-local code.", false, CodeWorkCenter),
			str("warehouse", "Warehouse to deliver to; the destination's warehouse crosswalk translates it.", false, CodeWarehouse),
		}},
		{Name: "quality.hold", Version: 1, Payload: "quality_hold", Description: "Stock was put on (or released from) quality hold.", Fields: []Field{
			str("item", "Item held, plant-local code.", true, CodeItem),
			str("lot", "Lot held.", false, ""),
			qty("quantity", "Quantity held.", false),
			str("reason", "Why it was held.", true, ""),
			{Name: "released", Kind: Bool, Since: 1, Description: "True when the hold is lifted."},
		}},
		{Name: "schedule.change", Version: 1, Payload: "schedule_change", Description: "The plant moved a production order's start, changed its quantity or reallocated it to another plant; large changes wait for approval.", Fields: []Field{
			str("order", "Production order number.", true, ""),
			str("item", "Item of the order, plant-local code.", false, CodeItem),
			ts("previous_start", "Start before the change.", false),
			ts("new_start", "Start after the change.", false),
			qty("previous_quantity", "Quantity before the change.", false),
			qty("new_quantity", "Quantity after the change.", false),
			str("work_center", "Work center, plant-local code.", false, CodeWorkCenter),
			str("target_plant", "Plant the order moves to (cross-plant reallocation), plant-local code.", false, CodePlant),
		}},
		{Name: "goods.receipt", Version: 1, Payload: "goods_receipt", Description: "Goods were received against a purchase order.", Fields: []Field{
			str("purchase_order", "Purchase order number.", true, ""),
			str("item", "Item received, plant-local code.", true, CodeItem),
			qty("quantity", "Quantity received.", true),
			str("lot", "Lot received.", false, ""),
			str("warehouse", "Receiving warehouse.", false, CodeWarehouse),
			str("supplier", "Supplier, plant-local code.", false, CodeSupplier),
			str("erp_reference", "ERP document the receipt belongs to.", false, ""),
		}},
		{Name: "supplier.confirmation", Version: 1, Payload: "supplier_confirmation", Description: "A supplier confirmed (promised) quantities and dates of purchase order lines.", Fields: []Field{
			str("purchase_order", "Purchase order number.", true, ""),
			str("supplier", "Supplier, local code.", false, CodeSupplier),
			{Name: "lines", Kind: List, MinItems: 1, Since: 1, Description: "Confirmed lines.", Fields: []Field{
				str("line", "Line number of the purchase order.", true, ""),
				str("item", "Item, local code.", false, CodeItem),
				qty("quantity", "Promised quantity.", true),
				ts("promised_date", "Promised delivery date.", false),
			}},
		}},
		{Name: "po.approved", Version: 1, Payload: "po_approved", Description: "A purchase order was approved in ERP; published to the supplier portal and to planning.", Fields: []Field{
			str("purchase_order", "Purchase order number.", true, ""),
			str("supplier", "Supplier, local code.", true, CodeSupplier),
			{Name: "lines", Kind: List, MinItems: 1, Since: 1, Description: "Order lines.", Fields: []Field{
				str("line", "Line number.", true, ""),
				str("item", "Item, local code.", true, CodeItem),
				qty("quantity", "Ordered quantity.", true),
				ts("delivery_date", "Requested delivery date.", false),
			}},
			str("erp_reference", "ERP document id of the order.", false, ""),
		}},
		{Name: "buffer.overflow", Version: 1, Payload: "buffer_overflow", Operational: true, Description: "An agent dropped events under its drop_oldest overflow policy; the ranges name exactly what was lost.", Fields: []Field{
			{Name: "dropped", Kind: List, MinItems: 1, Since: 1, Description: "Dropped producer sequences.", Fields: []Field{
				{Name: "first", Kind: Uint, Since: 1, Description: "First dropped sequence."},
				{Name: "last", Kind: Uint, Since: 1, Description: "Last dropped sequence."},
			}},
			str("policy", "Overflow policy in force.", false, ""),
		}},
		{Name: "source.error", Version: 1, Payload: "source_error", Operational: true, Description: "A source could not decode or map a payload; the raw bytes travel along so nothing is lost at the plant.", Fields: []Field{
			str("reason", "What was wrong, with the byte offset or field.", true, ""),
			str("location", "Topic, node or file of the payload.", false, ""),
			{Name: "raw", Kind: Bytes, Since: 1, Description: "The payload as received."},
			str("quarantine_id", "Where the agent keeps the payload.", false, ""),
		}},
		{Name: "observation", Version: 1, Payload: "observation", Description: "Generic telemetry: one value of one point (OPC UA node, Sparkplug metric).", Fields: []Field{
			{Name: "value", Kind: Oneof, Required: true, Since: 1, Description: "The value; exactly one member is set.", Fields: []Field{
				{Name: "double_value", Kind: Double, Since: 1, Description: "Floating point reading (telemetry only, never a business quantity)."},
				{Name: "int_value", Kind: Int, Since: 1, Description: "Signed integer."},
				{Name: "uint_value", Kind: Uint, Since: 1, Description: "Unsigned integer."},
				{Name: "bool_value", Kind: Bool, Since: 1, Description: "Boolean."},
				{Name: "string_value", Kind: String, Since: 1, Description: "Text."},
				{Name: "decimal_value", Kind: Decimal, Since: 1, Description: "Exact decimal string."},
				{Name: "bytes_value", Kind: Bytes, Since: 1, Description: "Opaque bytes."},
			}},
			str("data_type", "Source type name, e.g. UInt32.", false, ""),
			{Name: "status_code", Kind: Uint, Since: 1, Description: "Source quality; 0 is good."},
			str("unit", "Engineering unit.", false, ""),
			ts("source_timestamp", "Source timestamp.", false),
			ts("server_timestamp", "Server timestamp.", false),
		}},
	}
}
