/* nbdkit-fleece
 * SPDX-License-Identifier: BSD-3-Clause
 *
 * The dirty-bitmap filter: registration, start-up and the interface
 * the other project filters use (fleece_dirty_bitmap_v1).
 */

#include <config.h>

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <nbdkit-filter.h>

#include "checkpoints.h"
#include "debug-flag.h"
#include "dirty-bitmap.h"
#include "errors.h"
#include "fleece-api.h"
#include "glue.h"
#include "json.h"
#include "persist.h"
#include "size.h"
#include "stack-rules.h"

/* -D dirty-bitmap.verbose=1: log checkpoint changes and marking. */
int db_debug_verbose = 0;
FLEECE_DEBUG_ALIAS (db_debug_verbose, "dirty-bitmap_debug_verbose");

/* Set once the checkpoints are loaded (after_fork): from then on a
 * clean stop saves them.  Written only by nbdkit's single-threaded
 * start-up and shutdown callbacks.
 */
static bool tracking_ready;

/* Start-up hooks, run by the shared glue (common/glue.h). */

static void
db_unload (void)
{
  ckpt_free_all ();
  db_config_free ();
}

static int
db_after_fork (nbdkit_backend *backend)
{
  int64_t size = fleece_glue_disk_size (FLEECE_DIRTY_BITMAP, backend);

  if (size == -1)
    return -1;
  ckpt_set_size (size);
  if (persist_load () == -1)
    return -1;
  ckpt_merge_provisional ();
  tracking_ready = true;
  return 0;
}

static void
db_cleanup (void)
{
  char *errmsg = NULL;

  /* The glue stopped the backup jobs first (glue.h), so a checkpoint
   * a stopped job started is merged back before this save.  A clean
   * stop: the bits are complete, clear the in-use mark.
   */
  if (tracking_ready && persist_save (false, &errmsg) == -1) {
    nbdkit_error ("%s", errmsg ? errmsg : "bitmap-file: cannot save");
    free (errmsg);
  }
  persist_stop ();
  tracking_ready = false;
}

static struct fleece_glue glue = {
  .id = FLEECE_DIRTY_BITMAP,
  .load = ckpt_init,
  .unload = db_unload,
  .config = db_config_key,
  .config_check = db_config_check,
  .get_ready = persist_get_ready,
  .after_fork = db_after_fork,
  .cleanup = db_cleanup,
};
FLEECE_GLUE_CALLBACKS (glue)

/* Only the live disk here; the snapshot names are refused without
 * snapshot-access (stack-rules.h).
 */
static void *
db_open (nbdkit_next_open *next, nbdkit_context *nxdata,
         int readonly, const char *exportname, int is_tls)
{
  return fleece_open_without_snapshots (next, nxdata, readonly, exportname);
}

/* Every connection's handshake asks the size: a change is seen before
 * any write can reach the new space.
 */
static int64_t
db_get_size (nbdkit_next *next, void *handle)
{
  int64_t size = next->get_size (next);

  if (size >= 0 && tracking_ready)
    ckpt_saw_size (size);
  return size;
}

/* Guest I/O: mark, then pass down. */
static int
db_write (nbdkit_next *next, void *handle, enum fleece_write_op op,
          const void *buf, uint32_t count, uint64_t offset, uint32_t flags,
          int *err)
{
  int r;

  if (ckpt_before_write (count, offset) == -1) {
    ckpt_after_write ();
    *err = EIO;
    return -1;
  }
  r = fleece_next_write (next, op, buf, count, offset, flags, err);
  ckpt_after_write ();
  return r;
}
FLEECE_WRITE_CALLBACKS (db, db_write)

/* Interface for the other project filters. */

/* checkpoint-create NAME, checkpoint-delete NAME */
static int
name_word (const struct ctl_request *req, const char **name, char **errmsg)
{
  *name = ctl_request_word (req, 0);
  if (*name == NULL) {
    return fleece_errorf (errmsg, "%s needs a checkpoint name, e.g. '%s c1'",
                          req->command, req->command);
  }
  if (!fleece_valid_name (*name)) {
    return fleece_errorf (errmsg, "'%s' is not a valid checkpoint name: use 1 to "
                          "%d characters from A-Z a-z 0-9 _ . - not starting with "
                          ". or -", *name, FLEECE_NAME_MAX);
  }
  if (!tracking_ready) {
    return fleece_errorf (errmsg, "the dirty-bitmap filter is not ready");
  }
  return 0;
}

static int
do_checkpoint_create (const struct ctl_request *req, struct jbuf *reply,
                      char **errmsg)
{
  const char *name;

  if (name_word (req, &name, errmsg) == -1)
    return -1;
  return ckpt_create (name, errmsg);
}

static int
do_checkpoint_delete (const struct ctl_request *req, struct jbuf *reply,
                      char **errmsg)
{
  const char *name;

  if (name_word (req, &name, errmsg) == -1)
    return -1;
  return ckpt_delete (name, errmsg);
}

/* The control commands of dirty-bitmap (keys and words are checked
 * before the call).
 */
static const struct fleece_command commands[] = {
  { "checkpoint-create", NULL, 1,
    "start checkpoint NAME now, without a snapshot", do_checkpoint_create },
  { "checkpoint-delete", NULL, 1,
    "remove checkpoint NAME, merging its changes into the one before",
    do_checkpoint_delete },
  { .name = NULL }
};

static uint32_t
api_granularity (void)
{
  return db_config.granularity;
}

static int
api_delete_checkpoint (const char *name, char **errmsg)
{
  if (!tracking_ready)
    return fleece_errorf (errmsg, "the dirty-bitmap filter is not ready");
  return ckpt_delete (name, errmsg);
}

NBDKIT_DLL_PUBLIC const struct fleece_db_api fleece_dirty_bitmap_v1 = {
  .base = FLEECE_GLUE_API (struct fleece_db_api, FLEECE_DIRTY_BITMAP,
                           "dirty-bitmap", ckpt_status, commands),
  .freeze = ckpt_freeze,
  .frozen_free = ckpt_frozen_free,
  .changed_since = ckpt_frozen_changed_since,
  .names = ckpt_frozen_names,
  .begin_checkpoint = ckpt_create,
  .hold = ckpt_hold,
  .unhold = ckpt_unhold,
  .granularity = api_granularity,
  .delete_checkpoint = api_delete_checkpoint,
  .begin_checkpoint_provisional = ckpt_create_provisional,
  .confirm_checkpoint = ckpt_confirm,
};

static struct nbdkit_filter filter = {
  .name              = "dirty-bitmap",
  .longname          = "nbdkit dirty bitmap (changed block tracking) filter",
  FLEECE_GLUE_FILTER_FIELDS,
  .config_help       = DB_CONFIG_HELP,
  .open              = db_open,
  .get_size          = db_get_size,
  .pwrite            = db_pwrite,
  .zero              = db_zero,
  .trim              = db_trim,
};

NBDKIT_REGISTER_FILTER (filter)
