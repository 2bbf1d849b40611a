/* nbdkit-fleece
 * SPDX-License-Identifier: BSD-3-Clause
 *
 * Error messages for control replies.
 */

#ifndef FLEECE_ERRORS_H
#define FLEECE_ERRORS_H

/* Set *errmsg to a malloc'd formatted message (NULL if even that
 * fails) and return -1, so a command can "return fleece_errorf (...)".
 */
extern int fleece_errorf (char **errmsg, const char *fmt, ...)
  __attribute__ ((format (printf, 2, 3)));

#endif /* FLEECE_ERRORS_H */
