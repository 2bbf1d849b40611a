/* nbdkit-fleece
 * SPDX-License-Identifier: BSD-3-Clause
 *
 * fleecectl pull URI DEST: the provider's side of a backup.  Reads the
 * snapshot export (full) or its delta view snapshot/since/C
 * (incremental) with libnbd and writes DEST, a file or an NBD URI,
 * so that DEST ends up equal to the disk at the snapshot point:
 *
 *   full         DEST is a new sparse file (created, or truncated and
 *                sized), or a block device or NBD export; data extents
 *                are copied, zero extents and all-zero granules are
 *                skipped when DEST is known to read as zeroes (a fresh
 *                file, or --dest-zeroed) and zeroed otherwise.
 *   incremental  DEST holds the previous backup; every extent the
 *                delta view reports as data is written exactly, zeroes
 *                included (as a hole punched or an NBD zero request),
 *                and nothing else is touched.
 *
 * These are the cases where the stock nbdcopy recipe goes wrong when
 * one flag is missing (see README.md).  Requests never cross a granule
 * boundary except at the start of an extent, so every granule the
 * server marks changed is read and written whole.
 *
 * Threads: one worker per source connection, each with its own libnbd
 * handle and buffer.  struct pull is read-only while workers run,
 * except the fields under pull.lock (see there).  An NBD destination
 * is one libnbd handle shared by the workers (libnbd handles are
 * thread-safe), since servers such as qemu-nbd accept one client by
 * default.
 */

#include <config.h>

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <linux/falloc.h>
#include <linux/fs.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <libnbd.h>

#include "fleecectl.h"
#include "opts.h"
#include "size.h"
#include "uri.h"

#define MAX_CONNECTIONS 16
#define DEFAULT_CONNECTIONS 4
#define DEFAULT_GRANULE (64 * 1024)
/* Largest read or write request (a multiple of the granule, and at
 * least one granule).
 */
#define MAX_REQUEST (4 * 1024 * 1024)
/* The unit of work a worker takes at a time (block status is asked
 * for one chunk).
 */
#define CHUNK (32 * 1024 * 1024)

struct pull {
  /* Set up before the workers start, read-only afterwards. */
  const char *src_uri;
  bool delta;                   /* a delta view: write data extents only */
  uint64_t size;                /* of the source */
  uint64_t gran;                /* granule, a power of two */
  uint64_t maxreq;              /* largest request, multiple of gran */
  uint64_t chunk;               /* work unit, multiple of gran */
  bool extents;                 /* the source serves base:allocation */
  bool dest_zero;               /* DEST reads as zeroes where unwritten */
  int dest_fd;                  /* a file DEST, or -1 */
  bool dest_punch;              /* try FALLOC_FL_PUNCH_HOLE on dest_fd */
  struct nbd_handle *dst;       /* an NBD DEST (shared), or NULL */
  bool dst_can_zero;

  /* lock protects everything below.  Invariant: next only grows, in
   * steps of chunk; done is the sum of the lengths of finished chunks,
   * so done <= next; once failed is set, errmsg holds the first error
   * and never changes.
   */
  pthread_mutex_t lock;
  pthread_cond_t finished;      /* signalled when running drops to 0 */
  uint64_t next;                /* offset of the next chunk to hand out */
  uint64_t done;
  uint64_t written;             /* bytes of data written to DEST */
  uint64_t zeroed;              /* bytes zeroed (holes punched) in DEST */
  unsigned running;             /* workers not yet finished */
  bool failed;
  char errmsg[1024];
};

struct worker {
  struct pull *pl;
  struct nbd_handle *src;
  char *buf;                    /* maxreq bytes */
  pthread_t thread;
  /* Extents of the current block status reply (worker-private). */
  uint64_t *ext_len;
  uint32_t *ext_flags;
  size_t next_ext, cap_ext;
};

static void
set_error (struct pull *pl, const char *fmt, ...)
  __attribute__ ((format (printf, 2, 3)));

