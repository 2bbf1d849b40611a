#!/usr/bin/env bash
# nbdkit-fleece
# SPDX-License-Identifier: BSD-3-Clause
#
# Concurrency stress, checked against a model (see fleece_stress.py):
# 4 writers on the live export sharing clusters but not bytes, 3 snapshot
# readers and a 4-connection nbdcopy of the snapshot, and snapshot-begin/
# snapshot-end cycles while the writers run, alternately with the writers
# paused at snapshot-begin (the snapshot must equal the recorded model)
# and not paused (every 4K block must hold one generation between what
# had completed before snapshot-begin and what had started before its
# reply, no write half in within a cluster).  Three phases: 64K clusters,
# then 1M clusters (many writers wait on one copy), then 64K clusters
# with cbw-buffer=1M in front of an NBD target whose writes take 2 ms
# (nbdkit's delay filter): copies wait in memory, snapshot reads are
# served from the buffer, the buffer fills and writers wait for room.
# About 20 s; FLEECE_STRESS_SECONDS=N runs longer, FLEECE_SEED=N|random
# picks the seed.

source "${abs_top_srcdir:-$(dirname "$0")/..}/tests/functions.sh"
requires nbdcopy nbdinfo python3-nbd

seconds=${FLEECE_STRESS_SECONDS:-15}
seed=${FLEECE_SEED:-4242}
[ "$seed" = random ] && seed=$(( $(date +%s) % 1000000 ))
echo "seed: $seed, duration: $seconds s"

SECONDS=0
phase=0
for cluster in 65536 1048576 buffer; do
  if [ $phase -eq 0 ]; then secs=$(( seconds / 2 )); else secs=$(( seconds / 4 )); fi
  [ $secs -ge 5 ] || secs=5
  disk=$tmpdir/disk$phase.img
  truncate -s 32M "$disk"
  sock=$tmpdir/nbd$phase.sock
  ctl=$tmpdir/ctl$phase.sock
  target=$tmpdir/fleece$phase.img
  extra=()
  if [ $cluster = buffer ]; then
    cluster=65536
    tsock=$tmpdir/target$phase.sock
    start_nbdkit "$tsock" --filter=delay memory 64M delay-write=2ms
    target="nbd+unix:///?socket=$tsock"
    extra=(cbw-buffer=1M)
  fi
  echo "== phase $phase: cbw-cluster-size=$cluster ${extra[*]}, $secs s"
  start_nbdkit "$sock" --filter="$SA" --filter="$CBW" \
    file "$disk" cbw-target="$target" \
    cbw-cluster-size=$cluster control="$ctl" "${extra[@]}"
  timeout $((secs * 3 + 120)) /usr/bin/python3 \
    "$abs_top_srcdir/tests/fleece_stress.py" \
    --live "nbd+unix:///?socket=$sock" \
    --snap "nbd+unix:///snapshot?socket=$sock" \
    --ctl "$ctl" --workdir "$tmpdir" --seed $((seed + phase)) \
    --seconds "$secs" --cluster $cluster ||
    fail "stress run failed (phase $phase, cbw-cluster-size=$cluster, seed $((seed + phase))); see the messages above"
  # nbdkit survived it all.
  nbdinfo --size "nbd+unix:///?socket=$sock" >/dev/null ||
    fail "nbdkit no longer serves after the stress run"
  if [ ${#extra[@]} -gt 0 ]; then
    # The buffer was really used, and filled up at least once.
    st=$(ctl "$ctl" status)
    echo "buffer: $(jq -c .buffer <<<"$st")"
    jq -e '.buffer.size == 1048576 and .buffer.flushed_bytes > 0 and
           .buffer.waits > 0 and .buffer.lost_bytes == 0' <<<"$st" \
      >/dev/null || fail "cbw-buffer was not exercised: $st"
    stop_nbdkit "$tsock"
  fi
  stop_nbdkit "$sock"
  phase=$((phase + 1))
done
echo "stress run took $SECONDS s"
echo "OK"
