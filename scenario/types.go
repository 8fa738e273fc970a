// Package scenario reads scenario files (YAML) and runs them through the
// whole stack: a host with its TDX module, policies, one or more TDs with
// their memslots and measured images, a timeline of guest workloads and
// host events, and expectations checked at the end.
//
// Loading is strict: an unknown key, a wrong type, an unaligned size or an
// impossible layout is an *InputError naming the file, the line, the field
// and the rule. The JSON Schema of the format is generated from the types
// in this file (Schema), so the doc tags below are what editors show.
package scenario

// Scenario is a whole scenario file.
type Scenario struct {
	Name        string   `yaml:"name" doc:"a short name, printed at the top of the report"`
	Description string   `yaml:"description" doc:"what the scenario shows, for people"`
	Kernel      string   `yaml:"kernel,omitempty" doc:"kernel profile the run stands for (tdxsim kernels): it sets the policies' defaults; explicit policies override, within what the tree has (default hugepage-v3+dpamt-v4; --kernel overrides)"`
	Seed        *uint64  `yaml:"seed" doc:"deterministic-scheduler and workload seed (default 1; --seed overrides)"`
	Host        Host     `yaml:"host" doc:"the machine"`
	Policies    Policies `yaml:"policies" doc:"design alternatives argued on the kernel lists (docs/policies.md); the defaults are the kernel profile's (kernel:)"`
	TDs         []TD     `yaml:"tds" doc:"the TDs, built (KVM_TDX_INIT_VM, INIT_MEM_REGION, FINALIZE) before the timeline starts" required:"true"`
	Timeline    []Step   `yaml:"timeline" doc:"guest workloads and host events, in order; TDs not torn down are torn down at the end"`
	Expect      Expect   `yaml:"expect" doc:"what must hold at the end (exit 1 otherwise)"`
	Inject      Inject   `yaml:"inject" doc:"fault injection: a faulty TDX module, a host short of memory (--inject sets it too)"`
	Schedule    Schedule `yaml:"schedule" doc:"how the deterministic scheduler picks threads (default: uniformly at random, seeded by seed)"`
}

// Inject is fault injection: SEAMCALLs that return TDX_OPERAND_BUSY or
// fail, and host allocations that fail. KVM's answer to each is part of
// the model: retry, KVM_BUG_ON (the VM dies, its pages are kept from
// reuse), or -ENOMEM to the faulting path. Decisions depend only on the
// seed and the call counts, so a run with injection replays exactly.
type Inject struct {
	Busy       float64        `yaml:"busy" doc:"probability that a SEAMCALL returns TDX_OPERAND_BUSY instead of running, where a contender can hold a lock it needs (docs/faults.md) (0 to 1)"`
	BusyLeaves []string       `yaml:"busy_leaves" doc:"leaves busy applies to, e.g. TDH.MEM.PAGE.AUG (default: every leaf)"`
	Fail       []LeafFailure  `yaml:"fail" doc:"SEAMCALLs that fail outright (a TDX module bug)"`
	AllocFail  []AllocFailure `yaml:"alloc_fail" doc:"host allocations that fail (ENOMEM)"`
}

// LeafFailure makes one SEAMCALL leaf fail.
type LeafFailure struct {
	Leaf   string `yaml:"leaf" doc:"SEAMCALL leaf name, e.g. TDH.MEM.PAGE.REMOVE" required:"true"`
	Nth    uint64 `yaml:"nth" doc:"which call of the leaf fails, counting from 1 over the run" required:"true"`
	Every  uint64 `yaml:"every" doc:"and every this many calls after it (default 0: only the nth)"`
	Status string `yaml:"status" doc:"the status it returns, by name or number (default TDX_OPERAND_INVALID)"`
}

// AllocFailure makes one host allocation fail.
type AllocFailure struct {
	Source string `yaml:"source" doc:"the cache or pool: kvm.mmu_shadow_page_cache, kvm.mmu_external_spt_cache, tdx.dpamt, buddy, ... (default: any)"`
	Nth    uint64 `yaml:"nth" doc:"which allocation from it fails, counting from 1" required:"true"`
}

