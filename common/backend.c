/* nbdkit-fleece
 * SPDX-License-Identifier: BSD-3-Clause
 *
 * A short-lived context of our own on the layer below a filter: open,
 * prepare, ask, finalize, close.
 */

#include <config.h>

#include <stdint.h>

#include <nbdkit-filter.h>

#include "backend.h"

int64_t
fleece_disk_size (nbdkit_backend *below)
{
  nbdkit_next *next;
  int64_t size = -1;

  if (below == NULL)
    return -1;
  next = nbdkit_next_context_open (below, 1, "", 1);
  if (next == NULL)
    return -1;
  if (next->prepare (next) == 0)
    size = next->get_size (next);
  next->finalize (next);
  nbdkit_next_context_close (next);
  return size;
}
