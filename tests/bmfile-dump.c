/* nbdkit-fleece
 * SPDX-License-Identifier: BSD-3-Clause
 *
 * bmfile-dump [-r] FILE: decode a bitmap file with common/bmfile.c (the
 * filter's own decoder) and print it for the power-loss test:
 *
 *   ok VERSION IN_USE WRITE_AHEAD DISK_SIZE GRANULARITY N REGIONS
 *   C NAME CONSISTENT GRANULE GRANULE ...     (one line per checkpoint)
 *
 * -r: recover as the filter does after a reboot (a file of version 4
 * left in use in write-ahead mode: every region set in the intent map
 * counts as written in the newest checkpoint); REGIONS is how many
 * regions were set (0 without -r).
 *
 * or "bad WHY" (exit status 0 either way; 1 if the file cannot be
 * read).  Test-only code.
 */

#include <config.h>

#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

  bool reboot = argc == 3 && strcmp (argv[1], "-r") == 0;
  uint64_t regions = 0;

  if (reboot) {
    argv++;
    argc--;
  }
  if (argc != 2 || (fp = fopen (argv[1], "rb")) == NULL) {
    perror (argc == 2 ? argv[1] : "usage: bmfile-dump [-r] FILE");
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
  if (reboot && f.version >= 4 && f.in_use && f.write_ahead && f.n > 0 &&
      f.granularity > 0) {
    uint64_t nbits = (f.disk_size + f.granularity - 1) / f.granularity;

    if (f.live_len != (nbits + 7) / 8) {
      printf ("bad live region does not fit the disk\n");
      return 0;
    }
    /* The decoded bits point into buf, which is ours. */
    regions = bmfile_expand_intent (buf + f.intent_offset, f.intent_len,
                                    f.intent_shift, buf + f.live_offset,
                                    nbits);
  }
  printf ("ok %" PRIu32 " %d %d %" PRIu64 " %" PRIu32 " %" PRIu32 " %"
          PRIu64 "\n", f.version, f.in_use, f.write_ahead, f.disk_size,
          f.granularity, f.n, regions);
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
