package shaper

import (
	"bytes"
	"compress/gzip"
	"io"
	"os"
)

// readConfig returns the running kernel's configuration from
// /proc/config.gz.
func readConfig() ([]byte, error) {
	f, err := os.Open("/proc/config.gz")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	z, err := gzip.NewReader(f)
	if err != nil {
		return nil, err
	}
	b, err := io.ReadAll(z)
	return append([]byte("\n"), bytes.TrimSpace(b)...), err
}
