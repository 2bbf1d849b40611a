/* nbdkit-fleece
 * SPDX-License-Identifier: BSD-3-Clause
 *
 * The cbw (copy-before-write) filter: registration, start-up, the
 * guest's write path and the interface the other project filters use
 * (fleece_cbw_v1).  Its control commands are in commands.c.
 */

#include <config.h>

#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <nbdkit-filter.h>

#include "cbw.h"
#include "commands.h"
#include "errors.h"
#include "fleece-api.h"
#include "glue.h"
#include "json.h"
#include "size.h"
#include "snapshot.h"
#include "target.h"

/* -D cbw.copy=1: log every cluster copy. */
NBDKIT_DLL_PUBLIC int cbw_debug_copy = 0;

/* Start-up hooks, run by the shared glue (common/glue.h). */

static void
cbw_unload (void)
{
  snapshot_cleanup ();
  target_close ();
  cbw_config_free ();
}

static int
cbw_config_complete (void)
{
  if (cbw_config_check () == -1)
    return -1;
  nbdkit_debug ("cbw: target: %s %s, cluster size %" PRIu32
                ", on error %s, timeout %" PRIu64 " s",
                cbw_target_kind_name (cbw_config.target_kind),
                cbw_config.target ? cbw_config.target : "in $TMPDIR",
                cbw_config.cluster_size,
                cbw_on_error_name (cbw_config.on_error), cbw_config.timeout);
  return 0;
}

/* The disk's size as cbw last saw it, for api_disk_size (atomic; the
 * same value snapshot.c keeps for the next snapshot).
 */
static int64_t last_size = -1;

static void
saw_size (int64_t size)
{
  snapshot_saw_size (size);
  __atomic_store_n (&last_size, size, __ATOMIC_RELAXED);
}

static int
cbw_after_fork (nbdkit_backend *backend)
{
  /* The size before any client connects; from then on every
   * connection's handshake updates it (cbw_get_size).
   */
  int64_t size = fleece_glue_disk_size (FLEECE_CBW, backend);

  if (size == -1)
    return -1;
  saw_size (size);
  target_after_fork ();
  return 0;
}

static struct fleece_glue glue = {
  .id = FLEECE_CBW,
  .load = snapshot_init,
  .unload = cbw_unload,
  .config = cbw_config_key,
  .config_check = cbw_config_complete,
  .get_ready = target_open,
  .after_fork = cbw_after_fork,
};
FLEECE_GLUE_CALLBACKS (glue)

static int64_t
cbw_get_size (nbdkit_next *next, void *handle)
{
  int64_t size = next->get_size (next);

  if (size >= 0)
    saw_size (size);
  return size;
}

/* Guest I/O: everything that changes data is preserved first (a fast
 * zero fails rather than wait for a copy).
 */
static int
cbw_write (nbdkit_next *next, void *handle, enum fleece_write_op op,
           const void *buf, uint32_t count, uint64_t offset, uint32_t flags,
           int *err)
{
  bool fast = op == FLEECE_OP_ZERO && (flags & NBDKIT_FLAG_FAST_ZERO);
  int r;

  if (snapshot_before_write (next, count, offset, fast, err) == -1)
    return -1;
  r = fleece_next_write (next, op, buf, count, offset, flags, err);
  snapshot_after_write ();
  return r;
}
FLEECE_WRITE_CALLBACKS (cbw, cbw_write)

/* Interface for the other project filters. */

static int64_t
api_disk_size (void)
{
  return __atomic_load_n (&last_size, __ATOMIC_RELAXED);
}

NBDKIT_DLL_PUBLIC const struct fleece_cbw_api fleece_cbw_v1 = {
  .base = FLEECE_GLUE_API (struct fleece_cbw_api, FLEECE_CBW, "cbw",
                           snapshot_status, cbw_commands),
  .snapshot_info = snapshot_info,
  .snapshot_names = snapshot_names,
  .snapshot_pread = snapshot_pread,
  .snapshot_extents = snapshot_extents,
  .snapshot_release = snapshot_release,
  .snapshot_changed_since = snapshot_changed_since,
  .snapshot_delta_names = snapshot_delta_names,
  .snapshot_begin_owned = cbw_snapshot_begin_owned,
  .snapshot_end_owned = cbw_snapshot_end_owned,
  .disk_size = api_disk_size,
};

static struct nbdkit_filter filter = {
  .name              = "cbw",
  .longname          = "nbdkit copy-before-write filter",
  FLEECE_GLUE_FILTER_FIELDS,
  .config_help       = CBW_CONFIG_HELP,
  .get_size          = cbw_get_size,
  .pwrite            = cbw_pwrite,
  .zero              = cbw_zero,
  .trim              = cbw_trim,
};

NBDKIT_REGISTER_FILTER (filter)
