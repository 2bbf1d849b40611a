/* nbdkit-fleece
 * SPDX-License-Identifier: BSD-3-Clause
 *
 * The background job: one thread, started in .after_fork, walks the
 * clusters in order and populates every one not yet filled, at
 * stream-speed.  Zero runs of the base (its base:allocation block
 * status) are written as zeroes with MAY_TRIM (holes on a file)
 * instead of being copied.  Filled clusters are made durable in
 * batches: one disk flush and one state-file sync for up to
 * BATCH_BYTES or BATCH_SECONDS of progress.  When every cluster is
 * durable the state file records completion, the base connections
 * close, and the filter passes everything through.
 *
 * The job uses st_wnext, a context opened on the plugin with
 * nbdkit_next_context_open (shared, writable), which copy-on-read
 * also uses (populate.c).
 *
 * Lock: job_lock protects paused, stop, speed, waiting, slice_start,
 * slice_bytes and last_error; the job thread waits on job_cond, which
 * every command broadcasts.  cursor and batch_start belong to the job
 * thread.
 */

#include <config.h>

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <nbdkit-filter.h>

#include "errors.h"
#include "json.h"
#include "monotime.h"
#include "stream.h"

extern nbdkit_next *st_wnext;

#define CHUNK_BYTES (1024 * 1024)
#define BATCH_BYTES (UINT64_C (64) * 1024 * 1024)
#define BATCH_SECONDS 1.0
#define RETRY_SECONDS 1.0

static pthread_mutex_t job_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t job_cond = PTHREAD_COND_INITIALIZER;
static pthread_t thread;
static bool thread_started;
static bool paused, stop, waiting;
static uint64_t speed;
static double slice_start;
static uint64_t slice_bytes;

/* Wait on job_cond until t (monotonic seconds) or a broadcast.
 * job_lock held.
 */
static void
wait_until (double t)
{
  struct timespec real, ts;
  double d = t - fleece_now_mono ();

  if (d <= 0)
    return;
  clock_gettime (CLOCK_REALTIME, &real);
  d += real.tv_sec + real.tv_nsec / 1e9;
  ts.tv_sec = (time_t) d;
  ts.tv_nsec = (long) ((d - ts.tv_sec) * 1e9);
  pthread_cond_timedwait (&job_cond, &job_lock, &ts);
}

/* Sleep up to secs unless stopped or told something. */
static void
pause_for (double secs)
{
  pthread_mutex_lock (&job_lock);
  if (!stop)
    wait_until (fleece_now_mono () + secs);
  pthread_mutex_unlock (&job_lock);
}

static void
set_waiting (bool w)
{
  pthread_mutex_lock (&job_lock);
  waiting = w;
  pthread_mutex_unlock (&job_lock);
}

/* Start a new rate-limit slice now.  job_lock held. */
static void
new_slice (void)
{
  slice_start = fleece_now_mono ();
  slice_bytes = 0;
}

/* Rate limit: after copying n bytes, wait until the slice's bytes fit
 * the speed.  A change of speed or a resume starts a new slice.
 */
static void
rate_limit (uint64_t n)
{
  pthread_mutex_lock (&job_lock);
  /* No credit for time spent waiting or paused: at most half a second
   * of burst.
   */
  if (speed > 0 &&
      fleece_now_mono () > slice_start + (double) slice_bytes / speed + 0.5)
    new_slice ();
  slice_bytes += n;
  while (!stop && !paused && speed > 0) {
    double due = slice_start + (double) slice_bytes / speed;

    if (fleece_now_mono () >= due)
      break;
    wait_until (due);
  }
  pthread_mutex_unlock (&job_lock);
}

static uint64_t
chunk_clusters (void)
{
  uint64_t bytes = CHUNK_BYTES, sp;

  pthread_mutex_lock (&job_lock);
  sp = speed;
  pthread_mutex_unlock (&job_lock);
  /* A slow job moves in small steps, so it never holds a run of
   * clusters (and the guest's requests on them) for long.
   */
  if (sp > 0 && sp / 4 < bytes)
    bytes = sp / 4;
  bytes >>= st.cluster_bits;
  return bytes ? bytes : 1;
}

struct zero_list {
  size_t n, alloc;
  struct { uint64_t offset, len; } *v;
  bool oom;
};

static void
add_zero_run (uint64_t offset, uint64_t len, void *opaque)
{
  struct zero_list *z = opaque;

  if (z->n == z->alloc) {
    size_t na = z->alloc ? z->alloc * 2 : 16;
    void *p = realloc (z->v, na * sizeof *z->v);

    if (p == NULL) {
      z->oom = true;
      return;
    }
    z->v = p;
    z->alloc = na;
  }
  z->v[z->n].offset = offset;
  z->v[z->n].len = len;
  z->n++;
}

static int
write_zeroes (uint64_t len, uint64_t offset, int *err)
{
  static const char zeroes[65536];

  if (st.can_zero > 0)
    return st_wnext->zero (st_wnext, len, offset, NBDKIT_FLAG_MAY_TRIM, err);
  while (len > 0) {
    uint64_t n = len > sizeof zeroes ? sizeof zeroes : len;

    if (st_wnext->pwrite (st_wnext, zeroes, n, offset, 0, err) == -1)
      return -1;
    len -= n;
    offset += n;
  }
  return 0;
}

