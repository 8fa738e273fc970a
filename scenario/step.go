package scenario

import (
	"reflect"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/tdxsim/tdxsim/internal/yamlin"
	"github.com/tdxsim/tdxsim/sched"
)

// Step is one timeline entry: exactly one operation, plus an optional
// expected error. In YAML it is a mapping with one key naming the
// operation's kind (boot, touch, ...) and optionally expect_error.
type Step struct {
	Op          Op     `yaml:"-"`
	ExpectError string `yaml:"expect_error" doc:"the step must fail with this error: an errno name (EINVAL) or text the error contains"`
	// kinds is how many different kind keys the YAML mapping had (a
	// step with two is refused by validation, after decoding both).
	kinds int
}

// Op is one kind of timeline step. Each kind is its own type in its own
// file (op_boot.go, ...) and one line of opKinds; a kind on one TD
// embeds TDRef or Workload (ontd.go), which bring TDName, GuestWorkload
// and a Smaller that halves nothing.
type Op interface {
	// Kind is the step's YAML key: boot, touch, ...
	Kind() string
	// TDName is the TD the step names ("" for idle, parallel groups,
	// and steps on the only TD that leave it out).
	TDName() string
	// GuestWorkload reports whether the step runs on its TD's vCPUs: a
	// vCPU runs one such step at a time.
	GuestWorkload() bool
	// Smaller halves the step's count or size for the shrinker; false
	// when it has none to halve.
	Smaller() bool
	// check applies the step's defaults and checks its rules against the
	// state the steps before it leave; at is the step's field path, td
	// the index of the TD it acts on (-1 but for a kind embedding TDRef
	// or Workload: the timeline check resolves that kind's TD first).
	check(c *timelineCheck, at string, td int, inParallel bool) error
	// run runs the step on the VMM thread t (idx seeds its randomness).
	run(rn *runner, t *sched.Thread, idx int) error
}

// opKind is one entry of the step registry.
type opKind struct {
	name string
	doc  string
	new  func() Op
	// body is the type whose schema describes the step's value.
	body reflect.Type
}

// opKinds are the step kinds, in the order errors and the format list
// them. Adding a kind is a new op_*.go file and one line here.
var opKinds = []opKind{
	{"boot", "the guest boots: accepts memory eagerly, or lazily on first touch", func() Op { return new(Boot) }, reflect.TypeFor[Boot]()},
	{"touch", "the guest reads and writes pages (lazily accepting them)", func() Op { return new(Touch) }, reflect.TypeFor[Touch]()},
	{"convert", "the guest converts ranges to shared with MapGPA (and back)", func() Op { return new(Convert) }, reflect.TypeFor[Convert]()},
	{"accept", "the guest accepts a GPA range explicitly, at 4K or 2M, on vCPU 0 or on all (as EDK2 does before the kernel)", func() Op { return new(Accept) }, reflect.TypeFor[Accept]()},
	{"bounce", "one vCPU converts a small buffer to shared and back, again and again (a firmware DMA bounce buffer)", func() Op { return new(Bounce) }, reflect.TypeFor[Bounce]()},
	{"balloon", "the guest gives memory back: converts it to shared, the VMM discards it", func() Op { return new(Balloon) }, reflect.TypeFor[Balloon]()},
	{"hostile", "a hostile guest: every vCPU at once issues ACCEPT and MapGPA with any operands and touches memory", func() Op { return new(Hostile) }, reflect.TypeFor[Hostile]()},
	{"idle", "the vCPUs halt for a while (modeled time only)", func() Op { return new(Idle) }, reflect.TypeFor[Idle]()},
	{"punch_hole", "the VMM punches a hole in the guest_memfd (private pages are removed)", func() Op { return new(PunchHole) }, reflect.TypeFor[HostRange]()},
	{"memslot_delete", "the VMM deletes a memslot (its private pages are removed)", func() Op { return new(MemslotDelete) }, reflect.TypeFor[MemslotDelete]()},
	{"memory_type_change", "a memory-type change zaps the range (kvm_zap_gfn_range)", func() Op { return new(MemoryTypeChange) }, reflect.TypeFor[HostRange]()},
	{"mmu_notifier", "an MMU-notifier invalidation of the VMM's mapping of the range", func() Op { return new(MMUNotifier) }, reflect.TypeFor[HostRange]()},
	{"memory_failure", "a hardware memory error on the page at gpa", func() Op { return new(MemoryFailure) }, reflect.TypeFor[MemoryFailure]()},
	{"teardown", "the VMM closes the guest_memfd and the VM", func() Op { return new(Teardown) }, reflect.TypeFor[TDRef]()},
	{"parallel", "steps run concurrently (on their own threads); the timeline waits for all", func() Op { return new(Parallel) }, reflect.TypeFor[[]Step]()},
}

// stepKinds are the yaml names of the step kinds, in registry order.
var stepKinds = func() []string {
	var out []string
	for _, k := range opKinds {
		out = append(out, k.name)
	}
	return out
}()

func opKindByName(name string) (opKind, bool) {
	for _, k := range opKinds {
		if k.name == name {
			return k, true
		}
	}
	return opKind{}, false
}

