#!/usr/bin/env bash
# Runs a three-server corral cluster on this machine, on loopback.
#
#   deploy/cluster3.sh start [DIR]   build corral, start s1 (bootstrap), s2 and s3 (join)
#   deploy/cluster3.sh status [DIR]  corral cluster members
#   deploy/cluster3.sh stop [DIR]    SIGTERM all three and wait
#
# Ports: HTTP 4646/4656/4666, raft 4647/4657/4667, NATS 4222/4232/4242 with
# NATS cluster routes on 6222/6232/6242. Data and logs go under DIR
# (default /tmp/corral-cluster3). Use CORRAL_ADDR=127.0.0.1:4646,127.0.0.1:4656,127.0.0.1:4666
# so the CLI fails over between servers.
set -euo pipefail
cmd=${1:-start}
dir=${2:-/tmp/corral-cluster3}
root=$(cd "$(dirname "$0")/.." && pwd)
bin="$dir/corral"
addrs=127.0.0.1:4646,127.0.0.1:4656,127.0.0.1:4666

start_one() { # id http raft nats route bootstrap|join
  local id=$1 http=$2 raft=$3 nats=$4 route=$5 mode=$6
  if [ -f "$dir/$id.pid" ] && kill -0 "$(cat "$dir/$id.pid")" 2>/dev/null; then
    return 0 # already running: start only what is down
  fi
  local routes=nats-route://127.0.0.1:6222,nats-route://127.0.0.1:6232,nats-route://127.0.0.1:6242
  local extra=(--bootstrap)
  [ "$mode" = join ] && extra=(--join 127.0.0.1:4646)
  "$bin" server --id "$id" --data-dir "$dir/$id" --http-addr "127.0.0.1:$http" --raft-addr "127.0.0.1:$raft" \
    --nats-port "$nats" --nats-cluster-port "$route" --nats-routes "$routes" "${extra[@]}" \
    >"$dir/$id.log" 2>&1 &
  echo $! >"$dir/$id.pid"
}

wait_members() {
  for _ in $(seq 1 200); do
    if [ "$(CORRAL_ADDR=$addrs "$bin" cluster members -o json 2>/dev/null | grep -c '"id"')" = 3 ]; then
      return 0
    fi
    sleep 0.1
  done
  echo "cluster3: the servers did not form a cluster; see $dir/*.log" >&2
  return 1
}

case "$cmd" in
start)
  mkdir -p "$dir"
  (cd "$root" && go build -o "$bin" ./cmd/corral)
  # --bootstrap is ignored when s1's data dir already holds raft state, so
  # the same command restarts a stopped cluster as it was.
  start_one s1 4646 4647 4222 6222 bootstrap
  start_one s2 4656 4657 4232 6232 join
  start_one s3 4666 4667 4242 6242 join
  wait_members
  CORRAL_ADDR=$addrs "$bin" cluster members
  echo "export CORRAL_ADDR=$addrs"
  ;;
status)
  CORRAL_ADDR=$addrs "$bin" cluster members
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
  echo "usage: $0 start|status|stop [DIR]" >&2
  exit 2
  ;;
esac
