/* nbdkit-fleece
 * SPDX-License-Identifier: BSD-3-Clause
 *
 * Checkpoints on disk (bitmap-file=).  The format is described in
 * persist.c and in nbdkit-dirty-bitmap-filter(1).
 */

#ifndef FLEECE_DB_PERSIST_H
#define FLEECE_DB_PERSIST_H

#include <stdbool.h>

/* At get_ready (before nbdkit forks, before any tracking): lock
 * PATH.lock for the life of the process, read the file and refuse a
 * file of another disk (bitmap-disk-id=).  Returns -1 (reported) if
 * the server must not start.
 */
extern int persist_get_ready (void);

/* At after_fork, once the disk size is known: load the file if there is
 * one (anything doubtful is reported and marks checkpoints
 * inconsistent, never trusted), then mark it in use.  Returns -1 only
 * if the file cannot be written.
 */
extern int persist_load (void);

/* Write every checkpoint atomically (temporary file, fsync, rename).
 * in_use: nbdkit is running and the bits in the file are not final.
 * Caller holds the checkpoint gate for writing, or runs single-
 * threaded.  Without bitmap-file= it does nothing.
 */
extern int persist_save (bool in_use, char **errmsg);

#endif /* FLEECE_DB_PERSIST_H */
