#!/bin/bash
# Before/after a change, same machine, alternating: one hand-started stowd per variant
# (issue 11's paths and network), then bench/lifecycle.py and the shared harness's `rate`
# section against it, and bench/opcpu.py (daemon CPU per operation).
#   bench/before_after.sh <before tree> <after tree> [rounds]
# Each tree needs its own .venv (`make venv`); results go to /tmp/h11/results.
set -u
BEFORE=$1 AFTER=$2 ROUNDS=${3:-2}
OUT=${OUT:-/tmp/h11/results}
HERE=$(cd "$(dirname "$0")" && pwd)
SOCK=/tmp/h11/s.sock
mkdir -p $OUT
declare -A TREE=([before]=$BEFORE [after]=$AFTER)

cleanup() {
  if [ -n "${DPID:-}" ]; then kill -TERM $DPID 2>/dev/null; wait $DPID 2>/dev/null; DPID=; fi
  grep " /tmp/h11/data" /proc/self/mountinfo | awk '{print $5}' | sort -r |
    while read -r m; do umount -l "$m" 2>/dev/null; done
  rm -rf /tmp/h11/data /tmp/h11/exec $SOCK
}
trap cleanup EXIT

for round in $(seq 1 "$ROUNDS"); do
  order="before after"; [ $((round % 2)) -eq 0 ] && order="after before"
  for v in $order; do
    tree=${TREE[$v]}
    echo "=== round $round $v $(date +%T)" >&2
    cleanup
    ( cd "$tree" && exec env PYTHONPATH="$tree" "$tree/.venv/bin/python" -m stowd serve \
        --data-root /tmp/h11/data --exec-root /tmp/h11/exec -H unix://$SOCK \
        --cgroup-parent stowd-h11 --bridge sth11 --bridge-subnet 10.250.11.0/24 \
        --chain-prefix STH11 --default-address-pool base=10.111.0.0/16,size=24 \
        --log-level info --seed-busybox ) > "$OUT/daemon-$v-$round.log" 2>&1 &
    DPID=$!
    for _ in $(seq 1 150); do
      curl -s --unix-socket $SOCK http://x/images/json | grep -q busybox && break; sleep 0.2
    done
    ( cd "$tree" && PYTHONPATH="$tree" .venv/bin/python bench/lifecycle.py --host unix://$SOCK \
        --label $v --no-dockerd --no-trace --n-cli 15 --quiet-max-wait 15 \
        --out "$OUT/lc-$v-$round.json" ) > "$OUT/lc-$v-$round.md" 2> "$OUT/lc-$v-$round.err"
    python3 /work/shared/bench/bench.py --host unix://$SOCK --label $v --sections rate \
        --daemon-pids $DPID --quiet-max-wait 15 --out "$OUT/rate-$v-$round.json" \
        > "$OUT/rate-$v-$round.md" 2> "$OUT/rate-$v-$round.err"
    echo "$v $round $(python3 "$HERE/opcpu.py" --socket $SOCK --pid $DPID)" >> "$OUT/opcpu.txt"
    cleanup
  done
done
echo "=== done $(date +%T)" >&2
