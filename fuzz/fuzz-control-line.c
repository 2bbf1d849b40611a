/* nbdkit-fleece
 * SPDX-License-Identifier: BSD-3-Clause
 *
 * libFuzzer harness for the control socket's request parser and reply
 * path (common/ctl-parse.c, common/control.c, common/ctl-dispatch.c).  The input is one
 * raw request line as a client would send it (without the newline).
 *
 * Checks:
 * - ctl_parse_line agrees with an independent tokenizer written from
 *   the rules in control.h (same accept/reject decision, same command,
 *   same args in the same order); on failure the request is empty and
 *   the message is set;
 * - ctl_request_get, ctl_request_word and ctl_request_check agree with
 *   straightforward reference versions;
 * - ctl_server_handle_line (the whole path a client line takes, with
 *   the real command dispatcher behind it) always returns exactly one
 *   line of valid JSON, {"ok":true...} or {"ok":false,"error":"..."},
 *   with ok matching what the command should do in a process with none
 *   of the project's filters loaded.
 *
 * The server is made once (ctl_server_new binds a socket, so a socket
 * is created in a temporary directory and unlinked at once; the
 * server is never started, so no thread or client is involved).
 */

#include <config.h>

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "control.h"
#include "ctl-owner.h"
#include "json.h"
#include "json-check.h"
#include "fuzz-check.h"

static struct ctl_server *srv;

/*----------------------------------------------------------------------
 * Reference tokenizer (from the rules in ctl-parse.h, not from
 * ctl-parse.c).
 */

struct ref_arg {
  const char *key;  size_t klen;        /* key NULL for a bare word */
  const char *value; size_t vlen;
};

struct ref_req {
  const char *cmd; size_t clen;
  size_t nargs;
  struct ref_arg args[CTL_MAX_ARGS];
};

static bool
ref_name_ok (const char *s, size_t n, const char *extra)
{
  size_t i;

  if (n == 0 || !(s[0] >= 'a' && s[0] <= 'z'))
    return false;
  for (i = 1; i < n; i++) {
    if ((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= '0' && s[i] <= '9') ||
        strchr (extra, s[i]) != NULL)
      continue;
    return false;
  }
  return true;
}

static bool
ref_parse (const char *line, size_t len, struct ref_req *r)
{
  size_t i = 0, nwords = 0;

  memset (r, 0, sizeof *r);
  if (len >= CTL_MAX_LINE)
    return false;
  if (len > 0 && line[len - 1] == '\r')
    len--;
  for (i = 0; i < len; i++) {
    unsigned char c = (unsigned char) line[i];

    if (c == '\t')
      continue;
    if (c < 0x20 || c >= 0x7f)
      return false;
  }

  i = 0;
  for (;;) {
    const char *w, *eq;
    size_t n, j;

    while (i < len && (line[i] == ' ' || line[i] == '\t'))
      i++;
    if (i == len)
      break;
    w = &line[i];
    while (i < len && line[i] != ' ' && line[i] != '\t')
      i++;
    n = (size_t) (&line[i] - w);
    eq = memchr (w, '=', n);

    if (nwords++ == 0) {
      if (eq != NULL || !ref_name_ok (w, n, "-"))
        return false;
      r->cmd = w;
      r->clen = n;
      continue;
    }
    if (r->nargs == CTL_MAX_ARGS)
      return false;
    if (eq == NULL) {
      r->args[r->nargs].key = NULL;
      r->args[r->nargs].value = w;
      r->args[r->nargs].vlen = n;
    }
    else {
      size_t klen = (size_t) (eq - w);

      if (klen == 0 || klen + 1 == n || !ref_name_ok (w, klen, "-_"))
        return false;
      for (j = 0; j < r->nargs; j++) {
        if (r->args[j].key && r->args[j].klen == klen &&
            memcmp (r->args[j].key, w, klen) == 0)
          return false;
      }
      r->args[r->nargs].key = w;
      r->args[r->nargs].klen = klen;
      r->args[r->nargs].value = eq + 1;
      r->args[r->nargs].vlen = n - klen - 1;
    }
    r->nargs++;
  }
  return nwords > 0;
}

