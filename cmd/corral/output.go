package main

import (
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
)

// table writes aligned columns. Cells must not contain tabs or newlines;
// clean strips them.
type table struct{ tw *tabwriter.Writer }

func newTable(w io.Writer, header ...string) *table {
	t := &table{tw: tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)}
	t.row(header...)
	return t
}

func (t *table) row(cells ...string) {
	for i, c := range cells {
		cells[i] = clean(c)
	}
	fmt.Fprintln(t.tw, strings.Join(cells, "\t"))
}

func (t *table) flush() error { return t.tw.Flush() }

// clean makes s safe to print in one cell: control characters become
// spaces, an empty value becomes "-".
func clean(s string) string {
	if s == "" {
		return "-"
	}
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return ' '
		}
		return r
	}, s)
}

// writeJSON prints v as indented JSON.
func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// formatBytes prints a size in the largest binary unit it reaches:
// exactly when that unit divides it ("512MiB"), to one decimal otherwise
// ("15.5GiB"), so that both guest sizes and host memory read well.
func formatBytes(b int64) string {
	for _, u := range []struct {
		n    int64
		name string
	}{{1 << 40, "TiB"}, {1 << 30, "GiB"}, {1 << 20, "MiB"}, {1 << 10, "KiB"}} {
		if b >= u.n {
			if b%u.n == 0 {
				return strconv.FormatInt(b/u.n, 10) + u.name
			}
			return strconv.FormatFloat(float64(b)/float64(u.n), 'f', 1, 64) + u.name
		}
	}
	return strconv.FormatInt(b, 10) + "B"
}

// formatTime prints an event time in the local zone, to the second.
func formatTime(t time.Time) string { return t.Local().Format(time.RFC3339) }

func formatUint(n uint64) string { return strconv.FormatUint(n, 10) }

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

func formatRatio(r float64) string { return strconv.FormatFloat(r, 'g', -1, 64) }
