package scenario

import (
	"bytes"
	_ "embed"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"reflect"
	"sort"
	"strconv"
	"strings"

	"github.com/tdxsim/tdxsim/report"

	"go.yaml.in/yaml/v3"

	"github.com/tdxsim/tdxsim/internal/yamlin"
)

// InputError is bad input: it names the file, the line, the field (a path
// such as tds[0].memslots[1].size) and the rule broken.
type InputError = yamlin.InputError

// File is a loaded, validated scenario.
type File struct {
	Scenario
	Path  string
	dir   string
	lines map[string]int // field path -> line, for validation errors
	// images holds each TD's image regions' bytes, read at load time.
	images [][][]byte
	// firmware holds each TD's TDVF image, read at load time (nil for a
	// TD without one).
	firmware []*tdFirmware
	// rawPolicies are the policies as the file wrote them, before the
	// kernel profile's and the model's defaults; flagPolicies the
	// --policy overrides in order; kernelFlag says --kernel chose Kernel.
	rawPolicies  Policies
	flagPolicies [][2]string
	kernelFlag   bool
}

// MaxFileBytes caps a scenario file's size: a scenario is a few KiB of
// YAML; anything near this cap is not one.
const MaxFileBytes = 4 << 20

// maxNodes caps the YAML nodes one scenario decodes, counting each alias
// as often as it is used, so a "billion laughs" document of nested
// aliases is refused instead of expanded.
const maxNodes = 1 << 20

// Load reads and validates a scenario file.
func Load(path string) (*File, error) { return yamlin.Load(path, MaxFileBytes, Parse) }

// Parse decodes and validates scenario text; path names it in errors and
// anchors relative image files.
func Parse(path string, data []byte) (*File, error) {
	f := &File{Path: path, dir: filepath.Dir(path), lines: map[string]int{}}
	var root yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&root); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, &InputError{File: path, Rule: "empty scenario: want at least a `tds:` list"}
		}
		return nil, yamlin.Error(path, "YAML syntax: ", err)
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); err == nil {
		return nil, &InputError{File: path, Line: extra.Line, Rule: "more than one YAML document: a scenario is one document"}
	}
	d := decoder{file: path, lines: f.lines}
	if err := d.decode(&root, reflect.ValueOf(&f.Scenario).Elem(), ""); err != nil {
		return nil, err
	}
	f.rawPolicies = f.Scenario.Policies
	if err := f.validate(); err != nil {
		return nil, err
	}
	return f, nil
}

// decoder decodes a YAML node tree into the scenario types strictly:
// every key must be a field, every value the field's type. yaml.v3 does
// the parsing and the scalar conversions; this walk adds field paths and
// lines to every error and records where each field was written.
type decoder struct {
	file  string
	lines map[string]int
	nodes int // nodes decoded so far, aliases counted at each use
}

// dupKey refuses a mapping that names a key twice (yaml.v3 would keep the
// last silently): it returns the error for the second occurrence.
func (d *decoder) dupKey(n *yaml.Node, path string) error {
	seen := make(map[string]int, len(n.Content)/2)
	for i := 0; i+1 < len(n.Content); i += 2 {
		k := n.Content[i]
		if first, ok := seen[k.Value]; ok {
			return d.fail(k, join(path, k.Value), "duplicate key (first at line %d): a key may appear once in a mapping", first)
		}
		seen[k.Value] = k.Line
	}
	return nil
}

var stepType = reflect.TypeFor[Step]()

var unmarshalerType = reflect.TypeOf((*yaml.Unmarshaler)(nil)).Elem()

func (d *decoder) fail(n *yaml.Node, field, format string, args ...any) error {
	return &InputError{File: d.file, Line: n.Line, Field: field, Rule: fmt.Sprintf(format, args...)}
}

