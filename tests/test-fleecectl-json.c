/* nbdkit-fleece
 * SPDX-License-Identifier: BSD-3-Clause
 *
 * Unit test for fleecectl's JSON reader (fleecectl/jsonr.c): every
 * value type, escapes and UTF-8, exact 64-bit integers, the accessors
 * on missing keys and wrong types, and a list of malformed texts that
 * must each be refused with an error (never a crash or a partial
 * tree), including deep nesting and texts cut at every byte.
 */

#include <config.h>

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "jsonr.h"
#include "unit.h"

static struct jval *
parse (const char *text)
{
  const char *err = NULL;
  size_t off = 0;
  struct jval *v = jv_parse (text, strlen (text), &err, &off);

  if (v == NULL)
    fprintf (stderr, "parse '%s': %s at %zu\n", text, err, off);
  return v;
}

static bool
refused (const char *text, size_t len)
{
  const char *err = NULL;
  size_t off = 12345;
  struct jval *v = jv_parse (text, len, &err, &off);

  if (v) {
    fprintf (stderr, "accepted bad JSON: '%.*s'\n", (int) len, text);
    jv_free (v);
    return false;
  }
  return err != NULL && *err != '\0' && off <= len;
}

static void
test_status_reply (void)
{
  const char *text =
    "{\"ok\":true,\n \"snapshot\":{\"active\":true,\"started\":"
    "\"2026-11-22T15:00:00Z\",\"clusters_copied\":12,\"target_bytes\":786432,"
    "\"released_bytes\":0,\"broken\":null},"
    " \"checkpoints\":[{\"name\":\"c1\",\"recording\":false,"
    "\"dirty_bytes\":1048576,\"consistent\":true},"
    "{\"name\":\"c2\",\"recording\":true,\"consistent\":false,"
    "\"reason\":\"disk size changed\"}],"
    " \"jobs\":[{\"id\":\"7\",\"bytes_done\":18446744073709551615,"
    "\"bytes_total\":18446744073709551616,\"speed\":-1.5e3}], "
    " \"unknown\":{\"deep\":[[[]]],\"x\":[]}}  \n";
  struct jval *v = parse (text);
  const struct jval *cps, *j;
  uint64_t u;

  CHECK (v != NULL);
  if (v == NULL)
    return;
  CHECK (jv_true (jv_get (v, "ok")));
  CHECK (jv_true (jv_get (jv_get (v, "snapshot"), "active")));
  CHECK (jv_u64 (jv_get (jv_get (v, "snapshot"), "target_bytes"), &u) &&
         u == 786432);
  CHECK (jv_is (jv_get (jv_get (v, "snapshot"), "broken"), JV_NULL));
  CHECK (strcmp (jv_str (jv_get (jv_get (v, "snapshot"), "started")),
                 "2026-11-22T15:00:00Z") == 0);
  cps = jv_get (v, "checkpoints");
  CHECK (jv_len (cps) == 2);
  CHECK (strcmp (jv_str (jv_get (jv_index (cps, 1), "reason")),
                 "disk size changed") == 0);
  CHECK (!jv_true (jv_get (jv_index (cps, 1), "consistent")));
  CHECK (jv_index (cps, 2) == NULL);
  j = jv_index (jv_get (v, "jobs"), 0);
  CHECK (jv_u64 (jv_get (j, "bytes_done"), &u) && u == UINT64_MAX);
  /* 2^64 does not fit: a number, but not a u64. */
  CHECK (jv_is (jv_get (j, "bytes_total"), JV_NUMBER));
  CHECK (!jv_u64 (jv_get (j, "bytes_total"), &u));
  CHECK (!jv_u64 (jv_get (j, "speed"), &u));
  CHECK (jv_get (j, "speed")->number == -1500);
  /* Missing keys and wrong types give NULL/false, never a crash. */
  CHECK (jv_get (v, "nope") == NULL);
  CHECK (jv_get (cps, "name") == NULL);
  CHECK (jv_str (jv_get (v, "ok")) == NULL);
  CHECK (!jv_true (jv_get (v, "jobs")));
  CHECK (!jv_u64 (jv_get (j, "id"), &u));
  CHECK (jv_len (jv_get (v, "ok")) == 0);
  CHECK (jv_get (NULL, "x") == NULL && jv_index (NULL, 0) == NULL);
  CHECK (jv_len (jv_get (jv_get (v, "unknown"), "x")) == 0);
  jv_free (v);
}

