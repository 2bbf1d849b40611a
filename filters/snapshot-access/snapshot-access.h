/* nbdkit-fleece
 * SPDX-License-Identifier: BSD-3-Clause
 *
 * The snapshot-access filter: shared declarations.
 */

#ifndef FLEECE_SNAPSHOT_ACCESS_H
#define FLEECE_SNAPSHOT_ACCESS_H

#include <stdbool.h>

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

#define SA_CONFIG_HELP                                                  \
  "snapshot-export=NAME       Export name of the snapshot (default\n"   \
  "                           \"snapshot\").\n"                         \
  "snapshot-discard=BOOL      Let providers TRIM the snapshot export\n" \
  "                           to release regions (default false).\n"    \
  "control=SOCKET             Control socket for the whole stack."

#endif /* FLEECE_SNAPSHOT_ACCESS_H */
