/* nbdkit-fleece
 * SPDX-License-Identifier: BSD-3-Clause
 *
 * What the others see of the chain: the status members (read under
 * ckpt_chain_lock only, so status never waits for guest writes) and
 * the holds by which cbw and snapshot-access keep a checkpoint from
 * being deleted (under the write side of the gate).  The lock rules
 * are at the top of checkpoints.c.
 */

#include <config.h>

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "bitset.h"
#include "checkpoints.h"
#include "checkpoints-int.h"
#include "dirty-bitmap.h"
#include "json.h"
#include "persist.h"

/* The number of set bits, read with atomic loads (see
 * ckpt_chain_lock).
 */
static uint64_t
count_atomic (const struct bitset *bm)
{
  uint64_t i, n = 0, nw = (bm->nbits + 63) / 64;

  for (i = 0; i < nw; i++)
    n += __builtin_popcountll (__atomic_load_n (&bm->words[i],
                                                __ATOMIC_RELAXED));
  return n;
}

static bool
last_bit_atomic (const struct bitset *bm)
{
  uint64_t b = bm->nbits - 1;

  return (__atomic_load_n (&bm->words[b / 64], __ATOMIC_RELAXED)
          >> (b % 64)) & 1;
}

void
ckpt_status (struct jbuf *reply)
{
  struct checkpoint *c;

  /* ckpt_chain_lock only: writers go on (see the lock rules). */
  pthread_mutex_lock (&ckpt_chain_lock);
  jbuf_kv_raw (reply, "checkpoints", "[");
  for (c = ckpt_oldest; c; c = c->newer) {
    uint64_t dirty = count_atomic (&c->bits) * db_config.granularity;

    if (c->bits.nbits && last_bit_atomic (&c->bits))
      dirty -= db_ngranules * db_config.granularity - db_disk_size;
    jbuf_raw (reply, c == ckpt_oldest ? "{" : ",{");
    jbuf_kv_string (reply, "name", c->name);
    jbuf_kv_time (reply, "created", c->created);
    jbuf_kv_bool (reply, "recording", c == ckpt_newest);
    jbuf_kv_u64 (reply, "dirty_bytes", dirty);
    jbuf_kv_bool (reply, "persistent", db_config.bitmap_file != NULL);
    jbuf_kv_bool (reply, "consistent", c->consistent);
    if (!c->consistent)
      jbuf_kv_string (reply, "reason",
                      c->reason[0] ? c->reason : "not recorded");
    jbuf_raw (reply, "}");
  }
  jbuf_raw (reply, "]");
  pthread_mutex_unlock (&ckpt_chain_lock);
  jbuf_kv_u64 (reply, "bitmap_granularity", db_config.granularity);
  persist_status (reply);
}

/* The token is the checkpoint's sequence number, which no other
 * checkpoint ever has, so a release never lands on a later checkpoint
 * of the same name.
 */
uint64_t
ckpt_hold (const char *name, enum fleece_hold why)
{
  struct checkpoint *c;
  uint64_t token = 0;

  pthread_rwlock_wrlock (&ckpt_gate);
  c = ckpt_find (name);
  if (c) {
    c->holds[why]++;
    token = c->seq;
  }
  pthread_rwlock_unlock (&ckpt_gate);
  return token;
}

void
ckpt_unhold (uint64_t token, enum fleece_hold why)
{
  struct checkpoint *c;

  if (token == 0)
    return;
  pthread_rwlock_wrlock (&ckpt_gate);
  for (c = ckpt_oldest; c; c = c->newer)
    if (c->seq == token && c->holds[why] > 0)
      c->holds[why]--;
  pthread_rwlock_unlock (&ckpt_gate);
}
