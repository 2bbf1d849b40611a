/* nbdkit-fleece
 * SPDX-License-Identifier: BSD-3-Clause
 *
 * The bitmap file.  All integers are little-endian.
 *
 *   offset  size  field
 *   0       8     magic "FLEECEBM"
 *   8       4     version (1)
 *   12      4     flags: bit 0 IN_USE (nbdkit was running: the bits
 *                 may be incomplete)
 *   16      8     disk size in bytes
 *   24      4     granularity in bytes
 *   28      4     number of checkpoints N
 *   32      8     next checkpoint sequence number
 *   40            N checkpoints, oldest first:
 *                   1    name length L (1..64)
 *                   L    name
 *                   8    sequence number
 *                   8    creation time (seconds since the epoch, UTC)
 *                   1    consistent (0 or 1)
 *                   8    bitmap length B = ceil (granules / 8)
 *                   B    bitmap (bit i = granule i, least significant
 *                        bit first)
 *   end-4   4     CRC-32 of every byte before it
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
#include "crc32.h"
#include "dirty-bitmap.h"
#include "persist.h"
#include "size.h"

#define MAGIC "FLEECEBM"
#define FILE_VERSION 1
#define FLAG_IN_USE 1
#define HEADER_SIZE 40

/*----------------------------------------------------------------------
 * Writing.
 */

struct out {
  unsigned char *p;
  size_t len, cap;
  bool failed;
};

/* Room for n more bytes at the end; NULL (and failed) if out of memory. */
static unsigned char *
reserve (struct out *o, size_t n)
{
  unsigned char *r;

  if (o->failed)
    return NULL;
  if (o->len + n > o->cap) {
    size_t cap = (o->len + n) * 2;
    unsigned char *p = realloc (o->p, cap);

    if (p == NULL) {
      o->failed = true;
      return NULL;
    }
    o->p = p;
    o->cap = cap;
  }
  r = o->p + o->len;
  o->len += n;
  return r;
}

static void
put (struct out *o, const void *p, size_t n)
{
  unsigned char *d = reserve (o, n);

  if (d)
    memcpy (d, p, n);
}

static void put8 (struct out *o, uint8_t v) { put (o, &v, 1); }
static void put32 (struct out *o, uint32_t v) { v = htole32 (v); put (o, &v, 4); }
static void put64 (struct out *o, uint64_t v) { v = htole64 (v); put (o, &v, 8); }

static int
errorf (char **errmsg, const char *fmt, ...)
  __attribute__ ((format (printf, 2, 3)));

static int
errorf (char **errmsg, const char *fmt, ...)
{
  va_list args;

  va_start (args, fmt);
  if (vasprintf (errmsg, fmt, args) == -1)
    *errmsg = NULL;
  va_end (args);
  return -1;
}

