/* nbdkit-fleece
 * SPDX-License-Identifier: BSD-3-Clause
 *
 * A tiny append-only JSON text builder (see json.h).  The buffer
 * grows by doubling and is always NUL-terminated once allocated.  The
 * first allocation failure sets b->failed, after which every append
 * does nothing and jbuf_steal returns NULL, so callers only need to
 * check once, at the end.
 */

#include <config.h>

#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "json.h"

#define JBUF_MIN_CAP 64

void
jbuf_free (struct jbuf *b)
{
  free (b->s);
  b->s = NULL;
  b->len = b->cap = 0;
  b->failed = false;
}

/* Make room for extra more bytes plus the terminating NUL.  Returns
 * false (and makes the failure sticky) if that is not possible.
 */
static bool
jbuf_reserve (struct jbuf *b, size_t extra)
{
  size_t need, cap;
  char *s;

  if (b->failed)
    return false;
  if (extra > SIZE_MAX - b->len - 1)
    goto fail;
  need = b->len + extra + 1;
  if (need <= b->cap)
    return true;

  cap = b->cap ? b->cap : JBUF_MIN_CAP;
  while (cap < need) {
    if (cap > SIZE_MAX / 2) {
      cap = need;
      break;
    }
    cap *= 2;
  }
  s = realloc (b->s, cap);
  if (s == NULL)
    goto fail;
  if (b->s == NULL)
    s[0] = '\0';
  b->s = s;
  b->cap = cap;
  return true;

 fail:
  b->failed = true;
  return false;
}

/* Append n bytes (which must not contain a NUL). */
static void
jbuf_append (struct jbuf *b, const char *text, size_t n)
{
  if (!jbuf_reserve (b, n))
    return;
  memcpy (b->s + b->len, text, n);
  b->len += n;
  b->s[b->len] = '\0';
}

void
jbuf_raw (struct jbuf *b, const char *text)
{
  jbuf_append (b, text, strlen (text));
}

void
jbuf_printf (struct jbuf *b, const char *fmt, ...)
{
  va_list args, args2;
  int n;

  if (!jbuf_reserve (b, JBUF_MIN_CAP))
    return;

  va_start (args, fmt);
  va_copy (args2, args);
  n = vsnprintf (b->s + b->len, b->cap - b->len, fmt, args);
  if (n >= 0 && (size_t) n >= b->cap - b->len) {
    /* Too small: grow to the exact size and format again. */
    if (jbuf_reserve (b, (size_t) n))
      n = vsnprintf (b->s + b->len, b->cap - b->len, fmt, args2);
    else
      n = -1;
  }
  va_end (args2);
  va_end (args);

  if (n < 0) {
    b->failed = true;
    if (b->s)
      b->s[b->len] = '\0';      /* drop any partial output */
    return;
  }
  b->len += (size_t) n;
}

/* Does byte c need escaping inside a JSON string? */
static bool
needs_escape (unsigned char c)
{
  return c < 0x20 || c == 0x7f || c == '"' || c == '\\';
}

static void
jbuf_escape_char (struct jbuf *b, unsigned char c)
{
  char tmp[8];

  switch (c) {
  case '"':  jbuf_append (b, "\\\"", 2); break;
  case '\\': jbuf_append (b, "\\\\", 2); break;
  case '\b': jbuf_append (b, "\\b", 2); break;
  case '\f': jbuf_append (b, "\\f", 2); break;
  case '\n': jbuf_append (b, "\\n", 2); break;
  case '\r': jbuf_append (b, "\\r", 2); break;
  case '\t': jbuf_append (b, "\\t", 2); break;
  default:
    snprintf (tmp, sizeof tmp, "\\u%04x", (unsigned) c);
    jbuf_append (b, tmp, 6);
  }
}

void
jbuf_string (struct jbuf *b, const char *str)
{
  const unsigned char *p;
  size_t run;

  if (str == NULL) {
    jbuf_raw (b, "null");
    return;
  }

  jbuf_append (b, "\"", 1);
  p = (const unsigned char *) str;
  while (*p) {
    /* Copy the longest run that needs no escaping in one go. */
    for (run = 0; p[run] && !needs_escape (p[run]); run++)
      ;
    jbuf_append (b, (const char *) p, run);
    p += run;
    if (*p)
      jbuf_escape_char (b, *p++);
  }
  jbuf_append (b, "\"", 1);
}

void
jbuf_key (struct jbuf *b, const char *key)
{
  char last;

  if (b->len > 0 && !b->failed) {
    last = b->s[b->len - 1];
    if (last != '{' && last != '[' && last != ',')
      jbuf_append (b, ",", 1);
  }
  jbuf_string (b, key);
  jbuf_append (b, ":", 1);
}

void
jbuf_u64 (struct jbuf *b, uint64_t v)
{
  jbuf_printf (b, "%" PRIu64, v);
}

void
jbuf_bool (struct jbuf *b, bool v)
{
  jbuf_raw (b, v ? "true" : "false");
}

void
jbuf_time (struct jbuf *b, int64_t t)
{
  char text[FLEECE_TIME_BUF];

  if (t == 0 || fleece_format_time (t, text) == -1) {
    jbuf_raw (b, "null");
    return;
  }
  jbuf_string (b, text);
}

void
jbuf_kv_raw (struct jbuf *b, const char *key, const char *text)
{
  jbuf_key (b, key);
  jbuf_raw (b, text);
}

void
jbuf_kv_string (struct jbuf *b, const char *key, const char *str)
{
  jbuf_key (b, key);
  jbuf_string (b, str);
}

void
jbuf_kv_name (struct jbuf *b, const char *key, const char *str)
{
  jbuf_kv_string (b, key, str && str[0] ? str : NULL);
}

void
jbuf_kv_u64 (struct jbuf *b, const char *key, uint64_t v)
{
  jbuf_key (b, key);
  jbuf_u64 (b, v);
}

void
jbuf_kv_bool (struct jbuf *b, const char *key, bool v)
{
  jbuf_key (b, key);
  jbuf_bool (b, v);
}

void
jbuf_kv_time (struct jbuf *b, const char *key, int64_t t)
{
  jbuf_key (b, key);
  jbuf_time (b, t);
}

int
fleece_format_time (int64_t t, char buf[FLEECE_TIME_BUF])
{
  time_t tt = (time_t) t;
  struct tm tm;

  if ((int64_t) tt != t || gmtime_r (&tt, &tm) == NULL ||
      strftime (buf, FLEECE_TIME_BUF, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0) {
    buf[0] = '\0';
    return -1;
  }
  return 0;
}

char *
jbuf_steal (struct jbuf *b)
{
  char *s;

  if (!b->failed && b->s == NULL)
    jbuf_reserve (b, 0);        /* nothing appended: return "" */

  if (b->failed) {
    jbuf_free (b);
    return NULL;
  }
  s = b->s;
  b->s = NULL;
  b->len = b->cap = 0;
  return s;
}
