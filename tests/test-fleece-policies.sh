#!/usr/bin/env bash
# nbdkit-fleece
# SPDX-License-Identifier: BSD-3-Clause
#
# cbw-on-error and cbw-timeout with a failing fleecing target (an NBD
# server behind nbdkit's error or delay filter, a target that is too
# small, a target server that is killed or stops answering), each
# under break-guest-write and break-snapshot.  See fleece_policies.py
# for what each case asserts; the live disk must always equal the model
# of completed writes.

source "${abs_top_srcdir:-$(dirname "$0")/..}/tests/functions.sh"
requires /usr/bin/python3
/usr/bin/python3 -c 'import nbd' 2>/dev/null || {
  echo "SKIP: Python libnbd bindings missing" >&2; exit 77; }

py=$abs_top_srcdir/tests/fleece_policies.py
n=0

# run CASE POLICY [EXTRA-FLEECE-ARGS...]
run ()
{
  local case=$1 policy=$2; shift 2
  local d=$tmpdir/c$n; n=$((n+1))
  mkdir "$d"
  local sock=$d/nbd.sock ctl=$d/ctl.sock tsock=$d/target.sock
  local t0=$SECONDS

  case $case in
    eio|enospc)
      # Errors on every write, zero and trim while $d/trigger exists.
      local err=EIO
      [ "$case" = eio ] || err=ENOSPC
      start_nbdkit "$tsock" --filter=error memory 64M error="$err" \
        error-pwrite-rate=100% error-zero-rate=100% error-trim-rate=100% \
        error-file="$d/trigger" ;;
    timeout)
      start_nbdkit "$tsock" --filter=delay memory 64M wdelay=3 ;;
    kill|hang)
      start_nbdkit "$tsock" memory 64M ;;
    full)
      start_nbdkit "$tsock" memory 1M ;;
  esac

  truncate -s 64M "$d/disk.img"
  local fleece=(--filter="$SA" --filter="$CBW" file "$d/disk.img"
                control="$ctl" cbw-target="nbd+unix:///?socket=$tsock"
                cbw-on-error="$policy" "$@")
  echo "=== $case $policy $*"

  if [ "$case" = full ] &&
     ! timeout 20 nbdkit -U - "${fleece[@]}" --run true >"$d/start.log" 2>&1
  then
    # Refused at start-up: fine if the error says why.
    cat "$d/start.log"
    grep -Eqi 'cbw-target.*(small|size|space)' "$d/start.log" ||
      fail "a 1M target was refused at start-up without a clear error"
    rm -rf "$d"
    return 0
  fi

  start_nbdkit "$sock" "${fleece[@]}"
  timeout 120 /usr/bin/python3 "$py" --case "$case" --policy "$policy" \
    --sock "$sock" --ctl "$ctl" --log "$sock.log" --trigger "$d/trigger" \
    --target-pid-file "$tsock.pid" ||
    { [ "$case" != hang ] || kill -CONT "$(cat "$tsock.pid")";
      fail "case $case, $policy (log: $sock.log)"; }
  stop_nbdkit "$sock"
  if [ "$case" != kill ]; then stop_nbdkit "$tsock"; fi
  rm -rf "$d"
  echo "    ($((SECONDS - t0)) s)"
}

for policy in break-guest-write break-snapshot; do
  run eio "$policy"
  run enospc "$policy"
  run timeout "$policy" cbw-timeout=1
  run hang "$policy" cbw-timeout=1
  run kill "$policy"
  run full "$policy"
done

echo "OK"
