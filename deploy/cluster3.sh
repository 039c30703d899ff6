#!/usr/bin/env bash
# Runs a three-server corral cluster on this machine, on loopback, with
# mutual TLS and ACLs like any corral cluster.
#
#   deploy/cluster3.sh start [DIR]   build corral; make the CA and certificates; start
#                                    s1 (bootstrap), bootstrap the ACLs, start s2 and s3 (join)
#   deploy/cluster3.sh env [DIR]     print the exports a client needs: eval "$(deploy/cluster3.sh env)"
#   deploy/cluster3.sh status [DIR]  corral cluster members
#   deploy/cluster3.sh stop [DIR]    SIGTERM all three and wait
#
# Data, logs and credentials go under DIR (default /tmp/corral-cluster3):
# DIR/tls holds the CA (ca.pem, ca-key.pem), the servers' certificates and
# the client certificate client-operator.pem; DIR/acl-token holds the
# management token (0600). start again restarts what is down with the same
# credentials. For an agent, make its certificate with
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
base=${CLUSTER3_PORT_BASE:-14600}
if [ -f "$dir/port-base" ]; then
  # The servers' raft remembers the addresses DIR was started with.
  recorded=$(cat "$dir/port-base")
  if [ -n "${CLUSTER3_PORT_BASE:-}" ] && [ "$CLUSTER3_PORT_BASE" != "$recorded" ]; then
    echo "cluster3: $dir was started with CLUSTER3_PORT_BASE=$recorded, and its servers remember those ports: use it, or another DIR" >&2
    exit 2
  fi
  base=$recorded
fi
case "$base" in
'' | *[!0-9]*)
  echo "cluster3: CLUSTER3_PORT_BASE=$base is not a port number" >&2
  exit 2
  ;;
esac
if [ "$base" -lt 1024 ] || [ "$base" -gt 65500 ]; then
  echo "cluster3: CLUSTER3_PORT_BASE=$base: use 1024 to 65500 (the three servers take BASE to BASE+23)" >&2
  exit 2
fi
root=$(cd "$(dirname "$0")/.." && pwd)
bin="$dir/corral"
tls="$dir/tls"
token_file="$dir/acl-token"

port() { echo $((base + 10 * ($1 - 1) + $2)); } # server-number offset
addrs="127.0.0.1:$(port 1 0),127.0.0.1:$(port 2 0),127.0.0.1:$(port 3 0)"

client_env() {
  echo "export CORRAL_ADDR=$addrs"
  echo "export CORRAL_CACERT=$tls/ca.pem CORRAL_CLIENT_CERT=$tls/client-operator.pem CORRAL_CLIENT_KEY=$tls/client-operator-key.pem"
  echo "export CORRAL_TOKEN=\$(cat $token_file)"
}

# as_client runs the CLI as the operator.
as_client() {
  CORRAL_ADDR=$addrs CORRAL_CACERT="$tls/ca.pem" CORRAL_CLIENT_CERT="$tls/client-operator.pem" \
    CORRAL_CLIENT_KEY="$tls/client-operator-key.pem" CORRAL_TOKEN="$(cat "$token_file" 2>/dev/null || true)" "$bin" "$@"
}

# make_certs makes what is missing: the CA, then each certificate.
make_certs() {
  mkdir -p "$tls"
  [ -f "$tls/ca.pem" ] || "$bin" tls ca create --dir "$tls" >/dev/null
  for id in s1 s2 s3; do
    [ -f "$tls/server-$id.pem" ] || "$bin" tls cert create --server "$id" --dir "$tls" >/dev/null
  done
  [ -f "$tls/client-operator.pem" ] || "$bin" tls cert create --client operator --dir "$tls" >/dev/null
}

running() { [ -f "$dir/$1.pid" ] && kill -0 "$(cat "$dir/$1.pid")" 2>/dev/null; }

