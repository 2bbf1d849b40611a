/* nbdkit-fleece
 * SPDX-License-Identifier: BSD-3-Clause
 *
 * The bitmap file: loading it at start-up, saving it atomically.  The
 * format is encoded and decoded by common/bmfile.c and described in
 * nbdkit-dirty-bitmap-filter(1).
 *
 * Trust: a file whose CRC, structure or magic is wrong is damaged; it
 * is renamed to PATH.damaged (PATH.damaged.1, ... if that exists: an
 * earlier damaged file is never replaced) and tracking starts afresh.
 * A file that is sound but was left IN_USE (unclean stop), or was made
 * for a disk of another size or another granularity, keeps its
 * checkpoints marked inconsistent, each with the reason: they are
 * listed but refuse to serve delta views.  A file that names another
 * disk (bitmap-disk-id=) is refused and left untouched.
 *
 * One server per file: PATH.lock is locked (common/filelock.c) at
 * get_ready, before the file is read, and stays locked until the
 * process exits.
 *
 * State: lock_fd and the pending_* fields below are written only
 * during nbdkit's single-threaded start-up (get_ready, after_fork), so
 * they need no lock.
 */

#include <config.h>

#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdbool.h>
#include <inttypes.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <nbdkit-filter.h>

#include "bitset.h"
#include "checkpoints.h"
#include "bmfile.h"
#include "errors.h"
#include "filelock.h"
#include "dirty-bitmap.h"
#include "durable-bits.h"
#include "json.h"
#include "persist.h"
#include "persist-int.h"
#include "size.h"

/* PATH.lock, held open for the life of the process, or -1. */
int lock_fd = -1;

/* The file as read at get_ready, for after_fork: pending_buf is NULL
 * if it did not exist.  pending_mtime: when it was last written.
 */
unsigned char *pending_buf;
size_t pending_len;
time_t pending_mtime;

/* Write-ahead tracking (bitmap-sync=write-ahead): the newest
 * checkpoint's bits made durable in the file's live region before the
 * writes they cover go down.  Set at after_fork, freed at cleanup;
 * durable-bits.c has its own lock.  NULL in clean-stop mode.
 */
struct durable_bits *wal;
bool wal_live;           /* attached to the file: switch on saves */

/* The file found at start-up had been left in use by a write-ahead
 * server and was trusted (recovered); when it was last written.  Set
 * at after_fork, read-only afterwards.
 */
bool recovered;
time_t recovered_mtime;

/*----------------------------------------------------------------------
 * Writing.
 */

/* Write buf to path atomically: PATH.tmp, fsync, rename, fsync dir.
 * With keep_fd, the file stays open (read-write) in *keep_fd, for the
 * in-place updates of write-ahead tracking.
 */
