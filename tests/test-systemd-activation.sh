#!/usr/bin/env bash
# nbdkit-fleece
# SPDX-License-Identifier: BSD-3-Clause
#
# The shipped systemd units (contrib/systemd): both parse
# (systemd-analyze verify), and the service's own ExecStart, run with
# socket activation the way systemd runs it (systemd-socket-activate on
# the socket unit's ListenStream path), serves a full backup that
# equals the disk.  Then the server is stopped and started again on the
# same socket path: the second start works (the socket left behind is
# replaced, as systemd does), the checkpoint survived, and the delta
# view since it is exactly what was written; and once more after
# kill -9.

source "${abs_top_srcdir:-$(dirname "$0")/..}/tests/functions.sh"
requires systemd-socket-activate nbdinfo nbdcopy nbdsh socat jq sha256sum

service=$abs_top_builddir/contrib/systemd/nbdkit-fleece@.service
socket_unit=$abs_top_srcdir/contrib/systemd/nbdkit-fleece@.socket
[ -f "$service" ] || fail "$service was not built"
[ -f "$socket_unit" ] || fail "$socket_unit is missing"
inst=test
run=$tmpdir/run                 # stands for %t (/run)

# Both units parse, with no warning, as instance $inst.
if command -v systemd-analyze >/dev/null 2>&1; then
  mkdir "$tmpdir/units"
  cp "$service" "$socket_unit" "$tmpdir/units/"
  if ! out=$(systemd-analyze verify --man=no \
               "$tmpdir/units/nbdkit-fleece@$inst.service" \
               "$tmpdir/units/nbdkit-fleece@$inst.socket" 2>&1) ||
     [ -n "$out" ]; then
    fail "systemd-analyze verify: $out"
  fi
  echo "systemd-analyze verify: clean"
fi

# The instance's EnvironmentFile, as an administrator writes it.
disk=$tmpdir/disk.img
conf=$tmpdir/$inst.conf
cat > "$conf" <<CONF
# for nbdkit-fleece@$inst
DISK=$disk
CBW_TARGET=$tmpdir/fleece.img
BITMAP_FILE=$tmpdir/disk.bitmaps
EXTRA_ARGS=cbw-cluster-size=64K bitmap-granularity=64K
CONF

# KEY= of a unit, continuation lines joined, split into words, with the
# specifiers %i %t %% and the environment file's \${NAME} (within a
# word) and \$NAME (a word, split at spaces) expanded as systemd does.
# Prints the words NUL-terminated.
unit_words ()
{
  /usr/bin/python3 - "$1" "$2" "$inst" "$run" "$conf" <<'PY'
import re, sys
unit, key, inst, rt, conf = sys.argv[1:6]
env = {}
for line in open(conf):
    line = line.strip()
    if line and not line.startswith("#"):
        k, v = line.split("=", 1)
        env[k] = v
text = open(unit).read().replace("\\\n", " ")
values = [l.split("=", 1)[1] for l in text.splitlines()
          if l.strip().startswith(key + "=")]
if len(values) != 1:
    sys.exit("%s: expected one %s=, found %d" % (unit, key, len(values)))
spec = {"i": inst, "t": rt, "%": "%"}
words = []
for w in values[0].split():
    w = re.sub(r"%(.)", lambda m: spec[m.group(1)], w)
    m = re.fullmatch(r"\$([A-Za-z_][A-Za-z0-9_]*)", w)
    if m:
        words += env.get(m.group(1), "").split()
        continue
    words.append(re.sub(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}",
                        lambda m: env.get(m.group(1), ""), w))
sys.stdout.write("".join(w + "\0" for w in words))
PY
}

mapfile -d '' -t listen < <(unit_words "$socket_unit" ListenStream)
[ "${#listen[@]}" -eq 1 ] || fail "ListenStream: ${listen[*]}"
nbdsock=${listen[0]}
[ "$nbdsock" = "$run/nbdkit-fleece/$inst.sock" ] ||
  fail "ListenStream is $nbdsock"

mapfile -d '' -t cmd < <(unit_words "$service" ExecStart)
echo "ExecStart: ${cmd[*]}"
[ "$(basename "${cmd[0]}")" = nbdkit ] && [ -x "${cmd[0]}" ] ||
  fail "ExecStart does not run an nbdkit that exists: ${cmd[0]}"
