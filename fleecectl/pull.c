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
 * one flag is missing (see README.md).
 *
 * This file: the options, the source connections and granule, running
 * the workers (pull-copy.c) with progress, and the fields of struct
 * pull under its lock.  Threads and shared state: see pull.h.
 */

#include <config.h>

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <libnbd.h>

#include "fleecectl.h"
#include "opts.h"
#include "pull.h"
#include "size.h"
#include "uri.h"

void
pull_fail (struct pull *pl, const char *fmt, ...)
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

bool
pull_failed (struct pull *pl)
{
  bool f;

  pthread_mutex_lock (&pl->lock);
  f = pl->failed;
  pthread_mutex_unlock (&pl->lock);
  return f;
}

void
pull_count (struct pull *pl, uint64_t *field, uint64_t n)
{
  pthread_mutex_lock (&pl->lock);
  *field += n;
  pthread_mutex_unlock (&pl->lock);
}

static int
set_connections (const char *name, const char *arg, void *dest)
{
  char expected[32];

  snprintf (expected, sizeof expected, "1 to %d", MAX_CONNECTIONS);
  return fc_parse_uint (name, arg, 1, MAX_CONNECTIONS, expected, dest);
}

static int
set_granule (const char *name, const char *arg, void *dest)
{
  uint64_t *gran = dest;

  if (fc_parse_size (name, arg, gran) == -1)
    return -1;
  if (!fleece_is_pow2 (*gran) || *gran < 512 || *gran > 16 * 1024 * 1024) {
    fc_usage_error ("--%s=%s: expected a power of two from 512 to 16M (the "
                    "server's bitmap-granularity)", name, arg);
    return -1;
  }
  return 0;
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

/* The source URI: uri, or its delta view since since.  malloc'd, or
 * NULL after a message (*usage: a usage error).
 */
static char *
source_uri (const char *uri, const char *since, bool *usage)
{
  char err[1024], *src;
  size_t start, len;

  *usage = true;
  if (!fc_uri_export (uri, &start, &len)) {
    fc_usage_error ("pull: '%s' is not an NBD URI (e.g. "
                    "nbd+unix:///snapshot?socket=SOCK)", uri);
    return NULL;
  }
  if (len == 0) {
    fc_usage_error ("pull: '%s' is the live disk (export \"\"), not a "
                    "snapshot: give the snapshot export, e.g. "
                    "nbd+unix:///snapshot?socket=SOCK", uri);
    return NULL;
  }
  if (since) {
    src = fc_uri_with_since (uri, since, err, sizeof err);
    if (src == NULL)
      fc_usage_error ("pull: %s", err);
    return src;
  }
  *usage = false;
  src = strdup (uri);
  if (src == NULL)
    fc_error ("out of memory");
  return src;
}

/* Open nconn connections to the source (so that a bad URI fails
 * early), *nw of them with their buffer; learn its size and whether it
 * serves block status.
 */
static int
open_sources (struct pull *pl, struct worker *w, size_t nconn, size_t *nw)
{
  char err[1024];
  int64_t s;

  for (*nw = 0; *nw < nconn; (*nw)++) {
    w[*nw].pl = pl;
    w[*nw].src = pull_open_source (pl->src_uri, err, sizeof err);
    if (w[*nw].src == NULL) {
      fc_error ("pull: %s", err);
      return -1;
    }
    w[*nw].buf = malloc (pl->maxreq);
    if (w[*nw].buf == NULL) {
      (*nw)++;
      fc_error ("out of memory");
      return -1;
    }
  }
  s = nbd_get_size (w[0].src);
  if (s == -1) {
    fc_error ("pull: size of %s: %s", pl->src_uri, nbd_get_error ());
    return -1;
  }
  pl->size = s;
  pl->extents = nbd_can_meta_context (w[0].src,
                                      LIBNBD_CONTEXT_BASE_ALLOCATION) == 1;
  if (pl->delta && !pl->extents) {
    fc_error ("pull: %s does not serve block status (base:allocation), so "
              "the changed blocks are unknown", pl->src_uri);
    return -1;
  }
  return 0;
}

/* Run the nw workers, showing progress every 200 ms until the last
 * one is done.
 */
static void
run_workers (struct pull *pl, struct worker *w, size_t nw,
             struct progress *prog)
{
  size_t i;

  pl->running = nw;
  for (i = 0; i < nw; i++) {
    errno = pthread_create (&w[i].thread, NULL, pull_worker, &w[i]);
    if (errno) {
      pull_fail (pl, "pthread_create: %m");
      pthread_mutex_lock (&pl->lock);
      pl->running -= nw - i;
      pthread_mutex_unlock (&pl->lock);
      nw = i;
      break;
    }
  }
  pthread_mutex_lock (&pl->lock);
  while (pl->running > 0) {
    struct timespec ts;
    uint64_t done = pl->done;

    pthread_mutex_unlock (&pl->lock);
    progress_update (prog, done, pl->size, NULL);
    clock_gettime (CLOCK_REALTIME, &ts);
    ts.tv_nsec += 200 * 1000000L;
    if (ts.tv_nsec >= 1000000000L) {
      ts.tv_sec++;
      ts.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock (&pl->lock);
    if (pl->running > 0)
      pthread_cond_timedwait (&pl->finished, &pl->lock, &ts);
  }
  pthread_mutex_unlock (&pl->lock);
  for (i = 0; i < nw; i++)
    pthread_join (w[i].thread, NULL);
}

int
cmd_pull (struct globals *g, int argc, char **argv)
{
  const char *since = NULL, *uri, *dest;
  uint64_t nconn = DEFAULT_CONNECTIONS, gran = 0;
  bool dest_zeroed = false, usage;
  const struct fc_opt opts[] = {
    FC_VALUE ("since", fc_opt_text, &since),
    FC_VALUE ("connections", set_connections, &nconn),
    FC_VALUE ("granularity", set_granule, &gran),
    FC_FLAG ("dest-zeroed", &dest_zeroed),
    FC_END
  };
  char *src_uri = NULL, what[256];
  struct pull pl;
  struct worker w[MAX_CONNECTIONS];
  struct progress prog;
  size_t i, nw = 0;
  int ret = EXIT_FAIL;

  if (fc_options (g, "pull", argc, argv, opts) == -1)
    return EXIT_USAGE;
  if (argc - optind != 2) {
    fc_usage_error ("pull needs URI and DEST");
    return EXIT_USAGE;
  }
  uri = argv[optind];
  dest = argv[optind + 1];
  if (!fc_since_ok (since))
    return EXIT_USAGE;
  src_uri = source_uri (uri, since, &usage);
  if (src_uri == NULL)
    return usage ? EXIT_USAGE : EXIT_FAIL;

  memset (&pl, 0, sizeof pl);
  memset (w, 0, sizeof w);
  pl.dest_fd = -1;
  pthread_mutex_init (&pl.lock, NULL);
  pthread_cond_init (&pl.finished, NULL);
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
  if (open_sources (&pl, w, nconn, &nw) == -1 ||
      pull_open_dest (&pl, dest, dest_zeroed) == -1)
    goto out;

  snprintf (what, sizeof what, "pull%s%s", pl.delta ? " since " : "",
            pl.delta ? (since ? since : "(delta view)") : "");
  progress_start (&prog, g->progress, stdout, what);
  run_workers (&pl, w, nw, &prog);
  /* Make it durable. */
  if (!pl.failed)
    pull_dest_sync (&pl, dest);
  if (pl.failed) {
    progress_break (&prog);
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
  if (pull_dest_close (&pl) == -1 && ret == EXIT_OK) {
    fc_error ("pull: closing %s: %m", dest);
    ret = EXIT_FAIL;
  }
  pthread_cond_destroy (&pl.finished);
  pthread_mutex_destroy (&pl.lock);
  free (src_uri);
  return ret;
}
