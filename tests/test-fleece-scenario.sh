#!/usr/bin/env bash
# nbdkit-fleece
# SPDX-License-Identifier: BSD-3-Clause
#
# Live fleecing end to end: known data, snapshot-begin, writes / zeroes /
# trims through the live export (whole clusters, partial clusters on both
# sides of a boundary, adjacent clusters, one write over many clusters,
# rewrites of copied clusters), then the snapshot export still reads the
# original 64 MiB (libnbd, nbdcopy with several connections, qemu-img
# compare), the live export the new data; status counts the copies;
# after snapshot-end the disk holds the new data and the snapshot is
# gone.  See fleece_scenario.py.
#
# Matrix: target {temporary, file, NBD server} x cluster {4K, 64K, 1M}
# with the file plugin, plus the nbd plugin (over an nbdkit memory
# server) with 64K clusters and an NBD target.

source "${abs_top_srcdir:-$(dirname "$0")/..}/tests/functions.sh"
requires nbdcopy qemu-img python3-nbd

py=$abs_top_srcdir/tests/fleece_scenario.py
n=0

# run SOURCE TARGET CLUSTER
#   SOURCE: file | nbd;  TARGET: temp | file | nbd;  CLUSTER: bytes.
run ()
{
  local source=$1 target=$2 cluster=$3
  local d=$tmpdir/c$n; n=$((n+1))
  mkdir "$d"
  local sock=$d/nbd.sock ctl=$d/ctl.sock
  local src_args=() tgt_args=() pyargs=()
  local t0=$SECONDS

  case $source in
    file)
      truncate -s 64M "$d/disk.img"
      src_args=(file "$d/disk.img")
      pyargs+=(--source-file "$d/disk.img") ;;
    nbd)
      start_nbdkit "$d/backend.sock" memory 64M
      src_args=(nbd socket="$d/backend.sock")
      pyargs+=(--backend-sock "$d/backend.sock") ;;
  esac
  case $target in
    temp) ;;
    file)
      tgt_args=(cbw-target="$d/fleece.img")
      pyargs+=(--target-file "$d/fleece.img") ;;
    nbd)
      start_nbdkit "$d/target.sock" memory 64M
      tgt_args=(cbw-target="nbd+unix:///?socket=$d/target.sock")
      pyargs+=(--target-sock "$d/target.sock") ;;
  esac

  start_nbdkit "$sock" --filter="$SA" --filter="$CBW" "${src_args[@]}" \
    control="$ctl" cbw-cluster-size="$cluster" "${tgt_args[@]}"
  echo "=== source=$source target=$target cluster=$cluster"
  timeout 120 /usr/bin/python3 "$py" --sock "$sock" --ctl "$ctl" \
    --cluster "$cluster" --tmpdir "$d" "${pyargs[@]}" ||
    fail "source=$source target=$target cluster=$cluster (log: $sock.log)"
  stop_nbdkit "$sock"
  [ "$target" != nbd ] || stop_nbdkit "$d/target.sock"
  [ "$source" != nbd ] || stop_nbdkit "$d/backend.sock"
  rm -rf "$d"
  echo "    ($((SECONDS - t0)) s)"
}

for target in temp file nbd; do
  for cluster in 4096 65536 1048576; do
    run file $target $cluster
  done
done
run nbd nbd 65536

echo "OK"