func (d *decoder) decode(n *yaml.Node, v reflect.Value, path string) error {
	if d.nodes++; d.nodes > maxNodes {
		return d.fail(n, path, "the document expands to more than %d YAML nodes (aliases counted at each use)", maxNodes)
	}
	if n.Kind == yaml.MappingNode {
		if err := d.dupKey(n, path); err != nil {
			return err
		}
	}
	switch n.Kind {
	case yaml.DocumentNode:
		if len(n.Content) == 0 {
			return nil
		}
		return d.decode(n.Content[0], v, path)
	case yaml.AliasNode:
		return d.decode(n.Alias, v, path)
	}
	if path != "" {
		d.lines[path] = n.Line
	}
	if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
		return nil // `key:` with no value: the zero value, as if left out
	}
	if v.Kind() == reflect.Pointer {
		if v.IsNil() {
			v.Set(reflect.New(v.Type().Elem()))
		}
		return d.decode(n, v.Elem(), path)
	}
	if v.Type() == stepType {
		return d.decodeStep(n, v.Addr().Interface().(*Step), path)
	}
	if reflect.PointerTo(v.Type()).Implements(unmarshalerType) {
		if err := n.Decode(v.Addr().Interface()); err != nil {
			return d.fail(n, path, "%s", strings.TrimPrefix(err.Error(), "yaml: "))
		}
		return nil
	}
	switch v.Kind() {
	case reflect.Struct:
		if n.Kind != yaml.MappingNode {
			return d.fail(n, path, "want a mapping of %s, got a %s", keyList(v.Type()), yamlin.KindName(n.Kind))
		}
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, val := n.Content[i], n.Content[i+1]
			fi, ok := fieldByKey(v.Type(), k.Value)
			sub := join(path, k.Value)
			if !ok {
				return d.fail(k, sub, "unknown key; known keys here: %s", keyList(v.Type()))
			}
			if err := d.decode(val, v.FieldByIndex(fi), sub); err != nil {
				return err
			}
		}
		return nil
	case reflect.Slice:
		if n.Kind != yaml.SequenceNode {
			return d.fail(n, path, "want a list, got a %s", yamlin.KindName(n.Kind))
		}
		s := reflect.MakeSlice(v.Type(), len(n.Content), len(n.Content))
		for i, c := range n.Content {
			if err := d.decode(c, s.Index(i), fmt.Sprintf("%s[%d]", path, i)); err != nil {
				return err
			}
		}
		v.Set(s)
		return nil
	case reflect.Map:
		if n.Kind != yaml.MappingNode {
			return d.fail(n, path, "want a mapping, got a %s", yamlin.KindName(n.Kind))
		}
		m := reflect.MakeMap(v.Type())
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, val := n.Content[i], n.Content[i+1]
			e := reflect.New(v.Type().Elem()).Elem()
			if err := d.decode(val, e, join(path, k.Value)); err != nil {
				return err
			}
			m.SetMapIndex(reflect.ValueOf(k.Value), e)
		}
		v.Set(m)
		return nil
	}
	if n.Kind != yaml.ScalarNode {
		return d.fail(n, path, "want %s, got a %s", typeWord(v.Type()), yamlin.KindName(n.Kind))
	}
	if v.Kind() == reflect.String {
		v.SetString(n.Value) // any scalar reads as its text (an all-digit MRTD is a string)
		return nil
	}
	if err := n.Decode(v.Addr().Interface()); err != nil {
		return d.fail(n, path, "want %s, got %q", typeWord(v.Type()), n.Value)
	}
	return nil
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

// fieldByKey finds the struct field whose yaml tag is key: its index
// path, through an embedded struct (TDRef) for a key it brings.
func fieldByKey(t reflect.Type, key string) ([]int, bool) {
	for _, f := range yamlFields(t) {
		if yamlName(f) == key {
			return f.Index, true
		}
	}
	return nil, false
}

// yamlFields are the fields of struct type t that YAML keys name, in
// order: t's own, and in an embedded struct's place (a step kind's TDRef,
// HostRange) the fields it brings, as if written out in t. Each field's
// Index is its path from t (reflect.Value.FieldByIndex).
func yamlFields(t reflect.Type) []reflect.StructField {
	var out []reflect.StructField
	for _, f := range reflect.VisibleFields(t) {
		if !f.Anonymous {
			out = append(out, f)
		}
	}
	return out
}

func yamlName(f reflect.StructField) string {
	name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
	return name
}

// keyList is t's yaml keys and extra, sorted, for errors.
func keyList(t reflect.Type, extra ...string) string {
	keys := append([]string(nil), extra...)
	for _, f := range yamlFields(t) {
		if n := yamlName(f); n != "" && n != "-" {
			keys = append(keys, n)
		}
	}
	sort.Strings(keys)
	return strings.Join(keys, ", ")
}

