package gmem

import (
	"errors"
	"testing"

	"pgregory.net/rapid"

	"github.com/tdxsim/tdxsim/addr"
	"github.com/tdxsim/tdxsim/errno"
	"github.com/tdxsim/tdxsim/hostmem"
	"github.com/tdxsim/tdxsim/sched"
)

// soloOwner is a VM with no memslots: enough for guest_memfd on its own.
type soloOwner struct {
	acct  hostmem.Account
	slots *sched.Mutex
	puts  int
}

func (o *soloOwner) Account() hostmem.Account                  { return o.acct }
func (o *soloOwner) SlotsLock() *sched.Mutex                   { return o.slots }
func (o *soloOwner) InvalidateBegin(*sched.Thread, []Range)    {}
func (o *soloOwner) Zap(*sched.Thread, []Range)                {}
func (o *soloOwner) SplitPrivate(*sched.Thread, []Range) error { return nil }
func (o *soloOwner) InvalidateEnd(*sched.Thread)               {}
func (o *soloOwner) RangeIsPrivate(start, end addr.GFN) bool   { return true }
func (o *soloOwner) PutRef(*sched.Thread)                      { o.puts++ }

// TestFileMatchesReference drives a shared guest_memfd with random
// fallocate, punch hole, mmap stores and loads, and compares it after each
// step with a plain per-page reference: which pages exist, what a load
// reads, and what the VM's account holds. At the end the file is closed
// and must leave nothing behind.
func TestFileMatchesReference(t *testing.T) {
	rapid.Check(t, func(rt *rapid.T) {
		const pages = 64
		mem, err := hostmem.New(hostmem.Config{Bytes: 1 << 30}, nil)
		if err != nil {
			rt.Fatal(err)
		}
		acct, _ := mem.NewAccount("vm")
		o := &soloOwner{acct: acct, slots: sched.NewMutex("kvm.slots_lock")}
		nops := rapid.IntRange(1, 60).Draw(rt, "ops")
		type op struct {
			kind       int
			start, end uint64
			val        byte
		}
		ops := make([]op, nops)
		for i := range ops {
			s := rapid.Uint64Range(0, pages+4).Draw(rt, "start")
			ops[i] = op{rapid.IntRange(0, 3).Draw(rt, "kind"), s, s + rapid.Uint64Range(0, 8).Draw(rt, "len"), byte(rapid.IntRange(1, 255).Draw(rt, "val"))}
		}
		var failure string
		s := sched.New(sched.Deterministic, 1, nil)
		s.Go("t", func(th *sched.Thread) {
			f, err := Create(th, mem, o, Config{SupportedFlags: FlagMMAP | FlagInitShared}, CreateArgs{Size: pages * PageSize, Flags: FlagMMAP | FlagInitShared}, nil)
			if err != nil {
				failure = err.Error()
				return
			}
			m, _ := f.Mmap(th, 0, (pages+8)*PageSize, ProtRead|ProtWrite, true)
			var present [pages]bool
			var content [pages]byte
			for i, x := range ops {
				off, length := int64(x.start*PageSize), int64((x.end-x.start)*PageSize)
				switch x.kind {
				case 0: // allocate
					err := f.Fallocate(th, FallocKeepSize, off, length)
					wantOK := length > 0 && x.end <= pages
					if (err == nil) != wantOK {
						failure = "allocate: " + errno.Of(err).String()
						return
					}
					if wantOK {
						for p := x.start; p < x.end; p++ {
							present[p] = true
						}
					}
				case 1: // punch
					err := f.Fallocate(th, FallocPunchHole|FallocKeepSize, off, length)
					if (err == nil) != (length > 0) {
						failure = "punch: " + errno.Of(err).String()
						return
					}
					for p := x.start; p < min(x.end, pages); p++ {
						present[p], content[p] = false, 0
					}
				case 2: // store through the mapping
					err := m.Store(th, x.start*PageSize+7, x.val)
					if x.start < pages {
						if err != nil {
							failure = "store: " + err.Error()
							return
						}
						present[x.start], content[x.start] = true, x.val
					} else if !errors.Is(err, ErrSIGBUS) {
						failure = "store past EOF did not SIGBUS"
						return
					}
				case 3: // load
					v, err := m.Load(th, x.start*PageSize+7)
					if x.start < pages {
						if err != nil || v != content[x.start] {
							failure = "load mismatch"
							return
						}
						present[x.start] = true
					} else if !errors.Is(err, ErrSIGBUS) {
						failure = "load past EOF did not SIGBUS"
						return
					}
				}
				n := uint64(0)
				for p := range present {
					if present[p] != f.Page(uint64(p)).Present {
						failure = "presence differs"
						return
					}
					if present[p] {
						n++
					}
				}
				if f.Pages() != n || mem.Usage(acct).Charged != n {
					failure = "page count differs"
					return
				}
				_ = i
			}
			m.Munmap(th)
			f.Close(th)
			if u := mem.Usage(acct); u.Charged+u.Uncharged != 0 || o.puts != 1 || mem.Violations() != 0 {
				failure = "close left pages, VM references or violations behind"
			}
		})
		if err := s.Run(); err != nil {
			rt.Fatal(err)
		}
		if failure != "" {
			rt.Fatal(failure)
		}
	})
}
