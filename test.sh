#!/usr/bin/env bash
# Runs every test: unit, golden, property and the real-part tests (raft on
# disk, nats-server, the host's cgroups, real processes, containers, QEMU
# under TCG, headless Chromium). Real-host tests need root and writable
# cgroups; without them they skip and say why. As root it first makes the
# test assets (deploy/testassets.sh: Debian packages, a kernel, an
# initramfs and a rootfs; cached, so a second run takes milliseconds);
# CORRAL_NO_ASSETS=1 skips that, and the tests that need them then skip.
set -euo pipefail
cd "$(dirname "$0")"
export PATH=/usr/local/go/bin:$PATH
if [ "$(id -u)" = 0 ] && [ -z "${CORRAL_NO_ASSETS:-}" ]; then
	deploy/testassets.sh all
fi
exec go test -race -count=1 -timeout 30m ./... "$@"
