#!/bin/bash
# A/B of edge-node trees on warm memory hits: CPU µs per request of the node process (utime + stime from
# /proc/<pid>/stat over one wrk run, divided by its requests), which moves less than req/s on a shared box, and the
# node's peak RSS (VmHWM) at the end of each round.
# Each round starts every tree in turn (order rotated per round) as the anchor starts the node (the flags of
# bench/edge-anchor.ts, no V8 options unless NODE_V8_FLAGS sets some, pinned to CPU 1) behind an nginx static origin serving the anchor's data set, fetches each
# object twice (WARM_DIRS, "4k 16m" by default: a large object whose second read still found its fill committing
# enters the memory tier on its first measured read), and runs wrk (CPU 0, the anchor's rotate.lua).
#
#   git archive <commit> | tar -x -C /tmp/a && ln -s "$PWD/node_modules" /tmp/a/node_modules   # per tree
#   flock /tmp/edgeshard-bench.lock bench/warm-ab.sh ROUNDS "4k-c64 range-c16" /tmp/a /tmp/b
#
# MEMORY_MAX_OBJECT=0 keeps every object out of the memory tier, so every hit is a disk hit (what shards larger than
# --memory-max-object always get).
# A tree exported from before 3b4cfc5 runs its node through tsx's loader (~35 MiB more RSS, more start-up), so compare
# trees from the same side of it. Knobs: NODE_V8_FLAGS (none), DUR (s per wrk run, 3), DATA (the anchor's data, /tmp/perfanchor/data: run the anchor once first),
# ANCHOR_LIB (../shared/bench/lib). One line per (tree, scenario, round) on stdout and in $OUT (/tmp/warm-ab.tsv).
set -u
ROUNDS=$1; SCENS=$2; shift 2; TREES=("$@")
DATA=${DATA:-/tmp/perfanchor/data}; LIB=${ANCHOR_LIB:-$(cd "$(dirname "$0")/../../shared/bench/lib" && pwd)}
DUR=${DUR:-3}; OUT=${OUT:-/tmp/warm-ab.tsv}
W=$(mktemp -d /tmp/warm-ab-run.XXXX)
cat > "$W/origin.conf" <<CONF
worker_processes 1; pid $W/origin.pid; error_log $W/origin.err; daemon off;
events { worker_connections 1024; }
http { access_log off; server { listen 127.0.0.1:18180; root $DATA; } }
CONF
setsid nginx -c "$W/origin.conf" & OPID=$!
for i in $(seq 50); do curl -s -o /dev/null http://127.0.0.1:18180/ && break; sleep 0.1; done
TCK=$(getconf CLK_TCK)
cpu() { awk '{print $14+$15}' "/proc/$1/stat"; }
scen() { case $1 in 4k-c64) echo "/4k/shard- 64 64 -";; range-c16) echo "/16m/shard- 16 16 bytes=0-65535";; 1m-c16) echo "/1m/shard- 64 16 -";; 1m-c64) echo "/1m/shard- 64 64 -";; 16m-c16) echo "/16m/shard- 16 16 -";; esac; }
for ((r = 1; r <= ROUNDS; r++)); do
  n=${#TREES[@]}
  for ((k = 0; k < n; k++)); do
    t=${TREES[$(( (k + r - 1) % n ))]}
    cache=$(mktemp -d "$W/cache.XXXX")
    ( cd "$t" && exec setsid taskset -c 1 node ${NODE_V8_FLAGS:-} bin/edgeshard.js node --port 18185 --origin http://127.0.0.1:18180 --cache-dir "$cache" --host 127.0.0.1 --memory-cache 1GiB --memory-max-object ${MEMORY_MAX_OBJECT:-16MiB} --path-ttl 604800 --log-level silent --open --key-file "$cache/node-key.json" >/dev/null ) & NPID=$!
    for i in $(seq 100); do curl -sf -o /dev/null http://127.0.0.1:18185/healthz && break; sleep 0.2; done
    # Twice, as the anchor does: the second read finds every object in the memory tier (a fill may still be storing
    # it when its response ends, and a large shard enters the memory tier on its first disk hit).
    for d in ${WARM_DIRS:-4k 16m}; do for f in "$DATA/$d"/*.bin; do u="http://127.0.0.1:18185/$d/$(basename "$f")"; curl -s -o /dev/null "$u"; curl -s -o /dev/null "$u"; done; done
    for s in $SCENS; do
      read -r prefix count conc range <<<"$(scen "$s")"; [[ $range == - ]] && range=
      c0=$(cpu $NPID)
      out=$(env WRK_PREFIX="$prefix" WRK_COUNT="$count" WRK_RANGE="$range" taskset -c 0 wrk -t1 -c"$conc" -d"${DUR}s" --timeout 10s -s "$LIB/rotate.lua" http://127.0.0.1:18185/ 2>&1 | grep WRKRESULT)
      c1=$(cpu $NPID)
      req=$(sed 's/.*requests=\([0-9]*\).*/\1/' <<<"$out"); dus=$(sed 's/.*duration_us=\([0-9]*\).*/\1/' <<<"$out")
      awk -v t="$t" -v s="$s" -v r=$r -v req="$req" -v dus="$dus" -v dc=$((c1 - c0)) -v tck="$TCK" -v load="$(cut -d' ' -f1 /proc/loadavg)" \
        'BEGIN { printf "%s\t%s\tround %d\t%.0f req/s\t%.2f us/req\tload %s\n", t, s, r, req / (dus / 1e6), dc / tck * 1e6 / req, load }' | tee -a "$OUT"
    done
    # Peak RSS over the node's life (warm-up fills and every scenario of this round), as the edge section reports it.
    awk -v t="$t" -v r=$r '/^VmHWM/ { printf "%s\tpeak RSS\tround %d\t%.0f MiB\n", t, r, $2 / 1024 }' "/proc/$NPID/status" | tee -a "$OUT"
    kill $NPID; wait $NPID 2>/dev/null
  done
done
kill $OPID; wait; rm -rf "$W"
