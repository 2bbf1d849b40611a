/* nbdkit-fleece
 * SPDX-License-Identifier: BSD-3-Clause
 *
 * Bit maps as arrays of 64-bit words (bit i is bit i % 64 of word
 * i / 64) mirrored page by page in a region of a file (bit i is bit
 * i % 8 of byte i / 8 there), for the write-ahead maps (durable-bits.c,
 * fine-bits.c).  words.c has the I/O.
 */

#ifndef FLEECE_WORDS_H
#define FLEECE_WORDS_H

#include <stdbool.h>
#include <stdint.h>

#define WORDS_PAGE 4096                 /* = BMFILE_PAGE */
#define WORDS_PER_PAGE (WORDS_PAGE / 8)

/* Words of a map of nbits. */
static inline uint64_t
words_for (uint64_t nbits)
{
  return (nbits + 63) / 64;
}

/* w = the map serialised at in ((nbits + 7) / 8 bytes); bits past
 * nbits clear.
 */
extern void words_load (uint64_t *w, uint64_t nbits, const unsigned char *in);

/* Write page p of a map of nbits into its file region at offset: the
 * words of that page start at w (up to WORDS_PER_PAGE of them, fewer in
 * the last page).  The region's last page is written only up to its
 * end.  0, or -1 with errno.
 */
extern int words_write_page (int fd, uint64_t offset, uint64_t nbits,
                             uint64_t p, const uint64_t *w);

/* The bits of word w inside [first, end) (end > first). */
static inline uint64_t
words_mask (uint64_t w, uint64_t first, uint64_t end)
{
  uint64_t m = UINT64_MAX;

  if (w == first / 64)
    m &= UINT64_MAX << (first % 64);
  if (w == (end - 1) / 64 && end % 64)
    m &= (UINT64_C (1) << (end % 64)) - 1;
  return m;
}

/* True if every bit of [first, end) is set (end > first).  atomic:
 * each word read with an acquire load, for words other threads set
 * without the reader's lock.
 */
static inline bool
words_all_set (const uint64_t *words, uint64_t first, uint64_t end,
               bool atomic)
{
  uint64_t w;

  for (w = first / 64; w <= (end - 1) / 64; w++) {
    uint64_t m = words_mask (w, first, end);
    uint64_t v = atomic ? __atomic_load_n (&words[w], __ATOMIC_ACQUIRE)
      : words[w];

    if ((v & m) != m)
      return false;
  }
  return true;
}

#endif /* FLEECE_WORDS_H */