int
write_atomic (const char *path, const void *buf, size_t len, int *keep_fd,
              char **errmsg)
{
  char *tmp = NULL, *dcopy = NULL;
  const char *p = buf;
  int fd = -1, dfd, r = -1;

  if (asprintf (&tmp, "%s.tmp", path) == -1) {
    tmp = NULL;
    fleece_errorf (errmsg, "out of memory");
    goto out;
  }
  /* Never through a symlink or an old file someone else planted: the
   * temporary file is always new, ours, and 0600.
   */
  if (unlink (tmp) == -1 && errno != ENOENT) {
    fleece_errorf (errmsg, "bitmap-file: cannot remove the old %s: %s",
                   tmp, strerror (errno));
    goto out;
  }
  fd = open (tmp, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
  if (fd == -1) {
    fleece_errorf (errmsg, "bitmap-file: cannot create %s: %s", tmp, strerror (errno));
    goto out;
  }
  while (len > 0) {
    ssize_t n = write (fd, p, len);

    if (n == -1) {
      fleece_errorf (errmsg, "bitmap-file: writing %s: %s", tmp, strerror (errno));
      goto out;
    }
    p += n;
    len -= n;
  }
  if (fsync (fd) == -1) {
    fleece_errorf (errmsg, "bitmap-file: syncing %s: %s", tmp, strerror (errno));
    goto out;
  }
  if (rename (tmp, path) == -1) {
    fleece_errorf (errmsg, "bitmap-file: renaming %s to %s: %s",
                   tmp, path, strerror (errno));
    goto out;
  }
  if (keep_fd) {
    *keep_fd = fd;
    fd = -1;
  }
  else {
    close (fd);
    fd = -1;
  }
  dcopy = strdup (path);
  if (dcopy) {
    dfd = open (dirname (dcopy), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
      fsync (dfd);
      close (dfd);
    }
  }
  r = 0;
 out:
  if (fd >= 0) {
    close (fd);
    unlink (tmp);
  }
  free (tmp);
  free (dcopy);
  return r;
}

int
persist_snapshot (bool in_use, struct persist_image *img, char **errmsg)
{
  struct bmfile f = {
    .in_use = in_use,
    .write_ahead = db_config.write_ahead,
    .disk_size = db_disk_size,
    .granularity = db_config.granularity,
    .next_seq = ckpt_next_seq,
  };
  const struct bitset **bitmaps;
  struct checkpoint *c;
  size_t i;

  memset (img, 0, sizeof *img);
  if (db_config.bitmap_file == NULL)
    return 0;
  if (db_config.disk_id)
    snprintf (f.disk_id, sizeof f.disk_id, "%s", db_config.disk_id);
  for (c = ckpt_oldest; c; c = c->newer)
    f.n++;
  f.checkpoints = calloc (f.n + 1, sizeof *f.checkpoints);
  bitmaps = calloc (f.n + 1, sizeof *bitmaps);
  if (f.checkpoints == NULL || bitmaps == NULL)
    goto out;
  for (c = ckpt_oldest, i = 0; c; c = c->newer, i++) {
    snprintf (f.checkpoints[i].name, sizeof f.checkpoints[i].name, "%s",
              c->name);
    f.checkpoints[i].seq = c->seq;
    f.checkpoints[i].created = c->created;
    f.checkpoints[i].consistent = c->consistent;
    f.checkpoints[i].provisional = c->provisional;
    snprintf (f.checkpoints[i].reason, sizeof f.checkpoints[i].reason,
              "%s", c->reason);
    bitmaps[i] = &c->bits;
  }
  img->buf = bmfile_encode_live (&f, bitmaps, &img->len, &img->live_offset);
  img->nbits = ckpt_newest ? ckpt_newest->bits.nbits : 0;
 out:
  free (bitmaps);
  free (f.checkpoints);
  if (img->buf == NULL)
    return fleece_errorf (errmsg, "bitmap-file: out of memory");
  /* Write-ahead: from here on the newest checkpoint's bits go to the
   * new file; writers wait until it is in place.
   */
  if (wal_live && durable_bits_switch_begin (wal, img->nbits,
                                        img->buf + img->live_offset) == -1) {
    free (img->buf);
    img->buf = NULL;
    return fleece_errorf (errmsg, "bitmap-file: out of memory");
  }
  img->switching = wal_live;
  return 0;
}

int
persist_write (struct persist_image *img, char **errmsg)
{
  int fd = -1, r;

  if (img->buf == NULL)
    return 0;
  r = write_atomic (db_config.bitmap_file, img->buf, img->len,
                    img->switching ? &fd : NULL, errmsg);
  if (img->switching)
    durable_bits_switch_end (wal, r == 0 ? fd : -1, img->live_offset);
  free (img->buf);
  img->buf = NULL;
  return r;
}

int
persist_save (bool in_use, char **errmsg)
{
  struct persist_image img;

  if (persist_snapshot (in_use, &img, errmsg) == -1)
    return -1;
  return persist_write (&img, errmsg);
}

int
persist_wait (uint64_t first, uint64_t n)
{
  return wal_live ? durable_bits_set_wait (wal, first, n) : 0;
}

void
persist_status (struct jbuf *reply)
{
  struct durable_bits_stats st = { 0, 0, 0 };

  if (db_config.bitmap_file == NULL)
    return;
  jbuf_kv_raw (reply, "bitmap_file", "{");
  jbuf_kv_string (reply, "path", db_config.bitmap_file);
  jbuf_kv_string (reply, "sync",
                  db_config.write_ahead ? "write-ahead" : "clean-stop");
  /* When the file found at start-up was last written, if nbdkit had
   * not stopped cleanly and the file (written in write-ahead mode)
   * was recovered with every checkpoint consistent; else null.
   */
  jbuf_key (reply, "recovered_after_unclean_stop");
  if (recovered)
    jbuf_time (reply, recovered_mtime);
  else
    jbuf_raw (reply, "null");
  if (wal)
    durable_bits_get_stats (wal, &st);
  jbuf_kv_u64 (reply, "syncs", st.syncs);
  jbuf_kv_u64 (reply, "pages_written", st.pages_written);
  jbuf_kv_u64 (reply, "writes_waited", st.waits);
  jbuf_raw (reply, "}");
}

void
persist_stop (void)
{
  durable_bits_free (wal);
  wal = NULL;
  wal_live = false;
}

