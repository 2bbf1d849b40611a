/* nbdkit-fleece
 * SPDX-License-Identifier: BSD-3-Clause
 *
 * The bitmap file's encoder (its decoder is bmfile-decode.c).  All
 * integers are little-endian.  Versions 1 and 2: the last four bytes are the CRC-32
 * of the rest.  Version 3: the checksummed part (meta) ends with its
 * CRC-32, and the live region (the newest checkpoint's bits, updated in
 * place, not checksummed: its bits only ever go from 0 to 1 between two
 * rewrites of the whole file) starts at the next multiple of
 * BMFILE_PAGE and ends the file.  Version 4: as version 3, with the
 * intent map (one bit per region of granules, also updated in place
 * and only ever set between two rewrites) at the first multiple of
 * BMFILE_PAGE after the checksummed part, and the live region at the
 * next multiple after the intent map.
 */

#include <config.h>

#include <endian.h>
#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "bitset.h"
#include "bmfile.h"
#include "crc32.h"
#include "le.h"
#include "size.h"

/* An output buffer; failed is sticky. */
struct out {
  unsigned char *p;
  size_t len, cap;
  bool failed;
};

/* Room for n more bytes at the end, or NULL (and failed). */
static unsigned char *
reserve (struct out *o, size_t n)
{
  unsigned char *r;

  if (o->failed)
    return NULL;
  if (o->len + n > o->cap) {
    size_t cap = (o->len + n) * 2;
    unsigned char *p = realloc (o->p, cap);

    if (p == NULL) {
      o->failed = true;
      return NULL;
    }
    o->p = p;
    o->cap = cap;
  }
  r = o->p + o->len;
  o->len += n;
  return r;
}

static void
put (struct out *o, const void *p, size_t n)
{
  unsigned char *d = reserve (o, n);

  if (d)
    memcpy (d, p, n);
}

static void put8 (struct out *o, uint8_t v) { put (o, &v, 1); }
static void put32 (struct out *o, uint32_t v) { v = htole32 (v); put (o, &v, 4); }
static void put64 (struct out *o, uint64_t v) { v = htole64 (v); put (o, &v, 8); }

static void
patch64 (struct out *o, size_t at, uint64_t v)
{
  if (!o->failed)
    le_store64 (o->p + at, v);
}

/* A checkpoint's name, sequence number, creation time, flag byte and
 * reason (only for an inconsistent one), as every version from 2 on
 * writes them.
 */
static void
put_checkpoint_head (struct out *o, const struct bmfile_checkpoint *c,
                     uint8_t flags)
{
  size_t nlen = strlen (c->name);
  size_t rlen = c->consistent ? 0 : strnlen (c->reason, BMFILE_REASON_MAX);

  put8 (o, nlen);
  put (o, c->name, nlen);
  put64 (o, c->seq);
  put64 (o, c->created);
  put8 (o, flags);
  put8 (o, rlen);
  put (o, c->reason, rlen);
}

/* The fields from the magic to the next sequence number, the same in
 * every version.
 */
static void
put_header (struct out *o, const struct bmfile *f, uint32_t version,
            uint32_t flags)
{
  put (o, BMFILE_MAGIC, 8);
  put32 (o, version);
  put32 (o, flags);
  put64 (o, f->disk_size);
  put32 (o, f->granularity);
  put32 (o, f->n);
  put64 (o, f->next_seq);
}

static void
put_disk_id (struct out *o, const struct bmfile *f)
{
  size_t nlen = strnlen (f->disk_id, BMFILE_DISK_ID_MAX);

  put8 (o, nlen);
  put (o, f->disk_id, nlen);
}

/* A bitmap stored inline: its length, then its bytes. */
static void
put_bits (struct out *o, const struct bitset *bm)
{
  size_t blen = bitset_serialized_size (bm);
  unsigned char *bits;

  put64 (o, blen);
  bits = reserve (o, blen);
  if (bits)
    bitset_serialize (bm, bits);
}

/* The encoded file and its length, or NULL (ENOMEM) if any put failed. */
static unsigned char *
out_finish (struct out *o, size_t *len)
{
  if (o->failed) {
    free (o->p);
    errno = ENOMEM;
    return NULL;
  }
  *len = o->len;
  return o->p;
}

/* Version 2: everything inline, the CRC-32 last.  Written only when
 * asked for (f->version == 2: tests, and tools that need the old
 * format); the filter writes version 3.
 */
