package plantsim

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestFormatDecimal(t *testing.T) {
	for _, tc := range []struct {
		minor, decimals int
		want            string
	}{
		{12, 0, "12"},
		{12345, 3, "12.345"},
		{500, 3, "0.500"},
		{5, 3, "0.005"},
		{100, 2, "1.00"},
		{0, 2, "0.00"},
	} {
		if got := formatDecimal(tc.minor, tc.decimals); got != tc.want {
			t.Errorf("formatDecimal(%d, %d) = %q, want %q", tc.minor, tc.decimals, got, tc.want)
		}
	}
}

func testConfig(seed int64) Config {
	cfg := NewDefaultConfig()
	cfg.Lines = []string{"L1", "L2"}
	cfg.Seed = seed
	return cfg
}

// messages draws n messages and blanks what may differ between runs.
func messages(g *generator, n int) []Message {
	now := time.Date(2026, 5, 4, 3, 2, 1, 0, time.UTC)
	var out []Message
	for range n {
		_, m, err := g.next("", now)
		if err != nil {
			panic(err)
		}
		m.MessageID = strings.Replace(m.MessageID, g.runID, "RUN", 1)
		out = append(out, m)
	}
	return out
}

func TestGeneratorIsDeterministic(t *testing.T) {
	a := messages(newGenerator(testConfig(1), "aaaaaaaa"), 30)
	b := messages(newGenerator(testConfig(1), "bbbbbbbb"), 30)
	if !reflect.DeepEqual(a, b) {
		t.Errorf("same seed, different messages:\n%v\n%v", a, b)
	}
	c := messages(newGenerator(testConfig(2), "aaaaaaaa"), 30)
	if reflect.DeepEqual(a, c) {
		t.Error("different seeds produced the same messages")
	}
}

func TestGeneratorCyclesKindsAndNumbersMessages(t *testing.T) {
	g := newGenerator(testConfig(1), "0123abcd")
	now := time.Now()
	for i := range 7 {
		topic, m, err := g.next("", now)
		if err != nil {
			t.Fatal(err)
		}
		kind := Kinds()[i%3]
		if !strings.HasSuffix(topic, "/"+kind) {
			t.Errorf("message %d topic %s, want kind %s", i, topic, kind)
		}
		if want := "DE-01-" + kind + "-0123abcd-" + string(rune('1'+i)); m.MessageID != want {
			t.Errorf("message %d id %s, want %s", i, m.MessageID, want)
		}
	}
	// An explicit kind does not move the cycle.
	if _, _, err := g.next(KindShortage, now); err != nil {
		t.Fatal(err)
	}
	topic, _, _ := g.next("", now)
	if !strings.HasSuffix(topic, "/"+KindConsumption) {
		t.Errorf("cycle moved by explicit kind: %s", topic)
	}
}

func TestPlantIsDeterministic(t *testing.T) {
	run := func(seed int64) [][3]any {
		now := time.Unix(0, 0)
		p := newPlant(testConfig(seed), now)
		var out [][3]any
		for i := range 200 {
			p.step(now.Add(time.Duration(i) * time.Second))
			for _, m := range p.machines {
				out = append(out, [3]any{m.stateName(), m.count(), m.temp()})
			}
		}
		return out
	}
	if !reflect.DeepEqual(run(5), run(5)) {
		t.Error("same seed, different machine values")
	}
	if reflect.DeepEqual(run(5), run(6)) {
		t.Error("different seeds, same machine values")
	}
}

func TestPlantStopsAreShort(t *testing.T) {
	p := newPlant(testConfig(9), time.Unix(0, 0))
	stopped := make(map[*machine]int)
	states := map[string]bool{}
	for i := range 2000 {
		changes := p.step(time.Unix(int64(i), 0))
		for _, c := range changes {
			states[c.m.stateName()] = true
			if c.m.stateName() == StateRunning {
				stopped[c.m] = 0
				continue
			}
			stopped[c.m]++
			if stopped[c.m] > 3 {
				t.Fatalf("%s stopped for %d steps", c.m.key(), stopped[c.m])
			}
			if c.count {
				t.Fatalf("%s counted parts while %s", c.m.key(), c.m.stateName())
			}
		}
	}
	for _, s := range []string{StateRunning, StateIdle, StateDown} {
		if !states[s] {
			t.Errorf("no machine was ever %s in 2000 steps", s)
		}
	}
}

func TestAdvertisedHosts(t *testing.T) {
	for host, want := range map[string][]string{
		"127.0.0.1":   {"127.0.0.1", "localhost"},
		"localhost":   {"localhost", "127.0.0.1"},
		"::1":         {"::1", "localhost"},
		"10.1.2.3":    {"10.1.2.3"},
		"plant.local": {"plant.local"},
	} {
		if got := advertisedHosts(host); !reflect.DeepEqual(got, want) {
			t.Errorf("advertisedHosts(%q) = %v, want %v", host, got, want)
		}
	}
	if got := advertisedHosts("0.0.0.0"); len(got) < 2 || got[0] != "127.0.0.1" || got[1] != "localhost" {
		t.Errorf("advertisedHosts(0.0.0.0) = %v, want 127.0.0.1, localhost, hostname", got)
	}
}

func TestNodeID(t *testing.T) {
	if got := NodeID("L1", 1, VarGoodCount); got != "ns=2;s=L1.M1.GoodCount" {
		t.Errorf("NodeID = %q", got)
	}
}

func TestGeneratorUsesCatalogue(t *testing.T) {
	g := newGenerator(testConfig(3), "00000000")
	products := map[string]string{}
	for _, o := range catalogueOrders {
		products[o.order] = o.item
	}
	for range 300 {
		_, m, err := g.next("", time.Now())
		if err != nil {
			t.Fatal(err)
		}
		product, ok := products[m.Order]
		if !ok {
			t.Fatalf("order %s is not in the catalogue", m.Order)
		}
		if m.Lot == "" && m.RequiredBy == "" { // completion
			if m.Item != product || m.Unit != "EA" {
				t.Errorf("completion of %s reports %s %s", m.Order, m.Item, m.Unit)
			}
			continue
		}
		found := false
		for _, c := range catalogueBOM[product] {
			found = found || (c.item == m.Item && c.unit == m.Unit)
		}
		if !found {
			t.Errorf("%s of %s (%s) names %s %s, not in its bill of materials", m.MessageID, m.Order, product, m.Item, m.Unit)
		}
	}
}

var update = flag.Bool("update", false, "rewrite golden files in testdata")

// TestMessagesGolden pins the message sequence of the default config, so a
// change to the catalogue or the draws is a deliberate one.
func TestMessagesGolden(t *testing.T) {
	g := newGenerator(NewDefaultConfig(), "8c6d029c")
	start := time.Date(2026, 11, 27, 10, 56, 57, 59700491, time.UTC)
	var buf bytes.Buffer
	for i := range 30 {
		topic, m, err := g.next("", start.Add(time.Duration(i)*500*time.Millisecond))
		if err != nil {
			t.Fatal(err)
		}
		b, err := json.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&buf, "%s %s\n", topic, b)
	}
	const golden = "testdata/messages_seed0.golden"
	if *update {
		if err := os.WriteFile(golden, buf.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("%v (run with -update to create it)", err)
	}
	if !bytes.Equal(buf.Bytes(), want) {
		t.Errorf("messages differ from %s (run with -update if intended):\n%s", golden, buf.String())
	}
}
