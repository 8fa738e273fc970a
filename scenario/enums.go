package scenario

import (
	"fmt"
	"regexp"
	"strings"

	"github.com/tdxsim/tdxsim/errno"
	"github.com/tdxsim/tdxsim/inject"
	"github.com/tdxsim/tdxsim/report"
)

// errnoLike is how an errno name looks: expect_error and expect.error take
// an errno name or any text of the error, and a word of this shape is
// read as a name, so a misspelt one (EINVALL) is refused at load instead
// of never matching.
var errnoLike = regexp.MustCompile(`^E[A-Z0-9]+$`)

// validateEnums checks the enumerated values the rest of validation
// leaves as strings: leaf names in host.tdx.costs (expect.seamcalls: validateExpect),
// errno names in expect_error and expect.error (allocation sources
// are checked with the rest of inject, in InjectConfig). A misspelt value is bad input before any work.
func (f *File) validateEnums() error {
	defaults := report.DefaultCosts()
	for _, k := range sortedKeys(f.Host.TDX.Costs) {
		if k == "default" {
			continue
		}
		name, _, _ := strings.Cut(k, "/")
		if _, err := inject.ParseLeaf(name); err == nil {
			continue
		}
		if _, ok := defaults[name]; ok && strings.HasPrefix(name, "TDG.") {
			continue
		}
		return f.bad("host.tdx.costs."+k, "unknown leaf %q: want a SEAMCALL or TDCALL the model makes (tdxsim run --costs lists them)", name)
	}
	if err := checkErrno(f, "expect.error", f.Expect.Error); err != nil {
		return err
	}
	return checkStepErrnos(f, f.Timeline, "timeline")
}

// checkStepErrnos checks the expect_error of every step in list and in
// its parallel groups.
func checkStepErrnos(f *File, list []Step, path string) error {
	for i := range list {
		p := fmt.Sprintf("%s[%d]", path, i)
		if err := checkErrno(f, p+".expect_error", list[i].ExpectError); err != nil {
			return err
		}
		if err := checkStepErrnos(f, list[i].Members(), p+".parallel"); err != nil {
			return err
		}
	}
	return nil
}

func checkErrno(f *File, field, v string) error {
	if !errnoLike.MatchString(v) {
		return nil
	}
	if _, ok := errno.ByName(v); !ok {
		return f.bad(field, "unknown errno name %q; known: %s", v, strings.Join(errno.Names(), ", "))
	}
	return nil
}
