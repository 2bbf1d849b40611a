#!/usr/bin/env bash
# nbdkit-fleece
# SPDX-License-Identifier: BSD-3-Clause
#
# The fault matrix: every fault x every cbw-on-error policy, recording
# what the guest write returns, what snapshot reads return,
# status .snapshot.broken, what happens once the fault goes away and
# whether the live disk is intact (sha256 of the whole disk against a
# model).  Faults on the fleecing target (an NBD server behind nbdkit's
# error or delay filter, stopped, killed, or too small): EIO on write,
# EIO on read, ENOSPC on write, slow (cbw-timeout=1), hung (SIGSTOP,
# cbw-timeout=1), killed, smaller than the disk; and on the source:
# nbdkit's error filter BELOW cbw fails the copy's read of the old
# data.  fault_matrix.py runs one cell and asserts it against the
# contract; this script prints the matrix as a markdown table and
# compares it with the table in docs/fault-matrix.md.
#
# FLEECE_FAULT_ONLY=FAULT runs the cells of one fault only (no
# comparison with the documented table).

source "${abs_top_srcdir:-$(dirname "$0")/..}/tests/functions.sh"
requires python3-nbd

py=$abs_top_srcdir/tests/fault_matrix.py
doc=$abs_top_srcdir/docs/fault-matrix.md
faults="target-write-eio target-read-eio target-enospc target-slow
        target-hung target-killed source-read-eio target-too-small"
[ -z "${FLEECE_FAULT_ONLY:-}" ] || faults=$FLEECE_FAULT_ONLY
header='| fault | cbw-on-error | guest write | snapshot read | status.broken | fault cleared | live intact |'
rows=$tmpdir/rows
: >"$rows"
n=0
failed=()

# cell FAULT POLICY
cell ()
{
  local fault=$1 policy=$2
  local d=$tmpdir/c$n; n=$((n+1))
  mkdir "$d"
  local sock=$d/nbd.sock ctl=$d/ctl.sock tsock=$d/target.sock
  local trigger=$d/trigger t0=$SECONDS
  local src=(file "$d/disk.img") extra=()

  case $fault in
    target-write-eio|target-enospc)
      local err=EIO
      [ "$fault" = target-write-eio ] || err=ENOSPC
      start_nbdkit "$tsock" --filter=error memory 64M error="$err" \
        error-pwrite-rate=100% error-zero-rate=100% error-trim-rate=100% \
        error-file="$trigger" ;;
    target-read-eio)
      start_nbdkit "$tsock" --filter=error memory 64M error=EIO \
        error-pread-rate=100% error-file="$trigger" ;;
    target-slow)
      start_nbdkit "$tsock" --filter=delay memory 64M wdelay=3
      extra=(cbw-timeout=1) ;;
    target-hung)
      # Stopped with SIGSTOP by fault_matrix.py: it never answers.
      start_nbdkit "$tsock" memory 64M
      extra=(cbw-timeout=1) ;;
    target-killed)
      start_nbdkit "$tsock" memory 64M ;;
    target-too-small)
      start_nbdkit "$tsock" memory 1M ;;
    source-read-eio)
      start_nbdkit "$tsock" memory 64M
      # Below cbw: the copy's read of the old data fails (and, while
      # the trigger exists, every live read too).
      src=(--filter=error file "$d/disk.img" error-pread-rate=100%
           error=EIO error-file="$trigger") ;;
    *) fail "unknown fault $fault" ;;
  esac

  truncate -s 32M "$d/disk.img"
  start_nbdkit "$sock" --filter="$SA" --filter="$CBW" "${src[@]}" \
    control="$ctl" cbw-target="nbd+unix:///?socket=$tsock" \
    cbw-on-error="$policy" "${extra[@]}"
  echo "=== $fault, $policy"
  timeout 120 /usr/bin/python3 "$py" --fault "$fault" --policy "$policy" \
    --sock "$sock" --ctl "$ctl" --disk "$d/disk.img" --log "$sock.log" \
    --trigger "$trigger" --target-pid-file "$tsock.pid" >"$d/out" 2>&1 || {
    cat "$d/out"
    echo "--- errors in $sock.log:"
    grep -i 'error' "$sock.log" | tail -n 20 || true
    if grep -q '^ROW ' "$d/out"; then
      grep '^ROW ' "$d/out" | sed 's/^ROW //' >>"$rows"
    else
      echo "| $fault | $policy | (no result) | | | | |" >>"$rows"
    fi
    failed+=("$fault / $policy: $(grep '^FAIL' "$d/out" | head -n1)")
    [ "$fault" != target-hung ] || kill -CONT "$(cat "$tsock.pid")" || true
    stop_nbdkit "$sock" || true
    [ "$fault" = target-killed ] || stop_nbdkit "$tsock" || true
    return 0
  }
  sed 's/^/    /' "$d/out"
  grep '^ROW ' "$d/out" | sed 's/^ROW //' >>"$rows"
  stop_nbdkit "$sock"
  [ "$fault" = target-killed ] || stop_nbdkit "$tsock"
  rm -rf "$d"
  echo "    ($((SECONDS - t0)) s)"
}

for fault in $faults; do
  for policy in break-guest-write break-snapshot; do
    cell "$fault" "$policy"
  done
done

echo
echo "$header"
echo '|---|---|---|---|---|---|---|'
cat "$rows"
echo

if [ ${#failed[@]} -gt 0 ]; then
  printf '%s\n' "${failed[@]}" >&2
  fail "${#failed[@]} cell(s) of the fault matrix break the contract"
fi

if [ -z "${FLEECE_FAULT_ONLY:-}" ]; then
  # The documented table: the rows between the header line and the
  # first line that is not a table row.
  [ -f "$doc" ] || fail "$doc is missing"
  awk -v h="$header" '
    $0 == h { on = 1; next }
    on && /^\|---/ { next }
    on && /^\|/ { print; next }
    on { exit }' "$doc" >"$tmpdir/expected"
  [ -s "$tmpdir/expected" ] || fail "no matrix table found in $doc"
  if ! diff -u "$tmpdir/expected" "$rows"; then
    fail "the fault matrix differs from the table in docs/fault-matrix.md"
  fi
  echo "matches docs/fault-matrix.md"
fi

echo "OK"
