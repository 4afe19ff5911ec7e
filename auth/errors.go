package auth

import "errors"

// Error categories. Every error this package returns that is not a storage
// error wraps exactly one of them; the API maps them to status codes.
var (
	// ErrInvalid: the request is malformed (bad name, bad policy document,
	// out-of-range TTL). Maps to 400.
	ErrInvalid = errors.New("auth: invalid input")
	// ErrNotFound: no such policy, role or accessor. Maps to 404.
	ErrNotFound = errors.New("auth: not found")
	// ErrPermissionDenied: an unknown, malformed or revoked token, a policy
	// the caller may not grant, or a certificate that does not satisfy a
	// role. Maps to 403.
	ErrPermissionDenied = errors.New("auth: permission denied")
	// ErrExpired: the token's lifetime is over. Maps to 403 (or 401).
	ErrExpired = errors.New("auth: expired")
)
