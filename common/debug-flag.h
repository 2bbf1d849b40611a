/* nbdkit-fleece
 * SPDX-License-Identifier: BSD-3-Clause
 *
 * nbdkit sets "-D NAME.FLAG=N" by finding the int symbol
 * NAME_debug_FLAG in the filter.  For filter names with a dash
 * (snapshot-access, dirty-bitmap) that symbol is not a C identifier,
 * so FLEECE_DEBUG_ALIAS gives an ordinary variable a second, exported
 * name spelled the way nbdkit looks it up.
 *
 * Debug flags are written once by nbdkit before any callback and only
 * read afterwards, so they need no lock.
 */

#ifndef FLEECE_DEBUG_FLAG_H
#define FLEECE_DEBUG_FLAG_H

#define FLEECE_DEBUG_ALIAS(var, symbol)                    \
  __asm__ (".globl \"" symbol "\"\n\t"                     \
           ".set \"" symbol "\", " #var "\n\t")

#endif /* FLEECE_DEBUG_FLAG_H */
