/* nbdkit-fleece
 * SPDX-License-Identifier: BSD-3-Clause
 *
 * Word maps to and from their serialised form in a file (words.h).
 */

#include <config.h>

#include <endian.h>
#include <errno.h>
#include <string.h>
#include <unistd.h>

#include "words.h"

void
words_load (uint64_t *w, uint64_t nbits, const unsigned char *in)
{
  uint64_t nw = words_for (nbits), len = (nbits + 7) / 8, i;

  memset (w, 0, nw * 8);
  for (i = 0; i < len; i++)
    w[i / 8] |= (uint64_t) in[i] << (8 * (i % 8));
  if (nbits % 64)
    w[nw - 1] &= (UINT64_C (1) << (nbits % 64)) - 1;
}

int
words_write_page (int fd, uint64_t offset, uint64_t nbits, uint64_t p,
                  const uint64_t *w)
{
  uint64_t rlen = (nbits + 7) / 8, start = p * WORDS_PAGE;
  uint64_t len = rlen - start, nw = words_for (nbits) - p * WORDS_PER_PAGE;
  unsigned char buf[WORDS_PAGE];
  const unsigned char *q = buf;
  uint64_t i;

  if (len > WORDS_PAGE)
    len = WORDS_PAGE;
  if (nw > WORDS_PER_PAGE)
    nw = WORDS_PER_PAGE;
  memset (buf, 0, sizeof buf);
  for (i = 0; i < nw; i++) {
    uint64_t v = htole64 (w[i]);

    memcpy (buf + i * 8, &v, 8);
  }
  while (len > 0) {
    ssize_t r = pwrite (fd, q, len, offset + start);

    if (r == -1) {
      if (errno == EINTR)
        continue;
      return -1;
    }
    q += r;
    start += r;
    len -= r;
  }
  return 0;
}
