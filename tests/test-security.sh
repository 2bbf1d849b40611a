#!/usr/bin/env bash
# nbdkit-fleece
# SPDX-License-Identifier: BSD-3-Clause
#
# Security properties of the stack (see docs/security.md):
#  1. files the filters create are private even under umask 000: the
#     control socket, a cbw-target file and the bitmap file are 0600;
#     the default temporary target is unlinked at once;
#  2. the control socket never replaces an existing file that is not a
#     stale socket (regular file, directory, FIFO, symlinks to a file,
#     to a directory, to a socket, dangling) nor a live socket;
#  3. checkpoint names are validated (1-64 of [A-Za-z0-9_.-], not
#     starting with . or -) on every command that takes one, and never
#     become paths: no file appears next to the bitmap file, and with
#     no bitmap-file no file appears at all;  delta export names with
#     bad checkpoint names are refused;
#  4. no control command takes a file argument (file=, path=, target=,
#     ... on every command are refused and change nothing);
#  5. junk (1 MiB of random bytes, over-long lines, NULs) on the control
#     socket and on the NBD socket crashes nothing: the snapshot and
#     the live disk still read correctly afterwards;
#  6. the bitmap file's temporary PATH.tmp is never followed if it is a
#     planted symlink;
#  7. the stack works under nbdkit's TLS (PSK): snapshot + nbdcopy
#     backup over nbds+unix:// URIs, with a TLS NBD fleecing target;
#     plaintext clients, wrong keys and unknown users are refused;
#  8. the stack works behind nbdkit's ip filter (uid rules on the Unix
#     socket): a denied client can open neither the live disk nor the
#     snapshot nor a delta view, an allowed one reads the snapshot.
#
# Every case prints PASS or FAIL; the test fails if any case failed.

source "${abs_top_srcdir:-$(dirname "$0")/..}/tests/functions.sh"
requires socat jq nbdcopy nbdinfo cmp sha256sum python3-nbd

secpy=$abs_top_srcdir/tests/sec_nbd.py
nbdpy () { /usr/bin/python3 "$secpy" "$@"; }

failures=0
pass () { echo "PASS: $*"; }
bad () { echo "FAIL: $*" >&2; failures=$((failures + 1)); }

# check DESCRIPTION COMMAND...: PASS if COMMAND succeeds, else FAIL.
check ()
{
  local what=$1; shift
  if "$@"; then pass "$what"; else bad "$what"; fi
}

# ctl_lines CTL LINE...: send the lines on one connection, print the
# replies (one per line).
ctl_lines ()
{
  local c=$1; shift
  printf '%s\n' "$@" | timeout 20 socat -t 5 - "UNIX-CONNECT:$c"
}

# all_refused N: stdin holds exactly N replies, all {"ok":false,...}.
all_refused ()
{
  jq -s -e --argjson n "$1" \
    'length == $n and all(.[]; .ok == false and (.error | type) == "string")' \
    >/dev/null
}

alive () { kill -0 "$(cat "$1.pid")" 2>/dev/null; }

# tree DIR: every path under DIR with its type, sorted.
tree () { find "$1" -printf '%y %p\n' | sort; }

size=$((32 * 1024 * 1024))
chunk=65536
a=$tmpdir/a.img                 # the disk at the snapshot point
b=$tmpdir/b.img                 # source of later guest writes
head -c $size /dev/urandom > "$a"
head -c $size /dev/urandom > "$b"
offsets=(0 65536 1048576 5308416 16777216 33488896)   # 64K-aligned

# expected_live OUT: a with the b chunks at $offsets.
expected_live ()
{
  cp "$a" "$1"
  for o in "${offsets[@]}"; do
    dd if="$b" of="$1" bs=$chunk skip=$((o / chunk)) seek=$((o / chunk)) \
       count=1 conv=notrunc status=none
  done
}
expected_live "$tmpdir/live.expected"

all=(--filter="$SA" --filter="$CBW" --filter="$DB")

######################################################################
echo "== 1. file modes under umask 000"

d1=$tmpdir/s1
mkdir -p "$d1/tgt" "$d1/bm" "$d1/tmp"
sock1=$d1/nbd.sock
ctl1=$d1/ctl.sock
bm1=$d1/bm/disk.bitmaps
tgt1=$d1/tgt/fleece
live1="nbd+unix:///?socket=$sock1"
snap1="nbd+unix:///snapshot?socket=$sock1"