static void
test_scalars (void)
{
  struct jval *v;
  uint64_t u;

  v = parse ("  0 ");
  CHECK (v && jv_u64 (v, &u) && u == 0);
  jv_free (v);
  v = parse ("-0");
  CHECK (v && v->type == JV_NUMBER && !v->is_u64);
  jv_free (v);
  v = parse ("1.5E+2");
  CHECK (v && v->number == 150 && !v->is_u64);
  jv_free (v);
  v = parse ("123456789012345678901234567890");
  CHECK (v && v->type == JV_NUMBER && !v->is_u64 && v->number > 1e29);
  jv_free (v);
  v = parse ("true");
  CHECK (jv_true (v));
  jv_free (v);
  v = parse ("false");
  CHECK (jv_is (v, JV_BOOL) && !jv_true (v));
  jv_free (v);
  v = parse ("null");
  CHECK (jv_is (v, JV_NULL));
  jv_free (v);
  v = parse ("[]");
  CHECK (jv_is (v, JV_ARRAY) && jv_len (v) == 0);
  jv_free (v);
  v = parse ("{ }");
  CHECK (jv_is (v, JV_OBJECT) && jv_len (v) == 0);
  jv_free (v);
  /* Duplicate keys: the first wins. */
  v = parse ("{\"a\":1,\"a\":2}");
  CHECK (v && jv_u64 (jv_get (v, "a"), &u) && u == 1);
  jv_free (v);
}

static void
test_strings (void)
{
  struct jval *v;

  v = parse ("\"a\\\"b\\\\c\\/d\\b\\f\\n\\r\\t\"");
  CHECK (v && strcmp (jv_str (v), "a\"b\\c/d\b\f\n\r\t") == 0 &&
         v->len == 12);
  jv_free (v);
  /* \u escapes to UTF-8, one to four bytes, surrogate pairs. */
  v = parse ("\"\\u0041\\u00e9\\u20ac\\ud83d\\ude00\"");
  CHECK (v && strcmp (jv_str (v), "A\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80")
         == 0);
  jv_free (v);
  /* Raw UTF-8 passes through. */
  v = parse ("\"caf\xc3\xa9\"");
  CHECK (v && strcmp (jv_str (v), "caf\xc3\xa9") == 0);
  jv_free (v);
  v = parse ("\"\"");
  CHECK (v && jv_str (v) && jv_str (v)[0] == '\0' && v->len == 0);
  jv_free (v);
}

static void
test_refused (void)
{
  static const char *bad[] = {
    "", " ", "{", "}", "[", "]", "[1,]", "[,1]", "{\"a\":1,}", "{\"a\"}",
    "{\"a\" 1}", "{a:1}", "{1:1}", "[1 2]", "tru", "truth", "nul", "nulll",
    "True", "01", "-", "+1", "1.", ".5", "1e", "1e+", "0x10", "NaN",
    "Infinity", "\"abc", "\"a\\x\"", "\"a\\u12\"", "\"a\\u12g4\"",
    "\"\\ud800\"", "\"\\udc00\"", "\"\\ud800\\u0041\"", "\"\\u0000\"",
    "\"tab\there\"", "\"nl\nhere\"", "[1] [2]", "{} x", "\"a\" \"b\"",
    "[\"a\\\"]", "{\"ok\":true", "/* c */ 1", "[1]//",
  };
  char deep[2 * JV_MAX_DEPTH + 8];
  size_t i, n;

  for (i = 0; i < sizeof bad / sizeof bad[0]; i++)
    CHECK (refused (bad[i], strlen (bad[i])));

  /* An embedded NUL byte is not whitespace. */
  CHECK (refused ("1\0", 2));
  CHECK (refused ("\"a\0b\"", 5));

  /* Nesting: JV_MAX_DEPTH levels parse, one more is refused. */
  n = JV_MAX_DEPTH;
  memset (deep, '[', n);
  memset (deep + n, ']', n);
  deep[2 * n] = '\0';
  {
    struct jval *v = parse (deep);
    CHECK (v != NULL);
    jv_free (v);
  }
  n = JV_MAX_DEPTH + 1;
  memset (deep, '[', n);
  memset (deep + n, ']', n);
  CHECK (refused (deep, 2 * n));
}

/* Every proper prefix of a valid text is refused (except those that
 * are themselves complete values), and no prefix crashes.
 */
static void
test_prefixes (void)
{
  const char *text = "{\"ok\":true,\"a\":[1,-2.5e3,\"x\\u00e9\\n\",null,"
    "false,{\"b\":{}}],\"n\":18446744073709551615}";
  size_t n, len = strlen (text);
  const char *err;
  size_t off;

  for (n = 0; n < len; n++) {
    /* Copy so that a read past n bytes is caught by sanitizers. */
    char *p = malloc (n ? n : 1);
    struct jval *v;

    memcpy (p, text, n);
    v = jv_parse (p, n, &err, &off);
    CHECK (v == NULL);
    jv_free (v);
    free (p);
  }
  {
    struct jval *v = jv_parse (text, len, &err, &off);
    CHECK (v != NULL && jv_len (jv_get (v, "a")) == 6);
    jv_free (v);
  }
}

int
main (void)
{
  test_status_reply ();
  test_scalars ();
  test_strings ();
  test_refused ();
  test_prefixes ();
  UNIT_EXIT ();
}
