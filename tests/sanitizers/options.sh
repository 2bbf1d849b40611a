# nbdkit-fleece
# SPDX-License-Identifier: BSD-3-Clause
# shellcheck shell=bash
#
# Sourced by tests/run-sanitizers.sh and tests/sanitizers/nbdkit:
# fleece_san_options MODE LOGDIR [TAG] exports the runtime options of
# the sanitizers for MODE (asan or tsan).  Every report goes to a file in
# LOGDIR, never to the test's stderr, so that run-sanitizers.sh can
# collect and classify them: KIND.TAG.PID with a TAG (the nbdkit wrapper
# passes nbdkit.TEST.PID, as nbdkit forks for --run), else KIND.EXE.PID;
# KIND is asan (also LeakSanitizer), ubsan (see below) or tsan.
# The suppression files sit beside this file; each entry says why.

fleece_san_options ()
{
  local mode=$1 logdir=$2 tag=${3:-}
  local supp name
  supp=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
  if [ -n "$tag" ]; then
    name=".$tag:log_exe_name=0"
  else
    name=":log_exe_name=1"
  fi
  case $mode in
    asan)
      # halt_on_error: the first memory error ends the process (the test
      # then fails too).  detect_leaks: LeakSanitizer runs at exit of
      # nbdkit and of the unit tests; lsan.supp drops the leaks that are
      # glibc's or nbdkit's own.  fast_unwind_on_malloc=0: nbdkit is built
      # without frame pointers, so only the slow unwinder gives whole
      # allocation stacks (the fast one stops, or goes astray, at the
      # first nbdkit frame).  UBSan (linked into the filters with
      # -fno-sanitize-recover) stops at its first report.
      export ASAN_OPTIONS="log_path=$logdir/asan$name:halt_on_error=1:detect_leaks=1:fast_unwind_on_malloc=0:print_suppressions=0"
      export LSAN_OPTIONS="suppressions=$supp/lsan.supp:print_suppressions=0"
      # UBSAN_OPTIONS's log_path is the same as ASan's on purpose: gcc's
      # libubsan applies it through ASan's __sanitizer_set_report_path,
      # so it sets where ASan writes, not UBSan.  UBSan itself writes to
      # stderr (the test's log, which run-sanitizers.sh scans too), or in
      # nbdkit to $FLEECE_UBSAN_LOG.PID (see nbdkit-preload.c).
      export UBSAN_OPTIONS="log_path=$logdir/asan$name:print_stacktrace=1:halt_on_error=1:suppressions=$supp/ubsan.supp"
      ;;
    tsan)
      # halt_on_error=0: collect every race of a run, not just the first;
      # exitcode=66 at exit when there was a report.  history_size=4 keeps
      # more of the "previous access" stacks.
      export TSAN_OPTIONS="log_path=$logdir/tsan$name:halt_on_error=0:exitcode=66:second_deadlock_stack=1:history_size=4:suppressions=$supp/tsan.supp:print_suppressions=0"
      ;;
    *)
      echo "fleece_san_options: unknown mode '$mode'" >&2
      return 1
      ;;
  esac
}
