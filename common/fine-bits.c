/* nbdkit-fleece
 * SPDX-License-Identifier: BSD-3-Clause
 *
 * Fine bits: see fine-bits.h for the contract and the locks.
 *
 * Invariants (f->lock held to read or change them, except written's
 * words, see the header):
 *  - written ⊆ wanted; outside f->lock and outside a switch, written ==
 *    wanted unless error is set (fine_bits_set_write sets, writes and
 *    publishes under the lock), so the file region holds every bit of
 *    written;
 *  - while switching, written holds only bits in both the new image
 *    and the old era's region, so a writer passing on them is covered
 *    whichever file a crash leaves;
 *  - fd == -1 exactly while switching (or before the first attach):
 *    nothing is written, and fine_bits_set_write waits on done;
 *  - bits past nbits are never set.
 */

#include <config.h>

#include <endian.h>
#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fine-bits.h"
#include "words.h"

struct fine_bits {
  pthread_mutex_t lock;
  pthread_cond_t done;                  /* writers wait for a switch */
  int fd;                               /* ours (a dup); -1: none */
  uint64_t offset, nbits, nwords;
  uint64_t *wanted;
  uint64_t *written;                    /* atomic words */
  int error;                            /* sticky errno of this era */

  /* Between switch_begin and switch_end: the old era. */
  bool switching;
  int old_fd, old_error;
  uint64_t old_offset, old_nbits;
  uint64_t *old_wanted, *old_written;

  uint64_t pages_written;
};

/* New wanted and written maps holding initial (serialised). */
static int
new_maps (uint64_t nbits, const unsigned char *initial,
          uint64_t **wanted, uint64_t **written)
{
  uint64_t nw = words_for (nbits);

  *wanted = calloc (nw ? nw : 1, 8);
  *written = calloc (nw ? nw : 1, 8);
  if (*wanted == NULL || *written == NULL) {
    free (*wanted);
    free (*written);
    errno = ENOMEM;
    return -1;
  }
  if (initial)
    words_load (*wanted, nbits, initial);
  memcpy (*written, *wanted, nw * 8);
  return 0;
}

/* Write page p of wanted in place (lock held). */
static int
write_page (struct fine_bits *f, uint64_t p)
{
  if (words_write_page (f->fd, f->offset, f->nbits, p,
                        f->wanted + p * WORDS_PER_PAGE) == -1)
    return -1;
  f->pages_written++;
  return 0;
}

/* Write every page where wanted has bits written lacks (as given by
 * base), then publish wanted as written (lock held).  0 or -1 (error
 * set).
 */
static int
write_changed (struct fine_bits *f, const uint64_t *base, uint64_t w_first,
               uint64_t w_last)
{
  uint64_t w, p, last_page = UINT64_MAX;

  for (w = w_first; w <= w_last && w < f->nwords; w++) {
    p = w / WORDS_PER_PAGE;
    if (p == last_page || !(f->wanted[w] & ~base[w]))
      continue;
    if (write_page (f, p) == -1) {
      f->error = errno ? errno : EIO;
      return -1;
    }
    last_page = p;
  }
  for (w = w_first; w <= w_last && w < f->nwords; w++)
    __atomic_store_n (&f->written[w], f->wanted[w], __ATOMIC_RELEASE);
  return 0;
}

struct fine_bits *
fine_bits_new (void)
{
  struct fine_bits *f = calloc (1, sizeof *f);

  if (f == NULL)
    return NULL;
  pthread_mutex_init (&f->lock, NULL);
  pthread_cond_init (&f->done, NULL);
  f->fd = f->old_fd = -1;
  return f;
}

void
fine_bits_free (struct fine_bits *f)
{
  if (f == NULL)
    return;
  if (f->fd >= 0)
    close (f->fd);
  if (f->old_fd >= 0)
    close (f->old_fd);
  free (f->wanted);
  free (f->written);
  free (f->old_wanted);
  free (f->old_written);
  pthread_mutex_destroy (&f->lock);
  pthread_cond_destroy (&f->done);
  free (f);
}

int
fine_bits_attach (struct fine_bits *f, int fd, uint64_t offset,
                  uint64_t nbits, const unsigned char *initial)
{
  uint64_t *wanted, *written;
  int nfd;

  if (new_maps (nbits, initial, &wanted, &written) == -1)
    return -1;
  nfd = dup (fd);
  if (nfd == -1) {
    free (wanted);
    free (written);
    return -1;
  }
  pthread_mutex_lock (&f->lock);
  if (f->fd >= 0)
    close (f->fd);
  free (f->wanted);
  free (f->written);
  f->wanted = wanted;
  f->written = written;
  f->fd = nfd;
  f->offset = offset;
  f->nbits = nbits;
  f->nwords = words_for (nbits);
  f->error = 0;
  pthread_cond_broadcast (&f->done);
  pthread_mutex_unlock (&f->lock);
  return 0;
}

