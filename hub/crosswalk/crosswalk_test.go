package crosswalk

import (
	"bytes"
	"errors"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

func spec(t *testing.T, name string) Spec {
	t.Helper()
	for _, s := range Specs([]string{"erp"}) {
		if s.Name == name {
			return s
		}
	}
	t.Fatalf("no spec %s", name)
	return Spec{}
}

func TestReadCSVErrorsNameFileAndLine(t *testing.T) {
	item, unit := spec(t, "item"), spec(t, "erp.unit")
	for _, c := range []struct {
		name, csv string
		sp        Spec
		want      string
	}{
		{"empty", "", item, "item.csv: empty; want a header line"},
		{"unknown column", "plant,local_itme,item\n", item, `item.csv line 1: column "local_itme" is not known for table item`},
		{"missing column", "# comment\nplant,item\n", item, "item.csv line 2: column local_item missing from the header"},
		{"empty cell", "plant,local_item,item\nDE-01,P-1,MAT-1\nDE-01,,MAT-2\n", item, "item.csv line 3: column local_item: empty"},
		{"short row", "plant,local_item,item\nDE-01,P-1\n", item, "item.csv: line 2: wrong number of fields"},
		{"bad quote", "plant,local_item,item\nDE-01,\"P-1,MAT\n", item, "item.csv: line 2"},
		{"duplicate", "plant,local_item,item\nDE-01,P-1,A\n\nDE-01,P-1,B\n", item, "item.csv line 4: same key and effective_from as line 2"},
		{"bad factor", "unit,external_unit,factor\nKG,kg,-1\n", unit, `item.csv line 2: column factor: "-1"; want a positive decimal`},
		{"bad decimals", "unit,external_unit,factor,decimals\nKG,kg,1,x\n", unit, `item.csv line 2: column decimals: "x"`},
		{"bad date", "plant,local_item,item,effective_from\nDE-01,P-1,A,tomorrow\n", item, `item.csv line 2: column effective_from: "tomorrow" is not a date`},
		{"wildcard value", "plant,local_item,item\nDE-01,P-1,*\n", item, "item.csv line 2: column item: * is only allowed in key columns"},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := ReadCSV("item.csv", strings.NewReader(c.csv), c.sp)
			if err == nil || !errors.Is(err, ErrCSV) || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("err = %v, want %q", err, c.want)
			}
		})
	}
	rows, err := ReadCSV("ok.csv", strings.NewReader("\xef\xbb\xbfitem , local_item,plant\n# P-1 is the sheet\nMAT-1,P-1,DE-01\n"), item)
	if err != nil || len(rows) != 1 || rows[0]["item"] != "MAT-1" || rows[0]["plant"] != "DE-01" {
		t.Fatalf("rows = %v, %v", rows, err)
	}
}

func TestLookupWildcardsAndEffectiveDates(t *testing.T) {
	sp := spec(t, "unit")
	tbl := &Table{Spec: sp, Rows: []Row{
		{"plant": "*", "local_unit": "PCS", "unit": "EA", "factor": "1"},
		{"plant": "DE-01", "local_unit": "BOX", "unit": "EA", "factor": "12"},
		{"plant": "DE-01", "local_unit": "BOX", "unit": "EA", "factor": "10", "effective_from": "2027-01-01"},
		{"plant": "*", "local_unit": "*", "unit": "EA", "factor": "1", "effective_from": "2030-01-01"},
	}}
	tbl.build()
	now := time.Date(2026, 11, 27, 0, 0, 0, 0, time.UTC)
	if v, ok := tbl.Lookup(now, "DE-01", "BOX"); !ok || v[1] != "12" {
		t.Fatalf("BOX today = %v %v", v, ok)
	}
	if v, ok := tbl.Lookup(time.Date(2027, 1, 1, 0, 0, 0, 0, time.UTC), "DE-01", "BOX"); !ok || v[1] != "10" {
		t.Fatalf("BOX from 2027 = %v %v", v, ok)
	}
	if v, ok := tbl.Lookup(now, "US-02", "PCS"); !ok || v[0] != "EA" {
		t.Fatalf("wildcard plant = %v %v", v, ok)
	}
	if _, ok := tbl.Lookup(now, "US-02", "LB"); ok {
		t.Fatal("LB mapped before the catch-all row is in force")
	}
	if _, ok := tbl.Lookup(time.Date(2030, 2, 1, 0, 0, 0, 0, time.UTC), "US-02", "LB"); !ok {
		t.Fatal("catch-all row not used once in force")
	}
}

