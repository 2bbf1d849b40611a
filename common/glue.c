/* nbdkit-fleece
 * SPDX-License-Identifier: BSD-3-Clause
 *
 * The start-up and shutdown sequence of every project filter (see
 * glue.h for the order of things and for why there is no lock).
 */

#include <config.h>

#include <errno.h>
#include <string.h>

#include <nbdkit-filter.h>

#include "backend.h"
#include "ctl-owner.h"
#include "glue.h"
#include "params.h"
#include "stack-rules.h"

void
fleece_glue_load (struct fleece_glue *g)
{
  g->load_count++;
  if (g->load)
    g->load ();
}

void
fleece_glue_unload (struct fleece_glue *g)
{
  fleece_control_cleanup ();
  if (g->unload)
    g->unload ();
}

/* "control" is taken by the first project filter that sees it; a
 * parameter of another project filter is passed down if that filter
 * is loaded and refused with a clear message if it is not; anything
 * else goes down the stack unchanged.
 */
int
fleece_glue_config (struct fleece_glue *g, nbdkit_next_config *next,
                    nbdkit_backend *nxdata, const char *key,
                    const char *value)
{
  int r = g->config ? g->config (key, value) : 0, owner;

  if (r != 0)
    return r == 1 ? 0 : -1;
  if (strcmp (key, "control") == 0)
    return fleece_control_config (key, value);

  owner = fleece_param_owner (key);
  if (owner >= 0 && fleece_find (owner) == NULL) {
    nbdkit_error ("%s: this parameter belongs to the %s filter, which is "
                  "not in the stack; add --filter=%s",
                  key, fleece_filter_name (owner), fleece_filter_name (owner));
    return -1;
  }
  return next (nxdata, key, value);
}

/* Refuses a filter given twice (nbdkit loads the same module once per
 * --filter) and an unsupported stack order, and checks the control
 * socket's directory, before the filter's own checks.
 */
int
fleece_glue_config_complete (struct fleece_glue *g,
                             nbdkit_next_config_complete *next,
                             nbdkit_backend *nxdata)
{
  int id;

  g->config_started = true;
  if (g->load_count > 1) {
    nbdkit_error ("--filter=%s is given more than once; one is enough",
                  fleece_filter_name (g->id));
    return -1;
  }
  if (fleece_check_stack () == -1)
    return -1;

  for (id = 0; id < FLEECE_NR_FILTERS; id++) {
    const struct fleece_filter_api *other = fleece_find (id);

    /* A filter whose .config_complete already started is above us:
     * that is only supported if it comes before us in the order
     * snapshot-access, cbw, dirty-bitmap.
     */
    if (id == (int) g->id || other == NULL || !other->config_started ())
      continue;
    if (id > (int) g->id) {
      nbdkit_error ("unsupported filter order: --filter=%s must come "
                    "before --filter=%s (the supported order is "
                    "--filter=snapshot-access --filter=cbw "
                    "--filter=dirty-bitmap)",
                    fleece_filter_name (g->id), fleece_filter_name (id));
      return -1;
    }
  }
  if (fleece_control_config_complete () == -1 ||
      (g->config_check && g->config_check () == -1))
    return -1;
  return next (nxdata);
}

int
fleece_glue_get_ready (struct fleece_glue *g)
{
  if (g->get_ready && g->get_ready () == -1)
    return -1;
  return fleece_control_get_ready ();
}

int
fleece_glue_after_fork (struct fleece_glue *g, nbdkit_backend *backend)
{
  if (g->after_fork && g->after_fork (backend) == -1)
    return -1;
  return fleece_control_after_fork ();
}

/* No control command arrives any more; a backup job reads snapshots
 * through cbw and merges back its checkpoint in dirty-bitmap, so the
 * jobs end before any filter cleans up (the first .cleanup to run
 * stops them, the others find nothing to stop).
 */
void
fleece_glue_cleanup (struct fleece_glue *g)
{
  const struct fleece_sa_api *sa;

  fleece_control_cleanup ();
  sa = fleece_snapshot_access ();
  if (sa)
    sa->stop_jobs ("nbdkit is shutting down");
  if (g->cleanup)
    g->cleanup ();
}

int64_t
fleece_glue_disk_size (enum fleece_filter_id id, nbdkit_backend *backend)
{
  int64_t size = fleece_disk_size (backend);

  if (size == -1)
    nbdkit_error ("%s: cannot find the size of the disk",
                  fleece_filter_name (id));
  return size;
}

int
fleece_next_write (nbdkit_next *next, enum fleece_write_op op,
                   const void *buf, uint32_t count, uint64_t offset,
                   uint32_t flags, int *err)
{
  switch (op) {
  case FLEECE_OP_WRITE:
    return next->pwrite (next, buf, count, offset, flags, err);
  case FLEECE_OP_ZERO:
    return next->zero (next, count, offset, flags, err);
  case FLEECE_OP_TRIM:
    return next->trim (next, count, offset, flags, err);
  }
  *err = EINVAL;
  return -1;
}
