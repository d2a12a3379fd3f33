// Command fakeerp is a connector plugin for the e2e tests of change
// capture: its changes are read from a JSON file (config changes_file, a
// list of sdk.Change) on every call, and its cursor is the index of the
// next change. Deliveries are accepted and forgotten.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strconv"

	"github.com/plantsync/plantsync/plugins/sdk"
)

type fake struct {
	sdk.UnimplementedDestination
	file string
}

func (f *fake) Configure(_ context.Context, req sdk.ConfigureRequest) (sdk.ConfigureResponse, error) {
	var cfg struct {
		ChangesFile string   `json:"changes_file"`
		Actions     []string `json:"actions"`
	}
	if err := req.Decode(&cfg); err != nil {
		return sdk.ConfigureResponse{}, err
	}
	f.file = cfg.ChangesFile
	return sdk.ConfigureResponse{Actions: cfg.Actions, Capabilities: []sdk.Capability{sdk.CapabilityChanges}, Version: "0.0.1"}, nil
}

func (f *fake) Deliver(context.Context, sdk.DeliverRequest) (sdk.DeliverResponse, error) {
	return sdk.OK("fake"), nil
}

func (f *fake) Changes(_ context.Context, req sdk.ChangesRequest) (sdk.ChangesResponse, error) {
	raw, err := os.ReadFile(f.file)
	if err != nil {
		return sdk.ChangesResponse{}, err
	}
	var all []sdk.Change
	if err := json.Unmarshal(raw, &all); err != nil {
		return sdk.ChangesResponse{}, fmt.Errorf("changes file: %w", err)
	}
	from := 0
	if req.Cursor != "" {
		if from, err = strconv.Atoi(req.Cursor); err != nil {
			return sdk.ChangesResponse{}, fmt.Errorf("cursor %q", req.Cursor)
		}
	}
	from = min(from, len(all))
	to := min(len(all), from+max(req.Limit, 1))
	return sdk.ChangesResponse{Changes: all[from:to], NextCursor: strconv.Itoa(to), More: to < len(all)}, nil
}

func main() { sdk.ServeDestination(&fake{}) }