# nbdkit 1.32 itself sets umask(022) at start-up, so to run the filters
# under a really permissive umask a small preload library turns that
# call into umask(0) (if a C compiler is at hand; else umask 000 only
# reaches nbdkit's own 022).
preload=
if command -v cc >/dev/null 2>&1; then
  cat > "$tmpdir/noumask.c" <<'EOF'
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stddef.h>
#include <sys/types.h>
#include <sys/stat.h>
mode_t
umask (mode_t mask)
{
  static mode_t (*real) (mode_t);
  if (real == NULL)
    real = (mode_t (*) (mode_t)) dlsym (RTLD_NEXT, "umask");
  return real (mask == 022 ? 0 : mask);
}
EOF
  if cc -shared -fPIC -o "$tmpdir/noumask.so" "$tmpdir/noumask.c" -ldl 2>/dev/null; then
    preload=$tmpdir/noumask.so
  fi
  rm -f "$tmpdir/noumask.c"
fi

old_umask=$(umask)
umask 000
LD_PRELOAD=$preload${LD_PRELOAD:+:$LD_PRELOAD} TMPDIR=$d1/tmp \
  start_nbdkit "$sock1" "${all[@]}" memory $size \
  control="$ctl1" cbw-target="$tgt1" bitmap-file="$bm1"
umask "$old_umask"
nbdinfo --size "$live1" >/dev/null || fail "server 1 does not serve"
if [ -n "$preload" ]; then
  check "the preload made nbdkit's umask 000 (its own NBD socket is $(stat -c %a "$sock1"))" \
    test "$(stat -c %a "$sock1")" = 777
else
  echo "info: no C compiler, the filters ran under nbdkit's own umask 022"
fi

check "control socket is 0600 under umask 000 (got $(stat -c %a "$ctl1"))" \
  test "$(stat -c %a "$ctl1")" = 600
check "control socket is owned by the server's user" \
  test "$(stat -c %u "$ctl1")" = "$(id -u)"
check "cbw-target file is created 0600 under umask 000 (got $(stat -c %a "$tgt1" 2>&1))" \
  test "$(stat -c %a "$tgt1")" = 600
check "bitmap file is created 0600 under umask 000 (got $(stat -c %a "$bm1" 2>&1))" \
  test "$(stat -c %a "$bm1")" = 600

nbdcopy "$a" "$live1"
r=$(ctl "$ctl1" 'snapshot-begin checkpoint=base')
echo "$r" | jq -e '.ok' >/dev/null || fail "snapshot-begin: $r"
nbdpy patch "$live1" "$b" $chunk "${offsets[@]}"
r=$(ctl "$ctl1" status)
check "copies happened into the file target (clusters_copied=$(echo "$r" | jq .snapshot.clusters_copied))" \
  test "$(echo "$r" | jq .snapshot.clusters_copied)" = "${#offsets[@]}"
check "cbw-target is still 0600 after copies" test "$(stat -c %a "$tgt1")" = 600
check "bitmap file is still 0600 after a checkpoint save" test "$(stat -c %a "$bm1")" = 600
check "bitmap file's directory holds only the bitmap file and its lock file" \
  test "$(ls -A "$d1/bm" | tr '\n' ' ')" = "disk.bitmaps disk.bitmaps.lock "
check "the bitmap file's lock file is 0600 (got $(stat -c %a "$bm1.lock" 2>&1))" \
  test "$(stat -c %a "$bm1.lock")" = 600
check "the target's lock file is 0600 (got $(stat -c %a "$tgt1.lock" 2>&1))" \
  test "$(stat -c %a "$tgt1.lock")" = 600
check "nothing was created in TMPDIR with a file target" test -z "$(ls -A "$d1/tmp")"

# Server 2: the default (temporary) target and no bitmap-file.
d2=$tmpdir/s2
mkdir -p "$d2/tmp"
sock2=$d2/nbd.sock
ctl2=$d2/ctl.sock
live2="nbd+unix:///?socket=$sock2"
umask 000
LD_PRELOAD=$preload${LD_PRELOAD:+:$LD_PRELOAD} TMPDIR=$d2/tmp \
  start_nbdkit "$sock2" "${all[@]}" memory $size control="$ctl2"
umask "$old_umask"
nbdinfo --size "$live2" >/dev/null || fail "server 2 does not serve"
check "control socket is 0600 under umask 000 (server 2)" \
  test "$(stat -c %a "$ctl2")" = 600
