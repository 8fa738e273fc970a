//go:build !tdxsim_mutation

package mutation

// On reports whether mutation id is active. Without the tdxsim_mutation
// build tag it is the constant false: every call site folds away, and no
// environment or flag can turn a mutation on.
func On(ID) bool { return false }

// Active is the active mutation: none without the build tag.
func Active() ID { return "" }

// Built reports whether the binary was built with the mutations
// (the tdxsim_mutation tag).
const Built = false
