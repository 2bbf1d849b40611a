/* nbdkit-fleece
 * SPDX-License-Identifier: BSD-3-Clause
 *
 * Durable bits: see durable-bits.h for the contract, the crash
 * argument and the locks.
 *
 * Invariants (d->lock held to read or change them, except durable's
 * words, see the header):
 *  - durable ⊆ wanted: a bit is durable only after a commit wrote a
 *    page holding it and fdatasync returned;
 *  - a page of wanted that holds a bit not yet written since it was
 *    asked for has its dirty flag set, or is in the batch the commit
 *    thread is writing (committing);
 *  - fd == -1 only between switch_begin and switch_end (or before the
 *    first attach): nothing is committed and durable is all clear, so
 *    every waiter waits for the new file;
 *  - bits past nbits are never set in wanted or durable.
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

#include "durable-bits.h"

#define PAGE 4096                       /* = BMFILE_PAGE */
#define WORDS_PER_PAGE (PAGE / 8)

struct durable_bits {
  pthread_mutex_t lock;
  pthread_cond_t work;                  /* the commit thread waits */
  pthread_cond_t done;                  /* waiters and switches wait */
  pthread_t thread;
  bool thread_started, stop;

  int fd;                               /* -1: no file (switching) */
  uint64_t offset;
  uint64_t nbits, nwords, npages;
  uint64_t *wanted;
  uint64_t *durable;                    /* atomic words */
  unsigned char *dirty;                 /* one flag per page */
  bool any_dirty, committing;
  int error;                            /* sticky errno of this era */

  /* Between switch_begin and switch_end: the old era, and the new
   * era's initial bits (durable once its file is in place).
   */
  bool switching;
  int old_fd;
  uint64_t old_offset, old_nbits;
  uint64_t *old_wanted, *old_durable, *pending_initial;

  struct durable_bits_stats stats;
};

static uint64_t
nwords_for (uint64_t nbits)
{
  return (nbits + 63) / 64;
}

/* Words from serialised bytes (bit i = bit i % 8 of byte i / 8). */
static void
load_words (uint64_t *w, uint64_t nbits, const unsigned char *in)
{
  uint64_t nw = nwords_for (nbits), len = (nbits + 7) / 8, i;

  memset (w, 0, nw * 8);
  for (i = 0; i < len; i++)
    w[i / 8] |= (uint64_t) in[i] << (8 * (i % 8));
  if (nbits % 64)
    w[nw - 1] &= (UINT64_C (1) << (nbits % 64)) - 1;
}

static void
store_durable (struct durable_bits *d, const uint64_t *src)
{
  uint64_t i;

  for (i = 0; i < d->nwords; i++)
    __atomic_store_n (&d->durable[i], src ? src[i] : 0, __ATOMIC_RELEASE);
}

static void
mark_dirty_where_not_durable (struct durable_bits *d, const uint64_t *base)
{
  uint64_t i;

  for (i = 0; i < d->nwords; i++)
    if (d->wanted[i] & ~base[i]) {
      d->dirty[i / WORDS_PER_PAGE] = 1;
      d->any_dirty = true;
    }
}

