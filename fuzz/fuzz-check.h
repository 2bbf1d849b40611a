/* nbdkit-fleece
 * SPDX-License-Identifier: BSD-3-Clause
 *
 * What the fuzz harnesses share besides json-check.h: CHECK (a failed
 * expectation prints where it is and aborts, which libFuzzer reports
 * as a crash and saves the input for; tests/unit.h has a CHECK that
 * counts failures instead, but a harness must stop at the first one),
 * and the temporary directory of the control harnesses' socket.
 */

#ifndef FLEECE_FUZZ_CHECK_H
#define FLEECE_FUZZ_CHECK_H

#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>

#define CHECK(cond)                                                     \
  do {                                                                  \
    if (!(cond)) {                                                      \
      fprintf (stderr, "%s:%d: check failed: %s\n",                     \
               __FILE__, __LINE__, #cond);                              \
      abort ();                                                         \
    }                                                                   \
  } while (0)

/* A new private directory $TMPDIR/fleece-fuzz-XXXXXX (or under /tmp)
 * for a harness's control socket; its name goes to dir[n].  Aborts on
 * failure: a harness cannot run without it.
 */
static inline void
fuzz_make_tmpdir (char *dir, size_t n)
{
  const char *tmp = getenv ("TMPDIR");

  snprintf (dir, n, "%s/fleece-fuzz-XXXXXX", tmp && *tmp ? tmp : "/tmp");
  if (mkdtemp (dir) == NULL) {
    perror ("mkdtemp");
    abort ();
  }
}

#endif /* FLEECE_FUZZ_CHECK_H */
