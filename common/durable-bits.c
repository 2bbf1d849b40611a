/* nbdkit-fleece
 * SPDX-License-Identifier: BSD-3-Clause
 *
 * Durable bits: the commit thread, attaching, testing and waiting.
 * Moving to a new file is in durable-bits-switch.c.  The contract, the
 * crash argument and the locks are in durable-bits.h.
 *
 * The invariants are in durable-bits-int.h.
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

#include "durable-bits-int.h"

void
durable_store (struct durable_bits *d, const uint64_t *src)
{
  uint64_t i;

  for (i = 0; i < d->nwords; i++)
    __atomic_store_n (&d->durable[i], src ? src[i] : 0, __ATOMIC_RELEASE);
}

void
durable_mark_dirty_where_not_durable (struct durable_bits *d, const uint64_t *base)
{
  uint64_t i;

  for (i = 0; i < d->nwords; i++)
    if (d->wanted[i] & ~base[i]) {
      d->dirty[i / WORDS_PER_PAGE] = 1;
      d->any_dirty = true;
    }
}

/* Write the batch: pages[0..n) of snap (word copies of wanted), then
 * sync.
 */
static int
write_pages (int fd, uint64_t offset, uint64_t nbits, const uint64_t *pages,
             const uint64_t *snap, size_t n)
{
  size_t k;

  for (k = 0; k < n; k++)
    if (words_write_page (fd, offset, nbits, pages[k],
                          snap + k * WORDS_PER_PAGE) == -1)
      return -1;
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

    if (write_pages (fd, offset, nbits, pages, snap, n) == -1)
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

void
durable_free_maps (uint64_t **a, uint64_t **b)
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
  durable_free_maps (&d->wanted, &d->durable);
  durable_free_maps (&d->old_wanted, &d->old_durable);
  free (d->pending_initial);
  free (d->dirty);
  pthread_mutex_destroy (&d->lock);
  pthread_cond_destroy (&d->work);
  pthread_cond_destroy (&d->done);
  free (d);
}

/* New maps of nbits for the current era (lock held, nothing running). */
int
durable_new_maps (uint64_t nbits, const unsigned char *initial,
                  uint64_t **wanted, uint64_t **durable, unsigned char **dirty)
{
  uint64_t nw = words_for (nbits), np = (nw + WORDS_PER_PAGE - 1) /
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
    words_load (*wanted, nbits, initial);
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

  if (durable_new_maps (nbits, initial, &wanted, &durable, &dirty) == -1)
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
  durable_free_maps (&d->wanted, &d->durable);
  free (d->dirty);
  d->wanted = wanted;
  d->durable = durable;
  d->dirty = dirty;
  d->nbits = nbits;
  d->nwords = words_for (nbits);
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

bool
durable_bits_test (const struct durable_bits *d, uint64_t first, uint64_t n)
{
  uint64_t end;

  if (n == 0 || first >= d->nbits)
    return true;
  end = n > d->nbits - first ? d->nbits : first + n;
  return words_all_set (d->durable, first, end, true);
}

/* Ask for bits [first, end) (lock held, end > first): they go into
 * the commit thread's next batch.
 */
static void
ask_locked (struct durable_bits *d, uint64_t first, uint64_t end)
{
  uint64_t w;

  for (w = first / 64; w <= (end - 1) / 64; w++) {
    uint64_t m = words_mask (w, first, end);

    if (m & ~d->wanted[w]) {
      d->wanted[w] |= m;
      d->dirty[w / WORDS_PER_PAGE] = 1;
      d->any_dirty = true;
    }
  }
  if (d->any_dirty)
    pthread_cond_signal (&d->work);
}

void
durable_bits_ask (struct durable_bits *d, uint64_t first, uint64_t n)
{
  if (durable_bits_test (d, first, n))
    return;
  pthread_mutex_lock (&d->lock);
  if (n > 0 && first < d->nbits)
    ask_locked (d, first, n > d->nbits - first ? d->nbits : first + n);
  pthread_mutex_unlock (&d->lock);
}

int
durable_bits_set_wait (struct durable_bits *d, uint64_t first, uint64_t n)
{
  uint64_t end;
  bool waited = false;
  int r = 0;

  if (durable_bits_test (d, first, n))
    return 0;
  pthread_mutex_lock (&d->lock);
  if (n == 0 || first >= d->nbits)
    goto out;
  end = n > d->nbits - first ? d->nbits : first + n;
  ask_locked (d, first, end);
  while (!d->error && !words_all_set (d->durable, first, end, false)) {
    waited = true;
    pthread_cond_wait (&d->done, &d->lock);
  }
  if (waited)
    d->stats.waits++;
  if (!words_all_set (d->durable, first, end, false)) {
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
