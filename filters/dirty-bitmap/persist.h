/* nbdkit-fleece
 * SPDX-License-Identifier: BSD-3-Clause
 *
 * Checkpoints on disk (bitmap-file=).  The format is described in
 * persist.c and in nbdkit-dirty-bitmap-filter(1).
 */

#ifndef FLEECE_DB_PERSIST_H
#define FLEECE_DB_PERSIST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "json.h"

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

/* Saving is two steps, so that the file I/O runs outside the gate:
 *
 * persist_snapshot encodes the chain into img (caller holds the gate
 * for writing, or runs single-threaded); with write-ahead tracking it
 * also begins the switch to the new file: from then on writers wait
 * until persist_write has put it in place (or failed, and they go on
 * in the old file).
 *
 * persist_write writes img atomically (temporary file, fsync, rename,
 * fsync of the directory), ends the switch and frees img.  Callers
 * serialise whole saves (checkpoints.c: save_lock), so files reach the
 * disk in the order their snapshots were taken.
 *
 * in_use: nbdkit is running and the bits in the file are not final.
 * Without bitmap-file= both do nothing.
 */
struct persist_image {
  unsigned char *buf;
  size_t len;
  uint64_t live_offset, intent_offset, nbits;
  bool switching;
};
extern int persist_snapshot (bool in_use, struct persist_image *img,
                             char **errmsg);
extern int persist_write (struct persist_image *img, char **errmsg);
/* Both at once (single-threaded, or the caller holds the gate and
 * accepts the I/O under it).
 */
extern int persist_save (bool in_use, char **errmsg);

/* Write-ahead: wait until granules [first, first + n) of the newest
 * checkpoint are durable in the file.  0 at once in clean-stop mode;
 * -1 (errno EIO) if the file cannot be written.
 */
extern int persist_wait (uint64_t first, uint64_t n);

/* The "bitmap_file" object of status (nothing without bitmap-file=). */
extern void persist_status (struct jbuf *reply);

/* At cleanup, after the last save: stop write-ahead tracking. */
extern void persist_stop (void);

#endif /* FLEECE_DB_PERSIST_H */
