# nbdkit-fleece
# SPDX-License-Identifier: BSD-3-Clause
#
# Shell library of the bench scripts and demo.sh.  Set $top to the
# source tree (where the filters are built), then source it:
#
#   top=...; . "$top/bench/lib.sh"
#
# It is tests/functions.sh in library-only mode -- $SA $CBW $DB, $PY,
# Debian's tools first in PATH, probe_tool, stop_pid, serve, ctl,
# ctl_ok (see there) -- plus what a script outside make check needs:
#
#   die MESSAGE          "SCRIPT: MESSAGE" on stderr, exit 1; the
#                        library's fail does the same here
#   need TOOL...         die unless every TOOL runs, with probe_tool's
#                        reason (python3-nbd: $PY has the libnbd
#                        bindings)
#   need_built FILE...   die unless every (filter) FILE is built

abs_top_builddir=$top
abs_top_srcdir=$top
FLEECE_LIB_ONLY=1
# shellcheck source=../tests/functions.sh
. "$top/tests/functions.sh"
unset FLEECE_LIB_ONLY

die ()
{
  echo "$(basename "$0"): $*" >&2
  exit 1
}

fail () { die "$@"; }

need ()
{
  local t
  for t in "$@"; do
    probe_tool "$t" || die "$probe_reason"
  done
}

need_built ()
{
  local f
  for f in "$@"; do
    [ -f "$f" ] || die "$f is not built; build first (./check.sh, or autoreconf -fi && ./configure && make)"
  done
}
