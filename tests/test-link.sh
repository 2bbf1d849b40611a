#!/usr/bin/env bash
# nbdkit-fleece
# SPDX-License-Identifier: BSD-3-Clause
#
# libnbd is linked only into the filter that uses it (cbw, for NBD
# fleecing targets): neither the modules' DT_NEEDED entries nor the
# libtool archives' dependency_libs name it for the other filters.

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
  if [ "$f" = cbw ]; then
    [ "$uses" -gt 0 ] && [[ "$needed" == *libnbd* ]] ||
      fail "$f uses libnbd (NBD targets) but does not link it"
  else
    [ "$uses" = 0 ] || fail "$f calls libnbd, expected only cbw to"
    [[ "$needed" != *libnbd* ]] || fail "$f: $so needs libnbd"
    [[ "$deps" != *-lnbd* ]] || fail "$f: $la links -lnbd"
  fi
done
echo OK
