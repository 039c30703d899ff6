package network

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"os"
	"slices"
	"sync"
)

// ErrRangeFull is returned when every address of the range is taken.
var ErrRangeFull = errors.New("corral: the node's guest network range is full")

// IPAM hands out the addresses of a range to guests: the first free one
// from the second address on (the first is the gateway), the last
// (broadcast) never. What it handed out is kept in a file, written
// whole and renamed into place, so a restart gives every guest its
// address back. Its methods may be called from any goroutine.
type IPAM struct {
	cidr netip.Prefix
	path string
	mu   sync.Mutex
	held map[string]netip.Addr // guest -> address
}

// ipamFile is the file's content.
type ipamFile struct {
	CIDR      string            `json:"cidr"`
	Addresses map[string]string `json:"addresses"`
}

// OpenIPAM reads the allocations kept at path (none when it is missing).
// An address outside cidr (the range changed) is dropped: that guest gets
// a new one.
func OpenIPAM(cidr netip.Prefix, path string) (*IPAM, error) {
	m := &IPAM{cidr: cidr, path: path, held: map[string]netip.Addr{}}
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return m, nil
	}
	if err != nil {
		return nil, err
	}
	var f ipamFile
	if err := json.Unmarshal(b, &f); err != nil {
		return nil, fmt.Errorf("corral: the guest address file %s is not readable (%w): move it away; guests get new addresses", path, err)
	}
	for g, s := range f.Addresses {
		if a, err := netip.ParseAddr(s); err == nil && m.usable(a) {
			m.held[g] = a
		}
	}
	return m, nil
}

func (m *IPAM) usable(a netip.Addr) bool {
	return m.cidr.Contains(a) && a != m.cidr.Addr() && a != m.cidr.Addr().Next() && a != m.broadcast()
}

func (m *IPAM) broadcast() netip.Addr {
	a := m.cidr.Addr().As4()
	host := uint32(1)<<(32-m.cidr.Bits()) - 1
	n := uint32(a[0])<<24 | uint32(a[1])<<16 | uint32(a[2])<<8 | uint32(a[3]) | host
	return netip.AddrFrom4([4]byte{byte(n >> 24), byte(n >> 16), byte(n >> 8), byte(n)})
}

// Allocate returns guest's address with the range's prefix length: the
// one it holds, or the first free one, kept before it is returned.
func (m *IPAM) Allocate(guest string) (netip.Prefix, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if a, ok := m.held[guest]; ok {
		return netip.PrefixFrom(a, m.cidr.Bits()), nil
	}
	taken := map[netip.Addr]bool{}
	for _, a := range m.held {
		taken[a] = true
	}
	for a := m.cidr.Addr().Next().Next(); m.usable(a); a = a.Next() {
		if taken[a] {
			continue
		}
		m.held[guest] = a
		if err := m.save(); err != nil {
			delete(m.held, guest)
			return netip.Prefix{}, err
		}
		return netip.PrefixFrom(a, m.cidr.Bits()), nil
	}
	return netip.Prefix{}, fmt.Errorf("%w (%s, %d guests): give the agent a larger --bridge-cidr, or destroy a guest", ErrRangeFull, m.cidr, len(m.held))
}

// Release frees guest's address; one that holds none is fine.
func (m *IPAM) Release(guest string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	a, ok := m.held[guest]
	if !ok {
		return nil
	}
	delete(m.held, guest)
	if err := m.save(); err != nil {
		m.held[guest] = a
		return err
	}
	return nil
}

// Held returns every guest's address, by guest.
func (m *IPAM) Held() map[string]netip.Addr {
	m.mu.Lock()
	defer m.mu.Unlock()
	return maps.Clone(m.held)
}

func (m *IPAM) save() error {
	f := ipamFile{CIDR: m.cidr.String(), Addresses: map[string]string{}}
	for _, g := range slices.Sorted(maps.Keys(m.held)) {
		f.Addresses[g] = m.held[g].String()
	}
	b, err := json.MarshalIndent(f, "", "  ")
	if err != nil {
		return err
	}
	tmp := m.path + ".tmp"
	if err := os.WriteFile(tmp, append(b, '\n'), 0o600); err != nil {
		return fmt.Errorf("corral: keeping the guest addresses: %w", err)
	}
	if err := os.Rename(tmp, m.path); err != nil {
		return fmt.Errorf("corral: keeping the guest addresses: %w", err)
	}
	return nil
}
