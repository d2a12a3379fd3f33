package pipeline

import (
	"github.com/plantsync/plantsync/hub/alerts"
	"github.com/plantsync/plantsync/hub/approvals"
	"github.com/plantsync/plantsync/hub/crosswalk"
	"github.com/plantsync/plantsync/hub/exceptions"
	"github.com/plantsync/plantsync/hub/outbox"
	"github.com/plantsync/plantsync/hub/schema"
)

// Outbox is the durable outbox the delivery engine reads.
func (p *Pipeline) Outbox() outbox.Store { return p.outbox }

// Exceptions is the exceptions store.
func (p *Pipeline) Exceptions() *exceptions.Bolt { return p.exceptions }

// Approvals is the approvals store (decide with Pipeline.Decide).
func (p *Pipeline) Approvals() *approvals.Bolt { return p.approvals }

// Alerts is the alerts store.
func (p *Pipeline) Alerts() *alerts.Bolt { return p.alerts }

// Crosswalks is the crosswalk store.
func (p *Pipeline) Crosswalks() *crosswalk.Store { return p.crosswalks }

// Schemas is the schema registry the pipeline validates against.
func (p *Pipeline) Schemas() *schema.Registry { return p.plan.schemas }

// Workflows is the effective workflow list.
func (p *Pipeline) Workflows() []Workflow { return p.opts.Config.Workflows }

// Rules is the effective validation rule list.
func (p *Pipeline) Rules() []Rule { return p.opts.Config.Rules }

// Destinations lists the destinations, the built-in alerts included.
func (p *Pipeline) Destinations() []Destination { return p.opts.Destinations }
