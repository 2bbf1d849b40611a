#!/usr/bin/env bash
# nbdkit-fleece
# SPDX-License-Identifier: BSD-3-Clause
#
# Push backup jobs: a full backup and three incrementals with writers
# running throughout, to a raw file updated in place and to a qcow2
# chain served by qemu-nbd; every backup and every restore of the chain
# equals the disk at its snapshot point.  See job_chain.py.

source "${abs_top_srcdir:-$(dirname "$0")/..}/tests/functions.sh"
requires qemu-nbd qemu-img /usr/bin/python3
/usr/bin/python3 -c 'import nbd' 2>/dev/null || {
  echo "SKIP: Python libnbd bindings missing" >&2; exit 77; }

/usr/bin/python3 "$abs_top_srcdir/tests/job_chain.py" \
  --tmpdir "$tmpdir" --filters "$SA" "$CBW" "$DB" ||
  fail "backup job chain (logs in the test's temporary directory)"
echo "OK"