static void
set_error (struct pull *pl, const char *fmt, ...)
{
  va_list ap;

  pthread_mutex_lock (&pl->lock);
  if (!pl->failed) {
    pl->failed = true;
    va_start (ap, fmt);
    vsnprintf (pl->errmsg, sizeof pl->errmsg, fmt, ap);
    va_end (ap);
  }
  pthread_mutex_unlock (&pl->lock);
}

static bool
has_failed (struct pull *pl)
{
  bool f;

  pthread_mutex_lock (&pl->lock);
  f = pl->failed;
  pthread_mutex_unlock (&pl->lock);
  return f;
}

static void
count (struct pull *pl, uint64_t *field, uint64_t n)
{
  pthread_mutex_lock (&pl->lock);
  *field += n;
  pthread_mutex_unlock (&pl->lock);
}

static bool
is_zero (const char *buf, size_t len)
{
  return len == 0 || (buf[0] == 0 && memcmp (buf, buf + 1, len - 1) == 0);
}

/* Write len bytes of buf at off to DEST. */
static int
dest_write (struct pull *pl, const char *buf, uint64_t len, uint64_t off)
{
  uint64_t total = len;

  if (pl->dst) {
    if (nbd_pwrite (pl->dst, buf, len, off, 0) == -1) {
      set_error (pl, "writing the destination at offset %" PRIu64
                 " (%" PRIu64 " bytes): %s", off, len, nbd_get_error ());
      return -1;
    }
  }
  else {
    while (len > 0) {
      ssize_t r = pwrite (pl->dest_fd, buf, len, off);
      if (r == -1 && errno == EINTR)
        continue;
      if (r <= 0) {
        set_error (pl, "writing the destination at offset %" PRIu64 ": %s",
                   off, r == 0 ? "no progress" : strerror (errno));
        return -1;
      }
      buf += r;
      off += r;
      len -= r;
    }
  }
  count (pl, &pl->written, total);
  return 0;
}

