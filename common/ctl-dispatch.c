/* nbdkit-fleece
 * SPDX-License-Identifier: BSD-3-Clause
 *
 * The control commands of the whole stack (product contract, section
 * 4).  Runs inside whichever filter owns the control server, and calls
 * the other filters through their fleece_*_v1 interfaces.  The server
 * serialises calls (control.h), so a command sees no other command
 * half done.
 */

#include <config.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "control.h"
#include "ctl-owner.h"
#include "errors.h"
#include "fleece-api.h"

/* Which filter implements each command besides status. */
static const struct {
  const char *command;
  enum fleece_filter_id owner;
} commands[] = {
  { "snapshot-begin", FLEECE_CBW },
  { "snapshot-end", FLEECE_CBW },
  { "quiesce", FLEECE_CBW },
  { "resume", FLEECE_CBW },
  { "checkpoint-create", FLEECE_DIRTY_BITMAP },
  { "checkpoint-delete", FLEECE_DIRTY_BITMAP },
  { "stream-pause", FLEECE_STREAM },
  { "stream-resume", FLEECE_STREAM },
  { "stream-set-speed", FLEECE_STREAM },
};

static int
do_status (const struct ctl_request *req, struct jbuf *reply,
           char **errmsg)
{
  static const char *const no_keys[] = { NULL };
  const struct fleece_filter_api *api;
  int id;

  if (ctl_request_check (req, no_keys, 0, errmsg) == -1)
    return -1;

  api = fleece_find (FLEECE_CBW);
  if (api && api->status)
    api->status (reply);
  else
    jbuf_raw (reply, ",\"snapshot\":{\"active\":false,\"started\":null,"
              "\"clusters_copied\":0,\"target_bytes\":0,"
              "\"released_bytes\":0,\"broken\":null}");

  api = fleece_find (FLEECE_DIRTY_BITMAP);
  if (api && api->status)
    api->status (reply);
  else
    jbuf_raw (reply, ",\"checkpoints\":[]");

  api = fleece_find (FLEECE_SNAPSHOT_ACCESS);
  if (api && api->status)
    api->status (reply);

  api = fleece_find (FLEECE_STREAM);
  if (api && api->status)
    api->status (reply);

  /* Which of the project's filters this process runs. */
  jbuf_key (reply, "filters");
  jbuf_raw (reply, "[");
  for (id = 0; id < FLEECE_NR_FILTERS; id++) {
    if (fleece_find (id) == NULL)
      continue;
    if (reply->len && reply->s[reply->len - 1] != '[')
      jbuf_raw (reply, ",");
    jbuf_string (reply, fleece_filter_name (id));
  }
  jbuf_raw (reply, "]");
  return 0;
}

int
fleece_dispatch (const struct ctl_request *req, void *opaque,
                 struct jbuf *reply, char **errmsg)
{
  const struct fleece_filter_api *api;
  size_t i;

  if (strcmp (req->command, "status") == 0)
    return do_status (req, reply, errmsg);

  for (i = 0; i < sizeof commands / sizeof commands[0]; i++) {
    if (strcmp (req->command, commands[i].command) != 0)
      continue;
    api = fleece_find (commands[i].owner);
    if (api == NULL || api->command == NULL)
      return fleece_errorf (errmsg, "%s needs the %s filter in the stack",
                            req->command, fleece_filter_name (commands[i].owner));
    return api->command (req, reply, errmsg);
  }
  return fleece_errorf (errmsg, "unknown command '%s'; commands are status, "
                        "snapshot-begin, snapshot-end, quiesce, resume, "
                        "checkpoint-create, checkpoint-delete, stream-pause, "
                        "stream-resume and stream-set-speed",
                        req->command);
}
