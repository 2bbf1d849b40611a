/* nbdkit-fleece
 * SPDX-License-Identifier: BSD-3-Clause
 *
 * The bitmap file: loading it at start-up, saving it atomically.  The
 * format is encoded and decoded by common/bmfile.c and described in
 * nbdkit-dirty-bitmap-filter(1).
 *
 * Trust: a file whose CRC, structure or magic is wrong is damaged; it
 * is renamed to PATH.damaged and tracking starts afresh.  A file that
 * is sound but was left IN_USE (unclean stop), or was made for a disk
 * of another size or another granularity, keeps its checkpoints marked
 * inconsistent: they are listed but refuse to serve delta views.
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
#include <unistd.h>

#include <nbdkit-filter.h>

#include "bitmap.h"
#include "checkpoints.h"
#include "bmfile.h"
#include "errors.h"
#include "dirty-bitmap.h"
#include "persist.h"
#include "size.h"

/*----------------------------------------------------------------------
 * Writing.
 */

/* Write buf to path atomically: PATH.tmp, fsync, rename, fsync dir. */
static int
write_atomic (const char *path, const void *buf, size_t len, char **errmsg)
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
  fd = open (tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
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
  if (fsync (fd) == -1 || close (fd) == -1) {
    fd = -1;
    fleece_errorf (errmsg, "bitmap-file: syncing %s: %s", tmp, strerror (errno));
    goto out;
  }
  fd = -1;
  if (rename (tmp, path) == -1) {
    fleece_errorf (errmsg, "bitmap-file: renaming %s to %s: %s",
                   tmp, path, strerror (errno));
    goto out;
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
persist_save (bool in_use, char **errmsg)
{
  struct bmfile f = {
    .in_use = in_use,
    .disk_size = db_disk_size,
    .granularity = db_config.granularity,
    .next_seq = ckpt_next_seq,
  };
  const struct bitmap **bitmaps;
  struct checkpoint *c;
  unsigned char *buf = NULL;
  size_t len, i;
  int r = -1;

  if (db_config.bitmap_file == NULL)
    return 0;
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
    bitmaps[i] = &c->bits;
  }
  buf = bmfile_encode (&f, bitmaps, &len);
  if (buf)
    r = write_atomic (db_config.bitmap_file, buf, len, errmsg);
 out:
  if (r == -1 && buf == NULL)
    fleece_errorf (errmsg, "bitmap-file: out of memory");
  free (buf);
  free (bitmaps);
  free (f.checkpoints);
  return r;
}

/*----------------------------------------------------------------------
 * Reading.
 */

static int
read_file (const char *path, unsigned char **buf, size_t *len)
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
    if (c == NULL) {
      *why = "out of memory";
      goto bad;
    }
    if (use_bits &&
        bitmap_deserialize (&c->bits, fc->bits, fc->bits_len) == -1) {
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

static void
mark_all_inconsistent (void)
{
  struct checkpoint *c;

  for (c = ckpt_oldest; c; c = c->newer)
    c->consistent = false;
}

int
persist_load (void)
{
  const char *path = db_config.bitmap_file;
  unsigned char *buf = NULL;
  size_t len = 0;
  const char *why;
  struct bmfile f = { .n = 0, .checkpoints = NULL };
  char *errmsg = NULL;

  if (path == NULL)
    return 0;
  if (read_file (path, &buf, &len) == -1) {
    if (errno != ENOENT) {
      nbdkit_error ("bitmap-file=%s: cannot read it: %m", path);
      return -1;
    }
    nbdkit_debug ("dirty-bitmap: %s does not exist yet", path);
  }
  else if (bmfile_decode (buf, len, &f, &why) == -1 ||
           load_chain (&f, &why) == -1) {
    char *aside = NULL;

    if (asprintf (&aside, "%s.damaged", path) == -1)
      aside = NULL;
    if (aside && rename (path, aside) == 0)
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
  else if (f.in_use) {
    mark_all_inconsistent ();
    nbdkit_error ("bitmap-file=%s: nbdkit did not stop cleanly, so writes "
                  "may have been missed: every checkpoint is marked "
                  "inconsistent and the next backup must be a full one",
                  path);
  }
  else if (f.disk_size != db_disk_size) {
    mark_all_inconsistent ();
    nbdkit_error ("bitmap-file=%s: made for a disk of %" PRIu64 " bytes, "
                  "but the disk now has %" PRIu64 ": every checkpoint is "
                  "marked inconsistent", path, f.disk_size, db_disk_size);
  }
  else if (f.granularity != db_config.granularity) {
    mark_all_inconsistent ();
    nbdkit_error ("bitmap-file=%s: made with bitmap-granularity=%" PRIu32
                  ", not %" PRIu32 ": every checkpoint is marked "
                  "inconsistent", path, f.granularity, db_config.granularity);
  }
  bmfile_free (&f);
  free (buf);

  /* From now on the file says "in use" until a clean stop. */
  if (persist_save (true, &errmsg) == -1) {
    nbdkit_error ("%s", errmsg ? errmsg : "bitmap-file: cannot write it");
    free (errmsg);
    return -1;
  }
  return 0;
}