# Run it with nbdkit from PATH (the sanitizer runs wrap it) and the
# filters built here instead of the installed ones; nothing else changes.
cmd[0]=nbdkit
for i in "${!cmd[@]}"; do
  case ${cmd[$i]} in
    -U*|--unix*|-p*|--port*|-P*|--pidfile*) fail "ExecStart has ${cmd[$i]}" ;;
    --filter=snapshot-access) cmd[$i]=--filter=$SA ;;
    --filter=cbw) cmd[$i]=--filter=$CBW ;;
    --filter=dirty-bitmap) cmd[$i]=--filter=$DB ;;
    --filter=*) fail "unexpected filter in ExecStart: ${cmd[$i]}" ;;
    control=*) ctlsock=${cmd[$i]#control=} ;;
  esac
done
[ "${ctlsock:-}" = "$run/nbdkit-fleece/$inst.control" ] ||
  fail "control socket is '${ctlsock:-}'"

live="nbd+unix:///?socket=$nbdsock"
size=
snap="nbd+unix:///snapshot?socket=$nbdsock"

# Like systemd: the socket's directory exists, the socket is bound by
# the activator, nbdkit gets it as fd 3.  systemd-socket-activate only
# execs nbdkit when the first client connects.
start_service ()
{
  local pid
  mkdir -p "$run/nbdkit-fleece"
  rm -f "$nbdsock.pid"
  _pidfiles+=("$nbdsock.pid")
  echo "--- start $1" >> "$tmpdir/service.log"
  # systemd-socket-activate gives the command only PATH, HOME, USER,
  # TERM and the -E variables: pass on what the sanitizer runs' nbdkit
  # wrapper reads (without it the wrapper runs nbdkit uninstrumented,
  # which cannot load instrumented filters).
  local senv=() v
  for v in $(compgen -e); do
    case $v in
      FLEECE_*|ASAN_OPTIONS|LSAN_OPTIONS|UBSAN_OPTIONS|TSAN_OPTIONS)
        senv+=(-E "$v") ;;
    esac
  done
  systemd-socket-activate "${senv[@]}" -l "$nbdsock" "${cmd[@]}" \
    >>"$tmpdir/service.log" 2>&1 &
  pid=$!
  echo $pid > "$nbdsock.pid"
  # Until the activator has bound the socket, a stale one refuses.
  for _ in $(seq 100); do
    size=$(nbdinfo --size "$live" 2>/dev/null) && break
    kill -0 $pid 2>/dev/null || fail "the activated server exited (start $1)"
    sleep 0.1
  done
  [ "$size" = $((16 * 1024 * 1024)) ] ||
    fail "the activated server does not serve (start $1): size '$size'"
  [ -S "$ctlsock" ] || fail "no control socket $ctlsock (start $1)"
  [ "$(stat -c %a "$ctlsock")" = 600 ] || fail "control socket mode"
}

# A full backup through the activated server equals the disk at the
# snapshot point although the disk is written meanwhile.
full_backup ()
{
  local out=$1 begin=$2 mib=$3 want r
  want=$(sha256sum < "$disk")
  r=$(ctl "$ctlsock" "$begin")
  echo "$r" | jq -e '.ok == true' >/dev/null || fail "$begin: $r"
  nbdsh -u "$live" -c "h.pwrite(b'\\xa5' * 196608, 1048576 * $mib)"
  [ "$(sha256sum < "$disk")" != "$want" ] || fail "the live write did not land"
  nbdcopy "$snap" "$out"
  [ "$(sha256sum < "$out")" = "$want" ] ||
    fail "backup $out differs from the disk at the snapshot point"
  r=$(ctl "$ctlsock" snapshot-end)
  echo "$r" | jq -e '.ok == true' >/dev/null || fail "snapshot-end: $r"
}

head -c 16M /dev/urandom > "$disk"

start_service 1
full_backup "$tmpdir/full1.img" "snapshot-begin checkpoint=c1" 5
echo "first start: full backup OK"

stop_nbdkit "$nbdsock"
[ -S "$nbdsock" ] && echo "the NBD socket was left behind: $nbdsock"

# The same command on the same path starts again.
start_service 2
r=$(ctl "$ctlsock" status)
echo "$r" | jq -e '.checkpoints | map(.name) == ["c1"]
  and (.[0].consistent and .[0].persistent)' >/dev/null ||
  fail "checkpoint c1 after the restart: $r"
full_backup "$tmpdir/full2.img" "snapshot-begin checkpoint=c2" 9

# Since c2: the write during the second backup; since c1 (recorded
# before the restart): both writes.  192 KiB each, 64K-aligned.
changed_since ()
{
  nbdinfo --json --map "nbd+unix:///snapshot/since/$1?socket=$nbdsock" |
    jq '[.[] | select(.type == 0) | .length] | add'
}
r=$(ctl "$ctlsock" snapshot-begin)
echo "$r" | jq -e '.ok == true' >/dev/null || fail "snapshot-begin: $r"
c2=$(changed_since c2)
c1=$(changed_since c1)
ctl "$ctlsock" snapshot-end >/dev/null
[ "$c2" = 196608 ] || fail "changed since c2: $c2 bytes, expected 196608"
[ "$c1" = 393216 ] || fail "changed since c1: $c1 bytes, expected 393216"
echo "second start: checkpoint kept, full backup OK"

# After a crash both sockets are left behind; the third start works
# too.  The checkpoints are still listed (whether they count as
# consistent after an unclean stop is the dirty-bitmap filter's
# business, tested elsewhere).
pid=$(cat "$nbdsock.pid")
kill -9 "$pid"
for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
[ -S "$nbdsock" ] && [ -S "$ctlsock" ] ||
  echo "note: a socket was removed after kill -9"
start_service 3
r=$(ctl "$ctlsock" status)
echo "$r" | jq -e '.checkpoints | map(.name) == ["c1","c2"]' >/dev/null ||
  fail "checkpoints after a crash and a restart: $r"
echo "checkpoints after kill -9: $(echo "$r" | jq -c '.checkpoints | map({name, consistent})')"
full_backup "$tmpdir/full3.img" "snapshot-begin" 13
echo "third start after kill -9: full backup OK"

stop_nbdkit "$nbdsock"
echo "OK"
