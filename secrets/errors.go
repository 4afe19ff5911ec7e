package secrets

import "github.com/custos-pki/custos/kms"

// Errors. Each matches, with errors.Is, one of the kms error categories
// (kms.ErrInvalid, kms.ErrNotFound, kms.ErrConflict, kms.ErrForbidden), so
// the API layer maps them to a status without knowing this package. Their
// messages name paths and versions, never a value.
var (
	ErrInvalidMount = &secretsError{"secrets: invalid mount name", kms.ErrInvalid}
	ErrInvalidPath  = &secretsError{"secrets: invalid path", kms.ErrInvalid}
	ErrInvalidValue = &secretsError{"secrets: invalid value", kms.ErrInvalid}
	ErrInvalid      = &secretsError{"secrets: invalid input", kms.ErrInvalid}
	// ErrCASRequired: the mount or the secret requires check-and-set and
	// the write gave none.
	ErrCASRequired = &secretsError{"secrets: check-and-set is required", kms.ErrInvalid}

	ErrMountNotFound = &secretsError{"secrets: no such mount", kms.ErrNotFound}
	// ErrMountDeleting: the mount is being deleted; DeleteMount finishes it.
	ErrMountDeleting = &secretsError{"secrets: mount is being deleted", kms.ErrNotFound}
	ErrNotFound      = &secretsError{"secrets: no such secret", kms.ErrNotFound}
	// ErrVersionNotFound: the version was never written, or was pruned by
	// max_versions.
	ErrVersionNotFound = &secretsError{"secrets: no such version", kms.ErrNotFound}
	// ErrVersionDeleted: the version is soft-deleted; Undelete restores it.
	ErrVersionDeleted = &secretsError{"secrets: version is deleted", kms.ErrNotFound}
	// ErrVersionDestroyed: the version's data is gone for good.
	ErrVersionDestroyed = &secretsError{"secrets: version is destroyed", kms.ErrNotFound}

	ErrMountExists   = &secretsError{"secrets: mount already exists", kms.ErrConflict}
	ErrMountNotEmpty = &secretsError{"secrets: mount is not empty", kms.ErrConflict}
	// ErrCASMismatch: the check-and-set version is not the current version.
	ErrCASMismatch = &secretsError{"secrets: check-and-set version is not the current version", kms.ErrConflict}
	// ErrExists: the destination of a move already holds a secret.
	ErrExists = &secretsError{"secrets: a secret already exists at the destination", kms.ErrConflict}
	// ErrBusy: other writers kept changing the secret; try again.
	ErrBusy = &secretsError{"secrets: the secret kept changing under concurrent writes", kms.ErrConflict}
)

// secretsError is a specific error that unwraps to its kms category.
type secretsError struct {
	msg      string
	category error
}

func (e *secretsError) Error() string { return e.msg }
func (e *secretsError) Unwrap() error { return e.category }
