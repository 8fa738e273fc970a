package scenario

import (
	"errors"
	"strings"
	"sync"
	"testing"

	"github.com/tdxsim/tdxsim/check"
	"github.com/tdxsim/tdxsim/event"
)

// zeroSink counts guest_memfd's ZERO content-mode applications.
type zeroSink struct {
	mu           sync.Mutex
	calls, bytes uint64
}

func (z *zeroSink) Emit(e event.Event) {
	if e.Kind == event.KindGmem && e.Name == "content_zero" {
		z.mu.Lock()
		z.calls++
		z.bytes += e.Args[1]
		z.mu.Unlock()
	}
}

const contentTD = `
tds: [{memory: 64M, vcpus: 2}]
timeline:
  - boot: {accept: eager}
  - convert: {count: 16, size: 16K, content: %s}
`

// content: zero under the in-place series' RFC v5, on its own and stacked
// under the huge-page profile: the VMM passes
// KVM_SET_MEMORY_ATTRIBUTES2_ZERO on every private-to-shared conversion,
// guest_memfd zeroes each range, and the guest, whose check then wants
// zeros through the shared alias (not merely zeros or its own earlier
// tag), reads them: guest_reads_back holds. Series: "[PATCH RFC v5 22/53]
// KVM: guest_memfd: Apply content modes while setting memory attributes"
// (20260428-gmem-inplace-conversion-v5-22-d8608ccfca22@google.com).
func TestConvertContentZero(t *testing.T) {
	for _, kernel := range []string{"gmem-inplace-rfc-v5", "hugepage-v3+dpamt-v4+gmem-inplace-rfc-v5"} {
		t.Run(kernel, func(t *testing.T) {
			f, err := Parse("z.yaml", []byte("kernel: "+kernel+strings.Replace(contentTD, "%s", "zero", 1)))
			if err != nil {
				t.Fatal(err)
			}
			if f.TDs[0].Conversion != "in_place" {
				t.Fatalf("conversion %q: the profile's default is in_place", f.TDs[0].Conversion)
			}
			z := &zeroSink{}
			r, err := Run(f, Options{Sink: z})
			if err != nil {
				t.Fatal(err)
			}
			if r.Checks.Failed[check.GuestReadsBack] != 0 || len(r.Violations) != 0 {
				t.Errorf("failed %v, violations %v", r.Checks.Failed, r.Violations)
			}
			if z.calls != 16 || z.bytes != 16*16<<10 {
				t.Errorf("ZERO applied %d times to %d bytes, want 16 ranges of 16 KiB", z.calls, z.bytes)
			}
			if r.Guest.SharedTouches == 0 {
				t.Error("the guest never read the shared alias")
			}
		})
	}
	// The default content mode passes no flag: guest_memfd zeroes nothing.
	f, err := Parse("d.yaml", []byte("kernel: gmem-inplace-rfc-v5"+strings.Replace(contentTD, "%s", "default", 1)))
	if err != nil {
		t.Fatal(err)
	}
	z := &zeroSink{}
	if _, err := Run(f, Options{Sink: z}); err != nil {
		t.Fatal(err)
	}
	if z.calls != 0 {
		t.Errorf("content: default applied ZERO %d times", z.calls)
	}
}

