/* nbdkit-fleece
 * SPDX-License-Identifier: BSD-3-Clause
 *
 * NBD URIs and target paths for fleecectl (uri.c).  Pure string
 * work except fc_absolute_target (getcwd).
 */

#ifndef FLEECECTL_URI_H
#define FLEECECTL_URI_H

#include <stdbool.h>
#include <stddef.h>

/* True if s is an NBD URI (nbd://, nbds://, nbd+unix://, nbds+unix://,
 * nbd+vsock://, nbds+vsock://).
 */
extern bool fc_is_nbd_uri (const char *s);

/* Where the export name of an NBD URI is: its path after the first
 * '/', up to '?' or '#'.  *start and *len (0 if there is no path).
 * False if uri is not an NBD URI.
 */
extern bool fc_uri_export (const char *uri, size_t *start, size_t *len);

/* The URI of the delta view: uri's export name with "/since/NAME"
 * appended.  malloc'd, or NULL with a message in err (not an NBD URI,
 * no export name, already a delta view, out of memory).
 */
extern char *fc_uri_with_since (const char *uri, const char *name,
                                char *err, size_t errlen);

/* True if uri names a delta view (its export name has a "/since/"
 * part).
 */
extern bool fc_uri_is_delta (const char *uri);

/* An NBD URI as it is, a path made absolute against the current
 * directory (the server's differs).  malloc'd, or NULL after an
 * error message.
 */
extern char *fc_absolute_target (const char *target);

#endif /* FLEECECTL_URI_H */
