/* nbdkit-fleece
 * SPDX-License-Identifier: BSD-3-Clause
 *
 * The cbw filter's control commands: snapshot-begin, snapshot-end,
 * quiesce, resume; and the snapshots backup jobs begin and end through
 * the API.  A new command is one row in cbw_commands and one handler.
 *
 * Who may begin and end snapshots: snapshot.c lets only one thread at
 * a time begin or end a snapshot (it reads the set of active snapshots
 * without a lock there).  That used to be the control thread alone;
 * backup jobs begin and end their own named snapshots from their own
 * threads, so every begin and end, from the control socket or from the
 * API, goes through begin_end_lock.
 *
 * owned: the names of the snapshots backup jobs began through
 * snapshot_begin_owned (a job's snapshot is named after the job); the
 * user's snapshot-end of one of them is refused with a message saying
 * which job uses it.  Protected by begin_end_lock.
 */

#include <config.h>

#include <inttypes.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include <nbdkit-filter.h>

#include "commands.h"
#include "control.h"
#include "errors.h"
#include "json.h"
#include "quiesce.h"
#include "size.h"
#include "snapshot.h"

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

static int
do_snapshot_begin (const struct ctl_request *req, struct jbuf *reply,
                   char **errmsg)
{
  const char *name, *checkpoint, *since;
  int r;

  if (name_arg (req, "name", &name, errmsg) == -1 ||
      name_arg (req, "checkpoint", &checkpoint, errmsg) == -1 ||
      name_arg (req, "since", &since, errmsg) == -1)
    return -1;
  pthread_mutex_lock (&begin_end_lock);
  r = snapshot_begin (name ? name : "", checkpoint, since, false, reply,
                      errmsg);
  pthread_mutex_unlock (&begin_end_lock);
  return r;
}

static int
do_snapshot_end (const struct ctl_request *req, struct jbuf *reply,
                 char **errmsg)
{
  const char *name;
  int r;

  if (name_arg (req, "name", &name, errmsg) == -1)
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

static int
do_quiesce (const struct ctl_request *req, struct jbuf *reply,
            char **errmsg)
{
  const char *t = ctl_request_get (req, "timeout");
  uint64_t timeout = 10;
  const char *why;

  if (t && fleece_parse_uint (t, 3600, &timeout, &why) == -1)
    return fleece_errorf (errmsg, "timeout=%s: %s; expected 1 to 3600 "
                          "seconds", t, why);
  return quiesce_begin (timeout, reply, errmsg);
}

static int
do_resume (const struct ctl_request *req, struct jbuf *reply,
           char **errmsg)
{
  return quiesce_end (reply, errmsg);
}

static const char *const begin_keys[] =
  { "name", "checkpoint", "since", NULL };
static const char *const end_keys[] = { "name", NULL };
static const char *const quiesce_keys[] = { "timeout", NULL };

const struct fleece_command cbw_commands[] = {
  { "snapshot-begin", begin_keys, 0,
    "take a point-in-time snapshot now [name=NAME] [checkpoint=NEW] "
    "[since=OLD]", do_snapshot_begin },
  { "snapshot-end", end_keys, 0,
    "drop a snapshot and release the target space only it used "
    "[name=NAME]", do_snapshot_end },
  { "quiesce", quiesce_keys, 0,
    "hold guest writes until resume or the timeout [timeout=SECONDS]",
    do_quiesce },
  { "resume", NULL, 0, "let held guest writes go on", do_resume },
  { .name = NULL }
};

/* A job's snapshot: named after the job (who). */
uint64_t
cbw_snapshot_begin_owned (const char *who, const char *checkpoint,
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
  else if (snapshot_begin (who, checkpoint, since, true, &ignored,
                           errmsg) == 0) {
    snapshot_info (who, &info);
    id = info.id;
    snprintf (owned[i], sizeof owned[i], "%s", who);
  }
  pthread_mutex_unlock (&begin_end_lock);
  jbuf_free (&ignored);
  return id;
}

int
cbw_snapshot_end_owned (uint64_t id, char **errmsg)
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
