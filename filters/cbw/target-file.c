/* nbdkit-fleece
 * SPDX-License-Identifier: BSD-3-Clause
 *
 * File targets (see target-ops.h): cbw-target=PATH, a regular file or
 * a block device, or with no cbw-target an unlinked temporary file in
 * $TMPDIR.  Copies are pwrite, reads pread (a hole reads as zeroes),
 * released space is punched out.
 *
 * Preallocation: ext4 (and xfs) spend far more CPU allocating blocks
 * one delayed-allocation write at a time than in one fallocate of a
 * large range (docs/performance.md: 1 GiB of 1 MiB writes into a
 * fresh sparse file took 0.17-1.5 s of system time, 0.1 s after
 * fallocate in 8 MiB steps).  So a large copy (>= PREALLOC_MIN, the
 * sign of a sequential stream) first allocates the PREALLOC_STEP
 * aligned chunks it touches, once each.  Small copies allocate their
 * chunk once it has received PREALLOC_DENSE bytes of copies (first-
 * touch writes all over the disk), so a since= snapshot's few
 * scattered copies do not grow the file by a chunk each: the file's
 * allocation is at most PREALLOC_STEP / PREALLOC_DENSE = 4 times the
 * bytes copied into a chunk, and at most one chunk more per large
 * copy.
 *
 * State: every field but the preallocation map is set by
 * target_file_open (start-up) and never changes until close, and
 * pread/pwrite/fallocate on one descriptor are safe from many threads.
 * The preallocation map (prealloc, hits, prealloc_off) is protected by
 * prealloc_lock; fallocate runs outside it (allocating a range that
 * a concurrent pwrite fills changes no data).
 *
 * Write turns: buffered writes to one regular file do not run in
 * parallel in the kernel anyway (ext4, xfs, btrfs and tmpfs take the
 * inode's lock exclusively for each), and threads waiting for that
 * lock spin on it while the holder copies.  With many guest writes
 * each copying a cluster, the spinning took half the server's CPU on
 * two vCPUs (docs/performance.md), CPU the holder and the guest path
 * needed.  So a regular-file target's buffered writes take turns on
 * write_turn, where waiters sleep.  Block devices (whose buffered
 * writes do run in parallel) and O_DIRECT writes do not take it.
 * write_turn protects nothing but the turn: no invariant.  -D
 * cbw.turns=0 turns it off.
 */

#include <config.h>

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <pthread.h>

#include <nbdkit-filter.h>

#include "bitset.h"
#include "errors.h"
#include "filelock.h"
#include "target-ops.h"

struct file_target {
  struct target t;              /* first: a struct target * is one of us */
  const char *path;             /* cbw-target=PATH (not ours), or NULL */
  int fd;
  bool is_blockdev;
  /* A regular-file target's PATH.lock (see filelock.h), held open for
   * the life of the process; -1 otherwise.
   */
  int lock_fd;

  /* A second descriptor of the same file opened O_DIRECT for large
   * copies, or -1 (not wanted, or the file system refuses O_DIRECT).
   * Opened by the first begin (serialised), read-only afterwards.
   */
  int direct_fd;

  pthread_mutex_t prealloc_lock;
  struct bitset prealloc;       /* chunk i was preallocated */
  uint8_t *hits;                /* small copies into chunk i, in units
                                 * of PREALLOC_UNIT, saturating; as
                                 * many as prealloc has bits */
  bool prealloc_off;            /* fallocate unsupported: stop trying */

  pthread_mutex_t write_turn;   /* one buffered pwrite at a time */
};

/* Large copies (>= PREALLOC_MIN) to a regular-file target
 * are written with O_DIRECT through a second descriptor: the profile
 * (docs/performance.md) showed most of a sequential copy's CPU time in
 * copying into freshly allocated page-cache pages of the target, data
 * nobody reads soon (a backup reads it once, later).  Small copies go
 * through the page cache, where O_DIRECT costs more than it saves.
 * -D cbw.direct=0 turns it off.
 */
NBDKIT_DLL_PUBLIC int cbw_debug_direct = 1;
/* Write turns (above); -D cbw.turns=0 lets the kernel's lock decide. */
NBDKIT_DLL_PUBLIC int cbw_debug_turns = 1;

#define PREALLOC_STEP (8 * 1024 * 1024)
#define PREALLOC_MIN (1024 * 1024)
#define PREALLOC_DENSE (PREALLOC_STEP / 4)
#define PREALLOC_UNIT 65536     /* PREALLOC_DENSE / PREALLOC_UNIT < 256 */

static const struct target_ops file_ops;
static int prealloc_grow (struct file_target *ft, uint64_t n);

