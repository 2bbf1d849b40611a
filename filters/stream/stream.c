/* nbdkit-fleece
 * SPDX-License-Identifier: BSD-3-Clause
 *
 * The stream filter's guest I/O callbacks.  Before the restore is
 * complete they go through populate.c; afterwards straight through.
 */

#include <config.h>

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <unistd.h>

#include <nbdkit-filter.h>

#include "fine-bits.h"
#include "fleece-api.h"
#include "stack-rules.h"
#include "stream.h"
#include "stream-glue.h"

struct stream_state st;

/* Only the live disk here; the snapshot names are refused without
 * snapshot-access (stack-rules.h).
 */
void *
stream_open (nbdkit_next_open *next, nbdkit_context *nxdata,
             int readonly, const char *exportname, int is_tls)
{
  return fleece_open_without_snapshots (next, nxdata, readonly, exportname);
}

/* NBD_CMD_CACHE becomes a read, so it populates. */
int
stream_can_cache (nbdkit_next *next, void *handle)
{
  return NBDKIT_CACHE_EMULATE;
}

int
stream_pread (nbdkit_next *next, void *handle, void *buf, uint32_t count,
              uint64_t offset, uint32_t flags, int *err)
{
  return pop_pread (next, buf, count, offset, flags, err);
}

/* stream-sync=flush: the disk, then D for every cluster populated
 * before now (pending.c).  Otherwise the disk only.
 */
int
stream_flush (nbdkit_next *next, void *handle, uint32_t flags, int *err)
{
  if (st.fine == NULL || stream_is_complete ())
    return next->flush (next, flags, err);
  return pending_commit (next, err);
}

/* Write, zero and trim (FLEECE_WRITE_CALLBACKS in glue.c). */
int
stream_write (nbdkit_next *next, void *handle, enum fleece_write_op op,
              const void *buf, uint32_t count, uint64_t offset,
              uint32_t flags, int *err)
{
  return pop_modify (next, op, buf, count, offset, flags, err);
}

/* Block status: populated clusters as the disk says; an unpopulated
 * run is reported as data (its contents are the base's, not the
 * disk's holes).  One run per call; the client asks again for more.
 */
int
stream_extents (nbdkit_next *next, void *handle, uint32_t count,
                uint64_t offset, uint32_t flags,
                struct nbdkit_extents *extents, int *err)
{
  uint64_t end = offset + count, c, c1, k, run_end;
  struct nbdkit_extents *mine;
  size_t i, n;

  if (stream_is_complete ())
    return next->extents (next, count, offset, flags, extents, err);
  c = cluster_of (offset);
  c1 = cluster_of (end - 1);
  if (!is_filled (c)) {
    for (k = c + 1; k <= c1 && !is_filled (k); k++)
      ;
    run_end = cluster_start (k) < end ? cluster_start (k) : end;
    if (nbdkit_add_extent (extents, offset, run_end - offset, 0) == -1) {
      *err = errno;
      return -1;
    }
    return 0;
  }
  for (k = c + 1; k <= c1 && is_filled (k); k++)
    ;
  run_end = cluster_start (k) < end ? cluster_start (k) : end;
  mine = nbdkit_extents_new (offset, run_end);
  if (mine == NULL) {
    *err = errno;
    return -1;
  }
  if (next->extents (next, run_end - offset, offset, flags, mine, err)
      == -1) {
    nbdkit_extents_free (mine);
    return -1;
  }
  n = nbdkit_extents_count (mine);
  for (i = 0; i < n; i++) {
    struct nbdkit_extent x = nbdkit_get_extent (mine, i);

    if (nbdkit_add_extent (extents, x.offset, x.length, x.type) == -1) {
      *err = errno;
      nbdkit_extents_free (mine);
      return -1;
    }
  }
  nbdkit_extents_free (mine);
  return 0;
}

/* .after_fork: open the state file, load the maps, reach the base,
 * start the job.
 */
/* F = D | G (G is all zero unless trusted); with stream-sync=flush,
 * start G's writer and put G minus D in P, so the next flush makes
 * them durable.  Takes maps->fd.
 */
static int
load_maps (struct state_maps *maps)
{
  const char *what = "cannot load the map";
  struct bitset fine = { 0 };
  size_t nbytes;
  uint64_t c, k;

  if (bitset_init (&st.filled, st.nclusters) == -1 ||
      bitset_init (&fine, st.nclusters) == -1)
    goto fail;
  nbytes = bitset_serialized_size (&st.filled);
  if (bitset_deserialize (&st.filled, maps->durable, nbytes) == -1 ||
      bitset_deserialize (&fine, maps->fine, nbytes) == -1 ||
      bitset_merge (&st.filled, &fine) == -1)
    goto fail;
  st.filled_count = bitset_count (&st.filled);
  what = "cannot start the page-cache map";
  if (stream_config.sync_flush &&
      ((st.fine = fine_bits_new ()) == NULL ||
       fine_bits_attach (st.fine, maps->fd, state_fine_offset (),
                         st.nclusters, maps->fine) == -1 ||
       pending_init () == -1))
    goto fail;
  st.durable = durable_bits_new ();
  if (st.durable == NULL ||
      durable_bits_attach (st.durable, maps->fd, STATE_BITS_OFFSET,
                           st.nclusters, maps->durable) == -1) {
    what = "cannot start the map writer";   /* fd not taken: closed */
    goto fail;
  }
  if (maps->fine_trusted)
    nbdkit_debug ("stream: %" PRIu64 " clusters populated in the page "
                  "cache before a restart in this boot are kept",
                  bitset_count (&fine));
  for (c = 0; st.fine && (c = bitset_next_set (&fine, c)) < st.nclusters;
       c = k) {
    k = bitset_next_clear (&fine, c);
    pending_add (c, (k < st.nclusters ? k : st.nclusters) - c);
  }
  bitset_free (&fine);
  return 0;

 fail:
  nbdkit_error ("stream-state=%s: %s: %m", stream_config.state_path, what);
  if (maps->fd >= 0)
    close (maps->fd);
  bitset_free (&fine);
  return -1;
}

int
stream_start (nbdkit_backend *backend)
{
  struct state_maps maps;
  bool complete;
  int64_t size;
  int r;

  if (state_after_fork_pid () == -1)
    return -1;
  size = fleece_glue_disk_size (FLEECE_STREAM, backend);
  if (size == -1)
    return -1;
  if (state_open (size, stream_config.base_uri != NULL, &complete,
                  &maps) == -1)
    return -1;
  rangelock_init (&st.locks);
  if (complete) {
    __atomic_store_n (&st.complete, true, __ATOMIC_RELEASE);
    return 0;
  }

  r = load_maps (&maps);
  free (maps.durable);
  free (maps.fine);
  if (r == -1)
    return -1;

  if (base_init (stream_config.base_uri, size) == -1)
    return -1;
  r = base_probe ();
  if (r == -1)
    return -1;
  return job_start (backend);
}

void
stream_stop (void)
{
  job_stop ();
  if (!stream_is_complete () && st.durable)
    base_shutdown ();
}

void
stream_free (void)
{
  if (st.durable)
    durable_bits_free (st.durable);
  st.durable = NULL;
  if (st.fine)
    fine_bits_free (st.fine);
  st.fine = NULL;
  pending_free ();
  bitset_free (&st.filled);
  state_close ();
}
