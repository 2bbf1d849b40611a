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

/* Write-ahead tracking (bitmap-sync=write-ahead), two levels.  The
 * first write to a granule of the newest checkpoint, before it goes
 * down:
 *  1. waits until its region's bit is durable in the file's intent map
 *     (wal: written in place and fdatasync'ed, batched by a commit
 *     thread); only the first write to a region pays this;
 *  2. writes the granule's bit in place in the live region (wal_fine:
 *     into the page cache, no sync).
 * Later writes to the granule find its bit in wal_fine and do no I/O.
 * After a crash of the process (same boot id) the live region is exact;
 * after a power loss (another boot) every region of the intent map is
 * counted as written (persist-load.c).  Each rewrite of the file
 * starts both maps afresh: its image holds the granule bits (synced
 * with the file) and a clear intent map.
 *
 * Sequential writers: a write that starts a region right after a
 * durable one also asks for the next INTENT_AHEAD regions (16 MiB)
 * without waiting (persist_wait), so a stream of sequential writes
 * rarely waits for a sync; after a power loss those few regions
 * ahead count as changed too.
 *
 * Region size: 4 MiB of disk (64 granules of 64K).  Larger regions
 * mean fewer syncs but more data counted as changed after a power
 * loss (at most 4 MiB per region written since the checkpoint, where
 * a backup of 64K granules reads at least 64K); 4 MiB is small next to
 * what a guest typically writes between backups, a random 4K writer
 * pays one sync per 64 first touches of granules instead of one per
 * granule, and the intent map stays small (32 KiB for 1 TiB).
 *
 * Set at after_fork, freed at cleanup; durable-bits.c and fine-bits.c
 * have their own locks.  NULL in clean-stop mode.  intent_shift and
 * boot_id are set at after_fork and read-only afterwards.
 */
struct durable_bits *wal;
struct fine_bits *wal_fine;
bool wal_live;           /* attached to the file: switch on saves */
uint32_t intent_shift;
unsigned char boot_id[BMFILE_BOOT_ID_LEN];

/* The file found at start-up had been left in use by a write-ahead
 * server and was trusted (recovered); when it was last written.  Set
 * at after_fork, read-only afterwards.
 */
bool recovered;
time_t recovered_mtime;
/* How: regions of the intent map expanded (another boot), or the live
 * region taken as it was (same boot, or format 3).
 */
bool recovered_expanded;
uint64_t recovered_regions;

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
    .intent_shift = intent_shift,
  };
  struct bmfile_layout lay;
  const struct bitset **bitmaps;
  struct checkpoint *c;
  size_t i;

  memset (img, 0, sizeof *img);
  if (db_config.bitmap_file == NULL)
    return 0;
  if (db_config.disk_id)
    snprintf (f.disk_id, sizeof f.disk_id, "%s", db_config.disk_id);
  memcpy (f.boot_id, boot_id, sizeof f.boot_id);
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
  img->buf = bmfile_encode_layout (&f, bitmaps, &img->len, &lay);
  img->live_offset = lay.live_offset;
  img->intent_offset = lay.intent_offset;
  img->nbits = ckpt_newest ? ckpt_newest->bits.nbits : 0;
 out:
  free (bitmaps);
  free (f.checkpoints);
  if (img->buf == NULL)
    return fleece_errorf (errmsg, "bitmap-file: out of memory");
  /* Write-ahead: from here on the newest checkpoint's bits go to the
   * new file, whose intent map starts clear (its image holds the live
   * bits); writers of new bits wait until it is in place.
   */
  if (wal_live) {
    uint64_t nreg = bmfile_intent_regions (img->nbits, intent_shift);

    if (durable_bits_switch_begin (wal, nreg,
                                   img->buf + img->intent_offset) == -1) {
      free (img->buf);
      img->buf = NULL;
      return fleece_errorf (errmsg, "bitmap-file: out of memory");
    }
    if (fine_bits_switch_begin (wal_fine, img->nbits,
                                img->buf + img->live_offset) == -1) {
      durable_bits_switch_end (wal, -1, 0);
      free (img->buf);
      img->buf = NULL;
      return fleece_errorf (errmsg, "bitmap-file: out of memory");
    }
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
  /* The fine bits first: intent waiters then write to the file in
   * place when they wake.
   */
  if (img->switching) {
    fine_bits_switch_end (wal_fine, r == 0 ? fd : -1, img->live_offset);
    durable_bits_switch_end (wal, r == 0 ? fd : -1, img->intent_offset);
  }
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
  uint64_t r0, r1;

  if (!wal_live || n == 0 || fine_bits_test (wal_fine, first, n))
    return 0;
  r0 = first >> intent_shift;
  r1 = (first + n - 1) >> intent_shift;
  /* A write that starts a region (or crosses into one) right after a
   * region already durable looks sequential: the next INTENT_AHEAD
   * regions are asked for too, in the same commit and without
   * waiting, so a sequential writer finds them durable when it gets
   * there.
   */
  if ((r1 > r0 || (first & ((UINT64_C (1) << intent_shift) - 1)) == 0) &&
      r0 > 0 && durable_bits_test (wal, r0 - 1, 1))
    durable_bits_ask (wal, r1 + 1, INTENT_AHEAD);
  if (durable_bits_set_wait (wal, r0, r1 - r0 + 1) == -1)
    return -1;
  return fine_bits_set_write (wal_fine, first, n);
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
  /* How: "exact" (same boot: the granule bits as they were), or
   * "regions" (after a reboot or power loss: every region of the intent
   * map counted as changed, recovery_regions of them); else null.
   */
  if (recovered)
    jbuf_kv_string (reply, "recovery",
                    recovered_expanded ? "regions" : "exact");
  else
    jbuf_kv_raw (reply, "recovery", "null");
  jbuf_kv_u64 (reply, "recovery_regions", recovered_regions);
  if (wal)
    durable_bits_get_stats (wal, &st);
  jbuf_kv_u64 (reply, "syncs", st.syncs);
  jbuf_kv_u64 (reply, "pages_written", st.pages_written);
  jbuf_kv_u64 (reply, "writes_waited", st.waits);
  jbuf_kv_u64 (reply, "granule_pages_written",
               wal_fine ? fine_bits_pages_written (wal_fine) : 0);
  jbuf_raw (reply, "}");
}

void
persist_stop (void)
{
  fine_bits_free (wal_fine);
  wal_fine = NULL;
  durable_bits_free (wal);
  wal = NULL;
  wal_live = false;
}

