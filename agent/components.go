package agent

import (
	"fmt"

	"github.com/plantsync/plantsync/agent/source"
	"github.com/plantsync/plantsync/agent/source/generator"
	"github.com/plantsync/plantsync/agent/source/mqtt"
	"github.com/plantsync/plantsync/agent/source/opcua"
	"github.com/plantsync/plantsync/agent/source/plugin"
)

// Components lists every source type the agent binary ships. Registration is
// explicit: adding a source means adding it here.
func Components() (map[string]source.Factory, error) {
	list := []source.Factory{
		mqtt.Factory,
		generator.Factory,
		opcua.Factory,
		plugin.Factory,
	}
	out := make(map[string]source.Factory, len(list))
	for _, f := range list {
		if _, dup := out[f.Type]; dup {
			return nil, fmt.Errorf("source type %q registered twice", f.Type)
		}
		out[f.Type] = f
	}
	return out, nil
}
