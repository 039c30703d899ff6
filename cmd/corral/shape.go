package main

import (
	"context"
	"log/slog"

	"github.com/corral-dev/corral/nodeagent"
	"github.com/corral-dev/corral/nodeagent/shaper"
)

// newShaper returns the agent's shaper for --shape-interface: the
// interfaces it shapes, or why the host cannot (no nft or tc), which the
// node's registration carries so that domiftune is refused up front.
func newShaper(ctx context.Context, o agentOptions, log *slog.Logger) ([]string, string, nodeagent.Shaper) {
	if len(o.shape) == 0 {
		return nil, "", nil
	}
	run := shaper.ExecRunner{}
	caps, err := shaper.Probe(ctx, run)
	if err != nil {
		log.Warn("not shaping guests' traffic", "interfaces", o.shape, "err", err)
		return nil, err.Error(), nil
	}
	table := shaper.TableName(o.nodeID)
	log.Info("shaping guests' traffic", "interfaces", o.shape, "table", "inet "+table, "classifier", caps.Classifier())
	return o.shape, "", shaper.New(shaper.Config{Table: table, Interfaces: o.shape}, run)
}
