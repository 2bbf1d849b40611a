/* nbdkit-fleece
 * SPDX-License-Identifier: BSD-3-Clause
 *
 * Pure parsers for parameter values (no nbdkit calls, so the C unit
 * tests can check them directly).  Each returns 0, or -1 with a
 * static English reason in *why, for the caller to put after the
 * parameter's name in one error line.
 */

#ifndef FLEECE_SIZE_H
#define FLEECE_SIZE_H

#include <stdbool.h>
#include <stdint.h>

/* nbdkit's size syntax: a decimal number with an optional multiplier
 * b (bytes), s (512-byte sectors), k, m, g, t, p, e (powers of 1024,
 * either case), which may be followed by "B" or "iB" (so 64K, 64k,
 * 64KiB and 65536 are the same).  Overflow is an error.
 */
extern int fleece_parse_size (const char *str, uint64_t *out,
                              const char **why);

/* A plain unsigned decimal number no larger than max. */
extern int fleece_parse_uint (const char *str, uint64_t max,
                              uint64_t *out, const char **why);

static inline bool
fleece_is_pow2 (uint64_t v)
{
  return v != 0 && (v & (v - 1)) == 0;
}

/* Names of checkpoints (and similar user-chosen words): 1 to 64
 * characters from [A-Za-z0-9_.-], not starting with '.' or '-'.  So a
 * name is never a path, an option or an empty word.
 */
#define FLEECE_NAME_MAX 64
extern bool fleece_valid_name (const char *name);

#endif /* FLEECE_SIZE_H */
