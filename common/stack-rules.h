/* nbdkit-fleece
 * SPDX-License-Identifier: BSD-3-Clause
 *
 * Which stacks of filters are supported (docs/supported-stacks.md
 * gives the reasons).  See stack-rules.c.
 */

#ifndef FLEECE_STACK_RULES_H
#define FLEECE_STACK_RULES_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include <nbdkit-filter.h>

#include "fleece-api.h"

/* Decide whether the filters (short names, top first, as nbdkit
 * stacks them) form a supported stack.  present[id] says which of the
 * project's filters nbdkit loaded.  Returns NULL if the stack is
 * supported, else a malloc'd one-line reason.  Pure: unit-tested.
 */
extern char *fleece_stack_verdict (char *const *filters, size_t n,
                                   const bool present[FLEECE_NR_FILTERS]);

struct fleece_cmdline;
/* The same for the plugin and the files its arguments name: one disk
 * for every export name; cbw-target, bitmap-file and the disk are three
 * different files.
 */
extern char *fleece_plugin_verdict (const struct fleece_cmdline *c);

/* The verdict for this nbdkit process; -1 after nbdkit_error. */
extern int fleece_check_stack (void);

/* Export names reserved for snapshots and their delta views: the
 * default name "snapshot" and the configured one (snapshot_export, may
 * be NULL), alone or followed by "/" or "@".  Such a name must never
 * reach the plugin as the live disk.
 */
extern bool fleece_reserved_export (const char *name,
                                    const char *snapshot_export);

/* The .open of a project filter that serves only the live disk
 * (dirty-bitmap, stream): without snapshot-access above, nothing serves
 * the snapshot names, so they are refused rather than handing the live
 * disk to a client that asked for a snapshot.  Otherwise it opens the
 * layer below under the same name.
 */
extern void *fleece_open_without_snapshots (nbdkit_next_open *next,
                                            nbdkit_context *nxdata,
                                            int readonly,
                                            const char *exportname);

#endif /* FLEECE_STACK_RULES_H */
