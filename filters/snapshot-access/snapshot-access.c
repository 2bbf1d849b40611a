/* nbdkit-fleece
 * SPDX-License-Identifier: BSD-3-Clause
 *
 * The snapshot-access filter: registration, start-up, and routing of
 * export names to the live disk or the snapshot views.
 */

#include <config.h>

#include <errno.h>
#include <inttypes.h>
#include <time.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include <nbdkit-filter.h>

#include "bitset.h"
#include "debug-flag.h"
#include "fleece-api.h"
#include "glue.h"
#include "job.h"
#include "json.h"
#include "snapshot-access.h"

/* -D snapshot-access.verbose=1: log every snapshot request. */
int sa_debug_verbose = 0;
FLEECE_DEBUG_ALIAS (sa_debug_verbose, "snapshot-access_debug_verbose");

/* The cbw filter below us (snapshot-access.h). */
const struct fleece_cbw_api *cbw;

/* Start-up hooks, run by the shared glue (common/glue.h). */

static struct fleece_glue glue;

static int
sa_get_ready (void)
{
  job_set_thread_model (glue.thread_model);
  cbw = fleece_cbw ();
  if (cbw == NULL) {
    nbdkit_error ("the cbw filter below snapshot-access is from an "
                  "incompatible build; install matching filters");
    return -1;
  }
  return 0;
}

/* Backup jobs open their own contexts on backend (the cbw layer),
 * from their own threads.
 */
static int
sa_after_fork (nbdkit_backend *backend)
{
  job_set_backend (backend);
  return 0;
}

static struct fleece_glue glue = {
  .id = FLEECE_SNAPSHOT_ACCESS,
  .unload = sa_config_free,
  .config = sa_config_key,
  .config_check = sa_config_check,
  .get_ready = sa_get_ready,
  .after_fork = sa_after_fork,
};
FLEECE_GLUE_CALLBACKS (glue)

static void *
sa_open (nbdkit_next_open *next, nbdkit_context *nxdata,
         int readonly, const char *exportname, int is_tls)
{
  struct fleece_snapshot_info info;
  const char *checkpoint = NULL;
  struct handle *h;

  h = calloc (1, sizeof *h);
  if (h == NULL) {
    nbdkit_error ("calloc: %m");
    return NULL;
  }
  h->view = sa_classify (exportname, h->snap, &checkpoint);
  switch (h->view) {
  case SA_VIEW_LIVE:
    if (next (nxdata, readonly, exportname) == -1)
      goto err;
    return h;
  case SA_VIEW_DELTA:
  case SA_VIEW_SNAPSHOT:
    break;
  case SA_VIEW_REFUSED:
    nbdkit_error ("export %s: no such snapshot view; the names %s, %s@NAME, "
                  "their %sCHECKPOINT views and all others beginning with "
                  "snapshot/ or snapshot@ are reserved for snapshots and "
                  "never reach the disk", exportname, sa_config.export_name,
                  sa_config.export_name, SA_SINCE);
    errno = ENOENT;
    goto err;
  }

  cbw->snapshot_info (h->snap, &info);
  if (info.id == 0) {
    if (h->snap[0])
      nbdkit_error ("export %s: no snapshot named %s is active; start it "
                    "with 'snapshot-begin name=%s' on the control socket",
                    exportname, h->snap, h->snap);
    else
      nbdkit_error ("export %s: no snapshot is active; start one with "
                    "'snapshot-begin' on the control socket", exportname);
    errno = ENOENT;
    goto err;
  }
  h->id = info.id;
  h->size = info.size;
  if (h->view == SA_VIEW_DELTA &&
      ((h->checkpoint = nbdkit_strdup_intern (checkpoint)) == NULL ||
       open_delta (h, &info, checkpoint) == -1)) {
    errno = ENOENT;
    goto err;
  }
  /* The snapshot is of the disk, which the plugin serves as its
   * default export; open it read-only underneath.
   */
  if (next (nxdata, 1, "") == -1)
    goto err;
  if (sa_debug_verbose)
    nbdkit_debug ("snapshot-access: %s opened snapshot %" PRIu64,
                  exportname, h->id);
  return h;

 err:
  if (h->hold) {
    const struct fleece_db_api *db = fleece_dirty_bitmap ();

    if (db)
      db->unhold (h->hold, FLEECE_HOLD_VIEW);
  }
  bitset_free (&h->changed);
  free (h);
  return NULL;
}