// Host is the machine the TDs run on.
type Host struct {
	Memory   Size `yaml:"memory" doc:"host memory (default 64G); hugetlb pools for the TDs' guest_memfds are reserved from it"`
	Packages int  `yaml:"packages" doc:"CPU packages: TDH.MNG.KEY.CONFIG and TDH.PHYMEM.CACHE.WB run once per package (default 2)" min:"1" max:"64"`
	TDX      TDX  `yaml:"tdx" doc:"TDX module options"`
	// MaxPFN is max_pfn << PAGE_SHIFT: where the highest RAM page ends.
	// Dynamic PAMT v6 sizes its refcount array by it ("[PATCH v6 04/11]
	// x86/virt/tdx: Allocate ref counts for Dynamic PAMT memory").
	MaxPFN Size `yaml:"max_pfn,omitempty" doc:"physical address where the highest RAM page ends (max_pfn << 12), at least host.memory, at most 0x10000000000000 (2^52, the architectural maximum); default host.memory (RAM contiguous from 0). Dynamic PAMT v6 allocates one 4-byte refcount per 2M from 0 to here (memory.pamt_refcount_bytes) and is off above 256T (x86_phys_bits > 48)"`
}

// TDX holds the TDX module's options.
type TDX struct {
	MaxLevel string `yaml:"max_level" doc:"largest TDH.MEM.PAGE.AUG the module accepts: 2M, or 1G (default: 1G when policies.hugepages is 1G, else 2M)" enum:"2M,1G"`
	// EnhancedDemote is TDX_FEATURES0 ENHANCED_DEMOTE_INTERRUPTIBILITY
	// (bit 51, TDX_1.5.28 and later); off, the huge-page v3 series keeps
	// private mappings at 4K ("[PATCH v3 24/24] KVM: TDX: Turn on PG_LEVEL_2M").
	EnhancedDemote *bool             `yaml:"enhanced_demote_interruptibility" doc:"the module reports TDX_FEATURES0 ENHANCED_DEMOTE_INTERRUPTIBILITY (bit 51, module 1.5.28 or later; default true). false: an older module whose TDH.MEM.PAGE.DEMOTE can return TDX_INTERRUPTED_RESTARTABLE, so KVM maps private memory at 4K only"`
	Costs          map[string]uint64 `yaml:"costs" doc:"SEAMCALL/TDCALL latency overrides in ns, by leaf name (TDH.MEM.PAGE.AUG) or leaf/level (TDG.MEM.PAGE.ACCEPT/2M); see tdxsim run --costs for the defaults and their sources"`
}

// Policies are docs/policies.md's design alternatives.
type Policies struct {
	HugePages            string `yaml:"hugepages" doc:"largest private mapping: off (4K), 2M (upstream), or 1G" enum:"off,2M,1G"`
	DynamicPAMT          *bool  `yaml:"dynamic_pamt" doc:"Dynamic PAMT (default true)"`
	MaxOrderFrom         string `yaml:"max_order_from" doc:"where the max mapping order comes from: gmem (kvm_gmem_mapping_order, upstream) or folio (the rejected design)" enum:"gmem,folio"`
	SplitOrder           string `yaml:"split_order" doc:"on conversion, split the S-EPT before the folio (sept_first, upstream) or the folio first (folio_first, rejected)" enum:"sept_first,folio_first"`
	ZapPrivateOnNotifier bool   `yaml:"zap_private_on_notifier" doc:"zap private mappings on MMU-notifier and memory-type events (the rejected design: accepted memory is lost)"`
	PinPrivatePages      bool   `yaml:"pin_private_pages" doc:"TDX takes a reference on every private page it maps, dropped on REMOVE (the v6.16 design: in-place conversion then waits on it forever)"`
	Populate             string `yaml:"populate" doc:"TD build path: map_private_pfn (kvm_gmem_populate then kvm_tdp_mmu_map_private_pfn, upstream since 6.19; decoupled is an accepted old spelling) or gmem_populate (a synthesized fault under kvm_gmem_populate: lock recursion on the invalidate lock)" enum:"map_private_pfn,gmem_populate"`
	ExternalSPTCache     string `yaml:"external_spt_cache" doc:"who supplies S-EPT pages: kvm (mmu_external_spt_cache, upstream) or tdx_prealloc (the NAK'd mix: TDX prealloc pages freed by KVM, split cache not charged)" enum:"kvm,tdx_prealloc"`
	AcceptLevel          string `yaml:"accept_level" doc:"what an EPT violation carrying the guest's ACCEPT level does: guest_inhibit (the huge-page series since RFC v2: split and set a one-way lpage_info inhibit under write mmu_lock, only when the lock-free test finds it unset), guest_inhibit_always_lock (the same without the lock-free test: write mmu_lock on every such fault) or violation_request_level (RFC v1: a per-vCPU request level for private_max_mapping_level, no inhibit, no write lock)" enum:"guest_inhibit,guest_inhibit_always_lock,violation_request_level"`
	Teardown             string `yaml:"teardown" doc:"how a TD's private memory is torn down: per_page (the HKID stays assigned until the VM is destroyed, every private leaf is BLOCKed, TRACKed and REMOVEd; every release) or terminate_vm (the VMM calls KVM_TDX_TERMINATE_VM first: the HKID is released and each leaf is reclaimed with TDH.PHYMEM.PAGE.RECLAIM; posted and applied to kvm-x86 in 2025, in no release)" enum:"per_page,terminate_vm"`
}

