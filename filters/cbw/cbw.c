/* nbdkit-fleece
 * SPDX-License-Identifier: BSD-3-Clause
 *
 * The cbw (copy-before-write) filter: registration, start-up and the
 * interface the other project filters use (fleece_cbw_v1).
 */

#include <config.h>

#include <inttypes.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <nbdkit-filter.h>

#include "backend.h"
#include "cbw.h"
#include "errors.h"
#include "ctl-owner.h"
#include "fleece-api.h"
#include "json.h"
#include "params.h"
#include "size.h"
#include "quiesce.h"
#include "snapshot.h"
#include "target.h"

/* -D cbw.copy=1: log every cluster copy. */
NBDKIT_DLL_PUBLIC int cbw_debug_copy = 0;

/* Start-up state, written by nbdkit's single-threaded start-up. */
static unsigned load_count;
static bool config_started;

static void
cbw_load (void)
{
  load_count++;
  snapshot_init ();
}

static void
cbw_unload (void)
{
  fleece_control_cleanup ();
  snapshot_cleanup ();
  target_close ();
  cbw_config_free ();
}

static int
cbw_config_cb (nbdkit_next_config *next, nbdkit_backend *nxdata,
            const char *key, const char *value)
{
  int r = cbw_config_key (key, value);

  if (r != 0)
    return r == 1 ? 0 : -1;
  return fleece_config_other (next, nxdata, key, value);
}

static int
cbw_config_complete (nbdkit_next_config_complete *next,
                     nbdkit_backend *nxdata)
{
  config_started = true;
  if (fleece_config_complete_common (FLEECE_CBW, load_count) == -1 ||
      cbw_config_check () == -1)
    return -1;
  nbdkit_debug ("cbw: target: %s %s, cluster size %" PRIu32
                ", on error %s, timeout %" PRIu64 " s",
                cbw_target_kind_name (cbw_config.target_kind),
                cbw_config.target ? cbw_config.target : "in $TMPDIR",
                cbw_config.cluster_size,
                cbw_on_error_name (cbw_config.on_error), cbw_config.timeout);
  return next (nxdata);
}

static int
cbw_get_ready (int thread_model)
{
  if (target_open () == -1)
    return -1;
  return fleece_control_get_ready ();
}

/* The disk's size as cbw last saw it, for api_disk_size (atomic; the
 * same value snapshot.c keeps for the next snapshot).
 */
static int64_t last_size = -1;

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
  __atomic_store_n (&last_size, size, __ATOMIC_RELAXED);
  target_after_fork ();
  return fleece_control_after_fork ();
}

static int64_t
cbw_get_size (nbdkit_next *next, void *handle)
{
  int64_t size = next->get_size (next);

  if (size >= 0) {
    snapshot_saw_size (size);
    __atomic_store_n (&last_size, size, __ATOMIC_RELAXED);
  }
  return size;
}

