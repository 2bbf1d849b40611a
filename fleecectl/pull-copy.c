/* nbdkit-fleece
 * SPDX-License-Identifier: BSD-3-Clause
 *
 * fleecectl pull: the workers.  Each takes the next chunk of the
 * source, asks its block status, and copies or zeroes every extent:
 * requests never cross a granule boundary except at the start of an
 * extent, so every granule the server marks changed is read and
 * written whole.  A worker's handle, buffer and extent list are its
 * own; what it shares is in struct pull (pull.h).
 */

#include <config.h>

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libnbd.h>

#include "fleecectl.h"
#include "pull.h"

static bool
is_zero (const char *buf, size_t len)
{
  return len == 0 || (buf[0] == 0 && memcmp (buf, buf + 1, len - 1) == 0);
}

/* Must zeroes be written to DEST?  A full pull onto zeroes may skip
 * them; an incremental one must write them (the old backup is there).
 */
static bool
must_zero (const struct pull *pl)
{
  return pl->delta || !pl->dest_zero;
}

/* Copy [off, off+len), which the source says holds data (changed data
 * in a delta view).  Requests are split at granule boundaries; within
 * a request, runs of all-zero granules are zeroed in DEST (or skipped
 * if DEST is known zero and this is a full pull), the rest written.
 */
static int
copy_data (struct worker *w, uint64_t off, uint64_t len)
{
  struct pull *pl = w->pl;
  uint64_t end = off + len, p = off, pend;

  while (p < end) {
    uint64_t s, send, run_start;
    int run_kind = -1;          /* 0 zero, 1 data */

    if (pull_failed (pl))
      return -1;
    pend = (p & ~(pl->gran - 1)) + pl->maxreq;
    if (pend > end)
      pend = end;
    if (nbd_pread (w->src, w->buf, pend - p, p, 0) == -1) {
      pull_fail (pl, "reading %s at offset %" PRIu64 " (%" PRIu64
                 " bytes): %s", pl->src_uri, p, pend - p, nbd_get_error ());
      return -1;
    }
    /* Walk the granules of the request, grouping runs. */
    run_start = p;
    for (s = p; s <= pend; s = send) {
      int kind;

      if (s < pend) {
        send = (s & ~(pl->gran - 1)) + pl->gran;
        if (send > pend)
          send = pend;
        kind = is_zero (w->buf + (s - p), send - s) ? 0 : 1;
      }
      else {
        send = pend + 1;        /* end marker: flush the last run */
        kind = -2;
      }
      if (kind != run_kind) {
        if (run_kind == 1) {
          if (pull_dest_write (pl, w->buf + (run_start - p),
                               s - run_start, run_start) == -1)
            return -1;
        }
        else if (run_kind == 0) {
          if (must_zero (pl) &&
              pull_dest_zero (pl, s - run_start, run_start) == -1)
            return -1;
        }
        run_kind = kind;
        run_start = s;
      }
    }
    p = pend;
  }
  return 0;
}

/* Room for twice as many extents in w's list. */
static int
grow_extents (struct worker *w)
{
  size_t ncap = w->cap_ext ? w->cap_ext * 2 : 64;
  uint64_t *l = realloc (w->ext_len, ncap * sizeof *l);
  uint32_t *f;

  if (l == NULL)
    return -1;
  w->ext_len = l;
  f = realloc (w->ext_flags, ncap * sizeof *f);
  if (f == NULL)
    return -1;
  w->ext_flags = f;
  w->cap_ext = ncap;
  return 0;
}

static int
extent_cb (void *opaque, const char *metacontext, uint64_t offset,
           uint32_t *entries, size_t nr, int *error)
{
  struct worker *w = opaque;
  size_t i;

  if (strcmp (metacontext, LIBNBD_CONTEXT_BASE_ALLOCATION) != 0)
    return 0;
  for (i = 0; i + 1 < nr; i += 2) {
    if (w->next_ext == w->cap_ext && grow_extents (w) == -1) {
      *error = ENOMEM;
      return -1;
    }
    w->ext_len[w->next_ext] = entries[i];
    w->ext_flags[w->next_ext] = entries[i + 1];
    w->next_ext++;
  }
  return 0;
}

/* One chunk: ask for its extents, then copy or zero each one. */
static int
do_chunk (struct worker *w, uint64_t off, uint64_t end)
{
  struct pull *pl = w->pl;
  uint64_t pos = off;

  while (pos < end) {
    size_t i;

    if (!pl->extents) {
      /* No block status: all data (only a full pull gets here). */
      if (copy_data (w, pos, end - pos) == -1)
        return -1;
      break;
    }
    w->next_ext = 0;
    if (nbd_block_status (w->src, end - pos, pos,
                          (nbd_extent_callback) { .callback = extent_cb,
                                                  .user_data = w }, 0)
        == -1) {
      pull_fail (pl, "block status of %s at offset %" PRIu64 ": %s",
                 pl->src_uri, pos, nbd_get_error ());
      return -1;
    }
    if (w->next_ext == 0) {
      pull_fail (pl, "block status of %s at offset %" PRIu64 ": the server "
                 "returned no extents", pl->src_uri, pos);
      return -1;
    }
    for (i = 0; i < w->next_ext && pos < end; i++) {
      uint64_t len = w->ext_len[i];
      uint32_t flags = w->ext_flags[i];

      if (len == 0) {
        pull_fail (pl, "block status of %s at offset %" PRIu64 ": an "
                   "extent of length 0", pl->src_uri, pos);
        return -1;
      }
      if (len > end - pos)
        len = end - pos;
      /* In a delta view unchanged granules are holes; everything
       * else changed.
       */
      if (pl->delta && (flags & LIBNBD_STATE_HOLE))
        ;
      else if (flags & LIBNBD_STATE_ZERO) {
        if (must_zero (pl) && pull_dest_zero (pl, len, pos) == -1)
          return -1;
      }
      else if (copy_data (w, pos, len) == -1)
        return -1;
      pos += len;
    }
  }
  return 0;
}

void *
pull_worker (void *opaque)
{
  struct worker *w = opaque;
  struct pull *pl = w->pl;

  for (;;) {
    uint64_t off, end;

    pthread_mutex_lock (&pl->lock);
    if (pl->failed || pl->next >= pl->size) {
      pthread_mutex_unlock (&pl->lock);
      break;
    }
    off = pl->next;
    end = off + pl->chunk > pl->size ? pl->size : off + pl->chunk;
    pl->next = end;
    pthread_mutex_unlock (&pl->lock);

    if (do_chunk (w, off, end) == -1)
      break;
    pull_count (pl, &pl->done, end - off);
  }
  pthread_mutex_lock (&pl->lock);
  if (--pl->running == 0)
    pthread_cond_signal (&pl->finished);
  pthread_mutex_unlock (&pl->lock);
  return NULL;
}

struct nbd_handle *
pull_open_source (const char *uri, char *err, size_t errlen)
{
  struct nbd_handle *h = nbd_create ();

  if (h == NULL) {
    snprintf (err, errlen, "libnbd: %s", nbd_get_error ());
    return NULL;
  }
  if (nbd_add_meta_context (h, LIBNBD_CONTEXT_BASE_ALLOCATION) == -1 ||
      nbd_connect_uri (h, uri) == -1) {
    snprintf (err, errlen, "cannot open %s: %s", uri, nbd_get_error ());
    nbd_close (h);
    return NULL;
  }
  return h;
}
