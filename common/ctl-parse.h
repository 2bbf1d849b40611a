/* nbdkit-fleece
 * SPDX-License-Identifier: BSD-3-Clause
 *
 * Control socket requests (product contract, section 4): a request is
 * one line "COMMAND [arg ...]" where each arg is "key=value" or a bare
 * word.  The parser and the accessors are pure (ctl-parse.c); the
 * server that reads lines from clients is in control.c and
 * ctl-client.c.
 */

#ifndef FLEECE_CTL_PARSE_H
#define FLEECE_CTL_PARSE_H

#include <stddef.h>

#define CTL_MAX_LINE 4096       /* bytes, including the newline */
#define CTL_MAX_ARGS 16

struct ctl_arg {
  char *key;                    /* NULL for a bare word */
  char *value;
};

struct ctl_request {
  char *command;
  size_t nargs;
  struct ctl_arg args[CTL_MAX_ARGS];
};

/* Parse one line (without its newline; a trailing \r is ignored).
 * Rules: words are separated by spaces or tabs; the command is
 * [a-z][a-z0-9-]*; a key is [a-z][a-z0-9_-]*; values and bare words
 * are printable ASCII other than space; at most CTL_MAX_ARGS args; a
 * key may not repeat.  Returns 0, or -1 with *errmsg set to a
 * malloc'd message fit for the reply (req is then empty).
 */
extern int ctl_parse_line (const char *line, size_t len,
                           struct ctl_request *req, char **errmsg);
extern void ctl_request_free (struct ctl_request *req);
/* Value of key=..., or NULL. */
extern const char *ctl_request_get (const struct ctl_request *req,
                                    const char *key);
/* The i'th bare word (0-based), or NULL. */
extern const char *ctl_request_word (const struct ctl_request *req,
                                     size_t i);
/* Check that every key=value arg has a key in the NULL-terminated list
 * keys (NULL: no keys) and that there are at most max_words bare
 * words.  Returns 0 or -1 with *errmsg set (malloc'd).
 */
extern int ctl_request_check (const struct ctl_request *req,
                              const char *const *keys, size_t max_words,
                              char **errmsg);

#endif /* FLEECE_CTL_PARSE_H */
