#!/usr/bin/env bash
# nbdkit-fleece
# SPDX-License-Identifier: BSD-3-Clause
#
# make install DESTDIR=...: nbdkit's filter directory gets exactly the
# four filter modules (no libtool .la archives), which nbdkit loads;
# the man pages and systemd units are installed; make uninstall
# removes every file again.

source "${abs_top_srcdir:-$(dirname "$0")/..}/tests/functions.sh"
requires make nbdinfo

top=$abs_top_builddir
filterdir=$(sed -n 's/^filterdir = //p' "$top/Makefile")
prefix=$(sed -n 's/^prefix = //p' "$top/Makefile")
[ -n "$filterdir" ] && [ -n "$prefix" ] ||
  fail "cannot read filterdir and prefix from $top/Makefile"
dest=$tmpdir/dest

# A make of our own: not the jobserver or variables of the make that
# runs this test.
run_make ()
{
  env -u MAKEFLAGS -u MFLAGS -u MAKELEVEL \
    make -s -C "$top" "$@" DESTDIR="$dest" >"$tmpdir/make-$1.log" 2>&1 ||
    { cat "$tmpdir/make-$1.log" >&2; fail "make $1 DESTDIR=$dest failed"; }
}

run_make install
echo "installed:"
(cd "$dest" && find . ! -type d | sort)

# The filter directory: exactly the four modules.
got=$(cd "$dest$filterdir" && ls -A | sort | tr '\n' ' ')
want="nbdkit-cbw-filter.so nbdkit-dirty-bitmap-filter.so nbdkit-snapshot-access-filter.so nbdkit-stream-filter.so "
[ "$got" = "$want" ] ||
  fail "$filterdir holds '$got', expected '$want' (no .la files)"
[ -z "$(find "$dest" -name '*.la')" ] ||
  fail "libtool archives installed: $(find "$dest" -name '*.la')"

# nbdkit loads the installed modules, in the supported order.
expect_accepted --filter="$dest$filterdir/nbdkit-snapshot-access-filter.so" \
  --filter="$dest$filterdir/nbdkit-cbw-filter.so" \
  --filter="$dest$filterdir/nbdkit-dirty-bitmap-filter.so" memory 1M

# The man pages (built when configure found pod2man) and the systemd
# units.
if [ -f "$top/filters/cbw/nbdkit-cbw-filter.1" ]; then
  for f in cbw snapshot-access dirty-bitmap stream; do
    [ -f "$dest$prefix/share/man/man1/nbdkit-$f-filter.1" ] ||
      fail "man page nbdkit-$f-filter.1 not installed"
  done
fi
units=$dest$prefix/lib/systemd/system
for u in nbdkit-fleece@.socket nbdkit-fleece@.service; do
  [ -f "$units/$u" ] || fail "systemd unit $u not installed in $units"
done
grep -q '@NBDKIT@' "$units/nbdkit-fleece@.service" &&
  fail "the installed service still says @NBDKIT@"

# Uninstall leaves no file behind (automake keeps empty directories).
run_make uninstall
left=$(cd "$dest" && find . ! -type d)
[ -z "$left" ] || fail "make uninstall left: $left"

echo "OK"
