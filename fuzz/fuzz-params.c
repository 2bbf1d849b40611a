/* nbdkit-fleece
 * SPDX-License-Identifier: BSD-3-Clause
 *
 * libFuzzer harness for the parameter parsers (common/size.c and the
 * pure parts of common/params.c).  Their strings come from the nbdkit
 * command line and from control socket arguments (checkpoint names,
 * since=NAME).  The input, up to its first NUL, is the string.
 *
 * Each parser is compared with a reference written here from the
 * rules in size.h / params.h (not from size.c), and:
 * - fleece_parse_size success implies the value printed in decimal
 *   (and, when it divides evenly, with a K/M/G suffix) parses back to
 *   the same value, with fleece_parse_size and fleece_parse_uint;
 * - fleece_parse_uint never returns more than max;
 * - fleece_valid_name implies 1..64 characters of [A-Za-z0-9_.-], not
 *   starting with '.' or '-';
 * - fleece_config_cluster accepts exactly the powers of two from 4K to
 *   16M, fleece_config_bool exactly the documented words in any case;
 * - failures always come with a reason.
 */

#include <config.h>

#include <inttypes.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "fleece-api.h"
#include "params.h"
#include "size.h"
#include "fuzz-check.h"

/*----------------------------------------------------------------------
 * References.
 */

/* Leading decimal digits of s; false if none or on overflow. */
static bool
ref_digits (const char **s, uint64_t *out)
{
  const char *p = *s;
  uint64_t v = 0;

  if (!(*p >= '0' && *p <= '9'))
    return false;
  for (; *p >= '0' && *p <= '9'; p++) {
    if (__builtin_mul_overflow (v, 10, &v) ||
        __builtin_add_overflow (v, (uint64_t) (*p - '0'), &v))
      return false;
  }
  *s = p;
  *out = v;
  return true;
}

static bool
ref_parse_uint (const char *s, uint64_t max, uint64_t *out)
{
  uint64_t v;

  if (!ref_digits (&s, &v) || *s != '\0' || v > max)
    return false;
  *out = v;
  return true;
}

static bool
ref_parse_size (const char *s, uint64_t *out)
{
  static const char letters[] = "bskmgtpe";
  static const unsigned shifts[] = { 0, 9, 10, 20, 30, 40, 50, 60 };
  const char *l;
  uint64_t v, mult = 1;
  unsigned shift = 0;

  if (!ref_digits (&s, &v))
    return false;
  if (*s != '\0') {
    char c = *s >= 'A' && *s <= 'Z' ? (char) (*s + ('a' - 'A')) : *s;

    l = strchr (letters, c);
    if (c == '\0' || l == NULL)
      return false;
    shift = shifts[l - letters];
    s++;
    if (shift >= 10 && (strcmp (s, "B") == 0 || strcmp (s, "iB") == 0))
      s += strlen (s);
    if (*s != '\0')
      return false;
  }
  mult = (uint64_t) 1 << shift;
  if (__builtin_mul_overflow (v, mult, &v))
    return false;
  *out = v;
  return true;
}

static bool
ref_valid_name (const char *s)
{
  size_t i, n = strlen (s);

  if (n < 1 || n > 64 || s[0] == '.' || s[0] == '-')
    return false;
  for (i = 0; i < n; i++) {
    if (!strchr ("abcdefghijklmnopqrstuvwxyz"
                 "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
                 "0123456789_.-", s[i]) || s[i] == '\0')
      return false;
  }
  return true;
}

/* Case-insensitive ASCII equality. */
static bool
ref_eq_nocase (const char *a, const char *b)
{
  for (; *a && *b; a++, b++) {
    char x = *a >= 'A' && *a <= 'Z' ? (char) (*a + 32) : *a;
    char y = *b >= 'A' && *b <= 'Z' ? (char) (*b + 32) : *b;

    if (x != y)
      return false;
  }
  return *a == *b;
}

/*----------------------------------------------------------------------
 * Checks.
 */

static void
check_size (const char *s)
{
  uint64_t v = 0xdeadbeef, ref = 0, back = 0;
  const char *why = NULL;
  bool ok, ref_ok;
  char text[64];
  static const char suffix[] = "KMGTPE";
  unsigned k;

  ok = fleece_parse_size (s, &v, &why) == 0;
  ref_ok = ref_parse_size (s, &ref);
  if (ok != ref_ok) {
    fprintf (stderr, "fleece_parse_size (\"%s\") %s, the reference %s it\n",
             s, ok ? "accepted" : "rejected",
             ref_ok ? "accepts" : "rejects");
    CHECK (!"fleece_parse_size agrees with the reference");
  }
  if (!ok) {
    CHECK (why != NULL && *why != '\0');
    return;
  }
  CHECK (v == ref);

  /* Printed in decimal, it parses back. */
  snprintf (text, sizeof text, "%" PRIu64, v);
  CHECK (fleece_parse_size (text, &back, &why) == 0 && back == v);
  CHECK (fleece_parse_uint (text, UINT64_MAX, &back, &why) == 0 && back == v);
  CHECK (fleece_parse_uint (text, v, &back, &why) == 0 && back == v);
  if (v > 0)
    CHECK (fleece_parse_uint (text, v - 1, &back, &why) == -1);

  /* With the largest suffix that divides it evenly, too. */
  for (k = 6; k >= 1; k--) {
    uint64_t unit = (uint64_t) 1 << (10 * k);

    if (v != 0 && v % unit == 0) {
      snprintf (text, sizeof text, "%" PRIu64 "%c%s", v / unit,
                suffix[k - 1], v % 3 ? "iB" : "");
      CHECK (fleece_parse_size (text, &back, &why) == 0 && back == v);
      break;
    }
  }
}