static int
open_temp (struct file_target *ft)
{
  const char *dir = getenv ("TMPDIR");
  char *path;

  if (dir == NULL || *dir == '\0')
    dir = "/var/tmp";
  if (asprintf (&path, "%s/nbdkit-cbw-XXXXXX", dir) == -1) {
    nbdkit_error ("asprintf: %m");
    return -1;
  }
  ft->fd = mkostemp (path, O_CLOEXEC);
  if (ft->fd == -1) {
    nbdkit_error ("cbw: cannot create a temporary fleecing target in %s "
                  "(set TMPDIR or cbw-target=): %m", dir);
    free (path);
    return -1;
  }
  unlink (path);
  nbdkit_debug ("cbw: temporary target in %s", dir);
  free (path);
  return 0;
}

static int
open_path (struct file_target *ft)
{
  struct stat st;
  char *errmsg = NULL;

  ft->fd = open (ft->path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (ft->fd == -1) {
    nbdkit_error ("cbw-target=%s: %m", ft->path);
    return -1;
  }
  if (fstat (ft->fd, &st) == -1) {
    nbdkit_error ("cbw-target=%s: fstat: %m", ft->path);
    return -1;
  }
  ft->is_blockdev = S_ISBLK (st.st_mode);

  /* One server per target, for the life of the process: PATH.lock
   * records who holds a regular file (the kernel does not say), and
   * the target itself is locked too (also for block devices).
   */
  if (!ft->is_blockdev) {
    ft->lock_fd = filelock_side ("cbw-target", ft->path,
                                 "fleecing target", &errmsg);
    if (ft->lock_fd == -1)
      goto refused;
  }
  if (filelock_fd ("cbw-target", ft->path, ft->fd, "fleecing target",
                   &errmsg) == -1)
    goto refused;
  return 0;

 refused:
  nbdkit_error ("%s", errmsg ? errmsg : "cbw-target: cannot lock it");
  free (errmsg);
  return -1;
}

static void
file_close (struct target *t)
{
  struct file_target *ft = (struct file_target *) t;

  if (ft->fd >= 0)
    close (ft->fd);
  if (ft->lock_fd >= 0)
    close (ft->lock_fd);
  if (ft->direct_fd >= 0)
    close (ft->direct_fd);
  bitset_free (&ft->prealloc);
  free (ft->hits);
  pthread_mutex_destroy (&ft->prealloc_lock);
  pthread_mutex_destroy (&ft->write_turn);
  free (ft);
}

struct target *
target_file_open (const char *path)
{
  struct file_target *ft = calloc (1, sizeof *ft);

  if (ft == NULL) {
    nbdkit_error ("calloc: %m");
    return NULL;
  }
  ft->t.ops = &file_ops;
  ft->path = path;
  ft->fd = ft->lock_fd = ft->direct_fd = -1;
  pthread_mutex_init (&ft->prealloc_lock, NULL);
  pthread_mutex_init (&ft->write_turn, NULL);
  if ((path ? open_path (ft) : open_temp (ft)) == -1) {
    file_close (&ft->t);
    return NULL;
  }
  return &ft->t;
}

static void
file_after_fork (struct target *t)
{
  struct file_target *ft = (struct file_target *) t;

  /* nbdkit may have forked into the background: record the pid of the
   * process that serves.
   */
  if (ft->lock_fd >= 0 && filelock_write_pid (ft->lock_fd) == -1)
    nbdkit_debug ("cbw-target=%s: cannot write the pid into its lock "
                  "file: %m", ft->path);
}

/* A local file's I/O cannot be interrupted, so deadlines are only
 * checked afterwards: a copy that took longer than its deadline fails
 * as it would on a slow NBD target.  A late read is still good data,
 * so reads ignore theirs.
 */

static int
file_begin (struct target *t, uint64_t size,
            const struct timespec *deadline, char **errmsg)
{
  struct file_target *ft = (struct file_target *) t;
  off_t end;

  if (!ft->is_blockdev) {
    /* Empty, then sparse at the disk's size.  The size is only a
     * convenience (a read past the end reads zeroes): a file system
     * whose files cannot be that large (ext4 with 4K blocks stops just
     * short of 16 TiB) still takes copies below its limit, and a copy
     * past it fails with EFBIG, which cbw-on-error handles.
     */
    if (ftruncate (ft->fd, 0) == -1 ||
        (ftruncate (ft->fd, size) == -1 && errno != EFBIG))
      return fleece_errorf (errmsg, "cbw-target: cannot size the target "
                            "file to %" PRIu64 " bytes: %s", size,
                            strerror (errno));
    if (cbw_debug_direct && ft->direct_fd == -1) {
      char p[64];

      snprintf (p, sizeof p, "/proc/self/fd/%d", ft->fd);
      ft->direct_fd = open (p, O_RDWR | O_DIRECT | O_CLOEXEC);
      if (ft->direct_fd == -1)
        nbdkit_debug ("cbw: cannot open the target O_DIRECT (%m): every "
                      "copy goes through the page cache");
      else
        nbdkit_debug ("cbw: copies of 1 MiB or more bypass the page cache "
                      "(O_DIRECT)");
    }
    pthread_mutex_lock (&ft->prealloc_lock);
    bitset_free (&ft->prealloc);
    free (ft->hits);
    ft->hits = NULL;
    /* Without memory for the map, copies are simply not preallocated. */
    if (prealloc_grow (ft, (size + PREALLOC_STEP - 1) / PREALLOC_STEP) == -1)
      nbdkit_debug ("cbw: no memory for the preallocation map");
    pthread_mutex_unlock (&ft->prealloc_lock);
    return 0;
  }
  end = lseek (ft->fd, 0, SEEK_END);
  if (end == -1 || (uint64_t) end < size)
    return fleece_errorf (errmsg, "cbw-target=%s: the block device is "
                          "smaller than the disk (%" PRIu64 " bytes)",
                          ft->path, size);
  return 0;
}

static int
file_release (struct target *t, uint64_t offset, uint64_t count,
              const struct timespec *deadline, int *err)
{
  struct file_target *ft = (struct file_target *) t;

  uint64_t c0, c1;

  if (fallocate (ft->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                 offset, count) == -1) {
    *err = errno;
    return -1;
  }
  /* Chunks punched whole are holes again: a later large copy there
   * preallocates them anew.
   */
  c0 = (offset + PREALLOC_STEP - 1) / PREALLOC_STEP;
  c1 = (offset + count) / PREALLOC_STEP;
  if (c1 > c0) {
    pthread_mutex_lock (&ft->prealloc_lock);
    bitset_clear_range (&ft->prealloc, c0, c1 - c0);
    if (c0 < ft->prealloc.nbits)
      memset (ft->hits + c0, 0,
              (c1 < ft->prealloc.nbits ? c1 : ft->prealloc.nbits) - c0);
    pthread_mutex_unlock (&ft->prealloc_lock);
  }
  return 0;
}

static void
file_end (struct target *t, const struct timespec *deadline)
{
  struct file_target *ft = (struct file_target *) t;
  off_t end;
  int err;

  if (!ft->is_blockdev) {
    if (ftruncate (ft->fd, 0) == -1)
      nbdkit_debug ("cbw: truncating the target: %m");
    pthread_mutex_lock (&ft->prealloc_lock);
    bitset_free (&ft->prealloc);
    free (ft->hits);
    ft->hits = NULL;
    pthread_mutex_unlock (&ft->prealloc_lock);
    return;
  }
  end = lseek (ft->fd, 0, SEEK_END);
  if (end > 0 && file_release (t, 0, end, deadline, &err) == -1)
    nbdkit_debug ("cbw: releasing target space: %s", strerror (err));
}

/* pread or pwrite all of count bytes.  A read past the end of the
 * file reads a hole: zeroes.
 */
static int
file_io (struct file_target *ft, bool write, void *buf, uint32_t count,
         uint64_t offset, int *err)
{
  while (count > 0) {
    ssize_t n = write ? pwrite (ft->fd, buf, count, offset)
                      : pread (ft->fd, buf, count, offset);

    if (n == -1) {
      *err = errno;
      return -1;
    }
    if (n == 0 && !write) {
      memset (buf, 0, count);
      break;
    }
    buf = (char *) buf + n;
    count -= n;
    offset += n;
  }
  return 0;
}

/* Make the map cover n chunks.  Caller holds prealloc_lock. */
static int
prealloc_grow (struct file_target *ft, uint64_t n)
{
  uint64_t old = ft->prealloc.nbits;
  uint8_t *h;

  if (ft->hits == NULL)
    old = 0;
  h = realloc (ft->hits, n ? n : 1);
  if (h == NULL)
    return -1;
  ft->hits = h;
  if (n > old)
    memset (h + old, 0, n - old);
  return bitset_resize (&ft->prealloc, n);
}

/* A small copy to offset: is its chunk dense enough now? */
static bool
dense (struct file_target *ft, uint64_t offset, uint32_t count)
{
  const uint64_t c = offset / PREALLOC_STEP;
  unsigned units = (count + PREALLOC_UNIT - 1) / PREALLOC_UNIT, h;
  bool r = false;

  pthread_mutex_lock (&ft->prealloc_lock);
  if (!ft->prealloc_off && c < ft->prealloc.nbits &&
      !bitset_test (&ft->prealloc, c)) {
    h = ft->hits[c] + units;
    ft->hits[c] = h > 255 ? 255 : h;
    r = h * PREALLOC_UNIT >= PREALLOC_DENSE;
  }
  pthread_mutex_unlock (&ft->prealloc_lock);
  return r;
}

/* Allocate the chunks [c0, c1) that are not yet allocated, once. */
static void
preallocate (struct file_target *ft, uint64_t offset, uint32_t count)
{
  uint64_t c = offset / PREALLOC_STEP;
  const uint64_t c1 = (offset + count - 1) / PREALLOC_STEP + 1;
  uint64_t first;

  while (c < c1) {
    pthread_mutex_lock (&ft->prealloc_lock);
    if (ft->prealloc_off) {
      pthread_mutex_unlock (&ft->prealloc_lock);
      return;
    }
    /* Overflow slots lie past the disk's end: grow the map. */
    if (c1 > ft->prealloc.nbits && prealloc_grow (ft, c1 + c1 / 4) == -1) {
      pthread_mutex_unlock (&ft->prealloc_lock);
      return;
    }
    c = bitset_next_clear (&ft->prealloc, c);
    if (c >= c1) {
      pthread_mutex_unlock (&ft->prealloc_lock);
      return;
    }
    first = c;
    while (c < c1 && !bitset_test (&ft->prealloc, c))
      c++;
    bitset_set_range (&ft->prealloc, first, c - first);
    pthread_mutex_unlock (&ft->prealloc_lock);

    if (fallocate (ft->fd, FALLOC_FL_KEEP_SIZE, first * PREALLOC_STEP,
                   (c - first) * PREALLOC_STEP) == -1) {
      /* Only an optimisation: a full disk shows in the pwrite. */
      pthread_mutex_lock (&ft->prealloc_lock);
      bitset_clear_range (&ft->prealloc, first, c - first);
      if (errno == EOPNOTSUPP || errno == ENOSYS)
        ft->prealloc_off = true;
      pthread_mutex_unlock (&ft->prealloc_lock);
      return;
    }
  }
}

/* A buffered write, in turn on a regular file (see the top). */
static int
write_turns (struct file_target *ft, void *buf, uint32_t count,
             uint64_t offset, int *err)
{
  const bool turn = cbw_debug_turns && !ft->is_blockdev;
  int r;

  if (turn)
    pthread_mutex_lock (&ft->write_turn);
  r = file_io (ft, true, buf, count, offset, err);
  if (turn)
    pthread_mutex_unlock (&ft->write_turn);
  return r;
}

static int
file_write (struct target *t, const void *buf, uint32_t count,
            uint64_t offset, const struct timespec *deadline, int *err)
{
  struct file_target *ft = (struct file_target *) t;

  if (!ft->is_blockdev &&
      (count >= PREALLOC_MIN || dense (ft, offset, count)))
    preallocate (ft, offset, count);
  /* file_io does not write through buf when write is true. */
  /* Direct when it can be (aligned); if the direct write fails for
   * any reason, the ordinary one below says what is wrong.
   */
  if (ft->direct_fd >= 0 && count >= PREALLOC_MIN &&
      offset % 4096 == 0 && count % 4096 == 0 &&
      (uintptr_t) buf % 4096 == 0) {
    ssize_t n = pwrite (ft->direct_fd, buf, count, offset);

    if (n == (ssize_t) count)
      goto done;
  }
  if (write_turns (ft, (void *) buf, count, offset, err) == -1)
    return -1;
 done:
  if (target_ms_left (deadline) == 0) {
    *err = ETIMEDOUT;
    return -1;
  }
  return 0;
}

static int
file_read (struct target *t, void *buf, uint32_t count, uint64_t offset,
           const struct timespec *deadline, int *err)
{
  return file_io ((struct file_target *) t, false, buf, count, offset, err);
}

/* A regular file grows as copies land past its end; a block device
 * holds what it holds.
 */
static uint64_t
file_capacity (struct target *t)
{
  struct file_target *ft = (struct file_target *) t;
  off_t end;

  if (!ft->is_blockdev)
    return UINT64_MAX;
  end = lseek (ft->fd, 0, SEEK_END);
  return end == -1 ? 0 : (uint64_t) end;
}

static const struct target_ops file_ops = {
  .name = "file",
  .capacity = file_capacity,
  .after_fork = file_after_fork,
  .close = file_close,
  .begin = file_begin,
  .end = file_end,
  .write = file_write,
  .read = file_read,
  .release = file_release,
};
