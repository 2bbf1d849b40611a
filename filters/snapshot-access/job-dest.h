/* nbdkit-fleece
 * SPDX-License-Identifier: BSD-3-Clause
 *
 * The destination of a backup job: a local file written with pwrite,
 * or an NBD export reached with libnbd.
 *
 * Every function but dest_open and dest_close may be called from
 * several threads at once (the job's workers); each call blocks until
 * its request is done on the target.  Errors come back as a malloc'd
 * message naming the target, the offset and the reason, fit for the
 * job's "error" field.
 */

#ifndef FLEECE_SA_JOB_DEST_H
#define FLEECE_SA_JOB_DEST_H

#include <stdbool.h>
#include <stdint.h>

struct job_dest;

/* Is target an NBD URI (else a file path)? */
extern bool dest_is_uri (const char *target);

/* Open target for a backup of a disk of size bytes, changing nothing
 * yet.  full: a file is created (mode 0600) if missing, and is
 * truncated to zero by dest_prepare_full, not here; incremental: the
 * file or export must exist and hold at least size bytes.  Files are
 * never opened through a symbolic link and must be regular files.
 * NBD exports must be writable and at least size bytes.  Returns NULL
 * with *errmsg.
 */
extern struct job_dest *dest_open (const char *target, bool full,
                                   uint64_t size, char **errmsg);

/* Whether the target reads as zeroes everywhere before the job writes:
 * a file after dest_prepare_full, or an NBD export declared so by
 * the user (target-zeroed=true).
 */
extern bool dest_starts_zeroed (const struct job_dest *d);
extern void dest_declare_zeroed (struct job_dest *d);

/* A full backup's file target: truncate to zero, then extend (sparse)
 * to size bytes, so everything not written reads as zeroes.  No-op
 * for NBD.
 */
extern int dest_prepare_full (struct job_dest *d, uint64_t size,
                              char **errmsg);

extern int dest_write (struct job_dest *d, const void *buf, uint32_t count,
                       uint64_t offset, char **errmsg);
/* Make [offset, offset+count) read as zeroes: NBD WRITE_ZEROES (or
 * zero data if the export cannot), a punched hole in a file (or zero
 * data if the file system cannot).
 */
extern int dest_zero (struct job_dest *d, uint64_t count, uint64_t offset,
                      char **errmsg);
/* Make everything written durable (fdatasync, NBD FLUSH). */
extern int dest_flush (struct job_dest *d, char **errmsg);

/* If the file was created by dest_open and the job never started,
 * remove it again (nothing changed on bad input).
 */
extern void dest_discard_created (struct job_dest *d);
extern void dest_close (struct job_dest *d);

#endif /* FLEECE_SA_JOB_DEST_H */
