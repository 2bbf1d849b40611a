/* nbdkit-fleece
 * SPDX-License-Identifier: BSD-3-Clause
 *
 * The delta views (EXPORT/since/CKPT): the changed-block map fixed at
 * the snapshot point, data where it changed, zeroes elsewhere.
 */

#include <config.h>

#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include <nbdkit-filter.h>

#include "bitset.h"
#include "fleece-api.h"
#include "json.h"
#include "snapshot-access.h"

extern int sa_debug_verbose;

/* Fill the changed-block map of a delta view: the clusters written
 * between checkpoint name and the snapshot point, as they were at that
 * point (cbw and dirty-bitmap keep that fixed), and hold the
 * checkpoint while the connection is open.
 */
int
open_delta (struct handle *h, const struct fleece_snapshot_info *info,
            const char *name)
{
  const struct fleece_db_api *db = fleece_dirty_bitmap ();
  char *msg = NULL;

  if (db == NULL) {
    nbdkit_error ("export %s%s%s: delta views need the dirty-bitmap filter "
                  "(--filter=dirty-bitmap below cbw)",
                  sa_config.export_name, SA_SINCE, name);
    return -1;
  }
  h->unit = db->granularity ();
  if (bitset_init (&h->changed, (info->size + h->unit - 1) / h->unit) == -1) {
    nbdkit_error ("out of memory for the changed-block map");
    return -1;
  }
  if (cbw->snapshot_changed_since (info->id, name, h->unit, &h->changed,
                                   &msg) == -1) {
    nbdkit_error ("export %s%s%s: %s", sa_config.export_name, SA_SINCE,
                  name, msg ? msg : "cannot be served");
    free (msg);
    return -1;
  }
  h->hold = db->hold (name, FLEECE_HOLD_VIEW);
  if (sa_debug_verbose)
    nbdkit_debug ("snapshot-access: delta since %s: %" PRIu64 " of %"
                  PRIu64 " granules changed", name,
                  bitset_count (&h->changed), h->changed.nbits);
  return 0;
}

/* The run of units starting at u that are all changed or all
 * unchanged, ending no later than limit.
 */
static uint64_t
delta_run (const struct handle *h, uint64_t u, uint64_t limit, bool *changed)
{
  uint64_t e;

  *changed = bitset_test (&h->changed, u);
  e = *changed ? bitset_next_clear (&h->changed, u)
    : bitset_next_set (&h->changed, u);
  return e < limit ? e : limit;
}

/* Changed units read as the snapshot, the rest as zeroes. */
int
delta_pread (struct handle *h, nbdkit_next *next, char *buf, uint32_t count,
             uint64_t offset, int *err)
{
  const uint64_t end = offset + count;
  const uint64_t u1 = (end - 1) / h->unit + 1;
  uint64_t u = offset / h->unit, run_end, from, to;
  bool changed;

  if (check_alive (h, err) == -1)
    return -1;
  while (u < u1) {
    run_end = delta_run (h, u, u1, &changed);
    from = u * h->unit > offset ? u * h->unit : offset;
    to = run_end * h->unit < end ? run_end * h->unit : end;
    if (!changed)
      memset (buf + (from - offset), 0, to - from);
    else if (cbw->snapshot_pread (h->id, next, buf + (from - offset),
                                  to - from, from, err) == -1)
      return -1;
    u = run_end;
  }
  /* The zeroes are only true while the snapshot lives. */
  return check_alive (h, err);
}

/* Changed units are data (never zero, even if their contents are), the
 * rest holes reading as zeroes: base:allocation is the changed-block
 * map.
 */
int
delta_extents (struct handle *h, uint32_t count, uint64_t offset,
               uint32_t flags, struct nbdkit_extents *extents, int *err)
{
  const uint64_t end = offset + count < h->size ? offset + count : h->size;
  const uint64_t u1 = end > offset ? (end - 1) / h->unit + 1 : 0;
  uint64_t u = offset / h->unit, run_end, from, to;
  bool changed;

  while (u < u1) {
    run_end = delta_run (h, u, u1, &changed);
    from = u * h->unit > offset ? u * h->unit : offset;
    to = run_end * h->unit < end ? run_end * h->unit : end;
    if (nbdkit_add_extent (extents, from, to - from,
                           changed ? 0
                           : NBDKIT_EXTENT_HOLE | NBDKIT_EXTENT_ZERO) == -1) {
      *err = errno;
      return -1;
    }
    if (flags & NBDKIT_FLAG_REQ_ONE)
      break;
    u = run_end;
  }
  return 0;
}

