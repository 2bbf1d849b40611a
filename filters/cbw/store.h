/* nbdkit-fleece
 * SPDX-License-Identifier: BSD-3-Clause
 *
 * The cluster store: where in the fleecing target a copied cluster
 * lives, shared by every active snapshot.
 *
 * A copy of disk cluster c goes to slot c (the same offset in the
 * target, as with one snapshot) when that slot is free, and otherwise
 * to an overflow slot past the disk's end.  Two snapshots share a copy
 * when both needed cluster c's contents at the moment it was first
 * written after both their points: the copy is made once.  A second
 * version of c (needed by a snapshot taken after that write) gets its
 * own slot.  A slot is free again once no active snapshot maps a
 * cluster to it.
 *
 * Every function here is called with state_lock held (snapshot-int.h)
 * except store_begin and store_end, which the control thread calls with
 * the gate held for writing.
 */

#ifndef FLEECE_CBW_STORE_H
#define FLEECE_CBW_STORE_H

#include <stdbool.h>
#include <stdint.h>

/* Sparse map from a cluster to its overflow slot, one per snapshot. */
struct slotmap {
  uint64_t *keys;               /* cluster + 1; 0 is empty, UINT64_MAX gone */
  uint64_t *vals;
  uint64_t cap, used, tombs;
};

extern void slotmap_free (struct slotmap *m);
extern int slotmap_put (struct slotmap *m, uint64_t cluster, uint64_t slot);
extern bool slotmap_get (const struct slotmap *m, uint64_t cluster,
                         uint64_t *slot);
extern void slotmap_del (struct slotmap *m, uint64_t cluster);
/* Does m map some cluster to a slot in [lo, hi)?  Scans the map. */
extern bool slotmap_any_in (const struct slotmap *m, uint64_t lo,
                            uint64_t hi);

/* The first snapshot begins (target_begin is done by the caller):
 * identity slots exist for clusters below nclusters, and the target
 * holds capacity bytes.
 */
extern int store_begin (uint64_t nclusters, uint64_t capacity);
/* The last snapshot ended: forget every slot. */
extern void store_end (void);

/* Reserve slots for a copy of clusters [c, c+n).  If all of them can
 * use their identity slots, they are reserved and *slot = c; else one
 * overflow slot is reserved for c alone (*n becomes 1).  -1 with
 * ENOSPC if the target has no room.
 */
extern int store_reserve (uint64_t c, uint64_t *n, uint64_t *slot,
                          int *err);
/* Give back reserved or used slots [slot, slot+n) for clusters from c. */
extern void store_unreserve (uint64_t c, uint64_t n, uint64_t slot);

/* cbw-buffer lost the background write of slots [lo, hi) before the
 * copy that wrote them was recorded: remember it, so that the copy
 * fails when it records (store_lost_take).  store_reserve forgets
 * losses in the slots it hands out (they were of an older write).
 */
extern int store_lost_add (uint64_t lo, uint64_t hi, int err);
/* Was a write to slots [lo, hi) lost?  Forgets it; *err gets why. */
extern bool store_lost_take (uint64_t lo, uint64_t hi, int *err);

/* Is identity slot c in use? */
extern bool store_identity_used (uint64_t c);
/* Has the store reached cbw-target-limit? */
extern bool store_at_limit (void);
/* Bytes of distinct slots in use (whole clusters). */
extern uint64_t store_held_bytes (void);

#endif /* FLEECE_CBW_STORE_H */
