//go:build !race

package bus

import (
	_ "unsafe" // for go:linkname

	_ "github.com/nats-io/nats-server/v2/server/pse"
)

// procStatFile is the file nats-server's pse package reads, once a second
// from its init on, in every process that links nats-server, to keep the
// CPU figure of its /varz endpoint current.
//
//go:linkname procStatFile github.com/nats-io/nats-server/v2/server/pse.procStatFile
var procStatFile string

// StopSampler ends that once-a-second sampling in a process that runs no
// NATS server (an agent, its fencer): the sampler stops rescheduling
// itself the first time its file cannot be read, so its wake-ups, about
// a tenth of an idle agent's CPU, go away. A server's /varz CPU figure
// reads zero afterwards, so never call it in a process that serves NATS.
// Call it before the process starts its other goroutines: the sampler's
// timer reads the variable without a lock.
func StopSampler() {
	procStatFile = "/nonexistent/corral-stopped-the-nats-sampler"
}
