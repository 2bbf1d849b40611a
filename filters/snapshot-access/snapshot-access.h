/* nbdkit-fleece
 * SPDX-License-Identifier: BSD-3-Clause
 *
 * The snapshot-access filter: shared declarations.
 */

#ifndef FLEECE_SNAPSHOT_ACCESS_H
#define FLEECE_SNAPSHOT_ACCESS_H

#include <stdbool.h>

#include <stdint.h>

#include <nbdkit-filter.h>

#include "bitset.h"
#include "fleece-api.h"

/* Parameters.  Written only during nbdkit's single-threaded start-up,
 * read-only afterwards, so no lock.
 */
struct sa_config {
  char *export_name;            /* snapshot-export, default "snapshot" */
  bool discard;                 /* snapshot-discard */
};

extern struct sa_config sa_config;

/* Longest export name NBD allows. */
#define SA_EXPORT_NAME_MAX 4096
/* The delta views are EXPORT + SA_SINCE + checkpoint name. */
#define SA_SINCE "/since/"

extern int sa_config_key (const char *key, const char *value);
extern int sa_config_check (void);
extern void sa_config_free (void);

/* How an export name maps onto the views this filter serves. */
enum sa_view {
  SA_VIEW_LIVE,                 /* anything else: passed down */
  SA_VIEW_SNAPSHOT,             /* the point-in-time view */
  SA_VIEW_DELTA,                /* EXPORT/since/NAME */
  SA_VIEW_REFUSED,              /* reserved for snapshots, served by none */
};
/* Classify name.  For the snapshot views, snap (FLEECE_NAME_BUF
 * bytes) gets the snapshot's name ("" for the default one); for
 * SA_VIEW_DELTA *checkpoint points into name.
 */
extern enum sa_view sa_classify (const char *name, char *snap,
                                 const char **checkpoint);

/* The cbw filter below us; set by .get_ready, read-only afterwards. */
extern const struct fleece_cbw_api *cbw;

/* Per connection.  Written by .open, read-only afterwards. */
struct handle {
  enum sa_view view;
  uint64_t id;                  /* the snapshot, for both views */
  char snap[FLEECE_NAME_BUF];   /* its name, "" for the default one */
  uint64_t size;
  /* SA_VIEW_DELTA: one bit per granule of `unit` bytes, set where the
   * disk changed between the checkpoint and the snapshot point.
   */
  struct bitset changed;
  uint32_t unit;
  uint64_t hold;                /* dirty-bitmap's hold on the checkpoint */
  const char *checkpoint;       /* SA_VIEW_DELTA: its name (interned) */
};


/* snapshot-access.c */
extern int check_alive (const struct handle *h, int *err);

/* describe.c: what nbdinfo shows for the views. */
extern const char *describe_snapshot (const struct fleece_snapshot_info *info);
extern const char *describe_delta (const struct fleece_snapshot_info *info,
                                   const char *name);
extern int sa_list_exports (nbdkit_next_list_exports *next,
                            nbdkit_backend *nxdata, int readonly, int is_tls,
                            struct nbdkit_exports *exports);

/* delta.c: the delta views. */
extern int open_delta (struct handle *h,
                       const struct fleece_snapshot_info *info,
                       const char *name);
extern int delta_pread (struct handle *h, nbdkit_next *next, char *buf,
                        uint32_t count, uint64_t offset, int *err);
extern int delta_extents (struct handle *h, uint32_t count, uint64_t offset,
                          uint32_t flags, struct nbdkit_extents *extents,
                          int *err);

#define SA_CONFIG_HELP                                                  \
  "snapshot-export=NAME       Export name of the snapshot (default\n"   \
  "                           \"snapshot\").\n"                         \
  "snapshot-discard=BOOL      Let providers TRIM the snapshot export\n" \
  "                           to release regions (default false).\n"    \
  "control=SOCKET             Control socket for the whole stack."

#endif /* FLEECE_SNAPSHOT_ACCESS_H */