static void
sa_close (void *handle)
{
  struct handle *h = handle;
  const struct fleece_db_api *db = fleece_dirty_bitmap ();

  if (db)
    db->unhold (h->hold, FLEECE_HOLD_VIEW);
  bitset_free (&h->changed);
  free (h);
}

#define SNAP(h) (((struct handle *) (h))->view != SA_VIEW_LIVE)

static int64_t
sa_get_size (nbdkit_next *next, void *handle)
{
  struct handle *h = handle;
  int64_t size = next->get_size (next);

  /* Even for the snapshot, the call above lets nbdkit learn the size
   * of the context below, which it checks our requests against.
   */
  if (size == -1 || !SNAP (h))
    return size;
  return h->size;
}

/* sa_can_WHAT: on a snapshot view the fixed answer on_snapshot, on
 * the live disk what the layer below says.
 */
#define SA_CAN(what, on_snapshot)                                       \
  static int                                                            \
  sa_##what (nbdkit_next *next, void *handle)                           \
  {                                                                     \
    return SNAP (handle) ? (on_snapshot) : next->what (next);           \
  }

/* With snapshot-discard=true the export must be writable for clients
 * to send TRIM; every write and zero is still refused.
 */
SA_CAN (can_write, sa_config.discard)
SA_CAN (can_trim, sa_config.discard)
SA_CAN (can_zero, NBDKIT_ZERO_NONE)
SA_CAN (can_fast_zero, 0)
SA_CAN (can_fua, NBDKIT_FUA_NONE)
SA_CAN (can_flush, 1)
/* Every connection sees the same snapshot. */
SA_CAN (can_multi_conn, 1)
SA_CAN (can_cache, NBDKIT_CACHE_NONE)

static int
sa_can_extents (nbdkit_next *next, void *handle)
{
  if (SNAP (handle)) {
    /* Ask below so nbdkit knows how to answer our extents calls. */
    if (next->can_extents (next) == -1)
      return -1;
    return 1;
  }
  return next->can_extents (next);
}

static const char *
sa_export_description (nbdkit_next *next, void *handle)
{
  struct handle *h = handle;
  struct fleece_snapshot_info info;

  if (!SNAP (h))
    return next->export_description (next);
  cbw->snapshot_info (h->snap, &info);
  if (info.id != h->id)
    return "snapshot (ended)";
  if (h->view == SA_VIEW_DELTA)
    return describe_delta (&info, h->checkpoint);
  return describe_snapshot (&info);
}

/* Every request on a snapshot or delta connection fails once its
 * snapshot has ended, even one that would touch no data (a delta
 * view's unchanged ranges read as zeroes without asking cbw).
 */
int
check_alive (const struct handle *h, int *err)
{
  struct fleece_snapshot_info info;

  cbw->snapshot_info (h->snap, &info);
  if (info.id == h->id)
    return 0;
  nbdkit_error ("snapshot %" PRIu64 " has ended; open the export again "
                "after the next snapshot-begin", h->id);
  *err = EIO;
  return -1;
}

static int
sa_pread (nbdkit_next *next, void *handle, void *buf, uint32_t count,
          uint64_t offset, uint32_t flags, int *err)
{
  struct handle *h = handle;

  if (!SNAP (h))
    return next->pread (next, buf, count, offset, flags, err);
  if (sa_debug_verbose)
    nbdkit_debug ("snapshot-access: read %" PRIu32 " at %" PRIu64,
                  count, offset);
  if (h->view == SA_VIEW_SNAPSHOT)
    return cbw->snapshot_pread (h->id, next, buf, count, offset, err);
  return delta_pread (h, next, buf, count, offset, err);
}