static unsigned char *
encode_v2 (const struct bmfile *f, const struct bitset *const *bitmaps,
           size_t *len)
{
  struct out o = { NULL, 0, 0, false };
  uint32_t i;

  put_header (&o, f, 2, f->in_use ? BMFILE_FLAG_IN_USE : 0);
  put_disk_id (&o, f);
  for (i = 0; i < f->n; i++) {
    const struct bmfile_checkpoint *c = &f->checkpoints[i];

    put_checkpoint_head (&o, c, c->consistent);
    put_bits (&o, bitmaps[i]);
  }
  if (!o.failed)
    put32 (&o, fleece_crc32 (0, o.p, o.len));
  return out_finish (&o, len);
}

/* Versions 3 and 4: the checksummed part ("meta"), then zeroes up to
 * the next multiple of BMFILE_PAGE; version 4: the intent map (all
 * clear), zeroes up to the next multiple of BMFILE_PAGE; then the live
 * region: the newest checkpoint's bits.  Both regions are updated in
 * place by the filter.
 */
static uint64_t
page_up (uint64_t x)
{
  return (x + BMFILE_PAGE - 1) / BMFILE_PAGE * BMFILE_PAGE;
}

unsigned char *
bmfile_encode_layout (const struct bmfile *f,
                      const struct bitset *const *bitmaps, size_t *len,
                      struct bmfile_layout *lay)
{
  struct out o = { NULL, 0, 0, false };
  size_t layout, meta_len;
  uint64_t live = 0, live_len = 0, intent = 0, intent_len = 0;
  uint32_t i, flags = 0, version = f->version == 3 ? 3 : 4;
  unsigned char *r;

  memset (lay, 0, sizeof *lay);
  if (f->version == 2)
    return encode_v2 (f, bitmaps, len);
  if (f->in_use)
    flags |= BMFILE_FLAG_IN_USE;
  if (f->write_ahead)
    flags |= BMFILE_FLAG_WRITE_AHEAD;
  put_header (&o, f, version, flags);
  layout = o.len;
  put64 (&o, 0);                /* meta length, patched below */
  put64 (&o, 0);                /* live region offset */
  put64 (&o, 0);                /* live region length */
  if (version == 4) {
    put64 (&o, 0);              /* intent map offset */
    put64 (&o, 0);              /* intent map length */
    put32 (&o, f->intent_shift);
    put (&o, f->boot_id, BMFILE_BOOT_ID_LEN);
  }
  put_disk_id (&o, f);
  for (i = 0; i < f->n; i++) {
    const struct bmfile_checkpoint *c = &f->checkpoints[i];

    put_checkpoint_head (&o, c, c->consistent | (c->provisional ? 2 : 0));
    if (i == f->n - 1) {        /* the newest: in the live region */
      put64 (&o, 0);
      live_len = bitset_serialized_size (bitmaps[i]);
    }
    else
      put_bits (&o, bitmaps[i]);
  }
  meta_len = o.len + 4;
  live = f->n > 0 ? page_up (meta_len) : 0;
  if (f->n > 0 && version == 4) {
    intent = live;
    intent_len = (bmfile_intent_regions (bitmaps[f->n - 1]->nbits,
                                         f->intent_shift) + 7) / 8;
    live = page_up (intent + intent_len);
  }
  patch64 (&o, layout, meta_len);
  patch64 (&o, layout + 8, live);
  patch64 (&o, layout + 16, live_len);
  if (version == 4) {
    patch64 (&o, layout + 24, intent);
    patch64 (&o, layout + 32, intent_len);
  }
  if (!o.failed)
    put32 (&o, fleece_crc32 (0, o.p, o.len));
  if (f->n > 0) {
    unsigned char *pad = reserve (&o, live - meta_len);
    unsigned char *bits;

    if (pad)                    /* padding and the intent map: clear */
      memset (pad, 0, live - meta_len);
    bits = reserve (&o, live_len);
    if (bits)
      bitset_serialize (bitmaps[f->n - 1], bits);
  }
  r = out_finish (&o, len);
  if (r) {
    lay->live_offset = live;
    lay->live_len = live_len;
    lay->intent_offset = intent;
    lay->intent_len = intent_len;
  }
  return r;
}

unsigned char *
bmfile_encode_live (const struct bmfile *f,
                    const struct bitset *const *bitmaps, size_t *len,
                    uint64_t *live_offset)
{
  struct bmfile_layout lay;
  unsigned char *r = bmfile_encode_layout (f, bitmaps, len, &lay);

  if (live_offset)
    *live_offset = lay.live_offset;
  return r;
}

unsigned char *
bmfile_encode (const struct bmfile *f, const struct bitset *const *bitmaps,
               size_t *len)
{
  return bmfile_encode_live (f, bitmaps, len, NULL);
}
