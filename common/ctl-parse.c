/* nbdkit-fleece
 * SPDX-License-Identifier: BSD-3-Clause
 *
 * The control socket's request line parser and the helpers handlers
 * use on a parsed request (see ctl-parse.h).  Pure: no I/O, no global
 * state, no locks; fuzzed by fuzz/fuzz-control-line.c.
 */

#include <config.h>

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ctl-parse.h"
#include "errors.h"

/* Longest piece of a client's token quoted back in an error message. */
#define CTL_QUOTE_MAX 40

/* Every message below is made with fleece_errorf: set *errmsg to a
 * malloc'd message (NULL if even that fails) and return -1.
 */
#define fail fleece_errorf

/* Quote a client-supplied token in a message, cut to CTL_QUOTE_MAX
 * bytes: use as "'%.*s%s'" with QUOTE_ARGS (p, n).
 */
#define QUOTE_ARGS(p, n)                                        \
  (int) ((n) > CTL_QUOTE_MAX ? CTL_QUOTE_MAX : (n)), (p),       \
    ((n) > CTL_QUOTE_MAX ? "..." : "")

static bool
is_lower (char c)
{
  return c >= 'a' && c <= 'z';
}

static bool
is_digit (char c)
{
  return c >= '0' && c <= '9';
}

static bool
is_blank (char c)
{
  return c == ' ' || c == '\t';
}

/* Every byte must be printable ASCII or a tab (a separator). */
static int
check_bytes (const char *line, size_t len, char **errmsg)
{
  size_t i;
  unsigned char c;

  for (i = 0; i < len; i++) {
    c = (unsigned char) line[i];
    if (c == '\0')
      return fail (errmsg, "NUL byte at offset %zu in line", i);
    if (c >= 0x80)
      return fail (errmsg, "non-ASCII byte 0x%02x at offset %zu in line "
                   "(only printable ASCII is allowed)", c, i);
    if ((c < 0x20 && c != '\t') || c == 0x7f)
      return fail (errmsg, "control character 0x%02x at offset %zu in line",
                   c, i);
  }
  return 0;
}

/* Find the next word at or after *pos.  Returns false at the end. */
static bool
next_word (const char *line, size_t len, size_t *pos,
           const char **word, size_t *wlen)
{
  size_t i = *pos, start;

  while (i < len && is_blank (line[i]))
    i++;
  if (i == len)
    return false;
  start = i;
  while (i < len && !is_blank (line[i]))
    i++;
  *word = &line[start];
  *wlen = i - start;
  *pos = i;
  return true;
}

/* Index of the first byte of name[0..n) breaking [a-z][a-z0-9<extra>]*,
 * or n if it is valid.
 */
static size_t
bad_name_char (const char *name, size_t n, const char *extra)
{
  size_t i;

  for (i = 0; i < n; i++) {
    if (is_lower (name[i]))
      continue;
    if (i > 0 && (is_digit (name[i]) || strchr (extra, name[i]) != NULL))
      continue;
    return i;
  }
  return n;
}

static int
parse_command (const char *w, size_t n, struct ctl_request *req,
               char **errmsg)
{
  size_t bad;

  if (memchr (w, '=', n) != NULL)
    return fail (errmsg, "missing command: the line starts with the argument "
                 "'%.*s%s' (expected a command such as 'status')",
                 QUOTE_ARGS (w, n));
  bad = bad_name_char (w, n, "-");
  if (bad < n)
    return fail (errmsg, "unknown character '%c' in command '%.*s%s' "
                 "(commands are lower case: a-z, 0-9 and '-', "
                 "starting with a letter)", w[bad], QUOTE_ARGS (w, n));
  req->command = strndup (w, n);
  if (req->command == NULL)
    return fail (errmsg, "out of memory");
  return 0;
}

