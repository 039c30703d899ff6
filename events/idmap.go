package events

import (
	"fmt"
	"strconv"
	"strings"
)

// IDRange maps Count user and group ids of a container's user namespace,
// from Container on, to the host's ids from Host on: a line of
// /proc/PID/uid_map and gid_map, as lxc.idmap and Incus's raw.idmap write
// it (CONTAINER:HOST:COUNT here).
type IDRange struct {
	Container uint32 `json:"container"`
	Host      uint32 `json:"host"`
	Count     uint32 `json:"count"`
}

// DefaultIDMap is what guest create --userns gives a container: its root
// is the host's uid and gid 100000, and the 65536 ids a system uses
// (nobody included) map to the block above it, as /etc/subuid's first
// entry and Incus's default do.
var DefaultIDMap = []IDRange{{Container: 0, Host: 100000, Count: 65536}}

// MaxIDRanges is the most ranges a map may hold (the kernel takes 340;
// a container needs one or two).
const MaxIDRanges = 16

func (r IDRange) String() string {
	return fmt.Sprintf("%d:%d:%d", r.Container, r.Host, r.Count)
}

// HostID returns the host id that container id id maps to, and whether
// the map holds it.
func HostID(m []IDRange, id uint32) (uint32, bool) {
	for _, r := range m {
		if id >= r.Container && uint64(id) < uint64(r.Container)+uint64(r.Count) {
			return r.Host + (id - r.Container), true
		}
	}
	return 0, false
}

const idRangeRule = "write CONTAINER:HOST:COUNT in decimal, e.g. 0:100000:65536"

// ParseIDRange reads CONTAINER:HOST:COUNT.
func ParseIDRange(s string) (IDRange, error) {
	f := strings.Split(s, ":")
	if len(f) != 3 {
		return IDRange{}, fieldErr("idmap", s, idRangeRule)
	}
	var n [3]uint32
	for i, v := range f {
		u, err := strconv.ParseUint(v, 10, 32)
		if err != nil {
			return IDRange{}, fieldErr("idmap", s, idRangeRule)
		}
		n[i] = uint32(u)
	}
	r := IDRange{Container: n[0], Host: n[1], Count: n[2]}
	return r, validateIDRange(r)
}

// maxIDEnd bounds a range's end: the kernel refuses id 4294967295 (-1,
// "no id") in a map.
const maxIDEnd = uint64(1)<<32 - 1

func validateIDRange(r IDRange) error {
	switch {
	case r.Count == 0:
		return fieldErr("idmap", r.String(), "map at least one id (COUNT ≥ 1)")
	case uint64(r.Container)+uint64(r.Count) > maxIDEnd || uint64(r.Host)+uint64(r.Count) > maxIDEnd:
		return fieldErr("idmap", r.String(), "keep CONTAINER+COUNT and HOST+COUNT below 4294967295")
	case r.Host == 0:
		return fieldErr("idmap", r.String(), "map no container id to the host's root (uid 0): start HOST above 0, e.g. 100000")
	}
	return nil
}

// ValidateIDMap checks a container's id map: each range valid, no two
// overlapping on either side, the container's root (0) mapped, and no
// container id mapped to the host's root.
func ValidateIDMap(m []IDRange) error {
	if len(m) == 0 {
		return nil
	}
	if len(m) > MaxIDRanges {
		return fieldErr("idmap", strconv.Itoa(len(m))+" ranges", fmt.Sprintf("give at most %d", MaxIDRanges))
	}
	for i, r := range m {
		if err := validateIDRange(r); err != nil {
			return err
		}
		for _, o := range m[:i] {
			if overlaps(r.Container, o.Container, r.Count, o.Count) || overlaps(r.Host, o.Host, r.Count, o.Count) {
				return fieldErr("idmap", r.String()+" and "+o.String(), "give ranges that do not overlap, in the container or on the host")
			}
		}
	}
	if _, ok := HostID(m, 0); !ok {
		return fieldErr("idmap", FormatIDMap(m), "map the container's root: one range must start at container id 0")
	}
	return nil
}

func overlaps(a, b, na, nb uint32) bool {
	return uint64(a) < uint64(b)+uint64(nb) && uint64(b) < uint64(a)+uint64(na)
}

// FormatIDMap writes m as guest show prints it: CONTAINER:HOST:COUNT,
// comma-separated.
func FormatIDMap(m []IDRange) string {
	s := make([]string, len(m))
	for i, r := range m {
		s[i] = r.String()
	}
	return strings.Join(s, ",")
}

// validateUserNS checks the user namespace field: an lxc guest's only.
func (g *GuestDefined) validateUserNS() error {
	if len(g.IDMap) > 0 && g.Driver != DriverLXC {
		return fieldErr("idmap", FormatIDMap(g.IDMap), "a user namespace is for lxc guests only; a "+g.Driver+" guest runs as the agent's user")
	}
	return ValidateIDMap(g.IDMap)
}
