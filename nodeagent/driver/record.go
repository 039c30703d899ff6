package driver

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/corral-dev/corral/cgroupdriver"
)

// recordVersion is the schema of state.json. A record of another version
// is refused by Adopt rather than misread.
const recordVersion = 1

// record is what a driver writes to state.json once a guest runs: enough
// for a new agent process to find the same guest again and to prove that
// the pid it finds is still that guest and not a reuse of the number.
type record struct {
	Version int                `json:"version"`
	Guest   cgroupdriver.Guest `json:"guest"`
	PID     int                `json:"pid"`
	// StartTime is field 22 of /proc/PID/stat (clock ticks after boot)
	// and BootID the kernel's boot id: together with PID they name one
	// process for the lifetime of the host.
	StartTime uint64    `json:"start_time"`
	BootID    string    `json:"boot_id"`
	StartedAt time.Time `json:"started_at"`
	// OOMKills is the memory group's oom_kill counter when the guest
	// started; a rise means the kernel killed something in it.
	OOMKills  uint64 `json:"oom_kills"`
	QMPSocket string `json:"qmp_socket,omitempty"`
	// ConsoleSocket is the serial console of a qemu guest.
	ConsoleSocket string `json:"console_socket,omitempty"`
	// HostIf is the guest's host-side network interface, removed with it.
	HostIf      string `json:"host_if,omitempty"`
	LogPath     string `json:"log_path"`
	LogMaxBytes int64  `json:"log_max_bytes"`
	// Exit is set when a driver saw the guest end, so that an agent that
	// restarts before reporting it still reports the real status.
	Exit *exitRecord `json:"exit,omitempty"`
}

type exitRecord struct {
	Code      int    `json:"code"`
	Signal    int    `json:"signal,omitempty"`
	OOMKilled bool   `json:"oom_killed,omitempty"`
	Unknown   bool   `json:"unknown,omitempty"`
	Detail    string `json:"detail,omitempty"`
}

func (e *exitRecord) status() ExitStatus {
	s := ExitStatus{Code: e.Code, Signal: sigOf(e.Signal), OOMKilled: e.OOMKilled, Detail: e.Detail}
	if e.Unknown {
		s.Err = ErrExitUnknown
	}
	return s
}

func exitRecordOf(s ExitStatus) *exitRecord {
	return &exitRecord{Code: s.Code, Signal: int(s.Signal), OOMKilled: s.OOMKilled, Unknown: errors.Is(s.Err, ErrExitUnknown), Detail: s.Detail}
}

// writeRecord replaces the record atomically (write a temporary file,
// rename it over the old one): an agent killed at any point leaves the old
// record or the new one, never a torn file. It does not fsync: the record
// only has to outlive the agent process, which the page cache does; a
// crash of the host ends the guests too, and the boot id in the record
// makes a record from before a reboot name nothing.
func writeRecord(path string, r *record) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	tmp := path + ".tmp"
	err = os.WriteFile(tmp, append(b, '\n'), 0o600)
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("corral: write state record: %w", err)
	}
	return nil
}

func readRecord(path string) (*record, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("%w: %s", ErrNoRecord, path)
	}
	if err != nil {
		return nil, fmt.Errorf("corral: read state record: %w", err)
	}
	var r record
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("corral: state record %s: %w", path, err)
	}
	if r.Version != recordVersion {
		return nil, fmt.Errorf("corral: state record %s: version %d, this agent reads %d", path, r.Version, recordVersion)
	}
	return &r, nil
}
