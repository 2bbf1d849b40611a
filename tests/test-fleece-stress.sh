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
# reply).  About 20 s; FLEECE_STRESS_SECONDS=N runs longer,
# FLEECE_SEED=N|random picks the seed.

source "${abs_top_srcdir:-$(dirname "$0")/..}/tests/functions.sh"
requires nbdcopy
/usr/bin/python3 -c 'import nbd' 2>/dev/null || {
  echo "SKIP: $0: Python libnbd bindings (python3-libnbd) are missing" >&2
  exit 77
}

seconds=${FLEECE_STRESS_SECONDS:-15}
seed=${FLEECE_SEED:-4242}
[ "$seed" = random ] && seed=$(( $(date +%s) % 1000000 ))
echo "seed: $seed, duration: $seconds s"

disk=$tmpdir/disk.img
truncate -s 32M "$disk"
sock=$tmpdir/nbd.sock
ctl=$tmpdir/ctl.sock
start_nbdkit "$sock" --filter="$SA" --filter="$CBW" \
  file "$disk" cbw-target="$tmpdir/fleece.img" control="$ctl"

SECONDS=0
timeout $((seconds * 3 + 120)) /usr/bin/python3 \
  "$abs_top_srcdir/tests/fleece_stress.py" \
  --live "nbd+unix:///?socket=$sock" \
  --snap "nbd+unix:///snapshot?socket=$sock" \
  --ctl "$ctl" --workdir "$tmpdir" --seed "$seed" --seconds "$seconds" ||
  fail "stress run failed (seed $seed); see the messages above"
echo "stress run took $SECONDS s"

# nbdkit survived it all.
nbdinfo --size "nbd+unix:///?socket=$sock" >/dev/null ||
  fail "nbdkit no longer serves after the stress run"
echo "OK"
