package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/plantsync/plantsync/plugins/sdk"
	"github.com/plantsync/plantsync/plugins/sdk/sdktest"
)

func TestMain(m *testing.M) {
	// The test binary doubles as the plugin binary of the agent test.
	if sdktest.RunPluginRole(map[string]func(){"filedrop": main}) {
		return
	}
	goleak.VerifyTestMain(m)
}

// shortageConfig maps shortage CSVs (and JSON) to material.shortage events.
func shortageConfig(dir string) map[string]any {
	return map[string]any{
		"dir": dir, "poll_interval": "20ms", "settle": "0s",
		"files": []any{
			map[string]any{
				"pattern": "shortage*", "event_type": "material.shortage", "id_columns": []any{"shortage_id"},
				"occurred_at_column": "reported",
				"fields": map[string]any{"item": "material", "quantity.value": "qty", "quantity.unit": "uom",
					"required_by": "need_date", "warehouse": "whse", "order": "order"},
				"attributes": map[string]any{"legacy_user": "user"},
			},
			map[string]any{
				"pattern": "status*.csv", "event_type": "production.order.status", "delimiter": ";",
				"fields": map[string]any{"order": "Auftrag", "status": "Status"},
			},
		},
	}
}

const goodCSV = "shortage_id,material,qty,uom,need_date,whse,order,reported,user\n" +
	"S-1,MAT-2001,8.147,KG,2026-12-01,STO-MAIN,PO-1001,2026-11-27T10:00:00Z,anna\n" +
	"S-2,MAT-2002,12,EA,2026-12-02,STO-MAIN,,2026-11-27 11:00:00,\n"

// A file with a malformed row in the middle: line 3 has a bad quantity,
// line 5 too few fields.
const mixedCSV = "shortage_id,material,qty,uom,need_date,whse,order,reported,user\n" +
	"S-10,MAT-1,1,EA,2026-12-01,W,,,\n" +
	"S-11,MAT-2,lots,EA,2026-12-01,W,,,\n" +
	"S-12,MAT-3,3,EA,2026-12-01,W,,,\n" +
	"S-13,MAT-4\n" +
	"S-14,MAT-5,5,EA,31.12.2026,W,,,\n" +
	"S-15,MAT-6,6.5,EA,,W,,,\n"

func write(t *testing.T, dir, name, content string) {
	t.Helper()
	tmp := filepath.Join(dir, name+".tmp")
	if err := os.WriteFile(tmp, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(dir, name)); err != nil {
		t.Fatal(err)
	}
}

// reader reads a source in the background and collects its records.
type reader struct {
	recs   chan sdk.Record
	cancel context.CancelFunc
	done   chan error
}

func startRead(t *testing.T, src sdk.Source) *reader {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	r := &reader{recs: make(chan sdk.Record, 1000), cancel: cancel, done: make(chan error, 1)}
	go func() {
		r.done <- src.Read(ctx, sdk.ReadRequest{}, func(recs []sdk.Record) error {
			for _, rec := range recs {
				r.recs <- rec
			}
			return nil
		})
	}()
	t.Cleanup(r.stop)
	return r
}

func (r *reader) stop() {
	if r.cancel != nil {
		r.cancel()
		<-r.done
		r.cancel = nil
	}
}

func (r *reader) take(t *testing.T, n int) []sdk.Record {
	t.Helper()
	var out []sdk.Record
	for len(out) < n {
		select {
		case rec := <-r.recs:
			out = append(out, rec)
		case <-time.After(10 * time.Second):
			t.Fatalf("got %d records, want %d: %v", len(out), n, out)
		}
	}
	return out
}

func (r *reader) none(t *testing.T, wait time.Duration) {
	t.Helper()
	select {
	case rec := <-r.recs:
		t.Fatalf("unexpected record %v", rec)
	case <-time.After(wait):
	}
}

