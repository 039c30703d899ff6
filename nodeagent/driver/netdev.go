package driver

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// Network is a guest's interface on its node's bridge: for a container a
// veth pair, the host end on the bridge and the other end the container's
// eth0 with Address and a default route via Gateway; for a VM a tap
// device on the bridge that QEMU gets as an open descriptor (libvirt's
// way: QEMU needs neither /dev/net/tun in its device group nor a script),
// with a virtio-net NIC of MAC. The agent chooses the address (its IPAM)
// and makes the bridge; the driver makes and removes the interfaces.
type Network struct {
	// Bridge is the bridge the host end joins; it must exist.
	Bridge string
	// HostIf is the host-side interface: the veth's host end or the tap
	// ([HostInterface]). It is removed with the guest.
	HostIf string
	// MAC is the guest's MAC address ([MACFor]).
	MAC string
	// Address is a container's eth0 address with the bridge's prefix
	// length. A VM configures its own (the driver has no way in).
	Address netip.Prefix
	// Gateway is the container's default route; none when not valid.
	Gateway netip.Addr
}

// HostInterface is the name of the host-side interface of guest on
// bridge: "cv" and 12 hex digits of a hash of both, within IFNAMSIZ, the
// same on every start and different for two agents (two bridges) on one
// host.
func HostInterface(bridge, guest string) string {
	h := sha256.Sum256([]byte(bridge + "/" + guest))
	return "cv" + hex.EncodeToString(h[:6])
}

// MACFor is guest's MAC address: QEMU's and libvirt's locally
// administered prefix 52:54:00 and three bytes of a hash of the name, so
// a guest keeps its MAC across restarts and nodes.
func MACFor(guest string) string {
	h := sha256.Sum256([]byte(guest))
	return fmt.Sprintf("52:54:00:%02x:%02x:%02x", h[0], h[1], h[2])
}

// tapFD is the descriptor number of the tap device in QEMU (after the
// QMP socket, qmpFD, and the serial console, consoleFD).
const tapFD = consoleFD + 1

func (n *Network) validate(g fmt.Stringer) error {
	if n == nil {
		return nil
	}
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: %s: network: %s", ErrInvalidSpec, g, fmt.Sprintf(format, args...))
	}
	for _, name := range []string{n.Bridge, n.HostIf} {
		if name == "" || len(name) >= unix.IFNAMSIZ || strings.ContainsAny(name, "/ \t\n:") {
			return bad("interface name %q must be 1 to %d characters without '/', ':' or spaces", name, unix.IFNAMSIZ-1)
		}
	}
	if _, err := net.ParseMAC(n.MAC); err != nil {
		return bad("MAC %q: %v", n.MAC, err)
	}
	if n.Gateway.IsValid() && !n.Address.Contains(n.Gateway) {
		return bad("gateway %s is outside the guest's network %s", n.Gateway, n.Address.Masked())
	}
	return nil
}

// ipCmd runs ip (or, with ns set, ip inside the network namespace of pid
// ns) and returns its error with its output.
func ipCmd(ctx context.Context, ns int, args ...string) error {
	argv := append([]string{"ip"}, args...)
	if ns > 0 {
		argv = append([]string{"nsenter", "--net=/proc/" + strconv.Itoa(ns) + "/ns/net", "--"}, argv...)
	}
	out, err := exec.CommandContext(ctx, argv[0], argv[1:]...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s: %w: %s", strings.Join(argv, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// attachVeth gives the container whose init is pid its eth0: a veth pair
// made with its other end already in the container's network namespace,
// the host end on the bridge. On failure the host end is removed.
func attachVeth(ctx context.Context, n *Network, pid int) error {
	if err := bridgeExists(n.Bridge); err != nil {
		return err
	}
	if err := ipCmd(ctx, 0, "link", "add", n.HostIf, "type", "veth", "peer", "name", "eth0", "netns", strconv.Itoa(pid)); err != nil {
		return err
	}
	steps := [][]string{{"link", "set", n.HostIf, "master", n.Bridge, "up"}}
	inside := [][]string{{"link", "set", "eth0", "address", n.MAC}, {"link", "set", "eth0", "up"}}
	if n.Address.IsValid() {
		inside = append(inside, []string{"addr", "add", n.Address.String(), "dev", "eth0"})
	}
	if n.Gateway.IsValid() {
		inside = append(inside, []string{"route", "add", "default", "via", n.Gateway.String(), "dev", "eth0"})
	}
	for _, s := range steps {
		if err := ipCmd(ctx, 0, s...); err != nil {
			_ = removeHostIf(n.HostIf)
			return err
		}
	}
	for _, s := range inside {
		if err := ipCmd(ctx, pid, s...); err != nil {
			_ = removeHostIf(n.HostIf)
			return err
		}
	}
	return nil
}

// openTap makes the VM's tap device and puts it on the bridge; QEMU gets
// the returned descriptor. The tap is not persistent: it goes when the
// last descriptor (QEMU's) closes, so a VM that ends leaves none behind.
func openTap(ctx context.Context, n *Network) (*os.File, error) {
	if err := bridgeExists(n.Bridge); err != nil {
		return nil, err
	}
	fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("opening /dev/net/tun for the tap %s: %w (load the tun module)", n.HostIf, err)
	}
	ifr, err := unix.NewIfreq(n.HostIf)
	if err == nil {
		ifr.SetUint16(unix.IFF_TAP | unix.IFF_NO_PI | unix.IFF_VNET_HDR)
		err = unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr)
	}
	if err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("making the tap %s: %w", n.HostIf, err)
	}
	f := os.NewFile(uintptr(fd), "/dev/net/tun:"+n.HostIf)
	if err := ipCmd(ctx, 0, "link", "set", n.HostIf, "master", n.Bridge, "up"); err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

// bridgeExists fails unless name is a bridge of this host.
func bridgeExists(name string) error {
	if _, err := os.Stat("/sys/class/net/" + name + "/bridge"); err != nil {
		return fmt.Errorf("the bridge %s for the guest's network is missing (%w): the agent makes it (corral agent --bridge); check it was not removed by hand", name, err)
	}
	return nil
}

// removeHostIf deletes a guest's host-side interface; one already gone
// (a veth goes with the container's namespace, a tap with QEMU) is fine.
func removeHostIf(name string) error {
	if name == "" {
		return nil
	}
	if _, err := os.Stat("/sys/class/net/" + name); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	err := ipCmd(context.Background(), 0, "link", "del", name)
	if _, serr := os.Stat("/sys/class/net/" + name); errors.Is(serr, os.ErrNotExist) {
		return nil
	}
	return err
}

// netdevArgs are QEMU's arguments for the guest's NIC on the tap at fd.
func netdevArgs(n *Network, fd int) []string {
	if n == nil {
		return nil
	}
	return []string{
		"-netdev", "tap,id=net0,fd=" + strconv.Itoa(fd),
		"-device", "virtio-net-pci,netdev=net0,mac=" + n.MAC,
	}
}

// HostInterface is the guest's host-side network interface (the veth's
// host end or the tap), "" for a guest without a network.
func (i *Instance) HostInterface() string { return i.rec.HostIf }