nbdcopy "$a" "$live2"
ctl "$ctl2" snapshot-begin | jq -e .ok >/dev/null || fail "snapshot-begin (2)"
nbdpy patch "$live2" "$b" $chunk "${offsets[@]}"
pid2=$(cat "$sock2.pid")
check "the temporary target leaves no name in TMPDIR" test -z "$(ls -A "$d2/tmp")"
check "the temporary target is an open, deleted file in TMPDIR" \
  bash -c "ls -l /proc/$pid2/fd | grep -q '$d2/tmp/nbdkit-cbw-.* (deleted)'"
check "the temporary target holds the copies (snapshot reads back)" \
  nbdcopy "nbd+unix:///snapshot?socket=$sock2" "$tmpdir/s2.backup"
check "... and they are the data at the snapshot point" cmp -s "$tmpdir/s2.backup" "$a"
rm -f "$tmpdir/s2.backup"
ctl "$ctl2" snapshot-end | jq -e .ok >/dev/null || fail "snapshot-end (2)"

######################################################################
echo "== 2. the control socket never replaces what is not a stale socket"

cx=$tmpdir/ctlx
mkdir -p "$cx"
victim=$tmpdir/victim
echo precious > "$victim"
chmod 640 "$victim"
mkdir -p "$cx/dir" "$tmpdir/vdir"
echo inside > "$cx/dir/f"
echo precious > "$cx/file"
ln -s "$victim" "$cx/link-file"
ln -s "$tmpdir/vdir" "$cx/link-dir"
ln -s "$tmpdir/nowhere" "$cx/link-dangling"
ln -s "$ctl1" "$cx/link-live-socket"
mkfifo "$cx/fifo"
/usr/bin/python3 -c 'import socket,sys; s=socket.socket(socket.AF_UNIX); s.bind(sys.argv[1])' \
  "$tmpdir/stale-target.sock"
ln -s "$tmpdir/stale-target.sock" "$cx/link-stale-socket"

# identity PATH: what must not change (no dereference for the path itself).
identity ()
{
  stat -c '%F %i %a %s %Y' "$1"
  if [ -L "$1" ]; then readlink "$1"; fi
  if [ -f "$1" ] && [ ! -L "$1" ]; then sha256sum < "$1"; fi
  if [ -d "$1" ] && [ ! -L "$1" ]; then ls -A "$1"; fi
  return 0
}

for name in file dir fifo link-file link-dir link-dangling link-live-socket \
            link-stale-socket; do
  p=$cx/$name
  before=$(identity "$p")
  vbefore=$(identity "$victim")
  if timeout 20 nbdkit -U "$(run_sock)" --filter="$SA" --filter="$CBW" memory 1M control="$p" \
       --run true >"$tmpdir/refused.log" 2>&1; then
    bad "control=$name was accepted"
  elif ! grep -Eq "control=.*(not a socket|in use)" "$tmpdir/refused.log"; then
    bad "control=$name refused with an unclear error: $(cat "$tmpdir/refused.log")"
  else
    pass "control=$name is refused"
  fi
  check "control=$name: the path is untouched" test "$(identity "$p")" = "$before"
  check "control=$name: the symlink target is untouched" \
    test "$(identity "$victim")" = "$vbefore"
done
check "dangling symlink's target was not created" test ! -e "$tmpdir/nowhere"
check "the socket behind the symlink is still there" test -S "$tmpdir/stale-target.sock"
check "directory behind the symlink is still empty" test -z "$(ls -A "$tmpdir/vdir")"

# Live sockets: our own control socket and a live NBD socket.
for p in "$ctl1" "$sock1"; do
  before=$(identity "$p")
  if timeout 20 nbdkit -U "$(run_sock)" --filter="$SA" --filter="$CBW" memory 1M control="$p" \
       --run true >"$tmpdir/refused.log" 2>&1; then
    bad "control=$p (live socket) was accepted"
  elif grep -q "in use" "$tmpdir/refused.log"; then
    pass "control=$(basename "$p") (live socket) is refused as in use"
  else
    bad "control=$p refused with an unclear error: $(cat "$tmpdir/refused.log")"
  fi
  check "live socket $(basename "$p") is untouched" test "$(identity "$p")" = "$before"
done
check "server 1 still answers on its control socket" \
  bash -c "printf 'status\n' | socat -t 5 - UNIX-CONNECT:$ctl1 | jq -e .ok >/dev/null"
check "server 1 still serves NBD" bash -c "nbdinfo --size '$live1' >/dev/null"

# A stale socket is replaced (the only thing that ever is).
/usr/bin/python3 -c 'import socket,sys; s=socket.socket(socket.AF_UNIX); s.bind(sys.argv[1])' \
  "$cx/stale.sock"
