/* nbdkit-fleece
 * SPDX-License-Identifier: BSD-3-Clause
 *
 * libFuzzer harness for the dirty-bitmap filter's bitmap file decoder
 * (common/bmfile.c, with common/bitmap.c for the bits).  The input is
 * a whole bitmap file.
 *
 * Every input is decoded twice: as it is (which almost always fails at
 * the CRC check), and with its last four bytes replaced by the right
 * CRC-32, so that mutations reach the structure checks behind it.
 * For each decode:
 * - a failure must leave the struct empty and give a reason;
 * - a success must describe the input exactly: header fields, valid
 *   names, bits pointing inside the buffer in order;
 * - each checkpoint's bits are loaded the way the filter loads them
 *   (a bitmap of ceil(disk_size / granularity) bits, when bits_len
 *   matches that and is at most 1 MiB): bitset_deserialize must
 *   accept exactly the inputs whose padding bits are zero, and
 *   serialising back must give the same bytes and the same bit count;
 * - versions 1 to 4 decode; the disk id (version 2 on) and reasons
 *   (version 2 on, only on inconsistent checkpoints) are exactly their
 *   bytes, printable ASCII (the id without spaces); from version 3 on
 *   the CRC ends the checksummed part, the newest checkpoint's bits are
 *   the live region that ends the file, and a checkpoint's flag byte
 *   may also say provisional (bit 1);
 * - the file is encoded again with bmfile_encode (bitmaps of
 *   bits_len * 8 bits, so every decodable file can be re-encoded) and
 *   decoded: every field must survive, and when the flags word has no
 *   unknown bits the new file must be byte for byte the input
 *   (versions 2 and 3 are written back as they were; a version 1
 *   input comes back as version 4; a version 4 input is compared by
 *   fields only, as its intent map is written back clear and sized
 *   from the bits).
 */

#include <config.h>

#include <inttypes.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bitset.h"
#include "bmfile.h"
#include "crc32.h"
#include "le.h"
#include "size.h"
#include "fuzz-check.h"

#define HEADER_SIZE 40          /* magic .. next seq */
#define MAX_BITS_BYTES (1024 * 1024)

static uint64_t
popcount_bytes (const unsigned char *p, size_t n)
{
  uint64_t c = 0;
  size_t i;

  for (i = 0; i < n; i++)
    c += (uint64_t) __builtin_popcount (p[i]);
  return c;
}

/* Load the bits as the filter does: a bitmap of one bit per granule
 * of the disk described by the header.
 */
static void
check_header_sized (const struct bmfile *f, const struct bmfile_checkpoint *c)
{
  struct bitset bm;
  uint64_t granules;
  unsigned char *out;
  bool padding_clear;

  if (f->granularity == 0)
    return;
  granules = f->disk_size / f->granularity +
    (f->disk_size % f->granularity != 0);
  if (c->bits_len != granules / 8 + (granules % 8 != 0) ||
      c->bits_len > MAX_BITS_BYTES)
    return;

  CHECK (bitset_init (&bm, granules) == 0);
  CHECK (bitset_serialized_size (&bm) == c->bits_len);
  padding_clear = granules % 8 == 0 ||
    (c->bits[c->bits_len - 1] >> (granules % 8)) == 0;
  if (bitset_deserialize (&bm, c->bits, c->bits_len) == -1) {
    CHECK (!padding_clear);
    CHECK (bitset_count (&bm) == 0);     /* left unchanged */
    bitset_free (&bm);
    return;
  }
  CHECK (padding_clear);
  CHECK (bitset_count (&bm) == popcount_bytes (c->bits, c->bits_len));
  if (granules > 0) {
    uint64_t first = bitset_next_set (&bm, 0);

    CHECK (first <= granules);
    if (first < granules)
      CHECK ((c->bits[first / 8] >> (first % 8)) & 1);
    CHECK (bitset_test (&bm, granules - 1) ==
           ((c->bits[(granules - 1) / 8] >> ((granules - 1) % 8)) & 1));
  }
  out = malloc (c->bits_len ? c->bits_len : 1);
  CHECK (out != NULL);
  bitset_serialize (&bm, out);
  CHECK (memcmp (out, c->bits, c->bits_len) == 0);
  free (out);
  bitset_free (&bm);
}

