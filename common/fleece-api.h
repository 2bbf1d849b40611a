/* nbdkit-fleece
 * SPDX-License-Identifier: BSD-3-Clause
 *
 * The internal interface between the project's own filters.
 *
 * Choice: each filter exports one versioned, read-only symbol,
 *
 *   const struct fleece_filter_api fleece_cbw_v1;
 *   const struct fleece_filter_api fleece_snapshot_access_v1;
 *   const struct fleece_filter_api fleece_dirty_bitmap_v1;
 *
 * nbdkit loads filters with RTLD_GLOBAL, so any filter finds the
 * others with dlsym (RTLD_DEFAULT, name) whatever the order on the
 * command line, from .config on (all filters are loaded before the
 * first .config call).  Everything else in a filter is hidden by
 * filters/filters.syms, so the copies of common/ linked into each
 * filter never interpose on each other.  The symbol name carries the
 * version: an incompatible change gets a new name (fleece_cbw_v2), so
 * a mix of filters from different builds finds nothing instead of
 * something wrong.  Reserved export names were the other option; they
 * would let any NBD client reach internal views, which this avoids.
 *
 * All functions here may be called from any thread.  Each filter
 * documents the locks behind them.
 */

#ifndef FLEECE_API_H
#define FLEECE_API_H

#include <stdbool.h>
#include <stdint.h>

#include "control.h"
#include "json.h"

enum fleece_filter_id {
  FLEECE_SNAPSHOT_ACCESS = 0,   /* top of the supported stack */
  FLEECE_CBW = 1,
  FLEECE_DIRTY_BITMAP = 2,      /* bottom */
  FLEECE_NR_FILTERS = 3,
};

struct fleece_filter_api {
  uint32_t size;                /* sizeof (struct fleece_filter_api) */
  enum fleece_filter_id id;
  const char *name;             /* "cbw", ... */

  /* True once this filter's .config_complete has started.  nbdkit runs
   * .config_complete from the top of the stack down, so the filters
   * that answer true when another one starts are above it.
   */
  bool (*config_started) (void);

  /* Append this filter's members of the status reply, each beginning
   * with a comma (e.g. ,"snapshot":{...}).  May be NULL.  Called with
   * the control server's dispatch lock held.
   */
  void (*status) (struct jbuf *reply);

  /* Handle a control command owned by this filter (see the table in
   * common/ctl-dispatch.c).  Same conventions as ctl_handler.  May be
   * NULL.
   */
  int (*command) (const struct ctl_request *req,
                  struct jbuf *reply, char **errmsg);
};

/* Find a project filter loaded in this nbdkit process, or NULL. */
extern const struct fleece_filter_api *fleece_find (enum fleece_filter_id id);

/* Name of a filter as written after --filter=. */
extern const char *fleece_filter_name (enum fleece_filter_id id);

#endif /* FLEECE_API_H */