// stepKeyList is the sorted list of a step's keys, for errors.
func stepKeyList() string { return keyList(reflect.TypeFor[Step](), stepKinds...) }

// found is how many kinds the step has (one, once validated).
func (s *Step) found() int {
	if s.kinds == 0 && s.Op != nil {
		return 1 // built in Go, not decoded
	}
	return s.kinds
}

// Kind is the step's kind ("" without an operation).
func (s *Step) Kind() string {
	if s.Op == nil {
		return ""
	}
	return s.Op.Kind()
}

// TDName returns the TD the step names (see Op.TDName).
func (s *Step) TDName() string {
	if s.Op == nil {
		return ""
	}
	return s.Op.TDName()
}

// GuestWorkload reports whether the step runs on its TD's vCPUs (boot,
// touch, convert, balloon, hostile).
func (s *Step) GuestWorkload() bool { return s.Op != nil && s.Op.GuestWorkload() }

// Members returns a parallel group's steps (nil for any other step).
func (s *Step) Members() []Step {
	if p, ok := s.Op.(*Parallel); ok {
		return *p
	}
	return nil
}

// decodeStep decodes a timeline step: the kind key through the registry,
// its value into the kind's type.
func (d *decoder) decodeStep(n *yaml.Node, s *Step, path string) error {
	if n.Kind != yaml.MappingNode {
		return d.fail(n, path, "want a mapping of %s, got a %s", stepKeyList(), yamlin.KindName(n.Kind))
	}
	seen := map[string]bool{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, val := n.Content[i], n.Content[i+1]
		sub := join(path, k.Value)
		if k.Value == "expect_error" {
			if err := d.decode(val, reflect.ValueOf(&s.ExpectError).Elem(), sub); err != nil {
				return err
			}
			continue
		}
		kind, ok := opKindByName(k.Value)
		if !ok {
			return d.fail(k, sub, "unknown key; known keys here: %s", stepKeyList())
		}
		for val.Kind == yaml.AliasNode {
			val = val.Alias
		}
		if val.Kind == yaml.ScalarNode && val.Tag == "!!null" {
			d.lines[sub] = val.Line // `boot:` with no value: as if left out
			continue
		}
		op := s.Op
		if op == nil || op.Kind() != kind.name {
			op = kind.new()
		}
		if err := d.decode(val, reflect.ValueOf(op).Elem(), sub); err != nil {
			return err
		}
		if !seen[kind.name] {
			seen[kind.name] = true
			s.kinds++
		}
		s.Op = op
	}
	return nil
}

// encodeStep writes a step as its kind's key and value, then expect_error.
func encodeStep(s *Step) (*yaml.Node, error) {
	m := &yaml.Node{Kind: yaml.MappingNode}
	key := func(k string) *yaml.Node { return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: k} }
	if s.Op != nil {
		v := reflect.ValueOf(s.Op)
		if v.Kind() == reflect.Pointer && v.Elem().Kind() == reflect.Slice {
			v = v.Elem() // a parallel group is its list
		}
		c, err := encodeNode(v)
		if err != nil {
			return nil, err
		}
		if c != nil {
			m.Content = append(m.Content, key(s.Op.Kind()), c)
		}
	}
	if s.ExpectError != "" {
		m.Content = append(m.Content, key("expect_error"), &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: s.ExpectError})
	}
	if len(m.Content) == 0 {
		return nil, nil
	}
	return m, nil
}

// stepSchema is the schema of a step: one property per registered kind.
func (g *schemaGen) stepSchema() map[string]any {
	props := map[string]any{}
	for _, k := range opKinds {
		p := g.schemaOf(k.body)
		p["description"] = k.doc
		props[k.name] = p
	}
	f, _ := reflect.TypeFor[Step]().FieldByName("ExpectError")
	p := g.schemaOf(f.Type)
	p["description"] = f.Tag.Get("doc")
	props["expect_error"] = p
	return map[string]any{"type": "object", "properties": props, "additionalProperties": false}
}

// MaxSteps caps a timeline's steps, each parallel branch counted: a
// scenario is tens of steps, and each step is a run's worth of work, so
// a timeline of more (written out, or grown through YAML aliases) is
// refused in one line before any runs.
const MaxSteps = 10000

// step checks one step: exactly one kind, then the kind's rules.
func (c *timelineCheck) step(s *Step, at string, inParallel bool) error {
	if c.steps++; c.steps > MaxSteps {
		return c.f.bad(at, "the timeline has more than %d steps (parallel branches counted); split the scenario", MaxSteps)
	}
	if n := s.found(); n != 1 {
		return c.f.bad(at, "a step has exactly one of %s (found %d)", strings.Join(stepKinds, ", "), n)
	}
	at += "." + s.Op.Kind()
	td := -1
	if _, ok := s.Op.(onTD); ok {
		var err error
		if td, err = c.resolve(s.Op.TDName(), at); err != nil {
			return err
		}
	}
	return s.Op.check(c, at, td, inParallel)
}

// step runs one timeline step on the VMM thread t.
func (rn *runner) step(t *sched.Thread, st *Step, idx int) error { return st.Op.run(rn, t, idx) }
