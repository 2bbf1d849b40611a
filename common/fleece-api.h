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

#include <nbdkit-filter.h>

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

/* What the cbw filter offers snapshot-access.  The object exported as
 * fleece_cbw_v1 is a struct fleece_cbw_api whose first member is the
 * common part; use fleece_cbw () to get it.
 *
 * A snapshot is named by its id (1, 2, ... in the life of the
 * process).  Calls with an id that is no longer the active snapshot
 * fail with EIO and a message saying the snapshot ended.  Reads of
 * clusters the snapshot does not hold (released, or outside the
 * since= map) and every read of a broken snapshot fail with EPERM
 * (NBD_EPERM on the wire; nbdkit would send EACCES as EINVAL).
 */
#define FLEECE_NAME_BUF 65      /* FLEECE_NAME_MAX + 1 */

struct fleece_snapshot_info {
  uint64_t id;                  /* 0: no snapshot */
  /* Checkpoints with a sequence number >= this one began at or after
   * the snapshot point; changes "since" an older checkpoint up to the
   * snapshot point are those of checkpoints with a smaller number.
   */
  uint64_t checkpoint_limit;
  /* Begun with since=: the sequence number of that checkpoint (delta
   * views of older checkpoints cannot be served), else 0.
   */
  uint64_t since_seq;
  uint64_t size;                /* disk size at the snapshot point */
  int64_t started;              /* time (), UTC */
  uint32_t cluster_size;
  char checkpoint[FLEECE_NAME_BUF]; /* begun with checkpoint=, or "" */
  char since[FLEECE_NAME_BUF];      /* begun with since=, or "" */
};

struct fleece_cbw_api {
  struct fleece_filter_api base;

  /* The active snapshot, or info->id == 0 if there is none. */
  void (*snapshot_info) (struct fleece_snapshot_info *info);
  /* Read the snapshot.  next is a context on the cbw filter's layer
   * (the caller's next), used to read clusters not yet copied.
   */
  int (*snapshot_pread) (uint64_t id, nbdkit_next *next, void *buf,
                         uint32_t count, uint64_t offset, int *err);
  /* base:allocation of the snapshot. */
  int (*snapshot_extents) (uint64_t id, nbdkit_next *next,
                           uint32_t count, uint64_t offset, uint32_t flags,
                           struct nbdkit_extents *extents, int *err);
  /* Release whole clusters inside [offset, offset+count): their target
   * space is freed, they are never copied again and reading them
   * fails with EPERM.
   */
  int (*snapshot_release) (uint64_t id, uint32_t count, uint64_t offset,
                           int *err);
};

/* What the dirty-bitmap filter offers the others.  Exported as
 * fleece_dirty_bitmap_v1, a struct fleece_db_api; use
 * fleece_dirty_bitmap () to get it.  Checkpoints carry sequence
 * numbers that grow with the time they were created.
 */
struct bitmap;

struct fleece_db_api {
  struct fleece_filter_api base;

  /* Sequence number the next checkpoint will get. */
  uint64_t (*next_seq) (void);

  /* Start checkpoint name now.  cbw calls this with its gate held for
   * writing, so no write is in flight and the new checkpoint starts
   * exactly at the snapshot point.  Returns 0, or -1 with *errmsg.
   */
  int (*begin_checkpoint) (const char *name, char **errmsg);

  /* Look up name: its sequence number, and whether it may be trusted
   * (consistent).  Returns 0, or -1 with *errmsg if it does not exist.
   */
  int (*lookup) (const char *name, uint64_t *seq, bool *consistent,
                 char **errmsg);

  /* Set, in out (nbits units of unit bytes, already allocated), every
   * unit that overlaps a granule written since checkpoint name, taking
   * only checkpoints with seq < limit into account.  Returns 0, or -1
   * with *errmsg if name is unknown or inconsistent.
   */
  int (*changed_since) (const char *name, uint64_t limit, uint32_t unit,
                        struct bitmap *out, char **errmsg);

  /* Names of the consistent checkpoints with seq < limit, oldest
   * first, for list_exports: a NULL-terminated malloc'd array of
   * malloc'd strings, or NULL on allocation failure.
   */
  char **(*names) (uint64_t limit);

  uint32_t (*granularity) (void);
};

/* Find a project filter loaded in this nbdkit process, or NULL. */
extern const struct fleece_filter_api *fleece_find (enum fleece_filter_id id);

/* Name of a filter as written after --filter=. */
extern const char *fleece_filter_name (enum fleece_filter_id id);

/* The cbw and dirty-bitmap filters' full interfaces, or NULL. */
extern const struct fleece_cbw_api *fleece_cbw (void);
extern const struct fleece_db_api *fleece_dirty_bitmap (void);

#endif /* FLEECE_API_H */
