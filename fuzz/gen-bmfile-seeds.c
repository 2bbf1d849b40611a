/* nbdkit-fleece
 * SPDX-License-Identifier: BSD-3-Clause
 *
 * Writes the seed corpus of fuzz-bmfile: a few valid bitmap files made
 * with bmfile_encode (version 2, v3-NAME in version 3, v4-NAME in
 * version 4, with an intent map and a boot id), and the
 * same files in version 1 (v1-NAME: no disk id, no reasons) for the
 * old format's decoder.  Not part of any build; run it only when the
 * file format changes (see README.md, "Seeds"):
 *
 *   make -C fuzz regen-bmfile-seeds
 */

#include <config.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bitset.h"
#include "bmfile.h"
#include "crc32.h"
#include "le.h"

static void
die (const char *what)
{
  perror (what);
  exit (EXIT_FAILURE);
}

static void
write_seed (const char *dir, const char *name, const struct bmfile *f,
            const struct bitset *const *bms)
{
  char path[4096];
  unsigned char *buf;
  size_t len;
  FILE *fp;

  struct bmfile g = *f;
  int v;

  /* NAME in version 2, v3-NAME in version 3, v4-NAME in version 4
   * (what the filter writes).
   */
  for (v = 2; v <= 4; v++) {
    g.version = v;
    g.write_ahead = v >= 3;
    g.intent_shift = v == 4 ? 6 : 0;
    memset (g.boot_id, v == 4 ? 0x5a : 0, sizeof g.boot_id);
    buf = bmfile_encode (&g, bms, &len);
    if (buf == NULL)
      die ("bmfile_encode");
    snprintf (path, sizeof path, v == 2 ? "%s/%s" : v == 3 ? "%s/v3-%s"
              : "%s/v4-%s", dir, name);
    fp = fopen (path, "wb");
    if (fp == NULL || fwrite (buf, 1, len, fp) != len || fclose (fp) != 0)
      die (path);
    printf ("%s: %zu bytes\n", path, len);
    free (buf);
  }
}

/* The same file in format version 1: drop the disk id and every
 * checkpoint's reason (length byte and text), version 1, new CRC.
 */
static void
write_v1_seed (const char *dir, const char *name, const struct bmfile *f,
               const struct bitset *const *bms)
{
  struct bmfile g = *f;
  struct bmfile_checkpoint *c = calloc (f->n + 1, sizeof *c);
  unsigned char *buf, *out, *p, *q;
  char path[4096];
  size_t len, olen;
  uint32_t i;
  uint64_t blen;
  FILE *fp;

  if (c == NULL)
    die ("calloc");
  memcpy (c, f->checkpoints, f->n * sizeof *c);
  for (i = 0; i < f->n; i++)
    c[i].reason[0] = '\0';
  g.checkpoints = c;
  g.disk_id[0] = '\0';
  g.version = 2;
  buf = bmfile_encode (&g, bms, &len);
  out = malloc (len);
  if (buf == NULL || out == NULL)
    die ("bmfile_encode");
  memcpy (out, buf, 40);
  le_store32 (out + 8, 1);
  p = buf + 41;                 /* past the empty disk id */
  q = out + 40;
  for (i = 0; i < f->n; i++) {
    size_t head = 1 + p[0] + 17;  /* name length, name, seq, time, flag */

    memcpy (q, p, head);
    q += head;
    p += head + 1;              /* the empty reason */
    blen = le_load64 (p) + 8;
    memcpy (q, p, blen);
    q += blen;
    p += blen;
  }
  olen = q - out + 4;
  le_store32 (q, fleece_crc32 (0, out, olen - 4));
  snprintf (path, sizeof path, "%s/v1-%s", dir, name);
  fp = fopen (path, "wb");
  if (fp == NULL || fwrite (out, 1, olen, fp) != olen || fclose (fp) != 0)
    die (path);
  printf ("%s: %zu bytes\n", path, olen);
  free (out);
  free (buf);
  free (c);
}

/* One bit per granule of the disk. */
static void
make_bitmap (struct bitset *bm, uint64_t disk_size, uint32_t granularity)
{
  uint64_t granules = (disk_size + granularity - 1) / granularity;

  if (bitset_init (bm, granules) == -1)
    die ("bitset_init");
}

