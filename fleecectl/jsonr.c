/* nbdkit-fleece
 * SPDX-License-Identifier: BSD-3-Clause
 *
 * A small recursive-descent JSON reader (see jsonr.h).  The grammar is
 * RFC 8259's, strictly: no comments, no trailing commas, no leading
 * zeros or '+' in numbers, no raw control characters in strings, only
 * valid escapes, surrogates in pairs.  Recursion depth is bounded by
 * JV_MAX_DEPTH, so any input ends in a tree or an error without
 * exhausting the stack.
 */

#include <config.h>

#include <errno.h>
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "jsonr.h"

struct parser {
  const char *start, *p, *end;
  unsigned depth;
  const char *err;              /* first error, static text */
  size_t err_off;
};

static bool parse_value (struct parser *ps, struct jval *out);

static bool
fail (struct parser *ps, const char *msg)
{
  if (ps->err == NULL) {
    ps->err = msg;
    ps->err_off = ps->p - ps->start;
  }
  return false;
}

static void
skip_ws (struct parser *ps)
{
  while (ps->p < ps->end &&
         (*ps->p == ' ' || *ps->p == '\t' || *ps->p == '\n' ||
          *ps->p == '\r'))
    ps->p++;
}

static bool
literal (struct parser *ps, const char *word)
{
  size_t n = strlen (word);

  if ((size_t) (ps->end - ps->p) < n || memcmp (ps->p, word, n) != 0)
    return fail (ps, "invalid literal");
  ps->p += n;
  return true;
}

static bool
is_digit (char c)
{
  return c >= '0' && c <= '9';
}

static bool
parse_number (struct parser *ps, struct jval *out)
{
  const char *s = ps->p;
  bool neg = false, plain = true;
  uint64_t u = 0;
  bool u_ok = true;
  char buf[64], *copy;
  size_t n;

  if (ps->p < ps->end && *ps->p == '-') {
    neg = true;
    ps->p++;
  }
  if (ps->p >= ps->end || !is_digit (*ps->p))
    return fail (ps, "invalid number");
  if (*ps->p == '0') {
    ps->p++;
    if (ps->p < ps->end && is_digit (*ps->p))
      return fail (ps, "leading zero in number");
  }
  else {
    while (ps->p < ps->end && is_digit (*ps->p)) {
      unsigned d = *ps->p - '0';
      if (u > (UINT64_MAX - d) / 10)
        u_ok = false;
      else
        u = u * 10 + d;
      ps->p++;
    }
  }
  if (ps->p < ps->end && *ps->p == '.') {
    plain = false;
    ps->p++;
    if (ps->p >= ps->end || !is_digit (*ps->p))
      return fail (ps, "digit expected after '.'");
    while (ps->p < ps->end && is_digit (*ps->p))
      ps->p++;
  }
  if (ps->p < ps->end && (*ps->p == 'e' || *ps->p == 'E')) {
    plain = false;
    ps->p++;
    if (ps->p < ps->end && (*ps->p == '+' || *ps->p == '-'))
      ps->p++;
    if (ps->p >= ps->end || !is_digit (*ps->p))
      return fail (ps, "digit expected in exponent");
    while (ps->p < ps->end && is_digit (*ps->p))
      ps->p++;
  }

  out->type = JV_NUMBER;
  out->is_u64 = plain && !neg && u_ok;
  out->u64 = out->is_u64 ? u : 0;
  /* strtod needs a NUL-terminated copy. */
  n = ps->p - s;
  copy = n < sizeof buf ? buf : malloc (n + 1);
  if (copy == NULL)
    return fail (ps, "out of memory");
  memcpy (copy, s, n);
  copy[n] = '\0';
  out->number = strtod (copy, NULL);
  if (copy != buf)
    free (copy);
  return true;
}

