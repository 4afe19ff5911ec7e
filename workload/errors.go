package workload

import "github.com/custos-pki/custos/kms"

// Error categories. Each wraps the kms category of the same meaning, which
// the API maps to a status code.
var (
	ErrInvalid  error = &wlError{"workload: invalid request", kms.ErrInvalid}
	ErrNotFound error = &wlError{"workload: not found", kms.ErrNotFound}
	ErrConflict error = &wlError{"workload: conflict", kms.ErrConflict}
)

type wlError struct {
	msg      string
	category error
}

func (e *wlError) Error() string { return e.msg }
func (e *wlError) Unwrap() error { return e.category }
