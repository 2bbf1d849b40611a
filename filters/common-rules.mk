# nbdkit-fleece
# SPDX-License-Identifier: BSD-3-Clause
#
# Build rules every filter shares.  A filter's Makefile.am is then:
#
#   include $(top_srcdir)/filters/common-rules.mk
#
#   filter_LTLIBRARIES = nbdkit-NAME-filter.la
#   nbdkit_NAME_filter_la_SOURCES = ...
#   nbdkit_NAME_filter_la_LIBADD = $(FILTER_LIBADD)
#
# and nbdkit-NAME-filter.pod next to it is its man page.  A filter that
# needs another library adds it there (cbw: $(LIBNBD_CFLAGS) to
# AM_CFLAGS, $(LIBNBD_LIBS) to its LIBADD); no other filter links it.
#
# Every symbol but nbdkit's entry points stays private to its module
# (filters.syms), so each module's copy of common/ is its own.

AM_CPPFLAGS = -I$(top_srcdir)/common
AM_CFLAGS = \
	$(WARNINGS_CFLAGS) $(SANITIZER_CFLAGS) $(PTHREAD_CFLAGS) \
	$(NBDKIT_CFLAGS) -fvisibility=hidden
AM_LDFLAGS = \
	-module -avoid-version -shared $(SANITIZER_CFLAGS) \
	-Wl,--version-script=$(top_srcdir)/filters/filters.syms

FILTER_LIBADD = $(top_builddir)/common/libfleece.la \
	$(top_builddir)/filters/libfleece-stack.la $(PTHREAD_LIBS)

# The man page, nbdkit-NAME-filter.1 from nbdkit-NAME-filter.pod.
FILTER_BASE = $(filter_LTLIBRARIES:.la=)

EXTRA_DIST = $(FILTER_BASE).pod

if HAVE_POD2MAN
man_MANS = $(FILTER_BASE).1
CLEANFILES = $(man_MANS)

$(FILTER_BASE).1: $(FILTER_BASE).pod
	$(AM_V_GEN)$(POD2MAN) --section=1 --center="nbdkit-fleece" \
	  --release="$(PACKAGE_STRING)" --name=$(FILTER_BASE) $< > $@-t && \
	  mv $@-t $@
endif

# nbdkit loads the .so alone; the libtool archive is of no use there.
# filter_LTLIBRARIES is installed by install-data (automake puts a
# directory whose name lacks "exec" there), so the .la is removed by
# install-data-hook, which runs after it; install-exec-hook ran too
# early and removed nothing.  Without the .la, libtool's uninstall no
# longer knows the .so, so uninstall-hook removes it.
install-data-hook:
	rm -f $(DESTDIR)$(filterdir)/$(FILTER_BASE).la

uninstall-hook:
	rm -f $(DESTDIR)$(filterdir)/$(FILTER_BASE).so
