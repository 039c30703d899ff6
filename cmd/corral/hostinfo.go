package main

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/corral-dev/corral/events"
)

// defaultDevDataDir is $XDG_DATA_HOME/corral/dev, or
// ~/.local/share/corral/dev when XDG_DATA_HOME is unset.
func defaultDevDataDir(getenv func(string) string) (string, error) {
	if d := getenv("XDG_DATA_HOME"); d != "" && filepath.IsAbs(d) {
		return filepath.Join(d, "corral", "dev"), nil
	}
	home := getenv("HOME")
	if home == "" {
		h, err := os.UserHomeDir()
		if err != nil {
			return "", fmt.Errorf("no home directory to keep data in (%v): give --data-dir", err)
		}
		home = h
	}
	return filepath.Join(home, ".local", "share", "corral", "dev"), nil
}

// nodeIDFromHostname turns a host name into a valid node ID: lower case,
// every character outside [a-z0-9-] replaced by '-', no leading '-', at
// most 63 characters; "local" when nothing usable is left.
func nodeIDFromHostname(host string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(host) {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9':
			b.WriteRune(r)
		default:
			b.WriteByte('-')
		}
	}
	id := strings.TrimLeft(b.String(), "-")
	if len(id) > events.MaxIDLen {
		id = id[:events.MaxIDLen]
	}
	id = strings.TrimRight(id, "-")
	if events.ValidateID("node id", id) != nil {
		return "local"
	}
	return id
}

// parseMemTotal returns MemTotal from /proc/meminfo contents, in bytes.
func parseMemTotal(meminfo []byte) (int64, error) {
	sc := bufio.NewScanner(bytes.NewReader(meminfo))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 2 || f[0] != "MemTotal:" {
			continue
		}
		kb, err := strconv.ParseInt(f[1], 10, 64)
		if err != nil || kb <= 0 {
			return 0, fmt.Errorf("MemTotal %q in /proc/meminfo is not a positive number", f[1])
		}
		if len(f) > 2 && f[2] != "kB" {
			return 0, fmt.Errorf("MemTotal in /proc/meminfo has unit %q, want kB", f[2])
		}
		return kb << 10, nil
	}
	return 0, fmt.Errorf("no MemTotal line in /proc/meminfo")
}

func hostMemory() (int64, error) {
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return 0, fmt.Errorf("read host memory: %w", err)
	}
	return parseMemTotal(b)
}
