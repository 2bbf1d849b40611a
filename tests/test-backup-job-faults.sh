#!/usr/bin/env bash
# nbdkit-fleece
# SPDX-License-Identifier: BSD-3-Clause
#
# Push backup jobs that do not complete: the target fails with EIO
# mid-job, nbdkit is stopped (SIGTERM) and killed (SIGKILL) mid-job.
# The job's checkpoint is merged back (also across a clean restart),
# guest writes never fail, the next incremental is exact, and after a
# crash an incremental is refused.  See job_faults.py.

source "${abs_top_srcdir:-$(dirname "$0")/..}/tests/functions.sh"
requires /usr/bin/python3
/usr/bin/python3 -c 'import nbd' 2>/dev/null || {
  echo "SKIP: Python libnbd bindings missing" >&2; exit 77; }

/usr/bin/python3 "$abs_top_srcdir/tests/job_faults.py" \
  --tmpdir "$tmpdir" --filters "$SA" "$CBW" "$DB" ||
  fail "backup job faults (logs in the test's temporary directory)"
echo "OK"
