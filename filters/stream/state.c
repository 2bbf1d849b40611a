/* nbdkit-fleece
 * SPDX-License-Identifier: BSD-3-Clause
 *
 * The state file (stream-state=PATH).
 *
 * Layout (integers little-endian):
 *
 *   0     header: "FLEESTRM", u32 version (1), u32 cluster size,
 *         u64 disk size, u64 number of clusters, u32 CRC-32 of the
 *         28 bytes before it.  Written once, when the file is created
 *         (in PATH.tmp, synced, renamed over PATH, directory synced),
 *         never changed after.
 *   512   completion record: "STRMDONE", u64 disk size, u32 CRC-32 of
 *         the 16 bytes before it.  Written once, in one sector, when
 *         every cluster is populated, then fdatasync'ed.  A torn
 *         record fails its CRC and reads as "not complete", which is
 *         still true to the bits below (all set), so the next start
 *         writes it again.
 *   1024  boot record (stream-sync=flush): "STRMBOOT", the kernel's
 *         16-byte boot id, u32 CRC-32 of the 24 bytes before it.
 *         Written in place, in one sector, when a run with
 *         stream-sync=flush starts and G is not trusted: after G was
 *         cleared.  Never synced: it only has to survive a crash of
 *         the process, in the page cache.
 *   4096  the populated bits D, one per cluster, serialised as
 *         bitset_serialize; owned by common/durable-bits.c, which
 *         writes them a page at a time and only ever sets bits.
 *   G     (state_fine_offset: after D, page-aligned) the page-cache
 *         map G, same serialisation; owned by common/fine-bits.c.
 *         Files written without stream-sync=flush end before it.
 *
 * G is trusted at start-up only if the boot record is valid and holds
 * this boot's id: then every G bit was written in this boot after its
 * cluster's contents, and the page cache holds both (only a power loss
 * or a reboot loses it, and that changes the boot id).  Clearing G
 * before recording the boot keeps an old boot's bits from being
 * trusted in this one.
 *
 * Lock: the file is only used from start-up, the job thread (which
 * writes the completion record, once) and durable-bits' own thread.
 * PATH.lock is locked (common/filelock.c) from .get_ready for the
 * life of the process: two servers never share a state file.
 */

#include <config.h>

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <nbdkit-filter.h>

#include "bootid.h"
#include "crc32.h"
#include "filelock.h"
#include "le.h"
#include "stream.h"

#define HDR_MAGIC "FLEESTRM"
#define DONE_MAGIC "STRMDONE"
#define DONE_OFFSET 512
#define BOOT_MAGIC "STRMBOOT"
#define BOOT_OFFSET 1024
#define BOOT_LEN (8 + FLEECE_BOOT_ID_LEN + 4)
#define STATE_VERSION 1

static int lock_fd = -1;
static int state_fd = -1;        /* kept for the completion record */

int
state_lock (const char *path)
{
  char *errmsg = NULL;

  lock_fd = filelock_side ("stream-state", path, "stream state file",
                           &errmsg);
  if (lock_fd == -1) {
    nbdkit_error ("%s", errmsg ? errmsg : "stream-state: cannot lock");
    free (errmsg);
    return -1;
  }
  return 0;
}

int
state_after_fork_pid (void)
{
  if (lock_fd >= 0 && filelock_write_pid (lock_fd) == -1) {
    nbdkit_error ("stream-state=%s.lock: cannot record our pid: %m",
                  stream_config.state_path);
    return -1;
  }
  return 0;
}

static uint64_t
bits_bytes (uint64_t nclusters)
{
  return (nclusters + 7) / 8;
}

static void
make_header (unsigned char *h, uint64_t disk_size, uint64_t nclusters)
{
  memset (h, 0, 36);
  memcpy (h, HDR_MAGIC, 8);
  le_store32 (h + 8, STATE_VERSION);
  le_store32 (h + 12, st.cluster_size);
  le_store64 (h + 16, disk_size);
  le_store64 (h + 24, nclusters);
  le_store32 (h + 32, fleece_crc32 (0, h, 32));
}

