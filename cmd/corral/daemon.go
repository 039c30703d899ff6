package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/corral-dev/corral/coordinator"
)

// logLevelFlag adds --log-level to a daemon command.
func logLevelFlag(cmd *cobra.Command, level *string) {
	cmd.Flags().StringVar(level, "log-level", "info", "log level on stderr: debug, info, warn or error")
}

// newLogger returns a text logger on w at the named level.
func newLogger(w io.Writer, level string) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, usagef("log level %q is not known: use debug, info, warn or error", level)
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: l})), nil
}

// serve runs one coordinator server until ctx ends (Ctrl-C, SIGTERM) and
// then closes it. Once the server is ready it prints one line naming its
// listeners to stdout, for people and for scripts that wait for it:
//
//	corral dev: api http://127.0.0.1:4646 nats nats://127.0.0.1:4222 raft 127.0.0.1:4647 data /root/.local/share/corral/dev
//
// The data directory comes last so that a path with spaces stays whole.
// startAgentFunc starts the local node agent of corral dev once the server
// is ready.
type startAgentFunc func(ctx context.Context, s *coordinator.Server) (*agentRun, <-chan error, error)

func (a *app) serve(ctx context.Context, name string, cfg coordinator.Config, startAgent startAgentFunc, onReady ...func(context.Context, *coordinator.Server) error) error {
	log := cfg.Logger
	if cfg.DataDir != "" {
		// Print and log the directory as it will be found again.
		dir, err := filepath.Abs(cfg.DataDir)
		if err != nil {
			return fmt.Errorf("data dir %q: %w", cfg.DataDir, err)
		}
		cfg.DataDir = dir
	}
	s, err := coordinator.New(cfg, coordinator.Deps{})
	if err != nil {
		return err
	}
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	log.Info("starting", "api", s.HTTPAddr(), "raft", s.RaftAddr(), "nats", s.NATSURL(), "data", cfg.DataDir)
	select {
	case <-s.Ready():
	case err := <-done:
		return err
	}
	for _, f := range onReady {
		if err := f(ctx, s); err != nil {
			s.Close()
			<-done
			return err
		}
	}
	scheme := "http://"
	if cfg.TLS != nil {
		scheme = "https://"
	}
	fields := []string{"api", scheme + s.HTTPAddr(), "nats", s.NATSURL()}
	if u := s.NATSClusterURL(); u != "" {
		fields = append(fields, "nats-cluster", u)
	}
	var agentDone <-chan error
	if startAgent != nil {
		actx, cancel := context.WithCancel(ctx)
		defer cancel()
		run, d, err := startAgent(actx, s)
		if err != nil {
			s.Close()
			<-done
			return fmt.Errorf("node agent: %w", err)
		}
		agentDone = d
		defer run.close()
		select {
		case <-run.agent.Ready():
			fields = append(fields, "node", run.agent.Registration().ID)
			if m := run.metricsAddr(); m != "" {
				fields = append(fields, "agent-metrics", "http://"+m+"/metrics")
			}
		case err := <-d:
			s.Close()
			<-done
			return fmt.Errorf("node agent: %w", err)
		}
	}
	fields = append(fields, "raft", s.RaftAddr(), "data", cfg.DataDir)
	fmt.Fprintf(a.stdout, "%s: %s\n", name, strings.Join(fields, " "))
	if name == "corral dev" {
		a.printDevClientHint(cfg.DataDir, scheme+s.HTTPAddr())
	}
	log.Info("ready", "leader", s.IsLeader())

	select {
	case err = <-done:
	case <-ctx.Done():
		// A stop was asked for. hashicorp/raft's pipelined replication can
		// hang its shutdown when a follower's connection broke mid-stream;
		// nothing is lost by exiting then (the raft log is on disk, the
		// event store is rebuilt from it), so a stop never hangs.
		select {
		case err = <-done:
		case <-time.After(shutdownGrace):
			err = fmt.Errorf("shutdown did not finish within %v (raft replication is stuck); exiting anyway: the raft log is on disk and the event store is rebuilt from it at the next start", shutdownGrace)
		}
	case err = <-agentDone:
		if err != nil && !errors.Is(err, context.Canceled) {
			log.Error("node agent stopped", "err", err)
		}
		s.Close()
		err = <-done
	}
	log.Info("stopped", "err", err)
	return err
}

// shutdownGrace bounds a daemon's clean stop.
const shutdownGrace = 10 * time.Second