static int
refuse_write (int *err)
{
  nbdkit_error ("the snapshot export is read-only");
  *err = EROFS;
  return -1;
}

/* The live disk takes every change; a snapshot view refuses them but
 * for a trim with snapshot-discard=true, which releases the snapshot's
 * copy of the range.
 */
static int
sa_write (nbdkit_next *next, void *handle, enum fleece_write_op op,
          const void *buf, uint32_t count, uint64_t offset, uint32_t flags,
          int *err)
{
  struct handle *h = handle;

  if (!SNAP (h))
    return fleece_next_write (next, op, buf, count, offset, flags, err);
  if (op != FLEECE_OP_TRIM || !sa_config.discard)
    return refuse_write (err);
  if (h->view == SA_VIEW_DELTA && check_alive (h, err) == -1)
    return -1;
  if (sa_debug_verbose)
    nbdkit_debug ("snapshot-access: release %" PRIu32 " at %" PRIu64,
                  count, offset);
  return cbw->snapshot_release (h->id, count, offset, err);
}
FLEECE_WRITE_CALLBACKS (sa, sa_write)

static int
sa_flush (nbdkit_next *next, void *handle, uint32_t flags, int *err)
{
  if (SNAP (handle))
    return check_alive (handle, err);
  return next->flush (next, flags, err);
}

static int
sa_extents (nbdkit_next *next, void *handle, uint32_t count,
            uint64_t offset, uint32_t flags,
            struct nbdkit_extents *extents, int *err)
{
  struct handle *h = handle;

  if (!SNAP (h))
    return next->extents (next, count, offset, flags, extents, err);
  if (h->view == SA_VIEW_DELTA) {
    /* The map is fixed at open; the snapshot must still be there. */
    if (check_alive (h, err) == -1)
      return -1;
    return delta_extents (h, count, offset, flags, extents, err);
  }
  return cbw->snapshot_extents (h->id, next, count, offset, flags,
                                extents, err);
}

static int
sa_cache (nbdkit_next *next, void *handle, uint32_t count, uint64_t offset,
          uint32_t flags, int *err)
{
  if (SNAP (handle))
    return check_alive (handle, err);
  return next->cache (next, count, offset, flags, err);
}

/* Interface for the other project filters. */

static void
api_status (struct jbuf *reply)
{
  jbuf_kv_string (reply, "snapshot_export", sa_config.export_name);
  job_status (reply);
}

NBDKIT_DLL_PUBLIC const struct fleece_sa_api fleece_snapshot_access_v1 = {
  .base = FLEECE_GLUE_API (struct fleece_sa_api, FLEECE_SNAPSHOT_ACCESS,
                           "snapshot-access", api_status, job_commands),
  .stop_jobs = job_stop_all,
};

static struct nbdkit_filter filter = {
  .name              = "snapshot-access",
  .longname          = "nbdkit snapshot access filter",
  FLEECE_GLUE_FILTER_FIELDS,
  .config_help       = SA_CONFIG_HELP,
  .list_exports      = sa_list_exports,
  .open              = sa_open,
  .close             = sa_close,
  .export_description = sa_export_description,
  .get_size          = sa_get_size,
  .can_write         = sa_can_write,
  .can_flush         = sa_can_flush,
  .can_trim          = sa_can_trim,
  .can_zero          = sa_can_zero,
  .can_fast_zero     = sa_can_fast_zero,
  .can_fua           = sa_can_fua,
  .can_multi_conn    = sa_can_multi_conn,
  .can_extents       = sa_can_extents,
  .can_cache         = sa_can_cache,
  .pread             = sa_pread,
  .pwrite            = sa_pwrite,
  .zero              = sa_zero,
  .trim              = sa_trim,
  .flush             = sa_flush,
  .extents           = sa_extents,
  .cache             = sa_cache,
};

NBDKIT_REGISTER_FILTER (filter)
