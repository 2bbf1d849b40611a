/* nbdkit-fleece
 * SPDX-License-Identifier: BSD-3-Clause
 *
 * One request line to one reply line (see ctl-reply.h): parse, call
 * the handler, wrap what it appended.  No state, no lock; the caller
 * makes sure handlers run one at a time.
 */

#include <config.h>

#include <stdlib.h>
#include <string.h>

#include <nbdkit-filter.h>

#include "control.h"
#include "ctl-reply.h"
#include "json.h"

static char *
error_reply (const char *msg)
{
  struct jbuf b = JBUF_INIT;

  jbuf_raw (&b, "{\"ok\":false,\"error\":");
  jbuf_string (&b, msg ? msg : "out of memory");
  jbuf_raw (&b, "}");
  return jbuf_steal (&b);
}

/* Finish the success reply the handler appended to.  Members must
 * keep the reply on one line.
 */
static char *
ok_reply (struct jbuf *reply)
{
  char *s;

  jbuf_raw (reply, "}");
  if (reply->failed)
    return error_reply (NULL);
  for (s = reply->s; *s; s++) {
    if (*s == '\n' || *s == '\r')
      *s = ' ';
  }
  return jbuf_steal (reply);
}

/* The handler gets a reply that already holds {"ok":true, so members
 * it appends either as raw ",..." text or with jbuf_key (which then
 * supplies the comma) come out right.
 */
static char *
dispatch (ctl_handler handler, void *opaque, const struct ctl_request *req)
{
  struct jbuf reply = JBUF_INIT;
  char *errmsg = NULL, *text;
  int r;

  jbuf_raw (&reply, "{\"ok\":true");
  r = handler (req, opaque, &reply, &errmsg);
  if (r == 0) {
    nbdkit_debug ("control: %s: ok", req->command);
    text = ok_reply (&reply);
  }
  else {
    nbdkit_debug ("control: %s: %s", req->command,
                  errmsg ? errmsg : "internal error");
    text = error_reply (errmsg ? errmsg : "internal error");
  }
  jbuf_free (&reply);
  free (errmsg);
  return text;
}

char *
ctl_reply (ctl_handler handler, void *opaque, const char *line, size_t len)
{
  struct ctl_request req;
  char *errmsg, *reply;

  if (ctl_parse_line (line, len, &req, &errmsg) == -1) {
    nbdkit_debug ("control: bad request: %s",
                  errmsg ? errmsg : "out of memory");
    reply = error_reply (errmsg);
    free (errmsg);
    return reply;
  }
  reply = dispatch (handler, opaque, &req);
  ctl_request_free (&req);
  return reply;
}