static bool
same (const char *s, const char *p, size_t n)
{
  return s != NULL && strlen (s) == n && memcmp (s, p, n) == 0;
}

/*----------------------------------------------------------------------
 * The handler behind the server: the real dispatcher, except for the
 * fuzz-only commands "echo" (appends every arg to the reply with
 * jbuf_key / jbuf_string) and "echo-fail" (fails with a message that
 * holds every arg, newlines included, to exercise the error path).
 */

static int
handler (const struct ctl_request *req, void *opaque, struct jbuf *reply,
         char **errmsg)
{
  size_t i;

  if (strcmp (req->command, "echo") == 0) {
    for (i = 0; i < req->nargs; i++) {
      jbuf_key (reply, req->args[i].key ? req->args[i].key : "word");
      jbuf_string (reply, req->args[i].value);
    }
    jbuf_key (reply, "multi\nline");
    jbuf_string (reply, "a\nb\rc");
    return 0;
  }
  if (strcmp (req->command, "echo-fail") == 0) {
    struct jbuf m = JBUF_INIT;

    jbuf_raw (&m, "failed:\n");
    for (i = 0; i < req->nargs; i++) {
      jbuf_raw (&m, req->args[i].value);
      jbuf_raw (&m, "\"\\\n");
    }
    *errmsg = jbuf_steal (&m);
    return -1;
  }
  return fleece_dispatch (req, opaque, reply, errmsg);
}

static void
free_server (void)
{
  ctl_server_free (srv);
  srv = NULL;
}

int
LLVMFuzzerInitialize (int *argc, char ***argv)
{
  char dir[4096], path[4200];
  char *errmsg = NULL;

  fuzz_make_tmpdir (dir, sizeof dir);
  snprintf (path, sizeof path, "%s/ctl.sock", dir);
  srv = ctl_server_new (path, handler, NULL, &errmsg);
  if (srv == NULL) {
    fprintf (stderr, "ctl_server_new %s: %s\n", path,
             errmsg ? errmsg : "failed");
    abort ();
  }
  /* Lines are handed over directly: the socket file is not needed. */
  unlink (path);
  rmdir (dir);
  atexit (free_server);
  return 0;
}

/*----------------------------------------------------------------------
 * The checks.
 */

static void
check_accessors (const struct ctl_request *req, const struct ref_req *r,
                 const uint8_t *data, size_t size)
{
  const char *keys[CTL_MAX_ARGS + 2];
  size_t i, j, nkeys = 0, nwords = 0, max_words;
  char *errmsg;
  bool expect_ok;
  int rc;

  /* get: each key finds its own value (keys are unique). */
  for (i = 0; i < req->nargs; i++) {
    if (req->args[i].key)
      CHECK (ctl_request_get (req, req->args[i].key) == req->args[i].value);
  }
  CHECK (ctl_request_get (req, "") == NULL);
  {
    const char *v = ctl_request_get (req, "since");

    for (i = 0; i < r->nargs; i++)
      if (r->args[i].key && same ("since", r->args[i].key, r->args[i].klen))
        break;
    if (i == r->nargs)
      CHECK (v == NULL);
    else
      CHECK (v != NULL && same (v, r->args[i].value, r->args[i].vlen));
  }

  /* word: the i'th bare word, in order, then NULL. */
  for (i = 0; i < r->nargs; i++) {
    if (r->args[i].key == NULL) {
      const char *w = ctl_request_word (req, nwords);

      CHECK (same (w, r->args[i].value, r->args[i].vlen));
      nwords++;
    }
  }
  CHECK (ctl_request_word (req, nwords) == NULL);
  CHECK (ctl_request_word (req, SIZE_MAX) == NULL);

  /* check with everything allowed succeeds. */
  for (i = 0; i < req->nargs; i++)
    if (req->args[i].key)
      keys[nkeys++] = req->args[i].key;
  keys[nkeys] = NULL;
  rc = ctl_request_check (req, keys, nwords, &errmsg);
  CHECK (rc == 0 && errmsg == NULL);

  /* check with no keys and no words fails iff there is any arg. */
  rc = ctl_request_check (req, NULL, 0, &errmsg);
  CHECK ((rc == 0) == (req->nargs == 0));
  CHECK ((rc == 0) == (errmsg == NULL));
  free (errmsg);

  /* check with a subset of the keys chosen by the input, and a
   * word limit chosen by the input, against a reference.
   */
  nkeys = 0;
  for (i = 0, j = 0; i < req->nargs; i++) {
    if (req->args[i].key && (data[(j++) % size] & 1))
      keys[nkeys++] = req->args[i].key;
  }
  keys[nkeys++] = "not-a-key-anyone-sends";
  keys[nkeys] = NULL;
  max_words = size > 1 ? data[1] % 4 : 0;

  expect_ok = true;
  nwords = 0;
  for (i = 0; i < req->nargs && expect_ok; i++) {
    if (req->args[i].key) {
      bool found = false;

      for (j = 0; keys[j]; j++)
        found |= strcmp (keys[j], req->args[i].key) == 0;
      expect_ok = found;
    }
    else if (++nwords > max_words)
      expect_ok = false;
  }
  rc = ctl_request_check (req, keys, max_words, &errmsg);
  CHECK ((rc == 0) == expect_ok);
  CHECK ((rc == 0) == (errmsg == NULL));
  if (errmsg) {
    struct jbuf b = JBUF_INIT;
    char *s;

    jbuf_string (&b, errmsg);
    s = jbuf_steal (&b);
    CHECK (s && json_check (s, strlen (s)));
    free (s);
    free (errmsg);
  }
}

