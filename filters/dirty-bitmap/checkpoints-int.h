/* nbdkit-fleece
 * SPDX-License-Identifier: BSD-3-Clause
 *
 * What checkpoints.c shares with checkpoints-life.c and
 * checkpoints-status.c: the locks (their rules and order are at the
 * top of checkpoints.c) and the chain operations.
 */

#ifndef FLEECE_DB_CHECKPOINTS_INT_H
#define FLEECE_DB_CHECKPOINTS_INT_H

#include <pthread.h>

#include "checkpoints.h"

extern pthread_rwlock_t ckpt_gate;
extern pthread_mutex_t ckpt_chain_lock;
extern pthread_mutex_t ckpt_save_lock;

/* The checkpoint called name, or NULL.  Caller holds the write side of
 * the gate, or runs at start-up.
 */
extern struct checkpoint *ckpt_find (const char *name);

/* Unlink c from the chain, merging its bits (and its inconsistency)
 * into the older neighbour, and free it.  Caller holds the write side.
 */
extern void ckpt_unlink_merge (struct checkpoint *c);

/* Save outside the gate: the caller holds ckpt_save_lock and the write
 * side, which this releases.
 */
extern int ckpt_save_and_unlock (char **errmsg);

/* Take the write side for a control command, never waiting for ever:
 * -1 (not taken, errmsg set) when writes in flight did not finish.
 */
extern int ckpt_gate_for_command (char **errmsg);

/* ckpt_save_lock, then the write side as ckpt_gate_for_command takes
 * it; on -1 neither is held.  ckpt_command_unlock releases both.
 */
extern int ckpt_command_lock (char **errmsg);
extern void ckpt_command_unlock (void);

#endif /* FLEECE_DB_CHECKPOINTS_INT_H */