static void
check_round_trip (const unsigned char *buf, size_t len, const struct bmfile *f)
{
  struct bitset *bms;
  const struct bitset **ptrs;
  struct bmfile g;
  unsigned char *enc;
  size_t enc_len, total = 0;
  const char *why = NULL;
  uint32_t i;

  for (i = 0; i < f->n; i++)
    total += f->checkpoints[i].bits_len;
  if (total > MAX_BITS_BYTES)
    return;

  bms = calloc (f->n ? f->n : 1, sizeof *bms);
  ptrs = calloc (f->n ? f->n : 1, sizeof *ptrs);
  CHECK (bms && ptrs);
  for (i = 0; i < f->n; i++) {
    const struct bmfile_checkpoint *c = &f->checkpoints[i];

    CHECK (bitset_init (&bms[i], c->bits_len * 8) == 0);
    CHECK (bitset_deserialize (&bms[i], c->bits, c->bits_len) == 0);
    ptrs[i] = &bms[i];
  }

  enc = bmfile_encode (f, ptrs, &enc_len);
  CHECK (enc != NULL);
  if (bmfile_decode (enc, enc_len, &g, &why) == -1) {
    fprintf (stderr, "re-encoded file does not decode: %s\n", why);
    CHECK (!"decode (encode (x)) succeeds");
  }
  CHECK (g.version == (f->version == 2 ? 2 : f->version == 3 ? 3 : 4));
  CHECK (g.version < 4 || (g.intent_shift == f->intent_shift &&
                           memcmp (g.boot_id, f->boot_id,
                                   BMFILE_BOOT_ID_LEN) == 0));
  CHECK (strcmp (g.disk_id, f->disk_id) == 0);
  CHECK (g.in_use == f->in_use);
  CHECK (g.disk_size == f->disk_size);
  CHECK (g.granularity == f->granularity);
  CHECK (g.next_seq == f->next_seq);
  CHECK (g.n == f->n);
  for (i = 0; i < f->n; i++) {
    const struct bmfile_checkpoint *a = &f->checkpoints[i];
    const struct bmfile_checkpoint *b = &g.checkpoints[i];

    CHECK (strcmp (a->name, b->name) == 0);
    CHECK (a->seq == b->seq);
    CHECK (a->created == b->created);
    CHECK (a->consistent == b->consistent);
    CHECK (a->provisional == b->provisional);
    CHECK (strcmp (a->reason, b->reason) == 0);
    CHECK (a->bits_len == b->bits_len);
    CHECK (memcmp (a->bits, b->bits, a->bits_len) == 0);
    CHECK (b->bits >= enc && b->bits + b->bits_len <= enc + enc_len);
  }

  /* The layout has no freedom except unknown flag bits (which the
   * decoder ignores and the encoder does not keep).
   */
  if (f->version == 1)
    CHECK (memcmp (enc, buf, 8) == 0 && le_load32 (enc + 8) == 4);
  else if (f->version == 4)
    ;  /* the intent map is re-encoded clear, sized from the bits */
  else if (le_load32 (buf + 12) <= (f->version == 3 ? 3u : 1u)) {
    CHECK (enc_len == len);
    CHECK (memcmp (enc, buf, len) == 0);
  }
  else if (f->version == 2)
    CHECK (enc_len == len && memcmp (enc, buf, 12) == 0 &&
           memcmp (enc + 16, buf + 16, len - 20) == 0);
  else
    CHECK (enc_len == len && memcmp (enc, buf, 12) == 0 &&
           memcmp (enc + 16, buf + 16, le_load64 (buf + 40) - 16 - 4) == 0 &&
           (f->n == 0 || memcmp (enc + f->live_offset, buf + f->live_offset,
                                 f->live_len) == 0));

  bmfile_free (&g);
  free (enc);
  for (i = 0; i < f->n; i++)
    bitset_free (&bms[i]);
  free (bms);
  free (ptrs);
}

