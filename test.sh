#!/usr/bin/env bash
# Runs every test: unit, golden, property and the real-part tests (raft on
# disk, nats-server, the host's cgroups, real processes). Real-host tests
# need root and writable cgroups; without them they skip and say why.
set -euo pipefail
cd "$(dirname "$0")"
export PATH=/usr/local/go/bin:$PATH
exec go test -race -count=1 -timeout 30m ./... "$@"
