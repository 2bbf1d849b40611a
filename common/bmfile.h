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
#define BMFILE_VERSION 4          /* written; 1 to 4 are read */
#define BMFILE_FLAG_IN_USE 1
#define BMFILE_FLAG_WRITE_AHEAD 2 /* written with bitmap-sync=write-ahead */
/* Version 3: the newest checkpoint's bits (the "live region") start at
 * a multiple of BMFILE_PAGE after the checksummed part, so that they
 * can be updated in place a page at a time.
 */
#define BMFILE_PAGE 4096
/* Version 4 adds the intent map of the newest checkpoint: one bit per
 * region of 2^intent_shift granules, page-aligned before the live
 * region and also updated in place; and the boot id of the writer.
 */
#define BMFILE_BOOT_ID_LEN 16
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
  /* Decoded: 1 to 4.  Encoding: 2 writes version 2 (no live region),
   * 3 version 3 (no intent map), anything else version 4.
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
  /* Version 4: regions of 2^intent_shift granules (encoding: input);
   * the intent map's place, set as the live region's (encoding writes
   * it all clear); the boot id of the writer (encoding: input; all
   * zeroes: unknown).
   */
  uint32_t intent_shift;
  uint64_t intent_offset, intent_len;
  unsigned char boot_id[BMFILE_BOOT_ID_LEN];
};

/* Where an encoder put the in-place regions (0 and 0: none). */
struct bmfile_layout {
  uint64_t live_offset, live_len;
  uint64_t intent_offset, intent_len;
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

/* The same, with the places of both in-place regions. */
extern unsigned char *bmfile_encode_layout (const struct bmfile *f,
                                            const struct bitset *const *bitmaps,
                                            size_t *len,
                                            struct bmfile_layout *lay);

/* Regions of 2^shift granules for nbits granules, and the bytes of
 * their intent map.
 */
extern uint64_t bmfile_intent_regions (uint64_t nbits, uint32_t shift);

/* Recovery after a power loss (version 4): set in live (the newest
 * checkpoint's nbits bits, serialised) every granule of every region
 * whose bit is set in intent (intent_len bytes); bits past nbits stay
 * clear.  Returns the number of regions set in intent.
 */
extern uint64_t bmfile_expand_intent (const unsigned char *intent,
                                      uint64_t intent_len, uint32_t shift,
                                      unsigned char *live, uint64_t nbits);

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

/* True if two boot ids are known (not all zeroes) and equal. */
extern bool bmfile_same_boot (const unsigned char *a, const unsigned char *b);

/* A disk id: 1 to BMFILE_DISK_ID_MAX printable ASCII characters
 * without spaces (0x21 to 0x7e).
 */
extern bool bmfile_valid_disk_id (const char *id);

#endif /* FLEECE_BMFILE_H */
