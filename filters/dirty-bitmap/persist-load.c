/* nbdkit-fleece
 * SPDX-License-Identifier: BSD-3-Clause
 *
 * The bitmap file at start-up: locking it, reading it, deciding how far
 * to trust it (see persist.c for the rules), and attaching write-ahead
 * tracking to it.  Shared state: persist-int.h.
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
#include "bootid.h"
#include "errors.h"
#include "filelock.h"
#include "dirty-bitmap.h"
#include "durable-bits.h"
#include "fine-bits.h"
#include "json.h"
#include "persist.h"
#include "persist-int.h"
#include "size.h"


/*----------------------------------------------------------------------
 * Reading.
 */

static int
read_file (const char *path, unsigned char **buf, size_t *len,
           time_t *mtime)
{
  struct stat st;
  int fd = open (path, O_RDONLY | O_CLOEXEC);
  size_t got = 0;

  if (fd == -1)
    return -1;
  if (fstat (fd, &st) == -1 || st.st_size > (off_t) 1 << 40) {
    close (fd);
    errno = EFBIG;
    return -1;
  }
  *mtime = st.st_mtime;
  *buf = malloc (st.st_size ? st.st_size : 1);
  if (*buf == NULL) {
    close (fd);
    return -1;
  }
  while (got < (size_t) st.st_size) {
    ssize_t n = read (fd, *buf + got, st.st_size - got);
    if (n <= 0)
      break;
    got += n;
  }
  close (fd);
  *len = got;
  return 0;
}

/* Rebuild the (empty) chain from a decoded file.  The bits are used
 * only if they describe this disk at this granularity.  Returns 0, or
 * -1 with *why (the chain is then emptied again).
 */
static int
load_chain (const struct bmfile *f, const char **why)
{
  bool use_bits = f->disk_size == db_disk_size &&
    f->granularity == db_config.granularity;
  uint32_t i;

  for (i = 0; i < f->n; i++) {
    const struct bmfile_checkpoint *fc = &f->checkpoints[i];
    struct checkpoint *c;

    c = ckpt_append (fc->name, fc->seq, fc->created, fc->consistent);
    if (c)
      c->provisional = fc->provisional;
    if (c == NULL) {
      *why = "out of memory";
      goto bad;
    }
    if (!fc->consistent)
      snprintf (c->reason, sizeof c->reason, "%s",
                fc->reason[0] ? fc->reason :
                "marked inconsistent by an earlier version of the filter, "
                "which did not record why");
    if (use_bits &&
        bitset_deserialize (&c->bits, fc->bits, fc->bits_len) == -1) {
      *why = "a bitmap does not match the disk size in its header";
      goto bad;
    }
  }
  if (f->next_seq > ckpt_next_seq)
    ckpt_next_seq = f->next_seq;
  return 0;

 bad:
  ckpt_free_all ();
  return -1;
}

/* Every checkpoint is inconsistent from now on; one that already was
 * keeps its first reason.
 */
static void mark_all_inconsistent (const char *fmt, ...)
  __attribute__ ((format (printf, 1, 2)));

static void
mark_all_inconsistent (const char *fmt, ...)
{
  struct checkpoint *c;
  char reason[BMFILE_REASON_MAX + 1];
  va_list args;

  va_start (args, fmt);
  vsnprintf (reason, sizeof reason, fmt, args);
  va_end (args);
  for (c = ckpt_oldest; c; c = c->newer) {
    if (c->consistent)
      snprintf (c->reason, sizeof c->reason, "%s", reason);
    c->consistent = false;
  }
}

/* Move a damaged file aside to PATH.damaged, or PATH.damaged.N for
 * the first N free: never over an existing file, so every damaged
 * file is kept.  Returns the new name (malloc'd) or NULL (errno).
 */
static char *
move_aside (const char *path)
{
  unsigned n;

  for (n = 0; n < 1000; n++) {
    char *aside;
    int r;

    if ((n == 0 ? asprintf (&aside, "%s.damaged", path)
         : asprintf (&aside, "%s.damaged.%u", path, n)) == -1)
      return NULL;
    r = renameat2 (AT_FDCWD, path, AT_FDCWD, aside, RENAME_NOREPLACE);
    if (r == -1 && (errno == EINVAL || errno == ENOSYS)) {
      /* The file system cannot rename without replacing: a hard link
       * fails the same way if aside exists.
       */
      r = link (path, aside);
      if (r == 0 && unlink (path) == -1) {
        int e = errno;

        unlink (aside);
        free (aside);
        errno = e;
        return NULL;
      }
    }
    if (r == 0)
      return aside;
    free (aside);
    if (errno != EEXIST)
      return NULL;
  }
  errno = EEXIST;
  return NULL;
}

/* The file's disk id against bitmap-disk-id=: 0 if it may be used,
 * -1 (reported) if it belongs to another disk.
 */