start_one() { # id number bootstrap|join
  local id=$1 n=$2 mode=$3
  running "$id" && return 0 # already running: start only what is down
  local routes="nats-route://127.0.0.1:$(port 1 3),nats-route://127.0.0.1:$(port 2 3),nats-route://127.0.0.1:$(port 3 3)"
  local extra=(--bootstrap)
  [ "$mode" = join ] && extra=(--join "127.0.0.1:$(port 1 0)")
  "$bin" server --id "$id" --data-dir "$dir/$id" \
    --http-addr "127.0.0.1:$(port "$n" 0)" --raft-addr "127.0.0.1:$(port "$n" 1)" \
    --nats-port "$(port "$n" 2)" --nats-cluster-port "$(port "$n" 3)" --nats-routes "$routes" \
    --tls-ca "$tls/ca.pem" --tls-cert "$tls/server-$id.pem" --tls-key "$tls/server-$id-key.pem" \
    --tls-ca-key "$tls/ca-key.pem" "${extra[@]}" >"$dir/$id.log" 2>&1 &
  echo $! >"$dir/$id.pid"
}

# wait_ready waits for a server's listener line.
wait_ready() {
  for _ in $(seq 1 300); do
    grep -q '^corral server: api ' "$dir/$1.log" 2>/dev/null && return 0
    if ! running "$1"; then
      echo "cluster3: $1 exited; its log, $dir/$1.log, ends:" >&2
      tail -5 "$dir/$1.log" >&2
      return 1
    fi
    sleep 0.1
  done
  echo "cluster3: $1 was not ready in 30s; see $dir/$1.log" >&2
  return 1
}

# bootstrap_acls makes the management token, once per cluster.
bootstrap_acls() {
  [ -s "$token_file" ] && return 0
  local out secret
  if ! out=$(as_client acl bootstrap -o json 2>&1); then
    echo "cluster3: acl bootstrap: $out" >&2
    echo "cluster3: if this cluster was bootstrapped before, its token in $token_file is lost: stop it and remove $dir to start afresh" >&2
    return 1
  fi
  secret=$(printf '%s\n' "$out" | sed -n 's/.*"secret": *"\([^"]*\)".*/\1/p')
  if [ -z "$secret" ]; then
    echo "cluster3: acl bootstrap printed no secret: $out" >&2
    return 1
  fi
  (umask 077 && printf '%s\n' "$secret" >"$token_file")
}

# wait_members waits until all three servers are voters.
wait_members() {
  for _ in $(seq 1 300); do
    if [ "$(as_client cluster members -o json 2>/dev/null | grep -c '"suffrage": "voter"')" = 3 ]; then
      return 0
    fi
    sleep 0.1
  done
  echo "cluster3: the servers did not form a cluster of three voters in 30s; see $dir/*.log" >&2
  return 1
}

case "$cmd" in
start)
  mkdir -p "$dir"
  chmod 700 "$dir"
  echo "$base" >"$dir/port-base"
  (cd "$root" && go build -o "$bin" ./cmd/corral)
  make_certs
  # --bootstrap is ignored when s1's data dir already holds raft state, so
  # the same command restarts a stopped cluster as it was.
  start_one s1 1 bootstrap
  if [ ! -s "$token_file" ]; then
    # A new cluster: s1 leads alone, and makes the first token before the
    # others join. (A restarted s1 waits for the others to elect a leader.)
    wait_ready s1
    bootstrap_acls
  fi
  start_one s2 2 join
  start_one s3 3 join
  wait_members
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
  for id in s1 s2 s3; do
    [ -f "$dir/$id.pid" ] && kill -TERM "$(cat "$dir/$id.pid")" 2>/dev/null || true
  done
  for id in s1 s2 s3; do
    if [ -f "$dir/$id.pid" ]; then
      pid=$(cat "$dir/$id.pid")
      for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      rm -f "$dir/$id.pid"
    fi
  done
  ;;
*)
  echo "usage: $0 start|env|status|stop [DIR]  (ports from CLUSTER3_PORT_BASE, default 14600)" >&2
  exit 2
  ;;
esac