static void
cbw_cleanup (nbdkit_backend *backend)
{
  const struct fleece_sa_api *sa = fleece_snapshot_access ();

  /* A backup job reads our snapshot: end it first, whatever the order
   * nbdkit runs the filters' .cleanup in.
   */
  if (sa)
    sa->stop_jobs ("nbdkit is shutting down");
  fleece_control_cleanup ();
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

static bool
api_config_started (void)
{
  return config_started;
}

/* A checkpoint or snapshot name given as key=NAME, or NULL; -1 if it
 * is bad.
 */
static int
name_arg (const struct ctl_request *req, const char *key, const char **out,
          char **errmsg)
{
  *out = ctl_request_get (req, key);
  if (*out && !fleece_valid_name (*out)) {
    return fleece_errorf (errmsg, "%s=%s: a %s name is 1 to %d "
                          "characters from A-Z a-z 0-9 _ . - and does not start "
                          "with . or -", key, *out,
                          strcmp (key, "name") == 0 ? "snapshot" : "checkpoint",
                          FLEECE_NAME_MAX);
  }
  return 0;
}

/* Who may begin and end snapshots.
 *
 * snapshot.c lets only one thread at a time begin or end a snapshot
 * (it reads the set of active snapshots without a lock there).  That
 * used to be the control thread alone; backup jobs begin and end their
 * own named snapshots from their own threads, so every begin and end,
 * from the control socket or from the API, goes through begin_end_lock.
 *
 * owned: the names of the snapshots that backup jobs began through
 * snapshot_begin_owned (a job's snapshot is named after the job); the
 * user's snapshot-end of one of them is refused with a message saying
 * which job uses it.  Protected by begin_end_lock.
 */
static pthread_mutex_t begin_end_lock = PTHREAD_MUTEX_INITIALIZER;
#define MAX_OWNED 9
static char owned[MAX_OWNED][FLEECE_NAME_BUF];

static bool
is_owned (const char *name)
{
  size_t i;

  for (i = 0; i < MAX_OWNED; i++)
    if (owned[i][0] && strcmp (owned[i], name) == 0)
      return true;
  return false;
}

static int
api_command (const struct ctl_request *req, struct jbuf *reply,
             char **errmsg)
{
  static const char *const begin_keys[] =
    { "name", "checkpoint", "since", NULL };
  static const char *const end_keys[] = { "name", NULL };
  const char *name, *checkpoint, *since;
  int r;

  if (strcmp (req->command, "snapshot-begin") == 0) {
    if (ctl_request_check (req, begin_keys, 0, errmsg) == -1 ||
        name_arg (req, "name", &name, errmsg) == -1 ||
        name_arg (req, "checkpoint", &checkpoint, errmsg) == -1 ||
        name_arg (req, "since", &since, errmsg) == -1)
      return -1;
    pthread_mutex_lock (&begin_end_lock);
    r = snapshot_begin (name ? name : "", checkpoint, since, reply, errmsg);
    pthread_mutex_unlock (&begin_end_lock);
    return r;
  }
  if (strcmp (req->command, "snapshot-end") == 0) {
    if (ctl_request_check (req, end_keys, 0, errmsg) == -1 ||
        name_arg (req, "name", &name, errmsg) == -1)
      return -1;
    pthread_mutex_lock (&begin_end_lock);
    if (name && is_owned (name))
      r = fleece_errorf (errmsg, "snapshot %s belongs to backup job %s; "
                         "cancel the job with job-cancel id=%s", name,
                         name, name);
    else
      r = snapshot_end (name ? name : "", reply, errmsg);
    pthread_mutex_unlock (&begin_end_lock);
    return r;
  }
  if (strcmp (req->command, "quiesce") == 0) {
    static const char *const quiesce_keys[] = { "timeout", NULL };
    const char *t;
    uint64_t timeout = 10;
    const char *why;

    if (ctl_request_check (req, quiesce_keys, 0, errmsg) == -1)
      return -1;
    t = ctl_request_get (req, "timeout");
    if (t && fleece_parse_uint (t, 3600, &timeout, &why) == -1)
      return fleece_errorf (errmsg, "timeout=%s: %s; expected 1 to 3600 "
                            "seconds", t, why);
    return quiesce_begin (timeout, reply, errmsg);
  }
  if (strcmp (req->command, "resume") == 0) {
    static const char *const no_keys[] = { NULL };

    if (ctl_request_check (req, no_keys, 0, errmsg) == -1)
      return -1;
    return quiesce_end (reply, errmsg);
  }
  return fleece_errorf (errmsg, "cbw: unknown command '%s'", req->command);
}

/* A job's snapshot: named after the job (who). */
static uint64_t
api_snapshot_begin_owned (const char *who, const char *checkpoint,
                          const char *since, char **errmsg)
{
  struct jbuf ignored = JBUF_INIT;
  struct fleece_snapshot_info info;
  uint64_t id = 0;
  size_t i;

  pthread_mutex_lock (&begin_end_lock);
  for (i = 0; i < MAX_OWNED && owned[i][0]; i++)
    ;
  if (i == MAX_OWNED)
    fleece_errorf (errmsg, "too many backup jobs hold snapshots");
  else if (snapshot_begin (who, checkpoint, since, &ignored, errmsg) == 0) {
    snapshot_info (who, &info);
    id = info.id;
    snprintf (owned[i], sizeof owned[i], "%s", who);
  }
  pthread_mutex_unlock (&begin_end_lock);
  jbuf_free (&ignored);
  return id;
}

static int
api_snapshot_end_owned (uint64_t id, char **errmsg)
{
  struct jbuf ignored = JBUF_INIT;
  struct fleece_snapshot_info info;
  size_t i;
  int r = 0;

  pthread_mutex_lock (&begin_end_lock);
  for (i = 0; i < MAX_OWNED; i++) {
    if (owned[i][0] == '\0')
      continue;
    snapshot_info (owned[i], &info);
    if (info.id == id) {
      r = snapshot_end (owned[i], &ignored, errmsg);
      owned[i][0] = '\0';
    }
  }
  pthread_mutex_unlock (&begin_end_lock);
  jbuf_free (&ignored);
  return r;
}

static int64_t
api_disk_size (void)
{
  return __atomic_load_n (&last_size, __ATOMIC_RELAXED);
}

NBDKIT_DLL_PUBLIC const struct fleece_cbw_api fleece_cbw_v1 = {
  .base = {
    .size = sizeof (struct fleece_cbw_api),
    .id = FLEECE_CBW,
    .name = "cbw",
    .config_started = api_config_started,
    .status = snapshot_status,
    .command = api_command,
  },
  .snapshot_info = snapshot_info,
  .snapshot_names = snapshot_names,
  .snapshot_pread = snapshot_pread,
  .snapshot_extents = snapshot_extents,
  .snapshot_release = snapshot_release,
  .snapshot_changed_since = snapshot_changed_since,
  .snapshot_delta_names = snapshot_delta_names,
  .snapshot_begin_owned = api_snapshot_begin_owned,
  .snapshot_end_owned = api_snapshot_end_owned,
  .disk_size = api_disk_size,
};

static struct nbdkit_filter filter = {
  .name              = "cbw",
  .longname          = "nbdkit copy-before-write filter",
  .load              = cbw_load,
  .unload            = cbw_unload,
  .config            = cbw_config_cb,
  .config_complete   = cbw_config_complete,
  .config_help       = CBW_CONFIG_HELP,
  .get_ready         = cbw_get_ready,
  .after_fork        = cbw_after_fork,
  .cleanup           = cbw_cleanup,
  .get_size          = cbw_get_size,
  .pwrite            = cbw_pwrite,
  .zero              = cbw_zero,
  .trim              = cbw_trim,
};

NBDKIT_REGISTER_FILTER (filter)
