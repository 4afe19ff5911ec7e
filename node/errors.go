package node

import (
	"github.com/custos-pki/custos/api"
	"github.com/custos-pki/custos/kms"
)

// Error categories of the node. Every failure the node reports itself
// matches exactly one of these with errors.Is, and each wraps the category
// that api/errors.go translates to an HTTP status: that is the only place
// where the node's errors meet HTTP. (api cannot import node, so the node's
// categories wrap api's rather than the other way round.) Errors of the
// packages below (kms, raftstore, auth) are passed on as they are.
var (
	ErrInvalid   error = &nodeError{"node: invalid input", api.ErrInvalid}
	ErrNotFound  error = &nodeError{"node: not found", api.ErrNotFound}
	ErrConflict  error = &nodeError{"node: conflict", api.ErrConflict}
	ErrForbidden error = &nodeError{"node: operation not permitted", api.ErrForbidden}
	// ErrSealed also matches kms.ErrSealed, as api.Node.Services promises.
	ErrSealed         error = &nodeError{"node: sealed", kms.ErrSealed}
	ErrNotInitialized error = &nodeError{"node: not initialized", api.ErrNotInitialized}
)

// nodeError is a category of the node that unwraps to the category the API
// maps.
type nodeError struct {
	msg      string
	category error
}

func (e *nodeError) Error() string { return e.msg }
func (e *nodeError) Unwrap() error { return e.category }
