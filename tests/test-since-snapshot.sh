#!/usr/bin/env bash
# nbdkit-fleece
# SPDX-License-Identifier: BSD-3-Clause
#
# snapshot-begin since=c1 against a full snapshot with the same writes on
# two servers: the since= snapshot preserves only the clusters changed
# since c1 (clusters_preserved), copies fewer clusters (clusters_copied,
# exactly the preserved ones later writes touched), refuses reads of
# unpreserved clusters, and its delta view snapshot/since/c1 applied to
# the c1 full backup equals the disk at the snapshot point.  cbw clusters
# of 64K (= granularity), 16K and 256K.  See incr_since.py.

source "${abs_top_srcdir:-$(dirname "$0")/..}/tests/functions.sh"
requires nbdcopy nbdinfo python3-nbd

for cluster in 65536 16384 262144; do
  d=$tmpdir/c$cluster
  mkdir "$d"
  for s in a b; do
    truncate -s 64M "$d/disk-$s.img"
    start_nbdkit "$d/$s.sock" --filter="$SA" --filter="$CBW" --filter="$DB" \
      file "$d/disk-$s.img" control="$d/$s.ctl" cbw-cluster-size=$cluster
  done
  echo "=== cbw-cluster-size=$cluster"
  /usr/bin/python3 "$abs_top_srcdir/tests/incr_since.py" \
    --sock-a "$d/a.sock" --ctl-a "$d/a.ctl" --log-a "$d/a.sock.log" \
    --sock-b "$d/b.sock" --ctl-b "$d/b.ctl" --cluster $cluster \
    --tmpdir "$d" ||
    fail "cbw-cluster-size=$cluster (logs: $d/a.sock.log $d/b.sock.log)"
  stop_nbdkit "$d/a.sock"
  stop_nbdkit "$d/b.sock"
  rm -rf "$d"
done

echo "OK"
