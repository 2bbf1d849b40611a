/* nbdkit-fleece
 * SPDX-License-Identifier: BSD-3-Clause
 *
 * The bitmap file's decoder: checks every field, the checksum and the
 * layout before it trusts any of them.  The format is described at the
 * top of bmfile.c and in bmfile.h.
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

#define HEADER_SIZE 40          /* versions 1 and 2, before the disk id */
#define HEADER3_SIZE 64         /* version 3, before the disk id */
#define HEADER4_SIZE 100        /* version 4, before the disk id */

/* A cursor over the input. */
struct in {
  const unsigned char *p;
  size_t left;
};

static bool
get (struct in *in, void *v, size_t n)
{
  if (in->left < n)
    return false;
  memcpy (v, in->p, n);
  in->p += n;
  in->left -= n;
  return true;
}

static bool get8 (struct in *in, uint8_t *v) { return get (in, v, 1); }

static bool
get32 (struct in *in, uint32_t *v)
{
  if (!get (in, v, 4))
    return false;
  *v = le32toh (*v);
  return true;
}

static bool
get64 (struct in *in, uint64_t *v)
{
  if (!get (in, v, 8))
    return false;
  *v = le64toh (*v);
  return true;
}

/* n bytes of printable ASCII (from lo to 0x7e) into s, NUL-terminated. */
static bool
get_text (struct in *in, char *s, size_t n, unsigned char lo)
{
  size_t i;

  if (!get (in, s, n))
    return false;
  s[n] = '\0';
  for (i = 0; i < n; i++)
    if ((unsigned char) s[i] < lo || (unsigned char) s[i] > 0x7e)
      return false;
  return true;
}

static bool
get_checkpoint (struct in *in, uint32_t version, struct bmfile_checkpoint *c)
{
  uint8_t nlen, consistent, rlen = 0;
  uint64_t seq, created;

  if (!get8 (in, &nlen) || nlen == 0 || nlen > FLEECE_NAME_MAX ||
      !get (in, c->name, nlen))
    return false;
  c->name[nlen] = '\0';
  if (strlen (c->name) != nlen || !fleece_valid_name (c->name) ||
      !get64 (in, &seq) || !get64 (in, &created) ||
      !get8 (in, &consistent) || consistent > (version >= 3 ? 3 : 1))
    return false;
  /* Format 3: bit 1 says provisional (see bmfile.h). */
  c->provisional = consistent >> 1;
  consistent &= 1;
  if (version >= 2 &&
      (!get8 (in, &rlen) || (consistent && rlen > 0) ||
       !get_text (in, c->reason, rlen, 0x20)))
    return false;
  if (!get64 (in, &c->bits_len) || c->bits_len > in->left)
    return false;
  c->seq = seq;
  c->created = (int64_t) created;
  c->consistent = consistent;
  c->bits = in->p;
  in->p += c->bits_len;
  in->left -= c->bits_len;
  return true;
}

/* Version 3's layout fields: the checksummed part is [0, *meta), the
 * live region [live, live + live_len) ends the file.  False if they do
 * not describe len bytes.
 */
static bool
v3_layout (const unsigned char *buf, size_t len, uint64_t *meta,
           uint64_t *live, uint64_t *live_len)
{
  if (len < HEADER3_SIZE + 1 + 4)
    return false;
  *meta = le_load64 (buf + 40);
  *live = le_load64 (buf + 48);
  *live_len = le_load64 (buf + 56);
  if (*meta < HEADER3_SIZE + 1 + 4 || *meta > len)
    return false;
  if (*live == 0)
    return *live_len == 0 && *meta == len;
  return *live % BMFILE_PAGE == 0 && *live >= *meta && *live <= len &&
    *live_len == len - *live;
}

/* Version 4's layout: as version 3's, and the intent map
 * [intent, intent + intent_len) is page-aligned, between the
 * checksummed part and the live region, no longer than the live
 * region, and present exactly when the live region is.  Every byte
 * between the checksummed part and the live region that is not in the
 * intent map (padding, never written in place) is zero.
 */
static bool
v4_layout (const unsigned char *buf, size_t len, uint64_t *meta,
           uint64_t *live, uint64_t *live_len, uint64_t *intent,
           uint64_t *intent_len)
{
  uint64_t k;

  if (len < HEADER4_SIZE + 1 + 4 || !v3_layout (buf, len, meta, live, live_len) ||
      *meta < HEADER4_SIZE + 1 + 4)
    return false;
  *intent = le_load64 (buf + 64);
  *intent_len = le_load64 (buf + 72);
  if (*live == 0)
    return *intent == 0 && *intent_len == 0;
  if (*intent % BMFILE_PAGE != 0 || *intent < *meta || *intent > *live ||
      *intent_len > *live_len || *intent_len > *live - *intent)
    return false;
  for (k = *meta; k < *live; k++)
    if (buf[k] != 0 && (k < *intent || k >= *intent + *intent_len))
      return false;
  return true;
}