func waitFile(t *testing.T, path string) string {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if raw, err := os.ReadFile(path); err == nil {
			return string(raw)
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("%s did not appear", path)
	return ""
}

func configured(t *testing.T, cfg map[string]any) sdk.Source {
	t.Helper()
	src := sdktest.ServeSource(t, New(nil))
	sdktest.Configure(t, src, "legacy", cfg)
	return src
}

func TestGoodFileToDone(t *testing.T) {
	dir := t.TempDir()
	src := configured(t, shortageConfig(dir))
	r := startRead(t, src)
	write(t, dir, "shortage_1.csv", goodCSV)
	recs := r.take(t, 2)
	ev := recs[0].Event
	s := ev.GetMaterialShortage()
	if recs[0].ID != "material.shortage|S-1" || recs[0].Seq != 1 || ev.GetType() != "material.shortage" ||
		s.GetItem() != "MAT-2001" || s.GetQuantity().GetValue() != "8.147" || s.GetQuantity().GetUnit() != "KG" ||
		s.GetRequiredBy().AsTime() != time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC) || s.GetWarehouse() != "STO-MAIN" || s.GetOrder() != "PO-1001" ||
		ev.GetOccurredAt().AsTime() != time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC) || ev.GetAttributes()["legacy_user"] != "anna" ||
		ev.GetAttributes()["line"] != "2" || ev.GetSource().GetUri() != "file:shortage_1.csv#line=2" {
		t.Fatalf("record 1 = %v %v", recs[0].ID, ev)
	}
	if recs[1].ID != "material.shortage|S-2" || recs[1].Event.GetMaterialShortage().GetOrder() != "" ||
		recs[1].Event.GetOccurredAt().AsTime() != time.Date(2026, 11, 27, 11, 0, 0, 0, time.UTC) {
		t.Fatalf("record 2 = %v", recs[1])
	}
	// Not yet acknowledged: the file stays.
	if _, err := os.Stat(filepath.Join(dir, "shortage_1.csv")); err != nil {
		t.Fatalf("file moved before its ack: %v", err)
	}
	if _, err := src.Ack(context.Background(), sdk.AckRequest{Through: 2}); err != nil {
		t.Fatal(err)
	}
	if got := waitFile(t, filepath.Join(dir, "done", "shortage_1.csv")); got != goodCSV {
		t.Fatalf("done file = %q", got)
	}
	r.none(t, 100*time.Millisecond)
}

// The malformed-row case: the good rows are sent (once), each bad row
// becomes a source.error record naming file and line, and after the ack
// the file goes to failed/ with a reason file naming every bad line.
func TestMalformedRows(t *testing.T) {
	dir := t.TempDir()
	src := configured(t, shortageConfig(dir))
	r := startRead(t, src)
	write(t, dir, "shortage_2.csv", mixedCSV)
	recs := r.take(t, 6)
	var good []string
	errs := map[string]string{}
	for _, rec := range recs {
		if rec.Event.GetType() == "source.error" {
			e := rec.Event.GetSourceError()
			errs[e.GetLocation()] = e.GetReason()
			continue
		}
		good = append(good, rec.ID)
	}
	if strings.Join(good, " ") != "material.shortage|S-10 material.shortage|S-12 material.shortage|S-15" {
		t.Errorf("good rows = %v", good)
	}
	for loc, want := range map[string]string{
		"shortage_2.csv line 3": `column qty (quantity.value): "lots" is not a decimal number`,
		"shortage_2.csv line 5": "2 fields, the header has 9",
		"shortage_2.csv line 6": `column need_date (required_by): "31.12.2026" is not a date`,
	} {
		if !strings.Contains(errs[loc], want) {
			t.Errorf("%s: reason %q, want %q (all: %v)", loc, errs[loc], want, errs)
		}
	}
	if _, err := src.Ack(context.Background(), sdk.AckRequest{Through: 6}); err != nil {
		t.Fatal(err)
	}
	reason := waitFile(t, filepath.Join(dir, "failed", "shortage_2.csv.reason"))
	for _, want := range []string{"line 3: column qty", "line 5: 2 fields", "line 6: column need_date"} {
		if !strings.Contains(reason, want) {
			t.Errorf("reason file lacks %q:\n%s", want, reason)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "failed", "shortage_2.csv")); err != nil {
		t.Error(err)
	}
	// Delivered once: a new Read finds nothing left to send.
	r.stop()
	r2 := startRead(t, src)
	r2.none(t, 150*time.Millisecond)
}

