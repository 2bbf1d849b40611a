/* nbdkit-fleece
 * SPDX-License-Identifier: BSD-3-Clause
 *
 * Unit tests for common/crc32.c against known values.
 */

#include <config.h>

#include <stdint.h>
#include <string.h>

#include "crc32.h"
#include "unit.h"

int
main (void)
{
  const char *check = "123456789";
  uint32_t crc;

  /* The standard check value of CRC-32/ISO-HDLC (zlib, gzip). */
  CHECK (fleece_crc32 (0, check, 9) == 0xCBF43926u);
  CHECK (fleece_crc32 (0, "", 0) == 0);
  CHECK (fleece_crc32 (0, "a", 1) == 0xE8B7BE43u);
  /* Continuing a CRC gives the same as one pass. */
  crc = fleece_crc32 (0, check, 4);
  crc = fleece_crc32 (crc, check + 4, 5);
  CHECK (crc == 0xCBF43926u);
  /* One flipped bit changes it. */
  CHECK (fleece_crc32 (0, "123456788", 9) != 0xCBF43926u);

  UNIT_EXIT ();
}
