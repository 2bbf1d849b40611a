/* nbdkit-fleece
 * SPDX-License-Identifier: BSD-3-Clause
 *
 * The target the snapshot engine sees: picks the backend from
 * cbw-target= once, and bounds every operation by cbw-timeout.  The
 * backends are in target-file.c and target-nbd.c (see target.h).
 */

#include <config.h>

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <nbdkit-filter.h>

#include "cbw.h"
#include "json.h"
#include "target.h"
#include "target-ops.h"

/* The top of the target stack.  Set by target_open and cleared by
 * target_close, both in nbdkit's single-threaded start-up / unload;
 * between them it never changes, so no lock.  The targets below it
 * have their own locks.
 */
static struct target *top;

int
target_ms_left (const struct timespec *deadline)
{
  struct timespec now;
  int64_t ms;

  if (deadline == NULL)
    return -1;
  clock_gettime (CLOCK_MONOTONIC, &now);
  ms = (deadline->tv_sec - now.tv_sec) * 1000 +
    (deadline->tv_nsec - now.tv_nsec) / 1000000;
  if (ms <= 0)
    return 0;
  return ms > INT32_MAX ? INT32_MAX : ms;
}

/* now + cbw-timeout in *ts, returning ts; or NULL if there is no
 * timeout.  Every target operation except a copy's write (whose
 * deadline the snapshot engine sets for the whole copy) is bounded by
 * this: a hung target must hold neither a guest write, a snapshot read,
 * snapshot-begin nor snapshot-end forever.
 */
const struct timespec *
target_timeout_deadline (struct timespec *ts)
{
  if (cbw_config.timeout == 0)
    return NULL;
  clock_gettime (CLOCK_MONOTONIC, ts);
  ts->tv_sec += cbw_config.timeout;
  return ts;
}

int
target_open (void)
{
  switch (cbw_config.target_kind) {
  case CBW_TARGET_TEMP: top = target_file_open (NULL); break;
  case CBW_TARGET_FILE: top = target_file_open (cbw_config.target); break;
  case CBW_TARGET_NBD: top = target_nbd_open (cbw_config.target); break;
  }
  if (top && cbw_config.buffer)
    top = target_buffer_open (top, cbw_config.buffer);
  if (top == NULL)
    return -1;
  nbdkit_debug ("cbw: %s target ready", top->ops->name);
  return 0;
}

void
target_after_fork (void)
{
  if (top && top->ops->after_fork)
    top->ops->after_fork (top);
}

void
target_close (void)
{
  if (top)
    top->ops->close (top);
  top = NULL;
}

int
target_begin (uint64_t size, char **errmsg)
{
  struct timespec ts;

  return top->ops->begin (top, size, target_timeout_deadline (&ts), errmsg);
}

uint64_t
target_capacity (void)
{
  return top->ops->capacity (top);
}

void
target_end (void)
{
  struct timespec ts;

  top->ops->end (top, target_timeout_deadline (&ts));
}

void *
target_get_buffer (uint32_t count)
{
  return top->ops->get_buffer ? top->ops->get_buffer (top, count) : NULL;
}

void
target_put_buffer (void *buf)
{
  top->ops->put_buffer (top, buf);
}

int
target_write (const void *buf, uint32_t count, uint64_t offset,
              const struct timespec *deadline, int *err)
{
  return top->ops->write (top, buf, count, offset, deadline, err);
}

int
target_read (void *buf, uint32_t count, uint64_t offset, int *err)
{
  struct timespec ts;

  return top->ops->read (top, buf, count, offset, target_timeout_deadline (&ts),
                         err);
}

void
target_release (uint64_t offset, uint64_t count)
{
  struct timespec ts;
  int err;

  if (top->ops->release (top, offset, count, target_timeout_deadline (&ts),
                         &err) == -1)
    nbdkit_debug ("cbw: releasing target space at %" PRIu64 ": %s",
                  offset, strerror (err));
}

void
target_status (struct jbuf *reply)
{
  if (top && top->ops->status)
    top->ops->status (top, reply);
  else {
    jbuf_kv_u64 (reply, "size", 0);
  }
}