/* Write buf to path atomically: PATH.tmp, fsync, rename, fsync dir. */
static int
write_atomic (const char *path, const void *buf, size_t len, char **errmsg)
{
  char *tmp = NULL, *dcopy = NULL;
  const char *p = buf;
  int fd = -1, dfd, r = -1;

  if (asprintf (&tmp, "%s.tmp", path) == -1) {
    tmp = NULL;
    errorf (errmsg, "out of memory");
    goto out;
  }
  fd = open (tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd == -1) {
    errorf (errmsg, "bitmap-file: cannot create %s: %s", tmp, strerror (errno));
    goto out;
  }
  while (len > 0) {
    ssize_t n = write (fd, p, len);

    if (n == -1) {
      errorf (errmsg, "bitmap-file: writing %s: %s", tmp, strerror (errno));
      goto out;
    }
    p += n;
    len -= n;
  }
  if (fsync (fd) == -1 || close (fd) == -1) {
    fd = -1;
    errorf (errmsg, "bitmap-file: syncing %s: %s", tmp, strerror (errno));
    goto out;
  }
  fd = -1;
  if (rename (tmp, path) == -1) {
    errorf (errmsg, "bitmap-file: renaming %s to %s: %s",
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
  struct out o = { NULL, 0, 0, false };
  struct checkpoint *c;
  unsigned char *bits;
  uint32_t n = 0;
  int r;

  if (db_config.bitmap_file == NULL)
    return 0;
  for (c = ckpt_oldest; c; c = c->newer)
    n++;
  put (&o, MAGIC, 8);
  put32 (&o, FILE_VERSION);
  put32 (&o, in_use ? FLAG_IN_USE : 0);
  put64 (&o, db_disk_size);
  put32 (&o, db_config.granularity);
  put32 (&o, n);
  put64 (&o, ckpt_next_seq);
  for (c = ckpt_oldest; c; c = c->newer) {
    size_t len = strlen (c->name), blen = bitmap_serialized_size (&c->bits);

    put8 (&o, len);
    put (&o, c->name, len);
    put64 (&o, c->seq);
    put64 (&o, c->created);
    put8 (&o, c->consistent);
    put64 (&o, blen);
    bits = reserve (&o, blen);
    if (bits)
      bitmap_serialize (&c->bits, bits);
  }
  if (!o.failed)
    put32 (&o, fleece_crc32 (0, o.p, o.len));
  if (o.failed) {
    free (o.p);
    return errorf (errmsg, "bitmap-file: out of memory");
  }
  r = write_atomic (db_config.bitmap_file, o.p, o.len, errmsg);
  free (o.p);
  return r;
}

/*----------------------------------------------------------------------
 * Reading.
 */

struct in {
  const unsigned char *p;
  size_t left;
};

static bool
get (struct in *in, void *v, size_t n)
{
  if (in->left < n)
    return false;
  memcpy (v, in->p, n);
  in->p += n;
  in->left -= n;
  return true;
}

static bool get8 (struct in *in, uint8_t *v) { return get (in, v, 1); }
static bool
get32 (struct in *in, uint32_t *v)
{
  if (!get (in, v, 4)) return false;
  *v = le32toh (*v);
  return true;
}
static bool
get64 (struct in *in, uint64_t *v)
{
  if (!get (in, v, 8)) return false;
  *v = le64toh (*v);
  return true;
}

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

/* Parse the file into the (empty) chain.  Returns 0, or -1 with *why
 * if the file is damaged (the chain is then emptied again).
 * *in_use, *size and *gran return the header's values.
 */
static int
parse (const unsigned char *buf, size_t len, bool *in_use,
       uint64_t *size, uint32_t *gran, const char **why)
{
  struct in in = { buf, len };
  char magic[8];
  uint32_t version, flags, n, i, crc;
  uint64_t next_seq;

  if (len < HEADER_SIZE + 4) {
    *why = "the file is truncated";
    return -1;
  }
  memcpy (&crc, buf + len - 4, 4);
  if (le32toh (crc) != fleece_crc32 (0, buf, len - 4)) {
    *why = "the checksum does not match (damaged or truncated)";
    return -1;
  }
  in.left -= 4;
  get (&in, magic, 8);
  if (memcmp (magic, MAGIC, 8) != 0) {
    *why = "it is not a bitmap file of this filter (bad magic)";
    return -1;
  }
  get32 (&in, &version);
  if (version != FILE_VERSION) {
    *why = "unknown format version";
    return -1;
  }
  get32 (&in, &flags);
  get64 (&in, size);
  get32 (&in, gran);
  get32 (&in, &n);
  get64 (&in, &next_seq);
  *in_use = flags & FLAG_IN_USE;

  for (i = 0; i < n; i++) {
    char name[FLEECE_NAME_BUF];
    uint8_t nlen, consistent;
    uint64_t seq, created, blen;
    struct checkpoint *c;

    if (!get8 (&in, &nlen) || nlen == 0 || nlen > FLEECE_NAME_MAX ||
        !get (&in, name, nlen))
      goto bad;
    name[nlen] = '\0';
    if (!fleece_valid_name (name) ||
        !get64 (&in, &seq) || !get64 (&in, &created) ||
        !get8 (&in, &consistent) || !get64 (&in, &blen) ||
        blen > in.left)
      goto bad;
    c = ckpt_append (name, seq, created, consistent == 1);
    if (c == NULL)
      goto bad;
    /* Bits only count if they describe this disk at this granularity. */
    if (*size == db_disk_size && *gran == db_config.granularity) {
      if (bitmap_deserialize (&c->bits, in.p, blen) == -1)
        goto bad;
    }
    in.p += blen;
    in.left -= blen;
  }
  if (in.left != 0)
    goto bad;
  if (next_seq > ckpt_next_seq)
    ckpt_next_seq = next_seq;
  return 0;

 bad:
  *why = "its structure is invalid";
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
  bool in_use = false;
  uint64_t size = 0;
  uint32_t gran = 0;
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
  else if (parse (buf, len, &in_use, &size, &gran, &why) == -1) {
    char *aside = NULL;

    if (asprintf (&aside, "%s.damaged", path) != -1)
      rename (path, aside);
    nbdkit_error ("bitmap-file=%s: not trusted: %s; moved aside to %s, "
                  "all checkpoints are lost and the next backup must be "
                  "a full one", path, why, aside ? aside : "?");
    free (aside);
  }
  else if (in_use) {
    mark_all_inconsistent ();
    nbdkit_error ("bitmap-file=%s: nbdkit did not stop cleanly, so writes "
                  "may have been missed: every checkpoint is marked "
                  "inconsistent and the next backup must be a full one",
                  path);
  }
  else if (size != db_disk_size) {
    mark_all_inconsistent ();
    nbdkit_error ("bitmap-file=%s: made for a disk of %" PRIu64 " bytes, "
                  "but the disk now has %" PRIu64 ": every checkpoint is "
                  "marked inconsistent", path, size, db_disk_size);
  }
  else if (gran != db_config.granularity) {
    mark_all_inconsistent ();
    nbdkit_error ("bitmap-file=%s: made with bitmap-granularity=%" PRIu32
                  ", not %" PRIu32 ": every checkpoint is marked "
                  "inconsistent", path, gran, db_config.granularity);
  }
  free (buf);

  /* From now on the file says "in use" until a clean stop. */
  if (persist_save (true, &errmsg) == -1) {
    nbdkit_error ("%s", errmsg ? errmsg : "bitmap-file: cannot write it");
    free (errmsg);
    return -1;
  }
  return 0;
}
