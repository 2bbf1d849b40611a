#!/usr/bin/env bash
# nbdkit-fleece
# SPDX-License-Identifier: BSD-3-Clause
#
# Several snapshots at once: a seeded model with writers and three named
# snapshots besides the default one, copy-once with 2 and 4 snapshots at
# one point, two versions of a cluster, a full target breaking only the
# snapshot that needed the copy, and bad names.  See named_snapshots.py.

source "${abs_top_srcdir:-$(dirname "$0")/..}/tests/functions.sh"
requires /usr/bin/python3
/usr/bin/python3 -c 'import nbd' 2>/dev/null || {
  echo "SKIP: Python libnbd bindings missing" >&2; exit 77; }

py=$abs_top_srcdir/tests/named_snapshots.py
all=(--filter="$SA" --filter="$CBW" --filter="$DB")
n=0
run ()
{
  local case=$1; shift
  n=$((n + 1))
  local d=$tmpdir/$n sock ctl
  mkdir "$d"
  sock=$d/nbd.sock ctl=$d/ctl.sock
  truncate -s 16M "$d/disk.img"
  start_nbdkit "$sock" "${all[@]}" file "$d/disk.img" control="$ctl" \
    snapshot-discard=true "$@"
  echo "=== $case $*"
  /usr/bin/python3 "$py" --sock "$sock" --ctl "$ctl" \
    ${target:+--target "$target"} "$case" || fail "case $case"
  stop_nbdkit "$sock"
}

target= run model
target= run names
target=$tmpdir/t.fleece run once cbw-target="$tmpdir/t.fleece"
target= run versions
target= run limit-guest cbw-target-limit=256K
target= run limit-snapshot cbw-target-limit=256K cbw-on-error=break-snapshot

# A target exactly the disk's size: no room for a second version.
tsock=$tmpdir/target.sock
start_nbdkit "$tsock" memory 16M
target= run full cbw-on-error=break-snapshot \
  cbw-target="nbd+unix:///?socket=$tsock"
echo "OK"