func TestStoreVersionsAuditAndReload(t *testing.T) {
	path := filepath.Join(t.TempDir(), "crosswalks.db")
	clock := time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC)
	open := func() *Store {
		s, err := Open(Options{Path: path, Specs: Specs([]string{"erp"}), Now: func() time.Time { return clock }})
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	s := open()
	rows := []Row{{"plant": "DE-01", "local_item": "P-1", "item": "MAT-1"}}
	if changed, err := s.Load("item", "item.csv", "h1", rows); err != nil || !changed {
		t.Fatalf("load: %v %v", changed, err)
	}
	if changed, _ := s.Load("item", "item.csv", "h1", rows); changed {
		t.Fatal("unchanged file loaded again")
	}
	if _, err := s.Replace("item", 0, rows, "alice"); !errors.Is(err, ErrVersionMismatch) {
		t.Fatalf("stale If-Match: %v", err)
	}
	tbl, err := s.Upsert("item", []Row{{"plant": "DE-01", "local_item": "P-2", "item": "MAT-2"}, {"plant": "DE-01", "local_item": "P-1", "item": "MAT-1B"}}, "alice")
	if err != nil || tbl.Version != 2 || len(tbl.Rows) != 2 {
		t.Fatalf("upsert: %+v %v", tbl, err)
	}
	if _, err := s.Upsert("item", []Row{{"plant": "DE-01", "item": "X"}}, "alice"); !errors.Is(err, ErrInvalidRow) {
		t.Fatalf("bad upsert: %v", err)
	}
	if _, err := s.Replace("nope", 0, nil, "alice"); !errors.Is(err, ErrUnknownTable) {
		t.Fatalf("unknown table: %v", err)
	}
	if v, ok := s.Snapshot().tables["item"].Lookup(clock, "DE-01", "P-1"); !ok || v[0] != "MAT-1B" {
		t.Fatalf("lookup after upsert: %v", v)
	}
	h, err := s.History("item", 10)
	if err != nil || len(h) != 2 || h[0].Subject != "alice" || h[0].Action != "upsert" || len(h[0].Added) != 1 || len(h[0].Updated) != 1 || h[1].Subject != "config:item.csv" {
		t.Fatalf("history: %+v %v", h, err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	// API edits survive a restart with the same file; a changed file wins.
	s = open()
	defer s.Close()
	if tbl, _, _ := s.Table("item"); tbl.Version != 2 || len(tbl.Rows) != 2 {
		t.Fatalf("after reopen: %+v", tbl)
	}
	if changed, _ := s.Load("item", "item.csv", "h1", rows); changed {
		t.Fatal("unchanged file replaced API edits")
	}
	if changed, _ := s.Load("item", "item.csv", "h2", rows); !changed {
		t.Fatal("changed file not loaded")
	}
	if tbl, _, _ := s.Table("item"); tbl.Version != 3 || len(tbl.Rows) != 1 {
		t.Fatalf("after file change: %+v", tbl)
	}
	if tbl, exists, err := s.Table("erp.item"); err != nil || exists || tbl.Version != 0 {
		t.Fatalf("absent table: %+v %v %v", tbl, exists, err)
	}
}

func FuzzReadCSV(f *testing.F) {
	f.Add("plant,local_unit,unit,factor,effective_from\nDE-01,BOX,EA,12,2026-01-01\n*,PCS,EA,1,\n")
	f.Add("local_unit,plant,factor,unit\n\"B,X\",DE-01,0.5,KG\n")
	f.Add("plant,local_unit,unit,factor\n# c\nDE-01,\"a\"\"b\",EA,1\n")
	f.Add("\xef\xbb\xbfplant,local_unit,unit,factor\r\nx,y,z,1\r\n")
	sp := inboundSpecs()[2]
	f.Fuzz(func(t *testing.T, in string) {
		rows, err := ReadCSV("f.csv", strings.NewReader(in), sp)
		if err != nil {
			if !errors.Is(err, ErrCSV) || !strings.Contains(err.Error(), "f.csv") {
				t.Fatalf("error does not name the file: %v", err)
			}
			return
		}
		if err := CheckRows(sp, rows); err != nil {
			t.Fatalf("accepted rows fail CheckRows: %v", err)
		}
		var buf bytes.Buffer
		if err := WriteCSV(&buf, sp, rows); err != nil {
			t.Fatal(err)
		}
		back, err := ReadCSV("f.csv", &buf, sp)
		if err != nil {
			t.Fatalf("written table does not read back: %v\n%s", err, buf.String())
		}
		if len(rows) == 0 && len(back) == 0 {
			return
		}
		if !reflect.DeepEqual(rows, back) {
			t.Fatalf("round trip changed rows:\n%v\n%v", rows, back)
		}
		tbl := &Table{Spec: sp, Rows: rows}
		tbl.build()
		for _, r := range rows {
			if _, ok := tbl.Lookup(time.Date(20000, 1, 1, 0, 0, 0, 0, time.UTC), r["plant"], r["local_unit"]); !ok {
				t.Fatalf("row %v not found by its own key", r)
			}
		}
	})
}
