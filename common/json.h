/* nbdkit-fleece
 * SPDX-License-Identifier: BSD-3-Clause
 *
 * A tiny append-only JSON text builder.  The caller writes the
 * structure (braces, commas, keys); this only does buffering, number
 * formatting and string escaping.  Allocation failure is sticky: after
 * it every append is a no-op and jbuf_steal returns NULL.
 *
 * Locking: none; a jbuf belongs to one thread.
 */

#ifndef FLEECE_JSON_H
#define FLEECE_JSON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct jbuf {
  char *s;                      /* NUL-terminated when non-NULL */
  size_t len, cap;
  bool failed;                  /* an allocation failed */
};

#define JBUF_INIT { NULL, 0, 0, false }

extern void jbuf_free (struct jbuf *b);
/* Append raw text (already valid JSON). */
extern void jbuf_raw (struct jbuf *b, const char *text);
extern void jbuf_printf (struct jbuf *b, const char *fmt, ...)
  __attribute__ ((format (printf, 2, 3)));
/* Append a JSON string literal with quotes, escaping ", \ and control
 * characters; bytes >= 0x80 are copied as they are.  NULL appends null.
 */
extern void jbuf_string (struct jbuf *b, const char *str);
/* Append "key": (with a leading comma when the previous character is
 * not '{' or '[' or ',').
 */
extern void jbuf_key (struct jbuf *b, const char *key);
extern void jbuf_u64 (struct jbuf *b, uint64_t v);
extern void jbuf_bool (struct jbuf *b, bool v);
/* Append a time as an ISO 8601 UTC string "2026-11-22T15:00:00Z",
 * or null if t == 0.
 */
extern void jbuf_time (struct jbuf *b, int64_t t);
/* Format a time as ISO 8601 UTC ("2026-11-22T15:00:00Z") into buf.
 * Returns 0, or -1 (buf empty) for a time that cannot be shown.
 */
#define FLEECE_TIME_BUF 64
extern int fleece_format_time (int64_t t, char buf[FLEECE_TIME_BUF]);

/* One member of an object: jbuf_key (b, key), then the value.  A
 * status object is then one line per member:
 *
 *   jbuf_kv_raw (reply, "target", "{");
 *   jbuf_kv_u64 (reply, "used", used);
 *   jbuf_kv_name (reply, "since", since);   // "" reads as null
 *   jbuf_raw (reply, "}");
 */
extern void jbuf_kv_raw (struct jbuf *b, const char *key, const char *text);
extern void jbuf_kv_string (struct jbuf *b, const char *key,
                            const char *str);
/* A string that is null when empty (a name that is not set). */
extern void jbuf_kv_name (struct jbuf *b, const char *key, const char *str);
extern void jbuf_kv_u64 (struct jbuf *b, const char *key, uint64_t v);
extern void jbuf_kv_bool (struct jbuf *b, const char *key, bool v);
extern void jbuf_kv_time (struct jbuf *b, const char *key, int64_t t);

/* Take the text (caller frees), leaving b empty.  NULL on failure. */
extern char *jbuf_steal (struct jbuf *b);

#endif /* FLEECE_JSON_H */