/* Make DEST read as zeroes at [off, off+len). */
static int
dest_zero (struct pull *pl, uint64_t len, uint64_t off)
{
  static const char zeroes[64 * 1024];
  uint64_t n, o, total = len;

  if (pl->dst && pl->dst_can_zero) {
    while (len > 0) {
      n = len > (1u << 30) ? (1u << 30) : len;
      if (nbd_zero (pl->dst, n, off, 0) == -1) {
        set_error (pl, "zeroing the destination at offset %" PRIu64
                   " (%" PRIu64 " bytes): %s", off, n, nbd_get_error ());
        return -1;
      }
      off += n;
      len -= n;
    }
    count (pl, &pl->zeroed, total);
    return 0;
  }
  if (!pl->dst && pl->dest_punch) {
    if (fallocate (pl->dest_fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                   off, len) == 0) {
      count (pl, &pl->zeroed, total);
      return 0;
    }
    if (errno != EOPNOTSUPP && errno != ENOSYS && errno != EINVAL &&
        errno != ENODEV) {
      set_error (pl, "punching a hole in the destination at offset %"
                 PRIu64 ": %m", off);
      return -1;
    }
    /* Not supported here: write the zeroes (pl->dest_punch stays set;
     * it is read-only while workers run, and trying costs one call).
     */
  }
  for (o = off; o < off + len; o += n) {
    n = off + len - o;
    if (n > sizeof zeroes)
      n = sizeof zeroes;
    if (pl->dst) {
      if (nbd_pwrite (pl->dst, zeroes, n, o, 0) == -1) {
        set_error (pl, "writing zeroes to the destination at offset %"
                   PRIu64 ": %s", o, nbd_get_error ());
        return -1;
      }
    }
    else {
      ssize_t r = pwrite (pl->dest_fd, zeroes, n, o);
      if (r == -1 && errno == EINTR) {
        n = 0;
        continue;
      }
      if (r <= 0) {
        set_error (pl, "writing zeroes to the destination at offset %"
                   PRIu64 ": %s", o, r == 0 ? "no progress" : strerror (errno));
        return -1;
      }
      n = r;
    }
  }
  count (pl, &pl->zeroed, total);
  return 0;
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

    if (has_failed (pl))
      return -1;
    pend = (p & ~(pl->gran - 1)) + pl->maxreq;
    if (pend > end)
      pend = end;
    if (nbd_pread (w->src, w->buf, pend - p, p, 0) == -1) {
      set_error (pl, "reading %s at offset %" PRIu64 " (%" PRIu64
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
          if (dest_write (pl, w->buf + (run_start - p), s - run_start,
                          run_start) == -1)
            return -1;
        }
        else if (run_kind == 0) {
          /* A full pull onto zeroes may skip zero data; an
           * incremental one must write it (the old backup is there).
           */
          if ((pl->delta || !pl->dest_zero) &&
              dest_zero (pl, s - run_start, run_start) == -1)
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

static int
extent_cb (void *opaque, const char *metacontext, uint64_t offset,
           uint32_t *entries, size_t nr, int *error)
{
  struct worker *w = opaque;
  size_t i;

  if (strcmp (metacontext, LIBNBD_CONTEXT_BASE_ALLOCATION) != 0)
    return 0;
  for (i = 0; i + 1 < nr; i += 2) {
    if (w->next_ext == w->cap_ext) {
      size_t ncap = w->cap_ext ? w->cap_ext * 2 : 64;
      uint64_t *l = realloc (w->ext_len, ncap * sizeof *l);
      uint32_t *f;

      if (l == NULL)
        goto oom;
      w->ext_len = l;
      f = realloc (w->ext_flags, ncap * sizeof *f);
      if (f == NULL)
        goto oom;
      w->ext_flags = f;
      w->cap_ext = ncap;
    }
    w->ext_len[w->next_ext] = entries[i];
    w->ext_flags[w->next_ext] = entries[i + 1];
    w->next_ext++;
  }
  return 0;

 oom:
  *error = ENOMEM;
  return -1;
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
      set_error (pl, "block status of %s at offset %" PRIu64 ": %s",
                 pl->src_uri, pos, nbd_get_error ());
      return -1;
    }
    if (w->next_ext == 0) {
      set_error (pl, "block status of %s at offset %" PRIu64 ": the server "
                 "returned no extents", pl->src_uri, pos);
      return -1;
    }
    for (i = 0; i < w->next_ext && pos < end; i++) {
      uint64_t len = w->ext_len[i];
      uint32_t flags = w->ext_flags[i];

      if (len == 0) {
        set_error (pl, "block status of %s at offset %" PRIu64 ": an "
                   "extent of length 0", pl->src_uri, pos);
        return -1;
      }
      if (len > end - pos)
        len = end - pos;
      if (pl->delta) {
        /* Unchanged granules are holes; everything else changed. */
        if (flags & LIBNBD_STATE_HOLE)
          ;
        else if (flags & LIBNBD_STATE_ZERO) {
          if (dest_zero (pl, len, pos) == -1)
            return -1;
        }
        else if (copy_data (w, pos, len) == -1)
          return -1;
      }
      else {
        if (flags & LIBNBD_STATE_ZERO) {
          if (!pl->dest_zero && dest_zero (pl, len, pos) == -1)
            return -1;
        }
        else if (copy_data (w, pos, len) == -1)
          return -1;
      }
      pos += len;
    }
  }
  return 0;
}

static void *
worker_run (void *opaque)
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
    count (pl, &pl->done, end - off);
  }
  pthread_mutex_lock (&pl->lock);
  if (--pl->running == 0)
    pthread_cond_signal (&pl->finished);
  pthread_mutex_unlock (&pl->lock);
  return NULL;
}

static struct nbd_handle *
open_source (const char *uri, bool meta, char *err, size_t errlen)
{
  struct nbd_handle *h = nbd_create ();

  if (h == NULL) {
    snprintf (err, errlen, "libnbd: %s", nbd_get_error ());
    return NULL;
  }
  if ((meta && nbd_add_meta_context (h, LIBNBD_CONTEXT_BASE_ALLOCATION)
       == -1) ||
      nbd_connect_uri (h, uri) == -1) {
    snprintf (err, errlen, "cannot open %s: %s", uri, nbd_get_error ());
    nbd_close (h);
    return NULL;
  }
  return h;
}

