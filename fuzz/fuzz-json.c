/* nbdkit-fleece
 * SPDX-License-Identifier: BSD-3-Clause
 *
 * libFuzzer harness for the JSON reply builder (common/json.c).  The
 * control socket puts client-supplied words (in error messages),
 * checkpoint names and paths into replies with jbuf_string, and a
 * bitmap file's "created" times with jbuf_time, so both see untrusted
 * bytes.  The input, up to its first NUL, is the string; its first 8
 * bytes (little-endian) are also used as a number and a time.
 *
 * Checks:
 * - jbuf_string of any bytes is one valid JSON string literal on one
 *   line: no raw control bytes, quotes and backslashes escaped; and
 *   decoding it gives back exactly the input bytes;
 * - an object built with jbuf_key / jbuf_string / jbuf_u64 / jbuf_bool
 *   / jbuf_time is valid JSON;
 * - jbuf_u64 prints like printf; jbuf_printf of long text (the path
 *   that grows the buffer and formats again) gives the exact text;
 * - jbuf_time gives null for 0, and for times from 1970 to 9999 the
 *   exact ISO 8601 UTC text computed here independently.
 */

#include <config.h>

#include <endian.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "json.h"
#include "json-check.h"
#include "fuzz-check.h"

/* 9999-12-31T23:59:59Z */
#define MAX_4DIGIT_TIME INT64_C(253402300799)

/* Days since 1970-01-01 to a civil date (proleptic Gregorian). */
static void
civil_from_days (int64_t z, int64_t *y, unsigned *m, unsigned *d)
{
  int64_t era, yy;
  unsigned doe, yoe, doy, mp;

  z += 719468;
  era = (z >= 0 ? z : z - 146096) / 146097;
  doe = (unsigned) (z - era * 146097);
  yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
  yy = (int64_t) yoe + era * 400;
  doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
  mp = (5 * doy + 2) / 153;
  *d = doy - (153 * mp + 2) / 5 + 1;
  *m = mp < 10 ? mp + 3 : mp - 9;
  *y = yy + (*m <= 2);
}

static char *
steal (struct jbuf *b)
{
  char *s = jbuf_steal (b);

  CHECK (s != NULL);
  CHECK (b->s == NULL && b->len == 0);
  return s;
}

static void
check_string (const char *s)
{
  struct jbuf b = JBUF_INIT;
  char *out, *dec;
  size_t len, n;

  jbuf_string (&b, s);
  out = steal (&b);
  len = strlen (out);
  if (!json_check (out, len)) {
    fprintf (stderr, "not valid one-line JSON: %s\n", out);
    CHECK (!"jbuf_string output is valid JSON");
  }
  dec = malloc (len + 1);
  CHECK (dec != NULL);
  n = json_unquote (out, len, dec);
  CHECK (n != (size_t) -1);
  CHECK (n == strlen (s) && memcmp (dec, s, n) == 0);
  free (dec);
  free (out);

  jbuf_string (&b, NULL);
  out = steal (&b);
  CHECK (strcmp (out, "null") == 0);
  free (out);
}

static void
check_time (int64_t t)
{
  struct jbuf b = JBUF_INIT;
  char *out, expect[64];
  size_t len;

  jbuf_time (&b, t);
  out = steal (&b);
  len = strlen (out);
  CHECK (json_check (out, len));
  if (t == 0)
    CHECK (strcmp (out, "null") == 0);
  else if (t > 0 && t <= MAX_4DIGIT_TIME) {
    int64_t days = t / 86400, secs = t % 86400, y;
    unsigned m, d;

    civil_from_days (days, &y, &m, &d);
    snprintf (expect, sizeof expect,
              "\"%04" PRId64 "-%02u-%02uT%02u:%02u:%02uZ\"",
              y, m, d, (unsigned) (secs / 3600),
              (unsigned) (secs / 60 % 60), (unsigned) (secs % 60));
    if (strcmp (out, expect) != 0) {
      fprintf (stderr, "jbuf_time (%" PRId64 ") = %s, expected %s\n",
               t, out, expect);
      CHECK (!"jbuf_time is right");
    }
  }
  else
    /* Out of range of 4-digit years: null or some string, never
     * broken JSON (checked above).
     */
    CHECK (strcmp (out, "null") == 0 || out[0] == '"');
  free (out);
}

static void
check_object (const char *s, uint64_t u, int64_t t)
{
  struct jbuf b = JBUF_INIT;
  char *out, num[32];

  jbuf_raw (&b, "{");
  jbuf_key (&b, s);
  jbuf_u64 (&b, u);
  jbuf_key (&b, "list");
  jbuf_raw (&b, "[");
  jbuf_string (&b, s);
  jbuf_raw (&b, ",");
  jbuf_time (&b, t);
  jbuf_raw (&b, ",");
  jbuf_bool (&b, u & 1);
  jbuf_raw (&b, "]");
  jbuf_key (&b, "n");
  jbuf_string (&b, NULL);
  jbuf_raw (&b, "}");
  out = steal (&b);
  if (!json_check (out, strlen (out))) {
    fprintf (stderr, "not valid JSON: %s\n", out);
    CHECK (!"the object is valid JSON");
  }
  free (out);

  jbuf_u64 (&b, u);
  out = steal (&b);
  snprintf (num, sizeof num, "%" PRIu64, u);
  CHECK (strcmp (out, num) == 0);
  free (out);
}

static void
check_printf (const char *s)
{
  struct jbuf b = JBUF_INIT;
  char *out;
  size_t n = strlen (s);

  jbuf_raw (&b, "<");
  jbuf_printf (&b, "%s|%s", s, s);
  jbuf_printf (&b, "%s", "");
  jbuf_raw (&b, ">");
  out = steal (&b);
  CHECK (strlen (out) == 2 * n + 3);
  CHECK (out[0] == '<' && out[n + 1] == '|' && out[2 * n + 2] == '>');
  CHECK (memcmp (out + 1, s, n) == 0 && memcmp (out + n + 2, s, n) == 0);
  free (out);

  /* Nothing appended: an empty string, not NULL. */
  out = steal (&b);
  CHECK (out[0] == '\0');
  free (out);
}

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
  char *s = malloc (size + 1);
  uint64_t u = 0;

  CHECK (s != NULL);
  memcpy (s, data, size);
  s[size] = '\0';
  memcpy (&u, data, size < 8 ? size : 8);
  u = le64toh (u);

  check_string (s);
  check_time ((int64_t) u);
  /* Also times in the usual range, whatever the top bytes say. */
  check_time ((int64_t) (u % (uint64_t) MAX_4DIGIT_TIME) + 1);
  check_object (s, u, (int64_t) u);
  check_printf (s);

  free (s);
  return 0;
}