/* All of len bytes at off, through short transfers and EINTR; a read
 * that meets the end of the file fails with ENODATA.
 */
static int
full_io (int fd, bool writing, void *buf, size_t len, off_t off)
{
  char *p = buf;

  while (len > 0) {
    ssize_t r = writing ? pwrite (fd, p, len, off) : pread (fd, p, len, off);

    if (r == -1) {
      if (errno == EINTR)
        continue;
      return -1;
    }
    if (r == 0 && !writing) {
      errno = ENODATA;
      return -1;
    }
    p += r;
    len -= r;
    off += r;
  }
  return 0;
}

static int
sync_dir (const char *path)
{
  char *copy = strdup (path);
  int fd, r = -1;

  if (copy == NULL)
    return -1;
  fd = open (dirname (copy), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd >= 0) {
    r = fsync (fd);
    close (fd);
  }
  free (copy);
  return r;
}

static uint64_t
page_up (uint64_t n)
{
  return (n + 4095) & ~UINT64_C (4095);
}

/* A new state file, all clusters unpopulated, made atomically. */
static int
create_file (const char *path, uint64_t disk_size, uint64_t nclusters)
{
  unsigned char h[36];
  char *tmp = NULL;
  int fd = -1;

  if (asprintf (&tmp, "%s.tmp", path) == -1) {
    nbdkit_error ("stream-state: asprintf: %m");
    return -1;
  }
  make_header (h, disk_size, nclusters);
  fd = open (tmp, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
  if (fd == -1 ||
      full_io (fd, true, h, sizeof h, 0) == -1 ||
      ftruncate (fd, STATE_BITS_OFFSET + page_up (bits_bytes (nclusters)))
      == -1 ||
      fsync (fd) == -1 ||
      rename (tmp, path) == -1 ||
      sync_dir (path) == -1) {
    nbdkit_error ("stream-state=%s: cannot create the state file "
                  "(through %s): %m", path, tmp);
    if (fd >= 0)
      close (fd);
    unlink (tmp);
    free (tmp);
    return -1;
  }
  free (tmp);
  nbdkit_debug ("stream: created state file %s: %" PRIu64 " clusters of %"
                PRIu32 " bytes", path, nclusters, st.cluster_size);
  return fd;
}

static bool
done_record_valid (const unsigned char *r, uint64_t disk_size)
{
  return memcmp (r, DONE_MAGIC, 8) == 0 &&
    le_load64 (r + 8) == disk_size &&
    le_load32 (r + 16) == fleece_crc32 (0, r, 16);
}

static int
write_done_record (int fd, uint64_t disk_size)
{
  unsigned char r[20];

  memcpy (r, DONE_MAGIC, 8);
  le_store64 (r + 8, disk_size);
  le_store32 (r + 16, fleece_crc32 (0, r, 16));
  if (full_io (fd, true, r, sizeof r, DONE_OFFSET) == -1 ||
      fdatasync (fd) == -1)
    return -1;
  return 0;
}

static unsigned
log2u (uint32_t v)
{
  unsigned b = 0;

  while ((UINT32_C (1) << b) < v)
    b++;
  return b;
}

uint64_t
state_fine_offset (void)
{
  return STATE_BITS_OFFSET + page_up (bits_bytes (st.nclusters));
}

static void
make_boot_record (unsigned char *r, const unsigned char *id)
{
  memcpy (r, BOOT_MAGIC, 8);
  memcpy (r + 8, id, FLEECE_BOOT_ID_LEN);
  le_store32 (r + 8 + FLEECE_BOOT_ID_LEN,
              fleece_crc32 (0, r, 8 + FLEECE_BOOT_ID_LEN));
}

/* Load G into maps->fine, trusted only in the boot that wrote it (see
 * the top of the file).  With stream-sync=flush, make the file ready
 * for G: its region exists and, unless trusted, is cleared before
 * this boot is recorded.
 */
static int
load_fine (int fd, struct state_maps *maps)
{
  const char *path = stream_config.state_path;
  uint64_t nbytes = bits_bytes (st.nclusters), off = state_fine_offset ();
  unsigned char id[FLEECE_BOOT_ID_LEN], want[BOOT_LEN], have[BOOT_LEN];
  bool known = fleece_boot_id (id) == 0;
  struct stat sb;

  maps->fine = calloc (1, nbytes ? nbytes : 1);
  if (maps->fine == NULL || fstat (fd, &sb) == -1) {
    nbdkit_error ("stream-state=%s: %m", path);
    return -1;
  }
  make_boot_record (want, id);
  maps->fine_trusted = known &&
    full_io (fd, false, have, sizeof have, BOOT_OFFSET) == 0 &&
    memcmp (have, want, sizeof want) == 0 &&
    (uint64_t) sb.st_size >= off + nbytes;
  if (maps->fine_trusted) {
    if (full_io (fd, false, maps->fine, nbytes, off) == -1) {
      nbdkit_error ("stream-state=%s: cannot read the page-cache map: %m",
                    path);
      return -1;
    }
    if (st.nclusters % 8)
      maps->fine[nbytes - 1] &= (1u << (st.nclusters % 8)) - 1;
  }
  if (!stream_config.sync_flush || maps->fine_trusted)
    return 0;
  if (ftruncate (fd, off) == -1 ||
      ftruncate (fd, off + page_up (nbytes)) == -1 ||
      (known && full_io (fd, true, want, sizeof want, BOOT_OFFSET) == -1)) {
    nbdkit_error ("stream-state=%s: cannot prepare the page-cache map: %m",
                  path);
    return -1;
  }
  if (!known)
    nbdkit_debug ("stream: the kernel's boot id is unknown: after a "
                  "restart only the synced map is trusted");
  return 0;
}

int
state_open (uint64_t disk_size, bool have_base, bool *complete,
            struct state_maps *maps)
{
  const char *path = stream_config.state_path;
  unsigned char h[36], done[20];
  uint64_t nclusters, i, nbytes;
  unsigned char *bits = NULL;
  bool all;
  int fd;

  *complete = false;
  memset (maps, 0, sizeof *maps);
  maps->fd = -1;

  fd = open (path, O_RDWR | O_CLOEXEC | O_NOFOLLOW);
  if (fd == -1 && errno != ENOENT) {
    nbdkit_error ("stream-state=%s: cannot open: %m", path);
    return -1;
  }
  if (fd == -1) {
    /* A new restore. */
    st.cluster_size = stream_config.cluster_size;
    st.cluster_bits = log2u (st.cluster_size);
    nclusters = (disk_size + st.cluster_size - 1) >> st.cluster_bits;
    if (!have_base) {
      nbdkit_error ("stream-state=%s does not exist, so this is a new "
                    "restore, and it needs stream-base=URI (the base to "
                    "fill the disk from)", path);
      return -1;
    }
    fd = create_file (path, disk_size, nclusters);
    if (fd == -1)
      return -1;
  }
  else {
    if (full_io (fd, false, h, sizeof h, 0) == -1 ||
        memcmp (h, HDR_MAGIC, 8) != 0) {
      nbdkit_error ("stream-state=%s: not a stream state file; give the "
                    "state file of this restore, or a path that does not "
                    "exist yet to start a new one", path);
      goto err;
    }
    if (le_load32 (h + 32) != fleece_crc32 (0, h, 32) ||
        le_load32 (h + 8) != STATE_VERSION) {
      nbdkit_error ("stream-state=%s: damaged header or unknown version "
                    "%" PRIu32 "; the file is left as it is: restore "
                    "again with a new state file and an empty disk",
                    path, le_load32 (h + 8));
      goto err;
    }
    if (le_load64 (h + 16) != disk_size) {
      nbdkit_error ("stream-state=%s belongs to another disk: it records "
                    "a disk of %" PRIu64 " bytes, this disk has %" PRIu64
                    "; give the state file of this disk", path,
                    le_load64 (h + 16), disk_size);
      goto err;
    }
    if (stream_config.cluster_size_set &&
        le_load32 (h + 12) != stream_config.cluster_size) {
      nbdkit_error ("stream-state=%s was made with stream-cluster-size=%"
                    PRIu32 ", not %" PRIu32 "; give the same size or leave "
                    "the parameter out", path, le_load32 (h + 12),
                    stream_config.cluster_size);
      goto err;
    }
    st.cluster_size = le_load32 (h + 12);
    if (st.cluster_size < 4096 || st.cluster_size > 16 * 1024 * 1024 ||
        (st.cluster_size & (st.cluster_size - 1)) != 0) {
      nbdkit_error ("stream-state=%s: damaged header (cluster size %"
                    PRIu32 ")", path, st.cluster_size);
      goto err;
    }
    st.cluster_bits = log2u (st.cluster_size);
    nclusters = (disk_size + st.cluster_size - 1) >> st.cluster_bits;
    if (le_load64 (h + 24) != nclusters) {
      nbdkit_error ("stream-state=%s: damaged header (%" PRIu64 " clusters "
                    "for %" PRIu64 " bytes)", path, le_load64 (h + 24),
                    disk_size);
      goto err;
    }
  }
  st.nclusters = nclusters;
  st.disk_size = disk_size;

  nbytes = bits_bytes (nclusters);
  bits = calloc (1, nbytes ? nbytes : 1);
  if (bits == NULL) {
    nbdkit_error ("stream-state: calloc: %m");
    goto err;
  }
  if (full_io (fd, false, bits, nbytes, STATE_BITS_OFFSET) == -1) {
    nbdkit_error ("stream-state=%s: cannot read the populated-cluster map "
                  "(%m): the file is truncated or damaged", path);
    goto err;
  }
  if (nclusters % 8)
    bits[nbytes - 1] &= (1u << (nclusters % 8)) - 1;
  all = true;
  for (i = 0; i < nclusters / 8 && all; i++)
    all = bits[i] == 0xff;
  if (all && nclusters % 8)
    all = bits[nbytes - 1] == (1u << (nclusters % 8)) - 1;

  if (full_io (fd, false, done, sizeof done, DONE_OFFSET) == 0 &&
      done_record_valid (done, disk_size))
    *complete = true;
  else if (all) {
    /* Every bit is set but the record was lost (torn): write it. */
    if (write_done_record (fd, disk_size) == -1) {
      nbdkit_error ("stream-state=%s: cannot record completion: %m", path);
      goto err;
    }
    *complete = true;
  }

  if (*complete) {
    free (bits);
    close (fd);
    nbdkit_debug ("stream: %s says the disk is complete: passing through",
                  path);
    return 0;
  }
  if (!have_base) {
    nbdkit_error ("stream-state=%s: the disk is not yet fully populated, "
                  "so stream-base=URI is needed to finish it", path);
    goto err;
  }
  state_fd = dup (fd);
  if (state_fd == -1) {
    nbdkit_error ("stream-state: dup: %m");
    goto err;
  }
  fcntl (state_fd, F_SETFD, FD_CLOEXEC);
  if (load_fine (fd, maps) == -1)
    goto err;
  maps->durable = bits;
  maps->fd = fd;
  return 0;

 err:
  free (bits);
  free (maps->fine);
  maps->fine = NULL;
  close (fd);
  return -1;
}

int
state_mark_complete (void)
{
  if (state_fd == -1)
    return 0;
  if (write_done_record (state_fd, st.disk_size) == -1) {
    nbdkit_error ("stream-state=%s: cannot record completion: %m; the bits "
                  "say it anyway, the next start writes it again",
                  stream_config.state_path);
    return -1;
  }
  close (state_fd);
  state_fd = -1;
  return 0;
}

void
state_close (void)
{
  if (state_fd >= 0)
    close (state_fd);
  state_fd = -1;
  if (lock_fd >= 0)
    close (lock_fd);
  lock_fd = -1;
}
