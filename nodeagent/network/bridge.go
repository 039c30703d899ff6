package network

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"sync"
)

// Config is a node's guest network. Start from [DefaultConfig].
type Config struct {
	// Bridge is the bridge's name; "" turns guest networking off.
	Bridge string
	// CIDR is the guests' range; the bridge gets its first address, the
	// guests the others, from the second.
	CIDR netip.Prefix
	// NAT masquerades the guests' traffic that leaves the host by
	// another interface, and turns on IPv4 forwarding.
	NAT bool
}

// DefaultBridge and DefaultCIDR are corral agent's defaults. The range
// avoids libvirt's 192.168.122.0/24, Docker's 172.17.0.0/16 and Podman's
// 10.88.0.0/16.
const DefaultBridge = "corral0"

// DefaultCIDR is the default guest range.
var DefaultCIDR = netip.MustParsePrefix("10.87.0.0/24")

// ErrBadConfig wraps every refusal of a [Config].
var ErrBadConfig = errors.New("corral: bad guest network")

// Validate reports a configuration [Bridge.Ensure] would refuse.
func (c Config) Validate() error {
	if c.Bridge == "" {
		return nil
	}
	if len(c.Bridge) > 15 || strings.ContainsAny(c.Bridge, "/ \t\n:") {
		return fmt.Errorf("%w: bridge name %q must be 1 to 15 characters without '/', ':' or spaces", ErrBadConfig, c.Bridge)
	}
	if !c.CIDR.IsValid() || !c.CIDR.Addr().Is4() || c.CIDR.Bits() > 29 || c.CIDR.Bits() < 16 {
		return fmt.Errorf("%w: range %s must be an IPv4 network from /16 to /29 (e.g. %s)", ErrBadConfig, c.CIDR, DefaultCIDR)
	}
	if c.CIDR != c.CIDR.Masked() {
		return fmt.Errorf("%w: range %s has host bits set: give the network, %s", ErrBadConfig, c.CIDR, c.CIDR.Masked())
	}
	return nil
}

// Gateway is the bridge's address with the range's prefix length.
func (c Config) Gateway() netip.Prefix {
	return netip.PrefixFrom(c.CIDR.Addr().Next(), c.CIDR.Bits())
}

// NATTable is the nftables table of the masquerade for bridge.
func NATTable(bridge string) string { return "corral-nat-" + bridge }

// Bridge makes and removes the node's bridge. Its methods may be called
// from any goroutine.
type Bridge struct {
	cfg  Config
	mark string // file that says the agent made the bridge
	mu   sync.Mutex
	made bool // Ensure succeeded since the process started
}

// NewBridge returns the bridge of cfg; it touches nothing until Ensure.
// stateDir is where it remembers that it made the bridge.
func NewBridge(cfg Config, stateDir string) *Bridge {
	return &Bridge{cfg: cfg, mark: stateDir + "/network-bridge-made"}
}

// Name is the bridge's name.
func (b *Bridge) Name() string { return b.cfg.Bridge }

// Ensure makes the bridge (when missing) with the gateway address, up,
// and the NAT table when configured. Calling it again is cheap.
func (b *Bridge) Ensure(ctx context.Context) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.made && exists(b.cfg.Bridge) {
		return nil
	}
	name := b.cfg.Bridge
	if !exists(name) {
		if err := os.WriteFile(b.mark, []byte(name+"\n"), 0o600); err != nil {
			return fmt.Errorf("corral: remembering that the agent makes bridge %s: %w", name, err)
		}
		if err := ip(ctx, "link", "add", name, "type", "bridge"); err != nil {
			return err
		}
	} else if _, err := os.Stat("/sys/class/net/" + name + "/bridge"); err != nil {
		return fmt.Errorf("%w: %s exists and is not a bridge: give the agent another --bridge", ErrBadConfig, name)
	}
	gw := b.cfg.Gateway().String()
	out, err := exec.CommandContext(ctx, "ip", "-o", "addr", "show", "dev", name).CombinedOutput()
	if err != nil {
		return fmt.Errorf("corral: ip addr show dev %s: %w: %s", name, err, out)
	}
	if !strings.Contains(string(out), " "+gw+" ") {
		if err := ip(ctx, "addr", "add", gw, "dev", name); err != nil {
			return err
		}
	}
	if err := ip(ctx, "link", "set", name, "up"); err != nil {
		return err
	}
	if b.cfg.NAT {
		if err := b.nat(ctx); err != nil {
			return err
		}
	}
	b.made = true
	return nil
}

// nat makes the masquerade table (again, atomically) and turns on IPv4
// forwarding.
func (b *Bridge) nat(ctx context.Context) error {
	t := NATTable(b.cfg.Bridge)
	script := fmt.Sprintf(`table ip %[1]s
delete table ip %[1]s
table ip %[1]s {
	chain postrouting {
		type nat hook postrouting priority srcnat; policy accept;
		ip saddr %[2]s oifname != %[3]q masquerade comment "corral guests on %[3]s"
	}
	chain forward {
		type filter hook forward priority 0; policy accept;
		iifname %[3]q accept
		oifname %[3]q ct state established,related accept
	}
}
`, t, b.cfg.CIDR, b.cfg.Bridge)
	cmd := exec.CommandContext(ctx, "nft", "-f", "-")
	cmd.Stdin = strings.NewReader(script)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("corral: making the NAT table %s: %w: %s", t, err, strings.TrimSpace(string(out)))
	}
	if err := os.WriteFile("/proc/sys/net/ipv4/ip_forward", []byte("1"), 0); err != nil {
		return fmt.Errorf("corral: turning on IPv4 forwarding for NAT: %w", err)
	}
	return nil
}

// Remove deletes the NAT table and, when the agent made it, the bridge.
func (b *Bridge) Remove(ctx context.Context) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	var errs []error
	if b.cfg.NAT {
		t := NATTable(b.cfg.Bridge)
		cmd := exec.CommandContext(ctx, "nft", "-f", "-")
		cmd.Stdin = strings.NewReader(fmt.Sprintf("table ip %[1]s\ndelete table ip %[1]s\n", t))
		if out, err := cmd.CombinedOutput(); err != nil {
			errs = append(errs, fmt.Errorf("corral: removing the NAT table %s: %w: %s", t, err, out))
		}
	}
	if m, err := os.ReadFile(b.mark); err == nil && strings.TrimSpace(string(m)) == b.cfg.Bridge {
		if exists(b.cfg.Bridge) {
			if err := ip(ctx, "link", "del", b.cfg.Bridge); err != nil {
				errs = append(errs, err)
			}
		}
		_ = os.Remove(b.mark)
	}
	b.made = false
	return errors.Join(errs...)
}

func exists(iface string) bool {
	_, err := os.Stat("/sys/class/net/" + iface)
	return err == nil
}

func ip(ctx context.Context, args ...string) error {
	out, err := exec.CommandContext(ctx, "ip", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("corral: ip %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}
