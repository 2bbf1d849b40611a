/* nbdkit-fleece
 * SPDX-License-Identifier: BSD-3-Clause
 *
 * Little-endian integers at any byte address, as the bitmap file
 * stores them: the file's codec, its fuzz harness and its tests read
 * and write its fields with these.
 */

#ifndef FLEECE_LE_H
#define FLEECE_LE_H

#include <endian.h>
#include <stdint.h>
#include <string.h>

static inline uint32_t
le_load32 (const void *p)
{
  uint32_t v;

  memcpy (&v, p, 4);
  return le32toh (v);
}

static inline uint64_t
le_load64 (const void *p)
{
  uint64_t v;

  memcpy (&v, p, 8);
  return le64toh (v);
}

static inline void
le_store32 (void *p, uint32_t v)
{
  v = htole32 (v);
  memcpy (p, &v, 4);
}

static inline void
le_store64 (void *p, uint64_t v)
{
  v = htole64 (v);
  memcpy (p, &v, 8);
}

#endif /* FLEECE_LE_H */