/* Populate [c, t) (held EXCLUSIVE, all unfilled).  Returns bytes
 * copied from the base, or -1 (*base_failed says whose fault).
 */
static int64_t
populate_run (uint64_t c, uint64_t t, char *buf, bool *base_failed)
{
  uint64_t start = cluster_start (c);
  uint64_t end = cluster_start (t) < st.disk_size
    ? cluster_start (t) : st.disk_size;
  struct zero_list z = { 0 };
  uint64_t pos = start, copied = 0;
  size_t i = 0;
  int err = 0;

  *base_failed = false;
  if (base_zero_runs (end - start, start, add_zero_run, &z, &err) == -1 ||
      z.oom) {
    free (z.v);
    *base_failed = !z.oom;
    return -1;
  }
  while (pos < end) {
    uint64_t zs = i < z.n ? z.v[i].offset : end;
    uint64_t ze = i < z.n ? z.v[i].offset + z.v[i].len : end;

    if (pos < zs) {
      /* Data up to the next zero run. */
      if (base_pread (buf + (pos - start), zs - pos, pos, &err) == -1) {
        *base_failed = true;
        goto fail;
      }
      if (st_wnext->pwrite (st_wnext, buf + (pos - start), zs - pos, pos,
                            0, &err) == -1) {
        nbdkit_error ("stream: writing populated data to the disk at %"
                      PRIu64 " failed: %s", pos, strerror (err));
        goto fail;
      }
      copied += zs - pos;
      pos = zs;
    }
    if (i < z.n) {
      if (ze > pos) {
        if (write_zeroes (ze - pos, pos, &err) == -1) {
          nbdkit_error ("stream: writing zeroes to the disk at %" PRIu64
                        " failed: %s", pos, strerror (err));
          goto fail;
        }
        pos = ze;
      }
      i++;
    }
  }
  free (z.v);
  return copied;

 fail:
  free (z.v);
  return -1;
}

static bool
commit (uint64_t *batch_start, uint64_t c)
{
  int err = 0;

  if (c <= *batch_start)
    return true;
  if (pop_make_durable (st_wnext, *batch_start, c - *batch_start, &err)
      == -1)
    return false;
  *batch_start = c;
  return true;
}

static void *
job_thread (void *unused)
{
  uint64_t c = 0, batch_start = 0;
  double last_commit = fleece_now_mono ();
  char *buf = malloc (CHUNK_BYTES > st.cluster_size
                      ? CHUNK_BYTES : st.cluster_size);

  if (buf == NULL) {
    nbdkit_error ("stream: job: malloc: %m; the background job does not "
                  "run (copy-on-read still works)");
    return NULL;
  }
  nbdkit_debug ("stream: job started: %" PRIu64 " clusters of %" PRIu32
                " bytes", st.nclusters, st.cluster_size);
  for (;;) {
    uint64_t k, t, max;
    struct rangelock_entry e;
    bool base_failed;
    int64_t copied;

    pthread_mutex_lock (&job_lock);
    if (paused && !stop) {
      pthread_mutex_unlock (&job_lock);
      /* What is filled so far survives a crash while paused. */
      commit (&batch_start, c);
      pthread_mutex_lock (&job_lock);
      while (paused && !stop)
        pthread_cond_wait (&job_cond, &job_lock);
    }
    if (stop) {
      pthread_mutex_unlock (&job_lock);
      break;
    }
    pthread_mutex_unlock (&job_lock);

    if (c >= st.nclusters) {
      if (!commit (&batch_start, c)) {
        pause_for (RETRY_SECONDS);
        continue;
      }
      if (durable_bits_test (st.durable, 0, st.nclusters)) {
        if (state_mark_complete () == -1) {
          pause_for (RETRY_SECONDS);
          continue;
        }
        __atomic_store_n (&st.complete, true, __ATOMIC_RELEASE);
        base_shutdown ();
        set_waiting (false);
        nbdkit_debug ("stream: complete: every cluster is populated; the "
                      "base is closed and every request passes through");
        break;
      }
      /* Something was missed (a failed write): go round again. */
      c = batch_start = 0;
      continue;
    }

    if (is_filled (c)) {
      c++;
      goto maybe_commit;
    }
    max = chunk_clusters ();
    for (k = c + 1; k < st.nclusters && k - c < max && !is_filled (k); k++)
      ;
    rangelock_lock (&st.locks, &e, cluster_start (c),
                    (k < st.nclusters ? cluster_start (k) : st.disk_size)
                    - cluster_start (c), RANGELOCK_EXCLUSIVE);
    for (t = c; t < k && !is_filled (t); t++)
      ;
    if (t == c) {
      rangelock_unlock (&st.locks, &e);
      continue;
    }
    copied = populate_run (c, t, buf, &base_failed);
    if (copied >= 0)
      pop_set_filled (c, t - c);
    rangelock_unlock (&st.locks, &e);
    if (copied < 0) {
      if (base_failed)
        set_waiting (true);
      commit (&batch_start, c);
      pause_for (RETRY_SECONDS);
      continue;
    }
    set_waiting (false);
    c = t;
    rate_limit (copied);

  maybe_commit:
    if (cluster_start (c - batch_start) >= BATCH_BYTES ||
        fleece_now_mono () - last_commit >= BATCH_SECONDS) {
      commit (&batch_start, c);
      last_commit = fleece_now_mono ();
    }
  }
  /* A clean stop keeps what was filled. */
  if (!stream_is_complete ())
    commit (&batch_start, c);
  free (buf);
  return NULL;
}

