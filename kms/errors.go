package kms

import "errors"

// Error categories. Every error the package returns for a caller's mistake
// or for the state of the KMS matches exactly one of these with errors.Is;
// the API layer maps the category, and only the category, to a status code.
// An error that matches none (a storage failure, ErrCorrupt) is internal.
var (
	ErrInvalid   = errors.New("kms: invalid input")
	ErrNotFound  = errors.New("kms: not found")
	ErrSealed    = errors.New("kms: sealed")
	ErrForbidden = errors.New("kms: operation not permitted")
	ErrConflict  = errors.New("kms: conflict")
)

// Specific errors. Each also matches its category.
var (
	ErrNotInitialized     error = &kmsError{"kms: not initialized", ErrSealed}
	ErrAlreadyInitialized error = &kmsError{"kms: already initialized", ErrConflict}
	ErrBadUnsealKey       error = &kmsError{"kms: unseal key is wrong", ErrForbidden}
	ErrKeyFilePermissions error = &kmsError{"kms: key file must not be readable or writable by group or others", ErrInvalid}
	ErrReservedTable      error = &kmsError{"kms: table is reserved", ErrInvalid}
	ErrDecrypt            error = &kmsError{"kms: ciphertext does not authenticate under this key and associated data", ErrInvalid}
	ErrMalformed          error = &kmsError{"kms: malformed ciphertext or signature", ErrInvalid}
	ErrUnsupported        error = &kmsError{"kms: operation not supported by this key type", ErrInvalid}
	ErrKeyExists          error = &kmsError{"kms: key already exists", ErrConflict}
	ErrVersionUnavailable error = &kmsError{"kms: key version not available", ErrForbidden}
	ErrNotExportable      error = &kmsError{"kms: key is not exportable", ErrForbidden}
	ErrDeletionNotAllowed error = &kmsError{"kms: deletion is not allowed for this key", ErrForbidden}
	ErrPendingDeletion    error = &kmsError{"kms: key is scheduled for deletion", ErrForbidden}
	ErrUseLimit           error = &kmsError{"kms: key version reached its use limit; rotate the key", ErrForbidden}
	// ErrCorrupt means a value in storage did not authenticate: it was
	// altered or written by something other than this barrier. Internal.
	ErrCorrupt = errors.New("kms: stored value failed authentication")
)

// Category returns the category err belongs to (one of ErrInvalid,
// ErrNotFound, ErrSealed, ErrForbidden, ErrConflict), or nil when it is an
// internal error.
func Category(err error) error {
	for _, c := range []error{ErrInvalid, ErrNotFound, ErrSealed, ErrForbidden, ErrConflict} {
		if errors.Is(err, c) {
			return c
		}
	}
	return nil
}

// kmsError is a specific error that unwraps to its category.
type kmsError struct {
	msg      string
	category error
}

func (e *kmsError) Error() string { return e.msg }
func (e *kmsError) Unwrap() error { return e.category }
