/* nbdkit-fleece
 * SPDX-License-Identifier: BSD-3-Clause
 *
 * Parsers for sizes, numbers and names given as parameters or control
 * arguments.  They never print: the caller names the parameter.
 */

#include <config.h>

#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#include "size.h"

/* Parse leading decimal digits; *end is left on the first non-digit. */
static int
parse_digits (const char *str, const char **end, uint64_t *out,
              const char **why)
{
  uint64_t v = 0;
  const char *p = str;

  if (*p < '0' || *p > '9') {
    *why = "expected a number";
    return -1;
  }
  for (; *p >= '0' && *p <= '9'; p++) {
    unsigned d = *p - '0';

    if (v > (UINT64_MAX - d) / 10) {
      *why = "number is too large";
      return -1;
    }
    v = v * 10 + d;
  }
  *end = p;
  *out = v;
  return 0;
}

/* The shift for a multiplier letter, or -1. */
static int
multiplier_shift (char c)
{
  switch (c) {
  case 'b': case 'B': return 0;
  case 's': case 'S': return 9;
  case 'k': case 'K': return 10;
  case 'm': case 'M': return 20;
  case 'g': case 'G': return 30;
  case 't': case 'T': return 40;
  case 'p': case 'P': return 50;
  case 'e': case 'E': return 60;
  default: return -1;
  }
}

int
fleece_parse_size (const char *str, uint64_t *out, const char **why)
{
  const char *p;
  uint64_t v;
  int shift = 0;

  if (str == NULL || *str == '\0') {
    *why = "expected a size such as 64K";
    return -1;
  }
  if (parse_digits (str, &p, &v, why) == -1)
    return -1;
  if (*p) {
    shift = multiplier_shift (*p);
    if (shift == -1) {
      *why = "unknown size suffix (use K, M, G, T, P or E)";
      return -1;
    }
    p++;
    /* Allow 64KB and 64KiB after a power-of-1024 multiplier. */
    if (shift >= 10 && (strcmp (p, "B") == 0 || strcmp (p, "iB") == 0))
      p += strlen (p);
    if (*p) {
      *why = "trailing characters after the size";
      return -1;
    }
  }
  if (shift && v > (UINT64_MAX >> shift)) {
    *why = "size is too large";
    return -1;
  }
  *out = v << shift;
  return 0;
}

int
fleece_parse_uint (const char *str, uint64_t max, uint64_t *out,
                   const char **why)
{
  const char *p;
  uint64_t v;

  if (str == NULL || *str == '\0') {
    *why = "expected a number";
    return -1;
  }
  if (parse_digits (str, &p, &v, why) == -1)
    return -1;
  if (*p) {
    *why = "expected a plain decimal number";
    return -1;
  }
  if (v > max) {
    *why = "number is too large";
    return -1;
  }
  *out = v;
  return 0;
}

bool
fleece_valid_name (const char *name)
{
  size_t i, len = strlen (name);

  if (len == 0 || len > FLEECE_NAME_MAX || name[0] == '.' || name[0] == '-')
    return false;
  for (i = 0; i < len; i++) {
    char c = name[i];

    if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
          (c >= '0' && c <= '9') || c == '_' || c == '.' || c == '-'))
      return false;
  }
  return true;
}
