#!/usr/bin/env bash
# nbdkit-fleece
# SPDX-License-Identifier: BSD-3-Clause
#
# Push backup jobs: a controlling jobs (speed, pause, set-speed, cancel) and bad
# input.  See job_control.py.

source "${abs_top_srcdir:-$(dirname "$0")/..}/tests/functions.sh"
requires /usr/bin/python3
/usr/bin/python3 -c 'import nbd' 2>/dev/null || {
  echo "SKIP: Python libnbd bindings missing" >&2; exit 77; }

/usr/bin/python3 "$abs_top_srcdir/tests/job_control.py" \
  --tmpdir "$tmpdir" --filters "$SA" "$CBW" "$DB" ||
  fail "backup job control (logs in the test's temporary directory)"
echo "OK"
