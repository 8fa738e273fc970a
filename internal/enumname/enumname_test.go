package enumname

import "testing"

type level uint8

func TestTable(t *testing.T) {
	tab := New[level]("hugepages", "HugePages", "2M", "off", "1G")
	for i, name := range []string{"2M", "off", "1G"} {
		if got := tab.String(level(i)); got != name {
			t.Errorf("String(%d) = %q, want %q", i, got, name)
		}
		if v, err := tab.Parse(name); err != nil || v != level(i) {
			t.Errorf("Parse(%q) = %d, %v", name, v, err)
		}
	}
	if got := tab.String(7); got != "HugePages(7)" {
		t.Errorf("String(7) = %q", got)
	}
	_, err := tab.Parse("4K")
	if want := `hugepages "4K": must be 2M, off or 1G`; err == nil || err.Error() != want {
		t.Errorf("Parse(4K) = %v, want %s", err, want)
	}
	if _, err := New[level]("k", "K", "only").Parse("x"); err == nil || err.Error() != `k "x": must be only` {
		t.Errorf("one name: %v", err)
	}
}
