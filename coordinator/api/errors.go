package api

import (
	"errors"
	"fmt"
	"net/http"

	"github.com/corral-dev/corral/events"
)

// Error codes are stable: clients and scripts may switch on them.
const (
	CodeInvalid     = "invalid_argument"
	CodeNotFound    = "not_found"
	CodeExists      = "already_exists"
	CodeConflict    = "conflict"
	CodeGone        = "gone"
	CodePermission  = "permission_denied"
	CodeUnavailable = "unavailable"
	// CodeCatchingUp: the server is still applying the log up to the
	// index a consistent read needs (Index and Want say how far).
	CodeCatchingUp = "catching_up"
	CodeInternal   = "internal"
	// CodeUnauthenticated: the request proved no identity that may call
	// the route (no client certificate, no or an unknown token).
	CodeUnauthenticated = "unauthenticated"
	// CodeRateLimited: the caller sent more than its limit allows (too
	// many requests, or too many event streams open); retry later.
	CodeRateLimited = "rate_limited"
)

// Sentinel errors, matched with errors.Is.
var (
	ErrNotFound    = errors.New("corral: not found")
	ErrExists      = errors.New("corral: already exists")
	ErrConflict    = errors.New("corral: conflict")
	ErrGone        = errors.New("corral: no longer retained")
	ErrUnavailable = errors.New("corral: unavailable")
	ErrNotLeader   = errors.New("corral: not the leader")
	// ErrPermission is returned when a request does not come from the
	// agent of the node it is about.
	ErrPermission = errors.New("corral: permission denied")
	// ErrUnauthenticated: the request proved no usable identity.
	ErrUnauthenticated = errors.New("corral: unauthenticated")
	// ErrRateLimited: the caller is over one of its limits.
	ErrRateLimited = errors.New("corral: rate limited")
)

// APIError is an error as it crosses the API: a stable code and a message
// that says what was wrong and what to do.
type APIError struct {
	Code       string `json:"code"`
	Message    string `json:"message"`
	FirstIndex uint64 `json:"first_index,omitempty"`
	// Index and Want are, for catching_up, the index the server holds
	// and the one the read needs.
	Index uint64 `json:"index,omitempty"`
	Want  uint64 `json:"want,omitempty"`
	// Missing is, for permission_denied, the capability the caller lacks.
	Missing string `json:"missing,omitempty"`
}

func (e *APIError) Error() string { return e.Message }

// Is maps codes back to the sentinels so errors.Is works across the wire.
func (e *APIError) Is(target error) bool {
	switch e.Code {
	case CodeInvalid:
		return target == events.ErrInvalid
	case CodeNotFound:
		return target == ErrNotFound
	case CodeExists:
		return target == ErrExists
	case CodeConflict:
		return target == ErrConflict
	case CodeGone:
		return target == ErrGone
	case CodeUnavailable, CodeCatchingUp:
		return target == ErrUnavailable
	case CodePermission:
		return target == ErrPermission
	case CodeUnauthenticated:
		return target == ErrUnauthenticated
	case CodeRateLimited:
		return target == ErrRateLimited
	}
	return false
}

// ErrorOf classifies err as it crosses the API.
func ErrorOf(err error) *APIError {
	var ae *APIError
	if errors.As(err, &ae) {
		return ae
	}
	var ge *GoneError
	if errors.As(err, &ge) {
		return &APIError{Code: CodeGone, Message: err.Error(), FirstIndex: ge.First}
	}
	code := CodeInternal
	switch {
	case errors.Is(err, events.ErrInvalid), errors.Is(err, events.ErrMalformed), errors.Is(err, events.ErrUnknownType):
		code = CodeInvalid
	case errors.Is(err, ErrNotFound):
		code = CodeNotFound
	case errors.Is(err, ErrExists):
		code = CodeExists
	case errors.Is(err, ErrConflict):
		code = CodeConflict
	case errors.Is(err, ErrUnavailable), errors.Is(err, ErrNotLeader):
		code = CodeUnavailable
	case errors.Is(err, ErrPermission):
		code = CodePermission
	case errors.Is(err, ErrUnauthenticated):
		code = CodeUnauthenticated
	case errors.Is(err, ErrRateLimited):
		code = CodeRateLimited
	}
	return &APIError{Code: code, Message: err.Error()}
}

// HTTPStatus is the HTTP status an error code is answered with.
func HTTPStatus(code string) int {
	switch code {
	case CodeInvalid:
		return http.StatusBadRequest
	case CodeNotFound:
		return http.StatusNotFound
	case CodeExists, CodeConflict:
		return http.StatusConflict
	case CodeGone:
		return http.StatusGone
	case CodePermission:
		return http.StatusForbidden
	case CodeUnauthenticated:
		return http.StatusUnauthorized
	case CodeRateLimited:
		return http.StatusTooManyRequests
	case CodeUnavailable, CodeCatchingUp:
		return http.StatusServiceUnavailable
	}
	return http.StatusInternalServerError
}

// GoneError says an index is older than what retention kept.
type GoneError struct {
	Asked, First uint64
}

func (e *GoneError) Error() string {
	return fmt.Sprintf("events before index %d are no longer retained (asked for %d); resume from %d or rebuild from current state", e.First, e.Asked, e.First)
}

func (e *GoneError) Is(target error) bool { return target == ErrGone }

// NotFound says that the named thing does not exist.
func NotFound(what, name string) error {
	return fmt.Errorf("%w: %s %q does not exist", ErrNotFound, what, name)
}

// GuestExists says that a guest of that name is already defined.
func GuestExists(name string) error {
	return fmt.Errorf("%w: guest %q is already defined; choose another name or destroy it first", ErrExists, name)
}

// BadRequest says that a field's value is not what the API takes.
func BadRequest(field, value, want string) error {
	return &events.FieldError{Field: field, Value: value, Want: want}
}
