/* nbdkit-fleece
 * SPDX-License-Identifier: BSD-3-Clause
 *
 * CHECK for the fuzz harnesses: a failed expectation prints where it
 * is and aborts, which libFuzzer reports as a crash and saves the
 * input for.  (tests/unit.h has a CHECK that counts failures instead;
 * a harness must stop at the first one.)
 */

#ifndef FLEECE_FUZZ_CHECK_H
#define FLEECE_FUZZ_CHECK_H

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

#endif /* FLEECE_FUZZ_CHECK_H */