static int
check_disk_id (const char *path, const struct bmfile *f)
{
  const char *mine = db_config.disk_id;

  if (f->disk_id[0] == '\0') {
    if (mine)
      nbdkit_error ("bitmap-file=%s: records no disk id; it now belongs to "
                    "disk '%s' (bitmap-disk-id=), recorded at the next "
                    "save", path, mine);
    return 0;
  }
  if (mine && strcmp (mine, f->disk_id) == 0)
    return 0;
  if (mine)
    nbdkit_error ("bitmap-file=%s belongs to disk '%s', this server is disk "
                  "'%s' (bitmap-disk-id=): refusing to start; the file is "
                  "left as it is, give this disk its own bitmap-file",
                  path, f->disk_id, mine);
  else
    nbdkit_error ("bitmap-file=%s belongs to disk '%s', this server has no "
                  "bitmap-disk-id=: refusing to start; the file is left as "
                  "it is, give bitmap-disk-id=%s if it is that disk or "
                  "another bitmap-file", path, f->disk_id, f->disk_id);
  return -1;
}

int
persist_get_ready (void)
{
  const char *path = db_config.bitmap_file;
  char *errmsg = NULL;
  struct bmfile f;
  const char *why;
  int r = 0;

  if (path == NULL)
    return 0;
  lock_fd = filelock_side ("bitmap-file", path, "bitmap file", &errmsg);
  if (lock_fd == -1) {
    nbdkit_error ("%s", errmsg ? errmsg : "bitmap-file: cannot lock it");
    free (errmsg);
    return -1;
  }
  if (read_file (path, &pending_buf, &pending_len, &pending_mtime) == -1) {
    pending_buf = NULL;
    if (errno != ENOENT) {
      nbdkit_error ("bitmap-file=%s: cannot read it: %m", path);
      return -1;
    }
    return 0;
  }
  /* A damaged file is dealt with at after_fork; a sound one must be
   * this disk's before anything else happens.
   */
  if (bmfile_decode (pending_buf, pending_len, &f, &why) == 0) {
    r = check_disk_id (path, &f);
    bmfile_free (&f);
  }
  if (r == -1) {
    free (pending_buf);
    pending_buf = NULL;
  }
  return r;
}

/* A file left in use by a write-ahead server (f, decoded from buf,
 * for this disk and granularity).  Format 4 after another boot (or an
 * unknown one): the page cache that held the granule bits written
 * since the last sync may be lost, so every granule of every region
 * marked in the intent map is set in the live region, in buf, before
 * the chain is built from it.  Same boot: the live region is exact.
 * Format 3 synced every granule bit: exact.  Returns false if the
 * intent map does not fit the disk (the caller then trusts nothing).
 */
static bool
recover_live (const struct bmfile *f, unsigned char *buf)
{
  uint64_t nreg;

  if (f->version < 4 || f->n == 0)
    return true;
  if (bmfile_same_boot (f->boot_id, boot_id))
    return true;
  nreg = bmfile_intent_regions (db_ngranules, f->intent_shift);
  if (f->intent_len != (nreg + 7) / 8 ||
      f->live_len != (db_ngranules + 7) / 8)
    return false;
  recovered_expanded = true;
  recovered_regions =
    bmfile_expand_intent (buf + f->intent_offset, f->intent_len,
                          f->intent_shift, buf + f->live_offset,
                          db_ngranules);
  return true;
}

/* Decode buf, recover its live region if needed, build the chain. */
static int
decode_and_load (unsigned char *buf, size_t len, struct bmfile *f,
                 const char **why)
{
  if (bmfile_decode (buf, len, f, why) == -1)
    return -1;
  if (f->in_use && f->write_ahead && f->disk_size == db_disk_size &&
      f->granularity == db_config.granularity && !recover_live (f, buf)) {
    *why = "its intent map does not fit the disk";
    bmfile_free (f);
    return -1;
  }
  return load_chain (f, why);
}

