package main

import (
	"fmt"
	"io"
	"strings"
)

// printAligned prints NAME: VALUE rows with the colons in one column, as
// printParams does for virsh's commands, but wide enough for the longest
// name: corral's own commands (operator scheduler get-config) have names
// longer than virsh's 15 columns.
func printAligned(w io.Writer, rows [][2]string) error {
	width := 15
	for _, r := range rows {
		width = max(width, len(r[0]))
	}
	var b strings.Builder
	for _, r := range rows {
		fmt.Fprintf(&b, "%-*s: %s\n", width, r[0], r[1])
	}
	_, err := io.WriteString(w, b.String())
	return err
}