int
main (int argc, char *argv[])
{
  struct bmfile_checkpoint c[3];
  const struct bitset *ptrs[3];
  struct bitset bms[3];
  struct bmfile f;
  const char *dir;
  int i;

  if (argc != 2) {
    fprintf (stderr, "usage: %s DIRECTORY\n", argv[0]);
    exit (EXIT_FAILURE);
  }
  dir = argv[1];
  memset (c, 0, sizeof c);
  for (i = 0; i < 3; i++)
    ptrs[i] = &bms[i];

  /* No checkpoints: the file written when tracking is empty. */
  f = (struct bmfile) {
    .in_use = false, .disk_size = 64 << 20, .granularity = 65536,
    .next_seq = 1, .n = 0, .checkpoints = c,
  };
  write_seed (dir, "empty", &f, ptrs);
  write_v1_seed (dir, "empty", &f, ptrs);

  /* One checkpoint, 1 MiB at 64K: 16 granules, 2 bytes of bits. */
  f = (struct bmfile) {
    .in_use = true, .disk_size = 1 << 20, .granularity = 65536,
    .next_seq = 2, .n = 1, .checkpoints = c,
  };
  strcpy (c[0].name, "daily-1");
  c[0].seq = 1;
  c[0].created = 1767225600;    /* 2026-01-01T00:00:00Z */
  c[0].consistent = true;
  make_bitmap (&bms[0], f.disk_size, f.granularity);
  bitset_set (&bms[0], 0);
  bitset_set_range (&bms[0], 5, 3);
  bitset_set (&bms[0], 15);
  write_seed (dir, "one-checkpoint", &f, ptrs);
  write_v1_seed (dir, "one-checkpoint", &f, ptrs);
  bitset_free (&bms[0]);

  /* A chain of three; a disk size that is not a multiple of the
   * granularity (so the last byte has padding bits), one checkpoint
   * inconsistent.
   */
  f = (struct bmfile) {
    .in_use = false, .disk_size = 1000000, .granularity = 4096,
    .next_seq = 9, .n = 3, .checkpoints = c, .disk_id = "vm1/disk-0",
  };
  strcpy (c[0].name, "full.2026-01-01");
  strcpy (c[1].name, "inc_1");
  strcpy (c[2].name, "Inc-2");
  for (i = 0; i < 3; i++) {
    c[i].seq = (uint64_t) (3 * i + 2);
    c[i].created = 1767225600 + 86400 * i;
    c[i].consistent = i != 1;
    if (i == 1)
      strcpy (c[i].reason, "server did not stop cleanly (file last "
              "written 2026-01-02T00:00:00Z)");
    make_bitmap (&bms[i], f.disk_size, f.granularity);
    bitset_set_range (&bms[i], (uint64_t) (i * 40), 30);
  }
  bitset_set (&bms[2], bms[2].nbits - 1);
  write_seed (dir, "three-checkpoints", &f, ptrs);
  write_v1_seed (dir, "three-checkpoints", &f, ptrs);
  for (i = 0; i < 3; i++)
    bitset_free (&bms[i]);

  /* Edge values: an empty disk (no bits), the longest name, the
   * largest numbers.
   */
  f = (struct bmfile) {
    .in_use = true, .disk_size = 0, .granularity = 65536,
    .next_seq = UINT64_MAX, .n = 1, .checkpoints = c,
  };
  memset (c[0].name, 'x', FLEECE_NAME_MAX);
  c[0].name[FLEECE_NAME_MAX] = '\0';
  c[0].seq = UINT64_MAX - 1;
  c[0].created = INT64_MAX;
  c[0].consistent = false;
  memset (c[0].reason, '~', BMFILE_REASON_MAX);
  c[0].reason[BMFILE_REASON_MAX] = '\0';
  memset (f.disk_id, '!', BMFILE_DISK_ID_MAX);
  f.disk_id[BMFILE_DISK_ID_MAX] = '\0';
  make_bitmap (&bms[0], 0, 65536);
  write_seed (dir, "edge-values", &f, ptrs);
  write_v1_seed (dir, "edge-values", &f, ptrs);
  bitset_free (&bms[0]);

  return EXIT_SUCCESS;
}
