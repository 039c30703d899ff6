package api

// Bandwidth is a guest's domiftune values as its node applies them:
// averages and peaks in KiB/s, bursts in KiB, 0 for none.
type Bandwidth struct {
	Inbound  Rate `json:"inbound"`
	Outbound Rate `json:"outbound"`
}

// Rate is one direction of a [Bandwidth].
type Rate struct {
	Average uint64 `json:"average,omitempty"`
	Peak    uint64 `json:"peak,omitempty"`
	Burst   uint64 `json:"burst,omitempty"`
}
