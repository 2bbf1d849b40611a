/* nbdkit-fleece
 * SPDX-License-Identifier: BSD-3-Clause
 *
 * A small strict JSON checker for the fuzz harnesses (header only, so
 * each harness stays one translation unit).  It checks what the
 * control socket promises a client: the text is exactly one JSON value
 * (RFC 8259 grammar) on one line, with no raw control bytes anywhere.
 * Bytes >= 0x80 inside strings are accepted as they are (json.h copies
 * them unchanged; UTF-8 validity is not checked).
 *
 * It follows the same grammar as fleecectl's reader (fleecectl/jsonr.c)
 * on purpose, written apart from it: the harnesses judge what the
 * server writes with a checker that shares no code with the client
 * that reads it, so a fault in one cannot hide a fault in the other.
 * It also builds no tree and allocates nothing, which keeps the
 * harnesses fast.
 */

#ifndef FLEECE_FUZZ_JSON_CHECK_H
#define FLEECE_FUZZ_JSON_CHECK_H

#include <stdbool.h>
#include <stddef.h>
#include <string.h>

struct jcheck {
  const char *p;
  const char *end;
  unsigned depth;
};

#define JCHECK_MAX_DEPTH 64

static bool jcheck_value (struct jcheck *j);

static void
jcheck_ws (struct jcheck *j)
{
  /* Only spaces: a tab would be legal JSON but never appears in our
   * replies, and \n / \r would break the one-line rule.
   */
  while (j->p < j->end && *j->p == ' ')
    j->p++;
}

static bool
jcheck_lit (struct jcheck *j, const char *lit)
{
  size_t n = strlen (lit);

  if ((size_t) (j->end - j->p) < n || memcmp (j->p, lit, n) != 0)
    return false;
  j->p += n;
  return true;
}

static bool
jcheck_hex (char c)
{
  return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') ||
    (c >= 'A' && c <= 'F');
}

static bool
jcheck_string (struct jcheck *j)
{
  if (j->p >= j->end || *j->p != '"')
    return false;
  j->p++;
  while (j->p < j->end) {
    unsigned char c = (unsigned char) *j->p++;

    if (c == '"')
      return true;
    if (c < 0x20 || c == 0x7f)
      return false;             /* raw control byte inside a string */
    if (c == '\\') {
      if (j->p >= j->end)
        return false;
      c = (unsigned char) *j->p++;
      switch (c) {
      case '"': case '\\': case '/': case 'b': case 'f': case 'n':
      case 'r': case 't':
        break;
      case 'u':
        if (j->end - j->p < 4 || !jcheck_hex (j->p[0]) ||
            !jcheck_hex (j->p[1]) || !jcheck_hex (j->p[2]) ||
            !jcheck_hex (j->p[3]))
          return false;
        j->p += 4;
        break;
      default:
        return false;
      }
    }
  }
  return false;                 /* unterminated */
}

static bool
jcheck_digits (struct jcheck *j)
{
  const char *start = j->p;

  while (j->p < j->end && *j->p >= '0' && *j->p <= '9')
    j->p++;
  return j->p > start;
}

static bool
jcheck_number (struct jcheck *j)
{
  if (j->p < j->end && *j->p == '-')
    j->p++;
  if (j->p < j->end && *j->p == '0')
    j->p++;
  else if (!jcheck_digits (j))
    return false;
  if (j->p < j->end && *j->p == '.') {
    j->p++;
    if (!jcheck_digits (j))
      return false;
  }
  if (j->p < j->end && (*j->p == 'e' || *j->p == 'E')) {
    j->p++;
    if (j->p < j->end && (*j->p == '+' || *j->p == '-'))
      j->p++;
    if (!jcheck_digits (j))
      return false;
  }
  return true;
}

/* Object or array: open is '{' or '['. */
static bool
jcheck_container (struct jcheck *j, char open)
{
  char close = open == '{' ? '}' : ']';

  if (++j->depth > JCHECK_MAX_DEPTH)
    return false;
  j->p++;                       /* the opening bracket */
  jcheck_ws (j);
  if (j->p < j->end && *j->p == close) {
    j->p++;
    j->depth--;
    return true;
  }
  for (;;) {
    jcheck_ws (j);
    if (open == '{') {
      if (!jcheck_string (j))
        return false;
      jcheck_ws (j);
      if (j->p >= j->end || *j->p != ':')
        return false;
      j->p++;
    }
    if (!jcheck_value (j))
      return false;
    jcheck_ws (j);
    if (j->p >= j->end)
      return false;
    if (*j->p == ',') {
      j->p++;
      continue;
    }
    if (*j->p != close)
      return false;
    j->p++;
    j->depth--;
    return true;
  }
}

static bool
jcheck_value (struct jcheck *j)
{
  jcheck_ws (j);
  if (j->p >= j->end)
    return false;
  switch (*j->p) {
  case '{': case '[':
    return jcheck_container (j, *j->p);
  case '"':
    return jcheck_string (j);
  case 't':
    return jcheck_lit (j, "true");
  case 'f':
    return jcheck_lit (j, "false");
  case 'n':
    return jcheck_lit (j, "null");
  default:
    return jcheck_number (j);
  }
}

/* Is s[0..len) exactly one JSON value on one line? */
static inline bool
json_check (const char *s, size_t len)
{
  struct jcheck j = { s, s + len, 0 };
  size_t i;

  for (i = 0; i < len; i++) {
    if ((unsigned char) s[i] < 0x20 || s[i] == 0x7f)
      return false;             /* also catches \n, \r and NUL */
  }
  if (!jcheck_value (&j))
    return false;
  jcheck_ws (&j);
  return j.p == j.end;
}

/* Decode the JSON string literal s[0..len) (quotes included) into out
 * (at least len bytes).  Only escapes that json.c may write are
 * decoded; \u escapes must be below 0x80.  Returns the decoded length,
 * or (size_t) -1 if s is not such a literal.
 */
static inline size_t
json_unquote (const char *s, size_t len, char *out)
{
  size_t i, n = 0;

  if (len < 2 || s[0] != '"' || s[len - 1] != '"')
    return (size_t) -1;
  for (i = 1; i < len - 1; i++) {
    unsigned char c = (unsigned char) s[i];

    if (c == '"' || c < 0x20 || c == 0x7f)
      return (size_t) -1;       /* unescaped quote or control byte */
    if (c != '\\') {
      out[n++] = (char) c;
      continue;
    }
    if (++i >= len - 1)
      return (size_t) -1;
    switch (s[i]) {
    case '"': out[n++] = '"'; break;
    case '\\': out[n++] = '\\'; break;
    case 'b': out[n++] = '\b'; break;
    case 'f': out[n++] = '\f'; break;
    case 'n': out[n++] = '\n'; break;
    case 'r': out[n++] = '\r'; break;
    case 't': out[n++] = '\t'; break;
    case 'u': {
      unsigned v = 0, k;

      if (i + 4 >= len - 1)     /* 4 hex digits, then the closing quote */
        return (size_t) -1;
      for (k = 1; k <= 4; k++) {
        char h = s[i + k];

        if (!jcheck_hex (h))
          return (size_t) -1;
        v = v * 16 + (unsigned) (h <= '9' ? h - '0' : (h | 0x20) - 'a' + 10);
      }
      if (v >= 0x80)
        return (size_t) -1;
      out[n++] = (char) v;
      i += 4;
      break;
    }
    default:
      return (size_t) -1;
    }
  }
  return n;
}

#endif /* FLEECE_FUZZ_JSON_CHECK_H */