static int
hexval (char c)
{
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

static bool
hex4 (struct parser *ps, unsigned *out)
{
  unsigned v = 0;
  int i, h;

  if (ps->end - ps->p < 4)
    return fail (ps, "truncated \\u escape");
  for (i = 0; i < 4; i++) {
    h = hexval (ps->p[i]);
    if (h < 0)
      return fail (ps, "invalid \\u escape");
    v = v * 16 + h;
  }
  ps->p += 4;
  *out = v;
  return true;
}

/* Append code point cp as UTF-8 to buf (room for 4 bytes assured). */
static size_t
put_utf8 (char *buf, unsigned cp)
{
  if (cp < 0x80) {
    buf[0] = cp;
    return 1;
  }
  if (cp < 0x800) {
    buf[0] = 0xc0 | (cp >> 6);
    buf[1] = 0x80 | (cp & 0x3f);
    return 2;
  }
  if (cp < 0x10000) {
    buf[0] = 0xe0 | (cp >> 12);
    buf[1] = 0x80 | ((cp >> 6) & 0x3f);
    buf[2] = 0x80 | (cp & 0x3f);
    return 3;
  }
  buf[0] = 0xf0 | (cp >> 18);
  buf[1] = 0x80 | ((cp >> 12) & 0x3f);
  buf[2] = 0x80 | ((cp >> 6) & 0x3f);
  buf[3] = 0x80 | (cp & 0x3f);
  return 4;
}

/* A string starting at the opening quote.  The decoded text is never
 * longer than the source text, so one allocation of the source's
 * length (found first) is enough.
 */
static bool
parse_string (struct parser *ps, char **out, size_t *outlen)
{
  const char *q;
  char *buf;
  size_t n = 0;

  ps->p++;                      /* the opening quote */
  /* Find the closing quote to size the buffer. */
  for (q = ps->p; q < ps->end && *q != '"'; q++)
    if (*q == '\\' && q + 1 < ps->end)
      q++;
  if (q >= ps->end)
    return fail (ps, "unterminated string");

  buf = malloc (q - ps->p + 1);
  if (buf == NULL)
    return fail (ps, "out of memory");

  while (*ps->p != '"') {
    unsigned char c = *ps->p;

    if (c < 0x20) {
      free (buf);
      return fail (ps, "control character in string");
    }
    if (c != '\\') {
      buf[n++] = c;
      ps->p++;
      continue;
    }
    ps->p++;
    switch (*ps->p) {
    case '"': buf[n++] = '"'; ps->p++; break;
    case '\\': buf[n++] = '\\'; ps->p++; break;
    case '/': buf[n++] = '/'; ps->p++; break;
    case 'b': buf[n++] = '\b'; ps->p++; break;
    case 'f': buf[n++] = '\f'; ps->p++; break;
    case 'n': buf[n++] = '\n'; ps->p++; break;
    case 'r': buf[n++] = '\r'; ps->p++; break;
    case 't': buf[n++] = '\t'; ps->p++; break;
    case 'u': {
      unsigned cp, lo;

      ps->p++;
      if (!hex4 (ps, &cp))
        goto err;
      if (cp >= 0xdc00 && cp <= 0xdfff) {
        fail (ps, "lone low surrogate in string");
        goto err;
      }
      if (cp >= 0xd800 && cp <= 0xdbff) {
        if (ps->end - ps->p < 2 || ps->p[0] != '\\' || ps->p[1] != 'u') {
          fail (ps, "high surrogate without a low one");
          goto err;
        }
        ps->p += 2;
        if (!hex4 (ps, &lo))
          goto err;
        if (lo < 0xdc00 || lo > 0xdfff) {
          fail (ps, "high surrogate without a low one");
          goto err;
        }
        cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
      }
      if (cp == 0) {
        fail (ps, "\\u0000 in string");
        goto err;
      }
      /* "\uXXXX" is 6 source bytes (12 for a pair): never shorter
       * than its UTF-8 (at most 3 or 4 bytes).
       */
      n += put_utf8 (buf + n, cp);
      break;
    }
    default:
      fail (ps, "invalid escape in string");
      goto err;
    }
  }
  ps->p++;                      /* the closing quote */
  buf[n] = '\0';
  *out = buf;
  *outlen = n;
  return true;

 err:
  free (buf);
  return false;
}

/* Free what v owns, not v itself. */
static void
jv_clear (struct jval *v)
{
  size_t i;

  if (v == NULL)
    return;
  free (v->str);
  for (i = 0; i < v->n; i++) {
    jv_clear (&v->items[i]);
    if (v->keys)
      free (v->keys[i]);
  }
  free (v->items);
  free (v->keys);
  memset (v, 0, sizeof *v);
}

/* Make room for one more member of an array or object. */
static bool
grow (struct parser *ps, struct jval *v, size_t *cap, bool with_keys)
{
  size_t ncap;
  struct jval *items;
  char **keys;

  if (v->n < *cap)
    return true;
  ncap = *cap ? *cap * 2 : 4;
  items = realloc (v->items, ncap * sizeof *items);
  if (items == NULL)
    return fail (ps, "out of memory");
  v->items = items;
  if (with_keys) {
    keys = realloc (v->keys, ncap * sizeof *keys);
    if (keys == NULL)
      return fail (ps, "out of memory");
    v->keys = keys;
  }
  *cap = ncap;
  return true;
}

static bool
parse_container (struct parser *ps, struct jval *out, bool object)
{
  size_t cap = 0;
  char close = object ? '}' : ']';

  if (++ps->depth > JV_MAX_DEPTH)
    return fail (ps, "nested too deeply");
  out->type = object ? JV_OBJECT : JV_ARRAY;
  ps->p++;                      /* '{' or '[' */
  skip_ws (ps);
  if (ps->p < ps->end && *ps->p == close) {
    ps->p++;
    ps->depth--;
    return true;
  }
  for (;;) {
    char *key = NULL;
    size_t keylen;
    struct jval item;

    memset (&item, 0, sizeof item);
    skip_ws (ps);
    if (object) {
      if (ps->p >= ps->end || *ps->p != '"')
        return fail (ps, "member name expected");
      if (!parse_string (ps, &key, &keylen))
        return false;
      skip_ws (ps);
      if (ps->p >= ps->end || *ps->p != ':') {
        free (key);
        return fail (ps, "':' expected");
      }
      ps->p++;
    }
    if (!parse_value (ps, &item) || !grow (ps, out, &cap, object)) {
      jv_clear (&item);
      free (key);
      return false;
    }
    out->items[out->n] = item;
    if (object)
      out->keys[out->n] = key;
    out->n++;
    skip_ws (ps);
    if (ps->p < ps->end && *ps->p == ',') {
      ps->p++;
      continue;
    }
    if (ps->p < ps->end && *ps->p == close) {
      ps->p++;
      ps->depth--;
      return true;
    }
    return fail (ps, object ? "',' or '}' expected" : "',' or ']' expected");
  }
}

static bool
parse_value (struct parser *ps, struct jval *out)
{
  skip_ws (ps);
  if (ps->p >= ps->end)
    return fail (ps, "value expected");
  switch (*ps->p) {
  case '{': return parse_container (ps, out, true);
  case '[': return parse_container (ps, out, false);
  case '"':
    out->type = JV_STRING;
    return parse_string (ps, &out->str, &out->len);
  case 't':
    out->type = JV_BOOL;
    out->boolean = true;
    return literal (ps, "true");
  case 'f':
    out->type = JV_BOOL;
    return literal (ps, "false");
  case 'n':
    out->type = JV_NULL;
    return literal (ps, "null");
  default:
    if (*ps->p == '-' || is_digit (*ps->p))
      return parse_number (ps, out);
    return fail (ps, "value expected");
  }
}

struct jval *
jv_parse (const char *text, size_t len, const char **err, size_t *err_off)
{
  struct parser ps = { text, text, text + len, 0, NULL, 0 };
  struct jval *v = calloc (1, sizeof *v);

  if (v == NULL) {
    *err = "out of memory";
    *err_off = 0;
    return NULL;
  }
  if (parse_value (&ps, v)) {
    skip_ws (&ps);
    if (ps.p == ps.end)
      return v;
    fail (&ps, "unexpected text after the value");
  }
  jv_clear (v);
  free (v);
  *err = ps.err;
  *err_off = ps.err_off;
  return NULL;
}

void
jv_free (struct jval *v)
{
  jv_clear (v);
  free (v);
}

const struct jval *
jv_get (const struct jval *obj, const char *key)
{
  size_t i;

  if (obj == NULL || obj->type != JV_OBJECT)
    return NULL;
  for (i = 0; i < obj->n; i++)
    if (strcmp (obj->keys[i], key) == 0)
      return &obj->items[i];
  return NULL;
}

const struct jval *
jv_index (const struct jval *arr, size_t i)
{
  if (arr == NULL || (arr->type != JV_ARRAY && arr->type != JV_OBJECT) ||
      i >= arr->n)
    return NULL;
  return &arr->items[i];
}

size_t
jv_len (const struct jval *arr)
{
  if (arr == NULL || (arr->type != JV_ARRAY && arr->type != JV_OBJECT))
    return 0;
  return arr->n;
}

const char *
jv_str (const struct jval *v)
{
  return v && v->type == JV_STRING ? v->str : NULL;
}

bool
jv_true (const struct jval *v)
{
  return v && v->type == JV_BOOL && v->boolean;
}

bool
jv_is (const struct jval *v, enum jtype t)
{
  return v && v->type == t;
}

bool
jv_u64 (const struct jval *v, uint64_t *out)
{
  if (v == NULL || v->type != JV_NUMBER || !v->is_u64)
    return false;
  *out = v->u64;
  return true;
}
