/* nbdkit-fleece
 * SPDX-License-Identifier: BSD-3-Clause
 *
 * Unit test for the control socket's request parser (common/ctl-parse.c):
 * a table of good and bad lines, the longest line, the accessors and
 * the checks of keys and words against a command's row.
 */

#include <config.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ctl-parse.h"
#include "unit.h"

struct parse_case {
  const char *line;
  size_t len;                   /* 0: strlen (line) */
  const char *error;            /* NULL: must parse; else substring */
};

static void
check_parse_case (const struct parse_case *t)
{
  struct ctl_request req;
  char *errmsg = (char *) "unset";
  size_t len = t->len ? t->len : strlen (t->line);
  int r = ctl_parse_line (t->line, len, &req, &errmsg);

  if (t->error == NULL) {
    CHECK (r == 0);
    CHECK (errmsg == NULL);
    if (r == -1)
      fprintf (stderr, "  line '%s': %s\n", t->line, errmsg);
  }
  else {
    CHECK (r == -1);
    CHECK (errmsg != NULL && strstr (errmsg, t->error) != NULL);
    CHECK (req.command == NULL && req.nargs == 0);
    if (r == 0 || errmsg == NULL || strstr (errmsg, t->error) == NULL)
      fprintf (stderr, "  line '%s': got '%s', expected '%s'\n",
               t->line, r == 0 ? "success" : errmsg, t->error);
    free (errmsg);
  }
  ctl_request_free (&req);
}

static void
test_parse_table (void)
{
  static const struct parse_case cases[] = {
    { "status", 0, NULL },
    { "snapshot-begin checkpoint=c1 since=c0", 0, NULL },
    { "checkpoint-create c1", 0, NULL },
    { "status\r", 0, NULL },
    { "\tstatus \t a=b\t", 0, NULL },
    { "cmd k=v=w", 0, NULL },
    { "a1-b x_y-z9=1 w0rd!~", 0, NULL },
    { "c 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16", 0, NULL },

    { "", 0, "empty line: expected a command such as 'status'" },
    { "   \t ", 0, "empty line" },
    { "\r", 1, "empty line" },
    { "Status", 0, "unknown character 'S' in command 'Status'" },
    { "1status", 0, "unknown character '1' in command" },
    { "sta_tus", 0, "unknown character '_' in command" },
    { "=x", 0, "missing command" },
    { "k=v status", 0, "missing command" },
    { "status =x", 0, "argument '=x' has no key" },
    { "status k=", 0, "argument 'k=' has an empty value" },
    { "status K=v", 0, "unknown character 'K' in key 'K'" },
    { "status 1k=v", 0, "unknown character '1' in key" },
    { "s since=a since=b", 0, "duplicate key 'since'" },
    { "c 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17", 0,
      "too many arguments (limit 16)" },
    { "status\x01", 0, "control character 0x01" },
    { "stat\rus", 0, "control character 0x0d" },
    { "status\r\r", 0, "control character 0x0d" },
    { "status \x7f", 0, "control character 0x7f" },
    { "status \xff", 0, "non-ASCII byte 0xff" },
    { "status caf\xc3\xa9", 0, "non-ASCII byte 0xc3" },
    { "sta\0tus", 7, "NUL byte" },
  };
  size_t i;

  for (i = 0; i < ARRAY_SIZE (cases); i++)
    check_parse_case (&cases[i]);
}

/* Exactly CTL_MAX_LINE - 1 bytes is the longest line. */
static void
test_parse_length (void)
{
  static char line[CTL_MAX_LINE + 1];
  struct ctl_request req;
  char *errmsg;

  memset (line, 'x', sizeof line);
  memcpy (line, "echo ", 5);
  CHECK (ctl_parse_line (line, CTL_MAX_LINE - 1, &req, &errmsg) == 0);
  CHECK (req.nargs == 1 && strlen (req.args[0].value) == CTL_MAX_LINE - 6);
  ctl_request_free (&req);

  CHECK (ctl_parse_line (line, CTL_MAX_LINE, &req, &errmsg) == -1);
  CHECK (errmsg && strcmp (errmsg, "line too long (limit 4096 bytes)") == 0);
  free (errmsg);
}

static void
test_request_access (void)
{
  static const char line[] =
    "snapshot-begin checkpoint=c1 w1 since=c0 w2 x=a=b";
  struct ctl_request req;
  char *errmsg;

  CHECK (ctl_parse_line (line, strlen (line), &req, &errmsg) == 0);
  CHECK (strcmp (req.command, "snapshot-begin") == 0);
  CHECK (req.nargs == 5);
  CHECK (strcmp (ctl_request_get (&req, "checkpoint"), "c1") == 0);
  CHECK (strcmp (ctl_request_get (&req, "since"), "c0") == 0);
  CHECK (strcmp (ctl_request_get (&req, "x"), "a=b") == 0);
  CHECK (ctl_request_get (&req, "w1") == NULL);
  CHECK (ctl_request_get (&req, "nope") == NULL);
  CHECK (strcmp (ctl_request_word (&req, 0), "w1") == 0);
  CHECK (strcmp (ctl_request_word (&req, 1), "w2") == 0);
  CHECK (ctl_request_word (&req, 2) == NULL);
  ctl_request_free (&req);
  CHECK (req.command == NULL && req.nargs == 0);
  ctl_request_free (&req);      /* twice is fine */
}

/* Parse line and run ctl_request_check on it; return the message
 * (malloc'd) or NULL when the check passed.
 */
static char *
check_msg (const char *line, const char *const *keys, size_t max_words)
{
  struct ctl_request req;
  char *errmsg = NULL;
  int r;

  if (ctl_parse_line (line, strlen (line), &req, &errmsg) == -1)
    return errmsg;
  r = ctl_request_check (&req, keys, max_words, &errmsg);
  CHECK ((r == 0) == (errmsg == NULL));
  ctl_request_free (&req);
  return errmsg;
}

static void
test_request_check (void)
{
  static const char *const keys[] = { "checkpoint", "since", NULL };
  char *m;

  CHECK (check_msg ("snapshot-begin checkpoint=c1 since=c0", keys, 0)
         == NULL);
  CHECK (check_msg ("status", NULL, 0) == NULL);
  CHECK (check_msg ("checkpoint-create c1", NULL, 1) == NULL);

  m = check_msg ("snapshot-begin foo=1", keys, 0);
  CHECK (m && strcmp (m, "unknown argument 'foo' for command "
                      "'snapshot-begin'") == 0);
  free (m);

  m = check_msg ("status a=1", NULL, 0);
  CHECK (m && strstr (m, "unknown argument 'a'"));
  free (m);

  m = check_msg ("checkpoint-create c1 c2", NULL, 1);
  CHECK (m && strstr (m, "too many arguments"));
  free (m);

  m = check_msg ("status now", NULL, 0);
  CHECK (m && strstr (m, "unexpected argument 'now'"));
  free (m);
}

int
main (void)
{
  test_parse_table ();
  test_parse_length ();
  test_request_access ();
  test_request_check ();
  UNIT_EXIT ();
}
