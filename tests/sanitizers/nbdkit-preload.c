/* nbdkit-fleece
 * SPDX-License-Identifier: BSD-3-Clause
 *
 * Preloaded into the real nbdkit, after the sanitizer runtime, by
 * tests/sanitizers/nbdkit for the sanitizer runs (tests/run-sanitizers.sh).
 * Work-arounds, none of which changes what nbdkit or our filters do:
 *
 * LD_PRELOAD leaves the environment as soon as we are loaded, so that the
 * programs nbdkit starts (the --run command, nbdinfo, Python...) run
 * without the sanitizer runtime.
 *
 * UBSan reports go to a file ($FLEECE_UBSAN_LOG.PID).  With gcc, UBSan is
 * a runtime of its own (libubsan, $FLEECE_UBSAN_RUNTIME) beside ASan's,
 * and its call that applies log_path from UBSAN_OPTIONS binds to ASan's
 * copy of __sanitizer_set_report_path, so it would always write to stderr,
 * that is, into the test's nbdkit log, which the test deletes.  We load
 * libubsan now and call its own copy.
 *
 * dlclose() does nothing.  nbdkit unloads the filters before it exits, so
 * LeakSanitizer, which runs at exit, would find their memory only after
 * their code and data are gone: blocks still referenced from a filter's
 * globals would be reported as leaks, and the frames of real leaks would
 * read "<unknown module>".  Keeping the modules mapped keeps both right.
 *
 * newlocale() makes sure the sanitizer runtime is initialised first.
 * nbdkit links GnuTLS, hence libp11-kit, whose constructor calls
 * newlocale() before the preloaded runtime's own constructor has run.
 * newlocale() calls malloc() while it holds glibc's setlocale lock for
 * writing; the runtime then initialises from inside that malloc(), calls
 * dlerror(), which takes the same lock for reading (EDEADLK, ignored) and
 * releases it (as the writer).  The lock is left with a reader count of
 * -1, and freelocale() in libp11-kit's destructor could then wait for
 * ever at exit, before the leak check (nbdkit servers that had formatted
 * an error message hung).  A malloc() of
 * our own before the first newlocale() initialises the runtime outside
 * the lock.
 */

#define _GNU_SOURCE
#include <dlfcn.h>
#include <locale.h>
#include <stdlib.h>

__attribute__ ((constructor))
static void
start (void)
{
  const char *ubsan = getenv ("FLEECE_UBSAN_RUNTIME");
  const char *log = getenv ("FLEECE_UBSAN_LOG");

  unsetenv ("LD_PRELOAD");

  if (ubsan && *ubsan && log && *log) {
    void *h = dlopen (ubsan, RTLD_NOW);   /* never closed */
    void (*set_path) (const char *);

    if (h == NULL)
      abort ();
    set_path = (void (*) (const char *)) dlsym (h, "__sanitizer_set_report_path");
    if (set_path == NULL)
      abort ();
    set_path (log);
  }
}

int
dlclose (void *handle)
{
  (void) handle;
  return 0;
}

locale_t
newlocale (int category_mask, const char *locale, locale_t base)
{
  static locale_t (*real) (int, const char *, locale_t);

  if (real == NULL) {
    /* Goes to the sanitizer's malloc, which initialises the runtime
     * (volatile: the compiler must not drop the pair).
     */
    void *volatile p = malloc (1);
    free (p);
    real = (locale_t (*) (int, const char *, locale_t))
      dlsym (RTLD_NEXT, "newlocale");
    if (real == NULL)
      abort ();
  }
  return real (category_mask, locale, base);
}