func typeWord(t reflect.Type) string {
	switch t.Kind() {
	case reflect.Bool:
		return "true or false"
	case reflect.Int, reflect.Int64, reflect.Int32:
		return "an integer"
	case reflect.Uint, reflect.Uint64, reflect.Uint32:
		return "a non-negative integer"
	case reflect.Float64:
		return "a number"
	case reflect.String:
		return "a string"
	}
	return t.String()
}

//go:embed default.yaml
var defaultYAML []byte

// DefaultName is how the embedded default names itself in errors.
const DefaultName = "(embedded default)"

// Costs is the SEAMCALL cost table the run uses: the defaults with the
// file's host.tdx.costs overrides.
func (f *File) Costs() report.CostTable { return report.DefaultCosts().With(f.Host.TDX.Costs) }

// Default returns the embedded default scenario of `tdxsim run`.
func Default() (*File, error) { return Parse(DefaultName, defaultYAML) }

// DefaultYAML returns the embedded default scenario's text.
func DefaultYAML() []byte { return append([]byte(nil), defaultYAML...) }

// SetPolicy overrides one policy (--policy k=v) after loading, with the
// same rules as the file's policies section.
func (f *File) SetPolicy(key, value string) error {
	if err := setPolicy(&f.Scenario.Policies, key, value); err != nil {
		return err
	}
	f.flagPolicies = append(f.flagPolicies, [2]string{key, value})
	return f.resolveFlag()
}

// setPolicy sets one policy in p from its key=value text.
func setPolicy(p *Policies, key, value string) error {
	acc, ok := policyAccessors[key]
	if !ok {
		return &InputError{File: "--policy", Field: key, Rule: "unknown policy; known: " + keyList(reflect.TypeOf(Policies{}))}
	}
	if acc.str != nil {
		*acc.str(p) = value
		return nil
	}
	b, err := strconv.ParseBool(value)
	if err != nil {
		return &InputError{File: "--policy", Field: "policies." + key, Rule: fmt.Sprintf("%q: want true or false", value)}
	}
	acc.setFlag(p, b)
	return nil
}

// policyValue is key's value in p as setPolicy text ("" for an unknown
// key; an unset dynamic_pamt reads false).
func policyValue(p *Policies, key string) string {
	acc, ok := policyAccessors[key]
	switch {
	case !ok:
		return ""
	case acc.str != nil:
		return *acc.str(p)
	}
	return strconv.FormatBool(acc.flag(p))
}

// policyAccessor reads and writes one policy by its key: a string
// policy through str, a boolean one through flag and setFlag.
type policyAccessor struct {
	str     func(*Policies) *string
	flag    func(*Policies) bool
	setFlag func(*Policies, bool)
}

// policyAccessors are the policies by key, the one table setPolicy and
// policyValue share.
var policyAccessors = map[string]policyAccessor{
	"hugepages":          {str: func(p *Policies) *string { return &p.HugePages }},
	"max_order_from":     {str: func(p *Policies) *string { return &p.MaxOrderFrom }},
	"split_order":        {str: func(p *Policies) *string { return &p.SplitOrder }},
	"populate":           {str: func(p *Policies) *string { return &p.Populate }},
	"external_spt_cache": {str: func(p *Policies) *string { return &p.ExternalSPTCache }},
	"teardown":           {str: func(p *Policies) *string { return &p.Teardown }},
	"accept_level":       {str: func(p *Policies) *string { return &p.AcceptLevel }},
	"dynamic_pamt": {
		flag:    func(p *Policies) bool { return p.DynamicPAMT != nil && *p.DynamicPAMT },
		setFlag: func(p *Policies, b bool) { p.DynamicPAMT = &b },
	},
	"zap_private_on_notifier": {
		flag:    func(p *Policies) bool { return p.ZapPrivateOnNotifier },
		setFlag: func(p *Policies, b bool) { p.ZapPrivateOnNotifier = b },
	},
	"pin_private_pages": {
		flag:    func(p *Policies) bool { return p.PinPrivatePages },
		setFlag: func(p *Policies, b bool) { p.PinPrivatePages = b },
	},
}
