/* nbdkit-fleece
 * SPDX-License-Identifier: BSD-3-Clause
 *
 * Frozen views: the checkpoints as they were at a snapshot point.
 *
 * A snapshot's delta view must be exactly the granules changed
 * between a checkpoint and the snapshot point, whatever happens to
 * the checkpoints afterwards: the checkpoint that was recording goes
 * on recording writes made after the point, and deleting a checkpoint
 * merges its bits into the one before it.  So at the snapshot point
 * (cbw holds its gate for writing: no write is in flight and nothing
 * is being marked) the bitmaps the snapshot may need are copied.  A
 * frozen view never changes after freeze returns, so it needs no lock;
 * its owner (the cbw snapshot) frees it when the snapshot ends and no
 * reader can still use it.
 *
 * This is also the one place that decides whether "changes since
 * NAME" may be served for a snapshot and says why not.
 *
 * Memory: one bitmap per checkpoint kept (1 bit per granule: 2 MiB
 * per checkpoint for 1 TiB at 64K); with since=S only S and newer are
 * kept.
 */

#include <config.h>

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <nbdkit-filter.h>

#include "bitset.h"
#include "checkpoints.h"
#include "dirty-bitmap.h"
#include "errors.h"
#include "fleece-api.h"

struct frozen_ckpt {
  char name[FLEECE_NAME_BUF];
  bool preserved;               /* false: older than since= */
  bool consistent;
  struct bitset bits;           /* only if preserved */
};

struct fleece_frozen {
  size_t n;                     /* checkpoints at the point, oldest first */
  struct frozen_ckpt *c;
  char since[FLEECE_NAME_BUF];  /* "" if none */
  uint64_t disk_size;
  uint32_t granularity;
};

void
ckpt_frozen_free (struct fleece_frozen *f)
{
  size_t i;

  if (f == NULL)
    return;
  for (i = 0; i < f->n; i++)
    bitset_free (&f->c[i].bits);
  free (f->c);
  free (f);
}

static ssize_t
frozen_find (const struct fleece_frozen *f, const char *name)
{
  size_t i;

  for (i = 0; i < f->n; i++)
    if (strcmp (f->c[i].name, name) == 0)
      return i;
  return -1;
}

struct fleece_frozen *
ckpt_freeze (const char *since, char **errmsg)
{
  struct fleece_frozen *f = calloc (1, sizeof *f);
  struct checkpoint *c;
  bool preserving = since == NULL;
  size_t n = 0, i;

  if (f == NULL) {
    fleece_errorf (errmsg, "out of memory");
    return NULL;
  }
  ckpt_lock ();
  f->disk_size = db_disk_size;
  f->granularity = db_config.granularity;
  snprintf (f->since, sizeof f->since, "%s", since ? since : "");
  for (c = ckpt_oldest; c; c = c->newer)
    n++;
  f->c = calloc (n ? n : 1, sizeof *f->c);
  if (f->c == NULL) {
    fleece_errorf (errmsg, "out of memory");
    goto err;
  }
  for (c = ckpt_oldest; c; c = c->newer) {
    struct frozen_ckpt *fc = &f->c[f->n++];

    snprintf (fc->name, sizeof fc->name, "%s", c->name);
    fc->consistent = c->consistent;
    if (since && strcmp (c->name, since) == 0)
      preserving = true;
    fc->preserved = preserving;
    if (preserving && bitset_copy (&fc->bits, &c->bits) == -1) {
      fleece_errorf (errmsg, "out of memory for the changed-block maps");
      goto err;
    }
  }
  ckpt_unlock ();
  if (since) {
    ssize_t k = frozen_find (f, since);

    if (k < 0) {
      fleece_errorf (errmsg, "since=%s: no checkpoint named %s", since,
                     since);
      ckpt_frozen_free (f);
      return NULL;
    }
    for (i = k; i < f->n; i++) {
      if (!f->c[i].consistent) {
        fleece_errorf (errmsg, "since=%s: checkpoint %s is not consistent "
                       "(it may have missed writes); take a full snapshot",
                       since, f->c[i].name);
        ckpt_frozen_free (f);
        return NULL;
      }
    }
  }
  return f;

 err:
  ckpt_unlock ();
  ckpt_frozen_free (f);
  return NULL;
}

int
ckpt_frozen_changed_since (const struct fleece_frozen *f, const char *name,
                           uint32_t unit, struct bitset *out, char **errmsg)
{
  const uint64_t g = f->granularity;
  struct bitset u;
  ssize_t k = frozen_find (f, name);
  uint64_t i, end;
  size_t j;

  if (k < 0)
    return fleece_errorf (errmsg, "checkpoint %s did not exist when the "
                          "snapshot was taken, so there is no delta view "
                          "of it", name);
  if (!f->c[k].preserved)
    return fleece_errorf (errmsg, "the snapshot was begun with since=%s, so "
                          "the changes since the older checkpoint %s were "
                          "not preserved; ask for changes since %s or a "
                          "newer checkpoint", f->since, name, f->since);
  for (j = k; j < f->n; j++) {
    if (!f->c[j].consistent)
      return fleece_errorf (errmsg, "checkpoint %s is not consistent (it may "
                            "have missed writes), so the changes since %s "
                            "are not known; take a full backup",
                            f->c[j].name, name);
  }
  if (bitset_copy (&u, &f->c[k].bits) == -1)
    return fleece_errorf (errmsg, "out of memory");
  for (j = k + 1; j < f->n; j++)
    bitset_merge (&u, &f->c[j].bits);
  /* Every unit a run of changed granules overlaps. */
  for (i = bitset_next_set (&u, 0); i < u.nbits;
       i = bitset_next_set (&u, end)) {
    uint64_t u0 = i * g / unit;

    end = bitset_next_clear (&u, i);
    bitset_set_range (out, u0, (end * g + unit - 1) / unit - u0);
  }
  bitset_free (&u);
  return 0;
}

char **
ckpt_frozen_names (const struct fleece_frozen *f)
{
  char **names = calloc (f->n + 1, sizeof *names);
  size_t k, j, n = 0;

  if (names == NULL)
    return NULL;
  /* Servable: preserved, and it and every newer one consistent. */
  for (k = 0; k < f->n; k++) {
    bool ok = f->c[k].preserved;

    for (j = k; ok && j < f->n; j++)
      ok = f->c[j].consistent;
    if (!ok)
      continue;
    names[n] = strdup (f->c[k].name);
    if (names[n] == NULL)
      break;
    n++;
  }
  return names;
}
