/* nbdkit-fleece
 * SPDX-License-Identifier: BSD-3-Clause
 *
 * Unit tests for common/bmfile.c: a round trip (version 2, with a disk
 * id and a reason), a version 1 file still decodes (no id, no
 * reasons), and every kind of damage is refused; version 3 (what the
 * filter writes): the layout of its live region, a round trip, damage
 * to the checksummed part or the padding refused, and any bits in the
 * live region accepted (it is updated in place, after the CRC).
 */

#include <config.h>

#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "bitset.h"
#include "bmfile.h"
#include "crc32.h"
#include "le.h"
#include "unit.h"

/* Recompute the trailing CRC after editing buf. */
static void
reseal (unsigned char *buf, size_t len)
{
  le_store32 (buf + len - 4, fleece_crc32 (0, buf, len - 4));
}

static void
refused (const unsigned char *buf, size_t len, const char *what)
{
  struct bmfile f;
  const char *why = NULL;

  if (bmfile_decode (buf, len, &f, &why) != -1 || why == NULL ||
      f.checkpoints != NULL || f.n != 0) {
    fprintf (stderr, "damage accepted: %s\n", what);
    unit_failures++;
  }
}

/* Every byte of the checksummed part [0, meta) flipped (one in step),
 * and truncations at every 97th length: each refused.  scratch holds
 * len bytes.
 */
static void
refused_damage (const unsigned char *v, size_t len, size_t meta, size_t step,
                unsigned char *scratch, const char *version)
{
  char what[64];
  size_t k;

  snprintf (what, sizeof what, "%s flipped byte", version);
  for (k = 0; k < meta; k += step) {
    memcpy (scratch, v, len);
    scratch[k] ^= 0x08;
    refused (scratch, len, what);
  }
  snprintf (what, sizeof what, "%s truncated", version);
  for (k = 0; k + 1 < len; k += 97)
    refused (v, k, what);
}

