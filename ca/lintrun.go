package ca

import (
	"fmt"
	"reflect"
	"slices"

	zx509 "github.com/zmap/zcrypto/x509"
	"github.com/zmap/zlint/v3/lint"
)

// zlint's lint.CertificateLint.Execute builds a new instance of its lint
// for every certificate (Lint()), configures it by reflection
// (Configuration.MaybeConfigure), then runs CheckApplies, CheckEffective
// and Execute: over the ~150 lints of a private CA, 150 interface
// conversions and reflection passes and an allocation for every lint that
// does not apply. A lintRunner gives the same result, and pays for an
// instance only where the instance could carry state from one certificate
// to the next:
//
//   - Most lint types are empty structs and not Configurable: an instance
//     holds nothing, so one instance serves every certificate (shared).
//   - A Configurable lint whose Configure() is its own instance and whose
//     type holds only plain values (numbers, booleans, strings, arrays and
//     structs of those: no pointer, slice, map, interface, func or chan) is
//     configured once at start; each certificate gets a copy of that
//     configured instance (proto), which is what Lint() and MaybeConfigure
//     would make again, configuration being a function of the Configuration
//     alone. Whatever Execute changes stays in the copy.
//   - custos's own lints that change nothing in their receiver say so
//     (sharedLint) and are shared.
//   - Every other lint, and every lint of a source that zlint's Execute
//     filters before it runs (the CA/Browser Forum ones: only runSources
//     are run here), goes through zlint's own Execute.
//
// A panic in a lint is a Fatal result naming it, as in zlint.
// TestLintRunnerMatchesZlint holds the results to zlint's, lint by lint.

// sharedLint is a lint of custos whose CheckApplies and Execute change
// nothing in their receiver, so that one instance can serve every
// certificate, from any goroutine.
type sharedLint interface {
	lint.CertificateLintInterface
	sharedByDesign()
}

// runSources are the sources whose lints zlint's Execute runs without a
// filter of its own.
var runSources = lintSources

// lintRunner runs one certificate lint.
type lintRunner struct {
	l      *lint.CertificateLint
	cfg    lint.Configuration
	shared lint.CertificateLintInterface // one instance for all certificates
	proto  reflect.Value                 // a configured *T, copied per certificate
}

// newLintRunners makes a runner for each of lints under cfg.
func newLintRunners(lints []*lint.CertificateLint, cfg lint.Configuration) []lintRunner {
	rs := make([]lintRunner, len(lints))
	for i, l := range lints {
		rs[i] = newLintRunner(l, cfg)
	}
	return rs
}

func newLintRunner(l *lint.CertificateLint, cfg lint.Configuration) (r lintRunner) {
	r = lintRunner{l: l, cfg: cfg}
	if !l.OverrideFrameworkFilter && !slices.Contains(runSources, l.Source) {
		return r // zlint filters these before it runs them
	}
	defer func() {
		if recover() != nil { // Lint() or Configure() panics: zlint says so
			r = lintRunner{l: l, cfg: cfg}
		}
	}()
	impl := l.Lint()
	if impl == nil {
		return r
	}
	if s, ok := impl.(sharedLint); ok {
		r.shared = s
		return r
	}
	t := reflect.TypeOf(impl)
	if t.Kind() != reflect.Pointer || t.Elem().Kind() != reflect.Struct || !plainValue(t.Elem()) {
		return r
	}
	c, configurable := impl.(lint.Configurable)
	switch {
	case !configurable && t.Elem().Size() == 0:
		r.shared = impl
	case !configurable || t.Elem().Size() > 0 && c.Configure() == any(impl):
		// A copy of a configured instance is what Lint() and MaybeConfigure
		// make, if they make the same every time: check that they do.
		again := l.Lint()
		if cfg.MaybeConfigure(impl, l.Name) != nil || cfg.MaybeConfigure(again, l.Name) != nil ||
			reflect.ValueOf(impl).Elem().Interface() != reflect.ValueOf(again).Elem().Interface() {
			return r // zlint's own path, which reports any configuration error
		}
		r.proto = reflect.ValueOf(impl)
	}
	return r
}

// fast reports whether r runs its lint without zlint's framework.
func (r *lintRunner) fast() bool { return r.shared != nil || r.proto.IsValid() }

// instance is the lint's configured instance for one certificate: the
// shared one, or a new copy of the configured prototype. Only for fast.
func (r *lintRunner) instance() lint.CertificateLintInterface {
	if r.shared != nil {
		return r.shared
	}
	v := reflect.New(r.proto.Type().Elem())
	v.Elem().Set(r.proto.Elem())
	return v.Interface().(lint.CertificateLintInterface)
}

// plainValue reports whether a value of t holds no reference: copying it
// copies everything in it.
func plainValue(t reflect.Type) bool {
	switch t.Kind() {
	case reflect.Bool, reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr,
		reflect.Float32, reflect.Float64, reflect.Complex64, reflect.Complex128, reflect.String:
		return true
	case reflect.Array:
		return plainValue(t.Elem())
	case reflect.Struct:
		for i := range t.NumField() {
			if !plainValue(t.Field(i).Type) {
				return false
			}
		}
		return true
	}
	return false
}

// run is *l.Execute(cert, cfg). A lint that does not apply (NA) or is
// not in effect (NE) costs no allocation.
func (r *lintRunner) run(cert *zx509.Certificate) (res lint.LintResult) {
	if !r.fast() {
		return r.result(r.l.Execute(cert, r.cfg))
	}
	defer func() {
		if err := recover(); err != nil {
			res = lint.LintResult{Status: lint.Fatal, Details: fmt.Sprintf("'%s' panicked. Error: %v", r.l.Name, err)}
		}
	}()
	impl := r.instance()
	switch {
	case !impl.CheckApplies(cert):
		return lint.LintResult{Status: lint.NA}
	case !r.l.CheckEffective(cert):
		return lint.LintResult{Status: lint.NE}
	}
	return r.result(impl.Execute(cert))
}

// result is *res, or Fatal if a lint returned no result.
func (r *lintRunner) result(res *lint.LintResult) lint.LintResult {
	if res == nil {
		return lint.LintResult{Status: lint.Fatal, Details: fmt.Sprintf("'%s' returned no result", r.l.Name)}
	}
	return *res
}
