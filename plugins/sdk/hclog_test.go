package sdk

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
)

// go-plugin's own "plugin" key (the binary's path) becomes "path", so a
// record carries the configured name under "plugin" once.
func TestHclogPluginKeyIsThePath(t *testing.T) {
	var out bytes.Buffer
	log := slog.New(slog.NewTextHandler(&out, nil)).With("plugin", "erp")
	a := newHclogAdapter(log, func() *Scrubber { return NewScrubber() })
	a.Info("plugin process exited", "plugin", "/usr/lib/plantsync-hub/plugins/webhook", "id", 12079)
	line := out.String()
	if strings.Count(line, "plugin=") != 1 || !strings.Contains(line, "plugin=erp") || !strings.Contains(line, "path=/usr/lib/plantsync-hub/plugins/webhook") {
		t.Errorf("log line: %s", line)
	}
}
