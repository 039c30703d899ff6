package events

import (
	"fmt"
	"path"
	"slices"
	"strconv"
	"strings"
)

// A guest may use only a minimal set of devices (null, zero, full, random,
// urandom, tty, ptmx, the pseudo terminals, and /dev/kvm for qemu on a KVM
// host); every other device is denied by its device cgroup. The operator
// allows more per guest, at create time (GuestDefined.Devices) or with the
// "devices" knob. An allowed device is written in one of two forms:
//
//	/dev/PATH[:ACCESS]          a device node, resolved on the guest's host
//	c|b MAJOR:MINOR [ACCESS]    a character or block device by number
//
// ACCESS is a subset of rwm (read, write, mknod), rwm when left out. The
// canonical form names ACCESS in rwm order: "/dev/loop-control:rw",
// "c 10:237 rwm". MAJOR or MINOR may be "*".

// NoDevices is the canonical "devices" value of a guest with no extra
// devices.
const NoDevices = "none"

// MaxAllowedDevices bounds the extra devices of one guest.
const MaxAllowedDevices = 64

// CanonicalAllowedDevice parses one allowed device and returns its
// canonical form.
func CanonicalAllowedDevice(s string) (string, error) {
	s = strings.TrimSpace(s)
	bad := func(why string) (string, error) {
		return "", fieldErr("device", truncate(s), why+"; use /dev/PATH[:rwm] or c|b MAJOR:MINOR [rwm], like /dev/loop-control:rw or c 10:237 rw")
	}
	if strings.HasPrefix(s, "/") {
		p, access, hasAccess := strings.Cut(s, ":")
		if !hasAccess {
			access = "rwm"
		}
		if !strings.HasPrefix(p, "/dev/") || path.Clean(p) != p || len(p) > 255 || strings.ContainsAny(p, ", \t\n\x00") {
			return bad("a device path must be a clean absolute path below /dev, without commas or spaces")
		}
		a, ok := canonicalAccess(access)
		if !ok {
			return bad("access must be a non-empty subset of rwm")
		}
		return p + ":" + a, nil
	}
	f := strings.Fields(s)
	if len(f) != 2 && len(f) != 3 {
		return bad("not a device path or a type and numbers")
	}
	if f[0] != "c" && f[0] != "b" {
		return bad("the type must be c (character) or b (block)")
	}
	majS, minS, ok := strings.Cut(f[1], ":")
	if !ok {
		return bad("numbers must be MAJOR:MINOR")
	}
	for _, n := range []string{majS, minS} {
		if n == "*" {
			continue
		}
		if v, err := strconv.ParseUint(n, 10, 32); err != nil || strconv.FormatUint(v, 10) != n {
			return bad("a device number must be * or a decimal number below 2^32")
		}
	}
	access := "rwm"
	if len(f) == 3 {
		access = f[2]
	}
	a, ok := canonicalAccess(access)
	if !ok {
		return bad("access must be a non-empty subset of rwm")
	}
	return f[0] + " " + majS + ":" + minS + " " + a, nil
}

// canonicalAccess returns access in rwm order; ok is false unless it is a
// non-empty subset of rwm without repeats.
func canonicalAccess(access string) (string, bool) {
	if access == "" || len(access) > 3 {
		return "", false
	}
	var out strings.Builder
	for _, c := range "rwm" {
		switch strings.Count(access, string(c)) {
		case 0:
		case 1:
			out.WriteRune(c)
		default:
			return "", false
		}
	}
	if out.Len() != len(access) {
		return "", false
	}
	return out.String(), true
}

// allowedDeviceKey names the device an allowed device is about, without
// its access: its path or its type and numbers.
func allowedDeviceKey(canonical string) string {
	if strings.HasPrefix(canonical, "/") {
		p, _, _ := strings.Cut(canonical, ":")
		return p
	}
	f := strings.Fields(canonical)
	return f[0] + " " + f[1]
}

// CanonicalAllowedDevices returns the canonical form of a list of allowed
// devices, sorted. A device listed twice is refused.
func CanonicalAllowedDevices(list []string) ([]string, error) {
	if len(list) > MaxAllowedDevices {
		return nil, fieldErr("devices", strconv.Itoa(len(list)), fmt.Sprintf("at most %d extra devices", MaxAllowedDevices))
	}
	out := make([]string, 0, len(list))
	seen := map[string]bool{}
	for _, s := range list {
		c, err := CanonicalAllowedDevice(s)
		if err != nil {
			return nil, err
		}
		k := allowedDeviceKey(c)
		if seen[k] {
			return nil, fieldErr("devices", k, "listed twice; give each device once, with all the access it needs")
		}
		seen[k] = true
		out = append(out, c)
	}
	slices.Sort(out)
	return out, nil
}

// ParseAllowedDevices reads a "devices" value: NoDevices, or allowed
// devices separated by commas.
func ParseAllowedDevices(s string) ([]string, error) {
	s = strings.TrimSpace(s)
	if s == NoDevices || s == "" {
		return nil, nil
	}
	return CanonicalAllowedDevices(strings.Split(s, ","))
}

// AllowedDevicesText is the canonical "devices" value of a canonical list.
func AllowedDevicesText(list []string) string {
	if len(list) == 0 {
		return NoDevices
	}
	return strings.Join(list, ",")
}

// MergeAllowedDevices returns the canonical "devices" value old (canonical)
// with allow added, replacing the access of a device already listed, and
// deny taken out. Denying a device that is not listed is refused, so that
// a typo does not pass for a change.
func MergeAllowedDevices(old string, allow, deny []string) (string, error) {
	cur, err := ParseAllowedDevices(old)
	if err != nil {
		return "", err
	}
	byKey := map[string]string{}
	for _, c := range cur {
		byKey[allowedDeviceKey(c)] = c
	}
	for _, s := range deny {
		c, err := CanonicalAllowedDevice(s)
		if err != nil {
			return "", err
		}
		k := allowedDeviceKey(c)
		if _, ok := byKey[k]; !ok {
			return "", fieldErr("devices", k, "not among the guest's extra devices ("+AllowedDevicesText(cur)+"); the minimal set cannot be denied")
		}
		delete(byKey, k)
	}
	for _, s := range allow {
		c, err := CanonicalAllowedDevice(s)
		if err != nil {
			return "", err
		}
		byKey[allowedDeviceKey(c)] = c
	}
	list := make([]string, 0, len(byKey))
	for _, c := range byKey {
		list = append(list, c)
	}
	list, err = CanonicalAllowedDevices(list)
	if err != nil {
		return "", err
	}
	return AllowedDevicesText(list), nil
}

func allowedDevicesKnob(s string) (string, error) {
	list, err := ParseAllowedDevices(s)
	if err != nil {
		return "", err
	}
	return AllowedDevicesText(list), nil
}

// validateDevices checks a definition's extra devices: each valid, none
// twice, in canonical form and order.
func validateDevices(list []string) error {
	c, err := CanonicalAllowedDevices(list)
	if err != nil {
		return err
	}
	if !slices.Equal(c, list) {
		return fieldErr("devices", truncate(strings.Join(list, ",")), "not in canonical form "+AllowedDevicesText(c))
	}
	return nil
}
