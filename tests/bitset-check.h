/* nbdkit-fleece
 * SPDX-License-Identifier: BSD-3-Clause
 *
 * What the bitset tests share (test-bitset.c, test-bitset-model.c):
 * checks of the invariants of common/bitset.c seen from outside.
 */

#ifndef FLEECE_BITSET_CHECK_H
#define FLEECE_BITSET_CHECK_H

#include <stdbool.h>
#include <stdint.h>

#include "bitset.h"

/* True if no bit past nbits is set in the last word. */
static inline bool
padding_clear (const struct bitset *bm)
{
  uint64_t nwords = (bm->nbits + 63) / 64;
  unsigned r = bm->nbits % 64;

  if (nwords == 0 || r == 0)
    return true;
  return (bm->words[nwords - 1] >> r) == 0;
}

#endif /* FLEECE_BITSET_CHECK_H */
