package cluster

import "github.com/corral-dev/corral/events"

// canonicalCapabilities returns a create command's --cap-add and
// --cap-drop lists in canonical form (nil when empty), refusing an
// unknown capability name before it becomes an event.
func canonicalCapabilities(add, drop []string) (canonAdd, canonDrop []string, err error) {
	if canonAdd, err = events.CanonicalCapabilities("cap_add", add); err != nil {
		return nil, nil, err
	}
	if canonDrop, err = events.CanonicalCapabilities("cap_drop", drop); err != nil {
		return nil, nil, err
	}
	if len(canonAdd) == 0 {
		canonAdd = nil
	}
	if len(canonDrop) == 0 {
		canonDrop = nil
	}
	return canonAdd, canonDrop, nil
}
