#!/usr/bin/env bash
# nbdkit-fleece
# SPDX-License-Identifier: BSD-3-Clause
#
# requires (tests/functions.sh) runs each tool: a tool that is installed
# but broken, an nbdsh whose Python lacks the libnbd bindings, and a
# Python without them all skip (exit 77) with a reason naming the tool
# and what failed; working tools let the test go on.

source "${abs_top_srcdir:-$(dirname "$0")/..}/tests/functions.sh"
requires jq

fake=$tmpdir/bin
mkdir "$fake"
# Installed, but its shared library is gone.
cat >"$fake/brokentool" <<'SH'
#!/bin/sh
echo "brokentool: error while loading shared libraries: libgone.so.3" >&2
exit 127
SH
# An nbdsh (and a python3) whose Python has no libnbd bindings.
for t in nbdsh python3; do
  cat >"$fake/$t" <<'SH'
#!/bin/sh
echo "ModuleNotFoundError: No module named 'nbd'" >&2
exit 1
SH
done
chmod +x "$fake"/*

# check NAME WANT-STATUS REGEX CODE: run CODE in a shell that sourced
# functions.sh with $fake first in PATH; it must exit WANT-STATUS with
# stderr matching REGEX (empty: no stderr at all).
check ()
{
  local name=$1 want=$2 regex=$3 code=$4 rc=0
  bash -c "
    source '$abs_top_srcdir/tests/functions.sh'
    PATH='$fake':\$PATH
    $code
    echo WENT-ON" >"$tmpdir/$name.out" 2>"$tmpdir/$name.err" || rc=$?
  echo "$name: status $rc: $(cat "$tmpdir/$name.err")"
  [ "$rc" = "$want" ] || fail "$name: exit status $rc, expected $want"
  if [ -z "$regex" ]; then
    [ ! -s "$tmpdir/$name.err" ] || fail "$name: expected no message"
  else
    grep -Eq -- "$regex" "$tmpdir/$name.err" ||
      fail "$name: stderr does not match /$regex/"
  fi
  if [ "$want" = 77 ]; then
    ! grep -q WENT-ON "$tmpdir/$name.out" || fail "$name: the test went on"
  else
    grep -q WENT-ON "$tmpdir/$name.out" || fail "$name: the test stopped"
  fi
}

check broken 77 "SKIP: .*'brokentool' is installed but does not run.*libgone\.so\.3" \
  'requires jq brokentool'
check missing 77 "SKIP: .*'no-such-tool-here' is not installed" \
  'requires no-such-tool-here'
check nbdsh 77 "SKIP: .*nbdsh .*cannot import the libnbd Python bindings.*No module named" \
  'requires nbdsh'
check python 77 "SKIP: .*libnbd Python bindings.*do not load in .*python3.*No module named" \
  "PY='$fake/python3'; requires python3-nbd"
check working 0 "" 'requires nbdkit jq socat python3-nbd'

echo OK
