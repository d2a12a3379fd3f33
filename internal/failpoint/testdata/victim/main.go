// Command victim is the process that failpoint's tests kill. It runs five
// numbered steps and prints before and after each failpoint, unbuffered, so
// the test can tell from its stdout exactly where it died.
package main

import (
	"fmt"

	"github.com/plantsync/plantsync/internal/failpoint"
)

func main() {
	for i := 1; i <= 5; i++ {
		if err := failpoint.Error("victim/before-write"); err != nil {
			fmt.Printf("step %d failed: %v\n", i, err)
			continue
		}
		fmt.Printf("step %d written\n", i)
		failpoint.Inject("victim/after-write")
		fmt.Printf("step %d done\n", i)
	}
	fmt.Println("finished")
}
