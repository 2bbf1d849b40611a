/* nbdkit-fleece
 * SPDX-License-Identifier: BSD-3-Clause
 *
 * The cbw (copy-before-write) filter: registration, start-up and the
 * interface the other project filters use (fleece_cbw_v1).
 */

#include <config.h>

#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <nbdkit-filter.h>

#include "backend.h"
#include "cbw.h"
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

static int
cbw_after_fork (nbdkit_backend *backend)
{
  /* The size before any client connects; from then on every
   * connection's handshake updates it (cbw_get_size).
   */
  int64_t size = fleece_disk_size (backend);

  if (size == -1) {
    nbdkit_error ("cbw: cannot find the size of the disk");
    return -1;
  }
  snapshot_saw_size (size);
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
    snapshot_saw_size (size);
  return size;
}

/* Guest I/O: everything that changes data is preserved first. */

static int
cbw_pwrite (nbdkit_next *next, void *handle, const void *buf,
            uint32_t count, uint64_t offset, uint32_t flags, int *err)
{
  int r;

  if (snapshot_before_write (next, count, offset, false, err) == -1)
    return -1;
  r = next->pwrite (next, buf, count, offset, flags, err);
  snapshot_after_write ();
  return r;
}

static int
cbw_zero (nbdkit_next *next, void *handle, uint32_t count, uint64_t offset,
          uint32_t flags, int *err)
{
  int r;

  if (snapshot_before_write (next, count, offset,
                             flags & NBDKIT_FLAG_FAST_ZERO, err) == -1)
    return -1;
  r = next->zero (next, count, offset, flags, err);
  snapshot_after_write ();
  return r;
}

static int
cbw_trim (nbdkit_next *next, void *handle, uint32_t count, uint64_t offset,
          uint32_t flags, int *err)
{
  int r;

  if (snapshot_before_write (next, count, offset, false, err) == -1)
    return -1;
  r = next->trim (next, count, offset, flags, err);
  snapshot_after_write ();
  return r;
}

/* Interface for the other project filters. */

/* A checkpoint name given as key=NAME, or NULL; -1 if it is bad. */
static int
name_arg (const struct ctl_request *req, const char *key, const char **out,
          char **errmsg)
{
  *out = ctl_request_get (req, key);
  if (*out && !fleece_valid_name (*out)) {
    return fleece_errorf (errmsg, "%s=%s: a checkpoint name is 1 to %d "
                          "characters from A-Z a-z 0-9 _ . - and does not start "
                          "with . or -", key, *out, FLEECE_NAME_MAX);
  }
  return 0;
}

static int
do_snapshot_begin (const struct ctl_request *req, struct jbuf *reply,
                   char **errmsg)
{
  const char *checkpoint, *since;

  if (name_arg (req, "checkpoint", &checkpoint, errmsg) == -1 ||
      name_arg (req, "since", &since, errmsg) == -1)
    return -1;
  return snapshot_begin (checkpoint, since, reply, errmsg);
}

static int
do_snapshot_end (const struct ctl_request *req, struct jbuf *reply,
                 char **errmsg)
{
  return snapshot_end (reply, errmsg);
}

/* The control commands of cbw (keys are checked before the call). */
static const char *const begin_keys[] = { "checkpoint", "since", NULL };
static const struct fleece_command commands[] = {
  { "snapshot-begin", begin_keys, 0,
    "take the point-in-time snapshot now [checkpoint=NEW] [since=OLD]",
    do_snapshot_begin },
  { "snapshot-end", NULL, 0,
    "drop the snapshot and release the target's space", do_snapshot_end },
  { .name = NULL }
};

NBDKIT_DLL_PUBLIC const struct fleece_cbw_api fleece_cbw_v1 = {
  .base = {
    .size = sizeof (struct fleece_cbw_api),
    .id = FLEECE_CBW,
    .name = "cbw",
    .config_started = glue_config_started,
    .status = snapshot_status,
    .commands = commands,
  },
  .snapshot_info = snapshot_info,
  .snapshot_pread = snapshot_pread,
  .snapshot_extents = snapshot_extents,
  .snapshot_release = snapshot_release,
  .snapshot_changed_since = snapshot_changed_since,
  .snapshot_delta_names = snapshot_delta_names,
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