int
bmfile_decode (const unsigned char *buf, size_t len, struct bmfile *f,
               const char **why)
{
  struct in in = { buf, len };
  char magic[8];
  uint32_t version, flags = 0, i;
  uint64_t meta = len, live = 0, live_len = 0, intent = 0, intent_len = 0;

  memset (f, 0, sizeof *f);
  if (len < HEADER_SIZE + 4) {
    *why = "the file is truncated";
    return -1;
  }
  version = le_load32 (buf + 8);
  if ((version == 3 && !v3_layout (buf, len, &meta, &live, &live_len)) ||
      (version == 4 &&
       !v4_layout (buf, len, &meta, &live, &live_len, &intent,
                   &intent_len))) {
    *why = "the file is truncated or its layout is invalid";
    return -1;
  }
  if (le_load32 (buf + meta - 4) != fleece_crc32 (0, buf, meta - 4)) {
    *why = "the checksum does not match (damaged or truncated)";
    return -1;
  }
  in.left = meta - 4;
  get (&in, magic, 8);
  if (memcmp (magic, BMFILE_MAGIC, 8) != 0) {
    *why = "it is not a bitmap file of this filter (bad magic)";
    return -1;
  }
  get32 (&in, &version);
  if (version < 1 || version > 4) {
    *why = "unknown format version";
    return -1;
  }
  f->version = version;
  get32 (&in, &flags);
  get64 (&in, &f->disk_size);
  get32 (&in, &f->granularity);
  get32 (&in, &f->n);
  get64 (&in, &f->next_seq);
  f->in_use = flags & BMFILE_FLAG_IN_USE;
  if (version >= 3) {
    uint64_t skip;

    f->write_ahead = flags & BMFILE_FLAG_WRITE_AHEAD;
    get64 (&in, &skip);
    get64 (&in, &skip);
    get64 (&in, &skip);
    f->live_offset = live;
    f->live_len = live_len;
  }
  if (version >= 4) {
    uint64_t skip;

    get64 (&in, &skip);
    get64 (&in, &skip);
    get32 (&in, &f->intent_shift);
    get (&in, f->boot_id, BMFILE_BOOT_ID_LEN);
    f->intent_offset = intent;
    f->intent_len = intent_len;
    if (f->intent_shift > 63) {
      *why = "its structure is invalid";
      memset (f, 0, sizeof *f);
      return -1;
    }
  }
  if (version >= 2) {
    uint8_t idlen;

    if (!get8 (&in, &idlen) || idlen > BMFILE_DISK_ID_MAX ||
        !get_text (&in, f->disk_id, idlen, 0x21)) {
      *why = "its structure is invalid";
      memset (f, 0, sizeof *f);
      return -1;
    }
  }

  /* Each checkpoint takes at least 27 bytes: a bound before calloc. */
  if (f->n > in.left / 27) {
    *why = "its structure is invalid";
    memset (f, 0, sizeof *f);
    return -1;
  }
  f->checkpoints = calloc (f->n ? f->n : 1, sizeof *f->checkpoints);
  if (f->checkpoints == NULL) {
    *why = "out of memory";
    memset (f, 0, sizeof *f);
    return -1;
  }
  for (i = 0; i < f->n; i++) {
    uint32_t j;

    if (!get_checkpoint (&in, version, &f->checkpoints[i]))
      goto bad;
    /* A chain in time: sequence numbers grow, names are unique. */
    if (i > 0 && f->checkpoints[i].seq <= f->checkpoints[i - 1].seq)
      goto bad;
    for (j = 0; j < i; j++)
      if (strcmp (f->checkpoints[i].name, f->checkpoints[j].name) == 0)
        goto bad;
  }
  if (f->n > 0 && f->next_seq <= f->checkpoints[f->n - 1].seq)
    goto bad;
  if (in.left != 0)
    goto bad;
  if (version >= 3) {
    /* The newest checkpoint, and only it, has its bits in the live
     * region; without checkpoints there is none.
     */
    if ((f->n == 0) != (live == 0))
      goto bad;
    if (f->n > 0) {
      struct bmfile_checkpoint *c = &f->checkpoints[f->n - 1];

      uint64_t k;

      if (c->bits_len != 0)
        goto bad;
      /* The padding is never written in place: it must be zeroes
       * (version 4: checked with the intent map by v4_layout).
       */
      for (k = meta; version == 3 && k < live; k++)
        if (buf[k] != 0)
          goto bad;
      c->bits = buf + live;
      c->bits_len = live_len;
    }
  }
  return 0;

 bad:
  *why = "its structure is invalid";
  bmfile_free (f);
  memset (f, 0, sizeof *f);
  return -1;
}

bool
bmfile_valid_disk_id (const char *id)
{
  size_t i, n = strlen (id);

  if (n < 1 || n > BMFILE_DISK_ID_MAX)
    return false;
  for (i = 0; i < n; i++)
    if ((unsigned char) id[i] < 0x21 || (unsigned char) id[i] > 0x7e)
      return false;
  return true;
}

void
bmfile_free (struct bmfile *f)
{
  free (f->checkpoints);
  f->checkpoints = NULL;
  f->n = 0;
}