int
job_start (nbdkit_backend *backend)
{
  int err;

  st_wnext = nbdkit_next_context_open (backend, 0, "", 1);
  if (st_wnext == NULL || st_wnext->prepare (st_wnext) == -1) {
    nbdkit_error ("stream: cannot open the disk for population");
    return -1;
  }
  if (st_wnext->can_write (st_wnext) != 1) {
    nbdkit_error ("stream: the disk below is read-only; the stream filter "
                  "needs to write it");
    return -1;
  }
  st.multi_conn = st_wnext->can_multi_conn (st_wnext) == 1;
  if (stream_config.sync_flush && !st.multi_conn) {
    nbdkit_error ("stream-sync=flush needs a disk whose flush covers every "
                  "connection (the plugin's can_multi_conn), and this one's "
                  "does not: use stream-sync=write");
    return -1;
  }
  if (st_wnext->can_flush (st_wnext) != 1) {
    nbdkit_error ("stream: the disk below cannot flush, so a populated "
                  "cluster could be recorded before its contents are "
                  "stored; serve the local disk with a plugin that can "
                  "flush (file, memory, nbd)");
    return -1;
  }
  st.can_zero = st_wnext->can_zero (st_wnext);
  (void) st_wnext->get_size (st_wnext);

  speed = stream_config.speed;
  slice_start = fleece_now_mono ();
  err = pthread_create (&thread, NULL, job_thread, NULL);
  if (err) {
    errno = err;
    nbdkit_error ("stream: cannot start the background job: %m");
    return -1;
  }
  thread_started = true;
  return 0;
}

void
job_stop (void)
{
  if (thread_started) {
    pthread_mutex_lock (&job_lock);
    stop = true;
    pthread_cond_broadcast (&job_cond);
    pthread_mutex_unlock (&job_lock);
    pthread_join (thread, NULL);
    thread_started = false;
  }
  if (st_wnext && st.fine && !stream_is_complete ()) {
    int err = 0;

    /* A clean stop leaves nothing that only the page cache holds. */
    if (pending_commit (st_wnext, &err) == -1)
      nbdkit_error ("stream: the populated clusters since the last flush "
                    "could not be made durable at exit; a restart in this "
                    "boot still keeps them");
  }
  if (st_wnext) {
    st_wnext->finalize (st_wnext);
    nbdkit_next_context_close (st_wnext);
    st_wnext = NULL;
  }
}

void
job_status (struct jbuf *reply)
{
  const char *state;
  uint64_t sp;

  pthread_mutex_lock (&job_lock);
  sp = speed;
  if (stream_is_complete ())
    state = "complete";
  else if (paused)
    state = "paused";
  else if (waiting || !thread_started)
    state = "waiting-for-base";
  else
    state = "running";
  pthread_mutex_unlock (&job_lock);

  jbuf_kv_raw (reply, "stream", "{");
  jbuf_kv_string (reply, "state", state);
  jbuf_kv_u64 (reply, "bytes_total", st.disk_size);
  jbuf_kv_u64 (reply, "bytes_done", pop_bytes_done ());
  jbuf_kv_u64 (reply, "speed", sp);
  jbuf_kv_bool (reply, "base_connected", base_connected ());
  jbuf_kv_u64 (reply, "cluster_size", st.cluster_size);
  jbuf_kv_string (reply, "sync", stream_config.sync_flush ? "flush" : "write");
  if (st.fine)
    jbuf_kv_u64 (reply, "unflushed_clusters", pending_count ());
  jbuf_raw (reply, "}");
}

int
job_pause (char **errmsg)
{
  if (stream_is_complete ())
    return fleece_errorf (errmsg, "the stream is complete: nothing to pause");
  pthread_mutex_lock (&job_lock);
  paused = true;
  pthread_cond_broadcast (&job_cond);
  pthread_mutex_unlock (&job_lock);
  return 0;
}

int
job_resume (char **errmsg)
{
  if (stream_is_complete ())
    return fleece_errorf (errmsg, "the stream is complete: nothing to "
                          "resume");
  pthread_mutex_lock (&job_lock);
  paused = false;
  new_slice ();
  pthread_cond_broadcast (&job_cond);
  pthread_mutex_unlock (&job_lock);
  return 0;
}

int
job_set_speed (uint64_t sp, char **errmsg)
{
  pthread_mutex_lock (&job_lock);
  speed = sp;
  new_slice ();
  pthread_cond_broadcast (&job_cond);
  pthread_mutex_unlock (&job_lock);
  return 0;
}