/* Write the batch: pages[0..n) of snap (word copies of wanted). */
static int
write_pages (int fd, uint64_t offset, uint64_t nbits, const uint64_t *pages,
             const uint64_t *snap, size_t n, uint64_t nwords)
{
  uint64_t rlen = (nbits + 7) / 8;
  unsigned char buf[PAGE];
  size_t k;

  for (k = 0; k < n; k++) {
    uint64_t p = pages[k], w0 = p * WORDS_PER_PAGE, i;
    uint64_t start = p * PAGE, len = rlen - start;
    const unsigned char *q = buf;

    if (len > PAGE)
      len = PAGE;
    memset (buf, 0, sizeof buf);
    for (i = 0; i < WORDS_PER_PAGE && w0 + i < nwords; i++) {
      uint64_t v = htole64 (snap[k * WORDS_PER_PAGE + i]);

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
  }
  while (fdatasync (fd) == -1)
    if (errno != EINTR)
      return -1;
  return 0;
}

static void *
commit_thread (void *vp)
{
  struct durable_bits *d = vp;

  pthread_mutex_lock (&d->lock);
  for (;;) {
    uint64_t *pages = NULL, *snap = NULL, p, n = 0;
    int fd, err = 0;
    uint64_t offset, nbits, nwords;

    while (!d->stop && (d->fd == -1 || !d->any_dirty || d->error))
      pthread_cond_wait (&d->work, &d->lock);
    if (d->stop)
      break;

    /* Take the batch: every dirty page, copied. */
    for (p = 0; p < d->npages; p++)
      n += d->dirty[p];
    pages = malloc (n * sizeof *pages);
    snap = calloc (n * WORDS_PER_PAGE, sizeof *snap);
    if (pages == NULL || snap == NULL) {
      d->error = ENOMEM;
      free (pages);
      free (snap);
      pthread_cond_broadcast (&d->done);
      continue;
    }
    n = 0;
    for (p = 0; p < d->npages; p++) {
      uint64_t w0 = p * WORDS_PER_PAGE, i;

      if (!d->dirty[p])
        continue;
      d->dirty[p] = 0;
      for (i = 0; i < WORDS_PER_PAGE && w0 + i < d->nwords; i++)
        snap[n * WORDS_PER_PAGE + i] = d->wanted[w0 + i];
      pages[n++] = p;
    }
    d->any_dirty = false;
    d->committing = true;
    fd = d->fd;
    offset = d->offset;
    nbits = d->nbits;
    nwords = d->nwords;
    pthread_mutex_unlock (&d->lock);

    if (write_pages (fd, offset, nbits, pages, snap, n, nwords) == -1)
      err = errno ? errno : EIO;

    pthread_mutex_lock (&d->lock);
    d->committing = false;
    d->stats.syncs++;
    d->stats.pages_written += n;
    if (err)
      d->error = err;
    else {
      uint64_t k, i;

      for (k = 0; k < n; k++) {
        uint64_t w0 = pages[k] * WORDS_PER_PAGE;

        for (i = 0; i < WORDS_PER_PAGE && w0 + i < nwords; i++)
          __atomic_or_fetch (&d->durable[w0 + i],
                             snap[k * WORDS_PER_PAGE + i], __ATOMIC_RELEASE);
      }
    }
    pthread_cond_broadcast (&d->done);
    free (pages);
    free (snap);
  }
  pthread_mutex_unlock (&d->lock);
  return NULL;
}

struct durable_bits *
durable_bits_new (void)
{
  struct durable_bits *d = calloc (1, sizeof *d);

  if (d == NULL)
    return NULL;
  pthread_mutex_init (&d->lock, NULL);
  pthread_cond_init (&d->work, NULL);
  pthread_cond_init (&d->done, NULL);
  d->fd = -1;
  d->old_fd = -1;
  return d;
}

static void
free_maps (uint64_t **a, uint64_t **b)
{
  free (*a);
  free (*b);
  *a = *b = NULL;
}

void
durable_bits_free (struct durable_bits *d)
{
  if (d == NULL)
    return;
  pthread_mutex_lock (&d->lock);
  d->stop = true;
  pthread_cond_broadcast (&d->work);
  pthread_mutex_unlock (&d->lock);
  if (d->thread_started)
    pthread_join (d->thread, NULL);
  if (d->fd >= 0)
    close (d->fd);
  if (d->old_fd >= 0)
    close (d->old_fd);
  free_maps (&d->wanted, &d->durable);
  free_maps (&d->old_wanted, &d->old_durable);
  free (d->pending_initial);
  free (d->dirty);
  pthread_mutex_destroy (&d->lock);
  pthread_cond_destroy (&d->work);
  pthread_cond_destroy (&d->done);
  free (d);
}

/* New maps of nbits for the current era (lock held, nothing running). */
static int
new_maps (struct durable_bits *d, uint64_t nbits, const unsigned char *initial,
          uint64_t **wanted, uint64_t **durable, unsigned char **dirty)
{
  uint64_t nw = nwords_for (nbits), np = (nw + WORDS_PER_PAGE - 1) /
    WORDS_PER_PAGE;

  *wanted = calloc (nw ? nw : 1, 8);
  *durable = calloc (nw ? nw : 1, 8);
  *dirty = calloc (np ? np : 1, 1);
  if (*wanted == NULL || *durable == NULL || *dirty == NULL) {
    free (*wanted);
    free (*durable);
    free (*dirty);
    errno = ENOMEM;
    return -1;
  }
  if (initial)
    load_words (*wanted, nbits, initial);
  (void) d;
  return 0;
}

static int
start_thread (struct durable_bits *d)
{
  int e;

  if (d->thread_started)
    return 0;
  e = pthread_create (&d->thread, NULL, commit_thread, d);
  if (e) {
    errno = e;
    return -1;
  }
  d->thread_started = true;
  return 0;
}

int
durable_bits_attach (struct durable_bits *d, int fd, uint64_t offset,
                     uint64_t nbits, const unsigned char *initial)
{
  uint64_t *wanted, *durable;
  unsigned char *dirty;

  if (new_maps (d, nbits, initial, &wanted, &durable, &dirty) == -1)
    return -1;
  pthread_mutex_lock (&d->lock);
  if (start_thread (d) == -1) {
    pthread_mutex_unlock (&d->lock);
    free (wanted);
    free (durable);
    free (dirty);
    return -1;
  }
  if (d->fd >= 0)
    close (d->fd);
  free_maps (&d->wanted, &d->durable);
  free (d->dirty);
  d->wanted = wanted;
  d->durable = durable;
  d->dirty = dirty;
  d->nbits = nbits;
  d->nwords = nwords_for (nbits);
  d->npages = (d->nwords + WORDS_PER_PAGE - 1) / WORDS_PER_PAGE;
  memcpy (d->durable, d->wanted, d->nwords * 8);
  d->fd = fd;
  d->offset = offset;
  d->error = 0;
  d->any_dirty = false;
  pthread_cond_broadcast (&d->done);
  pthread_mutex_unlock (&d->lock);
  return 0;
}

int
durable_bits_switch_begin (struct durable_bits *d, uint64_t nbits,
                           const unsigned char *initial)
{
  uint64_t *wanted, *durable;
  unsigned char *dirty;

  if (new_maps (d, nbits, initial, &wanted, &durable, &dirty) == -1)
    return -1;
  pthread_mutex_lock (&d->lock);
  /* No waiter is left (the caller's rule), but the thread may still
   * be finishing a batch nobody waits for any more.
   */
  while (d->committing)
    pthread_cond_wait (&d->done, &d->lock);
  free (d->dirty);
  d->old_fd = d->fd;
  d->old_offset = d->offset;
  d->old_nbits = d->nbits;
  d->old_wanted = d->wanted;
  d->old_durable = d->durable;
  /* The new era's bits count as durable only once its file is in
   * place: until then durable is all clear and every writer waits.
   */
  d->pending_initial = durable;
  memcpy (d->pending_initial, wanted, nwords_for (nbits) * 8);
  d->wanted = wanted;
  d->durable = calloc (nwords_for (nbits) ? nwords_for (nbits) : 1, 8);
  d->dirty = dirty;
  d->nbits = nbits;
  d->nwords = nwords_for (nbits);
  d->npages = (d->nwords + WORDS_PER_PAGE - 1) / WORDS_PER_PAGE;
  d->fd = -1;
  d->switching = true;
  d->any_dirty = false;
  if (d->durable == NULL) {
    /* Cannot even wait safely: fail every writer until the next era. */
    d->durable = d->pending_initial;
    d->pending_initial = NULL;
    memset (d->durable, 0, d->nwords * 8);
    d->error = ENOMEM;
  }
  pthread_mutex_unlock (&d->lock);
  return 0;
}

void
durable_bits_switch_end (struct durable_bits *d, int fd, uint64_t offset)
{
  pthread_mutex_lock (&d->lock);
  if (!d->switching) {
    pthread_mutex_unlock (&d->lock);
    if (fd >= 0)
      close (fd);
    return;
  }
  d->switching = false;
  if (fd >= 0) {
    /* The new file is in place: its initial bits are durable, and
     * whatever was asked for meanwhile is written to it.
     */
    if (d->old_fd >= 0)
      close (d->old_fd);
    d->fd = fd;
    d->offset = offset;
    d->error = d->pending_initial ? 0 : d->error;
    if (d->pending_initial) {
      store_durable (d, d->pending_initial);
      mark_dirty_where_not_durable (d, d->pending_initial);
    }
    free_maps (&d->old_wanted, &d->old_durable);
  }
  else if (d->old_fd >= 0 && d->old_nbits == d->nbits &&
           d->pending_initial) {
    /* Back to the old file: its region gets the old era's bits and
     * every bit asked for since.
     */
    uint64_t i;

    for (i = 0; i < d->nwords; i++)
      d->wanted[i] |= d->old_wanted[i];
    d->fd = d->old_fd;
    d->offset = d->old_offset;
    store_durable (d, d->old_durable);
    mark_dirty_where_not_durable (d, d->old_durable);
    free_maps (&d->old_wanted, &d->old_durable);
  }
  else {
    /* Nowhere to write: every writer fails until the next era. */
    if (d->old_fd >= 0)
      close (d->old_fd);
    free_maps (&d->old_wanted, &d->old_durable);
    d->error = EIO;
  }
  d->old_fd = -1;
  free (d->pending_initial);
  d->pending_initial = NULL;
  pthread_cond_broadcast (&d->work);
  pthread_cond_broadcast (&d->done);
  pthread_mutex_unlock (&d->lock);
}

/* Mask of the bits of word w inside [first, end). */
static uint64_t
mask_of (uint64_t w, uint64_t first, uint64_t end)
{
  uint64_t m = UINT64_MAX;

  if (w == first / 64)
    m &= UINT64_MAX << (first % 64);
  if (w == (end - 1) / 64 && end % 64)
    m &= (UINT64_C (1) << (end % 64)) - 1;
  return m;
}

static bool
range_in (const uint64_t *words, uint64_t first, uint64_t end, bool atomic)
{
  uint64_t w;

  for (w = first / 64; w <= (end - 1) / 64; w++) {
    uint64_t m = mask_of (w, first, end);
    uint64_t v = atomic ? __atomic_load_n (&words[w], __ATOMIC_ACQUIRE)
      : words[w];

    if ((v & m) != m)
      return false;
  }
  return true;
}

bool
durable_bits_test (const struct durable_bits *d, uint64_t first, uint64_t n)
{
  uint64_t end;

  if (n == 0 || first >= d->nbits)
    return true;
  end = n > d->nbits - first ? d->nbits : first + n;
  return range_in (d->durable, first, end, true);
}

int
durable_bits_set_wait (struct durable_bits *d, uint64_t first, uint64_t n)
{
  uint64_t end, w;
  bool waited = false;
  int r = 0;

  if (durable_bits_test (d, first, n))
    return 0;
  pthread_mutex_lock (&d->lock);
  if (n == 0 || first >= d->nbits)
    goto out;
  end = n > d->nbits - first ? d->nbits : first + n;
  for (w = first / 64; w <= (end - 1) / 64; w++) {
    uint64_t m = mask_of (w, first, end);

    if (m & ~d->wanted[w]) {
      d->wanted[w] |= m;
      d->dirty[w / WORDS_PER_PAGE] = 1;
      d->any_dirty = true;
    }
  }
  if (d->any_dirty)
    pthread_cond_signal (&d->work);
  while (!d->error && !range_in (d->durable, first, end, false)) {
    waited = true;
    pthread_cond_wait (&d->done, &d->lock);
  }
  if (waited)
    d->stats.waits++;
  if (!range_in (d->durable, first, end, false)) {
    r = -1;
    errno = EIO;
  }
 out:
  pthread_mutex_unlock (&d->lock);
  return r;
}

void
durable_bits_get_stats (struct durable_bits *d, struct durable_bits_stats *s)
{
  pthread_mutex_lock (&d->lock);
  *s = d->stats;
  pthread_mutex_unlock (&d->lock);
}
