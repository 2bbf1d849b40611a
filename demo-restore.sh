#!/usr/bin/env bash
# nbdkit-fleece
# SPDX-License-Identifier: BSD-3-Clause
#
# The live-restore demo (the stream filter).  Builds the filters if
# they are not built (./check.sh installs packages), then:
#
#   1. makes a 128 MiB disk with data and holes, serves it with
#      snapshot-access + cbw + file and backs it up through the
#      snapshot export (nbdcopy);
#   2. serves the backup read-only (the "backup server") and an EMPTY
#      local image through the stream filter with stream-base pointing
#      at the backup, the job limited to 32M/s;
#   3. a "guest" writes and reads through the restoring disk at once
#      (every read checked against the backup plus its own writes);
#   4. waits for "complete" in status, then checks that the local image
#      equals the backup plus the writes made meanwhile.
#
# It prints PASS or FAIL (exit status 1).  DEMO_SIZE (default 128M).

set -euo pipefail
cd "$(dirname "$0")"
top=$PWD
export PATH="/usr/bin:$PATH"
size=${DEMO_SIZE:-128M}

say () { printf '\n== %s\n' "$*"; }
die () { echo "demo-restore.sh: $*" >&2; echo "FAIL: $*"; exit 1; }
for cmd in nbdkit nbdcopy socat jq /usr/bin/python3; do
  command -v "$cmd" >/dev/null 2>&1 || die "'$cmd' is missing (run ./check.sh)"
done

if [ ! -f filters/stream/.libs/nbdkit-stream-filter.so ]; then
  say "building"
  { [ -x configure ] || autoreconf -fi; } >/dev/null
  [ -f Makefile ] || ./configure >/dev/null
  make -j2 >/dev/null
fi
F=$top/filters
SA=$F/snapshot-access/.libs/nbdkit-snapshot-access-filter.so
CBW=$F/cbw/.libs/nbdkit-cbw-filter.so
STREAM=$F/stream/.libs/nbdkit-stream-filter.so

d=$(mktemp -d "${TMPDIR:-/tmp}/fleece-restore.XXXXXX")
pids=()
cleanup () {
  for p in "${pids[@]+"${pids[@]}"}"; do kill "$p" 2>/dev/null || true; done
  rm -rf "$d"
}
trap cleanup EXIT
serve () {   # serve SOCK ARGS...
  local sock=$1; shift
  nbdkit -f -U "$sock" -P "$sock.pid" "$@" >"$sock.log" 2>&1 &
  pids+=($!)
  for _ in $(seq 100); do [ -S "$sock" ] && [ -s "$sock.pid" ] && return; sleep 0.1; done
  cat "$sock.log" >&2; die "nbdkit $* did not start"
}
ctl () { printf '%s\n' "$2" | socat -t 5 - "UNIX-CONNECT:$1"; }

say "1. a $size disk, backed up live through the snapshot export"
/usr/bin/python3 - "$d/disk.img" "$size" <<'PY'
import random, sys
path, size = sys.argv[1], sys.argv[2]
n = int(size[:-1]) << {"K": 10, "M": 20, "G": 30}[size[-1]]
rng = random.Random(7)
with open(path, "wb") as f:
    f.truncate(n)
    for off in range(0, n, 1 << 20):
        if rng.random() < 0.7:          # 30% holes
            f.seek(off)
            f.write(rng.randbytes(1 << 20))
PY
serve "$d/disk.sock" --filter="$SA" --filter="$CBW" file "$d/disk.img" \
  control="$d/disk.ctl"
ctl "$d/disk.ctl" snapshot-begin | jq -c .
nbdcopy "nbd+unix:///snapshot?socket=$d/disk.sock" "$d/backup.img"
ctl "$d/disk.ctl" snapshot-end | jq -c .
cmp "$d/disk.img" "$d/backup.img" || die "the backup differs from the disk"
echo "backup: $(sha256sum < "$d/backup.img" | cut -c1-16)..."

say "2. the backup served read-only; an empty local disk restores from it"
serve "$d/backup.sock" -r file "$d/backup.img"
truncate -s "$size" "$d/local.img"
serve "$d/local.sock" --filter="$STREAM" file "$d/local.img" \
  stream-base="nbd+unix:///?socket=$d/backup.sock" \
  stream-state="$d/local.state" stream-speed=32M control="$d/local.ctl"
ctl "$d/local.ctl" status | jq -c .stream

say "3. the guest writes and reads while the restore runs"
/usr/bin/python3 - "$d" <<'PY'
import os, random, sys, nbd
d = sys.argv[1]
model = bytearray(open(os.path.join(d, "backup.img"), "rb").read())
h = nbd.NBD()
h.connect_uri("nbd+unix:///?socket=%s/local.sock" % d)
rng = random.Random(11)
n = len(model)
for i in range(600):
    off = rng.randrange(0, n - 70000)
    if rng.random() < 0.5:
        data = rng.randbytes(rng.randint(1, 70000))
        h.pwrite(data, off)
        model[off:off + len(data)] = data
    else:
        k = rng.randint(1, 70000)
        if h.pread(k, off) != bytes(model[off:off + k]):
            sys.exit("read at %d differs from backup + writes" % off)
open(os.path.join(d, "expected.img"), "wb").write(model)
print("600 requests, every read as expected")
PY
ctl "$d/local.ctl" status | jq -c .stream

say "4. waiting for the restore to complete"
for _ in $(seq 600); do
  st=$(ctl "$d/local.ctl" status | jq -r .stream.state)
  [ "$st" = complete ] && break
  sleep 0.1
done
ctl "$d/local.ctl" status | jq -c .stream
[ "$st" = complete ] || die "the restore did not complete"
cmp "$d/local.img" "$d/expected.img" ||
  die "the restored disk is not the backup plus the guest's writes"
echo "local disk = backup + the guest's writes"
echo PASS
