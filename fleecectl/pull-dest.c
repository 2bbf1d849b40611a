/* nbdkit-fleece
 * SPDX-License-Identifier: BSD-3-Clause
 *
 * fleecectl pull: the destination, a file, a block device or an NBD
 * export.  Opening it (created and sized for a full pull, the previous
 * backup for an incremental one), writing data, making ranges read as
 * zeroes, and making it durable.  Workers call pull_dest_write and
 * pull_dest_zero concurrently: they use only what open set up (read-
 * only while workers run) and the counters under pl->lock.
 */

#include <config.h>

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <linux/falloc.h>
#include <linux/fs.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <libnbd.h>

#include "fleecectl.h"
#include "pull.h"
#include "uri.h"

/* Write len bytes of buf at off, what saying which ("writing", "writing
 * zeroes to") in an error.
 */
static int
put (struct pull *pl, const char *buf, uint64_t len, uint64_t off,
     const char *what)
{
  if (pl->dst) {
    if (nbd_pwrite (pl->dst, buf, len, off, 0) == -1) {
      pull_fail (pl, "%s the destination at offset %" PRIu64 " (%" PRIu64
                 " bytes): %s", what, off, len, nbd_get_error ());
      return -1;
    }
    return 0;
  }
  while (len > 0) {
    ssize_t r = pwrite (pl->dest_fd, buf, len, off);
    if (r == -1 && errno == EINTR)
      continue;
    if (r <= 0) {
      pull_fail (pl, "%s the destination at offset %" PRIu64 ": %s", what,
                 off, r == 0 ? "no progress" : strerror (errno));
      return -1;
    }
    buf += r;
    off += r;
    len -= r;
  }
  return 0;
}

int
pull_dest_write (struct pull *pl, const char *buf, uint64_t len,
                 uint64_t off)
{
  if (put (pl, buf, len, off, "writing") == -1)
    return -1;
  pull_count (pl, &pl->written, len);
  return 0;
}

int
pull_dest_zero (struct pull *pl, uint64_t len, uint64_t off)
{
  static const char zeroes[64 * 1024];
  uint64_t n, o;

  if (pl->dst && pl->dst_can_zero) {
    for (o = off; o < off + len; o += n) {
      n = off + len - o > (1u << 30) ? (1u << 30) : off + len - o;
      if (nbd_zero (pl->dst, n, o, 0) == -1) {
        pull_fail (pl, "zeroing the destination at offset %" PRIu64
                   " (%" PRIu64 " bytes): %s", o, n, nbd_get_error ());
        return -1;
      }
    }
    pull_count (pl, &pl->zeroed, len);
    return 0;
  }
  if (!pl->dst && pl->dest_punch) {
    if (fallocate (pl->dest_fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                   off, len) == 0) {
      pull_count (pl, &pl->zeroed, len);
      return 0;
    }
    if (errno != EOPNOTSUPP && errno != ENOSYS && errno != EINVAL &&
        errno != ENODEV) {
      pull_fail (pl, "punching a hole in the destination at offset %"
                 PRIu64 ": %m", off);
      return -1;
    }
    /* Not supported here: write the zeroes (pl->dest_punch stays set;
     * it is read-only while workers run, and trying costs one call).
     */
  }
  for (o = off; o < off + len; o += n) {
    n = off + len - o > sizeof zeroes ? sizeof zeroes : off + len - o;
    if (put (pl, zeroes, n, o, "writing zeroes to") == -1)
      return -1;
  }
  pull_count (pl, &pl->zeroed, len);
  return 0;
}

