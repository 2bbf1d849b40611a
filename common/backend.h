/* nbdkit-fleece
 * SPDX-License-Identifier: BSD-3-Clause
 *
 * Contexts of a filter's own on the layer below it, outside any client
 * connection (from .after_fork on, any thread).
 */

#ifndef FLEECE_BACKEND_H
#define FLEECE_BACKEND_H

#include <stdint.h>

#include <nbdkit-filter.h>

/* The size of the disk below (its default export), or -1 (with the
 * reason logged by nbdkit).
 */
extern int64_t fleece_disk_size (nbdkit_backend *below);

#endif /* FLEECE_BACKEND_H */