static void
decode_and_check (const unsigned char *buf, size_t len)
{
  struct bmfile f;
  const char *why = NULL;
  const unsigned char *next, *end;
  uint32_t i;

  memset (&f, 0xa5, sizeof f);  /* decode must initialise everything */
  if (bmfile_decode (buf, len, &f, &why) == -1) {
    CHECK (why != NULL && *why != '\0');
    CHECK (f.n == 0 && f.checkpoints == NULL);
    bmfile_free (&f);           /* harmless on an empty struct */
    return;
  }

  /* Header. */
  CHECK (len >= HEADER_SIZE + 4);
  CHECK (memcmp (buf, BMFILE_MAGIC, 8) == 0);
  CHECK (le_load32 (buf + 8) == f.version);
  CHECK (f.version >= 1 && f.version <= 4);
  CHECK (f.in_use == ((le_load32 (buf + 12) & BMFILE_FLAG_IN_USE) != 0));
  CHECK (f.disk_size == le_load64 (buf + 16));
  CHECK (f.granularity == le_load32 (buf + 24));
  CHECK (f.n == le_load32 (buf + 28));
  CHECK (f.next_seq == le_load64 (buf + 32));
  end = f.version >= 3 ? buf + le_load64 (buf + 40) - 4 : buf + len - 4;
  CHECK (le_load32 (end) == fleece_crc32 (0, buf, end - buf));
  if (f.version == 4) {
    CHECK (f.intent_offset == le_load64 (buf + 64) &&
           f.intent_len == le_load64 (buf + 72) &&
           f.intent_shift == le_load32 (buf + 80) && f.intent_shift < 64 &&
           memcmp (f.boot_id, buf + 84, BMFILE_BOOT_ID_LEN) == 0);
    CHECK (f.intent_offset % BMFILE_PAGE == 0);
    CHECK (f.live_offset == 0 ? f.intent_offset == 0 && f.intent_len == 0
           : f.intent_offset >= (size_t) (end + 4 - buf)
           && f.intent_offset + f.intent_len <= f.live_offset);
  }
  if (f.version >= 3) {
    CHECK (f.write_ahead == ((le_load32 (buf + 12) & BMFILE_FLAG_WRITE_AHEAD)
                             != 0));
    CHECK (f.live_offset == le_load64 (buf + 48) &&
           f.live_len == le_load64 (buf + 56));
    CHECK (f.live_offset % BMFILE_PAGE == 0);
    CHECK (f.live_offset == 0 ? f.n == 0 && end + 4 == buf + len
           : f.live_offset + f.live_len == len);
  }
  CHECK (f.n == 0 || f.checkpoints != NULL);

  /* Checkpoints: names valid, fields match the bytes, bits in order
   * and inside the buffer, nothing left over.
   */
  next = buf + (f.version == 4 ? 100 : f.version == 3 ? 64 : HEADER_SIZE);
  if (f.version >= 2) {
    size_t idlen = strlen (f.disk_id);

    CHECK (next[0] == idlen && idlen <= BMFILE_DISK_ID_MAX);
    CHECK (memcmp (next + 1, f.disk_id, idlen) == 0);
    CHECK (idlen == 0 || bmfile_valid_disk_id (f.disk_id));
    next += 1 + idlen;
  }
  else
    CHECK (f.disk_id[0] == '\0');
  for (i = 0; i < f.n; i++) {
    const struct bmfile_checkpoint *c = &f.checkpoints[i];
    size_t nlen = strlen (c->name);

    CHECK (nlen >= 1 && nlen <= FLEECE_NAME_MAX);
    CHECK (fleece_valid_name (c->name));
    /* The whole name field is the name: no NUL inside it, so the
     * decoded name is exactly the bytes of the file.
     */
    if (next[0] != nlen) {
      fprintf (stderr, "checkpoint %" PRIu32 ": name field of %u bytes "
               "decoded as \"%s\" (%zu bytes)\n", i, next[0], c->name, nlen);
      CHECK (!"the name field holds exactly the name");
    }
    CHECK (memcmp (next + 1, c->name, nlen) == 0);
    next += 1 + nlen;
    CHECK (c->seq == le_load64 (next));
    CHECK ((uint64_t) c->created == le_load64 (next + 8));
    /* The flag byte: bit 0 consistent; from version 3, bit 1 provisional
     * (a backup job's checkpoint, see bmfile.h); nothing else.
     */
    CHECK (next[16] == ((c->consistent ? 1 : 0) | (c->provisional ? 2 : 0)));
    CHECK (f.version >= 3 || !c->provisional);
    next += 17;
    if (f.version >= 2) {
      size_t rlen = strlen (c->reason), j;

      CHECK (next[0] == rlen && rlen <= BMFILE_REASON_MAX);
      CHECK (!c->consistent || rlen == 0);
      CHECK (memcmp (next + 1, c->reason, rlen) == 0);
      for (j = 0; j < rlen; j++)
        CHECK (c->reason[j] >= 0x20 && c->reason[j] <= 0x7e);
      next += 1 + rlen;
    }
    else
      CHECK (c->reason[0] == '\0');
    if (f.version >= 3 && i == f.n - 1) {
      CHECK (le_load64 (next) == 0);
      next += 8;
      CHECK (c->bits == buf + f.live_offset && c->bits_len == f.live_len);
      continue;
    }
    CHECK (c->bits_len == le_load64 (next));
    next += 8;
    CHECK (c->bits == next);
    CHECK (c->bits_len <= (size_t) (end - next));
    next += c->bits_len;
  }
  CHECK (next == end);

  for (i = 0; i < f.n; i++)
    check_header_sized (&f, &f.checkpoints[i]);
  check_round_trip (buf, len, &f);
  bmfile_free (&f);
  CHECK (f.n == 0 && f.checkpoints == NULL);
}

/* Decode and check data with the CRC-32 of its first m - 4 bytes put
 * at m - 4, to get past the checksum.
 */
static void
decode_resealed (const uint8_t *data, size_t size, size_t m)
{
  unsigned char *copy = malloc (size);

  CHECK (copy != NULL);
  memcpy (copy, data, size);
  le_store32 (copy + m - 4, fleece_crc32 (0, copy, m - 4));
  decode_and_check (copy, size);
  free (copy);
}

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
  decode_and_check (data, size);

  /* Again with a correct CRC: at the end, and where a version 3 header
   * says the checksummed part ends.
   */
  if (size >= 4)
    decode_resealed (data, size, size);
  if (size >= 69) {
    uint64_t m = le_load64 (data + 40);

    if (m >= 4 && m <= size)
      decode_resealed (data, size, m);
  }
  return 0;
}
