/* nbdkit-fleece
 * SPDX-License-Identifier: BSD-3-Clause
 *
 * Unit tests for common/durable-bits.c and common/fine-bits.c, on
 * temporary files.  fdatasync is replaced by a test double (defined
 * here, so the library's calls bind to it) that can be held, counted
 * and made to fail.  Durable bits: a bit is durable only once its page
 * was written and the sync returned; the writers that arrive while a
 * sync runs share the next one; a failed sync fails its waiters and
 * every later one until the next era; a switch makes writers wait for
 * the new file, and a failed switch goes on in the old file with every
 * bit; bits asked for ahead go with the next commit, with no wait.
 * Fine bits: written in place with no sync, never fewer bits
 * under concurrent writers, the same switch rules.  Both levels as the
 * dirty-bitmap filter uses them: one sync per region, none per
 * granule.
 */

#include <config.h>

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "durable-bits.h"
#include "fine-bits.h"
#include "unit.h"

#define NBITS 40000
#define REGION (NBITS + 7) / 8

/*----------------------------------------------------------------------
 * The fdatasync double.
 */
static pthread_mutex_t sl = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t sc = PTHREAD_COND_INITIALIZER;
static bool sync_held, sync_fail;
static unsigned syncs_entered, syncs_done;

int
fdatasync (int fd)
{
  bool fail;

  (void) fd;
  pthread_mutex_lock (&sl);
  syncs_entered++;
  pthread_cond_broadcast (&sc);
  while (sync_held)
    pthread_cond_wait (&sc, &sl);
  fail = sync_fail;
  syncs_done++;
  pthread_mutex_unlock (&sl);
  if (fail) {
    errno = EIO;
    return -1;
  }
  return 0;
}

static void
hold_syncs (bool h)
{
  pthread_mutex_lock (&sl);
  sync_held = h;
  pthread_cond_broadcast (&sc);
  pthread_mutex_unlock (&sl);
}

static unsigned
get_count (unsigned *p)
{
  unsigned v;

  pthread_mutex_lock (&sl);
  v = *p;
  pthread_mutex_unlock (&sl);
  return v;
}

static void
sleep_ms (unsigned ms)
{
  struct timespec ts = { ms / 1000, (long) (ms % 1000) * 1000000 };

  nanosleep (&ts, NULL);
}

/* Wait up to 5 s for *p >= v. */
static bool
wait_count (unsigned *p, unsigned v)
{
  int i;

  for (i = 0; i < 5000; i++) {
    if (get_count (p) >= v)
      return true;
    sleep_ms (1);
  }
  return false;
}

/*----------------------------------------------------------------------
 * Files and threads.
 */
static char dir[] = "/tmp/test-durable-bits.XXXXXX";

/* A new file of 3 pages: an fd for the object and one to read with. */
static int
new_file (const char *name, int *reader)
{
  char path[256];
  int fd;

  snprintf (path, sizeof path, "%s/%s", dir, name);
  fd = open (path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd == -1 || ftruncate (fd, 3 * 4096) == -1) {
    perror (path);
    exit (EXIT_FAILURE);
  }
  *reader = open (path, O_RDONLY | O_CLOEXEC);
  return fd;
}

/* Bit i of the region at offset of the file read through fd. */
static bool
file_bit (int fd, uint64_t offset, uint64_t i)
{
  unsigned char c = 0;

  if (pread (fd, &c, 1, offset + i / 8) != 1)
    return false;
  return c & (1 << (i % 8));
}

static unsigned char *
initial_with (uint64_t bit)
{
  unsigned char *b = calloc (1, REGION);

  if (bit < NBITS)
    b[bit / 8] |= 1 << (bit % 8);
  return b;
}

enum op { SET_WAIT, SET_WRITE };
struct job {
  pthread_t t;
  enum op op;
  void *obj;
  uint64_t first, n;
  int r, err;
  bool done;                    /* atomic */
};

static void *
run_job (void *vp)
{
  struct job *j = vp;

  j->r = j->op == SET_WAIT ? durable_bits_set_wait (j->obj, j->first, j->n)
    : fine_bits_set_write (j->obj, j->first, j->n);
  j->err = errno;
  __atomic_store_n (&j->done, true, __ATOMIC_RELEASE);
  return NULL;
}