// A Read that ends before the ack (the agent crashed) is followed by one
// that sends the same records again, with the same ids.
func TestUnackedSentAgain(t *testing.T) {
	dir := t.TempDir()
	src := configured(t, shortageConfig(dir))
	r := startRead(t, src)
	write(t, dir, "shortage_3.csv", goodCSV)
	first := r.take(t, 2)
	r.stop()
	r2 := startRead(t, src)
	again := r2.take(t, 2)
	if first[0].ID != again[0].ID || first[1].ID != again[1].ID || again[0].Seq != 1 {
		t.Fatalf("first %v, again %v", first, again)
	}
	// A late ack of the first Read is not applied to the second.
	if _, err := src.Ack(context.Background(), sdk.AckRequest{Through: 2}); err != nil {
		t.Fatal(err)
	}
	waitFile(t, filepath.Join(dir, "done", "shortage_3.csv"))
}

func TestFormatsAndFileErrors(t *testing.T) {
	dir := t.TempDir()
	src := configured(t, shortageConfig(dir))
	r := startRead(t, src)
	write(t, dir, "shortage_4.json", `[
  {"shortage_id": "J-1", "material": "MAT-9", "qty": 2.50, "uom": "KG", "need_date": "2026-12-03"},
  {"shortage_id": "J-2", "material": "MAT-9", "qty": "x", "uom": "KG"}
]`)
	recs := r.take(t, 2)
	if recs[0].ID != "material.shortage|J-1" || recs[0].Event.GetMaterialShortage().GetQuantity().GetValue() != "2.50" {
		t.Errorf("json row = %v", recs[0])
	}
	if e := recs[1].Event.GetSourceError(); e.GetLocation() != "shortage_4.json line 3" {
		t.Errorf("json error = %v", recs[1])
	}
	if _, err := src.Ack(context.Background(), sdk.AckRequest{Through: 2}); err != nil {
		t.Fatal(err)
	}
	waitFile(t, filepath.Join(dir, "failed", "shortage_4.json.reason"))

	write(t, dir, "status_1.csv", "Auftrag;Status\nPO-1;running\nPO-2;done\n")
	recs = r.take(t, 2)
	if recs[0].ID != "production.order.status|status_1.csv:2" || recs[1].Event.GetProductionOrderStatus().GetStatus() != "done" || recs[0].Seq != 3 {
		t.Errorf("status rows = %v", recs)
	}
	write(t, dir, "shortage_5.csv", "shortage_id,material\nS-1,M\n")
	recs = r.take(t, 1)
	if e := recs[0].Event.GetSourceError(); !strings.Contains(e.GetReason(), `line 1: the header (shortage_id,material) lacks the column(s) "order", "uom", "qty"`) {
		t.Errorf("missing column = %v", recs[0])
	}
	write(t, dir, "unknown.csv", "a\n1\n")
	recs = r.take(t, 1)
	if e := recs[0].Event.GetSourceError(); !strings.Contains(e.GetReason(), `no files[] pattern matches "unknown.csv"`) {
		t.Errorf("unmatched = %v", recs[0])
	}
	if _, err := src.Ack(context.Background(), sdk.AckRequest{Through: 6}); err != nil {
		t.Fatal(err)
	}
	waitFile(t, filepath.Join(dir, "done", "status_1.csv"))
	if got := waitFile(t, filepath.Join(dir, "failed", "unknown.csv.reason")); !strings.Contains(got, "file: no files[] pattern") {
		t.Errorf("reason = %q", got)
	}
	waitFile(t, filepath.Join(dir, "failed", "shortage_5.csv.reason"))
	// An empty file has nothing to wait for.
	write(t, dir, "shortage_6.csv", "shortage_id,material,qty,uom,need_date,whse,order,reported,user\n")
	waitFile(t, filepath.Join(dir, "done", "shortage_6.csv"))
}