check "a stale socket is replaced" \
  timeout 20 nbdkit -U "$(run_sock)" --filter="$SA" --filter="$CBW" memory 1M control="$cx/stale.sock" \
    --run "printf 'status\n' | socat -t 5 - UNIX-CONNECT:$cx/stale.sock | grep -q '\"ok\":true'"

######################################################################
echo "== 3. checkpoint names are validated and never become paths"

ctl "$ctl1" 'snapshot-end' | jq -e .ok >/dev/null || fail "snapshot-end (1)"
ctl "$ctl1" 'checkpoint-delete base' | jq -e .ok >/dev/null || fail "delete base"

n64=$(printf 'N%.0s' $(seq 64))
n65=$(printf 'N%.0s' $(seq 65))
bad_names=(
  "$n65" '/' 'a/b' '/etc/passwd' '..' '.' '../../x' '.hidden' '-rf' '-'
  'a b' $'a\tb' $'caf\xc3\xa9' $'\xff\xfe' '$(x)' '`id`' 'a;b' ';' 'a|b'
  'a&b' '*' '?' '~' 'a\b' "a'b" 'a"b' 'a:b' '%2e%2e' 'a,b' '{a}' '<x>'
  'a>b' '#x' '!x'
)
tree_before=$(tree "$tmpdir")

for c in "$ctl1" "$ctl2"; do
  s0=$(ctl "$c" status)
  nok=0
  for n in "${bad_names[@]}"; do
    lines=("checkpoint-create $n" "checkpoint-delete $n"
           "snapshot-begin checkpoint=$n" "snapshot-begin since=$n")
    if ! ctl_lines "$c" "${lines[@]}" | all_refused 4; then
      bad "name '$n' was not refused on every command ($(basename "$c")): $(ctl_lines "$c" "${lines[@]}" | tr '\n' ' ')"
      nok=1
    fi
    if [ "$(ctl "$c" status)" != "$s0" ]; then
      bad "name '$n' changed the status ($(basename "$c"))"
      nok=1
      s0=$(ctl "$c" status)
    fi
  done
  [ $nok = 0 ] && pass "${#bad_names[@]} bad names refused by checkpoint-create, checkpoint-delete, snapshot-begin checkpoint= and since= ($(basename "$(dirname "$c")")), status unchanged"
  check "missing or empty names are refused ($(basename "$(dirname "$c")"))" \
    bash -c "printf '%s\n' 'checkpoint-create' 'checkpoint-delete' 'snapshot-begin checkpoint=' 'snapshot-begin since=' |
             socat -t 5 - UNIX-CONNECT:$c | jq -s -e 'length == 4 and all(.[]; .ok == false)' >/dev/null"
done

# Good names, including some that look like the files next to the
# bitmap file or like system files.
good_names=("$n64" etc passwd disk.bitmaps disk.bitmaps.tmp
            disk.bitmaps.damaged x..y a-b_c.d Z9)
for c in "$ctl1" "$ctl2"; do
  for n in "${good_names[@]}"; do
    r=$(ctl "$c" "checkpoint-create $n")
    echo "$r" | jq -e .ok >/dev/null ||
      bad "good name '$n' refused ($(basename "$(dirname "$c")")): $r"
  done
  r=$(ctl "$c" status)
  check "all good names are listed, the 64-character one intact ($(basename "$(dirname "$c")"))" \
    test "$(echo "$r" | jq -c '[.checkpoints[].name]')" = \
         "$(printf '%s\n' "${good_names[@]}" | jq -R . | jq -s -c .)"
done
r=$(ctl "$ctl1" "snapshot-begin checkpoint=s$(printf 'x%.0s' $(seq 63))")
check "snapshot-begin checkpoint=<64 characters> is accepted" \
  bash -c "echo '$r' | jq -e .ok >/dev/null"

# Delta export names built from bad checkpoint names are refused.
nok=0
for e in "snapshot/since/../../etc/passwd" "snapshot/since//etc/passwd" \
         "snapshot/since/$n65" 'snapshot/since/$(x)' "snapshot/since/" \
         "snapshot/since/.hidden" "snapshot/since/a/b" "snapshot/since/etc/" \
         $'snapshot/since/etc\nfake log line'; do
  if nbdpy try-export "$sock1" "$e" 2>/dev/null; then
    bad "export '$e' was opened"
    nok=1
  fi
