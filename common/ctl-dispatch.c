/* nbdkit-fleece
 * SPDX-License-Identifier: BSD-3-Clause
 *
 * The control commands of the whole stack (product contract, section
 * 4).  Runs inside whichever filter owns the control server.  Knows no
 * filter's commands: it looks a command up in the tables the loaded
 * filters publish (struct fleece_command, fleece-api.h), checks its
 * keys and words, and calls its handler.  The stack-wide commands
 * status and help are the only ones defined here; status asks every
 * filter for its members, or takes the stand-ins of fleece_filter_rows
 * for a filter that is not loaded.  The server runs one command at a
 * time (control.h), so a command sees no other command half done.
 */

#include <config.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "control.h"
#include "ctl-owner.h"
#include "errors.h"
#include "fleece-api.h"

static int
do_status (const struct ctl_request *req, struct jbuf *reply, char **errmsg)
{
  const struct fleece_filter_api *api;
  const struct fleece_filter_row *row;
  bool first = true;
  int i;

  for (i = 0; i < FLEECE_NR_FILTERS; i++) {
    row = &fleece_filter_rows[i];
    api = fleece_find (row->id);
    if (api && api->status)
      api->status (reply);
    else if (api == NULL && row->absent_status)
      jbuf_raw (reply, row->absent_status);
  }

  /* Which of the project's filters this process runs, top first. */
  jbuf_key (reply, "filters");
  jbuf_raw (reply, "[");
  for (i = 0; i < FLEECE_NR_FILTERS; i++) {
    if (fleece_find (i) == NULL)
      continue;
    if (!first)
      jbuf_raw (reply, ",");
    jbuf_string (reply, fleece_filter_name (i));
    first = false;
  }
  jbuf_raw (reply, "]");
  return 0;
}

static int do_help (const struct ctl_request *req, struct jbuf *reply,
                    char **errmsg);

static const struct fleece_command stack_commands[] = {
  { "status", NULL, 0, "the state of the snapshot, the checkpoints and "
    "the filters", do_status },
  { "help", NULL, 0, "the commands of this stack, one line each", do_help },
  { .name = NULL }
};

/* Calls fn for every command of the stack: the stack-wide ones (api
 * NULL), then those of each loaded filter, top filter first.  Stops
 * and returns the row at which fn returns true, or NULL.
 */
static const struct fleece_command *
each_command (bool (*fn) (const struct fleece_command *cmd,
                          const struct fleece_filter_api *api, void *arg),
              void *arg)
{
  const struct fleece_command *cmd;
  const struct fleece_filter_api *api;
  int id;

  for (cmd = stack_commands; cmd->name; cmd++) {
    if (fn (cmd, NULL, arg))
      return cmd;
  }
  for (id = 0; id < FLEECE_NR_FILTERS; id++) {
    api = fleece_find (id);
    if (api == NULL || api->commands == NULL)
      continue;
    for (cmd = api->commands; cmd->name; cmd++) {
      if (fn (cmd, api, arg))
        return cmd;
    }
  }
  return NULL;
}

static bool
help_row (const struct fleece_command *cmd,
          const struct fleece_filter_api *api, void *arg)
{
  struct jbuf *reply = arg;
  const char *const *k;

  if (cmd != stack_commands)
    jbuf_raw (reply, ",");
  jbuf_raw (reply, "{");
  jbuf_key (reply, "name");
  jbuf_string (reply, cmd->name);
  jbuf_key (reply, "filter");
  jbuf_string (reply, api ? fleece_filter_name (api->id) : NULL);
  jbuf_key (reply, "keys");
  jbuf_raw (reply, "[");
  for (k = cmd->keys; k && *k; k++) {
    if (k != cmd->keys)
      jbuf_raw (reply, ",");
    jbuf_string (reply, *k);
  }
  jbuf_raw (reply, "]");
  jbuf_key (reply, "words");
  jbuf_u64 (reply, cmd->words);
  jbuf_key (reply, "help");
  jbuf_string (reply, cmd->help);
  jbuf_raw (reply, "}");
  return false;
}

static int
do_help (const struct ctl_request *req, struct jbuf *reply, char **errmsg)
{
  jbuf_key (reply, "commands");
  jbuf_raw (reply, "[");
  each_command (help_row, reply);
  jbuf_raw (reply, "]");
  return 0;
}

static bool
same_name (const struct fleece_command *cmd,
           const struct fleece_filter_api *api, void *arg)
{
  return strcmp (cmd->name, arg) == 0;
}

/* Append ", NAME" (or " and NAME" for the last, found by the caller)
 * to the list of names in arg.
 */
static bool
list_name (const struct fleece_command *cmd,
           const struct fleece_filter_api *api, void *arg)
{
  struct jbuf *names = arg;

  if (names->len > 0)
    jbuf_raw (names, ", ");
  jbuf_raw (names, cmd->name);
  return false;
}

static int
unknown_command (const char *name, char **errmsg)
{
  struct jbuf names = JBUF_INIT;
  char *last;
  int r;

  each_command (list_name, &names);
  if (names.failed)
    return fleece_errorf (errmsg, "unknown command '%s'", name);
  last = strrchr (names.s, ',');
  if (last)
    *last = '\0';
  r = fleece_errorf (errmsg, "unknown command '%s'; the commands of this "
                     "stack are %s%s%s ('help' says what each does)", name,
                     names.s, last ? " and" : "", last ? last + 1 : "");
  jbuf_free (&names);
  return r;
}

int
fleece_dispatch (const struct ctl_request *req, void *opaque,
                 struct jbuf *reply, char **errmsg)
{
  const struct fleece_command *cmd;

  cmd = each_command (same_name, req->command);
  if (cmd == NULL)
    return unknown_command (req->command, errmsg);
  if (ctl_request_check (req, cmd->keys, cmd->words, errmsg) == -1)
    return -1;
  return cmd->handler (req, reply, errmsg);
}