func TestDecimalCommaAndDuplicateIDs(t *testing.T) {
	dir := t.TempDir()
	cfg := shortageConfig(dir)
	cfg["files"].([]any)[0].(map[string]any)["decimal_comma"] = true
	cfg["files"].([]any)[0].(map[string]any)["delimiter"] = ";"
	src := configured(t, cfg)
	r := startRead(t, src)
	write(t, dir, "shortage_7.csv", "shortage_id;material;qty;uom;need_date;whse;order;reported;user\nD-1;M;1.234,5;KG;;;;;\nD-1;M;2;KG;;;;;\n")
	recs := r.take(t, 2)
	if recs[0].Event.GetMaterialShortage().GetQuantity().GetValue() != "1234.5" {
		t.Errorf("decimal comma = %v", recs[0])
	}
	if e := recs[1].Event.GetSourceError(); !strings.Contains(e.GetReason(), `row id "D-1" repeats line 2`) {
		t.Errorf("duplicate = %v", recs[1])
	}
}

func TestInvalidConfig(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		mod  func(map[string]any)
		want string
	}{
		{func(c map[string]any) { delete(c, "dir") }, "dir: required"},
		{func(c map[string]any) { c["dir"] = "relative" }, `dir: "relative" is not absolute`},
		{func(c map[string]any) { c["dir"] = filepath.Join(dir, "missing") }, "is not a readable folder"},
		{func(c map[string]any) { c["files"] = []any{} }, "files: at least one mapping"},
		{func(c map[string]any) { c["files"].([]any)[0].(map[string]any)["event_type"] = "material.shortfall" }, `files[0].event_type: "material.shortfall" is not an event type`},
		{func(c map[string]any) {
			c["files"].([]any)[0].(map[string]any)["fields"] = map[string]any{"quantity": "qty"}
		}, "files[0].fields.quantity: \"quantity\" is a message; map its fields"},
		{func(c map[string]any) { c["files"].([]any)[0].(map[string]any)["fields"] = map[string]any{"itme": "m"} }, `MaterialShortage has no field "itme"`},
		{func(c map[string]any) { c["files"].([]any)[1].(map[string]any)["delimiter"] = ";;" }, "files[1].delimiter"},
		{func(c map[string]any) { c["files"].([]any)[0].(map[string]any)["time_zone"] = "Mars/Base" }, "files[0].time_zone"},
		{func(c map[string]any) { c["poll"] = "1s" }, `unknown field "poll"`},
	} {
		cfg := shortageConfig(dir)
		tc.mod(cfg)
		src := sdktest.ServeSource(t, New(nil))
		_, err := src.Configure(context.Background(), sdk.ConfigureRequest{Name: "x", Config: cfg})
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("err = %v, want %q", err, tc.want)
		}
	}
}

// Numbers as spreadsheets write them reach the hub in the form it reads;
// what the hub would refuse is refused here, naming the value.
func TestCanonicalDecimal(t *testing.T) {
	for in, want := range map[string]string{
		"5": "5", "+5": "5", "5.": "5", ".5": "0.5", "-.5": "-0.5", "+0.25": "0.25", "-12.50": "-12.50",
	} {
		if got, err := canonicalDecimal(in); err != nil || got != want {
			t.Errorf("canonicalDecimal(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for in, want := range map[string]string{
		"1e5": "is not a decimal number", "+-5": "is not a decimal number", ".": "is not a decimal number",
		"1 000": "is not a decimal number", "": "is not a decimal number", "0.1234567890123456789": "more than 40 digits or 18 decimals",
	} {
		if _, err := canonicalDecimal(in); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("canonicalDecimal(%q): %v; want %q", in, err, want)
		}
	}
}
