package api

import (
	"errors"
	"fmt"
	"net/http"

	"github.com/custos-pki/custos/audit"
	"github.com/custos-pki/custos/auth"
	"github.com/custos-pki/custos/kms"
	"github.com/custos-pki/custos/raftstore"
)

// Stable error codes of the API.
const (
	CodeInvalidArgument  = "invalid_argument"
	CodeMalformedJSON    = "malformed_json"
	CodeUnknownField     = "unknown_field"
	CodeBodyTooLarge     = "body_too_large"
	CodeUnauthenticated  = "unauthenticated"
	CodePermissionDenied = "permission_denied"
	CodeNotFound         = "not_found"
	CodeMethodNotAllowed = "method_not_allowed"
	CodeConflict         = "conflict"
	CodeSealed           = "sealed"
	CodeNotInitialized   = "not_initialized"
	CodeUnavailable      = "unavailable"
	CodeRateLimited      = "rate_limited"
	CodeInternal         = "internal"
)

// Error is an API error: what the client sees.
type Error struct {
	Status  int    `json:"-"`
	Code    string `json:"code"`
	Message string `json:"message"`
}

func (e *Error) Error() string { return e.Message }

// Errorf makes an API error with a status and code of the caller's choice.
// Handlers use it only for conditions they detect themselves.
func Errorf(status int, code, format string, args ...any) *Error {
	return &Error{Status: status, Code: code, Message: fmt.Sprintf(format, args...)}
}

func invalid(format string, args ...any) *Error {
	return Errorf(http.StatusBadRequest, CodeInvalidArgument, format, args...)
}

// ErrNotInitialized and ErrSealed are what the node reports before init and
// while sealed.
var (
	ErrNotInitialized = errors.New("custos is not initialized")
	ErrStandby        = errors.New("no leader: the cluster has no quorum")
)

// The categories a Node reports its own failures with. The node's errors
// wrap one of these (or ErrNotInitialized, or match kms.ErrSealed), so that
// the node never picks a status: toError maps the category, and only it.
var (
	ErrInvalid   = errors.New("invalid argument")
	ErrNotFound  = errors.New("not found")
	ErrConflict  = errors.New("conflict")
	ErrForbidden = errors.New("permission denied")
)

// toError translates an error from the packages below into an API error.
// This is the only place where their errors meet HTTP.
func toError(err error) *Error {
	var e *Error
	if errors.As(err, &e) {
		return e
	}
	msg := err.Error()
	status, code := http.StatusInternalServerError, CodeInternal
	switch {
	case errors.Is(err, ErrNotInitialized), errors.Is(err, kms.ErrNotInitialized):
		status, code = http.StatusServiceUnavailable, CodeNotInitialized
	case errors.Is(err, kms.ErrSealed):
		status, code = http.StatusServiceUnavailable, CodeSealed
	case errors.Is(err, ErrStandby), errors.Is(err, raftstore.ErrNoLeader), errors.Is(err, raftstore.ErrTimeout),
		errors.Is(err, raftstore.ErrUnknownOutcome), errors.Is(err, raftstore.ErrClosed), errors.Is(err, raftstore.ErrNotLeader),
		errors.Is(err, audit.ErrUnavailable):
		status, code = http.StatusServiceUnavailable, CodeUnavailable
	case errors.Is(err, ErrInvalid), errors.Is(err, kms.ErrInvalid), errors.Is(err, auth.ErrInvalid),
		errors.Is(err, raftstore.ErrValueTooLarge), errors.Is(err, raftstore.ErrInvalidKey),
		errors.Is(err, raftstore.ErrInvalidArgument), errors.Is(err, raftstore.ErrTooManyOps):
		status, code = http.StatusBadRequest, CodeInvalidArgument
	case errors.Is(err, ErrNotFound), errors.Is(err, kms.ErrNotFound), errors.Is(err, auth.ErrNotFound), errors.Is(err, raftstore.ErrNotFound):
		status, code = http.StatusNotFound, CodeNotFound
	case errors.Is(err, ErrConflict), errors.Is(err, kms.ErrConflict):
		status, code = http.StatusConflict, CodeConflict
	case errors.Is(err, ErrForbidden), errors.Is(err, kms.ErrForbidden), errors.Is(err, auth.ErrPermissionDenied), errors.Is(err, auth.ErrExpired):
		status, code = http.StatusForbidden, CodePermissionDenied
	}
	if code == CodeInternal {
		msg = "internal error"
	}
	return &Error{Status: status, Code: code, Message: msg}
}
