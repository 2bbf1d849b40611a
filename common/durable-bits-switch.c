/* nbdkit-fleece
 * SPDX-License-Identifier: BSD-3-Clause
 *
 * Durable bits: moving to a new file (durable_bits_switch_begin and
 * durable_bits_switch_end, see durable-bits.h).  Invariants:
 * durable-bits-int.h.
 */

#include <config.h>

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "durable-bits-int.h"

int
durable_bits_switch_begin (struct durable_bits *d, uint64_t nbits,
                           const unsigned char *initial)
{
  uint64_t *wanted, *durable;
  unsigned char *dirty;

  if (durable_new_maps (nbits, initial, &wanted, &durable, &dirty) == -1)
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
  memcpy (d->pending_initial, wanted, words_for (nbits) * 8);
  d->wanted = wanted;
  d->durable = calloc (words_for (nbits) ? words_for (nbits) : 1, 8);
  d->dirty = dirty;
  d->nbits = nbits;
  d->nwords = words_for (nbits);
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
      durable_store (d, d->pending_initial);
      durable_mark_dirty_where_not_durable (d, d->pending_initial);
    }
    durable_free_maps (&d->old_wanted, &d->old_durable);
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
    durable_store (d, d->old_durable);
    durable_mark_dirty_where_not_durable (d, d->old_durable);
    durable_free_maps (&d->old_wanted, &d->old_durable);
  }
  else {
    /* Nowhere to write: every writer fails until the next era. */
    if (d->old_fd >= 0)
      close (d->old_fd);
    durable_free_maps (&d->old_wanted, &d->old_durable);
    d->error = EIO;
  }
  d->old_fd = -1;
  free (d->pending_initial);
  d->pending_initial = NULL;
  pthread_cond_broadcast (&d->work);
  pthread_cond_broadcast (&d->done);
  pthread_mutex_unlock (&d->lock);
}