static void
check_reply (const uint8_t *data, size_t size, bool parsed,
             const struct ref_req *r)
{
  static const char ok_prefix[] = "{\"ok\":true";
  static const char err_prefix[] = "{\"ok\":false,\"error\":\"";
  char *reply;
  size_t len;
  bool expect_ok = false;

  reply = ctl_server_handle_line (srv, (const char *) data, size);
  CHECK (reply != NULL);
  len = strlen (reply);
  if (!json_check (reply, len)) {
    fprintf (stderr, "invalid reply: %s\n", reply);
    CHECK (!"the reply is one line of valid JSON");
  }

  if (parsed) {
    if (same ("status", r->cmd, r->clen) || same ("help", r->cmd, r->clen))
      expect_ok = r->nargs == 0;
    else if (same ("echo", r->cmd, r->clen))
      expect_ok = true;
  }
  if (expect_ok) {
    CHECK (strncmp (reply, ok_prefix, sizeof ok_prefix - 1) == 0);
    CHECK (reply[len - 1] == '}');
  }
  else {
    CHECK (strncmp (reply, err_prefix, sizeof err_prefix - 1) == 0);
    CHECK (len >= 2 && strcmp (reply + len - 2, "\"}") == 0);
  }
  free (reply);
}

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
  const char *line = (const char *) data;
  struct ctl_request req;
  struct ref_req r;
  char *errmsg = (char *) 1;
  bool expect, parsed;
  size_t i;

  expect = ref_parse (line, size, &r);
  parsed = ctl_parse_line (line, size, &req, &errmsg) == 0;
  if (parsed != expect) {
    fprintf (stderr, "ctl_parse_line %s, the reference %s it (%s)\n",
             parsed ? "accepted" : "rejected",
             expect ? "accepts" : "rejects",
             errmsg ? errmsg : "no message");
    CHECK (!"parser agrees with the reference");
  }

  if (parsed) {
    CHECK (errmsg == NULL);
    CHECK (same (req.command, r.cmd, r.clen));
    CHECK (req.nargs == r.nargs);
    for (i = 0; i < r.nargs; i++) {
      if (r.args[i].key == NULL)
        CHECK (req.args[i].key == NULL);
      else
        CHECK (same (req.args[i].key, r.args[i].key, r.args[i].klen));
      CHECK (same (req.args[i].value, r.args[i].value, r.args[i].vlen));
    }
    check_accessors (&req, &r, data, size);
    ctl_request_free (&req);
    CHECK (req.command == NULL && req.nargs == 0);
  }
  else {
    CHECK (req.command == NULL && req.nargs == 0);
    CHECK (errmsg != NULL);     /* only NULL on out of memory */
    CHECK (strchr (errmsg, '\n') == NULL);
    free (errmsg);
  }

  check_reply (data, size, parsed, &r);
  return 0;
}
