#!/usr/bin/env bash
# nbdkit-fleece
# SPDX-License-Identifier: BSD-3-Clause
#
# Instructions per steady-state write of the dirty-bitmap filter,
# bitmap-sync=write-ahead against clean-stop, counted with callgrind
# (repeatable whatever else the machine is doing, unlike timings).
#
# For each mode: nbdkit (file plugin, dirty-bitmap with a bitmap file
# and one checkpoint) under callgrind; one client writes 4 KiB into
# every 64K granule (the first touches), then N more 4 KiB writes at
# seeded random offsets (every granule already marked: steady state).
# The run with N=0 is subtracted, so the figure is nbdkit's user-space
# instructions per steady-state write (all threads).
#
#   bench/count-writeahead.sh [N]     (default 20000; about 2 minutes)

set -euo pipefail
export PATH="/usr/bin:$PATH"
top=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=lib.sh
. "$top/bench/lib.sh"           # sock_listening
DB=$top/filters/dirty-bitmap/.libs/nbdkit-dirty-bitmap-filter.so
n=${1:-20000}
for cmd in valgrind nbdkit socat /usr/bin/python3; do
  command -v "$cmd" >/dev/null || { echo "$0: $cmd is needed" >&2; exit 1; }
done
[ -f "$DB" ] || { echo "$0: build the tree first ($DB)" >&2; exit 1; }

tmp=$(mktemp -d)
pid=
cleanup () { [ -n "$pid" ] && kill "$pid" 2>/dev/null; rm -rf "$tmp"; }
trap cleanup EXIT

# count MODE WRITES: total instructions of nbdkit.
count ()
{
  local d=$tmp/$1-$2
  mkdir -p "$d"
  truncate -s 256M "$d/disk"
  valgrind --tool=callgrind --callgrind-out-file="$d/cg.out" \
    nbdkit -f -U "$d/sock" --filter="$DB" file "$d/disk" \
    bitmap-file="$d/bm" bitmap-sync="$1" control="$d/ctl" 2>"$d/vg.log" &
  pid=$!
  for _ in $(seq 600); do
    sock_listening "$d/sock" && sock_listening "$d/ctl" && break
    sleep 0.1
  done
  echo 'checkpoint-create c1' | socat - "UNIX-CONNECT:$d/ctl" |
    grep -q '"ok":true' || { echo "$0: checkpoint-create failed" >&2; exit 1; }
  /usr/bin/python3 - "$d/sock" "$2" <<'PY'
import nbd, random, sys
h = nbd.NBD()
h.connect_unix(sys.argv[1])
buf = b"x" * 4096
size = h.get_size()
for off in range(0, size, 65536):
    h.pwrite(buf, off)
random.seed(1)
for _ in range(int(sys.argv[2])):
    h.pwrite(buf, random.randrange(size // 4096) * 4096)
h.shutdown()
PY
  kill "$pid"
  wait "$pid" || true
  pid=
  awk '/^summary:/ { print $2 }' "$d/cg.out"
}

for mode in write-ahead clean-stop; do
  a=$(count "$mode" 0)
  b=$(count "$mode" "$n")
  echo "$mode: $(( (b - a) / n )) instructions per steady-state write ($a -> $b over $n writes)"
done
