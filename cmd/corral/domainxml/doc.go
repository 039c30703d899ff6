// Package domainxml maps a libvirt domain, as `virsh dumpxml` writes it, to
// a corral guest: one [api.CreateGuest] carrying the definition and the
// persistent tuning, and the list of what corral has no place for, one
// entry per element with its value and why. corral guest import is its
// only caller; it does no I/O and talks to no server, so everything it
// maps is checked again by the server when the guest is created.
//
// It owns the reading of libvirt's XML (libvirt.org/go/libvirtxml, which
// no other package imports) and the translation of libvirt's units and
// names into corral's: memory in libvirt's unit attributes (KiB when
// none), cputune times in µs as corral's knobs take them, virsh's knob
// names, which corral's match.
//
// Dependency rule: it imports coordinator/api and events and nothing else
// of corral's; never the coordinator, raft, NATS or the agent.
package domainxml