int
main (void)
{
  struct bitset a = BITSET_INIT, b = BITSET_INIT, back = BITSET_INIT;
  struct bmfile_checkpoint cps[2] = {
    { .name = "c1", .seq = 1, .created = 1795186800, .consistent = true },
    { .name = "backup-2.x", .seq = 7, .created = 1795190400,
      .consistent = false, .reason = "server did not stop cleanly" },
  };
  struct bmfile f = {
    .disk_id = "vm1-disk0", .in_use = true, .disk_size = 1000 * 65536 + 17, .granularity = 65536,
    .next_seq = 8, .n = 2, .checkpoints = cps, .version = 2,
  };
  const struct bitset *bms[2] = { &a, &b };
  struct bmfile g;
  unsigned char *buf, *copy;
  const char *why;
  size_t len, i;
  /* Version 2: the header, then the disk id's length and the id. */
  const size_t H = 40 + 1 + 9;

  CHECK (bitset_init (&a, 1001) == 0);
  CHECK (bitset_init (&b, 1001) == 0);
  CHECK (bitset_init (&back, 1001) == 0);
  bitset_set_range (&a, 3, 70);
  bitset_set (&a, 1000);
  bitset_set_range (&b, 500, 2);

  buf = bmfile_encode (&f, bms, &len);
  CHECK (buf != NULL);
  CHECK (memcmp (buf, "FLEECEBM", 8) == 0);
  CHECK (len == H + (1 + 2 + 26 + 126) + (1 + 10 + 26 + 27 + 126) + 4);

  /* Round trip. */
  CHECK (bmfile_decode (buf, len, &g, &why) == 0);
  CHECK (g.in_use && g.disk_size == f.disk_size && g.granularity == 65536);
  CHECK (g.next_seq == 8 && g.n == 2);
  CHECK (g.version == 2 && strcmp (g.disk_id, "vm1-disk0") == 0);
  CHECK (g.checkpoints[0].reason[0] == '\0');
  CHECK (strcmp (g.checkpoints[1].reason,
                 "server did not stop cleanly") == 0);
  CHECK (strcmp (g.checkpoints[0].name, "c1") == 0);
  CHECK (strcmp (g.checkpoints[1].name, "backup-2.x") == 0);
  CHECK (g.checkpoints[0].seq == 1 && g.checkpoints[1].seq == 7);
  CHECK (g.checkpoints[0].created == 1795186800);
  CHECK (g.checkpoints[0].consistent && !g.checkpoints[1].consistent);
  CHECK (bitset_deserialize (&back, g.checkpoints[0].bits,
                             g.checkpoints[0].bits_len) == 0);
  CHECK (bitset_count (&back) == 71 && bitset_test (&back, 1000) &&
         bitset_test (&back, 3) && !bitset_test (&back, 2));
  CHECK (bitset_deserialize (&back, g.checkpoints[1].bits,
                             g.checkpoints[1].bits_len) == 0);
  CHECK (bitset_count (&back) == 2 && bitset_test (&back, 501));
  bmfile_free (&g);

  /* Format 3 carries the provisional flag of a backup job's
   * checkpoint; format 2 cannot (it is never written there).
   */
  cps[0].provisional = true;
  f.version = 3;
  copy = bmfile_encode (&f, bms, &i);
  CHECK (copy != NULL);
  CHECK (bmfile_decode (copy, i, &g, &why) == 0);
  CHECK (g.version == 3 && g.checkpoints[0].provisional &&
         g.checkpoints[0].consistent && !g.checkpoints[1].provisional);
  bmfile_free (&g);
  free (copy);
  cps[0].provisional = false;
  f.version = 2;

  /* No checkpoints at all is fine. */
  f.n = 0;
  copy = bmfile_encode (&f, bms, &i);
  CHECK (copy != NULL && i == H + 4);
  CHECK (bmfile_decode (copy, i, &g, &why) == 0 && g.n == 0);
  bmfile_free (&g);
  free (copy);

  /* Damage. */
  copy = malloc (len);
  for (i = 0; i < len; i += 7) {         /* any flipped byte */
    memcpy (copy, buf, len);
    copy[i] ^= 0x40;
    refused (copy, len, "flipped byte");
  }
  for (i = 0; i < len; i += 5)           /* any truncation */
    refused (buf, i, "truncated");
  refused (buf, 0, "empty");

  memcpy (copy, buf, len);               /* bad magic, good CRC */
  copy[0] = 'X';
  reseal (copy, len);
  refused (copy, len, "magic");
  memcpy (copy, buf, len);               /* unknown version */
  copy[8] = 4;
  reseal (copy, len);
  refused (copy, len, "version");
  memcpy (copy, buf, len);               /* too many checkpoints */
  copy[28] = 3;
  reseal (copy, len);
  refused (copy, len, "count");
  memcpy (copy, buf, len);               /* huge count */
  memset (copy + 28, 0xff, 4);
  reseal (copy, len);
  refused (copy, len, "huge count");
  memcpy (copy, buf, len);               /* name that is a path */
  copy[H + 1] = '/';
  reseal (copy, len);
  refused (copy, len, "name");
  memcpy (copy, buf, len);               /* zero-length name */
  copy[H] = 0;
  reseal (copy, len);
  refused (copy, len, "empty name");
  memcpy (copy, buf, len);               /* consistent byte not 0/1 */
  copy[H + 1 + 2 + 16] = 2;
  reseal (copy, len);
  refused (copy, len, "consistent");
  memcpy (copy, buf, len);               /* bitmap longer than the file */
  copy[H + 1 + 2 + 18 + 7] = 0x10;
  reseal (copy, len);
  refused (copy, len, "bitmap length");
  memcpy (copy, buf, len);               /* NUL inside a name */
  copy[H + 2] = '\0';
  reseal (copy, len);
  refused (copy, len, "NUL in name");
  memcpy (copy, buf, len);               /* a space in the disk id */
  copy[44] = ' ';
  reseal (copy, len);
  refused (copy, len, "space in disk id");
  memcpy (copy, buf, len);               /* disk id longer than 64 */
  copy[40] = 65;
  reseal (copy, len);
  refused (copy, len, "disk id length");
  {
    /* The second checkpoint: its consistent byte, then its reason. */
    size_t c2 = H + 155, cb = c2 + 1 + 10 + 16;

    CHECK (copy[cb] == 0 && copy[cb + 1] == 27);
    memcpy (copy, buf, len);             /* a reason on a consistent one */
    copy[cb] = 1;
    reseal (copy, len);
    refused (copy, len, "reason on a consistent checkpoint");
    memcpy (copy, buf, len);             /* a control byte in a reason */
    copy[cb + 5] = '\n';
    reseal (copy, len);
    refused (copy, len, "newline in reason");
  }
  memcpy (copy, buf, len);               /* next_seq not above the last */
  copy[32] = 7;
  reseal (copy, len);
  refused (copy, len, "next_seq");
  {
    /* Growing sequence numbers and unique names. */
    struct bmfile_checkpoint dup[2] = {
      { .name = "c1", .seq = 1 }, { .name = "c1", .seq = 2 },
    };
    struct bmfile_checkpoint back2[2] = {
      { .name = "c1", .seq = 5 }, { .name = "c2", .seq = 5 },
    };
    struct bmfile h = { .granularity = 65536, .disk_size = 1001 * 65536,
                        .next_seq = 9, .n = 2, .version = 2 };
    unsigned char *e;
    size_t elen;

    h.checkpoints = dup;
    e = bmfile_encode (&h, bms, &elen);
    refused (e, elen, "duplicate names");
    free (e);
    h.checkpoints = back2;
    e = bmfile_encode (&h, bms, &elen);
    refused (e, elen, "sequence numbers not growing");
    free (e);
  }
  {
    /* Version 1 (no disk id, no reasons) still decodes. */
    unsigned char v1[40 + 1 + 3 + 25 + 1 + 4];
    unsigned char *p = v1;

    memcpy (p, "FLEECEBM", 8); p += 8;
    le_store32 (p, 1); p += 4;                  /* version */
    le_store32 (p, 0); p += 4;                  /* flags */
    le_store64 (p, 5 * 65536); p += 8;          /* size */
    le_store32 (p, 65536); p += 4;
    le_store32 (p, 1); p += 4;                  /* n */
    le_store64 (p, 4); p += 8;                  /* next */
    *p++ = 3; memcpy (p, "old", 3); p += 3;
    le_store64 (p, 3); p += 8;                  /* seq */
    le_store64 (p, 1795186800); p += 8;
    *p++ = 0;                                   /* inconsistent */
    le_store64 (p, 1); p += 8;                  /* bits */
    *p++ = 0x05;
    CHECK ((size_t) (p - v1) + 4 == sizeof v1);
    reseal (v1, sizeof v1);
    CHECK (bmfile_decode (v1, sizeof v1, &g, &why) == 0);
    CHECK (g.version == 1 && g.disk_id[0] == '\0' && g.n == 1);
    CHECK (strcmp (g.checkpoints[0].name, "old") == 0 &&
           g.checkpoints[0].seq == 3 && !g.checkpoints[0].consistent &&
           g.checkpoints[0].reason[0] == '\0' &&
           g.checkpoints[0].bits_len == 1 && g.checkpoints[0].bits[0] == 5);
    bmfile_free (&g);
  }
  /* Disk ids. */
  {
    static const struct { const char *id; bool valid; } ids[] = {
      { "vm1-disk0", true }, { "a", true }, { "!~", true },
      { "", false }, { "a b", false }, { "tab\there", false },
      { "\xc3\xa9", false },
      { "0123456789012345678901234567890123456789"
        "012345678901234567890123", true },         /* 64 bytes */
      { "0123456789012345678901234567890123456789"
        "0123456789012345678901234", false },       /* 65 */
    };
    size_t k;

    for (k = 0; k < sizeof ids / sizeof ids[0]; k++) {
      CHECK (bmfile_valid_disk_id (ids[k].id) == ids[k].valid);
      if (bmfile_valid_disk_id (ids[k].id) != ids[k].valid)
        fprintf (stderr, "  disk id '%s'\n", ids[k].id);
    }
  }
  {
    unsigned char *longer = malloc (len + 1);   /* trailing garbage */

    memcpy (longer, buf, len - 4);
    longer[len - 4] = 0;
    reseal (longer, len + 1);
    refused (longer, len + 1, "trailing bytes");
    free (longer);
  }

  {
    /* Version 3: the meta part, zeroes to a page boundary, then the
     * newest checkpoint's bits.
     */
    uint64_t live, meta;
    size_t l3;
    unsigned char *v3, *d3;

    f.version = 3;
    f.write_ahead = true;
    f.n = 2;
    v3 = bmfile_encode_live (&f, bms, &l3, &live);
    CHECK (v3 != NULL && memcmp (v3 + 8, "\3\0\0\0\3\0\0\0", 8) == 0);
    CHECK (live == BMFILE_PAGE && l3 == live + 126);
    meta = le_load64 (v3 + 40);
    CHECK (meta == 64 + 1 + 9 + (1 + 2 + 26 + 126) + (1 + 10 + 26 + 27)
           + 4);
    CHECK (bmfile_decode (v3, l3, &g, &why) == 0);
    CHECK (g.version == 3 && g.in_use && g.write_ahead && g.n == 2);
    CHECK (g.live_offset == live && g.live_len == 126);
    CHECK (g.checkpoints[1].bits == v3 + live &&
           g.checkpoints[1].bits_len == 126);
    CHECK (strcmp (g.checkpoints[1].reason,
                   "server did not stop cleanly") == 0);
    CHECK (bitset_deserialize (&back, g.checkpoints[0].bits,
                               g.checkpoints[0].bits_len) == 0 &&
           bitset_count (&back) == 71);
    CHECK (bitset_deserialize (&back, g.checkpoints[1].bits,
                               g.checkpoints[1].bits_len) == 0 &&
           bitset_count (&back) == 2 && bitset_test (&back, 500));
    bmfile_free (&g);
    d3 = malloc (l3);
    refused_damage (v3, l3, meta, 3, d3, "v3");
    memcpy (d3, v3, l3);                /* padding must be zeroes */
    d3[meta + 10] = 1;
    refused (d3, l3, "v3 padding");
    memcpy (d3, v3, l3);                /* bits set in place: accepted */
    memset (d3 + live, 0xff, 125);
    CHECK (bmfile_decode (d3, l3, &g, &why) == 0 && g.n == 2 &&
           g.checkpoints[1].bits[100] == 0xff);
    bmfile_free (&g);
    free (d3);
    free (v3);
    /* No checkpoints: no live region. */
    f.n = 0;
    v3 = bmfile_encode_live (&f, bms, &l3, &live);
    CHECK (v3 != NULL && live == 0);
    CHECK (bmfile_decode (v3, l3, &g, &why) == 0 && g.n == 0 &&
           g.live_offset == 0);
    bmfile_free (&g);
    free (v3);
  }

  {
    /* Version 4: the meta part, the intent map at the next page, the
     * newest checkpoint's bits at the page after it.
     */
    struct bmfile_layout lay;
    uint64_t nbits = bms[1]->nbits, nreg, meta;
    size_t l4;
    unsigned char *v4, *d4, bits[126];
    static const unsigned char zero[BMFILE_BOOT_ID_LEN];

    f.version = 0;
    f.write_ahead = true;
    f.n = 2;
    f.intent_shift = 6;
    memset (f.boot_id, 0xa5, sizeof f.boot_id);
    nreg = bmfile_intent_regions (nbits, 6);
    CHECK (nreg == (nbits + 63) / 64);
    v4 = bmfile_encode_layout (&f, bms, &l4, &lay);
    CHECK (v4 != NULL && memcmp (v4 + 8, "\4\0\0\0\3\0\0\0", 8) == 0);
    CHECK (lay.intent_offset == BMFILE_PAGE &&
           lay.intent_len == (nreg + 7) / 8 &&
           lay.live_offset == 2 * BMFILE_PAGE && lay.live_len == 126 &&
           l4 == lay.live_offset + 126);
    memcpy (&meta, v4 + 40, 8);
    meta = le64toh (meta);
    CHECK (bmfile_decode (v4, l4, &g, &why) == 0);
    CHECK (g.version == 4 && g.in_use && g.write_ahead && g.n == 2 &&
           g.intent_shift == 6 && g.intent_offset == lay.intent_offset &&
           g.intent_len == lay.intent_len &&
           g.live_offset == lay.live_offset &&
           bmfile_same_boot (g.boot_id, f.boot_id) &&
           !bmfile_same_boot (g.boot_id, zero) &&
           !bmfile_same_boot (zero, zero));
    CHECK (g.checkpoints[1].bits == v4 + lay.live_offset);
    bmfile_free (&g);
    d4 = malloc (l4);
    refused_damage (v4, l4, meta, 5, d4, "v4");
    memcpy (d4, v4, l4);                /* padding must be zeroes */
    d4[meta + 1] = 1;
    refused (d4, l4, "v4 padding before the intent map");
    memcpy (d4, v4, l4);
    d4[lay.intent_offset + lay.intent_len] = 1;
    refused (d4, l4, "v4 padding after the intent map");
    {
      /* An intent map placed at or after the live region, CRC fixed. */
      static const uint64_t bad_at[] = { 3 * BMFILE_PAGE,
                                         UINT64_C (0x4000001000) };
      size_t j;

      for (j = 0; j < 2; j++) {
        uint64_t v = htole64 (bad_at[j]);

        memcpy (d4, v4, l4);
        memcpy (d4 + 64, &v, 8);
        reseal (d4, meta);
        refused (d4, l4, "v4 intent map after the live region");
      }
    }
    /* Intent bits set in place: accepted, and expanded on demand. */
    memcpy (d4, v4, l4);
    d4[lay.intent_offset] = 0x02;       /* region 1: granules 64-127 */
    d4[lay.intent_offset + lay.intent_len - 1] |= 0x80; /* past the end */
    CHECK (bmfile_decode (d4, l4, &g, &why) == 0);
    memcpy (bits, g.checkpoints[1].bits, 126);
    CHECK (bmfile_expand_intent (v4 + lay.intent_offset + 0, 1, 6, bits,
                                 nbits) == 0);
    CHECK (bmfile_expand_intent (d4 + lay.intent_offset, g.intent_len, 6,
                                 bits, nbits) == 1 + (nreg % 8 == 0));
    CHECK (bitset_deserialize (&back, bits, 126) == 0 &&
           bitset_test (&back, 64) && bitset_test (&back, 127) &&
           !bitset_test (&back, 63) && !bitset_test (&back, 128) &&
           bitset_test (&back, 500));
    bmfile_free (&g);
    free (d4);
    free (v4);
  }

  free (copy);
  free (buf);
  bitset_free (&a);
  bitset_free (&b);
  bitset_free (&back);
  UNIT_EXIT ();
}
