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
 *   const struct fleece_filter_api fleece_stream_v1;
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

#include "ctl-parse.h"
#include "json.h"

enum fleece_filter_id {
  FLEECE_SNAPSHOT_ACCESS = 0,   /* top of the supported stack */
  FLEECE_CBW = 1,
  FLEECE_DIRTY_BITMAP = 2,
  FLEECE_STREAM = 3,            /* bottom: directly above the plugin */
  FLEECE_NR_FILTERS = 4,
};

/* One control command of a filter.  The dispatcher (ctl-dispatch.c)
 * finds the row by name in the tables of the loaded filters, checks
 * the request against keys and words (ctl_request_check), and only
 * then calls handler, so a handler sees only keys it accepts.  Adding
 * a command is one row and one handler in one filter, e.g. in cbw.c:
 *
 *   static const char *const resume_keys[] = { "force", NULL };
 *   ...
 *   { "resume", resume_keys, 0, "let held guest writes go on",
 *     do_resume },
 */
struct fleece_command {
  const char *name;             /* NULL ends a table */
  const char *const *keys;      /* key=value keys, NULL-terminated; NULL: none */
  size_t words;                 /* at most this many bare words */
  const char *help;             /* one line, for the help command */
  /* Same conventions as ctl_handler (control.h). */
  int (*handler) (const struct ctl_request *req, struct jbuf *reply,
                  char **errmsg);
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
   * with a comma (e.g. ,"snapshot":{...}).  May be NULL.  Called on
   * the control server's thread, never beside another command.  When
   * the filter is not loaded, its row in fleece_filter_rows says what
   * stands in for these members.
   */
  void (*status) (struct jbuf *reply);

  /* The control commands this filter owns, ended by a row whose name
   * is NULL.  May be NULL.
   */
  const struct fleece_command *commands;
};

/* What the project knows of each of its filters whether or not it is
 * loaded: the list lives outside common/ (filters/stack-table.c,
 * linked into every filter module), so that nothing in common/ names
 * a filter's parameters or status members.  A new filter (stream)
 * adds its id above and one row there.
 */
struct fleece_filter_row {
  enum fleece_filter_id id;
  const char *name;             /* as written after --filter= */
  const char *symbol;           /* its exported struct fleece_filter_api */
  /* Members of the status reply when the filter is not loaded, so
   * that status always carries the keys of the contract (e.g.
   * ,"checkpoints":[]), or NULL.
   */
  const char *absent_status;
  /* Is key one of the filter's parameters?  Routes parameters, and
   * tells the user which --filter a parameter needs when that filter
   * is not loaded (so it cannot be asked through its API).
   */
  bool (*owns_param) (const char *key);
};

/* FLEECE_NR_FILTERS rows, in the order their members appear in the
 * status reply.  Defined in filters/stack-table.c.
 */
extern const struct fleece_filter_row fleece_filter_rows[FLEECE_NR_FILTERS];

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
  char name[FLEECE_NAME_BUF];   /* "" for the default snapshot */
  uint64_t size;                /* disk size at the snapshot point */
  int64_t started;              /* time (), UTC */
  char checkpoint[FLEECE_NAME_BUF]; /* begun with checkpoint=, or "" */
  char since[FLEECE_NAME_BUF];      /* begun with since=, or "" */
};

struct bitset;

struct fleece_cbw_api {
  struct fleece_filter_api base;

  /* The active snapshot called name ("" for the default one), or
   * info->id == 0 if there is none.
   */
  void (*snapshot_info) (const char *name,
                         struct fleece_snapshot_info *info);
  /* The names of the active snapshots ("" for the default one): a
   * NULL-terminated malloc'd array of malloc'd strings, or NULL.
   */
  char **(*snapshot_names) (void);
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
  /* The delta view of snapshot id since checkpoint name, as it was at
   * the snapshot point whatever happened to the checkpoints since: set
   * in out (already sized) every unit of unit bytes that changed.
   * Returns 0, or -1 with *errmsg saying why it cannot be served.
   */
  int (*snapshot_changed_since) (uint64_t id, const char *name,
                                 uint32_t unit, struct bitset *out,
                                 char **errmsg);
  /* Checkpoints whose delta view snapshot id can serve, oldest first:
   * a NULL-terminated malloc'd array of malloc'd strings, or NULL.
   */
  char **(*snapshot_delta_names) (uint64_t id);

