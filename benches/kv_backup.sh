#!/bin/sh
# Backup and restore of the kv service as three processes (issue 25's
# goal): load KEYS fresh keys of ~100 bytes (default 1,000,000), take a
# backup from node 2 with `regatta backup` while measuring the memory it
# adds to that process, destroy the cluster, then found a new one of
# three processes from the file and time until each answers a
# linearizable read.
#
#   sh benches/kv_backup.sh [KEYS]
#
# Data goes under $TMPDIR (else /tmp) and is removed at the end. Needs
# Linux (/proc for the memory numbers).
set -eu
KEYS=${1:-1000000}
cd "$(dirname "$0")/.."
cargo build -q --release --example kv --bin regatta --features cli
KV=target/release/examples/kv
REGATTA=target/release/regatta
WORK=$(mktemp -d)
PIDS=""
cleanup() {
    for p in $PIDS; do kill -9 "$p" 2>/dev/null || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT INT TERM

now() { date +%s.%N; }
elapsed() { awk "BEGIN { printf \"%.2f\", $2 - $1 }"; }
kib() { grep "^$2:" "/proc/$1/status" | awk '{print $2}'; }

# start PREFIX ID EXTRA...: one kv process, its pid appended to PIDS.
start() {
    prefix=$1 id=$2
    shift 2
    members="1=127.0.0.1:19101;api=127.0.0.1:19201,2=127.0.0.1:19102;api=127.0.0.1:19202,3=127.0.0.1:19103;api=127.0.0.1:19203"
    "$KV" serve --id "$id" --data-dir "$WORK/$prefix-$id" \
        --raft-addr "127.0.0.1:1910$id" --http-addr "127.0.0.1:1920$id" \
        --initial-cluster "$members" --log warn "$@" \
        >"$WORK/$prefix-$id.log" 2>&1 &
    PIDS="$PIDS $!"
    eval "PID_$id=$!"
}

# read_ok ID: node ID answers a linearizable read of key k0.
read_ok() {
    "$REGATTA" bench --endpoints "127.0.0.1:1920$1" --method GET --path /kv/k0 \
        --clients 1 --seconds 1 --requests 1 >/dev/null 2>&1
}

wait_serving() {
    for id in 1 2 3; do
        until read_ok "$id"; do sleep 0.05; done
    done
}

for id in 1 2 3; do start old "$id"; done
until "$REGATTA" status --endpoint 127.0.0.1:19201 2>/dev/null | grep -q "^leader:"; do sleep 0.1; done
VALUE=$(printf 'v%.0s' $(seq 1 88))
echo "loading $KEYS keys..."
"$REGATTA" bench --endpoints 127.0.0.1:19201,127.0.0.1:19202,127.0.0.1:19203 \
    --method PUT --path '/kv/k{n}' --body "{\"value\":\"$VALUE\"}" \
    --clients 64 --seconds 3600 --requests "$KEYS" 2>/dev/null
"$REGATTA" status --endpoint 127.0.0.1:19202 | tail -1

echo 5 >"/proc/$PID_2/clear_refs"
before=$(kib "$PID_2" VmRSS)
"$REGATTA" backup --endpoint 127.0.0.1:19202 --out "$WORK/kv.backup"
peak=$(kib "$PID_2" VmHWM)
echo "memory the backup added to node 2: $(( (peak - before) / 1024 )) MiB (resident $(( before / 1024 )) MiB before)"

for p in $PIDS; do kill -9 "$p"; done
PIDS=""
rm -rf "$WORK"/old-*

t0=$(now)
for id in 1 2 3; do start new "$id" --restore-from "$WORK/kv.backup"; done
wait_serving
t1=$(now)
echo "restore: 3 new processes serving a linearizable read after $(elapsed "$t0" "$t1") s"
