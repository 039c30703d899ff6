package api

import (
	"context"
	"net/url"

	"github.com/corral-dev/corral/cgroupdriver"
	"github.com/corral-dev/corral/events"
)

// SetPartition is the body of POST /v1/partitions (create: the partition
// must not exist) and of POST /v1/partitions/{name} (set: it must). Limits
// are knob=value pairs in a partition's knobs (events.PartitionKnobNames),
// in the units a guest's tuning takes; Unset names knobs to stop managing.
// A set changes only the knobs it names.
type SetPartition struct {
	Name   string            `json:"name"`
	Limits map[string]string `json:"limits,omitempty"`
	Unset  []string          `json:"unset,omitempty"`
	Create bool              `json:"create,omitempty"`
	Reason string            `json:"reason,omitempty"`
}

// Partition is a cluster-wide group as the log holds it: its desired
// limits (canonical values) and, per node, what the node last reported
// it holds on its host.
type Partition struct {
	Name        string            `json:"name"`
	Limits      map[string]string `json:"limits,omitempty"`
	CreateIndex uint64            `json:"create_index"`
	// ModifyIndex is the index of the last partition.set: the version a
	// node reports it applied.
	ModifyIndex uint64                    `json:"modify_index"`
	Nodes       map[string]*PartitionNode `json:"nodes,omitempty"`
}

// PartitionNode is one node's last report of a partition: the limits it
// holds on its host, at which ModifyIndex, and the host's error when it
// refused some.
type PartitionNode struct {
	Index   uint64            `json:"index"`
	Applied map[string]string `json:"applied,omitempty"`
	Error   string            `json:"error,omitempty"`
}

// PartitionView is a partition with the guests created in it, as GET
// /v1/partitions/{name} answers.
type PartitionView struct {
	Partition
	Guests []string `json:"guests"`
}

// DesiredPartition is one partition as every node must hold it: its
// group's settings as the cgroup driver's own type, and the ModifyIndex
// they come from, which the node reports back.
type DesiredPartition struct {
	Name      string                 `json:"name"`
	Index     uint64                 `json:"index"`
	Resources cgroupdriver.Resources `json:"resources"`
}

// CreatePartition creates a partition with its limits.
func (c *Client) CreatePartition(ctx context.Context, p SetPartition) (WriteResult, error) {
	p.Create = true
	return c.writeCmd(ctx, "POST", "/v1/partitions", p)
}

// SetPartition changes the limits of an existing partition.
func (c *Client) SetPartition(ctx context.Context, p SetPartition) (WriteResult, error) {
	if err := events.ValidateID("partition name", p.Name); err != nil {
		return WriteResult{}, err
	}
	return c.writeCmd(ctx, "POST", "/v1/partitions/"+url.PathEscape(p.Name), p)
}

// DeletePartition deletes a partition no guest uses.
func (c *Client) DeletePartition(ctx context.Context, name string) (WriteResult, error) {
	if err := events.ValidateID("partition name", name); err != nil {
		return WriteResult{}, err
	}
	return c.writeCmd(ctx, "DELETE", "/v1/partitions/"+url.PathEscape(name), nil)
}

// Partitions lists the partitions, sorted by name.
func (c *Client) Partitions(ctx context.Context) ([]*PartitionView, error) {
	var out []*PartitionView
	return out, c.do(ctx, "GET", "/v1/partitions", "", nil, &out)
}

// Partition returns one partition with its guests and per-node reports.
func (c *Client) Partition(ctx context.Context, name string) (*PartitionView, error) {
	if err := events.ValidateID("partition name", name); err != nil {
		return nil, err
	}
	var out PartitionView
	return &out, c.do(ctx, "GET", "/v1/partitions/"+url.PathEscape(name), "", nil, &out)
}