static void
start (struct job *j, enum op op, void *obj, uint64_t first, uint64_t n)
{
  j->op = op;
  j->obj = obj;
  j->first = first;
  j->n = n;
  j->done = false;
  if (pthread_create (&j->t, NULL, run_job, j) != 0)
    exit (EXIT_FAILURE);
}

static bool
is_done (struct job *j)
{
  return __atomic_load_n (&j->done, __ATOMIC_ACQUIRE);
}

/*----------------------------------------------------------------------
 * Durable bits.
 */
static void
test_durable (void)
{
  struct durable_bits *d = durable_bits_new ();
  struct durable_bits_stats st;
  struct job w[9];
  unsigned char *init = initial_with (3);
  int rd, rd2, fd, fd2, i;
  unsigned s0;

  fd = new_file ("a", &rd);
  CHECK (d != NULL && durable_bits_attach (d, fd, 4096, NBITS, init) == 0);
  CHECK (durable_bits_test (d, 3, 1) && !durable_bits_test (d, 4, 1));

  /* Durable only after the sync; later writers share the next one. */
  hold_syncs (true);
  start (&w[0], SET_WAIT, d, 10, 1);
  CHECK (wait_count (&syncs_entered, 1));
  CHECK (!durable_bits_test (d, 10, 1) && !is_done (&w[0]));
  CHECK (file_bit (rd, 4096, 10));      /* written, not yet synced */
  for (i = 1; i < 9; i++)
    start (&w[i], SET_WAIT, d, 1000 * i, 3);
  sleep_ms (50);
  for (i = 0; i < 9; i++)
    CHECK (!is_done (&w[i]));
  CHECK (get_count (&syncs_entered) == 1);
  hold_syncs (false);
  for (i = 0; i < 9; i++) {
    pthread_join (w[i].t, NULL);
    CHECK (w[i].r == 0);
    CHECK (durable_bits_test (d, w[i].first, w[i].n));
    CHECK (file_bit (rd, 4096, w[i].first + w[i].n - 1));
  }
  CHECK (get_count (&syncs_done) == 2);
  durable_bits_get_stats (d, &st);
  CHECK (st.syncs == 2 && st.waits == 9);

  /* Asked ahead: no wait, durable with the next commit. */
  s0 = get_count (&syncs_done);
  durable_bits_ask (d, 5500, 4);
  CHECK (durable_bits_set_wait (d, 7500, 1) == 0);
  CHECK (wait_count (&syncs_done, s0 + 1));
  for (i = 0; i < 500 && !durable_bits_test (d, 5500, 4); i++)
    sleep_ms (10);
  CHECK (durable_bits_test (d, 5500, 4) && file_bit (rd, 4096, 5503));
  durable_bits_get_stats (d, &st);
  CHECK (st.waits == 10);

  /* Already durable: no I/O.  Past the end: ignored. */
  s0 = get_count (&syncs_done);
  CHECK (durable_bits_set_wait (d, 10, 1) == 0);
  CHECK (durable_bits_set_wait (d, NBITS + 5, 10) == 0);
  CHECK (get_count (&syncs_done) == s0);

  /* A switch: writers wait for the new file. */
  fd2 = new_file ("b", &rd2);
  free (init);
  init = initial_with (7);
  CHECK (durable_bits_switch_begin (d, NBITS, init) == 0);
  CHECK (!durable_bits_test (d, 7, 1) && !durable_bits_test (d, 10, 1));
  start (&w[0], SET_WAIT, d, 30, 1);
  sleep_ms (50);
  CHECK (!is_done (&w[0]));
  durable_bits_switch_end (d, fd2, 4096);
  pthread_join (w[0].t, NULL);
  CHECK (w[0].r == 0);
  CHECK (durable_bits_test (d, 7, 1) && durable_bits_test (d, 30, 1));
  /* (bit 7 is in the new file's image, and in every page written) */
  CHECK (file_bit (rd2, 4096, 30) && file_bit (rd2, 4096, 7));

  /* A failed switch: back to the old file, with every bit. */
  free (init);
  init = initial_with (NBITS);
  CHECK (durable_bits_switch_begin (d, NBITS, init) == 0);
  start (&w[0], SET_WAIT, d, 31, 1);
  sleep_ms (20);
  CHECK (!is_done (&w[0]));
  durable_bits_switch_end (d, -1, 0);
  pthread_join (w[0].t, NULL);
  CHECK (w[0].r == 0);
  CHECK (file_bit (rd2, 4096, 31) && file_bit (rd2, 4096, 30));
  CHECK (durable_bits_test (d, 30, 2));

  /* A failed sync fails its waiter and every later one. */
  sync_fail = true;
  errno = 0;
  CHECK (durable_bits_set_wait (d, 20010, 1) == -1 && errno == EIO);
  sync_fail = false;
  CHECK (durable_bits_set_wait (d, 20011, 1) == -1);
  CHECK (!durable_bits_test (d, 20010, 1));
  CHECK (durable_bits_test (d, 30, 1) && durable_bits_set_wait (d, 30, 1) == 0);

  /* ... until the next era. */
  free (init);
  init = initial_with (NBITS);
  close (rd);
  fd = new_file ("a2", &rd);
  CHECK (durable_bits_switch_begin (d, NBITS, init) == 0);
  durable_bits_switch_end (d, fd, 0);
  CHECK (durable_bits_set_wait (d, 20011, 1) == 0 && file_bit (rd, 0, 20011));

  durable_bits_free (d);
  close (rd);
  close (rd2);
  free (init);
}