// Bad content settings are exit 2 at load, one line naming the field and
// the setting it conflicts with.
func TestConvertContentBadInput(t *testing.T) {
	for _, c := range []struct {
		name, doc string
		want      []string
	}{
		{"unknown mode", "kernel: gmem-inplace-rfc-v5" + strings.Replace(contentTD, "%s", "scramble", 1), []string{"timeline[1].convert.content", "scramble"}},
		{"preserve after finalize", "kernel: gmem-inplace-rfc-v5" + strings.Replace(contentTD, "%s", "preserve", 1), []string{"timeline[1].convert.content", "KVM_TDX_FINALIZE_VM", "EOPNOTSUPP"}},
		{"zero without content modes", strings.Replace(contentTD, "%s", "zero", 1), []string{"timeline[1].convert.content", "the default kernel hugepage-v3+dpamt-v4", "no content modes"}},
		{"zero on v8", "kernel: gmem-inplace-v8" + strings.Replace(contentTD, "%s", "zero", 1), []string{"timeline[1].convert.content", "gmem-inplace-v8"}},
		{"zero with per-VM attributes", "kernel: gmem-inplace-rfc-v5\ntds: [{memory: 64M, conversion: kvm}]\ntimeline: [{convert: {count: 1, content: zero}}]\n", []string{"tds[0].conversion", "kvm.vm_memory_attributes=N", "gmem-inplace-rfc-v5"}},
	} {
		_, err := Parse("c.yaml", []byte(c.doc))
		var ie *InputError
		if !errors.As(err, &ie) {
			t.Errorf("%s: %v, want an InputError", c.name, err)
			continue
		}
		for _, w := range c.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%s: %q lacks %q", c.name, err, w)
			}
		}
	}
	// --kernel re-checks: a file valid under its own kernel is bad input
	// under one without content modes, naming --kernel.
	f, err := Parse("k.yaml", []byte("kernel: gmem-inplace-rfc-v5"+strings.Replace(contentTD, "%s", "zero", 1)))
	if err != nil {
		t.Fatal(err)
	}
	err = f.SetKernel("rfc-v5+gmem-inplace-v8")
	if err == nil || !strings.Contains(err.Error(), "--kernel rfc-v5+gmem-inplace-v8") || !strings.Contains(err.Error(), "convert.content") {
		t.Errorf("SetKernel: %v, want content vs --kernel", err)
	}
	if err := f.SetKernel("rfc-v5+gmem-inplace-rfc-v5"); err != nil {
		t.Errorf("SetKernel to a stacked profile with content modes: %v", err)
	}
}

// convSink counts guest_memfd's in-place conversions by name.
type convSink struct {
	mu sync.Mutex
	n  map[string]int
}

func (c *convSink) Emit(e event.Event) {
	if e.Kind == event.KindGmem && strings.HasPrefix(e.Name, "convert") {
		c.mu.Lock()
		c.n[e.Name]++
		c.mu.Unlock()
	}
}

// PRESERVE keeps the data: under gmem-inplace-rfc-v5 the measured image
// is written into the shared guest_memfd, converted to private with
// KVM_SET_MEMORY_ATTRIBUTES2_PRESERVE before KVM_TDX_FINALIZE_VM and added
// from itself (KVM_TDX_INIT_MEM_REGION without a source), and the MRTD is
// the one `tdxsim mrtd` computes for the copied image: every measured
// byte survived the conversion. Series: "[PATCH RFC v5 26/53] KVM: x86:
// Support SNP and TDX applying content modes" (the set-up flow) and
// "[PATCH RFC v5 25/53] KVM: TDX: Make source page optional for
// KVM_TDX_INIT_MEM_REGION" (20260428-gmem-inplace-conversion-v5-25-d8608ccfca22@google.com).
func TestPopulateInPlacePreserve(t *testing.T) {
	for _, kernel := range []string{"gmem-inplace-rfc-v5", "hugepage-v3+dpamt-v4+gmem-inplace-rfc-v5", "hugepage-v3+dpamt-v4"} {
		t.Run(kernel, func(t *testing.T) {
			f, err := Load("../examples/measured-image.yaml")
			if err != nil {
				t.Fatal(err)
			}
			if err := f.SetKernel(kernel); err != nil {
				t.Fatal(err)
			}
			c := &convSink{n: map[string]int{}}
			r, err := Run(f, Options{Sink: c})
			if err != nil || r.Failed() {
				t.Fatalf("%v; failed %v, expectations %+v", err, r.Checks.Failed, r.Expectations)
			}
			inPlace := kernel != "hugepage-v3+dpamt-v4"
			// Three image regions, each one piece: shared, then PRESERVE.
			if got := c.n["convert_private"]; inPlace != (got >= 3) || inPlace != (c.n["convert_shared"] >= 3) {
				t.Errorf("conversions %v: want the in-place populate flow %v", c.n, inPlace)
			}
		})
	}
}
