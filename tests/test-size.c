/* nbdkit-fleece
 * SPDX-License-Identifier: BSD-3-Clause
 *
 * Unit tests for common/size.c: sizes, numbers, names.
 */

#include <config.h>

#include <stdint.h>
#include <string.h>

#include "size.h"
#include "unit.h"

static void
size_ok (const char *s, uint64_t want)
{
  uint64_t v = 12345;
  const char *why = NULL;

  if (fleece_parse_size (s, &v, &why) != 0 || v != want) {
    fprintf (stderr, "size '%s': got %d/%lu (%s), want %lu\n",
             s, fleece_parse_size (s, &v, &why), (unsigned long) v,
             why ? why : "", (unsigned long) want);
    unit_failures++;
  }
}

static void
size_bad (const char *s)
{
  uint64_t v = 777;
  const char *why = NULL;

  if (fleece_parse_size (s, &v, &why) != -1 || why == NULL || v != 777) {
    fprintf (stderr, "size '%s' was accepted\n", s);
    unit_failures++;
  }
}

int
main (void)
{
  uint64_t v;
  const char *why;

  size_ok ("0", 0);
  size_ok ("4096", 4096);
  size_ok ("64K", 65536);
  size_ok ("64k", 65536);
  size_ok ("64KiB", 65536);
  size_ok ("64KB", 65536);
  size_ok ("1M", 1048576);
  size_ok ("16M", 16777216);
  size_ok ("1G", UINT64_C (1) << 30);
  size_ok ("1T", UINT64_C (1) << 40);
  size_ok ("2s", 1024);
  size_ok ("7b", 7);
  size_ok ("15E", UINT64_C (15) << 60);
  size_ok ("18446744073709551615", UINT64_MAX);

  size_bad ("");
  size_bad ("K");
  size_bad ("-1");
  size_bad ("3X");
  size_bad ("1.5M");
  size_bad ("64K ");
  size_bad (" 64K");
  size_bad ("64KiBx");
  size_bad ("16E");                     /* 2^64: overflow */
  size_bad ("18446744073709551616");    /* overflow */
  size_bad ("1bB");                     /* B only after k, m, g... */

  CHECK (fleece_parse_uint ("0", 10, &v, &why) == 0 && v == 0);
  CHECK (fleece_parse_uint ("10", 10, &v, &why) == 0 && v == 10);
  CHECK (fleece_parse_uint ("11", 10, &v, &why) == -1);
  CHECK (fleece_parse_uint ("5s", 10, &v, &why) == -1);
  CHECK (fleece_parse_uint ("", 10, &v, &why) == -1);
  CHECK (fleece_parse_uint ("-1", 10, &v, &why) == -1);

  CHECK (fleece_valid_name ("c1"));
  CHECK (fleece_valid_name ("backup-2026.11.22_01"));
  CHECK (fleece_valid_name ("0123456789012345678901234567890123456789"
                            "012345678901234567890123"));      /* 64 */
  CHECK (!fleece_valid_name ("0123456789012345678901234567890123456789"
                             "0123456789012345678901234"));    /* 65 */
  CHECK (!fleece_valid_name (""));
  CHECK (!fleece_valid_name ("."));
  CHECK (!fleece_valid_name (".."));
  CHECK (!fleece_valid_name ("-rf"));
  CHECK (!fleece_valid_name ("a/b"));
  CHECK (!fleece_valid_name ("a b"));
  CHECK (!fleece_valid_name ("caf\xc3\xa9"));
  CHECK (!fleece_valid_name ("x\"y"));

  UNIT_EXIT ();
}
