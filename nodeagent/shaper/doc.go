// Package shaper shapes and polices the network traffic of guests on one
// host, as libvirt's domiftune does, with nftables and tc's HTB.
//
// It owns one nftables table, inet corral-<node> (named by [TableName], so
// it never collides with another agent's or anyone else's), and the root
// qdisc of every interface it is told to shape (and nothing else: other
// interfaces and tables are never read or written). Outbound, each shaped
// interface gets an HTB root qdisc 1: with a default class 1:ffff at line
// rate and one class 1:N per guest (rate = average, ceil = peak, burst);
// the table's output chain sets a guest's packets' priority to its class
// (meta priority set 1:N), which HTB classifies by without any tc filter,
// so kernels without cls_cgroup or cls_fw (CONFIG_NET_CLS_CGROUP,
// CONFIG_NET_CLS_FW) shape too. Inbound traffic cannot be shaped on the
// receiving side; as libvirt does there it is policed: the input chain
// drops a guest's packets over its average rate beyond its burst, with a
// named limit object per guest that outlives re-application (nft's byte
// limit starts with a bucket of one second at the rate plus the burst, so
// a policer made afresh on every resync would let that through each time).
//
// A guest's packets are recognised by its cgroup: on cgroup v1 its
// net_cls classid (nft meta cgroup), on cgroup v2 its group (nft socket
// cgroupv2 level N "PATH", the path relative to /sys/fs/cgroup as nft
// resolves it).
//
// Decide, then do: [Decide] is a pure function from the shaped guests and
// what the interfaces hold now to an nft script and tc command lines;
// [Shaper] runs them through an injectable [Runner] (nft -f -, tc).
// Applying the same guests again changes nothing; [Shaper.Remove] takes
// away everything the shaper made.
//
// Dependency rule: this package imports nothing of corral's; the agent
// (package nodeagent) owns and drives it. It must never import
// coordinator/..., cgroupdriver, events or cmd.
package shaper
