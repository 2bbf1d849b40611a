/* nbdkit-fleece
 * SPDX-License-Identifier: BSD-3-Clause
 *
 * One server per file: exclusive, whole-file open file description
 * locks (fcntl F_OFD_SETLK), held for the life of the process.
 *
 * OFD locks belong to the open file description, not to the process:
 * they survive nbdkit's fork into the background (the child inherits
 * the description), they are released only when the last descriptor
 * of it is closed (or the process dies, even by kill -9), and two
 * descriptors opened separately conflict even inside one process.
 *
 * The kernel does not say who holds an OFD lock (/proc/locks and
 * F_OFD_GETLK give pid -1), so the holder writes its pid as text into
 * the lock file after taking the lock; a refused server reads it back
 * for its error message.
 *
 * These functions do no nbdkit calls: errors come back in *errmsg
 * (malloc'd, one line naming WHAT=PATH and what to do).
 */

#ifndef FLEECE_FILELOCK_H
#define FLEECE_FILELOCK_H

/* Lock the side file PATH.lock, for files that are replaced by
 * rename() (a lock on their inode would be lost at the first save).
 * PATH.lock is created 0600 if needed, never through a symlink, must
 * be a regular file, and is never replaced or removed (removing it
 * would let two servers lock two different inodes).
 *
 * what: the parameter name, e.g. "bitmap-file"; thing: what two
 * servers must not share, e.g. "bitmap file".
 *
 * Returns the locked descriptor (close-on-exec; keep it open to hold
 * the lock), or -1 with *errmsg set: if another open file description
 * holds the lock, "WHAT=PATH: in use by another nbdkit (pid N); two
 * servers must never share a THING".
 */
extern int filelock_side (const char *what, const char *path,
                          const char *thing, char **errmsg);

/* Lock the already open fd of PATH itself (a file that is never
 * replaced, or a block device).  If it is held elsewhere the error
 * names the holder's pid if PATH.lock (as written by filelock_side)
 * says it.  Returns 0 or -1 with *errmsg set.
 */
extern int filelock_fd (const char *what, const char *path, int fd,
                        const char *thing, char **errmsg);

/* Write the calling process's pid into the lock file lockfd (from
 * filelock_side), replacing what was there.  Call again after a fork
 * in the process that keeps the lock.  Returns 0 or -1 (errno).
 */
extern int filelock_write_pid (int lockfd);

/* The pid recorded in PATH.lock, or -1 if there is none.  */
extern long filelock_holder (const char *path);

#endif /* FLEECE_FILELOCK_H */
