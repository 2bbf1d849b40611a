/* nbdkit-fleece
 * SPDX-License-Identifier: BSD-3-Clause
 *
 * The bitmap file's intent map (format 4): sizes, and the recovery
 * after a power loss.  Pure functions, see bmfile.h.
 */

#include <config.h>

#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#include "bmfile.h"

uint64_t
bmfile_intent_regions (uint64_t nbits, uint32_t shift)
{
  if (shift >= 64)
    return nbits > 0;
  return (nbits >> shift) + ((nbits & ((UINT64_C (1) << shift) - 1)) != 0);
}

uint64_t
bmfile_expand_intent (const unsigned char *intent, uint64_t intent_len,
                      uint32_t shift, unsigned char *live, uint64_t nbits)
{
  uint64_t r, n = 0, nreg = bmfile_intent_regions (nbits, shift);

  for (r = 0; r < nreg && r / 8 < intent_len; r++) {
    uint64_t g, first, end;

    if (!(intent[r / 8] & (1 << (r % 8))))
      continue;
    n++;
    first = shift >= 64 ? 0 : r << shift;
    end = shift >= 64 || nbits - first < (UINT64_C (1) << shift) ? nbits
      : first + (UINT64_C (1) << shift);
    for (g = first; g < end; g++)
      live[g / 8] |= 1 << (g % 8);
  }
  return n;
}

bool
bmfile_same_boot (const unsigned char *a, const unsigned char *b)
{
  static const unsigned char zero[BMFILE_BOOT_ID_LEN];

  return memcmp (a, zero, BMFILE_BOOT_ID_LEN) != 0 &&
    memcmp (a, b, BMFILE_BOOT_ID_LEN) == 0;
}
