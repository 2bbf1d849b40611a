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

#include "backend.h"
#include "checkpoints.h"
#include "ctl-owner.h"
#include "debug-flag.h"
#include "dirty-bitmap.h"
#include "errors.h"
#include "fleece-api.h"
#include "json.h"
#include "params.h"
#include "persist.h"
#include "size.h"
#include "stack-rules.h"

/* -D dirty-bitmap.verbose=1: log checkpoint changes and marking. */
int db_debug_verbose = 0;
FLEECE_DEBUG_ALIAS (db_debug_verbose, "dirty-bitmap_debug_verbose");

/* Start-up state, written by nbdkit's single-threaded start-up. */
static unsigned load_count;
static bool config_started;
/* Set once the checkpoints are loaded (after_fork): from then on a
 * clean stop saves them.
 */
static bool tracking_ready;

static void
db_load (void)
{
  load_count++;
  ckpt_init ();
}

static void
db_unload (void)
{
  fleece_control_cleanup ();
  ckpt_free_all ();
  db_config_free ();
}

static int
db_config_cb (nbdkit_next_config *next, nbdkit_backend *nxdata,
              const char *key, const char *value)
{
  int r = db_config_key (key, value);

  if (r != 0)
    return r == 1 ? 0 : -1;
  return fleece_config_other (next, nxdata, key, value);
}

static int
db_config_complete (nbdkit_next_config_complete *next,
                    nbdkit_backend *nxdata)
{
  config_started = true;
  if (fleece_config_complete_common (FLEECE_DIRTY_BITMAP,
                                     load_count) == -1 ||
      db_config_check () == -1)
    return -1;
  return next (nxdata);
}

static int
db_get_ready (int thread_model)
{
  if (persist_get_ready () == -1)
    return -1;
  return fleece_control_get_ready ();
}

static int
db_after_fork (nbdkit_backend *backend)
{
  int64_t size = fleece_disk_size (backend);

  if (size == -1) {
    nbdkit_error ("dirty-bitmap: cannot find the size of the disk");
    return -1;
  }
  ckpt_set_size (size);
  if (persist_load () == -1)
    return -1;
  tracking_ready = true;
  return fleece_control_after_fork ();
}

static void
db_cleanup (nbdkit_backend *backend)
{
  char *errmsg = NULL;

  fleece_control_cleanup ();
  /* A clean stop: the bits are complete, clear the in-use mark. */
  if (tracking_ready && persist_save (false, &errmsg) == -1) {
    nbdkit_error ("%s", errmsg ? errmsg : "bitmap-file: cannot save");
    free (errmsg);
  }
  persist_stop ();
  tracking_ready = false;
}

/* Without snapshot-access above, nothing serves the snapshot names:
 * refuse them rather than hand the live disk to a client that asked
 * for a snapshot.
 */
static void *
db_open (nbdkit_next_open *next, nbdkit_context *nxdata,
         int readonly, const char *exportname, int is_tls)
{
  if (fleece_find (FLEECE_SNAPSHOT_ACCESS) == NULL &&
      fleece_reserved_export (exportname, NULL)) {
    nbdkit_error ("export %s: this stack serves no snapshots (it has no "
                  "snapshot-access filter); names beginning with "
                  "\"snapshot\" are reserved for snapshots", exportname);
    errno = ENOENT;
    return NULL;
  }
  if (next (nxdata, readonly, exportname) == -1)
    return NULL;
  return NBDKIT_HANDLE_NOT_NEEDED;
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
db_pwrite (nbdkit_next *next, void *handle, const void *buf,
           uint32_t count, uint64_t offset, uint32_t flags, int *err)
{
  int r;

  if (ckpt_before_write (count, offset) == -1) {
    ckpt_after_write ();
    *err = EIO;
    return -1;
  }
  r = next->pwrite (next, buf, count, offset, flags, err);
  ckpt_after_write ();
  return r;
}

static int
db_zero (nbdkit_next *next, void *handle, uint32_t count, uint64_t offset,
         uint32_t flags, int *err)
{
  int r;

  if (ckpt_before_write (count, offset) == -1) {
    ckpt_after_write ();
    *err = EIO;
    return -1;
  }
  r = next->zero (next, count, offset, flags, err);
  ckpt_after_write ();
  return r;
}

static int
db_trim (nbdkit_next *next, void *handle, uint32_t count, uint64_t offset,
         uint32_t flags, int *err)
{
  int r;

  if (ckpt_before_write (count, offset) == -1) {
    ckpt_after_write ();
    *err = EIO;
    return -1;
  }
  r = next->trim (next, count, offset, flags, err);
  ckpt_after_write ();
  return r;
}

/* Interface for the other project filters. */

static bool
api_config_started (void)
{
  return config_started;
}

/* checkpoint-create NAME, checkpoint-delete NAME */
static int
api_command (const struct ctl_request *req, struct jbuf *reply,
             char **errmsg)
{
  static const char *const no_keys[] = { NULL };
  const char *name;

  if (ctl_request_check (req, no_keys, 1, errmsg) == -1)
    return -1;
  name = ctl_request_word (req, 0);
  if (name == NULL) {
    return fleece_errorf (errmsg, "%s needs a checkpoint name, e.g. '%s c1'",
                          req->command, req->command);
  }
  if (!fleece_valid_name (name)) {
    return fleece_errorf (errmsg, "'%s' is not a valid checkpoint name: use 1 to "
                          "%d characters from A-Z a-z 0-9 _ . - not starting with "
                          ". or -", name, FLEECE_NAME_MAX);
  }
  if (!tracking_ready) {
    return fleece_errorf (errmsg, "the dirty-bitmap filter is not ready");
  }
  if (strcmp (req->command, "checkpoint-create") == 0)
    return ckpt_create (name, errmsg);
  if (strcmp (req->command, "checkpoint-delete") == 0)
    return ckpt_delete (name, errmsg);
  return fleece_errorf (errmsg, "dirty-bitmap: unknown command '%s'",
                        req->command);
}

static uint32_t
api_granularity (void)
{
  return db_config.granularity;
}

NBDKIT_DLL_PUBLIC const struct fleece_db_api fleece_dirty_bitmap_v1 = {
  .base = {
    .size = sizeof (struct fleece_db_api),
    .id = FLEECE_DIRTY_BITMAP,
    .name = "dirty-bitmap",
    .config_started = api_config_started,
    .status = ckpt_status,
    .command = api_command,
  },
  .freeze = ckpt_freeze,
  .frozen_free = ckpt_frozen_free,
  .changed_since = ckpt_frozen_changed_since,
  .names = ckpt_frozen_names,
  .begin_checkpoint = ckpt_create,
  .hold = ckpt_hold,
  .unhold = ckpt_unhold,
  .granularity = api_granularity,
};

static struct nbdkit_filter filter = {
  .name              = "dirty-bitmap",
  .longname          = "nbdkit dirty bitmap (changed block tracking) filter",
  .load              = db_load,
  .unload            = db_unload,
  .config            = db_config_cb,
  .config_complete   = db_config_complete,
  .config_help       = DB_CONFIG_HELP,
  .get_ready         = db_get_ready,
  .after_fork        = db_after_fork,
  .cleanup           = db_cleanup,
  .open              = db_open,
  .get_size          = db_get_size,
  .pwrite            = db_pwrite,
  .zero              = db_zero,
  .trim              = db_trim,
};

NBDKIT_REGISTER_FILTER (filter)
