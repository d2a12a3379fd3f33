package main

import "github.com/plantsync/plantsync/plugins/sdk"

func main() {
	sdk.ServeDestination(New(sdk.NewLogger()))
}