int
fine_bits_switch_begin (struct fine_bits *f, uint64_t nbits,
                        const unsigned char *initial)
{
  uint64_t *wanted, *written;

  if (new_maps (nbits, initial, &wanted, &written) == -1)
    return -1;
  pthread_mutex_lock (&f->lock);
  f->old_fd = f->fd;
  f->old_error = f->error;
  f->old_offset = f->offset;
  f->old_nbits = f->nbits;
  f->old_wanted = f->wanted;
  f->old_written = f->written;
  /* Until the switch ends either file may be the one a crash leaves
   * in place: only a bit in both (the new image and the old region)
   * passes the test meanwhile.  A bit of the new image alone (the
   * recording checkpoint changed) waits like a new one.
   */
  {
    uint64_t w, nw = words_for (nbits);

    for (w = 0; w < nw; w++)
      written[w] = nbits == f->old_nbits ? written[w] & f->old_written[w] : 0;
  }
  f->wanted = wanted;
  f->written = written;
  f->nbits = nbits;
  f->nwords = words_for (nbits);
  f->fd = -1;
  f->error = 0;
  f->switching = true;
  pthread_mutex_unlock (&f->lock);
  return 0;
}

void
fine_bits_switch_end (struct fine_bits *f, int fd, uint64_t offset)
{
  pthread_mutex_lock (&f->lock);
  if (!f->switching) {
    pthread_mutex_unlock (&f->lock);
    return;
  }
  f->switching = false;
  if (fd >= 0) {
    uint64_t w;

    f->fd = dup (fd);
    f->offset = offset;
    if (f->fd == -1)
      f->error = errno ? errno : EIO;
    if (f->old_fd >= 0)
      close (f->old_fd);
    /* The new file is in place with the initial bits, and no bit was
     * set since (writers waited).
     */
    for (w = 0; f->fd >= 0 && w < f->nwords; w++)
      __atomic_store_n (&f->written[w], f->wanted[w], __ATOMIC_RELEASE);
  }
  else if (f->old_fd >= 0 && f->old_nbits == f->nbits) {
    /* Back to the old file, exactly as it was: no bit was set during
     * the switch (writers waited), and a bit of the new image alone
     * must not pass without its region's intent bit in the old file
     * (a writer of it now waits for that, then writes it here).
     */
    uint64_t w;

    /* Copied, not swapped: fine_bits_test may be reading the words
     * (written during the switch is a subset of old_written).
     */
    for (w = 0; w < f->nwords; w++) {
      f->wanted[w] = f->old_wanted[w];
      __atomic_store_n (&f->written[w], f->old_written[w], __ATOMIC_RELEASE);
    }
    f->fd = f->old_fd;
    f->offset = f->old_offset;
    f->error = f->old_error;
  }
  else {
    if (f->old_fd >= 0)
      close (f->old_fd);
    f->error = EIO;
  }
  f->old_fd = -1;
  free (f->old_wanted);
  free (f->old_written);
  f->old_wanted = f->old_written = NULL;
  pthread_cond_broadcast (&f->done);
  pthread_mutex_unlock (&f->lock);
}

bool
fine_bits_test (const struct fine_bits *f, uint64_t first, uint64_t n)
{
  uint64_t end, nbits = __atomic_load_n (&f->nbits, __ATOMIC_RELAXED);

  if (n == 0 || first >= nbits)
    return true;
  end = n > nbits - first ? nbits : first + n;
  return words_all_set (f->written, first, end, true);
}

int
fine_bits_set_write (struct fine_bits *f, uint64_t first, uint64_t n)
{
  uint64_t end, w;
  int r = 0;

  pthread_mutex_lock (&f->lock);
  while (f->switching)
    pthread_cond_wait (&f->done, &f->lock);
  if (n == 0 || first >= f->nbits)
    goto out;
  if (f->error || f->fd == -1) {
    errno = f->error ? f->error : EIO;
    r = -1;
    goto out;
  }
  end = n > f->nbits - first ? f->nbits : first + n;
  for (w = first / 64; w <= (end - 1) / 64; w++)
    f->wanted[w] |= words_mask (w, first, end);
  if (write_changed (f, f->written, first / 64, (end - 1) / 64) == -1) {
    errno = f->error;
    r = -1;
  }
 out:
  pthread_mutex_unlock (&f->lock);
  return r;
}

uint64_t
fine_bits_pages_written (struct fine_bits *f)
{
  uint64_t n;

  pthread_mutex_lock (&f->lock);
  n = f->pages_written;
  pthread_mutex_unlock (&f->lock);
  return n;
}
