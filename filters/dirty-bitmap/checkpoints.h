/* nbdkit-fleece
 * SPDX-License-Identifier: BSD-3-Clause
 *
 * The chain of checkpoints and the marking of written granules.  The
 * locking rules are at the top of checkpoints.c.
 */

#ifndef FLEECE_DB_CHECKPOINTS_H
#define FLEECE_DB_CHECKPOINTS_H

#include <stdbool.h>
#include <stdint.h>

#include "bitset.h"
#include "bmfile.h"
#include "fleece-api.h"
#include "json.h"

struct checkpoint {
  char name[FLEECE_NAME_BUF];
  uint64_t seq;                 /* grows with creation time */
  int64_t created;              /* time () */
  bool consistent;              /* false: may have missed writes */
  bool provisional;             /* begun by a backup job not yet done */
  /* Why it is not consistent (for status and the bitmap file), set
   * together with consistent = false and kept from then on: the first
   * cause wins.  "" while consistent.
   */
  char reason[BMFILE_REASON_MAX + 1];
  struct bitset bits;           /* one bit per granule */
  unsigned holds[2];            /* enum fleece_hold: who needs it kept */
  struct checkpoint *older, *newer;
};

/* The chain, oldest first; the newest one records.  See the lock
 * rules in checkpoints.c before touching these.
 */
extern struct checkpoint *ckpt_oldest, *ckpt_newest;
extern uint64_t ckpt_next_seq;
extern uint64_t db_disk_size, db_ngranules;

extern void ckpt_init (void);
extern void ckpt_free_all (void);
/* Set the disk size (after_fork, before any write). */
extern void ckpt_set_size (uint64_t size);

/* Guest writes: mark, pass the write down, then call ckpt_after_write
 * (also when ckpt_before_write fails).  -1: the write must fail with
 * EIO (write-ahead: its bit could not be made durable).
 */
extern int ckpt_before_write (uint32_t count, uint64_t offset);
extern void ckpt_after_write (void);

/* Control (serialised by the control server). */
extern int ckpt_create (const char *name, char **errmsg);
/* The same for a backup job: the checkpoint stays provisional until
 * ckpt_confirm, and a provisional checkpoint found at start-up (the
 * server stopped during the job) is merged back.
 */
extern int ckpt_create_provisional (const char *name, char **errmsg);
extern int ckpt_confirm (const char *name, char **errmsg);
/* At start-up: merge back every provisional checkpoint. */
extern void ckpt_merge_provisional (void);
extern int ckpt_delete (const char *name, char **errmsg);
extern void ckpt_status (struct jbuf *reply);

/* Interface for cbw and snapshot-access (see fleece-api.h). */
extern void ckpt_lock (void);   /* the gate's write side */
extern void ckpt_unlock (void);
extern uint64_t ckpt_hold (const char *name, enum fleece_hold why);
extern void ckpt_unhold (uint64_t token, enum fleece_hold why);
extern void ckpt_saw_size (uint64_t size);

/* frozen.c */
extern struct fleece_frozen *ckpt_freeze (const char *since, char **errmsg);
extern void ckpt_frozen_free (struct fleece_frozen *f);
extern int ckpt_frozen_changed_since (const struct fleece_frozen *f,
                                      const char *name, uint32_t unit,
                                      struct bitset *out, char **errmsg);
extern char **ckpt_frozen_names (const struct fleece_frozen *f);

/* For persist.c: append a checkpoint read from the file (start-up). */
extern struct checkpoint *ckpt_append (const char *name, uint64_t seq,
                                       int64_t created, bool consistent);

#endif /* FLEECE_DB_CHECKPOINTS_H */
