/* nbdkit-fleece
 * SPDX-License-Identifier: BSD-3-Clause
 *
 * What a backup job copies: the snapshot's map turned into runs of
 * data to read and of zeroes to make (see job.c for the rules).
 */

#include <config.h>

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <nbdkit-filter.h>

#include "bitset.h"
#include "errors.h"
#include "fleece-api.h"
#include "job-dest.h"
#include "job.h"
#include "job-int.h"
#include "json.h"
#include "size.h"

/*----------------------------------------------------------------------
 * Mapping: what the job copies.
 */

static int
add_run (struct job *j, size_t *cap, uint64_t off, uint64_t len,
         enum run_kind kind)
{
  struct run *r;

  if (len == 0)
    return 0;
  if (j->nruns > 0) {
    r = &j->runs[j->nruns - 1];
    if (r->kind == kind && r->off + r->len == off) {
      r->len += len;
      return 0;
    }
  }
  if (j->nruns == *cap) {
    size_t ncap = *cap ? *cap * 2 : 64;

    r = realloc (j->runs, ncap * sizeof *r);
    if (r == NULL)
      return -1;
    j->runs = r;
    *cap = ncap;
  }
  j->runs[j->nruns++] = (struct run) { off, len, kind };
  return 0;
}

/* sync=full: the snapshot's block status. */
int
map_full (struct job *j, const struct fleece_cbw_api *cbw, bool can_extents,
          char **errmsg)
{
  const bool zeroed = dest_starts_zeroed (j->dest);
  size_t cap = 0;
  uint64_t off = 0, reached, count;
  size_t i;
  int err = 0;

  if (!can_extents)
    return add_run (j, &cap, 0, j->size, RUN_DATA) == -1
      ? fleece_errorf (errmsg, "out of memory") : 0;

  while (off < j->size) {
    struct nbdkit_extents *ext;

    count = j->size - off < MAP_STEP ? j->size - off : MAP_STEP;
    ext = nbdkit_extents_new (off, off + count);
    if (ext == NULL)
      return fleece_errorf (errmsg, "out of memory for block status");
    if (cbw->snapshot_extents (j->snap_id, j->next, count, off, 0, ext,
                               &err) == -1) {
      nbdkit_extents_free (ext);
      return fleece_errorf (errmsg, "block status of the snapshot at offset "
                            "%" PRIu64 " failed: %s (see the nbdkit log)",
                            off, strerror (err));
    }
    reached = off;
    for (i = 0; i < nbdkit_extents_count (ext); i++) {
      struct nbdkit_extent e = nbdkit_get_extent (ext, i);
      uint64_t end = e.offset + e.length;

      if (e.offset >= j->size)
        break;
      if (end > j->size)
        end = j->size;
      if (e.offset < reached)   /* never count a byte twice */
        e.offset = reached;
      if (end <= e.offset)
        continue;
      if (e.type & NBDKIT_EXTENT_ZERO) {
        if (!zeroed && add_run (j, &cap, e.offset, end - e.offset,
                                RUN_ZERO) == -1)
          err = -1;
      }
      else if (add_run (j, &cap, e.offset, end - e.offset, RUN_DATA) == -1)
        err = -1;
      reached = end;
    }
    nbdkit_extents_free (ext);
    if (err == -1)
      return fleece_errorf (errmsg, "out of memory for the copy map");
    if (reached <= off)
      return fleece_errorf (errmsg, "block status of the snapshot at offset "
                            "%" PRIu64 " described nothing", off);
    off = reached;
  }
  return 0;
}

/* sync=incremental: the granules changed since the checkpoint. */
int
map_incremental (struct job *j, const struct fleece_cbw_api *cbw,
                 char **errmsg)
{
  const struct fleece_db_api *db = fleece_dirty_bitmap ();
  struct bitset changed;
  uint64_t gran, u, e, off, end;
  size_t cap = 0;
  int r = 0;

  if (db == NULL)
    return fleece_errorf (errmsg, "incremental backups need the "
                          "dirty-bitmap filter");
  gran = db->granularity ();
  if (bitset_init (&changed, (j->size + gran - 1) / gran) == -1)
    return fleece_errorf (errmsg, "out of memory for the changed-block map");
  if (cbw->snapshot_changed_since (j->snap_id, j->since, gran, &changed,
                                   errmsg) == -1) {
    bitset_free (&changed);
    return -1;
  }
  for (u = bitset_next_set (&changed, 0); r == 0 && u < changed.nbits;
       u = bitset_next_set (&changed, e)) {
    e = bitset_next_clear (&changed, u);
    off = u * gran;
    end = e * gran < j->size ? e * gran : j->size;
    r = add_run (j, &cap, off, end - off, RUN_DATA);
  }
  bitset_free (&changed);
  if (r == -1)
    return fleece_errorf (errmsg, "out of memory for the copy map");
  return 0;
}

