package ca

import (
	"context"
	"errors"

	"github.com/custos-pki/custos/kms"
	"github.com/custos-pki/custos/raftstore"
)

// Error categories. Each wraps the kms category of the same meaning, which
// is what the API layer maps to a status code.
var (
	ErrInvalid   error = &caError{"ca: invalid request", kms.ErrInvalid}
	ErrNotFound  error = &caError{"ca: not found", kms.ErrNotFound}
	ErrConflict  error = &caError{"ca: conflict", kms.ErrConflict}
	ErrForbidden error = &caError{"ca: not permitted", kms.ErrForbidden}
)

// Specific errors. Each also matches its category.
var (
	ErrNotInitialized     error = &caError{"ca: not initialized", ErrNotFound}
	ErrAlreadyInitialized error = &caError{"ca: already initialized", ErrConflict}
	ErrAlreadyRevoked     error = &caError{"ca: certificate already revoked", ErrConflict}
	ErrExternalRoot       error = &caError{"ca: the root is external: use IntermediateCSR and SetIntermediate", ErrForbidden}
)

// caError is an error that unwraps to its category.
type caError struct {
	msg      string
	category error
}

func (e *caError) Error() string { return e.msg }
func (e *caError) Unwrap() error { return e.category }

// isUnavailable reports whether err says the node cannot serve now (sealed,
// no leader, a timeout) rather than that something is wrong.
func isUnavailable(err error) bool {
	return errors.Is(err, kms.ErrSealed) || errors.Is(err, raftstore.ErrNoLeader) || errors.Is(err, raftstore.ErrNotLeader) ||
		errors.Is(err, raftstore.ErrTimeout) || errors.Is(err, raftstore.ErrClosed) || errors.Is(err, context.DeadlineExceeded)
}
