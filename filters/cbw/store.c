/* nbdkit-fleece
 * SPDX-License-Identifier: BSD-3-Clause
 *
 * The cluster store (see store.h).  State below is protected by
 * state_lock, except in store_begin and store_end (gate held for
 * writing, no copy in flight).
 */

#include <config.h>

#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "bitset.h"
#include "cbw.h"
#include "store.h"

static struct bitset ident_used; /* identity slot c holds a copy */
static uint64_t base;           /* identity slots: clusters below base */
static uint64_t cap_slots;      /* slots that fit in the target */
static uint64_t next_over;      /* next never-used overflow slot */
static uint64_t *free_over;     /* overflow slots given back */
static size_t nfree, free_cap;
static uint64_t slots_used;

/* Lost background writes not yet claimed by their copy (store.h). */
struct lost { uint64_t lo, hi; int err; };
static struct lost *lost;
static size_t nlost;

/*----------------------------------------------------------------------
 * slotmap: open addressing, linear probing, tombstones.
 */

#define GONE UINT64_MAX

static uint64_t
hash (uint64_t k)
{
  k ^= k >> 33;
  k *= UINT64_C (0xff51afd7ed558ccd);
  k ^= k >> 33;
  return k;
}

void
slotmap_free (struct slotmap *m)
{
  free (m->keys);
  free (m->vals);
  memset (m, 0, sizeof *m);
}

static int
grow (struct slotmap *m)
{
  struct slotmap n = { .cap = m->cap ? m->cap * 2 : 64 };
  uint64_t i;

  if (m->used * 2 < m->cap)     /* mostly tombstones: rehash same size */
    n.cap = m->cap;
  n.keys = calloc (n.cap, sizeof *n.keys);
  n.vals = calloc (n.cap, sizeof *n.vals);
  if (n.keys == NULL || n.vals == NULL) {
    free (n.keys);
    free (n.vals);
    return -1;
  }
  for (i = 0; i < m->cap; i++) {
    if (m->keys[i] != 0 && m->keys[i] != GONE) {
      uint64_t j = hash (m->keys[i]) & (n.cap - 1);

      while (n.keys[j])
        j = (j + 1) & (n.cap - 1);
      n.keys[j] = m->keys[i];
      n.vals[j] = m->vals[i];
      n.used++;
    }
  }
  slotmap_free (m);
  *m = n;
  return 0;
}

int
slotmap_put (struct slotmap *m, uint64_t cluster, uint64_t slot)
{
  uint64_t k = cluster + 1, j;

  if ((m->used + m->tombs + 1) * 4 > m->cap * 3 && grow (m) == -1)
    return -1;
  j = hash (k) & (m->cap - 1);
  while (m->keys[j] != 0 && m->keys[j] != k)
    j = (j + 1) & (m->cap - 1);
  if (m->keys[j] == 0)
    m->used++;
  m->keys[j] = k;
  m->vals[j] = slot;
  return 0;
}

static int64_t
find (const struct slotmap *m, uint64_t cluster)
{
  uint64_t k = cluster + 1, j;

  if (m->cap == 0)
    return -1;
  j = hash (k) & (m->cap - 1);
  while (m->keys[j] != 0) {
    if (m->keys[j] == k)
      return j;
    j = (j + 1) & (m->cap - 1);
  }
  return -1;
}

bool
slotmap_get (const struct slotmap *m, uint64_t cluster, uint64_t *slot)
{
  int64_t j = find (m, cluster);

  if (j < 0)
    return false;
  *slot = m->vals[j];
  return true;
}

void
slotmap_del (struct slotmap *m, uint64_t cluster)
{
  int64_t j = find (m, cluster);

  if (j >= 0) {
    m->keys[j] = GONE;
    m->used--;
    m->tombs++;
  }
}

bool
slotmap_any_in (const struct slotmap *m, uint64_t lo, uint64_t hi)
{
  uint64_t j;

  for (j = 0; j < m->cap; j++)
    if (m->keys[j] != 0 && m->keys[j] != GONE &&
        m->vals[j] >= lo && m->vals[j] < hi)
      return true;
  return false;
}

/*----------------------------------------------------------------------
 * Slots.
 */

int
store_begin (uint64_t nclusters, uint64_t capacity)
{
  base = nclusters;
  cap_slots = capacity / cbw_config.cluster_size;
  next_over = base;
  nfree = 0;
  slots_used = 0;
  return bitset_init (&ident_used, nclusters);
}

void
store_end (void)
{
  bitset_free (&ident_used);
  free (free_over);
  free_over = NULL;
  free (lost);
  lost = NULL;
  nlost = 0;
  nfree = free_cap = 0;
  slots_used = 0;
  base = next_over = 0;
}

/* Slots the limit still allows, or UINT64_MAX without one. */
static uint64_t
room (void)
{
  uint64_t lim = cbw_config.target_limit / cbw_config.cluster_size;

  if (cbw_config.target_limit == 0)
    return UINT64_MAX;
  return slots_used < lim ? lim - slots_used : 0;
}

int
store_reserve (uint64_t c, uint64_t *n, uint64_t *slot, int *err)
{
  if (room () == 0) {
    *n = 1;
    *err = ENOSPC;
    return -1;
  }
  if (c < base && !bitset_test (&ident_used, c)) {
    uint64_t end = c + *n < base ? c + *n : base;
    uint64_t used = bitset_next_set (&ident_used, c);

    if (used < end)
      end = used;
    if (end - c > room ())
      end = c + room ();
    *n = end - c;
    bitset_set_range (&ident_used, c, *n);
    *slot = c;
    slots_used += *n;
    if (nlost)
      store_lost_take (c, c + *n, NULL);
    return 0;
  }
  *n = 1;
  if (nfree > 0)
    *slot = free_over[--nfree];
  else if (next_over < cap_slots)
    *slot = next_over++;
  else {
    *err = ENOSPC;
    return -1;
  }
  slots_used++;
  if (nlost)
    store_lost_take (*slot, *slot + 1, NULL);
  return 0;
}

void
store_unreserve (uint64_t c, uint64_t n, uint64_t slot)
{
  if (slot == c && c < base) {
    bitset_clear_range (&ident_used, c, n);
    slots_used -= n;
    return;
  }
  /* One overflow slot.  Keeping the free list is best effort: if it
   * cannot grow, the slot is simply not reused.
   */
  if (nfree == free_cap) {
    size_t ncap = free_cap ? free_cap * 2 : 64;
    uint64_t *f = realloc (free_over, ncap * sizeof *f);

    if (f) {
      free_over = f;
      free_cap = ncap;
    }
  }
  if (nfree < free_cap)
    free_over[nfree++] = slot;
  slots_used--;
}

int
store_lost_add (uint64_t lo, uint64_t hi, int err)
{
  struct lost *l = realloc (lost, (nlost + 1) * sizeof *l);

  if (l == NULL)
    return -1;
  lost = l;
  lost[nlost++] = (struct lost) { lo, hi, err };
  return 0;
}

bool
store_lost_take (uint64_t lo, uint64_t hi, int *err)
{
  bool found = false;
  size_t i = 0;

  while (i < nlost) {
    if (lost[i].lo < hi && lo < lost[i].hi) {
      found = true;
      if (err)
        *err = lost[i].err;
      lost[i] = lost[--nlost];
    }
    else
      i++;
  }
  return found;
}

bool
store_identity_used (uint64_t c)
{
  return c < base && bitset_test (&ident_used, c);
}

uint64_t
store_held_bytes (void)
{
  return slots_used * cbw_config.cluster_size;
}

bool
store_at_limit (void)
{
  return room () == 0;
}