done
[ $nok = 0 ] && pass "delta export names with bad checkpoint names are refused"
check "a delta export with a good, path-like checkpoint name opens" \
  nbdpy try-export "$sock1" snapshot/since/disk.bitmaps
check "a delta export for the 64-character name opens" \
  nbdpy try-export "$sock1" "snapshot/since/$n64"
ctl "$ctl1" snapshot-end | jq -e .ok >/dev/null || fail "snapshot-end"
for c in "$ctl1" "$ctl2"; do
  for n in "${good_names[@]}"; do
    ctl "$c" "checkpoint-delete $n" | jq -e .ok >/dev/null ||
      bad "checkpoint-delete $n failed"
  done
done

check "the bitmap file's directory still holds only the bitmap file and its lock file" \
  test "$(ls -A "$d1/bm" | tr '\n' ' ')" = "disk.bitmaps disk.bitmaps.lock "
tree_after=$(tree "$tmpdir")
new=$(comm -13 <(echo "$tree_before") <(echo "$tree_after"))
check "no file appeared anywhere in the test directory${new:+: $new}" test -z "$new"
check "nothing in server 2's TMPDIR" test -z "$(ls -A "$d2/tmp")"

######################################################################
echo "== 4. no control command takes a file argument"

probe=$tmpdir/probe
mkdir -p "$probe"
ctl "$ctl1" 'checkpoint-create c9' | jq -e .ok >/dev/null || fail "create c9"
keys=(file path target cbw-target bitmap-file control output out dir export
      socket uri name filename)
for k in "${keys[@]}"; do                # what existed up there before
  [ -e "$PWD/../../$k" ] && touch "$probe/../.before-$k"