/* An NBD DEST: writable and at least as large as the source. */
static int
open_nbd (struct pull *pl, const char *dest, bool dest_zeroed)
{
  int64_t s;

  pl->dst = nbd_create ();
  if (pl->dst == NULL || nbd_connect_uri (pl->dst, dest) == -1) {
    fc_error ("pull: cannot open the destination %s: %s", dest,
              nbd_get_error ());
    return -1;
  }
  if (nbd_is_read_only (pl->dst) == 1) {
    fc_error ("pull: the destination %s is read-only", dest);
    return -1;
  }
  s = nbd_get_size (pl->dst);
  if (s == -1) {
    fc_error ("pull: size of %s: %s", dest, nbd_get_error ());
    return -1;
  }
  if ((uint64_t) s < pl->size) {
    fc_error ("pull: the destination %s has %" PRId64 " bytes, less than "
              "the %" PRIu64 " bytes of the source; make it at least as "
              "large", dest, s, pl->size);
    return -1;
  }
  pl->dst_can_zero = nbd_can_zero (pl->dst) == 1;
  pl->dest_zero = dest_zeroed;
  return 0;
}

int
pull_open_dest (struct pull *pl, const char *dest, bool dest_zeroed)
{
  struct stat st;
  bool fresh;                   /* a new file (full pull to a file) */
  uint64_t dsize;
  int fd;

  if (fc_is_nbd_uri (dest))
    return open_nbd (pl, dest, dest_zeroed);

  if (stat (dest, &st) == -1) {
    if (errno != ENOENT) {
      fc_error ("pull: %s: %m", dest);
      return -1;
    }
    if (pl->delta) {
      fc_error ("pull: %s does not exist; an incremental pull updates the "
                "previous backup in place, so DEST must be that backup "
                "(pull a full backup first)", dest);
      return -1;
    }
    st.st_mode = S_IFREG;
  }
  if (!S_ISBLK (st.st_mode) && !S_ISREG (st.st_mode)) {
    fc_error ("pull: %s is neither a regular file, a block device nor an "
              "NBD URI", dest);
    return -1;
  }

  fresh = S_ISREG (st.st_mode) && !pl->delta;
  if (fresh)
    fd = open (dest, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  else
    fd = open (dest, O_RDWR | O_CLOEXEC);
  if (fd == -1) {
    fc_error ("pull: %s%s: %m", fresh ? "cannot create " : "", dest);
    return -1;
  }

  if (S_ISBLK (st.st_mode)) {
    if (ioctl (fd, BLKGETSIZE64, &dsize) == -1) {
      fc_error ("pull: %s: %m", dest);
      goto fail;
    }
    if (dsize < pl->size) {
      fc_error ("pull: the block device %s has %" PRIu64 " bytes, less "
                "than the %" PRIu64 " bytes of the source", dest, dsize,
                pl->size);
      goto fail;
    }
    pl->dest_zero = dest_zeroed;
  }
  else if (pl->delta) {
    /* A disk that grew: extend the backup (new space reads zero). */
    if ((uint64_t) st.st_size < pl->size && ftruncate (fd, pl->size) == -1) {
      fc_error ("pull: extending %s to %" PRIu64 " bytes: %m", dest,
                pl->size);
      goto fail;
    }
    pl->dest_zero = false;
  }
  else {
    /* A fresh sparse file of the source's size: reads as zeroes. */
    if (ftruncate (fd, pl->size) == -1) {
      fc_error ("pull: sizing %s to %" PRIu64 " bytes: %m", dest, pl->size);
      goto fail;
    }
    pl->dest_zero = true;
  }
  pl->dest_fd = fd;
  pl->dest_punch = true;
  return 0;

 fail:
  close (fd);
  return -1;
}

int
pull_dest_sync (struct pull *pl, const char *dest)
{
  if (pl->dst) {
    if (nbd_can_flush (pl->dst) == 1 && nbd_flush (pl->dst, 0) == -1) {
      pull_fail (pl, "flushing the destination: %s", nbd_get_error ());
      return -1;
    }
  }
  else if (fsync (pl->dest_fd) == -1) {
    pull_fail (pl, "fsync %s: %m", dest);
    return -1;
  }
  return 0;
}

int
pull_dest_close (struct pull *pl)
{
  int fd = pl->dest_fd;

  if (pl->dst) {
    nbd_shutdown (pl->dst, 0);
    nbd_close (pl->dst);
    pl->dst = NULL;
  }
  pl->dest_fd = -1;
  return fd >= 0 ? close (fd) : 0;
}
