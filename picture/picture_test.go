package picture_test

import (
	"bytes"
	"encoding/xml"
	"io"
	"strings"
	"testing"

	"github.com/tdxsim/tdxsim/picture"
	"github.com/tdxsim/tdxsim/scenario"
	"github.com/tdxsim/tdxsim/view"
)

// The SVG is well-formed XML with one square per 2 MiB cell of the TD, a
// legend entry per state, and a bar per SEAMCALL leaf.
func TestWrite(t *testing.T) {
	f, err := scenario.Parse("s.yaml", []byte("tds: [{memory: 64M, vcpus: 1}]\ntimeline:\n  - boot: {accept: eager}\n"))
	if err != nil {
		t.Fatal(err)
	}
	var maps []view.Map
	rn, err := scenario.Start(f, scenario.Options{})
	if err != nil {
		t.Fatal(err)
	}
	for {
		if m := view.Snapshot(rn.View().World); len(m) > 0 {
			maps = m
		}
		if !rn.More() {
			break
		}
		rn.Next()
	}
	r, err := rn.Report()
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	if err := picture.Write(&b, r, maps); err != nil {
		t.Fatal(err)
	}
	rects, texts := 0, []string{}
	d := xml.NewDecoder(&b)
	for {
		tok, err := d.Token()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("not well-formed: %v", err)
		}
		switch el := tok.(type) {
		case xml.StartElement:
			if el.Name.Local == "rect" {
				rects++
			}
		case xml.CharData:
			texts = append(texts, string(el))
		}
	}
	all := strings.Join(texts, "|")
	want := 1 + 32 + len(view.Legend) + len(r.Seamcalls) + 5 // background, cells, legend, leaves, memory rows
	if rects != want {
		t.Errorf("%d rects, want %d", rects, want)
	}
	for _, s := range []string{"td0: GPA 0 to 64.00 MiB", "private mapped 2M", "TDH.MEM.PAGE.AUG", "PAMT static"} {
		if !strings.Contains(all, s) {
			t.Errorf("no %q in the SVG's text", s)
		}
	}
	if maps[0].Counts[string(view.Private2M)] != 32 {
		t.Errorf("eager boot at 2M: counts %v", maps[0].Counts)
	}
}

func TestDownsample(t *testing.T) {
	if got := picture.Downsample("..2.s4..", 2); got != ".24." { // a private page says more than a shared one
		t.Errorf("Downsample = %q", got)
	}
}
