package cluster

import "github.com/corral-dev/corral/events"

// idMapOf returns a create command's user namespace map: its --idmap
// ranges, else the default map for --userns, else none. A range that
// does not parse, or a map that would give a container the host's root,
// is refused before it becomes an event (GuestDefined.Validate checks the
// whole map).
func idMapOf(userns bool, ranges []string) ([]events.IDRange, error) {
	if len(ranges) == 0 {
		if userns {
			return append([]events.IDRange(nil), events.DefaultIDMap...), nil
		}
		return nil, nil
	}
	m := make([]events.IDRange, 0, len(ranges))
	for _, s := range ranges {
		r, err := events.ParseIDRange(s)
		if err != nil {
			return nil, err
		}
		m = append(m, r)
	}
	return m, nil
}
