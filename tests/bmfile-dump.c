/* nbdkit-fleece
 * SPDX-License-Identifier: BSD-3-Clause
 *
 * bmfile-dump FILE: decode a bitmap file with common/bmfile.c (the
 * filter's own decoder) and print it for the power-loss test:
 *
 *   ok VERSION IN_USE WRITE_AHEAD DISK_SIZE GRANULARITY N
 *   C NAME CONSISTENT GRANULE GRANULE ...     (one line per checkpoint)
 *
 * or "bad WHY" (exit status 0 either way; 1 if the file cannot be
 * read).  Test-only code.
 */

#include <config.h>

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>

#include "bitset.h"
#include "bmfile.h"

int
main (int argc, char *argv[])
{
  FILE *fp;
  unsigned char *buf;
  long len;
  struct bmfile f;
  const char *why;
  uint32_t i;

  if (argc != 2 || (fp = fopen (argv[1], "rb")) == NULL) {
    perror (argc == 2 ? argv[1] : "usage: bmfile-dump FILE");
    return 1;
  }
  fseek (fp, 0, SEEK_END);
  len = ftell (fp);
  rewind (fp);
  buf = malloc (len ? len : 1);
  if (buf == NULL || fread (buf, 1, len, fp) != (size_t) len)
    return 1;
  fclose (fp);
  if (bmfile_decode (buf, len, &f, &why) == -1) {
    printf ("bad %s\n", why);
    return 0;
  }
  printf ("ok %" PRIu32 " %d %d %" PRIu64 " %" PRIu32 " %" PRIu32 "\n",
          f.version, f.in_use, f.write_ahead, f.disk_size, f.granularity,
          f.n);
  for (i = 0; i < f.n; i++) {
    const struct bmfile_checkpoint *c = &f.checkpoints[i];
    uint64_t g;

    printf ("C %s %d", c->name, c->consistent);
    for (g = 0; g < c->bits_len * 8; g++)
      if (c->bits[g / 8] & (1 << (g % 8)))
        printf (" %" PRIu64, g);
    printf ("\n");
  }
  bmfile_free (&f);
  free (buf);
  return 0;
}