// TD is one trust domain.
type TD struct {
	Name              string        `yaml:"name" doc:"name used by timeline steps (default td0, td1, ...)"`
	Memory            Size          `yaml:"memory" doc:"guest memory, a multiple of 2M; one memslot at GPA 0 unless memslots are given (then their total)"`
	VCPUs             int           `yaml:"vcpus" doc:"vCPUs (default 1); guest workloads are spread over them and run concurrently" min:"1" max:"256"`
	Memslots          []Memslot     `yaml:"memslots" doc:"memslot layout, all backed by one guest_memfd in order"`
	Conversion        string        `yaml:"conversion" doc:"kvm: attributes in KVM, the VMM punches on private-to-shared (upstream); in_place: guest_memfd converts in place" enum:"kvm,in_place"`
	KeepSharedBacking bool          `yaml:"keep_shared_backing" doc:"the VMM does not punch the guest_memfd when memory goes shared"`
	GmemOffset        Size          `yaml:"gmem_offset" doc:"guest_memfd offset of the first memslot (page aligned)"`
	Image             []ImageRegion `yaml:"image" doc:"initial image regions, added with KVM_TDX_INIT_MEM_REGION in order"`
	Firmware          string        `yaml:"firmware" doc:"TDVF firmware image (OVMF with TDX metadata, e.g. /usr/share/ovmf/OVMF.fd), relative to the scenario file: the TD is built as QEMU builds it (memory laid out as q35 does, the image's flash below 4 GiB, its sections added with KVM_TDX_INIT_MEM_REGION, the TD_HOB written); not with image or memslots"`
}

// Memslot is one memslot.
type Memslot struct {
	GPA  Size `yaml:"gpa" doc:"first guest physical address (2M aligned)"`
	Size Size `yaml:"size" doc:"size (a non-zero multiple of 2M)" required:"true"`
}

// ImageRegion is part of the TD's initial image.
type ImageRegion struct {
	GPA     Size   `yaml:"gpa" doc:"where it goes (4K aligned, inside a memslot)" required:"true"`
	Size    Size   `yaml:"size" doc:"bytes (rounded up to 4K); with file, at most the file's size is used"`
	File    string `yaml:"file" doc:"file with the content, relative to the scenario file"`
	Fill    *int   `yaml:"fill" doc:"fill byte when there is no file (default: a fixed pattern)" min:"0" max:"255"`
	Measure bool   `yaml:"measure" doc:"extend MRTD with the content (KVM_TDX_MEASURE_MEMORY_REGION)"`
}

// Expect is what must hold at the end.
type Expect struct {
	MRTD      map[string]string `yaml:"mrtd" doc:"expected MRTD (96 hex digits) by TD name"`
	Seamcalls map[string]Bound  `yaml:"seamcalls" doc:"bounds on SEAMCALL counts by leaf name, or total"`
	Error     string            `yaml:"error" doc:"the run must stop with an error: an errno name or text it contains"`
}

// Bound is an inclusive range; either end may be left out.
type Bound struct {
	Min *uint64 `yaml:"min" doc:"at least"`
	Max *uint64 `yaml:"max" doc:"at most"`
}
