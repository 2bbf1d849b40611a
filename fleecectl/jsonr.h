/* nbdkit-fleece
 * SPDX-License-Identifier: BSD-3-Clause
 *
 * A small JSON reader for fleecectl: parses one JSON text (RFC 8259)
 * into a tree of struct jval.  Pure (no I/O, no globals), bounded
 * nesting, takes a buffer and its length (no NUL needed), so it can be
 * fed arbitrary bytes by a fuzzer.
 *
 * Locking: none; a tree belongs to the caller.
 */

#ifndef FLEECECTL_JSONR_H
#define FLEECECTL_JSONR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum jtype { JV_NULL, JV_BOOL, JV_NUMBER, JV_STRING, JV_ARRAY, JV_OBJECT };

/* Deepest nesting of arrays and objects accepted. */
#define JV_MAX_DEPTH 64

struct jval {
  enum jtype type;
  bool boolean;                 /* JV_BOOL */
  /* JV_NUMBER: the value as a double, and, when the text is a plain
   * non-negative integer that fits (no '-', '.', exponent), exactly
   * in u64 with is_u64 set.
   */
  double number;
  bool is_u64;
  uint64_t u64;
  /* JV_STRING: decoded UTF-8, NUL-terminated; len excludes the NUL.
   * A string containing U+0000 is refused by the parser, so str is
   * always a proper C string.
   */
  char *str;
  size_t len;
  /* JV_ARRAY and JV_OBJECT: n members in items; for an object keys[i]
   * is the (decoded, NUL-free) name of items[i].  Duplicate names are
   * kept; jv_get returns the first.
   */
  size_t n;
  struct jval *items;
  char **keys;
};

/* Parse len bytes of text.  Returns a tree to free with jv_free, or
 * NULL with a static message and the byte offset of the problem in
 * *err and *err_off (NULL and *err "out of memory" on ENOMEM).
 * Whitespace around the value is allowed, anything else after it is
 * not.
 */
extern struct jval *jv_parse (const char *text, size_t len,
                              const char **err, size_t *err_off);
extern void jv_free (struct jval *v);

/* Accessors: all accept NULL and a value of the wrong type. */
extern const struct jval *jv_get (const struct jval *obj, const char *key);
extern const struct jval *jv_index (const struct jval *arr, size_t i);
extern size_t jv_len (const struct jval *arr); /* 0 unless array/object */
/* The string, or NULL if v is not a string. */
extern const char *jv_str (const struct jval *v);
/* True if v is a JSON true. */
extern bool jv_true (const struct jval *v);
extern bool jv_is (const struct jval *v, enum jtype t);
/* A non-negative integer: true and *out, else false. */
extern bool jv_u64 (const struct jval *v, uint64_t *out);

#endif /* FLEECECTL_JSONR_H */
