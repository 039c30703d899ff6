package coordinator

import (
	"errors"
	"fmt"
)

// Limits bound what one caller may send, so that no client can exhaust a
// server: request bodies and headers, event streams held open and the
// rate of requests per authenticated identity.
type Limits struct {
	MaxBodyBytes   int64   // request body; default 1 MiB
	MaxHeaderBytes int     // request line and headers; default 64 KiB
	MaxStreams     int     // event streams one identity holds open; default 16
	Rate           float64 // requests per second per identity; 0 means no limit
	Burst          int     // requests one identity may send at once above Rate; default 2×Rate
}

// DefaultLimits are generous for operators, automation and agents, small
// enough that one caller cannot take a server down.
func DefaultLimits() Limits {
	return Limits{MaxBodyBytes: 1 << 20, MaxHeaderBytes: 64 << 10, MaxStreams: 16, Rate: 5000, Burst: 10000}
}

// withDefaults fills the zero fields.
func (l Limits) withDefaults() Limits {
	d := DefaultLimits()
	if l.MaxBodyBytes == 0 {
		l.MaxBodyBytes = d.MaxBodyBytes
	}
	if l.MaxHeaderBytes == 0 {
		l.MaxHeaderBytes = d.MaxHeaderBytes
	}
	if l.MaxStreams == 0 {
		l.MaxStreams = d.MaxStreams
	}
	if l.Burst == 0 {
		l.Burst = int(2 * l.Rate)
	}
	return l
}

// Validate says which limit is out of range.
func (l Limits) Validate() error {
	var errs []error
	if l.MaxBodyBytes < 0 || (l.MaxBodyBytes > 0 && l.MaxBodyBytes < 4<<10) {
		errs = append(errs, fmt.Errorf("corral: max body %d bytes: use at least 4096 (default 1 MiB)", l.MaxBodyBytes))
	}
	if l.MaxHeaderBytes < 0 || (l.MaxHeaderBytes > 0 && l.MaxHeaderBytes < 4<<10) {
		errs = append(errs, fmt.Errorf("corral: max header %d bytes: use at least 4096 (default 64 KiB)", l.MaxHeaderBytes))
	}
	if l.MaxStreams < 0 {
		errs = append(errs, fmt.Errorf("corral: max event streams %d: use at least 1 (default 16)", l.MaxStreams))
	}
	if l.Rate < 0 || l.Burst < 0 {
		errs = append(errs, fmt.Errorf("corral: request rate %v/s, burst %d: use positive numbers, or a rate of 0 for no limit (default 5000/s, burst 10000)", l.Rate, l.Burst))
	}
	return errors.Join(errs...)
}
