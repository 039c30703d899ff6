package cgroupdriver

import (
	"errors"
	"fmt"
)

var (
	// ErrInvalidGuestID is returned for a guest ID that is not a safe path
	// component (see [ValidateGuestID]).
	ErrInvalidGuestID = errors.New("corral: invalid guest id")

	// ErrInvalidResources is wrapped by every [FieldError]: a value the host
	// cannot take. Nothing has been written when it is returned.
	ErrInvalidResources = errors.New("corral: invalid cgroup resources")

	// ErrControllerMissing is returned when a knob needs a controller that is
	// neither mounted on cgroup v1 nor available on cgroup v2 (for example
	// net_cls, which the operator may choose not to mount).
	ErrControllerMissing = errors.New("corral: cgroup controller not available")

	// ErrNoCgroups is returned by detection when no cgroup file system is
	// mounted.
	ErrNoCgroups = errors.New("corral: no cgroup hierarchy mounted")

	// ErrBusy is returned when a group still cannot be removed after its
	// tasks were killed and the bounded retries are exhausted.
	ErrBusy = errors.New("corral: cgroup still busy")

	// ErrShim is returned by [Driver.Start] when the re-exec shim could not
	// join the guest's groups or exec the command.
	ErrShim = errors.New("corral: cgroup entry shim failed")
	// ErrFrozen is returned by [Driver.Start] when the guest's group is
	// frozen (by the node's fencer, or an ancestor's freezer): a process
	// would stop before its first instruction and the start would hang.
	ErrFrozen = errors.New("corral: the guest's group is frozen")
)

// FieldError says which field of a [Resources] (or [Reservation]) value the
// host cannot take, the value given and what would be accepted. It wraps
// [ErrInvalidResources] or, when the cause is a missing controller,
// [ErrControllerMissing].
type FieldError struct {
	Field  string // JSON name of the field, e.g. "hard_limit"
	Value  string // the value as given
	Reason string // what is allowed, e.g. "must be 2..262144"
	cause  error
}

func (e *FieldError) Error() string {
	return fmt.Sprintf("corral: cgroup resources: %s = %s: %s", e.Field, e.Value, e.Reason)
}

func (e *FieldError) Unwrap() error {
	if e.cause != nil {
		return e.cause
	}
	return ErrInvalidResources
}

func fieldErr(field string, value any, format string, args ...any) *FieldError {
	return &FieldError{Field: field, Value: fmt.Sprint(value), Reason: fmt.Sprintf(format, args...)}
}

func missingErr(field string, value any, format string, args ...any) *FieldError {
	e := fieldErr(field, value, format, args...)
	e.cause = ErrControllerMissing
	return e
}
