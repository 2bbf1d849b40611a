/* nbdkit-fleece
 * SPDX-License-Identifier: BSD-3-Clause
 *
 * The interface every target backend and layer implements (see the
 * picture in target.h).  Only target*.c include this.
 *
 * A target is an ops table and the state it works on.  A backend
 * (file, NBD) stores the bytes; a layer (the coming cbw-buffer)
 * implements the same ops on top of the target in `below`, which it
 * owns and closes.  Constructors are per kind (target_file_open,
 * target_nbd_open, later target_buffer_open (below, ...)) because
 * each takes different arguments; everything after construction goes
 * through the table.
 *
 * Conventions for every op:
 * - Errors come back as an errno value in *err (ETIMEDOUT when the
 *   deadline passed), or as a malloc'd one-line message in *errmsg
 *   naming cbw-target= and what to do, never both.
 * - deadline is a CLOCK_MONOTONIC time, or NULL for none.  target.c
 *   decides the deadlines; backends only honour them.
 * - begin, end, after_fork and close are serialised by the caller
 *   (see target.h); write, read and release may run from many threads
 *   at once, between a begin and its end.
 */

#ifndef FLEECE_CBW_TARGET_OPS_H
#define FLEECE_CBW_TARGET_OPS_H

#include <stdint.h>
#include <time.h>

struct target;
struct jbuf;

struct target_ops {
  const char *name;             /* "file", "nbd", ... for debug messages */

  /* In the process that serves, after nbdkit's fork.  May be NULL. */
  void (*after_fork) (struct target *t);
  /* Release everything and free t (and, for a layer, t->below). */
  void (*close) (struct target *t);

  /* A snapshot of size bytes begins: make the target empty and able
   * to hold size bytes.  Returns 0, or -1 with *errmsg.
   */
  int (*begin) (struct target *t, uint64_t size,
                const struct timespec *deadline, char **errmsg);
  /* The snapshot ended: give back all space, best effort. */
  void (*end) (struct target *t, const struct timespec *deadline);
  /* Bytes the target can hold after begin (UINT64_MAX: grows as
   * needed).  Serialised like begin.
   */
  uint64_t (*capacity) (struct target *t);

  /* Store / fetch count bytes at offset.  Return 0, or -1 with *err.
   * A read of bytes never written returns zeroes.
   */
  int (*write) (struct target *t, const void *buf, uint32_t count,
                uint64_t offset, const struct timespec *deadline, int *err);
  int (*read) (struct target *t, void *buf, uint32_t count,
               uint64_t offset, const struct timespec *deadline, int *err);
  /* Give back the space of [offset, offset+count): afterwards its
   * contents are unspecified.  A target that cannot free space
   * returns 0.  Returns -1 with *err if it tried and failed.
   */
  int (*release) (struct target *t, uint64_t offset, uint64_t count,
                  const struct timespec *deadline, int *err);

  /* Optional (NULL in a backend): memory of the layer to fill and pass
   * to write, which then keeps it rather than copying it (write takes
   * it on failure too); put_buffer gives back one that was not written.
   */
  void *(*get_buffer) (struct target *t, uint32_t count);
  void (*put_buffer) (struct target *t, void *buf);

  /* The members of the "buffer" status object.  NULL in a backend. */
  void (*status) (struct target *t, struct jbuf *reply);
};

/* Backends and layers embed this as their first member. */
struct target {
  const struct target_ops *ops;
  struct target *below;         /* a layer's target; NULL in a backend */
};

/* path: cbw-target=PATH (absolute), or NULL for an unlinked temporary
 * file in $TMPDIR.  Opens (creating it 0600) and locks it.  Returns
 * NULL after nbdkit_error.
 */
extern struct target *target_file_open (const char *path);

/* uri: cbw-target=URI.  Connects nothing until begin.  Returns NULL
 * after nbdkit_error.
 */
extern struct target *target_nbd_open (const char *uri);

/* cbw-buffer=SIZE over below (target-buffer.c), which it owns from
 * now on (also on failure).  Returns NULL after nbdkit_error.
 */
extern struct target *target_buffer_open (struct target *below,
                                          uint64_t size);

/* Milliseconds until deadline: -1 if deadline is NULL, 0 if it has
 * passed, else at least 1 (at most INT32_MAX).
 */
extern int target_ms_left (const struct timespec *deadline);
/* now + cbw-timeout in *ts, returning ts; or NULL if there is no
 * timeout (target.c: the one cbw-timeout rule).
 */
extern const struct timespec *target_timeout_deadline (struct timespec *ts);

#endif /* FLEECE_CBW_TARGET_OPS_H */
