/* nbdkit-fleece
 * SPDX-License-Identifier: BSD-3-Clause
 *
 * The cbw (copy-before-write) filter: shared declarations.
 */

#ifndef FLEECE_CBW_H
#define FLEECE_CBW_H

#include <stdbool.h>
#include <stdint.h>

enum cbw_target_kind {
  CBW_TARGET_TEMP,              /* unlinked sparse file in $TMPDIR */
  CBW_TARGET_FILE,              /* cbw-target=PATH */
  CBW_TARGET_NBD,               /* cbw-target=URI */
};

enum cbw_on_error {
  CBW_BREAK_GUEST_WRITE,
  CBW_BREAK_SNAPSHOT,
};

/* Parameters.  Written only by .config/.config_complete (nbdkit's
 * single-threaded start-up), read-only afterwards, so no lock.
 */
struct cbw_config {
  enum cbw_target_kind target_kind;
  char *target;                 /* absolute path or URI; NULL for TEMP */
  uint32_t cluster_size;
  enum cbw_on_error on_error;
  uint64_t timeout;             /* seconds, 0 = none */
  uint64_t target_limit;        /* bytes all snapshots may hold, 0 = none */
  uint64_t buffer;              /* cbw-buffer bytes, 0 = off */
};

extern struct cbw_config cbw_config;

extern int cbw_config_key (const char *key, const char *value);
extern int cbw_config_check (void);
extern void cbw_config_free (void);
extern const char *cbw_on_error_name (enum cbw_on_error e);
extern const char *cbw_target_kind_name (enum cbw_target_kind k);

#define CBW_CONFIG_HELP                                                 \
  "cbw-target=PATH|URI        Fleecing store: file or NBD URI\n"        \
  "                           (default: unlinked temporary file).\n"    \
  "cbw-cluster-size=SIZE      Copy granularity (default 64K).\n"        \
  "cbw-on-error=break-guest-write|break-snapshot\n"                     \
  "                           What a failed copy does.\n"               \
  "cbw-timeout=SECONDS        Longest a copy may take (default 0: none).\n" \
  "cbw-target-limit=SIZE      Most bytes the snapshots may hold in the\n" \
  "                           target (default: no limit).\n"          \
  "cbw-buffer=SIZE            Memory for copies on their way to the\n" \
  "                           target (default 0: none).\n"            \
  "control=SOCKET             Control socket for the whole stack."

#endif /* FLEECE_CBW_H */