done
for state in idle active; do
  if [ $state = active ]; then
    ctl "$ctl1" snapshot-begin | jq -e .ok >/dev/null || fail "snapshot-begin"
  fi
  s0=$(ctl "$ctl1" status)
  nok=0
  for cmd in status snapshot-begin snapshot-end "checkpoint-create c10" \
             "checkpoint-delete c9"; do
    lines=()
    for k in "${keys[@]}"; do
      lines+=("$cmd $k=/etc/passwd" "$cmd $k=$probe/$k" "$cmd $k=../../$k"
              "$cmd $k=nbd+unix:///?socket=$probe/$k.sock")
    done
    out=$(ctl_lines "$ctl1" "${lines[@]}")
    if ! echo "$out" | all_refused ${#lines[@]}; then
      bad "$cmd with a file argument was not refused ($state): $(echo "$out" | grep -v '"ok":false' | head -3)"
      nok=1
    fi
    if echo "$out" | grep -q 'root:'; then
      bad "$cmd leaked /etc/passwd contents ($state)"
      nok=1
    fi
  done
  for line in 'snapshot-begin checkpoint=../../x' 'snapshot-begin since=/etc/passwd' \
              'snapshot-begin since=../../etc/passwd' 'checkpoint-create /etc/passwd' \
              "checkpoint-create $probe/x" 'status /etc/passwd' 'snapshot-end /etc/passwd' \
              "snapshot-begin $probe/x"; do
    r=$(ctl "$ctl1" "$line")
    if ! echo "$r" | all_refused 1; then
      bad "'$line' was not refused ($state): $r"
      nok=1
    fi
  done
  if [ "$(ctl "$ctl1" status)" != "$s0" ]; then
    bad "file arguments changed the status ($state)"
    nok=1
  fi
  [ $nok = 0 ] && pass "file arguments on every command are refused, status unchanged (snapshot $state)"
done
check "no file was created at any probed path" test -z "$(ls -A "$probe")"
# Relative values would be relative to nbdkit's working directory.
# Look only for the probed names: other processes (parallel tests)
# create and remove their own files up there all the time.
up_created=
for k in "${keys[@]}"; do
  [ -e "$PWD/../../$k" ] && [ ! -e "$probe/../.before-$k" ] && up_created+=" $k"
done
check "no ../../KEY file was created next to nbdkit's working directory" \
  test -z "$up_created"

######################################################################
echo "== 5. junk on the control and NBD sockets"

# The snapshot from section 4 is active on server 1, taken after the
# patches of section 1: the live disk is live.expected.
s0=$(ctl "$ctl1" status)
sha_live=$(sha256sum < "$tmpdir/live.expected" | cut -d' ' -f1)
head -c 1M /dev/urandom > "$tmpdir/junk"
timeout 60 socat -t 5 - "UNIX-CONNECT:$ctl1" < "$tmpdir/junk" > "$tmpdir/junk.out" || true
check "1 MiB of random bytes on the control socket: nbdkit is alive" alive "$sock1"
check "... every reply to it is ok:false ($(wc -l < "$tmpdir/junk.out") replies)" \
  bash -c "jq -s -e 'length > 0 and all(.[]; .ok == false)' < '$tmpdir/junk.out' >/dev/null"
r=$( { head -c 1M /dev/zero | tr '\0' a; printf '\nstatus\n'; } |
     timeout 60 socat -t 5 - "UNIX-CONNECT:$ctl1")
check "a 1 MiB line: one error, then the next line works" \
  test "$(echo "$r" | jq -c .ok | tr '\n' ' ')" = "false true "
r=$( { head -c 1M /dev/zero; printf '\nstatus\n'; } |
     timeout 60 socat -t 5 - "UNIX-CONNECT:$ctl1" | tail -n 1)
check "1 MiB of NUL bytes: the next line still works" \
  bash -c "echo '$r' | jq -e .ok >/dev/null"
r=$(for _ in $(seq 3000); do echo 'bogus'; done | timeout 60 socat -t 5 - "UNIX-CONNECT:$ctl1" | wc -l)
check "3000 bad lines in one write get 3000 replies (got $r)" test "$r" = 3000
timeout 30 socat -t 2 - "UNIX-CONNECT:$sock1" < "$tmpdir/junk" >/dev/null 2>&1 || true
{ printf 'NBDMAGIC'; head -c 65536 /dev/urandom; } |
  timeout 30 socat -t 2 - "UNIX-CONNECT:$sock1" >/dev/null 2>&1 || true
check "1 MiB of random bytes on the NBD socket: nbdkit is alive" alive "$sock1"
check "status is unchanged after all the junk" test "$(ctl "$ctl1" status)" = "$s0"
check "the snapshot still reads the data at the snapshot point" \
  test "$(nbdpy sha "$snap1" 0 $size)" = "$sha_live"
check "the live disk still reads correctly" \
  test "$(nbdpy sha "$live1" 0 $size)" = "$sha_live"
ctl "$ctl1" snapshot-end | jq -e .ok >/dev/null || fail "snapshot-end"
check "control still works after the junk" \
  bash -c "printf 'status\n' | socat -t 5 - UNIX-CONNECT:$ctl1 | jq -e '.ok and .snapshot.active == false' >/dev/null"

######################################################################
echo "== 6. the bitmap file's temporary file is never followed"

bx=$tmpdir/bmx
mkdir -p "$bx"
echo precious > "$tmpdir/victim2"
ln -s "$tmpdir/victim2" "$bx/disk.bitmaps.tmp"
v0=$(identity "$tmpdir/victim2")
timeout 20 nbdkit -U "$(run_sock)" --filter="$DB" memory 1M bitmap-file="$bx/disk.bitmaps" \
  --run 'nbdinfo --size "$uri" >/dev/null' >"$tmpdir/bmx.log" 2>&1 || true
if [ "$(identity "$tmpdir/victim2")" = "$v0" ]; then
  pass "a planted symlink at bitmap-file's PATH.tmp is not followed"
else
  bad "a planted symlink at bitmap-file's PATH.tmp was followed: its target was overwritten (now $(stat -c %s "$tmpdir/victim2") bytes, starts with '$(head -c 8 "$tmpdir/victim2" | tr -cd '[:print:]')')"
fi
rm -rf "$bx"

######################################################################
echo "== 7. TLS (PSK)"

psk=$tmpdir/keys.psk
wrong=$tmpdir/wrong.psk
bob=$tmpdir/bob.psk
key=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
printf 'alice:%s\n' "$key" > "$psk"
printf 'alice:%s\n' "$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')" > "$wrong"
printf 'bob:%s\n' "$key" > "$bob"
chmod 600 "$psk" "$wrong" "$bob"

d3=$tmpdir/s3
mkdir -p "$d3"
tsock=$d3/target.sock
sock3=$d3/nbd.sock
ctl3=$d3/ctl.sock
start_nbdkit "$sock3" --tls=require --tls-psk="$psk" "${all[@]}" memory $size \
  control="$ctl3"
live3="nbds+unix://alice@/?socket=$sock3&tls-psk-file=$psk"
snap3="nbds+unix://alice@/snapshot?socket=$sock3&tls-psk-file=$psk"
nbdinfo --size "$live3" >/dev/null || fail "the TLS stack does not serve"

nbdcopy "$a" "$live3"
ctl "$ctl3" 'checkpoint-create t0' | jq -e .ok >/dev/null || fail "checkpoint-create t0"
r=$(ctl "$ctl3" 'snapshot-begin checkpoint=t1')
check "snapshot-begin on the TLS stack" bash -c "echo '$r' | jq -e .ok >/dev/null"
nbdpy patch "$live3" "$b" $chunk "${offsets[@]}"
nbdcopy "$snap3" "$tmpdir/tls.backup"
check "nbdcopy backup of the snapshot over TLS equals the disk at the snapshot point" \
  cmp -s "$tmpdir/tls.backup" "$a"
nbdcopy "$live3" "$tmpdir/tls.live"
check "the live disk over TLS holds the later writes" \
  cmp -s "$tmpdir/tls.live" "$tmpdir/live.expected"
r=$(ctl "$ctl3" status)
check "the TLS stack copied the written clusters (clusters_copied=$(echo "$r" | jq .snapshot.clusters_copied))" \
  test "$(echo "$r" | jq .snapshot.clusters_copied)" = "${#offsets[@]}"
check "delta view over TLS opens" \
  nbdpy try-uri "nbds+unix://alice@/snapshot/since/t0?socket=$sock3&tls-psk-file=$psk"
for u in "nbd+unix:///?socket=$sock3" "nbd+unix:///snapshot?socket=$sock3" \
         "nbd+unix:///snapshot/since/t0?socket=$sock3" \
         "nbds+unix://alice@/snapshot?socket=$sock3&tls-psk-file=$wrong" \
         "nbds+unix://bob@/snapshot?socket=$sock3&tls-psk-file=$bob"; do
  if nbdpy try-uri "$u" 2>/dev/null; then
    bad "TLS: $u was served"
  else
    pass "TLS: refused $u"
  fi
done
check "nbdcopy over plaintext is refused" \
  bash -c "! nbdcopy 'nbd+unix:///snapshot?socket=$sock3' '$tmpdir/plain.backup' 2>/dev/null"
rm -f "$tmpdir/tls.backup" "$tmpdir/tls.live" "$tmpdir/plain.backup"
ctl "$ctl3" snapshot-end | jq -e .ok >/dev/null || fail "snapshot-end (TLS)"
check "the TLS stack is still alive" alive "$sock3"
stop_nbdkit "$sock3"

# A fleecing target reached over TLS: the target server requires TLS,
# the stack reaches it with an nbds+unix:// URI naming the PSK file.
start_nbdkit "$tsock" --tls=require --tls-psk="$psk" memory $size
tgt3="nbds+unix://alice@/?socket=$tsock&tls-psk-file=$psk"
rm -f "$sock3"
start_nbdkit "$sock3" "${all[@]}" memory $size control="$ctl3" \
  cbw-target="$tgt3"
live3="nbd+unix:///?socket=$sock3"
snap3="nbd+unix:///snapshot?socket=$sock3"
nbdcopy "$a" "$live3"
r=$(ctl "$ctl3" 'snapshot-begin')
if echo "$r" | jq -e .ok >/dev/null; then
  pass "snapshot-begin with a TLS (PSK) NBD target"
  nbdpy patch "$live3" "$b" $chunk "${offsets[@]}"
  nbdcopy "$snap3" "$tmpdir/tls.backup"
  check "the snapshot backed by the TLS target equals the disk at the snapshot point" \
    cmp -s "$tmpdir/tls.backup" "$a"
  r=$(ctl "$ctl3" status)
  check "the copies went to the TLS NBD target (clusters_copied=$(echo "$r" | jq .snapshot.clusters_copied), target_kind=$(echo "$r" | jq -r .snapshot.target_kind))" \
    test "$(echo "$r" | jq -r '"\(.snapshot.clusters_copied) \(.snapshot.target_kind)"')" = "${#offsets[@]} nbd"
  rm -f "$tmpdir/tls.backup"
  ctl "$ctl3" snapshot-end >/dev/null
else
  bad "snapshot-begin with a TLS (PSK) NBD target: $r"
fi
if nbdpy try-uri "nbd+unix:///?socket=$tsock" 2>/dev/null; then
  bad "TLS: the target server was served in plaintext"
else
  pass "TLS: the target server refuses plaintext"
fi
stop_nbdkit "$sock3"
stop_nbdkit "$tsock"

######################################################################
echo "== 8. the ip filter in front of the stack"

me=$(id -u)
d4=$tmpdir/s4
mkdir -p "$d4"
sock4=$d4/nbd.sock
ctl4=$d4/ctl.sock
# ip first (top), allow only us.
start_nbdkit "$sock4" --filter=ip "${all[@]}" memory $size \
  control="$ctl4" allow=uid:"$me" deny=all
nbdcopy "$a" "nbd+unix:///?socket=$sock4"
ctl "$ctl4" 'checkpoint-create i0' | jq -e .ok >/dev/null || fail "checkpoint-create (ip)"
ctl "$ctl4" 'snapshot-begin checkpoint=i1' | jq -e .ok >/dev/null || fail "snapshot-begin (ip)"
nbdpy patch "nbd+unix:///?socket=$sock4" "$b" $chunk "${offsets[@]}"
nbdcopy "nbd+unix:///snapshot?socket=$sock4" "$tmpdir/ip.backup"
check "ip filter first, allow=uid:$me deny=all: the allowed client backs up the snapshot" \
  cmp -s "$tmpdir/ip.backup" "$a"
rm -f "$tmpdir/ip.backup"
check "ip filter: the allowed client opens the delta view" \
  nbdpy try-uri "nbd+unix:///snapshot/since/i0?socket=$sock4"

# A real other user, if we can become one.
if [ "$me" = 0 ] && command -v setpriv >/dev/null; then
  # World-connectable socket: only the ip filter keeps others out.
  chmod 711 "$tmpdir" "$d4"
  chmod 777 "$sock4"
  asnobody () { setpriv --reuid=65534 --regid=65534 --clear-groups "$@"; }
  nok=0
  for e in "" snapshot snapshot/since/i0; do
    if asnobody /usr/bin/python3 - try-uri "nbd+unix:///$e?socket=$sock4" \
         < "$secpy" 2>/dev/null; then
      bad "ip filter: uid 65534 opened export '$e'"
      nok=1
    fi
  done
  [ $nok = 0 ] && pass "ip filter: uid 65534 can open neither the live disk, the snapshot nor a delta view"
  check "ip filter: the refusal came from the ip filter (log)" \
    grep -q 'client not permitted' "$sock4.log"
  # The same user reaches a server without the ip filter, so the ip
  # filter (not file permissions) is what kept it out.
  d6=$tmpdir/s6
  mkdir -p "$d6"
  chmod 711 "$d6"
  start_nbdkit "$d6/nbd.sock" memory 1M
  chmod 777 "$d6/nbd.sock"
  check "control: uid 65534 reaches an nbdkit without the ip filter" \
    asnobody /usr/bin/python3 - try-uri "nbd+unix:///?socket=$d6/nbd.sock" < "$secpy"
  stop_nbdkit "$d6/nbd.sock"
  chmod 700 "$tmpdir" "$d4"
else
  echo "info: not root, the other-user case is covered by deny=uid:$me below"
fi
ctl "$ctl4" snapshot-end | jq -e .ok >/dev/null || fail "snapshot-end (ip)"

# ip between our filters (our order check accepts other filters
# around ours), denying us.
d5=$tmpdir/s5
mkdir -p "$d5"
sock5=$d5/nbd.sock
ctl5=$d5/ctl.sock
start_nbdkit "$sock5" --filter="$SA" --filter=ip --filter="$CBW" \
  --filter="$DB" memory $size control="$ctl5" deny=uid:"$me"
pass "ip filter between ours is accepted"
# Wait for after_fork (the control server starts there).
for _ in $(seq 50); do
  ctl "$ctl5" status 2>/dev/null | grep -q '"ok":true' && break
  sleep 0.1
done
r=$(ctl "$ctl5" 'checkpoint-create d1')
r=$(ctl "$ctl5" 'snapshot-begin')
check "deny=uid:$me: the control socket (not NBD) still works" \
  bash -c "echo '$r' | jq -e .ok >/dev/null"
nok=0
for e in "" snapshot snapshot/since/d1; do
  if nbdpy try-uri "nbd+unix:///$e?socket=$sock5" 2>/dev/null; then
    bad "ip filter deny=uid:$me: export '$e' was opened"
    nok=1
  fi
done
[ $nok = 0 ] && pass "ip filter deny=uid:$me: live, snapshot and delta exports are refused"
check "deny=uid:$me: the snapshot state is unchanged by refused clients" \
  bash -c "printf 'status\n' | socat -t 5 - UNIX-CONNECT:$ctl5 | jq -e '.snapshot.active and .snapshot.clusters_copied == 0' >/dev/null"

######################################################################
echo
if [ $failures -ne 0 ]; then
  echo "$failures case(s) FAILED" >&2
  exit 1
fi
echo "OK"