/*----------------------------------------------------------------------
 * Fine bits.
 */
struct hammer {
  struct fine_bits *f;
  unsigned k;
};

static void *
hammer (void *vp)
{
  struct hammer *h = vp;
  unsigned i;

  for (i = 0; i < 2000; i++)
    if (fine_bits_set_write (h->f, (i * 4 + h->k) % 8192, 1) == -1)
      return (void *) 1;
  return NULL;
}

static void
test_fine (void)
{
  struct fine_bits *f = fine_bits_new ();
  struct hammer h[4];
  pthread_t t[4];
  struct job w;
  unsigned char *init = initial_with (3);
  int rd, rd2, fd, fd2, rfd, i;
  unsigned s0 = get_count (&syncs_entered);

  fd = new_file ("c", &rd);
  CHECK (f != NULL && fine_bits_attach (f, fd, 0, NBITS, init) == 0);
  close (fd);                   /* the object has its own */
  CHECK (fine_bits_test (f, 3, 1) && !fine_bits_test (f, 500, 1));
  CHECK (fine_bits_set_write (f, 500, 20) == 0);
  CHECK (file_bit (rd, 0, 500) && file_bit (rd, 0, 519) &&
         !file_bit (rd, 0, 520) && file_bit (rd, 0, 3));
  CHECK (fine_bits_test (f, 500, 20) && !fine_bits_test (f, 499, 2));
  CHECK (fine_bits_pages_written (f) == 1);
  CHECK (fine_bits_set_write (f, NBITS, 5) == 0);       /* ignored */

  /* Concurrent writers of one page: the file ends with every bit. */
  for (i = 0; i < 4; i++) {
    h[i].f = f;
    h[i].k = i;
    pthread_create (&t[i], NULL, hammer, &h[i]);
  }
  for (i = 0; i < 4; i++) {
    void *r;

    pthread_join (t[i], &r);
    CHECK (r == NULL);
  }
  for (i = 0; i < 8000; i++)
    if (!file_bit (rd, 0, i)) {
      CHECK (!"every bit set by a writer is in the file");
      break;
    }
  CHECK (get_count (&syncs_entered) == s0);             /* never synced */

  /* A failed switch: writers wait, then go on in the old file as it
   * was; a bit of the new image alone (30777) is not taken as written
   * there.
   */
  free (init);
  init = initial_with (30777);
  CHECK (fine_bits_switch_begin (f, NBITS, init) == 0);
  CHECK (!fine_bits_test (f, 500, 1) && !fine_bits_test (f, 30777, 1));
  start (&w, SET_WRITE, f, 20000, 1);
  sleep_ms (20);
  CHECK (!is_done (&w));
  fine_bits_switch_end (f, -1, 0);
  pthread_join (w.t, NULL);
  CHECK (w.r == 0 && file_bit (rd, 0, 20000) && file_bit (rd, 0, 500));
  CHECK (fine_bits_test (f, 500, 20) && fine_bits_test (f, 20000, 1));
  CHECK (!fine_bits_test (f, 30777, 1) && !file_bit (rd, 0, 30777));

  /* A switch to a new file: its initial bits pass at once. */
  fd2 = new_file ("d", &rd2);
  free (init);
  init = initial_with (9);
  CHECK (fine_bits_switch_begin (f, NBITS, init) == 0);
  CHECK (fine_bits_test (f, 9, 1) && !fine_bits_test (f, 500, 1));
  fine_bits_switch_end (f, fd2, 4096);
  close (fd2);
  CHECK (fine_bits_set_write (f, 30011, 1) == 0);
  CHECK (file_bit (rd2, 4096, 30011) && file_bit (rd2, 4096, 9) &&
         !file_bit (rd, 0, 30011));

  /* A write error is sticky until the next era. */
  free (init);
  init = initial_with (NBITS);
  rfd = new_file ("e", &fd);
  close (rfd);
  CHECK (fine_bits_switch_begin (f, NBITS, init) == 0);
  fine_bits_switch_end (f, fd, 0);      /* read-only: writes fail */
  close (fd);
  CHECK (fine_bits_set_write (f, 12, 1) == -1);
  CHECK (fine_bits_set_write (f, 13, 1) == -1 && !fine_bits_test (f, 12, 2));

  fine_bits_free (f);
  close (rd);
  close (rd2);
  free (init);
}