static void
check_uint (const char *s)
{
  uint64_t maxes[8] = { 0, 1, 4096, UINT32_MAX, UINT64_MAX - 1, UINT64_MAX,
                        0, 0 };
  uint64_t ref = 0, v;
  const char *why;
  size_t i, nmax = 6;

  if (ref_parse_uint (s, UINT64_MAX, &ref)) {
    maxes[nmax++] = ref;
    if (ref > 0)
      maxes[nmax++] = ref - 1;
  }
  for (i = 0; i < nmax; i++) {
    uint64_t r;
    bool ok, ref_ok;

    v = 0x1234;
    why = NULL;
    ok = fleece_parse_uint (s, maxes[i], &v, &why) == 0;
    ref_ok = ref_parse_uint (s, maxes[i], &r);
    if (ok != ref_ok) {
      fprintf (stderr, "fleece_parse_uint (\"%s\", %" PRIu64 ") %s, "
               "the reference %s it\n", s, maxes[i],
               ok ? "accepted" : "rejected",
               ref_ok ? "accepts" : "rejects");
      CHECK (!"fleece_parse_uint agrees with the reference");
    }
    if (ok)
      CHECK (v == r && v <= maxes[i]);
    else
      CHECK (why != NULL && *why != '\0');

    /* The nbdkit-facing wrapper decides the same way. */
    CHECK ((fleece_config_uint ("fuzz", s, maxes[i], &v) == 0) == ok);
  }
}

static void
check_name (const char *s)
{
  bool ok = fleece_valid_name (s);
  size_t i, n = strlen (s);

  if (ok != ref_valid_name (s)) {
    fprintf (stderr, "fleece_valid_name (\"%s\") says %d\n", s, ok);
    CHECK (!"fleece_valid_name agrees with the reference");
  }
  if (ok) {
    CHECK (n >= 1 && n <= FLEECE_NAME_MAX);
    CHECK (s[0] != '.' && s[0] != '-');
    for (i = 0; i < n; i++)
      CHECK ((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= 'A' && s[i] <= 'Z') ||
             (s[i] >= '0' && s[i] <= '9') || s[i] == '_' || s[i] == '.' ||
             s[i] == '-');
  }
}

static void
check_config (const char *s)
{
  static const char *const yes[] = { "1", "true", "on", "yes" };
  static const char *const no[] = { "0", "false", "off", "no" };
  uint32_t cluster = 0;
  uint64_t v;
  bool b = false, expect_ok, expect_val = false;
  size_t i;
  int owner;

  /* Cluster sizes: powers of two from 4K to 16M. */
  expect_ok = ref_parse_size (s, &v) && v != 0 && (v & (v - 1)) == 0 &&
    v >= 4096 && v <= 16 * 1024 * 1024;
  CHECK ((fleece_config_cluster ("cbw-cluster-size", s, &cluster) == 0) ==
         expect_ok);
  if (expect_ok)
    CHECK (cluster == v);

  /* Booleans. */
  expect_ok = false;
  for (i = 0; i < 4; i++) {
    if (ref_eq_nocase (s, yes[i]))
      expect_ok = expect_val = true;
    if (ref_eq_nocase (s, no[i])) {
      expect_ok = true;
      expect_val = false;
    }
  }
  CHECK ((fleece_config_bool ("snapshot-discard", s, &b) == 0) == expect_ok);
  if (expect_ok)
    CHECK (b == expect_val);

  /* Which filter owns a parameter name. */
  owner = fleece_param_owner (s);
  if (strncmp (s, "cbw-", 4) == 0)
    CHECK (owner == FLEECE_CBW);
  else if (strcmp (s, "snapshot-export") == 0 ||
           strcmp (s, "snapshot-discard") == 0)
    CHECK (owner == FLEECE_SNAPSHOT_ACCESS);
  else if (strncmp (s, "bitmap-", 7) == 0)
    CHECK (owner == FLEECE_DIRTY_BITMAP);
  else if (strncmp (s, "stream-", 7) == 0)
    CHECK (owner == FLEECE_STREAM);
  else
    CHECK (owner == -1);
}

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
  char *s = malloc (size + 1);

  CHECK (s != NULL);
  memcpy (s, data, size);
  s[size] = '\0';

  check_size (s);
  check_uint (s);
  check_name (s);
  check_config (s);

  free (s);
  return 0;
}
