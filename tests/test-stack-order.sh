#!/usr/bin/env bash
# nbdkit-fleece
# SPDX-License-Identifier: BSD-3-Clause
#
# Only the supported order of the filters starts; any other, a filter
# given twice, or snapshot-access without cbw, is refused clearly.

source "${abs_top_srcdir:-$(dirname "$0")/..}/tests/functions.sh"
requires nbdinfo

order='unsupported filter order'

expect_accepted --filter="$SA" --filter="$CBW" --filter="$DB" memory 1M
expect_accepted --filter="$SA" --filter="$CBW" memory 1M
expect_accepted --filter="$DB" memory 1M
# Other nbdkit filters may sit around and between ours.
expect_accepted --filter=nofilter --filter="$SA" --filter="$CBW" \
  --filter=nofilter --filter="$DB" --filter=nofilter memory 1M

expect_refused "$order: --filter=snapshot-access must come before --filter=cbw" \
  --filter="$CBW" --filter="$SA" memory 1M
expect_refused "$order: --filter=cbw must come before --filter=dirty-bitmap" \
  --filter="$DB" --filter="$CBW" memory 1M
expect_refused "$order" \
  --filter="$SA" --filter="$DB" --filter="$CBW" memory 1M
expect_refused "$order" \
  --filter="$DB" --filter="$SA" --filter="$CBW" memory 1M
expect_refused 'snapshot-access filter needs the cbw filter below it' \
  --filter="$SA" memory 1M
expect_refused 'snapshot-access filter needs the cbw filter below it' \
  --filter="$SA" --filter="$DB" memory 1M
# cbw alone would serve the snapshot names as the live disk.
expect_refused 'cbw filter needs the snapshot-access filter above it' \
  --filter="$CBW" memory 1M
expect_refused 'cbw filter needs the snapshot-access filter above it' \
  --filter="$CBW" --filter="$DB" memory 1M
expect_refused 'given more than once' \
  --filter="$CBW" --filter="$CBW" memory 1M

echo "OK"
