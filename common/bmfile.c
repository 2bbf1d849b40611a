/* nbdkit-fleece
 * SPDX-License-Identifier: BSD-3-Clause
 *
 * The bitmap file's encoder and decoder.  All integers are
 * little-endian; the last four bytes are the CRC-32 of the rest.
 */

#include <config.h>

#include <endian.h>
#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "bitmap.h"
#include "bmfile.h"
#include "crc32.h"
#include "size.h"

#define HEADER_SIZE 40

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

unsigned char *
bmfile_encode (const struct bmfile *f, const struct bitmap *const *bitmaps,
               size_t *len)
{
  struct out o = { NULL, 0, 0, false };
  size_t nlen;
  uint32_t i;

  put (&o, BMFILE_MAGIC, 8);
  put32 (&o, BMFILE_VERSION);
  put32 (&o, f->in_use ? BMFILE_FLAG_IN_USE : 0);
  put64 (&o, f->disk_size);
  put32 (&o, f->granularity);
  put32 (&o, f->n);
  put64 (&o, f->next_seq);
  nlen = strnlen (f->disk_id, BMFILE_DISK_ID_MAX);
  put8 (&o, nlen);
  put (&o, f->disk_id, nlen);
  for (i = 0; i < f->n; i++) {
    const struct bmfile_checkpoint *c = &f->checkpoints[i];
    size_t rlen = c->consistent ? 0 : strnlen (c->reason, BMFILE_REASON_MAX);
    size_t blen = bitmap_serialized_size (bitmaps[i]);
    unsigned char *bits;

    nlen = strlen (c->name);
    put8 (&o, nlen);
    put (&o, c->name, nlen);
    put64 (&o, c->seq);
    put64 (&o, c->created);
    put8 (&o, c->consistent);
    put8 (&o, rlen);
    put (&o, c->reason, rlen);
    put64 (&o, blen);
    bits = reserve (&o, blen);
    if (bits)
      bitmap_serialize (bitmaps[i], bits);
  }
  if (!o.failed)
    put32 (&o, fleece_crc32 (0, o.p, o.len));
  if (o.failed) {
    free (o.p);
    errno = ENOMEM;
    return NULL;
  }
  *len = o.len;
  return o.p;
}

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
      !get8 (in, &consistent) || consistent > 1)
    return false;
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

int
bmfile_decode (const unsigned char *buf, size_t len, struct bmfile *f,
               const char **why)
{
  struct in in = { buf, len };
  char magic[8];
  uint32_t version, flags, crc, i;

  memset (f, 0, sizeof *f);
  if (len < HEADER_SIZE + 4) {
    *why = "the file is truncated";
    return -1;
  }
  memcpy (&crc, buf + len - 4, 4);
  if (le32toh (crc) != fleece_crc32 (0, buf, len - 4)) {
    *why = "the checksum does not match (damaged or truncated)";
    return -1;
  }
  in.left -= 4;
  get (&in, magic, 8);
  if (memcmp (magic, BMFILE_MAGIC, 8) != 0) {
    *why = "it is not a bitmap file of this filter (bad magic)";
    return -1;
  }
  get32 (&in, &version);
  if (version != 1 && version != 2) {
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
    f->n = 0;
    return -1;
  }
  f->checkpoints = calloc (f->n ? f->n : 1, sizeof *f->checkpoints);
  if (f->checkpoints == NULL) {
    *why = "out of memory";
    f->n = 0;
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
  return 0;

 bad:
  *why = "its structure is invalid";
  bmfile_free (f);
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
