/* nbdkit-fleece
 * SPDX-License-Identifier: BSD-3-Clause
 *
 * Unit test for common/json.c: string escaping, the comma logic of
 * jbuf_key, number, boolean and time formatting, null handling and
 * jbuf_steal.
 */

#include <config.h>

#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "json.h"
#include "unit.h"

/* Steal the text from b and compare it with expected. */
static bool
steal_is (struct jbuf *b, const char *expected)
{
  char *s = jbuf_steal (b);
  bool ok = s != NULL && strcmp (s, expected) == 0;

  if (!ok)
    fprintf (stderr, "got:      %s\nexpected: %s\n", s ? s : "(NULL)",
             expected);
  free (s);
  return ok;
}

static void
test_string (void)
{
  static const struct { const char *in, *out; } cases[] = {
    { "plain", "\"plain\"" },
    { "say \"hi\" \\ there", "\"say \\\"hi\\\" \\\\ there\"" },
    { "a\nb\tc\rd\be\ff", "\"a\\nb\\tc\\rd\\be\\ff\"" },
    { "\x01x\x1f\x7f", "\"\\u0001x\\u001f\\u007f\"" },
    /* UTF-8 (and any byte >= 0x80) passes through. */
    { "caf\xc3\xa9 \xe2\x82\xac \xff",
      "\"caf\xc3\xa9 \xe2\x82\xac \xff\"" },
    { "", "\"\"" },
    { NULL, "null" },
  };
  struct jbuf b = JBUF_INIT;
  size_t i;

  for (i = 0; i < ARRAY_SIZE (cases); i++) {
    jbuf_string (&b, cases[i].in);
    CHECK (steal_is (&b, cases[i].out));
  }
}

static void
test_key (void)
{
  struct jbuf b = JBUF_INIT;

  /* Empty buffer: no comma. */
  jbuf_key (&b, "a");
  jbuf_u64 (&b, 1);
  CHECK (steal_is (&b, "\"a\":1"));

  jbuf_raw (&b, "{");
  jbuf_key (&b, "a");
  jbuf_u64 (&b, 1);
  jbuf_key (&b, "b");
  jbuf_raw (&b, "[");
  jbuf_raw (&b, "{");
  jbuf_key (&b, "c");
  jbuf_bool (&b, true);
  jbuf_raw (&b, "}");
  jbuf_raw (&b, ",");
  jbuf_raw (&b, "{");
  jbuf_key (&b, "d");
  jbuf_bool (&b, false);
  jbuf_raw (&b, "}]");
  jbuf_key (&b, "e");
  jbuf_string (&b, NULL);
  jbuf_key (&b, "q\"k");
  jbuf_string (&b, "v");
  jbuf_raw (&b, "}");
  CHECK (steal_is (&b, "{\"a\":1,\"b\":[{\"c\":true},{\"d\":false}],"
                   "\"e\":null,\"q\\\"k\":\"v\"}"));

  /* Handler-style members: the first key after raw text gets a comma. */
  jbuf_raw (&b, "{\"ok\":true");
  jbuf_key (&b, "state");
  jbuf_string (&b, "idle");
  jbuf_raw (&b, "}");
  CHECK (steal_is (&b, "{\"ok\":true,\"state\":\"idle\"}"));
}

static void
test_numbers (void)
{
  struct jbuf b = JBUF_INIT;

  jbuf_u64 (&b, 0);
  jbuf_raw (&b, " ");
  jbuf_u64 (&b, UINT64_MAX);
  CHECK (steal_is (&b, "0 18446744073709551615"));

  jbuf_printf (&b, "%d-%s", -5, "x");
  CHECK (steal_is (&b, "-5-x"));
}

static void
test_time (void)
{
  static const struct { int64_t t; const char *out; } cases[] = {
    /* date -u -d @1795186800 +%Y-%m-%dT%H:%M:%SZ */
    { 1795186800, "\"2026-11-20T15:00:00Z\"" },
    { 1, "\"1970-01-01T00:00:01Z\"" },
    { 0, "null" },
  };
  struct jbuf b = JBUF_INIT;
  size_t i;

  for (i = 0; i < ARRAY_SIZE (cases); i++) {
    jbuf_time (&b, cases[i].t);
    CHECK (steal_is (&b, cases[i].out));
  }
}

/* Appending past several doublings keeps the text intact. */
static void
test_growth (void)
{
  struct jbuf b = JBUF_INIT;
  char big[5000], *s;
  size_t i, len;

  memset (big, 'x', sizeof big - 1);
  big[sizeof big - 1] = '\0';
  for (i = 0; i < 100; i++)
    jbuf_raw (&b, "0123456789");
  jbuf_printf (&b, "%s", big);
  CHECK (!b.failed);
  CHECK (b.len == 1000 + sizeof big - 1);
  CHECK (b.s != NULL && strlen (b.s) == b.len);
  len = b.len;
  s = jbuf_steal (&b);
  CHECK (s != NULL && strncmp (s, "0123456789", 10) == 0 &&
         strlen (s) == len && strcmp (s + 1000, big) == 0);
  free (s);
  CHECK (b.s == NULL && b.len == 0);
}

static void
test_steal_and_free (void)
{
  struct jbuf b = JBUF_INIT;
  char *s;

  /* Nothing appended: an empty string, not NULL. */
  s = jbuf_steal (&b);
  CHECK (s != NULL && strcmp (s, "") == 0);
  free (s);

  /* A failed buffer yields NULL and is left empty. */
  jbuf_raw (&b, "abc");
  b.failed = true;
  jbuf_raw (&b, "def");
  CHECK (strcmp (b.s, "abc") == 0);
  CHECK (jbuf_steal (&b) == NULL);
  CHECK (b.s == NULL && b.len == 0 && !b.failed);

  jbuf_raw (&b, "abc");
  jbuf_free (&b);
  CHECK (b.s == NULL && b.len == 0 && b.cap == 0);
  jbuf_free (&b);               /* twice is fine */
}

int
main (void)
{
  test_string ();
  test_key ();
  test_numbers ();
  test_time ();
  test_growth ();
  test_steal_and_free ();
  UNIT_EXIT ();
}
