package main

import (
	// Time zones of legacy exports (files[].time_zone) must resolve on
	// hosts without a zoneinfo database.
	_ "time/tzdata"

	"github.com/plantsync/plantsync/plugins/sdk"
)

func main() {
	sdk.ServeSource(New(sdk.NewLogger()))
}