static int
check_key (const char *w, size_t n, const char *eq, const char *end,
           const struct ctl_request *req, char **errmsg)
{
  size_t klen = (size_t) (eq - w), bad, i;

  if (klen == 0)
    return fail (errmsg, "argument '%.*s%s' has no key (expected key=value)",
                 QUOTE_ARGS (w, n));
  if (eq + 1 == end)
    return fail (errmsg, "argument '%.*s%s' has an empty value "
                 "(expected key=value)", QUOTE_ARGS (w, n));
  bad = bad_name_char (w, klen, "-_");
  if (bad < klen)
    return fail (errmsg, "unknown character '%c' in key '%.*s%s' "
                 "(keys are lower case: a-z, 0-9, '_' and '-', "
                 "starting with a letter)", w[bad], QUOTE_ARGS (w, klen));
  for (i = 0; i < req->nargs; i++) {
    if (req->args[i].key && strlen (req->args[i].key) == klen &&
        memcmp (req->args[i].key, w, klen) == 0)
      return fail (errmsg, "duplicate key '%.*s%s'", QUOTE_ARGS (w, klen));
  }
  return 0;
}

/* Parse one argument word and append it to req. */
static int
parse_arg (const char *w, size_t n, struct ctl_request *req, char **errmsg)
{
  struct ctl_arg *arg;
  const char *eq = memchr (w, '=', n);

  if (req->nargs == CTL_MAX_ARGS)
    return fail (errmsg, "too many arguments (limit %d)", CTL_MAX_ARGS);

  arg = &req->args[req->nargs];
  if (eq == NULL) {
    arg->key = NULL;
    arg->value = strndup (w, n);
  }
  else {
    if (check_key (w, n, eq, w + n, req, errmsg) == -1)
      return -1;
    arg->key = strndup (w, (size_t) (eq - w));
    arg->value = strndup (eq + 1, (size_t) (w + n - eq - 1));
  }
  req->nargs++;                 /* so ctl_request_free frees both */
  if (arg->value == NULL || (eq != NULL && arg->key == NULL))
    return fail (errmsg, "out of memory");
  return 0;
}

int
ctl_parse_line (const char *line, size_t len, struct ctl_request *req,
                char **errmsg)
{
  const char *w;
  size_t n, pos = 0;

  memset (req, 0, sizeof *req);
  *errmsg = NULL;

  if (len >= CTL_MAX_LINE)
    return fail (errmsg, "line too long (limit %d bytes)", CTL_MAX_LINE);
  if (len > 0 && line[len - 1] == '\r')
    len--;
  if (check_bytes (line, len, errmsg) == -1)
    return -1;

  if (!next_word (line, len, &pos, &w, &n))
    return fail (errmsg, "empty line: expected a command such as 'status'");
  if (parse_command (w, n, req, errmsg) == -1)
    goto error;
  while (next_word (line, len, &pos, &w, &n)) {
    if (parse_arg (w, n, req, errmsg) == -1)
      goto error;
  }
  return 0;

 error:
  ctl_request_free (req);
  return -1;
}

void
ctl_request_free (struct ctl_request *req)
{
  size_t i;

  for (i = 0; i < req->nargs; i++) {
    free (req->args[i].key);
    free (req->args[i].value);
  }
  free (req->command);
  memset (req, 0, sizeof *req);
}

const char *
ctl_request_get (const struct ctl_request *req, const char *key)
{
  size_t i;

  for (i = 0; i < req->nargs; i++) {
    if (req->args[i].key && strcmp (req->args[i].key, key) == 0)
      return req->args[i].value;
  }
  return NULL;
}

const char *
ctl_request_word (const struct ctl_request *req, size_t i)
{
  size_t j;

  for (j = 0; j < req->nargs; j++) {
    if (req->args[j].key == NULL && i-- == 0)
      return req->args[j].value;
  }
  return NULL;
}

static bool
key_allowed (const char *const *keys, const char *key)
{
  for (; keys && *keys; keys++) {
    if (strcmp (*keys, key) == 0)
      return true;
  }
  return false;
}

int
ctl_request_check (const struct ctl_request *req,
                   const char *const *keys, size_t max_words,
                   char **errmsg)
{
  size_t i, words = 0;

  *errmsg = NULL;
  for (i = 0; i < req->nargs; i++) {
    const struct ctl_arg *arg = &req->args[i];

    if (arg->key && !key_allowed (keys, arg->key))
      return fail (errmsg, "unknown argument '%s' for command '%s'",
                   arg->key, req->command);
    if (arg->key == NULL && ++words > max_words) {
      if (max_words == 0)
        return fail (errmsg, "unexpected argument '%s': command '%s' "
                     "takes no bare words", arg->value, req->command);
      return fail (errmsg, "too many arguments: command '%s' takes at most "
                   "%zu bare word(s)", req->command, max_words);
    }
  }
  return 0;
}