/*----------------------------------------------------------------------
 * Both levels, as the dirty-bitmap filter uses them: 64 granules per
 * region.
 */
static struct durable_bits *intent;
static struct fine_bits *fine;

static int
first_write (uint64_t g)
{
  if (fine_bits_test (fine, g, 1))
    return 0;
  if (durable_bits_set_wait (intent, g >> 6, 1) == -1)
    return -1;
  return fine_bits_set_write (fine, g, 1);
}

static void
test_levels (void)
{
  unsigned char *zero = calloc (1, REGION);
  int fd, rd;
  unsigned s0;
  uint64_t p0;

  fd = new_file ("f", &rd);
  intent = durable_bits_new ();
  fine = fine_bits_new ();
  CHECK (fine_bits_attach (fine, fd, 2 * 4096, NBITS, zero) == 0);
  CHECK (durable_bits_attach (intent, fd, 4096, NBITS / 64, zero) == 0);

  s0 = get_count (&syncs_done);
  CHECK (first_write (70) == 0);        /* region 1: one sync */
  CHECK (get_count (&syncs_done) == s0 + 1);
  CHECK (file_bit (rd, 4096, 1) && file_bit (rd, 2 * 4096, 70));
  CHECK (first_write (100) == 0);       /* same region: no sync */
  CHECK (get_count (&syncs_done) == s0 + 1 && file_bit (rd, 2 * 4096, 100));
  p0 = fine_bits_pages_written (fine);
  CHECK (first_write (100) == 0);       /* again: no I/O at all */
  CHECK (fine_bits_pages_written (fine) == p0);
  CHECK (first_write (10) == 0);        /* region 0: one more sync */
  CHECK (get_count (&syncs_done) == s0 + 2 && file_bit (rd, 4096, 0));
  CHECK (!file_bit (rd, 4096, 2) && !file_bit (rd, 2 * 4096, 71));

  fine_bits_free (fine);
  durable_bits_free (intent);
  close (rd);
  free (zero);
}

int
main (void)
{
  char cmd[64];

  if (mkdtemp (dir) == NULL) {
    perror ("mkdtemp");
    exit (EXIT_FAILURE);
  }
  test_durable ();
  test_fine ();
  test_levels ();
  snprintf (cmd, sizeof cmd, "rm -rf %s", dir);
  if (system (cmd) != 0)
    fprintf (stderr, "cannot remove %s\n", dir);
  UNIT_EXIT ();
}
