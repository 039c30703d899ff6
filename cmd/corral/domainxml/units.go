package domainxml

import (
	"fmt"
	"math"
	"strconv"
	"strings"
)

// scale turns a libvirt memory value and its unit attribute into bytes, as
// libvirt's virScaleInteger reads them: no unit is KiB; b and bytes are
// bytes; K, M, G, T, P, E alone or with iB are powers of 1024, with B
// powers of 1000; the letter's case does not matter.
func scale(v uint64, unit string) (uint64, error) {
	u := strings.TrimSpace(unit)
	var mult uint64
	switch lower := strings.ToLower(u); lower {
	case "":
		mult = 1024
	case "b", "byte", "bytes":
		mult = 1
	default:
		exp := strings.IndexByte("kmgtpe", lower[0]) + 1
		base := uint64(0)
		switch rest := lower[1:]; {
		case exp == 0:
		case rest == "" || rest == "ib":
			base = 1024
		case rest == "b":
			base = 1000
		}
		if base == 0 {
			return 0, fmt.Errorf("unit %q is not one of libvirt's (b, KiB, MiB, GiB, TiB, KB, MB, GB, TB, ...)", unit)
		}
		mult = 1
		for range exp {
			mult *= base
		}
	}
	if v > math.MaxInt64/mult {
		return 0, fmt.Errorf("%d %s is too large", v, unit)
	}
	return v * mult, nil
}

// memText shows a memory value as the XML has it.
func memText[T uint | uint64](v T, unit string) string {
	if unit == "" {
		unit = "KiB"
	}
	return strconv.FormatUint(uint64(v), 10) + " " + unit
}
