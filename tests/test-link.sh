#!/usr/bin/env bash
# nbdkit-fleece
# SPDX-License-Identifier: BSD-3-Clause
#
# libnbd is linked only into the filters that use it (cbw, for NBD
# fleecing targets; snapshot-access, for backup jobs to NBD
# destinations): neither the modules' DT_NEEDED entries nor the libtool
# archives' dependency_libs name it for the others.

source "${abs_top_srcdir:-$(dirname "$0")/..}/tests/functions.sh"
requires readelf nm

for f in cbw snapshot-access dirty-bitmap; do
  so=$abs_top_builddir/filters/$f/.libs/nbdkit-$f-filter.so
  la=$abs_top_builddir/filters/$f/nbdkit-$f-filter.la
  [ -f "$so" ] && [ -f "$la" ] || fail "$so or $la is not built"
  needed=$(readelf -d "$so" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p' | tr '\n' ' ')
  deps=$(sed -n "s/^dependency_libs='\(.*\)'/\1/p" "$la")
  uses=$(nm -D --undefined-only "$so" | grep -c ' nbd_' || true)
  echo "$f: NEEDED $needed; dependency_libs '$deps'; $uses nbd_* symbols"
  if [ "$f" = cbw ] || [ "$f" = snapshot-access ]; then
    [ "$uses" -gt 0 ] && [[ "$needed" == *libnbd* ]] ||
      fail "$f uses libnbd but does not link it"
  else
    [ "$uses" = 0 ] || fail "$f calls libnbd, expected only cbw and snapshot-access to"
    [[ "$needed" != *libnbd* ]] || fail "$f: $so needs libnbd"
    [[ "$deps" != *-lnbd* ]] || fail "$f: $la links -lnbd"
  fi
done
echo OK
