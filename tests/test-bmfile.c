/* nbdkit-fleece
 * SPDX-License-Identifier: BSD-3-Clause
 *
 * Unit tests for common/bmfile.c: a round trip, and every kind of
 * damage is refused.
 */

#include <config.h>

#include <endian.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "bitmap.h"
#include "bmfile.h"
#include "crc32.h"
#include "unit.h"

/* Recompute the trailing CRC after editing buf. */
static void
reseal (unsigned char *buf, size_t len)
{
  uint32_t crc = htole32 (fleece_crc32 (0, buf, len - 4));

  memcpy (buf + len - 4, &crc, 4);
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

int
main (void)
{
  struct bitmap a = BITMAP_INIT, b = BITMAP_INIT, back = BITMAP_INIT;
  struct bmfile_checkpoint cps[2] = {
    { .name = "c1", .seq = 1, .created = 1795186800, .consistent = true },
    { .name = "backup-2.x", .seq = 7, .created = 1795190400,
      .consistent = false },
  };
  struct bmfile f = {
    .in_use = true, .disk_size = 1000 * 65536 + 17, .granularity = 65536,
    .next_seq = 8, .n = 2, .checkpoints = cps,
  };
  const struct bitmap *bms[2] = { &a, &b };
  struct bmfile g;
  unsigned char *buf, *copy;
  const char *why;
  size_t len, i;

  CHECK (bitmap_init (&a, 1001) == 0);
  CHECK (bitmap_init (&b, 1001) == 0);
  CHECK (bitmap_init (&back, 1001) == 0);
  bitmap_set_range (&a, 3, 70);
  bitmap_set (&a, 1000);
  bitmap_set_range (&b, 500, 2);

  buf = bmfile_encode (&f, bms, &len);
  CHECK (buf != NULL);
  CHECK (memcmp (buf, "FLEECEBM", 8) == 0);
  CHECK (len == 40 + (1 + 2 + 25 + 126) + (1 + 10 + 25 + 126) + 4);

  /* Round trip. */
  CHECK (bmfile_decode (buf, len, &g, &why) == 0);
  CHECK (g.in_use && g.disk_size == f.disk_size && g.granularity == 65536);
  CHECK (g.next_seq == 8 && g.n == 2);
  CHECK (strcmp (g.checkpoints[0].name, "c1") == 0);
  CHECK (strcmp (g.checkpoints[1].name, "backup-2.x") == 0);
  CHECK (g.checkpoints[0].seq == 1 && g.checkpoints[1].seq == 7);
  CHECK (g.checkpoints[0].created == 1795186800);
  CHECK (g.checkpoints[0].consistent && !g.checkpoints[1].consistent);
  CHECK (bitmap_deserialize (&back, g.checkpoints[0].bits,
                             g.checkpoints[0].bits_len) == 0);
  CHECK (bitmap_count (&back) == 71 && bitmap_test (&back, 1000) &&
         bitmap_test (&back, 3) && !bitmap_test (&back, 2));
  CHECK (bitmap_deserialize (&back, g.checkpoints[1].bits,
                             g.checkpoints[1].bits_len) == 0);
  CHECK (bitmap_count (&back) == 2 && bitmap_test (&back, 501));
  bmfile_free (&g);

  /* No checkpoints at all is fine. */
  f.n = 0;
  copy = bmfile_encode (&f, bms, &i);
  CHECK (copy != NULL && i == 44);
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
  copy[8] = 2;
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
  copy[41] = '/';
  reseal (copy, len);
  refused (copy, len, "name");
  memcpy (copy, buf, len);               /* zero-length name */
  copy[40] = 0;
  reseal (copy, len);
  refused (copy, len, "empty name");
  memcpy (copy, buf, len);               /* consistent byte not 0/1 */
  copy[40 + 1 + 2 + 16] = 2;
  reseal (copy, len);
  refused (copy, len, "consistent");
  memcpy (copy, buf, len);               /* bitmap longer than the file */
  copy[40 + 1 + 2 + 17 + 7] = 0x10;
  reseal (copy, len);
  refused (copy, len, "bitmap length");
  memcpy (copy, buf, len);               /* NUL inside a name */
  copy[42] = '\0';
  reseal (copy, len);
  refused (copy, len, "NUL in name");
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
                        .next_seq = 9, .n = 2 };
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
    unsigned char *longer = malloc (len + 1);   /* trailing garbage */

    memcpy (longer, buf, len - 4);
    longer[len - 4] = 0;
    reseal (longer, len + 1);
    refused (longer, len + 1, "trailing bytes");
    free (longer);
  }

  free (copy);
  free (buf);
  bitmap_free (&a);
  bitmap_free (&b);
  bitmap_free (&back);
  UNIT_EXIT ();
}