  /* For internal callers (backup jobs), outside the control socket:
   * begin a snapshot exactly as snapshot-begin [checkpoint=]
   * [since=] would, as the named snapshot owner (e.g. "backup-1"), and
   * end it.  While it is active, the user's snapshot-end of it is
   * refused with a message naming the owner; other snapshots are not
   * affected.  These
   * may be called from any thread: cbw serialises them with the
   * control commands snapshot-begin and snapshot-end (cbw.c,
   * begin_end_lock).  snapshot_begin_owned returns the snapshot id, or
   * 0 with *errmsg; snapshot_end_owned ends snapshot id (if it is
   * still active) and returns 0, or -1 with *errmsg (the snapshot then
   * stays active but is no longer owned, so the user can end it with
   * snapshot-end name=owner once the disk answers again).
   */
  uint64_t (*snapshot_begin_owned) (const char *owner, const char *checkpoint,
                                    const char *since, char **errmsg);
  int (*snapshot_end_owned) (uint64_t id, char **errmsg);
  /* The disk's size as the latest context opened on it saw it (the
   * size the next snapshot takes), or -1 if not known yet.
   */
  int64_t (*disk_size) (void);
};

/* What the dirty-bitmap filter offers the others.  Exported as
 * fleece_dirty_bitmap_v1, a struct fleece_db_api; use
 * fleece_dirty_bitmap () to get it.
 */
struct fleece_frozen;           /* changes up to a snapshot point */

enum fleece_hold {
  FLEECE_HOLD_SINCE,            /* an active snapshot begun with since= */
  FLEECE_HOLD_VIEW,             /* an open connection to a delta view */
};

struct fleece_db_api {
  struct fleece_filter_api base;

  /* The checkpoints as they are now, fixed for a snapshot taken now:
   * cbw calls this with its gate held for writing, so no write is in
   * flight and nothing is marked while it copies.  With since (may be
   * NULL), since must exist and be consistent, and only changes since
   * it are kept.  NULL with *errmsg on failure.
   */
  struct fleece_frozen *(*freeze) (const char *since, char **errmsg);
  void (*frozen_free) (struct fleece_frozen *f);

  /* The one rule for delta views: may changes since name be served
   * from f, and which.  Sets in out (already sized, units of unit
   * bytes) every unit that overlaps a granule changed between
   * checkpoint name and f's point.  Returns 0, or -1 with *errmsg
   * (unknown, began later, not preserved with since=, inconsistent).
   */
  int (*changed_since) (const struct fleece_frozen *f, const char *name,
                        uint32_t unit, struct bitset *out, char **errmsg);
  /* Names changed_since would serve from f, oldest first, as
   * snapshot_delta_names.
   */
  char **(*names) (const struct fleece_frozen *f);

  /* Start checkpoint name now.  cbw calls this with its gate held for
   * writing, so the new checkpoint starts exactly at the snapshot
   * point.  Returns 0, or -1 with *errmsg.
   */
  int (*begin_checkpoint) (const char *name, char **errmsg);

  /* Hold checkpoint name so that checkpoint-delete refuses it until
   * the matching unhold.  Returns a token for unhold, 0 if there is no
   * such checkpoint (then there is nothing to release).
   */
  uint64_t (*hold) (const char *name, enum fleece_hold why);
  void (*unhold) (uint64_t token, enum fleece_hold why);

  uint32_t (*granularity) (void);

  /* checkpoint-delete NAME for internal callers (a failed or
   * cancelled backup job merges back the checkpoint it started, so
   * "since" the checkpoint before still covers every change).
   * Returns 0, or -1 with *errmsg (e.g. no such checkpoint).
   */
  int (*delete_checkpoint) (const char *name, char **errmsg);
  /* begin_checkpoint for a backup job's snapshot: the checkpoint stays
   * provisional, also in the bitmap file, until confirm_checkpoint
   * (the job completed); one still provisional when nbdkit starts
   * again is merged back, as a failed job's is.
   */
  int (*begin_checkpoint_provisional) (const char *name, char **errmsg);
  int (*confirm_checkpoint) (const char *name, char **errmsg);
};

/* What the snapshot-access filter offers the others.  Exported as
 * fleece_snapshot_access_v1, a struct fleece_sa_api; use
 * fleece_snapshot_access () to get it.
 */
struct fleece_sa_api {
  struct fleece_filter_api base;

  /* End every running backup job as failed with reason why, and wait
   * until it has ended its snapshot and merged back its checkpoint.
   * Every project filter's .cleanup calls this (common/glue.c) before
   * the filter tears down (dirty-bitmap before it saves bitmap-file),
   * so the order in which nbdkit runs the filters' .cleanup does not
   * matter.
   * Idempotent; a no-op when no job runs.
   */
  void (*stop_jobs) (const char *why);
};

/* Find a project filter loaded in this nbdkit process, or NULL. */
extern const struct fleece_filter_api *fleece_find (enum fleece_filter_id id);

/* The row of a filter, and its name as written after --filter=. */
extern const struct fleece_filter_row *fleece_filter_row
  (enum fleece_filter_id id);
extern const char *fleece_filter_name (enum fleece_filter_id id);

/* The cbw and dirty-bitmap filters' full interfaces, or NULL. */
extern const struct fleece_cbw_api *fleece_cbw (void);
extern const struct fleece_db_api *fleece_dirty_bitmap (void);
extern const struct fleece_sa_api *fleece_snapshot_access (void);

#endif /* FLEECE_API_H */