int
persist_load (void)
{
  const char *path = db_config.bitmap_file;
  unsigned char *buf = pending_buf;
  size_t len = pending_len;
  const char *why;
  struct bmfile f = { .n = 0, .checkpoints = NULL };
  char *errmsg = NULL;

  if (path == NULL)
    return 0;
  pending_buf = NULL;
  /* Unknown (all zeroes): a recovery then expands the intent map. */
  if (fleece_boot_id (boot_id) == -1)
    nbdkit_debug ("bitmap-file: the kernel's boot id cannot be read; after "
                  "an unclean stop whole regions will count as changed");
  for (intent_shift = 0;
       intent_shift < 63 &&
         ((uint64_t) db_config.granularity << (intent_shift + 1)) <=
         INTENT_REGION_BYTES;
       intent_shift++)
    ;
  /* nbdkit may have forked into the background since get_ready. */
  if (filelock_write_pid (lock_fd) == -1)
    nbdkit_debug ("bitmap-file=%s: cannot write the pid into its lock "
                  "file: %m", path);
  if (buf == NULL)
    nbdkit_debug ("dirty-bitmap: %s does not exist yet", path);
  else if (decode_and_load (buf, len, &f, &why) == -1) {
    char *aside = move_aside (path);

    if (aside)
      nbdkit_error ("bitmap-file=%s: not trusted: %s; moved aside to %s, "
                    "all checkpoints are lost and the next backup must be "
                    "a full one", path, why, aside);
    else
      nbdkit_error ("bitmap-file=%s: not trusted: %s; it could not be "
                    "moved aside (%m) and will be replaced, all "
                    "checkpoints are lost and the next backup must be a "
                    "full one", path, why);
    free (aside);
  }
  else if (f.in_use && f.write_ahead &&
           f.disk_size == db_disk_size &&
           f.granularity == db_config.granularity) {
    /* Written with bitmap-sync=write-ahead: every bit a write that
     * reached the disk depended on is in the file (see the man page),
     * so the checkpoints are what they were, each a superset of the
     * writes since its point.
     */
    recovered = true;
    recovered_mtime = pending_mtime;
    if (recovered_expanded)
      nbdkit_debug ("bitmap-file=%s: nbdkit did not stop cleanly and the "
                    "machine has rebooted since (or the boot id is "
                    "unknown): %" PRIu64 " region(s) of the intent map "
                    "count as changed in the newest checkpoint", path,
                    recovered_regions);
    else
      nbdkit_debug ("bitmap-file=%s: nbdkit did not stop cleanly; the file "
                    "was written with bitmap-sync=write-ahead in this "
                    "boot, so its checkpoints are recovered as they were",
                    path);
  }
  else if (f.in_use) {
    char when[64];
    struct tm tm;

    if (gmtime_r (&pending_mtime, &tm) == NULL ||
        strftime (when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
      snprintf (when, sizeof when, "at an unknown time");
    mark_all_inconsistent ("server did not stop cleanly (file last written "
                           "%s)", when);
    nbdkit_error ("bitmap-file=%s: nbdkit did not stop cleanly (the file "
                  "was last written %s), so writes may have been missed: "
                  "every checkpoint is marked inconsistent and the next "
                  "backup must be a full one", path, when);
  }
  else if (f.disk_size != db_disk_size) {
    mark_all_inconsistent ("disk size changed from %" PRIu64 " to %" PRIu64
                           " bytes", f.disk_size, db_disk_size);
    nbdkit_error ("bitmap-file=%s: made for a disk of %" PRIu64 " bytes, "
                  "but the disk now has %" PRIu64 ": every checkpoint is "
                  "marked inconsistent", path, f.disk_size, db_disk_size);
  }
  else if (f.granularity != db_config.granularity) {
    mark_all_inconsistent ("granularity changed from %" PRIu32 " to %"
                           PRIu32 " bytes", f.granularity,
                           db_config.granularity);
    nbdkit_error ("bitmap-file=%s: made with bitmap-granularity=%" PRIu32
                  ", not %" PRIu32 ": every checkpoint is marked "
                  "inconsistent", path, f.granularity, db_config.granularity);
  }
  bmfile_free (&f);
  free (buf);

  /* From now on the file says "in use" until a clean stop. */
  if (db_config.write_ahead) {
    struct persist_image img;
    int fd = -1;

    wal = durable_bits_new ();
    wal_fine = fine_bits_new ();
    if (wal == NULL || wal_fine == NULL) {
      nbdkit_error ("bitmap-file: out of memory");
      return -1;
    }
    if (persist_snapshot (true, &img, &errmsg) == 0) {
      /* Attach directly, not by a switch: nothing runs yet. */
      if (write_atomic (path, img.buf, img.len, &fd, &errmsg) == 0 &&
          (fine_bits_attach (wal_fine, fd, img.live_offset, img.nbits,
                             img.buf + img.live_offset) == -1 ||
           durable_bits_attach (wal, fd, img.intent_offset,
                                bmfile_intent_regions (img.nbits,
                                                       intent_shift),
                                img.buf + img.intent_offset) == -1)) {
        close (fd);
        fleece_errorf (&errmsg, "bitmap-file: cannot start its commit "
                       "thread: %s", strerror (errno));
        fd = -1;
      }
      free (img.buf);
      if (fd == -1)
        goto err;
      wal_live = true;
      return 0;
    }
    goto err;
  }
  if (persist_save (true, &errmsg) == 0)
    return 0;
 err:
  nbdkit_error ("%s", errmsg ? errmsg : "bitmap-file: cannot write it");
  free (errmsg);
  return -1;
}
