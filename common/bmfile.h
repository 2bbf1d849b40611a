/* nbdkit-fleece
 * SPDX-License-Identifier: BSD-3-Clause
 *
 * Encoding and decoding of the dirty-bitmap filter's bitmap file
 * (format in nbdkit-dirty-bitmap-filter(1)).  Pure functions with no
 * I/O and no nbdkit calls, so they can be unit-tested and fuzzed.
 */

#ifndef FLEECE_BMFILE_H
#define FLEECE_BMFILE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "bitset.h"
#include "size.h"

#define BMFILE_MAGIC "FLEECEBM"
#define BMFILE_VERSION 3          /* written; 1, 2 and 3 are read */
#define BMFILE_FLAG_IN_USE 1
#define BMFILE_FLAG_WRITE_AHEAD 2 /* written with bitmap-sync=write-ahead */
/* Version 3: the newest checkpoint's bits (the "live region") start at
 * a multiple of BMFILE_PAGE after the checksummed part, so that they
 * can be updated in place a page at a time.
 */
#define BMFILE_PAGE 4096
#define BMFILE_DISK_ID_MAX 64     /* bitmap-disk-id= */
#define BMFILE_REASON_MAX 255     /* why a checkpoint is inconsistent */

struct bmfile_checkpoint {
  char name[FLEECE_NAME_MAX + 1];
  uint64_t seq;
  int64_t created;
  bool consistent;
  /* Begun by a backup job that has not completed (format 3 only): a
   * loader merges it back into the checkpoint before it.
   */
  bool provisional;
  /* Why it is inconsistent (printable ASCII), or "" (consistent, or
   * not recorded: version 1).  Encoding truncates it to
   * BMFILE_REASON_MAX bytes.
   */
  char reason[BMFILE_REASON_MAX + 1];
  /* Decoding: the serialised bitmap, pointing into the decoded buffer.
   * Encoding: ignored (the bitmaps are passed separately).
   */
  const unsigned char *bits;
  uint64_t bits_len;
};

struct bmfile {
  /* Decoded: 1, 2 or 3.  Encoding: 2 writes version 2 (no live
   * region), anything else version 3.
   */
  uint32_t version;
  bool in_use;
  bool write_ahead;             /* BMFILE_FLAG_WRITE_AHEAD (version 3) */
  /* The disk the file belongs to (bitmap-disk-id=), or "": none
   * recorded (always so in version 1).
   */
  char disk_id[BMFILE_DISK_ID_MAX + 1];
  uint64_t disk_size;
  uint32_t granularity;
  uint64_t next_seq;
  uint32_t n;                   /* number of checkpoints */
  struct bmfile_checkpoint *checkpoints;  /* n entries, oldest first */
  /* Version 3 only, set by decoding and by bmfile_encode_live: where
   * the live region (the newest checkpoint's bits) is in the file, 0
   * and 0 if there is none (no checkpoints).
   */
  uint64_t live_offset, live_len;
};

/* Encode f, with checkpoint i's bits taken from bitmaps[i], into a
 * malloc'd buffer (*len bytes).  NULL with errno on failure.
 */
extern unsigned char *bmfile_encode (const struct bmfile *f,
                                     const struct bitset *const *bitmaps,
                                     size_t *len);
/* The same, also saying where the live region is (*live_offset, 0 if
 * there are no checkpoints); its length is the newest bitmap's
 * bitset_serialized_size.
 */
extern unsigned char *bmfile_encode_live (const struct bmfile *f,
                                          const struct bitset *const *bitmaps,
                                          size_t *len,
                                          uint64_t *live_offset);

/* Decode buf.  Returns 0 (f->checkpoints malloc'd, their bits pointing
 * into buf), or -1 with *why saying what is wrong (f left empty).
 * In version 3 the newest checkpoint's bits point into the live
 * region, which the checksum does not cover (it is updated in place).
 * Every field is checked: checksum, magic, version, names (valid,
 * without NUL bytes, unique), sequence numbers (growing, below
 * next_seq), disk id (valid, see bmfile_valid_disk_id), reasons
 * (printable ASCII, only on inconsistent checkpoints), lengths, and no
 * bytes may be left over.
 */
extern int bmfile_decode (const unsigned char *buf, size_t len,
                          struct bmfile *f, const char **why);
extern void bmfile_free (struct bmfile *f);

/* A disk id: 1 to BMFILE_DISK_ID_MAX printable ASCII characters
 * without spaces (0x21 to 0x7e).
 */
extern bool bmfile_valid_disk_id (const char *id);

#endif /* FLEECE_BMFILE_H */
