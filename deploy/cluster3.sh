#!/usr/bin/env bash
# Runs a three-server corral cluster on this machine, on loopback, with
# mutual TLS and ACLs like any corral cluster: corral dev --servers 3 in the
# background, without a node agent.
#
#   deploy/cluster3.sh start [DIR]   build corral; start the three servers (first
#                                    start: make the CA, certificates and token)
#   deploy/cluster3.sh env [DIR]     print the exports a client needs: eval "$(deploy/cluster3.sh env)"
#   deploy/cluster3.sh status [DIR]  corral cluster members
#   deploy/cluster3.sh stop [DIR]    SIGTERM the servers and wait
#
# Data, logs and credentials go under DIR (default /tmp/corral-cluster3),
# laid out as corral dev --servers 3 keeps them: DIR/s1, s2, s3 the
# servers' data; DIR/tls the CA (ca.pem, ca-key.pem), the servers'
# certificates and the client certificate client-dev.pem; DIR/acl-token the
# management token (0600); DIR/dev.log the log. For an agent, make its
# certificate with
#   corral tls cert create --node n1 --dir DIR/tls
# or give it a join token (corral acl join-token create --node n1): the
# servers hold the CA's key to sign it.
#
# Ports: server N (1-3) listens on BASE+10*(N-1) + 0 (HTTP), 1 (raft),
# 2 (NATS) and 3 (NATS cluster routes), BASE being $CLUSTER3_PORT_BASE,
# default 14600: clear of corral dev's 4646 and NATS' 4222 and 6222. The
# base a DIR was started with is kept in DIR/port-base and used after.
set -euo pipefail
cmd=${1:-start}
dir=${2:-/tmp/corral-cluster3}
root=$(cd "$(dirname "$0")/.." && pwd)
bin="$dir/corral"
tls="$dir/tls"
token_file="$dir/acl-token"

# base is the port base DIR was started with, else the one asked for.
base=${CLUSTER3_PORT_BASE:-14600}
[ -f "$dir/port-base" ] && [ -z "${CLUSTER3_PORT_BASE:-}" ] && base=$(cat "$dir/port-base")
addrs="127.0.0.1:$base,127.0.0.1:$((base + 10)),127.0.0.1:$((base + 20))"

client_env() {
  echo "export CORRAL_ADDR=$addrs"
  echo "export CORRAL_CACERT=$tls/ca.pem CORRAL_CLIENT_CERT=$tls/client-dev.pem CORRAL_CLIENT_KEY=$tls/client-dev-key.pem"
  echo "export CORRAL_TOKEN=\$(cat $token_file)"
}

as_client() {
  CORRAL_ADDR=$addrs CORRAL_CACERT="$tls/ca.pem" CORRAL_CLIENT_CERT="$tls/client-dev.pem" \
    CORRAL_CLIENT_KEY="$tls/client-dev-key.pem" CORRAL_TOKEN="$(cat "$token_file" 2>/dev/null || true)" "$bin" "$@"
}

running() { [ -f "$dir/dev.pid" ] && kill -0 "$(cat "$dir/dev.pid")" 2>/dev/null; }

case "$cmd" in
start)
  if running; then
    as_client cluster members
    exit 0
  fi
  mkdir -p "$dir"
  chmod 700 "$dir"
  (cd "$root" && go build -o "$bin" ./cmd/corral)
  # corral dev refuses a --port-base other than the one DIR was started with.
  "$bin" dev --servers 3 --no-agent --port-base "$base" --data-dir "$dir" >"$dir/dev.out" 2>"$dir/dev.log" &
  echo $! >"$dir/dev.pid"
  for _ in $(seq 1 600); do
    grep -q '^corral dev: servers 3 ' "$dir/dev.out" 2>/dev/null && break
    if ! running; then
      echo "cluster3: corral dev --servers 3 exited; it said:" >&2
      tail -5 "$dir/dev.log" >&2
      exit 1
    fi
    sleep 0.1
  done
  if ! grep -q '^corral dev: servers 3 ' "$dir/dev.out"; then
    echo "cluster3: the servers were not ready in 60s; see $dir/dev.log" >&2
    exit 1
  fi
  as_client cluster members
  echo
  echo "# a client of this cluster needs:"
  client_env
  ;;
env)
  client_env
  ;;
status)
  as_client cluster members
  ;;
stop)
  if [ -f "$dir/dev.pid" ]; then
    pid=$(cat "$dir/dev.pid")
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 300); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    rm -f "$dir/dev.pid"
  fi
  ;;
*)
  echo "usage: $0 start|env|status|stop [DIR]  (ports from CLUSTER3_PORT_BASE, default 14600)" >&2
  exit 2
  ;;
esac