/* The granule: --granularity, else the server's status (-c), else 64K. */
static int
learn_granule (struct globals *g, uint64_t *gran)
{
  struct jval *r;
  char err[1024];
  uint64_t v = 0;

  *gran = DEFAULT_GRANULE;
  if (g->ctl == NULL)
    return 0;
  r = ctl_call (g->ctl, "status", g->timeout_ms, NULL, err, sizeof err);
  if (r == NULL) {
    fc_error ("pull: %s", err);
    return -1;
  }
  if (jv_u64 (jv_get (r, "bitmap_granularity"), &v) ||
      jv_u64 (jv_get (jv_get (r, "snapshot"), "cluster_size"), &v)) {
    if (fleece_is_pow2 (v) && v >= 512 && v <= 16 * 1024 * 1024)
      *gran = v;
  }
  jv_free (r);
  return 0;
}

/* Open DEST; sets dest_fd or dst, dest_zero, dest_punch. */
static int
open_dest (struct pull *pl, const char *dest, bool dest_zeroed)
{
  struct stat st;
  int fd;
  uint64_t dsize;

  if (fc_is_nbd_uri (dest)) {
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

  if (S_ISBLK (st.st_mode)) {
    fd = open (dest, O_RDWR | O_CLOEXEC);
    if (fd == -1 || ioctl (fd, BLKGETSIZE64, &dsize) == -1) {
      fc_error ("pull: %s: %m", dest);
      if (fd >= 0)
        close (fd);
      return -1;
    }
    if (dsize < pl->size) {
      fc_error ("pull: the block device %s has %" PRIu64 " bytes, less "
                "than the %" PRIu64 " bytes of the source", dest, dsize,
                pl->size);
      close (fd);
      return -1;
    }
    pl->dest_fd = fd;
    pl->dest_zero = dest_zeroed;
    pl->dest_punch = true;
    return 0;
  }
  if (!S_ISREG (st.st_mode)) {
    fc_error ("pull: %s is neither a regular file, a block device nor an "
              "NBD URI", dest);
    return -1;
  }

  if (pl->delta) {
    fd = open (dest, O_RDWR | O_CLOEXEC);
    if (fd == -1) {
      fc_error ("pull: %s: %m", dest);
      return -1;
    }
    /* A disk that grew: extend the backup (new space reads zero). */
    if ((uint64_t) st.st_size < pl->size && ftruncate (fd, pl->size) == -1) {
      fc_error ("pull: extending %s to %" PRIu64 " bytes: %m", dest,
                pl->size);
      close (fd);
      return -1;
    }
    pl->dest_zero = false;
  }
  else {
    /* A fresh sparse file of the source's size: reads as zeroes. */
    fd = open (dest, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd == -1) {
      fc_error ("pull: cannot create %s: %m", dest);
      return -1;
    }
    if (ftruncate (fd, pl->size) == -1) {
      fc_error ("pull: sizing %s to %" PRIu64 " bytes: %m", dest, pl->size);
      close (fd);
      return -1;
    }
    pl->dest_zero = true;
  }
  pl->dest_fd = fd;
  pl->dest_punch = true;
  return 0;
}

static const struct option pull_opts[] = {
  GLOBAL_LONG_OPTS,
  { "since", required_argument, NULL, OPT_SINCE },
  { "connections", required_argument, NULL, OPT_CONNECTIONS },
  { "granularity", required_argument, NULL, OPT_GRANULARITY },
  { "dest-zeroed", no_argument, NULL, OPT_DEST_ZEROED },
  { NULL, 0, NULL, 0 }
};

int
cmd_pull (struct globals *g, int argc, char **argv)
{
  const char *since = NULL, *uri, *dest, *why;
  uint64_t nconn = DEFAULT_CONNECTIONS, gran = 0;
  bool dest_zeroed = false;
  char *src_uri = NULL, err[1024], what[256];
  struct pull pl;
  struct worker w[MAX_CONNECTIONS];
  struct progress prog;
  size_t i, nw = 0;
  int c, r, ret = EXIT_FAIL;
  int64_t s;
  size_t start, len;

  memset (&pl, 0, sizeof pl);
  memset (w, 0, sizeof w);
  pl.dest_fd = -1;
  pthread_mutex_init (&pl.lock, NULL);
  pthread_cond_init (&pl.finished, NULL);

  optind = 1;
  while ((c = getopt_long (argc, argv, "+" GLOBAL_SHORT_OPTS, pull_opts,
                           NULL)) != -1) {
    switch (c) {
    case OPT_SINCE: since = optarg; break;
    case OPT_CONNECTIONS:
      if (fleece_parse_uint (optarg, MAX_CONNECTIONS, &nconn, &why) == -1 ||
          nconn == 0) {
        fc_usage_error ("--connections=%s: expected 1 to %d", optarg,
                        MAX_CONNECTIONS);
        return EXIT_USAGE;
      }
      break;
    case OPT_GRANULARITY:
      if (fc_parse_size ("--granularity", optarg, &gran) == -1)
        return EXIT_USAGE;
      if (!fleece_is_pow2 (gran) || gran < 512 || gran > 16 * 1024 * 1024) {
        fc_usage_error ("--granularity=%s: expected a power of two from "
                        "512 to 16M (the server's bitmap-granularity)",
                        optarg);
        return EXIT_USAGE;
      }
      break;
    case OPT_DEST_ZEROED: dest_zeroed = true; break;
    default:
      r = fc_global_option (g, c, optarg);
      if (r == -1)
        return EXIT_USAGE;
      if (r == 1) {
        fc_usage_error ("pull: unknown option or missing value: %s", argv[optind - 1]);
        return EXIT_USAGE;
      }
    }
  }
  if (argc - optind != 2) {
    fc_usage_error ("pull needs URI and DEST");
    return EXIT_USAGE;
  }
  uri = argv[optind];
  dest = argv[optind + 1];
  if (since && !fleece_valid_name (since)) {
    fc_usage_error ("--since=%s: not a checkpoint name", since);
    return EXIT_USAGE;
  }
  if (!fc_uri_export (uri, &start, &len)) {
    fc_usage_error ("pull: '%s' is not an NBD URI (e.g. "
                    "nbd+unix:///snapshot?socket=SOCK)", uri);
    return EXIT_USAGE;
  }
  if (len == 0) {
    fc_usage_error ("pull: '%s' is the live disk (export \"\"), not a "
                    "snapshot: give the snapshot export, e.g. "
                    "nbd+unix:///snapshot?socket=SOCK", uri);
    return EXIT_USAGE;
  }
  if (since) {
    src_uri = fc_uri_with_since (uri, since, err, sizeof err);
    if (src_uri == NULL) {
      fc_usage_error ("pull: %s", err);
      return EXIT_USAGE;
    }
  }
  else if ((src_uri = strdup (uri)) == NULL) {
    fc_error ("out of memory");
    return EXIT_FAIL;
  }
  pl.src_uri = src_uri;
  pl.delta = fc_uri_is_delta (src_uri);
  if (pl.delta && dest_zeroed) {
    fc_usage_error ("pull: --dest-zeroed is for full pulls; an incremental "
                    "pull writes over the previous backup");
    ret = EXIT_USAGE;
    goto out;
  }

  if (gran == 0 && learn_granule (g, &gran) == -1)
    goto out;
  pl.gran = gran;
  pl.maxreq = gran > MAX_REQUEST ? gran : MAX_REQUEST;
  pl.chunk = gran > CHUNK ? gran : CHUNK;

  /* Every source connection first, so that a bad URI fails early. */
  for (nw = 0; nw < nconn; nw++) {
    w[nw].pl = &pl;
    w[nw].src = open_source (src_uri, true, err, sizeof err);
    if (w[nw].src == NULL) {
      fc_error ("pull: %s", err);
      goto out;
    }
    w[nw].buf = malloc (pl.maxreq);
    if (w[nw].buf == NULL) {
      nw++;
      fc_error ("out of memory");
      goto out;
    }
  }
  s = nbd_get_size (w[0].src);
  if (s == -1) {
    fc_error ("pull: size of %s: %s", src_uri, nbd_get_error ());
    goto out;
  }
  pl.size = s;
  pl.extents = nbd_can_meta_context (w[0].src,
                                     LIBNBD_CONTEXT_BASE_ALLOCATION) == 1;
  if (pl.delta && !pl.extents) {
    fc_error ("pull: %s does not serve block status (base:allocation), so "
              "the changed blocks are unknown", src_uri);
    goto out;
  }

  if (open_dest (&pl, dest, dest_zeroed) == -1)
    goto out;

  snprintf (what, sizeof what, "pull%s%s", pl.delta ? " since " : "",
            pl.delta ? (since ? since : "(delta view)") : "");
  progress_start (&prog, g->progress, stdout, what);
  pl.running = nw;
  for (i = 0; i < nw; i++) {
    errno = pthread_create (&w[i].thread, NULL, worker_run, &w[i]);
    if (errno) {
      set_error (&pl, "pthread_create: %m");
      pthread_mutex_lock (&pl.lock);
      pl.running -= nw - i;
      pthread_mutex_unlock (&pl.lock);
      nw = i;
      break;
    }
  }
  /* Show progress every 200 ms until the last worker is done. */
  pthread_mutex_lock (&pl.lock);
  while (pl.running > 0) {
    struct timespec ts;
    uint64_t done = pl.done;

    pthread_mutex_unlock (&pl.lock);
    progress_update (&prog, done, pl.size, NULL);
    clock_gettime (CLOCK_REALTIME, &ts);
    ts.tv_nsec += 200 * 1000000L;
    if (ts.tv_nsec >= 1000000000L) {
      ts.tv_sec++;
      ts.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock (&pl.lock);
    if (pl.running > 0)
      pthread_cond_timedwait (&pl.finished, &pl.lock, &ts);
  }
  pthread_mutex_unlock (&pl.lock);
  for (i = 0; i < nw; i++)
    pthread_join (w[i].thread, NULL);

  /* Make it durable. */
  if (!pl.failed) {
    if (pl.dst) {
      if (nbd_can_flush (pl.dst) == 1 && nbd_flush (pl.dst, 0) == -1)
        set_error (&pl, "flushing the destination: %s", nbd_get_error ());
    }
    else if (fsync (pl.dest_fd) == -1)
      set_error (&pl, "fsync %s: %m", dest);
  }
  if (pl.failed) {
    if (prog.drawn)
      fputc ('\n', prog.fp);
    fc_error ("pull: %s", pl.errmsg);
    goto out;
  }
  progress_update (&prog, pl.done, pl.size, NULL);
  progress_end (&prog, pl.size, "completed");
  if (prog.mode != PROGRESS_NONE)
    printf ("%s: %" PRIu64 " bytes of data written, %" PRIu64
            " bytes zeroed, granule %" PRIu64 "\n",
            what, pl.written, pl.zeroed, pl.gran);
  ret = EXIT_OK;

 out:
  for (i = 0; i < nw; i++) {
    if (w[i].src) {
      nbd_shutdown (w[i].src, 0);
      nbd_close (w[i].src);
    }
    free (w[i].buf);
    free (w[i].ext_len);
    free (w[i].ext_flags);
  }
  if (pl.dst) {
    nbd_shutdown (pl.dst, 0);
    nbd_close (pl.dst);
  }
  if (pl.dest_fd >= 0 && close (pl.dest_fd) == -1 && ret == EXIT_OK) {
    fc_error ("pull: closing %s: %m", dest);
    ret = EXIT_FAIL;
  }
  pthread_cond_destroy (&pl.finished);
  pthread_mutex_destroy (&pl.lock);
  free (src_uri);
  return ret;
}
